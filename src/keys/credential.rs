//! Agent credentials: when an agent's certificate and private key are due for
//! renewal ([`CredentialPolicy`]), and the hand-over from the old credential
//! to the new one ([`AgentCredentials`]).
//!
//! Certificates are read with the `x509-cert` crate; key pairs are made by
//! `ring` (ECDSA P-256) and kept as PKCS#8 DER in a buffer that is wiped on
//! drop.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_cert::der::{Decode, Encode, asn1::ObjectIdentifier};
use zeroize::Zeroizing;

use super::entropy::{Entropy, EntropyUnavailable};

/// id-ecPublicKey (RFC 5480).
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1, the named curve of ECDSA P-256 (RFC 5480).
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// The longest `max_age` a [`CredentialPolicy`] accepts: ten years.
const MAX_AGE_CEILING_DAYS: i64 = 3650;

/// Strings taken from the input (subjects, parser messages) are cut to this
/// many characters in errors.
const ERROR_TEXT_MAX: usize = 200;

/// Everything that can go wrong with agent credentials: a nonsense policy
/// setting, a certificate or key that cannot be read, a certificate that does
/// not fit, or a hand-over step out of order. A refused step changes nothing.
///
/// Errors never carry key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// `max_age` is not between one second and ten years.
    #[error("max_age must be at least one second and at most {max_days} days")]
    MaxAge {
        /// The ceiling in days.
        max_days: i64,
    },
    /// The lifetime fraction is not in (0, 1].
    #[error("lifetime_fraction {numerator}/{denominator} is not in (0, 1]")]
    LifetimeFraction {
        /// The numerator given.
        numerator: u32,
        /// The denominator given.
        denominator: u32,
    },
    /// `max_jitter` is negative or more than half of `max_age`.
    #[error("max_jitter must be between zero and half of max_age")]
    MaxJitter,
    /// The certificate is not DER X.509 that the parser accepts.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// The certificate's notAfter is not after its notBefore.
    #[error("certificate validity is empty: notBefore {not_before}, notAfter {not_after}")]
    EmptyValidity {
        /// The certificate's notBefore.
        not_before: DateTime<Utc>,
        /// The certificate's notAfter.
        not_after: DateTime<Utc>,
    },
    /// The PKCS#8 document is not an ECDSA P-256 private key ring accepts.
    #[error("the private key is not a valid ECDSA P-256 PKCS#8 document")]
    MalformedKey,
    /// Key-pair generation failed (the system's random generator failed).
    #[error("key-pair generation failed")]
    KeyGeneration,
    /// The entropy source failed while drawing the renewal jitter.
    #[error(transparent)]
    Entropy(#[from] EntropyUnavailable),
    /// The certificate does not carry the expected ECDSA P-256 public key:
    /// the credential's own key, or during a renewal the pending key.
    #[error("the certificate's public key is not the expected ECDSA P-256 key")]
    KeyMismatch,
    /// The renewed certificate names a different subject than the active one.
    #[error("the renewed certificate's subject {found:?} is not the active one's {expected:?}")]
    SubjectMismatch {
        /// The active certificate's subject (RFC 4514 text, cut).
        expected: String,
        /// The renewed certificate's subject (RFC 4514 text, cut).
        found: String,
    },
    /// The renewed certificate is not valid at the time of confirmation.
    #[error("the certificate is not valid at {now}: notBefore {not_before}, notAfter {not_after}")]
    NotValidAt {
        /// The time of confirmation.
        now: DateTime<Utc>,
        /// The certificate's notBefore.
        not_before: DateTime<Utc>,
        /// The certificate's notAfter.
        not_after: DateTime<Utc>,
    },
    /// `begin_renewal` while a renewal is already under way.
    #[error("a renewal is already under way")]
    AlreadyRenewing,
    /// `begin_renewal` while the previous credential is not yet retired.
    #[error("the previous credential must be retired before the next renewal")]
    PreviousNotRetired,
    /// `confirm` or `abort_renewal` with no renewal under way.
    #[error("no renewal is under way")]
    NotRenewing,
    /// `retire` with no previous credential to retire.
    #[error("there is no previous credential to retire")]
    NothingToRetire,
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(ERROR_TEXT_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(2 * n);
    for b in bytes.iter().take(n) {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

// ---------------------------------------------------------------------------
// The certificate
// ---------------------------------------------------------------------------

/// What the credential code reads from an X.509 certificate: its validity,
/// its subject and its public key. Parsing checks the DER structure, not the
/// signature: trust is the host's TLS stack's business.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    subject: String,
    subject_der: Vec<u8>,
    public_key: Vec<u8>,
    p256: bool,
    sha256: [u8; 32],
}

impl CertificateInfo {
    /// Reads a DER certificate.
    ///
    /// # Errors
    ///
    /// [`CredentialError::MalformedCertificate`] if it is not DER X.509 (or
    /// has trailing bytes, or a time outside 1970–9999);
    /// [`CredentialError::EmptyValidity`] if notAfter is not after
    /// notBefore.
    pub fn parse(certificate: &CertificateDer<'_>) -> Result<Self, CredentialError> {
        let malformed =
            |e: x509_cert::der::Error| CredentialError::MalformedCertificate(cut(&e.to_string()));
        let cert = x509_cert::Certificate::from_der(certificate.as_ref()).map_err(malformed)?;
        let tbs = cert.tbs_certificate();
        let validity = tbs.validity();
        let not_before = to_chrono(validity.not_before)?;
        let not_after = to_chrono(validity.not_after)?;
        if not_after <= not_before {
            return Err(CredentialError::EmptyValidity {
                not_before,
                not_after,
            });
        }
        let subject_der = tbs.subject().to_der().map_err(malformed)?;
        let spki = tbs.subject_public_key_info();
        let p256 = spki.algorithm.oid == ID_EC_PUBLIC_KEY
            && spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                == Some(SECP256R1);
        let public_key = spki.subject_public_key.raw_bytes().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, certificate.as_ref());
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Ok(CertificateInfo {
            not_before,
            not_after,
            subject: tbs.subject().to_string(),
            subject_der,
            public_key,
            p256,
            sha256,
        })
    }

    /// The certificate's notBefore: when it was issued.
    #[must_use]
    pub fn not_before(&self) -> DateTime<Utc> {
        self.not_before
    }
    /// The certificate's notAfter: when it expires.
    #[must_use]
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }
    /// The subject as RFC 4514 text, for example
    /// `O=Microsoft,OU=Linux Monitoring Agent,CN=<agent id>,CN=<workspace id>`.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The subject's DER encoding (a `Name`); renewal compares these bytes.
    #[must_use]
    pub fn subject_der(&self) -> &[u8] {
        &self.subject_der
    }
    /// The bytes of the SubjectPublicKeyInfo's public key (for ECDSA P-256
    /// the 65-byte uncompressed point).
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }
    /// The SHA-256 of the whole certificate DER, its thumbprint.
    #[must_use]
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
    /// Whether `now` is within notBefore..=notAfter.
    #[must_use]
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Whether the certificate carries `key`'s ECDSA P-256 public key.
    fn carries(&self, key: &AgentKey) -> bool {
        self.p256 && self.public_key == key.public_key
    }
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("subject", &self.subject)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("sha256", &hex_prefix(&self.sha256, 32))
            .finish_non_exhaustive()
    }
}

