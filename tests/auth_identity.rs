//! Principals from client certificates: chains validated against the
//! enrollment CA with the time passed in, the workspace and agent read from
//! the subject. Certificates are made here, at test time; no private key is
//! committed.

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{AuthError, EnrollmentCa, KeySlot, Principal, TenantId, Verified, subject_ids};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;
use uuid::Uuid;

const WS_A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const WS_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const AGENT: &str = "5b1f8ac2-6a3e-4b5f-9f0e-2d9c1f7a6e11";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// Sets the validity of `p` (whole seconds after 1970).
fn validity(p: &mut CertificateParams, from: DateTime<Utc>, to: DateTime<Utc>) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs =
        |t: DateTime<Utc>| std::time::Duration::from_secs(u64::try_from(t.timestamp()).unwrap());
    p.not_before = epoch + secs(from);
    p.not_after = epoch + secs(to);
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(
        &mut p,
        t0() - Duration::days(365),
        t0() + Duration::days(3650),
    );
    let key = KeyPair::generate().unwrap();
    let der = p.self_signed(&key).unwrap().der().clone();
    Ca {
        issuer: Issuer::new(p, key),
        der,
    }
}

fn subject(workspace: &str, agent: &str, ou: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, workspace);
    // rcgen keys names by type: the second CN goes in under its OID.
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), agent);
    dn.push(DnType::OrganizationalUnitName, ou);
    dn.push(DnType::OrganizationName, "Microsoft");
    dn
}

fn agent_cert(ca: &Ca, dn: DistinguishedName, days: i64) -> CertificateDer<'static> {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(
        &mut p,
        t0() - Duration::days(1),
        t0() + Duration::days(days),
    );
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

