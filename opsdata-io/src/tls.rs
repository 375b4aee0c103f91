//! Mutual TLS between agents and the service (`docs/WIRE.md`), over
//! rustls and blocking sockets.
//!
//! - [`TlsTransport`]: the agent side, an [`opsdata::Transport`]. It
//!   connects lazily, keeps the connection, writes one frame and reads its
//!   [`Ack`]; any failure is [`Outcome::Transient`] and drops the
//!   connection (the next send reconnects).
//! - [`TlsService`]: the service side. It requires a client certificate
//!   chaining to the enrollment CA, derives the [`Principal`] with
//!   [`EnrollmentCa::authenticate`], reads frames with the core's
//!   [`FrameDecoder`], runs [`Ingest`], stores through a [`BlobStore`] and
//!   answers an [`Ack`] per frame. [`TlsService::spawn`] runs it on a
//!   listener, a thread per connection.
//!
//! Both sides build their configuration on rustls's aws-lc-rs provider
//! explicitly, so a process that also links ring never meets an ambiguous
//! default provider.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opsdata::{
    AuthError, BatchId, BlobStore, CertificateInfo, Credential, DataType, Decoded, EnrollmentCa,
    Entropy, FIXED_HEADER_LEN, Frame, FrameDecoder, FrameError, FrameHeader, FrameLimits, Ingest,
    IngestConfig, KeyAction, KeyCensus, KeyRing, KeyStore, Outcome, Principal, RotationPolicy,
    StoreOp, TenantId, TenantStats, Transmit, Transport, WrappingKey, apply_store_op, load_ring,
    save_ring,
};
use rustls::client::ClientConnection;
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::wire::{Ack, WireError};

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
    /// The service's acknowledgement was malformed.
    #[error("acknowledgement: {0}")]
    Wire(#[from] WireError),
    /// The service acknowledged another batch than the one sent.
    #[error("acknowledgement for {got:?}, sent {sent}")]
    AckMismatch {
        /// The batch sent.
        sent: BatchId,
        /// The batch acknowledged (`None`: the service could not read it).
        got: Option<BatchId>,
    },
    /// The peer's bytes are not a valid frame (or pass a limit).
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer took longer than the frame timeout to send one frame.
    #[error("frame not received within the frame timeout")]
    FrameTimeout,
    /// The service is at its connection limit.
    #[error("too many connections")]
    TooManyConnections,
    /// The agent's certificate expired while its connection was open: the
    /// frame read then is answered transient and the connection closed, so
    /// the agent reconnects with its renewed certificate.
    #[error("client certificate expired at {not_after}")]
    CertificateExpired {
        /// When it expired.
        not_after: DateTime<Utc>,
    },
    /// Provisioning key rings was asked for without a key store to keep
    /// them in: what they seal could not be opened after a restart.
    #[error("provisioning key rings needs a key store (ServiceConfig::with_key_store)")]
    NoKeyStore,
}

fn timeout(setting: &'static str, d: Duration) -> Result<Duration, TlsError> {
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

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn root_store(
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

// ---------------------------------------------------------------------------
// The agent side
// ---------------------------------------------------------------------------

/// Where and how [`TlsTransport`] connects: the service's address, the name
/// its certificate must carry, the roots it must chain to, and timeouts.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    roots: Vec<CertificateDer<'static>>,
    timeouts: Timeouts,
}

impl TransportSettings {
    /// Connect to `addr`, expect a certificate for `server_name` (a DNS
    /// name or an IP address) chaining to one of `roots`; default timeouts.
    ///
    /// # Errors
    ///
    /// [`TlsError::ServerName`] for a name that is neither;
    /// [`TlsError::NoCertificates`] for no root.
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TlsError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        if roots.is_empty() {
            return Err(TlsError::NoCertificates("root"));
        }
        Ok(TransportSettings {
            addr,
            server_name,
            roots,
            timeouts: Timeouts::default(),
        })
    }

    /// Sets the timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The service's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The timeouts.
    #[must_use]
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

/// What a [`TlsTransport`] has counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Connections established (TCP and TLS handshake done).
    pub connects: u64,
    /// Connection attempts that failed (refused, timed out, handshake).
    pub connect_failures: u64,
    /// Sends attempted.
    pub sends: u64,
    /// Sends answered with an acknowledgement for the batch sent.
    pub acked: u64,
    /// Sends that failed (I/O, protocol, wrong acknowledgement): each was
    /// reported as [`Outcome::Transient`] and dropped the connection.
    pub failures: u64,
    /// Acknowledgements naming another batch than the one sent.
    pub wrong_acks: u64,
}

type ClientStream = StreamOwned<ClientConnection, DeadlineStream>;

/// An [`opsdata::Transport`] over mutual TLS: see the module docs.
///
/// A send on a connection kept from an earlier send that fails before any
/// acknowledgement arrives (the service closed an idle connection, or
/// restarted) is tried once more on a new connection at once; the service
/// de-duplicates by batch id, so a frame that did arrive is not stored twice.
pub struct TlsTransport {
    settings: TransportSettings,
    config: Arc<ClientConfig>,
    conn: Option<ClientStream>,
    stats: TransportStats,
    last_error: Option<TlsError>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("addr", &self.settings.addr)
            .field("server_name", &self.settings.server_name)
            .field("timeouts", &self.settings.timeouts)
            .field("connected", &self.conn.is_some())
            .field("stats", &self.stats)
            .field("last_error", &self.last_error)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// A transport presenting `identity` (for an agent, usually
    /// [`TlsIdentity::from_credential`]). It does not connect until the
    /// first send.
    ///
    /// # Errors
    ///
    /// [`TlsError::Rustls`] if a root is not a usable certificate or rustls
    /// refuses the identity's key.
    pub fn new(settings: TransportSettings, identity: &TlsIdentity) -> Result<Self, TlsError> {
        let roots = root_store(&settings.roots, "root")?;
        let (chain, key) = identity.parts();
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(TlsTransport {
            settings,
            config: Arc::new(config),
            conn: None,
            stats: TransportStats::default(),
            last_error: None,
        })
    }

