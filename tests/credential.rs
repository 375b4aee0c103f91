//! Agent credentials: the renewal time (90 days vs two thirds of the
//! lifetime, jitter), reading certificates, the hand-over renewing →
//! confirmed → retired, every misuse, and Debug redaction. Certificates are
//! issued at test time by rcgen with chosen validity, in the OMS agent's
//! subject shape.

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    AgentCredentials, AgentKey, CertificateInfo, Credential, CredentialError, CredentialPhase,
    CredentialPolicy, DeterministicEntropy, Entropy, EntropyUnavailable, SystemEntropy,
};
use proptest::prelude::*;
use ring::rand::SystemRandom;
use rustls_pki_types::CertificateDer;

const WORKSPACE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const AGENT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const OTHER_AGENT: &str = "16fd2706-8baf-433b-82eb-8c7fada847da";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn new_key() -> AgentKey {
    AgentKey::generate(&SystemRandom::new()).unwrap()
}

/// The subject an OMS agent gives its self-signed certificate:
/// `CN=<workspace id>, CN=<agent id>, OU=Linux Monitoring Agent, O=Microsoft`.
fn oms_subject(agent: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, WORKSPACE);
    // rcgen keys its names by type; the second CN goes in under its OID.
    dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), agent);
    dn.push(
        rcgen::DnType::OrganizationalUnitName,
        "Linux Monitoring Agent",
    );
    dn.push(rcgen::DnType::OrganizationName, "Microsoft");
    dn
}

/// Certificate parameters with the OMS subject for `agent` and the given
/// validity (whole seconds after 1970).
fn params(
    agent: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> rcgen::CertificateParams {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs =
        |t: DateTime<Utc>| std::time::Duration::from_secs(u64::try_from(t.timestamp()).unwrap());
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = oms_subject(agent);
    p.not_before = epoch + secs(not_before);
    p.not_after = epoch + secs(not_after);
    p
}

/// A self-signed certificate for `key` (how the OMS agent makes its own).
fn issue_for(
    key: &AgentKey,
    agent: &str,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> CertificateDer<'static> {
    let pair = rcgen::KeyPair::try_from(&key.as_pkcs8()).unwrap();
    params(agent, not_before, not_after)
        .self_signed(&pair)
        .unwrap()
        .der()
        .clone()
}

/// A certificate for a throwaway key, when only the validity matters.
fn cert(not_before: DateTime<Utc>, lifetime: Duration) -> CertificateDer<'static> {
    issue_for(&new_key(), AGENT, not_before, not_before + lifetime)
}

fn credential(not_before: DateTime<Utc>, lifetime: Duration) -> Credential {
    let key = new_key();
    let cert = issue_for(&key, AGENT, not_before, not_before + lifetime);
    Credential::new(cert, key).unwrap()
}

fn no_jitter() -> CredentialPolicy {
    CredentialPolicy::default()
        .with_max_jitter(Duration::zero())
        .unwrap()
}

/// An entropy source that always fails.
struct Broken;
impl Entropy for Broken {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyUnavailable> {
        Err(EntropyUnavailable)
    }
}

// ---------------------------------------------------------------------------
// Reading certificates
// ---------------------------------------------------------------------------

#[test]
fn oms_certificate_is_read() {
    let key = new_key();
    let der = issue_for(&key, AGENT, t0(), t0() + Duration::days(365));
    let info = CertificateInfo::parse(&der).unwrap();
    assert_eq!(info.not_before(), t0());
    assert_eq!(info.not_after(), t0() + Duration::days(365));
    for part in [
        format!("CN={WORKSPACE}"),
        format!("CN={AGENT}"),
        "OU=Linux Monitoring Agent".to_owned(),
        "O=Microsoft".to_owned(),
    ] {
        assert!(
            info.subject().contains(&part),
            "{} lacks {part}",
            info.subject()
        );
    }
    assert_eq!(info.public_key(), key.public_key());
    assert_eq!(key.public_key().len(), 65);
    assert_eq!(key.public_key()[0], 0x04, "uncompressed point");
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    assert_eq!(info.sha256().as_slice(), digest.as_ref());
    assert!(info.is_valid_at(t0()));
    assert!(info.is_valid_at(t0() + Duration::days(365)));
    assert!(!info.is_valid_at(t0() - Duration::seconds(1)));
    assert!(!info.is_valid_at(t0() + Duration::days(365) + Duration::seconds(1)));
}