fn to_chrono(t: x509_cert::time::Time) -> Result<DateTime<Utc>, CredentialError> {
    let secs = t.to_unix_duration().as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(|| CredentialError::MalformedCertificate("time out of range".into()))
}

// ---------------------------------------------------------------------------
// The policy
// ---------------------------------------------------------------------------

/// When an agent's credential is due for renewal: at the earlier of
/// `max_age` after issue (notBefore) and `lifetime_fraction` of the
/// certificate's lifetime, minus a random jitter of at most `max_jitter`
/// drawn from the caller's entropy, so that a fleet enrolled on one day does
/// not renew in one minute.
///
/// Defaults: `max_age` 90 days, `lifetime_fraction` 2/3, `max_jitter` 24
/// hours. Times are whole seconds.
///
/// The jitter is also capped at half of the certificate's renewal interval,
/// so a short-lived certificate is used for at least half of its interval
/// and renewal can never fall before notBefore.
///
/// ```
/// use chrono::Duration;
/// use opsdata::CredentialPolicy;
/// let policy = CredentialPolicy::default()
///     .with_max_jitter(Duration::hours(6))?
///     .with_lifetime_fraction(1, 2)?;
/// assert_eq!(policy.max_age(), Duration::days(90));
/// assert!(CredentialPolicy::default().with_lifetime_fraction(4, 3).is_err());
/// # Ok::<(), opsdata::CredentialError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPolicy {
    max_age: Duration,
    numerator: u32,
    denominator: u32,
    max_jitter: Duration,
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        CredentialPolicy {
            max_age: Duration::days(90),
            numerator: 2,
            denominator: 3,
            max_jitter: Duration::hours(24),
        }
    }
}