    /// What has been counted.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// Why the last failed send failed, for logs.
    #[must_use]
    pub fn last_error(&self) -> Option<&TlsError> {
        self.last_error.as_ref()
    }

    /// Whether a connection is kept.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Drops the kept connection, if any (the next send reconnects).
    pub fn disconnect(&mut self) {
        if let Some(mut c) = self.conn.take() {
            c.conn.send_close_notify();
            let _ = c.flush();
        }
    }

    fn connect(&mut self) -> Result<ClientStream, TlsError> {
        let t = self.settings.timeouts;
        let attempt = || -> Result<ClientStream, TlsError> {
            // The connect timeout bounds the TCP connect and the handshake
            // together.
            let deadline = Instant::now() + t.connect;
            let tcp = TcpStream::connect_timeout(&self.settings.addr, t.connect)?;
            tcp.set_nodelay(true)?;
            let mut sock = DeadlineStream::new(tcp, t.read, t.write);
            sock.set_deadline(Some(deadline));
            let conn =
                ClientConnection::new(self.config.clone(), self.settings.server_name.clone())?;
            let mut stream = StreamOwned::new(conn, sock);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            stream.sock.set_deadline(None);
            Ok(stream)
        };
        match attempt() {
            Ok(s) => {
                self.stats.connects += 1;
                Ok(s)
            }
            Err(e) => {
                self.stats.connect_failures += 1;
                Err(e)
            }
        }
    }

    fn exchange(&mut self, conn: &mut ClientStream, tx: &Transmit) -> Result<Outcome, TlsError> {
        // Each write of the frame is bounded by the write timeout; the
        // whole acknowledgement by the read timeout.
        conn.sock.set_deadline(None);
        conn.write_all(tx.frame.as_bytes())?;
        conn.flush()?;
        conn.sock
            .set_deadline(Some(Instant::now() + self.settings.timeouts.read));
        let ack = Ack::read_from(conn)?;
        conn.sock.set_deadline(None);
        if ack.batch_id != Some(tx.batch_id) {
            self.stats.wrong_acks += 1;
            return Err(TlsError::AckMismatch {
                sent: tx.batch_id,
                got: ack.batch_id,
            });
        }
        Ok(ack.outcome)
    }

