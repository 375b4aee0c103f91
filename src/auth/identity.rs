//! Who is sending: a [`Principal`] derived from a verified signature or
//! from a client certificate chain validated against the enrollment CA.

use std::fmt;

use chrono::{DateTime, Utc};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use uuid::Uuid;
use x509_cert::der::Decode;
use x509_cert::der::asn1::ObjectIdentifier;

use super::{AuthError, KeySlot, Verified};
use crate::tenant::TenantId;

/// id-at-commonName (2.5.4.3).
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// id-at-organizationalUnitName (2.5.4.11).
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// The organizational unit an OMS agent's certificate names.
pub const AGENT_OU: &str = "Linux Monitoring Agent";

/// An agent that presented a certificate the enrollment CA vouches for.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentIdentity {
    /// The agent's id (its certificate's second `CN`).
    pub agent_id: Uuid,
    /// The workspace it belongs to (its certificate's first `CN`).
    pub tenant: TenantId,
    /// The certificate it presented.
    pub certificate: CertificateDer<'static>,
}

impl fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("agent_id", &self.agent_id)
            .field("tenant", &self.tenant)
            .field("certificate_len", &self.certificate.len())
            .finish()
    }
}

/// Who the service is talking to, as established by authentication. Every
/// later step takes its tenant from here, never from the data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A request signed with the workspace's key. Only
    /// [`Principal::from_signature`] makes one (the variant cannot be built
    /// outside this crate), so holding one means a signature verified.
    #[non_exhaustive]
    Workspace {
        /// The workspace.
        tenant: TenantId,
        /// Which of its keys signed.
        key: KeySlot,
    },
    /// An agent authenticated by its certificate.
    Agent(AgentIdentity),
}

impl Principal {
    /// The tenant the principal acts for.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        match self {
            Principal::Workspace { tenant, .. } => *tenant,
            Principal::Agent(a) => a.tenant,
        }
    }

    /// The principal of a request whose signature verified.
    #[must_use]
    pub fn from_signature(verified: &Verified) -> Principal {
        Principal::Workspace {
            tenant: verified.workspace,
            key: verified.key,
        }
    }
}

/// The CA agents' certificates must chain to, for client-certificate
/// authentication.
pub struct EnrollmentCa {
    anchors: Vec<TrustAnchor<'static>>,
}

impl fmt::Debug for EnrollmentCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentCa")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

/// At most this many characters of a certificate error are kept.
const MAX_CERT_ERROR_CHARS: usize = 200;

fn cert_error(e: impl fmt::Display) -> AuthError {
    // By characters, not bytes: `String::truncate` panics inside one.
    AuthError::Certificate(e.to_string().chars().take(MAX_CERT_ERROR_CHARS).collect())
}

impl EnrollmentCa {
    /// Trusts the given CA certificates (one or more, for a CA rollover).
    ///
    /// # Errors
    ///
    /// [`AuthError::Certificate`] if one is not a usable CA certificate;
    /// [`AuthError::Policy`] if none is given.
    pub fn new(ca_certificates: &[CertificateDer<'_>]) -> Result<Self, AuthError> {
        if ca_certificates.is_empty() {
            return Err(AuthError::Policy("an enrollment CA needs a certificate"));
        }
        let anchors = ca_certificates
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(cert_error)
            })
            .collect::<Result<_, _>>()?;
        Ok(EnrollmentCa { anchors })
    }

    /// Validates a client's chain (end-entity certificate first, then any
    /// intermediates) against the CA at `now`, for client authentication,
    /// and reads the agent's identity from the subject: the first `CN` is
    /// the workspace id, the second the agent id, and an `OU` must be
    /// [`AGENT_OU`].
    ///
    /// # Errors
    ///
    /// [`AuthError::Certificate`] if the chain does not validate (expired,
    /// not yet valid, another CA, not for client authentication, malformed)
    /// or the subject does not name a workspace and an agent.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'_>],
        now: DateTime<Utc>,
    ) -> Result<Principal, AuthError> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| AuthError::Certificate("no certificate presented".into()))?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(cert_error)?;
        let secs =
            u64::try_from(now.timestamp()).map_err(|_| AuthError::Policy("now is before 1970"))?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(cert_error)?;
        let (tenant, agent_id) = subject_ids(end_entity)?;
        Ok(Principal::Agent(AgentIdentity {
            agent_id,
            tenant,
            certificate: end_entity.clone().into_owned(),
        }))
    }
}

/// Reads the workspace and agent ids from an agent certificate's subject:
/// `CN=<workspace id>`, `CN=<agent id>`, `OU=Linux Monitoring Agent`, in
/// that order of the `CN`s.
///
/// # Errors
///
/// [`AuthError::Certificate`] if the certificate does not parse or the
/// subject does not have that shape.
pub fn subject_ids(certificate: &CertificateDer<'_>) -> Result<(TenantId, Uuid), AuthError> {
    let cert = x509_cert::Certificate::from_der(certificate.as_ref()).map_err(cert_error)?;
    let subject = cert.tbs_certificate().subject();
    let mut cns = Vec::new();
    let mut agent_ou = false;
    for atv in subject.iter() {
        if atv.oid == CN || atv.oid == OU {
            let value = x509_cert::ext::pkix::name::DirectoryString::try_from(&atv.value)
                .map_err(cert_error)?;
            let value = value.value();
            if atv.oid == CN {
                cns.push(value.into_owned());
            } else if value == AGENT_OU {
                agent_ou = true;
            }
        }
    }
    let bad = |reason: &str| AuthError::Certificate(format!("subject: {reason}"));
    if !agent_ou {
        return Err(bad("no OU=Linux Monitoring Agent"));
    }
    let [workspace, agent] = cns.as_slice() else {
        return Err(bad("expected exactly two CNs, workspace id then agent id"));
    };
    let tenant = Uuid::try_parse(workspace)
        .ok()
        .and_then(|u| TenantId::new(u).ok())
        .ok_or_else(|| bad("the first CN is not a workspace id"))?;
    let agent_id = Uuid::try_parse(agent)
        .ok()
        .filter(|u| !u.is_nil())
        .ok_or_else(|| bad("the second CN is not an agent id"))?;
    Ok((tenant, agent_id))
}