#[test]
fn an_agent_certificate_from_the_enrollment_ca_names_its_workspace_and_agent() {
    let ca = ca("opsdata enrollment CA");
    let cert = agent_cert(&ca, subject(WS_A, AGENT, "Linux Monitoring Agent"), 365);
    let trusted = EnrollmentCa::new(std::slice::from_ref(&ca.der)).unwrap();
    let p = trusted
        .authenticate(std::slice::from_ref(&cert), t0())
        .unwrap();
    assert_eq!(p.tenant(), WS_A.parse::<TenantId>().unwrap());
    match p {
        Principal::Agent(a) => {
            assert_eq!(a.agent_id, Uuid::parse_str(AGENT).unwrap());
            assert_eq!(a.certificate, cert);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        subject_ids(&cert).unwrap(),
        (WS_A.parse().unwrap(), Uuid::parse_str(AGENT).unwrap())
    );
}

#[test]
fn chains_that_do_not_validate_are_refused() {
    let ca_a = ca("enrollment CA");
    let other = ca("someone else's CA");
    let trusted = EnrollmentCa::new(std::slice::from_ref(&ca_a.der)).unwrap();
    let good = agent_cert(&ca_a, subject(WS_A, AGENT, "Linux Monitoring Agent"), 30);
    // Another CA's certificate.
    let foreign = agent_cert(&other, subject(WS_A, AGENT, "Linux Monitoring Agent"), 30);
    assert!(matches!(
        trusted.authenticate(&[foreign], t0()),
        Err(AuthError::Certificate(_))
    ));
    // Expired, and not yet valid: the time is the caller's.
    assert!(
        trusted
            .authenticate(std::slice::from_ref(&good), t0() + Duration::days(31))
            .is_err()
    );
    assert!(
        trusted
            .authenticate(std::slice::from_ref(&good), t0() - Duration::days(2))
            .is_err()
    );
    assert!(trusted.authenticate(&[good], t0()).is_ok());
    // Nothing presented, garbage presented.
    assert!(trusted.authenticate(&[], t0()).is_err());
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(trusted.authenticate(&[junk], t0()).is_err());
    assert!(EnrollmentCa::new(&[]).is_err());
}

#[test]
fn a_subject_without_workspace_and_agent_is_refused() {
    let ca = ca("enrollment CA");
    let trusted = EnrollmentCa::new(std::slice::from_ref(&ca.der)).unwrap();
    for dn in [
        subject(WS_A, AGENT, "Windows Agent"),
        subject("not-a-uuid", AGENT, "Linux Monitoring Agent"),
        subject(
            WS_A,
            "00000000-0000-0000-0000-000000000000",
            "Linux Monitoring Agent",
        ),
        {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, WS_A);
            dn.push(DnType::OrganizationalUnitName, "Linux Monitoring Agent");
            dn
        },
    ] {
        let cert = agent_cert(&ca, dn, 30);
        match trusted.authenticate(&[cert], t0()) {
            Err(AuthError::Certificate(msg)) => assert!(msg.contains("subject"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_principal_of_a_certificate_for_workspace_b_is_b_not_a() {
    let ca = ca("enrollment CA");
    let trusted = EnrollmentCa::new(std::slice::from_ref(&ca.der)).unwrap();
    let cert = agent_cert(&ca, subject(WS_B, AGENT, "Linux Monitoring Agent"), 30);
    let p = trusted.authenticate(&[cert], t0()).unwrap();
    assert_eq!(p.tenant(), WS_B.parse::<TenantId>().unwrap());
    assert_ne!(p.tenant(), WS_A.parse::<TenantId>().unwrap());
}

#[test]
fn a_principal_from_a_verified_signature() {
    let v = signed();
    let p = Principal::from_signature(&v);
    assert_eq!(p.tenant(), WS_A.parse::<TenantId>().unwrap());
    assert!(matches!(
        p,
        Principal::Workspace {
            key: KeySlot::Primary,
            ..
        }
    ));
}

fn signed() -> Verified {
    use base64::Engine;
    let key = opsdata::EnrollmentKey::from_base64(
        &base64::engine::general_purpose::STANDARD.encode([7u8; 64]),
    )
    .unwrap();
    let ws: TenantId = WS_A.parse().unwrap();
    let s = opsdata::sign_data_collector(ws, &key, t0(), b"[]");
    let keys = opsdata::WorkspaceKeys::new(ws, key);
    opsdata::verify_data_collector(
        &keys,
        &s.authorization,
        &s.x_ms_date,
        b"[]",
        &opsdata::AuthPolicy::default(),
        t0(),
    )
    .unwrap()
}

#[test]
fn tenant_mismatches_are_counted_per_agent() {
    use opsdata::{
        BatchId, DataType, DeterministicEntropy, FrameEncoder, Ingest, IngestConfig, KeyRing,
        Performance, Record, RotationPolicy, Tagged, TenantBatch,
    };
    let ca = ca("opsdata enrollment CA");
    let trusted = EnrollmentCa::new(std::slice::from_ref(&ca.der)).unwrap();
    let other_agent = "9d2e4c1a-7b3f-4e8d-a6c5-0f1e2d3c4b5a";
    let p1 = trusted
        .authenticate(
            &[agent_cert(
                &ca,
                subject(WS_A, AGENT, "Linux Monitoring Agent"),
                30,
            )],
            t0(),
        )
        .unwrap();
    let p2 = trusted
        .authenticate(
            &[agent_cert(
                &ca,
                subject(WS_A, other_agent, "Linux Monitoring Agent"),
                30,
            )],
            t0(),
        )
        .unwrap();
    let (a, b): (TenantId, TenantId) = (WS_A.parse().unwrap(), WS_B.parse().unwrap());
    let mut e = DeterministicEntropy::from_u64(4);
    let mut ring = KeyRing::new(a, &RotationPolicy::default());
    let k = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k, t0()).unwrap();
    let record = Record::Performance(Performance {
        object_name: "Processor".into(),
        counter_name: "% Processor Time".into(),
        perfmon_instance_name: "_Total".into(),
        performance_data_id: Uuid::from_u128(1),
        performance_source_internal_id: 1,
        sample_value: 1.0,
        time_sampled: t0(),
        time_added: t0(),
    });
    let b_frame = FrameEncoder::new()
        .encode_frame(
            &TenantBatch::from_records(b, DataType::Performance, [Tagged::new(b, record)]).unwrap(),
            BatchId::new(Uuid::from_u128(7)).unwrap(),
            t0(),
        )
        .unwrap();
    let mut ingest = Ingest::new(IngestConfig::default());
    for _ in 0..2 {
        let report = ingest
            .handle_request(t0(), &p1, &mut ring, &mut e, b_frame.as_bytes())
            .unwrap();
        assert!(report.stopped.is_some());
    }
    assert_eq!(ingest.tenant_mismatches(&p1), 2);
    assert_eq!(ingest.tenant_mismatches(&p2), 0);
    assert_eq!(ingest.stats(a).tenant_mismatches, 2);
}