    fn try_send(&mut self, tx: &Transmit) -> Result<Outcome, TlsError> {
        if let Some(mut conn) = self.conn.take() {
            match self.exchange(&mut conn, tx) {
                Ok(outcome) => {
                    self.conn = Some(conn);
                    return Ok(outcome);
                }
                // A kept connection the service closed: try a new one.
                Err(TlsError::Io(e) | TlsError::Wire(WireError::Io(e))) if !is_timeout(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.connect()?;
        let outcome = self.exchange(&mut conn, tx)?;
        self.conn = Some(conn);
        Ok(outcome)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A socket whose reads and writes end at a deadline, not only after a
/// per-call timeout: before each call the socket's timeout is set to the
/// shorter of the per-call timeout and what is left until the deadline,
/// and once the deadline has passed every call fails with
/// [`io::ErrorKind::TimedOut`]. rustls keeps reading while each read brings
/// a byte (a handshake message, a TLS record), so a per-call timeout alone
/// lets a peer trickling one byte per timeout hold a connection for ever.
#[derive(Debug)]
struct DeadlineStream {
    tcp: TcpStream,
    read_timeout: Duration,
    write_timeout: Duration,
    deadline: Option<Instant>,
}

impl DeadlineStream {
    fn new(tcp: TcpStream, read_timeout: Duration, write_timeout: Duration) -> Self {
        DeadlineStream {
            tcp,
            read_timeout,
            write_timeout,
            deadline: None,
        }
    }

    /// Calls after `deadline` fail; `None`: only the per-call timeouts.
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The timeout for the next call, or `TimedOut` past the deadline.
    fn budget(&self, per_call: Duration) -> io::Result<Duration> {
        let Some(deadline) = self.deadline else {
            return Ok(per_call);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        // A zero socket timeout is refused by std; a millisecond is the least.
        Ok(per_call.min(left).max(Duration::from_millis(1)))
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.budget(self.read_timeout)?;
        self.tcp.set_read_timeout(Some(t))?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.budget(self.write_timeout)?;
        self.tcp.set_write_timeout(Some(t))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

impl Transport for TlsTransport {
    fn send(&mut self, _now: DateTime<Utc>, transmit: &Transmit) -> Outcome {
        self.stats.sends += 1;
        match self.try_send(transmit) {
            Ok(outcome) => {
                self.stats.acked += 1;
                outcome
            }
            Err(e) => {
                // Any failure: drop the connection (already taken) and retry
                // on the outbox's schedule.
                self.conn = None;
                self.stats.failures += 1;
                self.last_error = Some(e);
                Outcome::Transient
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The service side
// ---------------------------------------------------------------------------

/// Where the service gets the time: called for each handshake's certificate
/// check and each frame.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The service's per-connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSettings {
    read_timeout: Duration,
    write_timeout: Duration,
    frame_timeout: Duration,
    handshake_timeout: Duration,
    max_connections: usize,
    max_handshakes: usize,
    limits: FrameLimits,
}

impl Default for ServiceSettings {
    /// 60 s idle between frames, 30 s per write, 5 minutes to receive one
    /// frame, 10 s for the handshake, 256 connections of which at most 64
    /// still in their handshake, the default frame limits.
    fn default() -> Self {
        ServiceSettings {
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_handshakes: 64,
            limits: FrameLimits::default(),
        }
    }
}

impl ServiceSettings {
    /// How long a connection may wait for the first byte of its next frame
    /// (an idle connection is closed after this, however the peer trickles
    /// TLS bytes that carry no data); also the longest any single read
    /// waits.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_read_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.read_timeout = timeout("read timeout", d)?;
        Ok(self)
    }

    /// How long one write (an acknowledgement) may wait.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_write_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.write_timeout = timeout("write timeout", d)?;
        Ok(self)
    }

    /// How long the bytes of one frame may take to arrive in all, from its
    /// first byte: a peer trickling bytes just under the read timeout is
    /// closed when this has passed.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_frame_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.frame_timeout = timeout("frame timeout", d)?;
        Ok(self)
    }

    /// How long the TLS handshake may take in all, from the accept: a peer
    /// trickling its handshake is closed when this has passed.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_handshake_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.handshake_timeout = timeout("handshake timeout", d)?;
        Ok(self)
    }

    /// How many connections [`TlsService::spawn`] serves at once, before or
    /// after the handshake, in all; more are closed at once.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_max_connections(mut self, n: usize) -> Result<Self, TlsError> {
        if n == 0 {
            return Err(TlsError::Zero {
                setting: "max_connections",
            });
        }
        self.max_connections = n;
        Ok(self)
    }

    /// How many of the connections may still be in their handshake (not yet
    /// authenticated) at once, so unauthenticated peers cannot take every
    /// slot; more are closed at once. Capped by `max_connections`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_max_handshakes(mut self, n: usize) -> Result<Self, TlsError> {
        if n == 0 {
            return Err(TlsError::Zero {
                setting: "max_handshakes",
            });
        }
        self.max_handshakes = n;
        Ok(self)
    }

    /// The frame limits, applied by the connection's decoder and by
    /// [`Ingest`] (the service sets them on the ingest configuration).
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The frame limits.
    #[must_use]
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }
}

/// How a [`TlsService`] is set up: its own certificate, the enrollment CA
/// agents' certificates must chain to, its settings, the ingest
/// configuration, and whether tenants get a key ring on first sight.
#[derive(Debug)]
pub struct ServiceConfig {
    identity: TlsIdentity,
    enrollment_ca: Vec<CertificateDer<'static>>,
    settings: ServiceSettings,
    ingest: IngestConfig,
    provision: Option<RotationPolicy>,
    keys: Option<KeyVault>,
}

impl ServiceConfig {
    /// A service presenting `identity`, accepting agents whose certificate
    /// chains to one of `enrollment_ca`; default settings and ingest
    /// configuration; no key ring is made on first sight.
    #[must_use]
    pub fn new(identity: TlsIdentity, enrollment_ca: Vec<CertificateDer<'static>>) -> Self {
        ServiceConfig {
            identity,
            enrollment_ca,
            settings: ServiceSettings::default(),
            ingest: IngestConfig::default(),
            provision: None,
            keys: None,
        }
    }

    /// Sets the settings.
    #[must_use]
    pub fn with_settings(mut self, settings: ServiceSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the ingest configuration (its frame limits are replaced by the
    /// settings').
    #[must_use]
    pub fn with_ingest(mut self, ingest: IngestConfig) -> Self {
        self.ingest = ingest;
        self
    }

    /// Keeps the tenants' key rings in `store`, sealed under `wrapping`
    /// (`docs/KEYS.md` of the core). On a tenant's first frame the service
    /// loads its ring from the store; a ring it provisions is saved before
    /// anything is sealed with it, and saved again after each seal (the
    /// ring counts the data keys each version wrapped, against its hard
    /// limit) and each rotation. A frame whose ring cannot be loaded or
    /// saved is answered transient.
    #[must_use]
    pub fn with_key_store<S>(mut self, store: S, wrapping: WrappingKey) -> Self
    where
        S: KeyStore + Send + 'static,
    {
        self.keys = Some(KeyVault {
            store: Box::new(Erased(store)),
            wrapping,
        });
        self
    }

    /// Gives a tenant without a key ring (in memory or in the key store) a
    /// new one, with its first key generated and promoted under `policy`,
    /// when its first frame arrives, and rotates its keys forward under
    /// `policy` (new versions generated and promoted when due, checked at
    /// most once a minute per tenant). Needs a key store
    /// ([`with_key_store`](ServiceConfig::with_key_store)): a ring kept
    /// only in memory would leave everything it sealed unreadable after a
    /// restart.
    ///
    /// Retiring, disabling and destroying versions is left to the
    /// operator: it needs a census of the stored frames the service does
    /// not keep.
    ///
    /// Without provisioning, a tenant with no ring in the key store gets
    /// its frames answered transient until a ring is added with
    /// [`ServiceState::add_ring`].
    #[must_use]
    pub fn with_provisioning(mut self, policy: RotationPolicy) -> Self {
        self.provision = Some(policy);
        self
    }
}

/// A key store's error, its type erased so the service is not generic over
/// the store.
#[derive(Debug)]
struct KeyStoreError(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for KeyStoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A [`KeyStore`] with its error erased.
struct Erased<S>(S);

impl<S: KeyStore> KeyStore for Erased<S> {
    type Error = KeyStoreError;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), KeyStoreError> {
        self.0
            .put(tenant, sealed)
            .map_err(|e| KeyStoreError(Box::new(e)))
    }

    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.0.get(tenant).map_err(|e| KeyStoreError(Box::new(e)))
    }
}

type DynKeyStore = Box<dyn KeyStore<Error = KeyStoreError> + Send>;

/// The key store and the wrapping key its rings are sealed under.
struct KeyVault {
    store: DynKeyStore,
    wrapping: WrappingKey,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // WrappingKey's Debug shows its id only.
        f.debug_struct("KeyVault")
            .field("wrapping", &self.wrapping)
            .finish_non_exhaustive()
    }
}

/// How often a tenant's ring is checked against the rotation policy.
const ROTATION_CHECK: chrono::Duration = chrono::Duration::minutes(1);

/// What the service does, for logs and tests; set an observer with
/// [`TlsService::with_observer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServiceEvent {
    /// An agent completed the handshake and the enrollment CA's check.
    Connected {
        /// Its address.
        peer: Option<SocketAddr>,
        /// Its workspace.
        tenant: TenantId,
        /// Its agent id.
        agent_id: Option<uuid::Uuid>,
    },
    /// A connection refused before any frame: handshake or authentication
    /// failed, or too many connections.
    Refused {
        /// Its address.
        peer: Option<SocketAddr>,
        /// Why.
        reason: String,
    },
    /// A frame was answered.
    Frame {
        /// The principal's tenant.
        tenant: TenantId,
        /// The frame's batch.
        batch_id: BatchId,
        /// Its data type.
        data_type: DataType,
        /// Its records.
        records: u32,
        /// The answer.
        outcome: Outcome,
        /// Whether it was a batch already stored.
        duplicate: bool,
        /// Why it was not stored, if it was not.
        error: Option<String>,
    },
    /// A connection ended.
    Closed {
        /// Its address.
        peer: Option<SocketAddr>,
        /// Frames answered on it.
        frames: u64,
        /// What ended it, if not the peer closing between frames.
        error: Option<String>,
    },
}

type Observer = Arc<dyn Fn(&ServiceEvent) + Send + Sync>;

/// The service's state behind its lock: the ingest pipeline, the tenants'
/// key rings, the blob store and the entropy sealing draws from.
pub struct ServiceState {
    ingest: Ingest,
    rings: HashMap<TenantId, KeyRing>,
    /// When each tenant's ring was last checked against the rotation policy.
    rotation_checked: HashMap<TenantId, DateTime<Utc>>,
    keys: Option<KeyVault>,
    /// Batches sealed and being stored, outside the lock.
    in_flight: HashSet<(TenantId, BatchId)>,
    entropy: Box<dyn Entropy + Send>,
}

impl fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceState")
            .field("ingest", &self.ingest)
            .field("tenants_with_rings", &self.rings.len())
            .field("keys", &self.keys)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl ServiceState {
    /// The ingest pipeline (its per-tenant stats and mismatch counters).
    #[must_use]
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// What ingest counted for `tenant`.
    #[must_use]
    pub fn stats(&self, tenant: TenantId) -> TenantStats {
        self.ingest.stats(tenant)
    }

    /// The key ring of `tenant`, if it has one.
    #[must_use]
    pub fn ring(&self, tenant: TenantId) -> Option<&KeyRing> {
        self.rings.get(&tenant)
    }

    /// Adds (or replaces) a tenant's key ring, in memory: with a key
    /// store, save it there too (the service saves it again after each
    /// seal).
    pub fn add_ring(&mut self, ring: KeyRing) {
        self.rings.insert(ring.tenant(), ring);
    }
}

/// Counters of the service's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStats {
    /// Connections that passed the handshake and authentication.
    pub authenticated: u64,
    /// Connections whose handshake failed (no or untrusted certificate,
    /// not TLS, timed out).
    pub handshake_failures: u64,
    /// Connections whose certificate passed rustls but failed the
    /// enrollment CA's check (for example a subject that names no agent).
    pub auth_failures: u64,
    /// Connections closed for bytes that are not a frame.
    pub bad_frames: u64,
    /// Frames answered.
    pub frames: u64,
    /// Connections closed at once for being over the limit.
    pub over_limit: u64,
}

#[derive(Debug, Default)]
struct Counters {
    authenticated: AtomicU64,
    handshake_failures: AtomicU64,
    auth_failures: AtomicU64,
    bad_frames: AtomicU64,
    frames: AtomicU64,
    over_limit: AtomicU64,
}

/// The ingest service over mutual TLS: see the module docs. Share it in an
/// [`Arc`]; connections take its state's lock for each frame.
pub struct TlsService<B> {
    config: Arc<ServerConfig>,
    ca: EnrollmentCa,
    settings: ServiceSettings,
    provision: Option<RotationPolicy>,
    clock: Clock,
    observer: Option<Observer>,
    state: Mutex<ServiceState>,
    /// The blob store, behind a lock of its own: stores wait for each
    /// other, not ingest (nor other tenants' frames being sealed).
    store: Mutex<B>,
    counters: Counters,
}

impl<B> fmt::Debug for TlsService<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsService")
            .field("enrollment_ca", &self.ca)
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<B> TlsService<B> {
    /// The connection counters.
    #[must_use]
    pub fn stats(&self) -> ServiceStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServiceStats {
            authenticated: get(&c.authenticated),
            handshake_failures: get(&c.handshake_failures),
            auth_failures: get(&c.auth_failures),
            bad_frames: get(&c.bad_frames),
            frames: get(&c.frames),
            over_limit: get(&c.over_limit),
        }
    }
}

/// What [`TlsService::prepare`] left to do.
enum Prepared {
    /// Nothing to store: answer this.
    Answer(Outcome, bool, Option<String>),
    /// Store these, then answer `answer` (transient if a store failed).
    Store {
        ops: Vec<StoreOp>,
        answer: (Outcome, bool, Option<String>),
    },
}

/// How one connection's frame reading ended.
enum ReadFrame {
    Frame(Frame),
    /// The peer closed, or sent nothing for the read timeout, between frames.
    End,
    /// Not a frame; the batch id if its header could be read.
    Bad(Option<BatchId>, FrameError),
}

impl<B: BlobStore + Send + 'static> TlsService<B> {
    /// A service storing into `store`, sealing with `entropy`, taking the
    /// time from `clock`.
    ///
    /// # Errors
    ///
    /// [`TlsError::NoKeyStore`] for provisioning without a key store;
    /// [`TlsError::NoCertificates`] without an enrollment CA;
    /// [`TlsError::Auth`] or [`TlsError::Rustls`] if a CA certificate is
    /// unusable; [`TlsError::Verifier`] if rustls cannot build the client
    /// verifier; [`TlsError::Rustls`] if it refuses the identity.
    pub fn new(
        config: ServiceConfig,
        store: B,
        entropy: Box<dyn Entropy + Send>,
        clock: Clock,
    ) -> Result<Self, TlsError> {
        let ServiceConfig {
            identity,
            enrollment_ca,
            settings,
            ingest,
            provision,
            keys,
        } = config;
        if provision.is_some() && keys.is_none() {
            return Err(TlsError::NoKeyStore);
        }
        let roots = root_store(&enrollment_ca, "enrollment CA")?;
        let ca = EnrollmentCa::new(&enrollment_ca)?;
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let (chain, key) = identity.parts();
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(TlsService {
            config: Arc::new(server),
            ca,
            settings,
            provision,
            clock,
            observer: None,
            state: Mutex::new(ServiceState {
                ingest: Ingest::new(ingest.with_limits(settings.limits)),
                rings: HashMap::new(),
                rotation_checked: HashMap::new(),
                keys,
                in_flight: HashSet::new(),
                entropy,
            }),
            store: Mutex::new(store),
            counters: Counters::default(),
        })
    }

