//! Where the agent's client certificate comes from, read again at each new
//! connection so that a renewed certificate is used without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use super::DriverError;
use crate::TlsIdentity;

/// The agent's current certificate chain and key. [`HttpsTransport`]
/// asks for it at each new connection, so a renewed certificate is
/// presented from the next connection on; requests on an open connection
/// keep the certificate it was opened with.
///
/// Implemented for a fixed `Arc<TlsIdentity>`, for a
/// [`watch::Receiver`] the host updates when it renews the certificate
/// (the core's `AgentCredentials` hand-over), and for [`PemIdentity`]
/// (files re-read each time).
///
/// [`HttpsTransport`]: super::HttpsTransport
pub trait IdentitySource: fmt::Debug + Send + Sync + 'static {
    /// The identity to present on a new connection.
    ///
    /// # Errors
    ///
    /// [`DriverError::Tls`] if it cannot be read; the connection attempt
    /// then fails (a transient failure for the frames waiting on it).
    fn current(&self) -> Result<Arc<TlsIdentity>, DriverError>;
}

impl IdentitySource for Arc<TlsIdentity> {
    fn current(&self) -> Result<Arc<TlsIdentity>, DriverError> {
        Ok(Arc::clone(self))
    }
}

impl IdentitySource for watch::Receiver<Arc<TlsIdentity>> {
    fn current(&self) -> Result<Arc<TlsIdentity>, DriverError> {
        Ok(Arc::clone(&self.borrow()))
    }
}

/// A PEM certificate chain and key on disk, read at each new connection:
/// the renewal writes new files (ideally by rename), the next connection
/// presents them.
#[derive(Debug, Clone)]
pub struct PemIdentity {
    chain: PathBuf,
    key: PathBuf,
}

impl PemIdentity {
    /// The chain (end-entity first) and key files.
    #[must_use]
    pub fn new(chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        PemIdentity {
            chain: chain.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
        }
    }
}

impl IdentitySource for PemIdentity {
    fn current(&self) -> Result<Arc<TlsIdentity>, DriverError> {
        Ok(Arc::new(TlsIdentity::from_pem_files(
            &self.chain,
            &self.key,
        )?))
    }
}