/// The span a renewal time is drawn from: `[earliest, due]`, both within
/// the certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The earliest renewal time: `due` minus the jitter cap.
    pub earliest: DateTime<Utc>,
    /// The renewal time without jitter: the earlier of notBefore + `max_age`
    /// and notBefore + `lifetime_fraction` of the lifetime.
    pub due: DateTime<Utc>,
}

impl RenewalWindow {
    /// Whether `t` is within `[earliest, due]`.
    #[must_use]
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.earliest <= t && t <= self.due
    }
}

impl CredentialPolicy {
    /// The longest a credential is used after its notBefore. Default 90 days.
    #[must_use]
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
    /// The fraction of the certificate's lifetime after which it is renewed,
    /// as (numerator, denominator). Default (2, 3).
    #[must_use]
    pub fn lifetime_fraction(&self) -> (u32, u32) {
        (self.numerator, self.denominator)
    }
    /// The most the renewal time is moved earlier at random. Default 24
    /// hours.
    #[must_use]
    pub fn max_jitter(&self) -> Duration {
        self.max_jitter
    }

    /// Sets `max_age`.
    ///
    /// # Errors
    ///
    /// [`CredentialError::MaxAge`] unless between one second and ten years;
    /// [`CredentialError::MaxJitter`] if less than twice `max_jitter` (lower
    /// `max_jitter` first).
    pub fn with_max_age(mut self, max_age: Duration) -> Result<Self, CredentialError> {
        if max_age.num_seconds() < 1 || max_age > Duration::days(MAX_AGE_CEILING_DAYS) {
            return Err(CredentialError::MaxAge {
                max_days: MAX_AGE_CEILING_DAYS,
            });
        }
        if self.max_jitter.num_seconds() > max_age.num_seconds() / 2 {
            return Err(CredentialError::MaxJitter);
        }
        self.max_age = max_age;
        Ok(self)
    }

    /// Sets `lifetime_fraction` to `numerator / denominator`.
    ///
    /// # Errors
    ///
    /// [`CredentialError::LifetimeFraction`] unless
    /// `0 < numerator <= denominator`.
    pub fn with_lifetime_fraction(
        mut self,
        numerator: u32,
        denominator: u32,
    ) -> Result<Self, CredentialError> {
        if numerator == 0 || numerator > denominator {
            return Err(CredentialError::LifetimeFraction {
                numerator,
                denominator,
            });
        }
        self.numerator = numerator;
        self.denominator = denominator;
        Ok(self)
    }

    /// Sets `max_jitter`; zero makes the renewal time exactly the due time.
    ///
    /// # Errors
    ///
    /// [`CredentialError::MaxJitter`] if negative or more than half of
    /// `max_age`.
    pub fn with_max_jitter(mut self, max_jitter: Duration) -> Result<Self, CredentialError> {
        if max_jitter < Duration::zero()
            || max_jitter.num_seconds() > self.max_age.num_seconds() / 2
        {
            return Err(CredentialError::MaxJitter);
        }
        self.max_jitter = max_jitter;
        Ok(self)
    }

    /// The window the renewal time of `certificate` is drawn from; no
    /// randomness.
    ///
    /// # Errors
    ///
    /// As [`CertificateInfo::parse`].
    pub fn renewal_window(
        &self,
        certificate: &CertificateDer<'_>,
    ) -> Result<RenewalWindow, CredentialError> {
        Ok(self.window(&CertificateInfo::parse(certificate)?))
    }

    /// When to renew `certificate`: a time drawn uniformly (whole seconds)
    /// from its [`renewal_window`](Self::renewal_window), with 8 bytes from
    /// `entropy`. Never before notBefore, never after the due time.
    ///
    /// # Errors
    ///
    /// As [`CertificateInfo::parse`]; [`CredentialError::Entropy`] if the
    /// entropy source fails.
    pub fn renewal_at(
        &self,
        certificate: &CertificateDer<'_>,
        entropy: &mut dyn Entropy,
    ) -> Result<DateTime<Utc>, CredentialError> {
        self.draw(&CertificateInfo::parse(certificate)?, entropy)
    }