#[test]
fn certificates_after_2049_use_generalized_time() {
    let nb = Utc.with_ymd_and_hms(2049, 6, 1, 0, 0, 0).unwrap();
    let info = CertificateInfo::parse(&cert(nb, Duration::days(400))).unwrap();
    assert_eq!(info.not_before(), nb);
    assert_eq!(info.not_after(), nb + Duration::days(400));
}

#[test]
fn malformed_der_is_a_typed_error() {
    let good = cert(t0(), Duration::days(30));
    let bytes = good.as_ref().to_vec();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x30],
        vec![0x30, 0x03, 0x02, 0x01, 0x00],
        b"-----BEGIN CERTIFICATE-----".to_vec(),
        bytes[..bytes.len() - 1].to_vec(),
        bytes[..bytes.len() / 2].to_vec(),
    ];
    let mut trailing = bytes.clone();
    trailing.push(0);
    cases.push(trailing);
    let policy = CredentialPolicy::default();
    for case in cases {
        let der = CertificateDer::from(case);
        assert!(matches!(
            CertificateInfo::parse(&der),
            Err(CredentialError::MalformedCertificate(_))
        ));
        assert!(matches!(
            policy.renewal_at(&der, &mut DeterministicEntropy::from_u64(0)),
            Err(CredentialError::MalformedCertificate(_))
        ));
        assert!(matches!(
            policy.renewal_window(&der),
            Err(CredentialError::MalformedCertificate(_))
        ));
    }
    // Any single corrupted byte is parsed or refused, never a panic.
    for i in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let _ = CertificateInfo::parse(&CertificateDer::from(b));
        }
    }
}

#[test]
fn empty_validity_is_refused() {
    let der = cert(t0(), Duration::zero());
    assert_eq!(
        CertificateInfo::parse(&der),
        Err(CredentialError::EmptyValidity {
            not_before: t0(),
            not_after: t0()
        })
    );
    let key = new_key();
    let backwards = issue_for(&key, AGENT, t0(), t0() - Duration::days(1));
    assert!(matches!(
        CredentialPolicy::default().renewal_window(&backwards),
        Err(CredentialError::EmptyValidity { .. })
    ));
}

#[test]
fn credential_needs_the_certificates_key() {
    let key = new_key();
    let der = issue_for(&new_key(), AGENT, t0(), t0() + Duration::days(30));
    assert_eq!(
        Credential::new(der, key).unwrap_err(),
        CredentialError::KeyMismatch
    );
    // A P-384 certificate never matches a P-256 key.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let der = params(AGENT, t0(), t0() + Duration::days(30))
        .self_signed(&p384)
        .unwrap()
        .der()
        .clone();
    assert!(CertificateInfo::parse(&der).is_ok());
    assert_eq!(
        Credential::new(der, new_key()).unwrap_err(),
        CredentialError::KeyMismatch
    );
    let c = credential(t0(), Duration::days(30));
    assert_eq!(c.not_before(), t0());
    assert_eq!(c.not_after(), t0() + Duration::days(30));
    assert_eq!(c.info().public_key(), c.key().public_key());
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[test]
fn keys_round_trip_through_pkcs8() {
    let rng = SystemEntropy::new();
    let key = AgentKey::generate(rng.secure_random()).unwrap();
    let again =
        AgentKey::from_pkcs8(key.as_pkcs8().secret_pkcs8_der(), rng.secure_random()).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    assert_ne!(new_key().public_key(), key.public_key());
    assert_eq!(
        AgentKey::from_pkcs8(b"not a key", rng.secure_random()).unwrap_err(),
        CredentialError::MalformedKey
    );
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    assert_eq!(
        AgentKey::from_pkcs8(&p384.serialize_der(), rng.secure_random()).unwrap_err(),
        CredentialError::MalformedKey
    );
}

/// The 32-byte private scalar inside ring's PKCS#8 for P-256: the OCTET
/// STRING (04 20) in the ECPrivateKey.
fn private_scalar(pkcs8: &[u8]) -> &[u8] {
    let at = pkcs8
        .windows(2)
        .position(|w| w == [0x04, 0x20])
        .expect("an OCTET STRING of 32 bytes");
    &pkcs8[at + 2..at + 34]
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Fails if `text` shows any 6-byte run of `secret` in hex (either case, with
/// or without separators), as a Rust byte-slice Debug, or in base64.
fn assert_not_shown(text: &str, secret: &[u8]) {
    let squeezed: String = text
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    for run in secret.windows(6) {
        let hex: String = run.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!squeezed.contains(&hex), "hex of key bytes in {text}");
        let list = format!("{run:?}");
        assert!(
            !text.contains(&list[1..list.len() - 1]),
            "byte list in {text}"
        );
    }
    for shift in 0..3 {
        let b64 = base64(&secret[shift..]);
        for piece in b64.as_bytes()[..b64.len() - 4].windows(8) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!text.contains(piece), "base64 of key bytes in {text}");
        }
    }
}