    /// Calls `observer` for each [`ServiceEvent`] (from the connection's
    /// thread; keep it short).
    #[must_use]
    pub fn with_observer(
        mut self,
        observer: impl Fn(&ServiceEvent) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// The blob store, locked. Connections storing a frame wait while it is
    /// held; take it after [`lock`](TlsService::lock) if both are needed,
    /// never before.
    pub fn store(&self) -> MutexGuard<'_, B> {
        lock(&self.store)
    }

    /// The state, locked. Connections wait while it is held.
    pub fn lock(&self) -> MutexGuard<'_, ServiceState> {
        // A panic while the lock was held leaves the state as consistent as
        // the operation that panicked left it; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: ServiceEvent) {
        if let Some(o) = &self.observer {
            o(&event);
        }
    }

    /// Serves one accepted connection until the agent closes it, it idles
    /// past the read timeout, or it fails; returns the frames answered.
    ///
    /// # Errors
    ///
    /// [`TlsError::Io`] or [`TlsError::Rustls`] if the handshake or the
    /// connection fails; [`TlsError::Auth`] if the certificate fails the
    /// enrollment CA's check; [`TlsError::Frame`] after bytes that are not
    /// a frame (answered, then the connection is closed);
    /// [`TlsError::FrameTimeout`] for a frame that took too long.
    pub fn serve_connection(&self, tcp: TcpStream) -> Result<u64, TlsError> {
        self.serve(tcp, None)
    }

    /// [`serve_connection`](TlsService::serve_connection), releasing
    /// `handshake` (a slot of the handshake cap) once the handshake ends.
    fn serve(&self, tcp: TcpStream, handshake: Option<Held>) -> Result<u64, TlsError> {
        let peer = tcp.peer_addr().ok();
        let mut frames = 0;
        let mut authenticated = false;
        let result = self.serve_inner(tcp, peer, handshake, &mut authenticated, &mut frames);
        // A connection refused before authentication was reported as such.
        if authenticated {
            self.emit(ServiceEvent::Closed {
                peer,
                frames,
                error: result.as_ref().err().map(ToString::to_string),
            });
        }
        result.map(|()| frames)
    }

    fn serve_inner(
        &self,
        tcp: TcpStream,
        peer: Option<SocketAddr>,
        handshake_slot: Option<Held>,
        authenticated: &mut bool,
        frames: &mut u64,
    ) -> Result<(), TlsError> {
        let s = &self.settings;
        let deadline = Instant::now() + s.handshake_timeout;
        tcp.set_nodelay(true)?;
        let mut sock = DeadlineStream::new(tcp, s.read_timeout, s.write_timeout);
        sock.set_deadline(Some(deadline));
        let conn = ServerConnection::new(self.config.clone())?;
        let mut tls = StreamOwned::new(conn, sock);
        let handshake = (|| -> Result<(), TlsError> {
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock)?;
            }
            Ok(())
        })();
        drop(handshake_slot);
        if let Err(e) = handshake {
            self.counters
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            self.emit(ServiceEvent::Refused {
                peer,
                reason: e.to_string(),
            });
            return Err(e);
        }
        let chain: Vec<CertificateDer<'static>> = tls
            .conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        // rustls has checked the chain against the CA; the core checks it
        // again, with our clock, and reads the workspace and agent.
        let principal = match self.ca.authenticate(&chain, (self.clock)()) {
            Ok(p) => p,
            Err(e) => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                self.emit(ServiceEvent::Refused {
                    peer,
                    reason: e.to_string(),
                });
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return Err(e.into());
            }
        };
        self.counters.authenticated.fetch_add(1, Ordering::Relaxed);
        *authenticated = true;
        self.emit(ServiceEvent::Connected {
            peer,
            tenant: principal.tenant(),
            agent_id: match &principal {
                Principal::Agent(a) => Some(a.agent_id),
                _ => None,
            },
        });
        // A kept connection must not outlive the certificate it was
        // authenticated with: checked again before each frame.
        let not_after = chain
            .first()
            .and_then(|c| CertificateInfo::parse(c).ok())
            .map(|info| info.not_after());
        let mut decoder = FrameDecoder::new(self.settings.limits);
        loop {
            match self.read_frame(&mut tls, &mut decoder)? {
                ReadFrame::End => return Ok(()),
                ReadFrame::Frame(frame) => {
                    let now = (self.clock)();
                    let expired = match not_after {
                        Some(t) => (now > t).then_some(t),
                        // `authenticate` parsed the certificate, so this
                        // cannot happen; if it did, refuse, never serve
                        // unchecked.
                        None => Some(DateTime::<Utc>::MIN_UTC),
                    };
                    if let Some(not_after) = expired {
                        let ack = Ack {
                            batch_id: Some(frame.batch_id()),
                            outcome: Outcome::Transient,
                        };
                        tls.sock
                            .set_deadline(Some(Instant::now() + self.settings.write_timeout));
                        let _ = tls.write_all(&ack.encode());
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                        self.emit(ServiceEvent::Refused {
                            peer,
                            reason: format!("client certificate expired at {not_after}"),
                        });
                        return Err(TlsError::CertificateExpired { not_after });
                    }
                    let outcome = self.ingest_frame(&principal, &frame);
                    *frames += 1;
                    self.counters.frames.fetch_add(1, Ordering::Relaxed);
                    let ack = Ack {
                        batch_id: Some(frame.batch_id()),
                        outcome,
                    };
                    tls.sock
                        .set_deadline(Some(Instant::now() + self.settings.write_timeout));
                    tls.write_all(&ack.encode())?;
                    tls.flush()?;
                }
                ReadFrame::Bad(batch_id, error) => {
                    self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                    let ack = Ack {
                        batch_id,
                        outcome: Outcome::Rejected,
                    };
                    tls.sock
                        .set_deadline(Some(Instant::now() + self.settings.write_timeout));
                    // Best effort: the connection is closed either way.
                    let _ = tls.write_all(&ack.encode());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return Err(error.into());
                }
            }
        }
    }

    /// Reads one frame, never past its end: each read asks for at most what
    /// the decoder still needs, so the decoder holds at most one frame (its
    /// limits refuse an oversized one from the header, before the body).
    ///
    /// The first byte must arrive within the read timeout (else the
    /// connection is idle: an end), the whole frame within the frame
    /// timeout of its first byte: both are deadlines on the socket, so
    /// TLS bytes trickled without completing a record do not extend them.
    fn read_frame(
        &self,
        tls: &mut StreamOwned<ServerConnection, DeadlineStream>,
        decoder: &mut FrameDecoder,
    ) -> Result<ReadFrame, TlsError> {
        let mut head = [0u8; FIXED_HEADER_LEN];
        let mut got = 0usize;
        let mut started = false;
        let mut buf = vec![0u8; 16 << 10];
        tls.sock
            .set_deadline(Some(Instant::now() + self.settings.read_timeout));
        loop {
            let need = match decoder.poll_frame() {
                Ok(Decoded::Frame(f)) => return Ok(ReadFrame::Frame(f)),
                Ok(Decoded::NeedMore(n)) => n,
                Err(e) => {
                    // The header's fields are only trusted once its CRC has
                    // passed, which every later check implies.
                    let batch_id = (got >= FIXED_HEADER_LEN
                        && !matches!(
                            e,
                            FrameError::HeaderCrc { .. }
                                | FrameError::BadMagic { .. }
                                | FrameError::UnsupportedVersion { .. }
                        ))
                    .then(|| FrameHeader::parse(&head).ok().map(|h| h.batch_id))
                    .flatten();
                    return Ok(ReadFrame::Bad(batch_id, e));
                }
            };
            let want = need.clamp(1, buf.len());
            let n = match tls.read(&mut buf[..want]) {
                Ok(0) if got == 0 => return Ok(ReadFrame::End),
                Ok(0) => {
                    return Err(FrameError::Truncated {
                        buffered: decoder.buffered(),
                        at_least: need,
                    }
                    .into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Closed without close_notify, or idle: between frames, an end.
                Err(e)
                    if got == 0 && (is_timeout(&e) || e.kind() == io::ErrorKind::UnexpectedEof) =>
                {
                    return Ok(ReadFrame::End);
                }
                Err(e) if is_timeout(&e) => return Err(TlsError::FrameTimeout),
                Err(e) => return Err(e.into()),
            };
            if !started {
                started = true;
                tls.sock
                    .set_deadline(Some(Instant::now() + self.settings.frame_timeout));
            }
            if got < FIXED_HEADER_LEN {
                let k = n.min(FIXED_HEADER_LEN - got);
                head[got..got + k].copy_from_slice(&buf[..k]);
            }
            got += n;
            decoder.push(&buf[..n]);
        }
    }

    /// Runs one frame through ingest and storage; the outcome to answer.
    ///
    /// The state's lock is held to run ingest and save the ring, not while
    /// the blob store stores: the batch is marked in flight meanwhile (a
    /// retry of it is answered transient, not as a duplicate of data not
    /// yet stored), and a failed store is handed back to ingest.
    fn ingest_frame(&self, principal: &Principal, frame: &Frame) -> Outcome {
        let now = (self.clock)();
        let tenant = principal.tenant();
        let prepared = self.prepare(&mut self.lock(), now, principal, frame);
        let (outcome, duplicate, error) = match prepared {
            Prepared::Answer(outcome, duplicate, error) => (outcome, duplicate, error),
            Prepared::Store { ops, answer } => {
                let mut failed = None;
                {
                    let mut store = self.store();
                    for op in &ops {
                        // A store that panics fails this frame like one that
                        // errs: the batch must be handed back to ingest.
                        let put = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            apply_store_op(&mut *store, op)
                        }));
                        match put {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => failed = Some(e.to_string()),
                            Err(_) => failed = Some("the blob store panicked".into()),
                        }
                        if failed.is_some() {
                            break;
                        }
                    }
                }
                let mut st = self.lock();
                st.in_flight.remove(&(tenant, frame.batch_id()));
                if failed.is_some() {
                    for op in &ops {
                        // Forgotten by the de-duplication, so the retry is
                        // stored.
                        st.ingest.handle_store_failed(op);
                    }
                }
                drop(st);
                match failed {
                    Some(e) => (Outcome::Transient, false, Some(e)),
                    None => answer,
                }
            }
        };
        self.emit(ServiceEvent::Frame {
            tenant,
            batch_id: frame.batch_id(),
            data_type: frame.data_type(),
            records: frame.header().record_count,
            outcome,
            duplicate,
            error,
        });
        outcome
    }

    /// Under the state's lock: the ring, ingest, the ring saved again; the
    /// operations to store, their batches marked in flight.
    fn prepare(
        &self,
        st: &mut ServiceState,
        now: DateTime<Utc>,
        principal: &Principal,
        frame: &Frame,
    ) -> Prepared {
        let tenant = principal.tenant();
        let transient = |e: String| Prepared::Answer(Outcome::Transient, false, Some(e));
        if st.in_flight.contains(&(tenant, frame.batch_id())) {
            // Not a duplicate yet: its first copy is still being stored.
            return transient("the batch is being stored by another connection".into());
        }
        if let Err(e) = self.ensure_ring(st, tenant, now) {
            return transient(e);
        }
        if let Err(e) = self.rotate(st, tenant, now) {
            return transient(e);
        }
        let Some(ring) = st.rings.get_mut(&tenant) else {
            return transient("no key ring".into());
        };
        let report =
            match st
                .ingest
                .handle_request(now, principal, ring, &mut *st.entropy, frame.as_bytes())
            {
                Ok(r) => r,
                Err(e) => return transient(e.to_string()),
            };
        // Drain every operation (the drain contract).
        let ops: Vec<StoreOp> = std::iter::from_fn(|| st.ingest.poll_store()).collect();
        let answer = match (report.answers.into_iter().next(), report.stopped) {
            (Some(a), _) => (a.outcome, a.duplicate, a.error.map(|e| e.to_string())),
            // A tenant mismatch or a frame ingest could not read: bad data.
            (None, Some(e)) => (Outcome::Rejected, false, Some(e.to_string())),
            // One whole frame was passed, so ingest answers it or says why
            // not; if a later core did neither, let the agent retry.
            (None, None) => (Outcome::Transient, false, Some("no answer".into())),
        };
        if ops.is_empty() {
            return Prepared::Answer(answer.0, answer.1, answer.2);
        }
        // Each seal counted a data key against the ring's hard limit: the
        // ring is saved before anything it sealed is stored, so the count
        // survives a restart.
        if let Err(e) = save_tenant_ring(st, tenant) {
            for op in &ops {
                st.ingest.handle_store_failed(op);
            }
            return transient(e);
        }
        // One frame per request: its batch is the one stored.
        st.in_flight.insert((tenant, frame.batch_id()));
        Prepared::Store { ops, answer }
    }

    /// Serves `listener` on a thread, each connection on a thread of its
    /// own, until the handle is stopped or dropped.
    ///
    /// Dropping the returned handle stops the service at once: keep it, and
    /// [`ServiceHandle::stop`] or [`ServiceHandle::join`] it.
    ///
    /// # Errors
    ///
    /// [`TlsError::Io`] if the listener's address cannot be read or the
    /// accept thread cannot be started (the listener is then closed).
    #[must_use = "dropping the handle stops the service at once"]
    pub fn spawn(self: &Arc<Self>, listener: TcpListener) -> Result<ServiceHandle, TlsError> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            workers: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            handshaking: Arc::new(AtomicUsize::new(0)),
        });
        let service = Arc::clone(self);
        let sh = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("opsdata-accept-{addr}"))
            .spawn(move || accept_loop(&service, &listener, &sh))?;
        Ok(ServiceHandle {
            addr,
            shared,
            accept: Some(accept),
        })
    }
}