    /// The renewal window of an already parsed certificate.
    #[must_use]
    pub fn window(&self, info: &CertificateInfo) -> RenewalWindow {
        let lifetime = (info.not_after - info.not_before).num_seconds();
        // lifetime > 0 and numerator <= denominator, so this fits an i64 and
        // is at most the lifetime.
        let by_fraction =
            i128::from(lifetime) * i128::from(self.numerator) / i128::from(self.denominator);
        let by_fraction = i64::try_from(by_fraction).unwrap_or(lifetime);
        let interval = by_fraction.min(self.max_age.num_seconds());
        let jitter = self.max_jitter.num_seconds().min(interval / 2);
        let due = info.not_before + Duration::seconds(interval);
        RenewalWindow {
            earliest: due - Duration::seconds(jitter),
            due,
        }
    }

    fn draw(
        &self,
        info: &CertificateInfo,
        entropy: &mut dyn Entropy,
    ) -> Result<DateTime<Utc>, CredentialError> {
        let window = self.window(info);
        let span = (window.due - window.earliest).num_seconds();
        let mut bytes = [0u8; 8];
        entropy.fill(&mut bytes)?;
        // Maps a uniform u64 onto 0..=span by a widening multiply; the bias
        // is below span / 2^64, negligible for spans of days.
        let r = u128::from(u64::from_be_bytes(bytes));
        let span_u = u128::from(span.unsigned_abs()) + 1;
        let offset = i64::try_from((r * span_u) >> 64).unwrap_or(0);
        Ok(window.due - Duration::seconds(offset))
    }
}

// ---------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------

/// An agent's ECDSA P-256 private key, held as PKCS#8 v1 DER in a buffer
/// that is wiped when the key is dropped. `Debug` shows only a fingerprint of
/// the public key; the private key leaves only as the borrowed
/// [`PrivatePkcs8KeyDer`] view handed to the host's TLS stack.
///
/// `ring` keeps temporary copies it does not wipe (the document
/// `generate_pkcs8` returns, the key pair parsed to check a document); they
/// live only for the duration of the call.
pub struct AgentKey {
    pkcs8: Zeroizing<Vec<u8>>,
    public_key: Vec<u8>,
}

impl AgentKey {
    /// Generates a new ECDSA P-256 key pair with `rng` (for example
    /// [`SystemEntropy::secure_random`](crate::SystemEntropy::secure_random)).
    ///
    /// # Errors
    ///
    /// [`CredentialError::KeyGeneration`] if the generator fails.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, CredentialError> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, rng)
            .map_err(|_| CredentialError::KeyGeneration)?;
        Self::from_pkcs8(document.as_ref(), rng).map_err(|_| CredentialError::KeyGeneration)
    }

    /// Loads a key from PKCS#8 DER (for example from the host's secret
    /// store), copying it into a wiped-on-drop buffer; the caller wipes its
    /// own copy. `rng` is what `ring` uses to check the key.
    ///
    /// # Errors
    ///
    /// [`CredentialError::MalformedKey`] unless it is an ECDSA P-256 PKCS#8
    /// document that `ring` accepts.
    pub fn from_pkcs8(pkcs8: &[u8], rng: &dyn SecureRandom) -> Result<Self, CredentialError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, rng)
            .map_err(|_| CredentialError::MalformedKey)?;
        Ok(AgentKey {
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            public_key: pair.public_key().as_ref().to_vec(),
        })
    }

    /// The public key: the 65-byte uncompressed P-256 point, as it appears
    /// in a certificate's SubjectPublicKeyInfo.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The private key as PKCS#8 DER, borrowed, for the host's TLS stack or
    /// to sign a certificate request. Do not copy it anywhere unwiped.
    #[must_use]
    pub fn as_pkcs8(&self) -> PrivatePkcs8KeyDer<'_> {
        PrivatePkcs8KeyDer::from(self.pkcs8.as_slice())
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, &self.public_key);
        f.debug_struct("AgentKey")
            .field("algorithm", &"ECDSA P-256")
            .field("public_key_sha256", &hex_prefix(fingerprint.as_ref(), 8))
            .field("private_key", &"<redacted>")
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The credential
// ---------------------------------------------------------------------------