#[test]
fn debug_never_shows_the_private_key() {
    let key = new_key();
    let pkcs8 = key.as_pkcs8().secret_pkcs8_der().to_vec();
    let scalar = private_scalar(&pkcs8).to_vec();
    let shown = format!("{key:?} {key:#?}");
    assert!(shown.contains("redacted"), "{shown}");
    assert_not_shown(&shown, &scalar);
    assert_not_shown(&shown, &pkcs8);

    let der = issue_for(&key, AGENT, t0(), t0() + Duration::days(365));
    let c = Credential::new(der, key).unwrap();
    let mut creds = AgentCredentials::new(
        CredentialPolicy::default(),
        c,
        &mut DeterministicEntropy::from_u64(1),
    )
    .unwrap();
    let pending = creds
        .begin_renewal(&SystemRandom::new(), t0() + Duration::days(89))
        .unwrap();
    let pending_pkcs8 = pending.as_pkcs8().secret_pkcs8_der().to_vec();
    let pending_der = issue_for(
        pending,
        AGENT,
        t0() + Duration::days(89),
        t0() + Duration::days(454),
    );
    let shown = format!("{creds:?} {creds:#?} {:?}", creds.active());
    assert_not_shown(&shown, &pkcs8);
    assert_not_shown(&shown, &pending_pkcs8);
    creds
        .confirm(
            &pending_der,
            &mut DeterministicEntropy::from_u64(2),
            t0() + Duration::days(89),
        )
        .unwrap();
    let shown = format!("{creds:#?} {:?}", creds.previous());
    assert!(shown.contains("Confirmed"), "{shown}");
    assert_not_shown(&shown, &pkcs8);
    assert_not_shown(&shown, &pending_pkcs8);
}

#[test]
fn the_checker_catches_a_leak() {
    let key = new_key();
    let pkcs8 = key.as_pkcs8().secret_pkcs8_der().to_vec();
    let scalar = private_scalar(&pkcs8).to_vec();
    for leak in [
        format!("{:?}", &scalar[..]),
        scalar
            .iter()
            .map(|b| format!("{b:02X}:"))
            .collect::<String>(),
        base64(&pkcs8),
    ] {
        let caught = std::panic::catch_unwind(|| assert_not_shown(&leak, &pkcs8));
        assert!(caught.is_err(), "{leak}");
    }
}

// ---------------------------------------------------------------------------
// When to renew
// ---------------------------------------------------------------------------

#[test]
fn a_year_long_certificate_renews_at_90_days() {
    let der = cert(t0(), Duration::days(365));
    let at = no_jitter()
        .renewal_at(&der, &mut DeterministicEntropy::from_u64(3))
        .unwrap();
    assert_eq!(at, t0() + Duration::days(90));
    let window = CredentialPolicy::default().renewal_window(&der).unwrap();
    assert_eq!(window.due, t0() + Duration::days(90));
    assert_eq!(
        window.earliest,
        t0() + Duration::days(90) - Duration::hours(24)
    );
}

