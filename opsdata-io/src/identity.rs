//! TLS identities and PEM loading, shared by the service and the agent's
//! HTTPS client: [`TlsIdentity`], [`load_certificates`], [`Timeouts`], and
//! the rustls configuration helpers (always rustls's aws-lc-rs provider,
//! chosen explicitly, so a process that also links ring never meets an
//! ambiguous default provider).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opsdata::{AuthError, Credential};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The longest timeout a setting takes.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Errors of the TLS transport and service: bad settings, unreadable
/// certificates or keys, and what ended a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A timeout that is zero or longer than an hour.
    #[error("{setting} must be positive and at most one hour")]
    Timeout {
        /// The setting.
        setting: &'static str,
    },
    /// A count that must be positive is zero.
    #[error("{setting} must be positive")]
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// No trusted root (for the agent) or enrollment CA (for the service).
    #[error("no {0} certificate given")]
    NoCertificates(&'static str),
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused a certificate, key or setting, or failed a handshake.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The client certificate failed the enrollment CA's check at our own
    /// boundary, or the CA is unusable.
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    /// The connection failed, timed out or closed early.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// Provisioning key rings was asked for without a key store to keep
    /// them in: what they seal could not be opened after a restart.
    #[error("provisioning key rings needs a key store (ServiceBuilder::key_store)")]
    NoKeyStore,
}

pub(crate) fn timeout(setting: &'static str, d: Duration) -> Result<Duration, TlsError> {
    if d.is_zero() || d > MAX_TIMEOUT {
        Err(TlsError::Timeout { setting })
    } else {
        Ok(d)
    }
}

/// The agent's socket timeouts, each positive and at most an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    connect: Duration,
    read: Duration,
    write: Duration,
}

impl Default for Timeouts {
    /// 10 s to connect, 30 s for each read and write.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
            write: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Timeouts to connect (the TCP connect and the TLS handshake
    /// together), to read one acknowledgement (in all, however its bytes
    /// arrive; each handshake read is also bounded by it), and for each
    /// write.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if one is zero or over an hour.
    pub fn new(connect: Duration, read: Duration, write: Duration) -> Result<Self, TlsError> {
        Ok(Timeouts {
            connect: timeout("connect timeout", connect)?,
            read: timeout("read timeout", read)?,
            write: timeout("write timeout", write)?,
        })
    }

    /// The connect timeout.
    #[must_use]
    pub fn connect(&self) -> Duration {
        self.connect
    }

    /// The timeout of one acknowledgement (and of each handshake read).
    #[must_use]
    pub fn read(&self) -> Duration {
        self.read
    }

    /// The timeout of each write.
    #[must_use]
    pub fn write(&self) -> Duration {
        self.write
    }
}

/// A certificate chain (end-entity first) and its private key: what one
/// side presents. `Debug` shows the chain's length, never the key.
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsIdentity {
    /// A chain (end-entity certificate first) and its key.
    ///
    /// # Errors
    ///
    /// [`TlsError::NoCertificates`] for an empty chain. rustls checks that
    /// the key is usable when a transport or service is built.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::NoCertificates("identity"));
        }
        Ok(TlsIdentity { chain, key })
    }

    /// The agent's credential from the core (its certificate and PKCS#8
    /// key). The key is copied; this identity wipes its copy when dropped.
    #[must_use]
    pub fn from_credential(credential: &Credential) -> Self {
        let pkcs8 = credential.key().as_pkcs8().secret_pkcs8_der().to_vec();
        TlsIdentity {
            chain: vec![credential.certificate().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)),
        }
    }

    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1).
    ///
    /// # Errors
    ///
    /// [`TlsError::Pem`] if a file cannot be read or holds no certificate
    /// or key.
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = load_certificates(chain)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Pem {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
        TlsIdentity::new(certs, key)
    }

    /// The certificate chain.
    #[must_use]
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain and a copy of the key, for rustls, which parses the key
    /// into its own signing key; the copy is not wiped by us.
    pub(crate) fn parts(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.chain.clone(), self.key.clone_key())
    }
}

impl Drop for TlsIdentity {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// Reads every certificate of a PEM file.
///
/// # Errors
///
/// [`TlsError::Pem`] if the file cannot be read, a section is malformed, or
/// it holds no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("no certificate".into()));
    }
    Ok(certs)
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn root_store(
    certs: &[CertificateDer<'static>],
    what: &'static str,
) -> Result<RootCertStore, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::NoCertificates(what));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone())?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        let s = Duration::from_secs(1);
        assert!(matches!(
            Timeouts::new(Duration::ZERO, s, s),
            Err(TlsError::Timeout {
                setting: "connect timeout"
            })
        ));
        assert!(matches!(
            Timeouts::new(s, s, MAX_TIMEOUT + s),
            Err(TlsError::Timeout {
                setting: "write timeout"
            })
        ));
        assert!(Timeouts::new(s, s, MAX_TIMEOUT).is_ok());
        assert!(matches!(
            TlsIdentity::new(vec![], PrivateKeyDer::Pkcs8(vec![1, 2, 3].into())),
            Err(TlsError::NoCertificates(_))
        ));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let secret = vec![0x5a; 40];
        let id = TlsIdentity::new(
            vec![CertificateDer::from(vec![0x30, 0x00])],
            PrivateKeyDer::Pkcs8(secret.clone().into()),
        )
        .unwrap();
        let text = format!("{id:?}");
        assert!(text.contains("redacted"));
        assert!(!text.contains("90, 90"), "{text}");
    }

    #[test]
    fn a_missing_pem_file_is_a_typed_error() {
        let missing = Path::new("/nonexistent/opsdata-io/agent.pem");
        assert!(matches!(
            load_certificates(missing),
            Err(TlsError::Pem { .. })
        ));
    }
}