/// A certificate and the private key for its public key.
pub struct Credential {
    certificate: CertificateDer<'static>,
    info: CertificateInfo,
    key: AgentKey,
}

impl Credential {
    /// Pairs a certificate with its key.
    ///
    /// # Errors
    ///
    /// As [`CertificateInfo::parse`]; [`CredentialError::KeyMismatch`] if
    /// the certificate does not carry `key`'s public key (the key is then
    /// dropped and wiped).
    pub fn new(
        certificate: CertificateDer<'static>,
        key: AgentKey,
    ) -> Result<Self, CredentialError> {
        let info = CertificateInfo::parse(&certificate)?;
        if !info.carries(&key) {
            return Err(CredentialError::KeyMismatch);
        }
        Ok(Credential {
            certificate,
            info,
            key,
        })
    }

    /// The certificate, for the host's TLS stack.
    #[must_use]
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }
    /// The private key.
    #[must_use]
    pub fn key(&self) -> &AgentKey {
        &self.key
    }
    /// What was read from the certificate.
    #[must_use]
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }
    /// The certificate's notBefore.
    #[must_use]
    pub fn not_before(&self) -> DateTime<Utc> {
        self.info.not_before
    }
    /// The certificate's notAfter.
    #[must_use]
    pub fn not_after(&self) -> DateTime<Utc> {
        self.info.not_after
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("certificate", &self.info)
            .field("key", &self.key)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// The hand-over
// ---------------------------------------------------------------------------

/// Where an [`AgentCredentials`] hand-over stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialPhase {
    /// One credential, in use.
    Steady,
    /// A new key is generated and waits for its certificate; the old
    /// credential is still the active one.
    Renewing,
    /// The new credential is active; the old one is kept as the previous
    /// credential until it is retired.
    Confirmed,
}

/// The receipt [`AgentCredentials::retire`] returns for the credential it
/// dropped (and wiped). No key material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RetiredCredential {
    /// The retired certificate's subject (RFC 4514 text).
    pub subject: String,
    /// The retired certificate's SHA-256 thumbprint.
    pub certificate_sha256: [u8; 32],
    /// The retired certificate's notBefore.
    pub not_before: DateTime<Utc>,
    /// The retired certificate's notAfter.
    pub not_after: DateTime<Utc>,
    /// When it was retired.
    pub retired_at: DateTime<Utc>,
}

struct Pending {
    key: AgentKey,
    since: DateTime<Utc>,
}

/// An agent's credential and its renewal: renewing (a new key waits for its
/// certificate; the old credential stays active) → confirmed (the new
/// credential is active; the old one is still held for connections that use
/// it) → retired (the old one is dropped and wiped).
///
/// ```text
/// Steady --begin_renewal--> Renewing --confirm--> Confirmed --retire--> Steady
///                              |
///                              +--abort_renewal--> Steady
/// ```
///
/// Each step out of order is a typed error that changes nothing. The active
/// credential's renewal time is drawn once, when it becomes active, from the
/// [`CredentialPolicy`]; [`is_due`](Self::is_due) tells when to begin.
/// A `now` earlier than the latest seen is treated as the latest.
///
/// ```
/// use chrono::{DateTime, Duration, TimeZone, Utc};
/// use opsdata::{
///     AgentCredentials, AgentKey, Credential, CredentialPhase, CredentialPolicy,
///     DeterministicEntropy, SystemEntropy,
/// };
/// # use rustls_pki_types::CertificateDer;
/// # // The host's issuer; here a self-signed certificate made with rcgen.
/// # fn issue(key: &AgentKey, from: DateTime<Utc>, days: u64) -> CertificateDer<'static> {
/// #     let pair = rcgen::KeyPair::try_from(&key.as_pkcs8()).unwrap();
/// #     let mut p = rcgen::CertificateParams::new(vec![]).unwrap();
/// #     let from = std::time::Duration::from_secs(from.timestamp() as u64);
/// #     p.not_before = rcgen::date_time_ymd(1970, 1, 1) + from;
/// #     p.not_after = p.not_before + std::time::Duration::from_secs(days * 86_400);
/// #     p.self_signed(&pair).unwrap().der().clone()
/// # }
/// let rng = SystemEntropy::new();
/// let mut jitter = DeterministicEntropy::from_u64(1); // SystemEntropy in production
/// let issued = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
///
/// let key = AgentKey::generate(rng.secure_random())?;
/// let first = Credential::new(issue(&key, issued, 365), key)?;
/// let mut creds = AgentCredentials::new(CredentialPolicy::default(), first, &mut jitter)?;
/// assert!(creds.renew_at() <= issued + Duration::days(90));
///
/// let now = creds.renew_at();
/// assert!(creds.is_due(now));
/// let new_key = creds.begin_renewal(rng.secure_random(), now)?;
/// let new_cert = issue(new_key, now, 365); // the host has it issued
/// creds.confirm(&new_cert, &mut jitter, now)?;
/// assert_eq!(creds.active().certificate(), &new_cert);
/// assert_eq!(creds.phase(), CredentialPhase::Confirmed);
///
/// // Once no connection uses the old credential any more:
/// let receipt = creds.retire(now + Duration::minutes(10))?;
/// assert_eq!(receipt.not_before, issued);
/// # Ok::<(), opsdata::CredentialError>(())
/// ```
pub struct AgentCredentials {
    policy: CredentialPolicy,
    active: Credential,
    renew_at: DateTime<Utc>,
    pending: Option<Pending>,
    previous: Option<Credential>,
    latest: Option<DateTime<Utc>>,
}