#[test]
fn a_month_long_certificate_renews_at_two_thirds() {
    let der = cert(t0(), Duration::days(30));
    let at = no_jitter()
        .renewal_at(&der, &mut DeterministicEntropy::from_u64(3))
        .unwrap();
    assert_eq!(at, t0() + Duration::days(20));
    // 135 days: both rules give 90 days.
    let window = no_jitter()
        .renewal_window(&cert(t0(), Duration::days(135)))
        .unwrap();
    assert_eq!(window.due, t0() + Duration::days(90));
    assert_eq!(window.earliest, window.due);
}

#[test]
fn policy_settings_change_the_window() {
    let der = cert(t0(), Duration::days(100));
    let half = no_jitter().with_lifetime_fraction(1, 2).unwrap();
    assert_eq!(
        half.renewal_window(&der).unwrap().due,
        t0() + Duration::days(50)
    );
    let all = no_jitter()
        .with_lifetime_fraction(1, 1)
        .unwrap()
        .with_max_age(Duration::days(365))
        .unwrap();
    assert_eq!(
        all.renewal_window(&der).unwrap().due,
        t0() + Duration::days(100)
    );
    let week = no_jitter().with_max_age(Duration::days(7)).unwrap();
    assert_eq!(
        week.renewal_window(&der).unwrap().due,
        t0() + Duration::days(7)
    );
}

#[test]
fn jitter_is_bounded_spread_and_reproducible() {
    let der = cert(t0(), Duration::days(365));
    let policy = CredentialPolicy::default();
    let window = policy.renewal_window(&der).unwrap();
    let draws: Vec<DateTime<Utc>> = (0..400)
        .map(|seed| {
            policy
                .renewal_at(&der, &mut DeterministicEntropy::from_u64(seed))
                .unwrap()
        })
        .collect();
    for (seed, &at) in draws.iter().enumerate() {
        assert!(window.contains(at), "seed {seed}: {at}");
        let again = policy
            .renewal_at(&der, &mut DeterministicEntropy::from_u64(seed as u64))
            .unwrap();
        assert_eq!(again, at, "seed {seed} is reproducible");
    }
    let mut distinct = draws.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() > 390, "{} distinct", distinct.len());
    let mid = window.earliest + (window.due - window.earliest) / 2;
    let early = draws.iter().filter(|&&t| t < mid).count();
    assert!(
        (120..=280).contains(&early),
        "{early} of 400 in the early half"
    );
    assert!(distinct[0] < window.earliest + Duration::hours(1));
    assert!(distinct[distinct.len() - 1] > window.due - Duration::hours(1));
}

#[test]
fn jitter_of_a_short_certificate_is_at_most_half_its_interval() {
    // One hour: due after 40 minutes, jitter at most 20 minutes.
    let der = cert(t0(), Duration::hours(1));
    let window = CredentialPolicy::default().renewal_window(&der).unwrap();
    assert_eq!(window.due, t0() + Duration::minutes(40));
    assert_eq!(window.earliest, t0() + Duration::minutes(20));
}

