//! Development certificates with rcgen, shared by `examples/certs.rs` and
//! `tests/tls.rs`: an enrollment CA and agent certificates
//! (`CN=<workspace>`, `CN=<agent>`, `OU=Linux Monitoring Agent`, client
//! auth), a service CA and a service certificate (server auth). Never for
//! production: the CA keys are thrown away after issuing.

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

/// A CA that can issue.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate.
    pub der: CertificateDer<'static>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// An issued certificate and its key.
pub struct Issued {
    /// The certificate.
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

fn validity(p: &mut CertificateParams, now: DateTime<Utc>, days: i64) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |t: DateTime<Utc>| {
        epoch + std::time::Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    p.not_before = at(now - Duration::days(1));
    p.not_after = at(now + Duration::days(days));
}

/// A self-signed CA named `name`, valid from a day before `now` for ten years.
pub fn ca(name: &str, now: DateTime<Utc>) -> Result<Ca, rcgen::Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, now, 3650);
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok(Ca {
        der: cert.der().clone(),
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    })
}

fn issue(ca: &Ca, p: &CertificateParams) -> Result<Issued, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca.issuer)?;
    Ok(Issued {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    })
}

/// A service certificate for `names` (DNS names or IP addresses), valid for
/// a year.
pub fn service(ca: &Ca, names: &[&str], now: DateTime<Utc>) -> Result<Issued, rcgen::Error> {
    let mut p = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
    p.distinguished_name
        .push(DnType::CommonName, "opsdata ingest service");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut p, now, 365);
    issue(ca, &p)
}

/// An agent certificate for `workspace` and `agent` (UUIDs as text), valid
/// for a year.
pub fn agent(
    ca: &Ca,
    workspace: &str,
    agent: &str,
    now: DateTime<Utc>,
) -> Result<Issued, rcgen::Error> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, workspace);
    // rcgen keys names by type: the second CN goes in under its OID.
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), agent);
    dn.push(DnType::OrganizationalUnitName, opsdata::AGENT_OU);
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p, now, 365);
    issue(ca, &p)
}