impl AgentCredentials {
    /// Starts from the agent's current credential, drawing its renewal time
    /// from `entropy`.
    ///
    /// # Errors
    ///
    /// [`CredentialError::Entropy`] if the entropy source fails.
    pub fn new(
        policy: CredentialPolicy,
        credential: Credential,
        entropy: &mut dyn Entropy,
    ) -> Result<Self, CredentialError> {
        let renew_at = policy.draw(&credential.info, entropy)?;
        Ok(AgentCredentials {
            policy,
            active: credential,
            renew_at,
            pending: None,
            previous: None,
            latest: None,
        })
    }

    fn clock(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.latest.map_or(now, |latest| latest.max(now))
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &CredentialPolicy {
        &self.policy
    }
    /// Where the hand-over stands.
    #[must_use]
    pub fn phase(&self) -> CredentialPhase {
        if self.pending.is_some() {
            CredentialPhase::Renewing
        } else if self.previous.is_some() {
            CredentialPhase::Confirmed
        } else {
            CredentialPhase::Steady
        }
    }
    /// The credential to use for new connections: the old one until the new
    /// one is confirmed.
    #[must_use]
    pub fn active(&self) -> &Credential {
        &self.active
    }
    /// The credential the last confirmation replaced, until it is retired.
    #[must_use]
    pub fn previous(&self) -> Option<&Credential> {
        self.previous.as_ref()
    }
    /// The key generated by [`begin_renewal`](Self::begin_renewal), while
    /// its certificate is awaited.
    #[must_use]
    pub fn pending_key(&self) -> Option<&AgentKey> {
        self.pending.as_ref().map(|p| &p.key)
    }
    /// When the renewal under way began.
    #[must_use]
    pub fn renewing_since(&self) -> Option<DateTime<Utc>> {
        self.pending.as_ref().map(|p| p.since)
    }
    /// When the active credential is to be renewed (drawn when it became
    /// active).
    #[must_use]
    pub fn renew_at(&self) -> DateTime<Utc> {
        self.renew_at
    }
    /// Whether to begin a renewal now: no hand-over is under way and the
    /// active credential's renewal time has come.
    #[must_use]
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.phase() == CredentialPhase::Steady && self.clock(now) >= self.renew_at
    }

    /// Begins a renewal: generates a new ECDSA P-256 key with `rng` and
    /// returns it, for the host to have a certificate issued for its public
    /// key (or to sign one with it). The active credential stays in use.
    ///
    /// # Errors
    ///
    /// [`CredentialError::AlreadyRenewing`] during a renewal;
    /// [`CredentialError::PreviousNotRetired`] until the previous credential
    /// is retired; [`CredentialError::KeyGeneration`] if `rng` fails.
    pub fn begin_renewal(
        &mut self,
        rng: &dyn SecureRandom,
        now: DateTime<Utc>,
    ) -> Result<&AgentKey, CredentialError> {
        match self.phase() {
            CredentialPhase::Renewing => return Err(CredentialError::AlreadyRenewing),
            CredentialPhase::Confirmed => return Err(CredentialError::PreviousNotRetired),
            CredentialPhase::Steady => {}
        }
        let now = self.clock(now);
        let key = AgentKey::generate(rng)?;
        self.latest = Some(now);
        Ok(&self.pending.insert(Pending { key, since: now }).key)
    }