#[test]
fn entropy_failure_is_reported() {
    let der = cert(t0(), Duration::days(365));
    assert_eq!(
        CredentialPolicy::default().renewal_at(&der, &mut Broken),
        Err(CredentialError::Entropy(EntropyUnavailable))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn renewal_time_is_in_the_window(
        lifetime_secs in 1i64..(800 * 86_400),
        start_secs in 0i64..(20 * 365 * 86_400),
        max_age_days in 1i64..=365,
        jitter_permille in 0i64..=500,
        (numerator, denominator) in (1u32..=1000).prop_flat_map(|d| (1..=d, Just(d))),
        seed in any::<u64>(),
    ) {
        let not_before = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap()
            + Duration::seconds(start_secs);
        let max_age = Duration::days(max_age_days);
        let max_jitter = Duration::seconds(max_age.num_seconds() * jitter_permille / 1000);
        let policy = CredentialPolicy::default()
            .with_max_jitter(Duration::zero()).unwrap()
            .with_max_age(max_age).unwrap()
            .with_max_jitter(max_jitter).unwrap()
            .with_lifetime_fraction(numerator, denominator).unwrap();
        let der = cert(not_before, Duration::seconds(lifetime_secs));

        let by_fraction = i64::try_from(
            i128::from(lifetime_secs) * i128::from(numerator) / i128::from(denominator),
        ).unwrap();
        let due = not_before + Duration::seconds(by_fraction.min(max_age.num_seconds()));
        let window = policy.renewal_window(&der).unwrap();
        prop_assert_eq!(window.due, due);

        let at = policy.renewal_at(&der, &mut DeterministicEntropy::from_u64(seed)).unwrap();
        prop_assert!(at <= due);
        prop_assert!(at >= due - max_jitter);
        prop_assert!(at >= not_before);
        prop_assert!(window.contains(at));
        let again = policy.renewal_at(&der, &mut DeterministicEntropy::from_u64(seed)).unwrap();
        prop_assert_eq!(at, again);
    }
}

// ---------------------------------------------------------------------------
// The hand-over
// ---------------------------------------------------------------------------

fn start() -> AgentCredentials {
    AgentCredentials::new(
        CredentialPolicy::default(),
        credential(t0(), Duration::days(365)),
        &mut DeterministicEntropy::from_u64(7),
    )
    .unwrap()
}

#[test]
fn full_hand_over() {
    let rng = SystemEntropy::new();
    let mut creds = start();
    let old_public = creds.active().key().public_key().to_vec();
    let old_cert = creds.active().certificate().clone();
    assert_eq!(creds.phase(), CredentialPhase::Steady);
    let window = CredentialPolicy::default()
        .renewal_window(&old_cert)
        .unwrap();
    assert!(window.contains(creds.renew_at()));
    assert!(!creds.is_due(t0()));
    assert!(!creds.is_due(creds.renew_at() - Duration::seconds(1)));
    let now = creds.renew_at();
    assert!(creds.is_due(now));

    // Renewing: a new key, the old credential still active.
    let new_public = creds
        .begin_renewal(rng.secure_random(), now)
        .unwrap()
        .public_key()
        .to_vec();
    assert_ne!(new_public, old_public);
    assert_eq!(creds.phase(), CredentialPhase::Renewing);
    assert_eq!(creds.renewing_since(), Some(now));
    assert!(!creds.is_due(now));
    assert_eq!(creds.active().certificate(), &old_cert);
    assert_eq!(creds.active().key().public_key(), &old_public[..]);
    assert_eq!(creds.pending_key().unwrap().public_key(), &new_public[..]);
    assert!(creds.previous().is_none());

    // The host has a certificate issued for the pending key.
    let second_not_before = now - Duration::minutes(5);
    let new_cert = issue_for(
        creds.pending_key().unwrap(),
        AGENT,
        second_not_before,
        now + Duration::days(365),
    );
    let active = creds
        .confirm(&new_cert, &mut DeterministicEntropy::from_u64(8), now)
        .unwrap();
    assert_eq!(active.certificate(), &new_cert);
    assert_eq!(active.key().public_key(), &new_public[..]);
    assert_eq!(creds.phase(), CredentialPhase::Confirmed);
    assert!(creds.pending_key().is_none());
    assert_eq!(creds.previous().unwrap().certificate(), &old_cert);
    assert_eq!(
        creds.previous().unwrap().key().public_key(),
        &old_public[..]
    );
    let new_window = CredentialPolicy::default()
        .renewal_window(&new_cert)
        .unwrap();
    assert!(new_window.contains(creds.renew_at()));
    assert!(
        !creds.is_due(creds.renew_at()),
        "not while the old one is held"
    );

    // Retired: the old credential is gone, with a receipt.
    let later = now + Duration::hours(1);
    let receipt = creds.retire(later).unwrap();
    assert_eq!(receipt.retired_at, later);
    assert_eq!(receipt.not_before, t0());
    assert_eq!(receipt.not_after, t0() + Duration::days(365));
    assert!(receipt.subject.contains(AGENT));
    assert_eq!(
        receipt.certificate_sha256.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, old_cert.as_ref()).as_ref()
    );
    assert_eq!(creds.phase(), CredentialPhase::Steady);
    assert!(creds.previous().is_none());
    assert_eq!(creds.active().certificate(), &new_cert);
    assert!(creds.is_due(creds.renew_at()));

    // And round again.
    let now = creds.renew_at();
    creds.begin_renewal(rng.secure_random(), now).unwrap();
    let third = issue_for(
        creds.pending_key().unwrap(),
        AGENT,
        now,
        now + Duration::days(30),
    );
    creds
        .confirm(&third, &mut DeterministicEntropy::from_u64(9), now)
        .unwrap();
    assert_eq!(creds.retire(now).unwrap().not_before, second_not_before);
}