impl<B: BlobStore + Send + 'static> TlsService<B> {
    /// Makes sure `tenant` has a ring in memory: loaded from the key store,
    /// or provisioned and saved there before anything is sealed with it.
    fn ensure_ring(
        &self,
        st: &mut ServiceState,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        if st.rings.contains_key(&tenant) {
            return Ok(());
        }
        if let Some(vault) = &st.keys {
            // A ring that cannot be read is not replaced: what it sealed
            // would be lost for good.
            let loaded = load_ring(&*vault.store, tenant, &vault.wrapping)
                .map_err(|e| format!("loading the key ring: {e}"))?;
            if let Some(ring) = loaded {
                st.rings.insert(tenant, ring);
                return Ok(());
            }
        }
        let (Some(policy), Some(vault)) = (&self.provision, &mut st.keys) else {
            return Err("no key ring".into());
        };
        let ring = provision_ring(tenant, policy, &mut *st.entropy, now)?;
        save_ring(&mut *vault.store, &ring, &vault.wrapping, &mut *st.entropy)
            .map_err(|e| format!("saving the new key ring: {e}"))?;
        st.rings.insert(tenant, ring);
        st.rotation_checked.insert(tenant, now);
        Ok(())
    }

    /// Rotates `tenant`'s ring forward if the policy says so (checked at
    /// most once per [`ROTATION_CHECK`]): the actions are applied to a
    /// copy, which replaces the ring only once it is saved.
    fn rotate(
        &self,
        st: &mut ServiceState,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let (Some(policy), Some(vault)) = (&self.provision, &mut st.keys) else {
            return Ok(());
        };
        if st
            .rotation_checked
            .get(&tenant)
            .is_some_and(|t| now >= *t && now - *t < ROTATION_CHECK)
        {
            return Ok(());
        }
        let Some(ring) = st.rings.get(&tenant) else {
            return Ok(());
        };
        let due: Vec<KeyAction> = policy
            .evaluate(ring, &KeyCensus::new(), now)
            .into_iter()
            .filter(|a| matches!(a, KeyAction::GenerateKey { .. } | KeyAction::Promote { .. }))
            .collect();
        if due.is_empty() {
            st.rotation_checked.insert(tenant, now);
            return Ok(());
        }
        let entropy = &mut *st.entropy;
        let mut copy = ring
            .to_sealed(&vault.wrapping, entropy)
            .and_then(|b| KeyRing::from_sealed(&b, tenant, &vault.wrapping))
            .map_err(|e| format!("rotating the key ring: {e}"))?;
        for action in &due {
            let _applied = copy
                .apply(action, entropy, now)
                .map_err(|e| format!("rotating the key ring: {e}"))?;
        }
        save_ring(&mut *vault.store, &copy, &vault.wrapping, entropy)
            .map_err(|e| format!("saving the rotated key ring: {e}"))?;
        st.rings.insert(tenant, copy);
        st.rotation_checked.insert(tenant, now);
        Ok(())
    }
}