    /// Abandons the renewal under way; the pending key is dropped and wiped.
    ///
    /// # Errors
    ///
    /// [`CredentialError::NotRenewing`] if none is under way.
    pub fn abort_renewal(&mut self) -> Result<(), CredentialError> {
        match self.pending.take() {
            Some(_) => Ok(()),
            None => Err(CredentialError::NotRenewing),
        }
    }

    /// Confirms the renewal with the certificate issued for the pending key:
    /// it becomes the active credential, with a renewal time drawn from
    /// `entropy`, and the old one becomes [`previous`](Self::previous).
    ///
    /// The certificate must carry exactly the pending key's public key, name
    /// the same subject (the same DER) as the active one, and be valid at
    /// `now`.
    ///
    /// # Errors
    ///
    /// [`CredentialError::NotRenewing`] with no renewal under way; as
    /// [`CertificateInfo::parse`]; [`CredentialError::KeyMismatch`],
    /// [`CredentialError::SubjectMismatch`], [`CredentialError::NotValidAt`]
    /// as above; [`CredentialError::Entropy`] if the entropy source fails.
    /// Nothing changes on an error: the renewal stays under way.
    pub fn confirm(
        &mut self,
        certificate: &CertificateDer<'_>,
        entropy: &mut dyn Entropy,
        now: DateTime<Utc>,
    ) -> Result<&Credential, CredentialError> {
        let Some(pending) = self.pending.take() else {
            return Err(CredentialError::NotRenewing);
        };
        let now = self.clock(now);
        let (info, renew_at) = match self.vet(&pending.key, certificate, entropy, now) {
            Ok(vetted) => vetted,
            Err(e) => {
                self.pending = Some(pending);
                return Err(e);
            }
        };
        let new = Credential {
            certificate: certificate.clone().into_owned(),
            info,
            key: pending.key,
        };
        self.previous = Some(std::mem::replace(&mut self.active, new));
        self.renew_at = renew_at;
        self.latest = Some(now);
        Ok(&self.active)
    }

    /// The checks of [`confirm`](Self::confirm), and the new renewal time.
    fn vet(
        &self,
        key: &AgentKey,
        certificate: &CertificateDer<'_>,
        entropy: &mut dyn Entropy,
        now: DateTime<Utc>,
    ) -> Result<(CertificateInfo, DateTime<Utc>), CredentialError> {
        let info = CertificateInfo::parse(certificate)?;
        if !info.carries(key) {
            return Err(CredentialError::KeyMismatch);
        }
        if info.subject_der != self.active.info.subject_der {
            return Err(CredentialError::SubjectMismatch {
                expected: cut(&self.active.info.subject),
                found: cut(&info.subject),
            });
        }
        if !info.is_valid_at(now) {
            return Err(CredentialError::NotValidAt {
                now,
                not_before: info.not_before,
                not_after: info.not_after,
            });
        }
        let renew_at = self.policy.draw(&info, entropy)?;
        Ok((info, renew_at))
    }

    /// Drops the previous credential (its key is wiped) once nothing uses it
    /// any more, and returns a receipt.
    ///
    /// # Errors
    ///
    /// [`CredentialError::NothingToRetire`] if there is no previous
    /// credential.
    pub fn retire(&mut self, now: DateTime<Utc>) -> Result<RetiredCredential, CredentialError> {
        let now = self.clock(now);
        let old = self
            .previous
            .take()
            .ok_or(CredentialError::NothingToRetire)?;
        self.latest = Some(now);
        Ok(RetiredCredential {
            subject: old.info.subject.clone(),
            certificate_sha256: old.info.sha256,
            not_before: old.info.not_before,
            not_after: old.info.not_after,
            retired_at: now,
        })
    }
}