/// What must not change when a step is refused.
fn snapshot(
    creds: &AgentCredentials,
) -> (CredentialPhase, Vec<u8>, Option<Vec<u8>>, DateTime<Utc>) {
    (
        creds.phase(),
        creds.active().certificate().as_ref().to_vec(),
        creds.pending_key().map(|k| k.public_key().to_vec()),
        creds.renew_at(),
    )
}

#[test]
fn steps_out_of_order_are_refused_and_change_nothing() {
    let rng = SystemRandom::new();
    let mut creds = start();
    let now = t0() + Duration::days(89);
    let some_cert = cert(now, Duration::days(30));
    let before = snapshot(&creds);
    assert_eq!(
        creds
            .confirm(&some_cert, &mut DeterministicEntropy::from_u64(0), now)
            .unwrap_err(),
        CredentialError::NotRenewing
    );
    assert_eq!(creds.abort_renewal(), Err(CredentialError::NotRenewing));
    assert_eq!(creds.retire(now), Err(CredentialError::NothingToRetire));
    assert_eq!(snapshot(&creds), before);

    creds.begin_renewal(&rng, now).unwrap();
    let renewing = snapshot(&creds);
    assert_eq!(
        creds.begin_renewal(&rng, now).unwrap_err(),
        CredentialError::AlreadyRenewing
    );
    assert_eq!(creds.retire(now), Err(CredentialError::NothingToRetire));
    assert_eq!(snapshot(&creds), renewing, "the pending key is kept");

    // Abort drops the pending key; a new renewal makes a new one.
    creds.abort_renewal().unwrap();
    assert_eq!(snapshot(&creds), before);
    creds.begin_renewal(&rng, now).unwrap();
    assert_ne!(snapshot(&creds).2, renewing.2);

    let good = issue_for(
        creds.pending_key().unwrap(),
        AGENT,
        now,
        now + Duration::days(365),
    );
    creds
        .confirm(&good, &mut DeterministicEntropy::from_u64(0), now)
        .unwrap();
    let confirmed = snapshot(&creds);
    assert_eq!(
        creds.begin_renewal(&rng, now).unwrap_err(),
        CredentialError::PreviousNotRetired
    );
    assert_eq!(
        creds
            .confirm(&good, &mut DeterministicEntropy::from_u64(0), now)
            .unwrap_err(),
        CredentialError::NotRenewing
    );
    assert_eq!(creds.abort_renewal(), Err(CredentialError::NotRenewing));
    assert_eq!(snapshot(&creds), confirmed);
    assert!(creds.previous().is_some());
}