/// Saves `tenant`'s ring to the key store, if there is one.
fn save_tenant_ring(st: &mut ServiceState, tenant: TenantId) -> Result<(), String> {
    let (Some(vault), Some(ring)) = (&mut st.keys, st.rings.get(&tenant)) else {
        return Ok(());
    };
    save_ring(&mut *vault.store, ring, &vault.wrapping, &mut *st.entropy)
        .map_err(|e| format!("saving the key ring: {e}"))
}

fn provision_ring(
    tenant: TenantId,
    policy: &RotationPolicy,
    entropy: &mut (dyn Entropy + Send),
    now: DateTime<Utc>,
) -> Result<KeyRing, String> {
    let mut ring = KeyRing::new(tenant, policy);
    // A new tenant needs a key generated, then promoted: two rounds.
    for _ in 0..2 {
        for action in policy.evaluate(&ring, &KeyCensus::new(), now) {
            let _applied = ring
                .apply(&action, entropy, now)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(ring)
}

struct Shared {
    stop: AtomicBool,
    /// A clone of each open connection's socket, to shut it down on stop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    active: AtomicUsize,
    /// Connections still in their handshake.
    handshaking: Arc<AtomicUsize>,
}

/// A connection's slot: its socket's clone forgotten and the count of
/// connections decremented when dropped.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared.conns).remove(&self.id);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One unit of a counter, given back when dropped (a worker that panics
/// gives it back too).
struct Held(Arc<AtomicUsize>);

impl Held {
    fn take(counter: &Arc<AtomicUsize>) -> Held {
        counter.fetch_add(1, Ordering::SeqCst);
        Held(Arc::clone(counter))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop<B: BlobStore + Send + 'static>(
    service: &Arc<TlsService<B>>,
    listener: &TcpListener,
    shared: &Arc<Shared>,
) {
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(tcp) = stream else {
            // Accept errors (out of descriptors, a reset before accept)
            // concern one connection; keep listening, after a pause so an
            // error that persists (EMFILE) does not spin the thread.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        lock(&shared.workers).retain(|w| !w.is_finished());
        let settings = &service.settings;
        if shared.active.load(Ordering::SeqCst) >= settings.max_connections
            || shared.handshaking.load(Ordering::SeqCst) >= settings.max_handshakes
        {
            service.counters.over_limit.fetch_add(1, Ordering::Relaxed);
            service.emit(ServiceEvent::Refused {
                peer: tcp.peer_addr().ok(),
                reason: TlsError::TooManyConnections.to_string(),
            });
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        }
        next_id += 1;
        let id = next_id;
        // A connection stop could not shut down could keep stop waiting
        // for its thread: refuse it.
        match tcp.try_clone() {
            Ok(clone) => {
                lock(&shared.conns).insert(id, clone);
            }
            Err(_) => {
                let _ = tcp.shutdown(Shutdown::Both);
                continue;
            }
        }
        shared.active.fetch_add(1, Ordering::SeqCst);
        // Gives the slot back however the worker ends: normally, by a
        // panic (an observer's, a store's), or not started at all (the
        // closure holding it is dropped with a failed spawn).
        let slot = Slot {
            shared: Arc::clone(shared),
            id,
        };
        let handshake = Held::take(&shared.handshaking);
        let svc = Arc::clone(service);
        let worker = std::thread::Builder::new()
            .name(format!("opsdata-conn-{id}"))
            .spawn(move || {
                let _slot = slot;
                let _ = svc.serve(tcp, Some(handshake));
            });
        if let Ok(w) = worker {
            lock(&shared.workers).push(w);
        }
    }
}

/// A running [`TlsService::spawn`]: stop it with [`ServiceHandle::stop`]
/// (or by dropping it), which closes the listener and every connection.
#[must_use = "dropping the handle stops the service at once"]
pub struct ServiceHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("addr", &self.addr)
            .field("connections", &self.shared.active.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl ServiceHandle {
    /// The address served.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections being served.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Stops accepting, shuts every connection down and waits for their
    /// threads; the port is free when it returns.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Waits for the accept thread, which runs until the process ends (the
    /// handle is consumed, so nothing can stop it any more). Connections'
    /// threads are not waited for.
    pub fn join(mut self) {
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }

    fn stop_inner(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns, dropping
        // the listener. A wildcard address is not one to connect to: the
        // loopback of its family reaches the same listener.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
        for (_, c) in lock(&self.shared.conns).drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
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
        let d = ServiceSettings::default();
        assert!(d.with_read_timeout(Duration::ZERO).is_err());
        assert!(d.with_frame_timeout(MAX_TIMEOUT + s).is_err());
        assert!(matches!(
            d.with_max_connections(0),
            Err(TlsError::Zero { .. })
        ));
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let root = CertificateDer::from(vec![0x30, 0x00]);
        assert!(matches!(
            TransportSettings::new(addr, "not a name!", vec![root.clone()]),
            Err(TlsError::ServerName(_))
        ));
        assert!(matches!(
            TransportSettings::new(addr, "localhost", vec![]),
            Err(TlsError::NoCertificates(_))
        ));
        assert!(TransportSettings::new(addr, "127.0.0.1", vec![root]).is_ok());
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
