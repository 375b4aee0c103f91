//! The test PKI shared by the agent's and the service's HTTPS tests: a
//! service CA and certificate (`localhost`, `127.0.0.1`), an enrollment CA
//! issuing agent certificates, and the TLS configurations built from them.
#![allow(dead_code, clippy::disallowed_methods)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use opsdata_io::{ServeConfig, TlsIdentity};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[path = "../../examples/support/pki.rs"]
pub mod pki;

/// The CAs and the service's certificate, issued at `now`.
pub struct Pki {
    pub now: DateTime<Utc>,
    pub enrollment: pki::Ca,
    pub service_ca: pki::Ca,
    pub service: pki::Issued,
}

impl Pki {
    pub fn new() -> Self {
        let now = Utc::now();
        let enrollment = pki::ca("test enrollment CA", now).unwrap();
        let service_ca = pki::ca("test service CA", now).unwrap();
        let service = pki::service(&service_ca, &["localhost", "127.0.0.1"], now).unwrap();
        Pki {
            now,
            enrollment,
            service_ca,
            service,
        }
    }

    /// A new agent certificate for `workspace`.
    pub fn agent(&self, workspace: &str) -> pki::Issued {
        pki::agent(
            &self.enrollment,
            workspace,
            &uuid::Uuid::new_v4().to_string(),
            self.now,
        )
        .unwrap()
    }

    /// What the agent trusts: the service CA.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.service_ca.der.clone()]
    }

    /// The service's TLS settings: its certificate, agents enrolled by the
    /// enrollment CA.
    pub fn serve_config(&self) -> ServeConfig {
        ServeConfig::new(identity(&self.service), vec![self.enrollment.der.clone()])
    }

    /// A client config presenting `issued` (or no certificate), speaking
    /// `alpn`.
    pub fn client(&self, issued: Option<&pki::Issued>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.service_ca.der.clone()).unwrap();
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match issued {
            Some(i) => b
                .with_client_auth_cert(
                    vec![i.der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(i.key_der.clone())),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

/// `issued` as a TLS identity (its certificate and key).
pub fn identity(issued: &pki::Issued) -> TlsIdentity {
    TlsIdentity::new(
        vec![issued.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
    )
    .unwrap()
}