#[test]
fn a_certificate_that_does_not_fit_is_refused_and_changes_nothing() {
    let mut creds = start();
    let now = t0() + Duration::days(89);
    let old_key_cert = creds.active().certificate().clone();
    creds.begin_renewal(&SystemRandom::new(), now).unwrap();
    let renewing = snapshot(&creds);
    let pending = creds.pending_key().unwrap();
    let year = Duration::days(365);

    let other_key = issue_for(&new_key(), AGENT, now, now + year);
    // The old key again, in a fresh certificate: not a renewal.
    let fresh_old = creds.active().key();
    let old_key = issue_for(fresh_old, AGENT, now, now + year);
    let other_agent = issue_for(pending, OTHER_AGENT, now, now + year);
    let not_yet = issue_for(pending, AGENT, now + Duration::seconds(1), now + year);
    let expired = issue_for(pending, AGENT, now - year, now - Duration::seconds(1));
    let malformed = CertificateDer::from(vec![0x30, 0x82, 0x01]);
    let good = issue_for(pending, AGENT, now, now + year);

    let mut refuse = |der: &CertificateDer<'_>| {
        let e = creds
            .confirm(der, &mut DeterministicEntropy::from_u64(0), now)
            .unwrap_err();
        assert_eq!(snapshot(&creds), renewing, "{e}");
        assert!(creds.previous().is_none());
        e
    };
    assert_eq!(refuse(&other_key), CredentialError::KeyMismatch);
    assert_eq!(refuse(&old_key), CredentialError::KeyMismatch);
    assert_eq!(refuse(&old_key_cert), CredentialError::KeyMismatch);
    match refuse(&other_agent) {
        CredentialError::SubjectMismatch { expected, found } => {
            assert!(expected.contains(AGENT), "{expected}");
            assert!(found.contains(OTHER_AGENT), "{found}");
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(
        refuse(&not_yet),
        CredentialError::NotValidAt {
            now,
            not_before: now + Duration::seconds(1),
            not_after: now + year
        }
    );
    assert!(matches!(
        refuse(&expired),
        CredentialError::NotValidAt { .. }
    ));
    assert!(matches!(
        refuse(&malformed),
        CredentialError::MalformedCertificate(_)
    ));
    // The entropy source failing for the new renewal time changes nothing.
    assert_eq!(
        creds.confirm(&good, &mut Broken, now).unwrap_err(),
        CredentialError::Entropy(EntropyUnavailable)
    );
    assert_eq!(snapshot(&creds), renewing);

    // After all that, the right certificate is accepted.
    creds
        .confirm(&good, &mut DeterministicEntropy::from_u64(0), now)
        .unwrap();
    assert_eq!(creds.phase(), CredentialPhase::Confirmed);
}

#[test]
fn a_clock_going_back_is_treated_as_the_latest() {
    let mut creds = start();
    let now = t0() + Duration::days(89);
    creds.begin_renewal(&SystemRandom::new(), now).unwrap();
    let good = issue_for(
        creds.pending_key().unwrap(),
        AGENT,
        now,
        now + Duration::days(365),
    );
    // An earlier `now` (before the new certificate's notBefore) is read as
    // the latest seen, at which the certificate is valid.
    creds
        .confirm(
            &good,
            &mut DeterministicEntropy::from_u64(0),
            now - Duration::days(1),
        )
        .unwrap();
    let receipt = creds.retire(t0()).unwrap();
    assert_eq!(receipt.retired_at, now);
}

#[test]
fn new_needs_entropy() {
    assert_eq!(
        AgentCredentials::new(
            CredentialPolicy::default(),
            credential(t0(), Duration::days(30)),
            &mut Broken
        )
        .unwrap_err(),
        CredentialError::Entropy(EntropyUnavailable)
    );
}

/// A refused call changes nothing, the clock included (ARCHITECTURE.md): a
/// `retire` or `confirm` refused with a far-future `now` does not make the
/// renewal due early.
#[test]
fn refused_calls_do_not_move_the_clock() {
    let mut creds = start();
    let twin = start();
    let far = t0() + Duration::days(1000);
    assert!(matches!(
        creds.retire(far),
        Err(CredentialError::NothingToRetire)
    ));
    let c = cert(t0(), Duration::days(365));
    assert!(matches!(
        creds.confirm(&c, &mut DeterministicEntropy::from_u64(1), far),
        Err(CredentialError::NotRenewing)
    ));
    let soon = t0() + Duration::days(1);
    assert!(!twin.is_due(soon));
    assert_eq!(creds.is_due(soon), twin.is_due(soon));
    assert_eq!(creds.renew_at(), twin.renew_at());
}