impl fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("phase", &self.phase())
            .field("active", &self.active)
            .field("renew_at", &self.renew_at)
            .field("pending_key", &self.pending_key())
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn info(lifetime: Duration) -> CertificateInfo {
        CertificateInfo {
            not_before: t0(),
            not_after: t0() + lifetime,
            subject: "CN=agent".into(),
            subject_der: Vec::new(),
            public_key: Vec::new(),
            p256: true,
            sha256: [0; 32],
        }
    }

    /// Entropy that repeats one byte.
    struct Fixed(u8);
    impl Entropy for Fixed {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
            dest.fill(self.0);
            Ok(())
        }
    }

    #[test]
    fn defaults() {
        let p = CredentialPolicy::default();
        assert_eq!(p.max_age(), Duration::days(90));
        assert_eq!(p.lifetime_fraction(), (2, 3));
        assert_eq!(p.max_jitter(), Duration::hours(24));
    }

    #[test]
    fn nonsense_settings_are_refused() {
        let p = CredentialPolicy::default();
        let max_age = Err(CredentialError::MaxAge { max_days: 3650 });
        assert_eq!(p.clone().with_max_age(Duration::zero()), max_age);
        assert_eq!(p.clone().with_max_age(Duration::milliseconds(999)), max_age);
        assert_eq!(p.clone().with_max_age(Duration::days(-1)), max_age);
        assert_eq!(p.clone().with_max_age(Duration::days(3651)), max_age);
        assert!(p.clone().with_max_age(Duration::days(3650)).is_ok());
        // Shorter than twice the jitter.
        assert_eq!(
            p.clone().with_max_age(Duration::hours(47)),
            Err(CredentialError::MaxJitter)
        );
        assert!(p.clone().with_max_age(Duration::hours(48)).is_ok());

        for (n, d) in [(0, 3), (4, 3), (0, 0), (1, 0), (u32::MAX, 1)] {
            assert_eq!(
                p.clone().with_lifetime_fraction(n, d),
                Err(CredentialError::LifetimeFraction {
                    numerator: n,
                    denominator: d
                })
            );
        }
        assert!(p.clone().with_lifetime_fraction(1, 1).is_ok());
        assert!(p.clone().with_lifetime_fraction(1, u32::MAX).is_ok());

        assert_eq!(
            p.clone().with_max_jitter(Duration::seconds(-1)),
            Err(CredentialError::MaxJitter)
        );
        assert_eq!(
            p.clone()
                .with_max_jitter(Duration::days(45) + Duration::seconds(1)),
            Err(CredentialError::MaxJitter)
        );
        assert!(p.clone().with_max_jitter(Duration::days(45)).is_ok());
        assert!(p.with_max_jitter(Duration::zero()).is_ok());
    }

    #[test]
    fn window_arithmetic() {
        let p = CredentialPolicy::default();
        // One second: two thirds rounds down to zero; renew at once.
        let w = p.window(&info(Duration::seconds(1)));
        assert_eq!((w.earliest, w.due), (t0(), t0()));
        // Three seconds: due after 2, jitter at most 1.
        let w = p.window(&info(Duration::seconds(3)));
        assert_eq!(w.due, t0() + Duration::seconds(2));
        assert_eq!(w.earliest, t0() + Duration::seconds(1));
        // Long-lived certificates: max_age rules.
        let w = p.window(&info(Duration::days(365 * 8000)));
        assert_eq!(w.due, t0() + Duration::days(90));
        assert_eq!(w.earliest, t0() + Duration::days(89));
        let w = p
            .clone()
            .with_lifetime_fraction(u32::MAX, u32::MAX)
            .unwrap()
            .window(&info(Duration::days(30)));
        assert_eq!(w.due, t0() + Duration::days(30));
    }

    #[test]
    fn the_draw_spans_the_whole_window() {
        let p = CredentialPolicy::default();
        let i = info(Duration::days(365));
        let w = p.window(&i);
        assert_eq!(p.draw(&i, &mut Fixed(0)).unwrap(), w.due);
        assert_eq!(p.draw(&i, &mut Fixed(0xff)).unwrap(), w.earliest);
        let mid = p.draw(&i, &mut Fixed(0x80)).unwrap();
        assert!(
            (mid - (w.earliest + Duration::hours(12)))
                .num_seconds()
                .abs()
                <= 300
        );
        // No jitter: exactly the due time whatever the entropy.
        let i = info(Duration::seconds(1));
        assert_eq!(p.draw(&i, &mut Fixed(0xff)).unwrap(), t0());
    }

    #[test]
    fn error_text_is_cut() {
        let long = "é".repeat(500);
        let c = cut(&long);
        assert_eq!(c.chars().count(), ERROR_TEXT_MAX + 1);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short"), "short");
        assert_eq!(hex_prefix(&[0x0a, 0xff, 0x10], 2), "0aff");
    }
}
