//! [`HttpsTransport`]: frames `POST`ed over mutual TLS (HTTPS wire v2,
//! `docs/WIRE.md`), many requests at once on one HTTP/2 connection.
//!
//! Built on hyper's connection API (`hyper::client::conn`) rather than
//! hyper-util's pooling `Client`: the agent talks to one service, so one
//! connection is the whole pool; owning it directly is what lets the
//! transport choose the client certificate per connection (a renewed one
//! from the next connection on), bound the connect and handshake time
//! separately from the request time, and back off between reconnects
//! without a connector wrapper. On HTTP/2 the `SendRequest` is cloned for
//! each request, so up to the server's stream limit run at once; when the
//! server only speaks HTTP/1.1, requests take turns on the one connection.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use opsdata::{Frame, Outcome, Transmit};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::driver::AsyncTransport;
use super::{DriverError, IdentitySource};
use crate::clock::{Clock, system_clock};
use crate::wire::{ACK_LEN, Ack, FRAMES_CONTENT_TYPE, FRAMES_PATH};

/// The longest timeout or backoff a setting takes.
const MAX_SETTING: Duration = Duration::from_secs(3600);
/// The wait taken for a 429 whose `Retry-After` is absent or unreadable.
const DEFAULT_RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(1);
/// HTTP/2 pings while requests are in flight: every this often...
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...each answered within this, or the connection is closed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of a response body read beyond the acks expected (an error
/// message, say) before the rest is ignored.
const BODY_SLACK: usize = 4096;

fn duration(setting: &'static str, d: Duration) -> Result<Duration, DriverError> {
    if d.is_zero() || d > MAX_SETTING {
        Err(DriverError::Setting {
            setting,
            reason: "must be positive and at most one hour",
        })
    } else {
        Ok(d)
    }
}

/// Where and how [`HttpsTransport`] connects.
#[derive(Clone)]
pub struct HttpsSettings {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    authority: String,
    roots: Arc<RootCertStore>,
    connect_timeout: Duration,
    request_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    seed: u64,
    http1_only: bool,
    clock: Clock,
}

impl fmt::Debug for HttpsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsSettings")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("roots", &self.roots.len())
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("http1_only", &self.http1_only)
            .finish_non_exhaustive()
    }
}

impl HttpsSettings {
    /// The service's address, the name its certificate must carry (also
    /// the request's authority), and the roots it must chain to. Defaults:
    /// 10 s to connect (TCP, TLS and HTTP handshakes), 30 s per request,
    /// reconnects backing off from 100 ms, doubling to 30 s, jittered
    /// from seed 0; HTTP/2 offered first.
    ///
    /// # Errors
    ///
    /// [`DriverError::ServerName`] if the name is neither a DNS name nor
    /// an IP address; [`DriverError::Roots`] if no root is given or one is
    /// not a usable CA certificate.
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, DriverError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| DriverError::ServerName(server_name.to_owned()))?;
        if roots.is_empty() {
            return Err(DriverError::Roots("no trusted root given".into()));
        }
        let mut store = RootCertStore::empty();
        for c in roots {
            store
                .add(c)
                .map_err(|e| DriverError::Roots(e.to_string()))?;
        }
        let host = match &name {
            ServerName::IpAddress(ip) => match std::net::IpAddr::from(*ip) {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            },
            _ => server_name.to_owned(),
        };
        Ok(HttpsSettings {
            addr,
            server_name: name,
            authority: format!("{host}:{}", addr.port()),
            roots: Arc::new(store),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            seed: 0,
            http1_only: false,
            clock: system_clock(),
        })
    }

    /// The clock an HTTP-date `Retry-After` is measured against (default:
    /// the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The bound on connecting: TCP, TLS handshake and HTTP handshake.
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero or more than an hour.
    pub fn with_connect_timeout(mut self, d: Duration) -> Result<Self, DriverError> {
        self.connect_timeout = duration("connect_timeout", d)?;
        Ok(self)
    }

    /// The bound on one request, from waiting for the connection's
    /// capacity to the last byte of the answer.
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero or more than an hour.
    pub fn with_request_timeout(mut self, d: Duration) -> Result<Self, DriverError> {
        self.request_timeout = duration("request_timeout", d)?;
        Ok(self)
    }

    /// Reconnect backoff: after `n` failed connects in a row, no attempt
    /// for `min · 2^(n-1)` capped at `max`, less up to half of it drawn
    /// from the seed's sequence (so agents restarted together spread out).
    /// Sends while backing off fail at once (transient).
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero, more than an hour, or `min > max`.
    pub fn with_backoff(
        mut self,
        min: Duration,
        max: Duration,
        seed: u64,
    ) -> Result<Self, DriverError> {
        let min = duration("backoff_min", min)?;
        let max = duration("backoff_max", max)?;
        if min > max {
            return Err(DriverError::Setting {
                setting: "backoff_min",
                reason: "must not exceed backoff_max",
            });
        }
        self.backoff_min = min;
        self.backoff_max = max;
        self.seed = seed;
        Ok(self)
    }

    /// Offers only HTTP/1.1 in ALPN (requests then take turns on the one
    /// connection); for tests and for proxies that do not speak HTTP/2.
    #[must_use]
    pub fn with_http1_only(mut self, yes: bool) -> Self {
        self.http1_only = yes;
        self
    }

    /// The service's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What [`HttpsTransport`] has done since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpsTransportStats {
    /// Connections opened (TLS and HTTP handshakes done).
    pub connects: u64,
    /// Of them, over HTTP/2.
    pub http2_connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Sends refused at once while backing off after a failed connect.
    pub backoff_refusals: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered with another status.
    pub http_errors: u64,
    /// Requests that failed or timed out without an answer.
    pub failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    http2_connects: AtomicU64,
    connect_failures: AtomicU64,
    backoff_refusals: AtomicU64,
    requests: AtomicU64,
    ok: AtomicU64,
    http_errors: AtomicU64,
    failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A connection's request side.
#[derive(Clone)]
enum Sender {
    H2(http2::SendRequest<Full<Bytes>>),
    /// HTTP/1.1: one request at a time on the connection.
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H2(s) => s.is_closed(),
            Sender::H1(s) => s.try_lock().is_ok_and(|s| s.is_closed()),
        }
    }
}

#[derive(Default)]
struct Connection {
    current: Option<(u64, Sender)>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
    jitter: u64,
}

struct Inner {
    settings: HttpsSettings,
    identity: Box<dyn IdentitySource>,
    connection: tokio::sync::Mutex<Connection>,
    counters: Counters,
    last_error: Mutex<Option<String>>,
}

/// The agent's HTTPS transport: `POST`s frames to the service's
/// `/v1/frames` over mutual TLS, on one connection (HTTP/2 when the
/// service offers it, so many requests run at once), reconnecting with
/// backoff and presenting the identity's current certificate on each new
/// connection. Cheap to clone (clones share the connection).
///
/// The module docs give how each HTTP answer maps to each frame's outcome.
#[derive(Clone)]
pub struct HttpsTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("addr", &self.inner.settings.addr)
            .field("identity", &self.inner.identity)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl HttpsTransport {
    /// A transport presenting `identity`'s certificate (read again at each
    /// new connection). Connects lazily, at the first send.
    #[must_use]
    pub fn new(settings: HttpsSettings, identity: impl IdentitySource) -> Self {
        let jitter = settings.seed;
        HttpsTransport {
            inner: Arc::new(Inner {
                settings,
                identity: Box::new(identity),
                connection: tokio::sync::Mutex::new(Connection {
                    jitter,
                    ..Connection::default()
                }),
                counters: Counters::default(),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// Counters since the transport was built.
    #[must_use]
    pub fn stats(&self) -> HttpsTransportStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpsTransportStats {
            connects: get(&c.connects),
            http2_connects: get(&c.http2_connects),
            connect_failures: get(&c.connect_failures),
            backoff_refusals: get(&c.backoff_refusals),
            requests: get(&c.requests),
            ok: get(&c.ok),
            http_errors: get(&c.http_errors),
            failures: get(&c.failures),
        }
    }

    /// The last failure (connect, TLS, request, status), for logs.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Closes the connection; the next send opens a new one (with the
    /// identity's current certificate).
    pub async fn disconnect(&self) {
        self.inner.connection.lock().await.current = None;
    }

    fn fail(&self, what: impl fmt::Display) {
        let msg = what.to_string();
        tracing::debug!(error = %msg, "https transport");
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(msg);
    }

    /// Sends `frames` in one request and returns each frame's outcome, in
    /// order (the module docs give the mapping).
    pub async fn send_frames(&self, frames: &[Frame]) -> Vec<Outcome> {
        let n = frames.len();
        if n == 0 {
            return Vec::new();
        }
        let transient = || vec![Outcome::Transient; n];
        let (generation, sender) = match self.sender().await {
            Ok(s) => s,
            Err(()) => return transient(),
        };
        let body = if n == 1 {
            frames[0].as_bytes().clone()
        } else {
            let mut b = BytesMut::with_capacity(frames.iter().map(Frame::len).sum());
            for f in frames {
                b.extend_from_slice(f.as_bytes());
            }
            b.freeze()
        };
        bump(&self.inner.counters.requests);
        let timeout = self.inner.settings.request_timeout;
        let answer = tokio::time::timeout(timeout, self.request(&sender, body, n)).await;
        let (status, retry_after, acks) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                bump(&self.inner.counters.failures);
                self.fail(format_args!("request: {e}"));
                self.drop_if_closed(generation, &sender).await;
                return transient();
            }
            Err(_) => {
                bump(&self.inner.counters.failures);
                self.fail("request timed out");
                if matches!(sender, Sender::H1(_)) {
                    // An HTTP/1.1 connection with an answer still owed
                    // cannot carry the next request.
                    self.drop_connection(generation).await;
                }
                return transient();
            }
        };
        if status == StatusCode::OK {
            bump(&self.inner.counters.ok);
        } else {
            bump(&self.inner.counters.http_errors);
            self.fail(format_args!("service answered {status}"));
        }
        let now = (self.inner.settings.clock)();
        map_answer(status, retry_after.as_deref(), &acks, frames, now)
    }

    /// One request on `sender`: the status, `Retry-After`, and the acks
    /// read from the body.
    async fn request(
        &self,
        sender: &Sender,
        body: Bytes,
        frames: usize,
    ) -> Result<(StatusCode, Option<String>, Vec<Ack>), hyper::Error> {
        let settings = &self.inner.settings;
        let builder = Request::post(match sender {
            Sender::H2(_) => format!("https://{}{FRAMES_PATH}", settings.authority),
            Sender::H1(_) => FRAMES_PATH.to_owned(),
        })
        .header(CONTENT_TYPE, FRAMES_CONTENT_TYPE);
        let builder = match sender {
            Sender::H1(_) => builder.header(HOST, settings.authority.as_str()),
            Sender::H2(_) => builder,
        };
        let request = builder
            .body(Full::new(body))
            .expect("a valid method, URI and headers");
        let response = match sender {
            Sender::H2(s) => {
                let mut s = s.clone();
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H1(s) => {
                let mut s = s.lock().await;
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        let (parts, body) = response.into_parts();
        let retry_after = parts
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read at most the acks expected and a little more; a body that is
        // longer, or fails, leaves the frames without an ack.
        let limit = frames.saturating_mul(ACK_LEN).saturating_add(BODY_SLACK);
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.fail(format_args!("response body: {e}"));
                Bytes::new()
            }
        };
        let mut acks = Vec::new();
        for chunk in bytes.chunks_exact(ACK_LEN).take(frames) {
            let chunk: &[u8; ACK_LEN] = chunk.try_into().expect("chunks of ACK_LEN");
            match Ack::decode(chunk) {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    self.fail(format_args!("acknowledgement: {e}"));
                    break;
                }
            }
        }
        Ok((parts.status, retry_after, acks))
    }

    /// The current connection, or a new one; `Err` while backing off or
    /// when connecting fails.
    async fn sender(&self) -> Result<(u64, Sender), ()> {
        let mut conn = self.inner.connection.lock().await;
        if let Some((generation, sender)) = &conn.current {
            if !sender.is_closed() {
                return Ok((*generation, sender.clone()));
            }
            conn.current = None;
        }
        if conn.retry_at.is_some_and(|at| Instant::now() < at) {
            bump(&self.inner.counters.backoff_refusals);
            return Err(());
        }
        let timeout = self.inner.settings.connect_timeout;
        let result = match tokio::time::timeout(timeout, self.connect()).await {
            Ok(r) => r,
            Err(_) => Err("connect timed out".into()),
        };
        match result {
            Ok(sender) => {
                bump(&self.inner.counters.connects);
                if matches!(sender, Sender::H2(_)) {
                    bump(&self.inner.counters.http2_connects);
                }
                conn.failures = 0;
                conn.retry_at = None;
                conn.generation += 1;
                let generation = conn.generation;
                conn.current = Some((generation, sender.clone()));
                Ok((generation, sender))
            }
            Err(e) => {
                bump(&self.inner.counters.connect_failures);
                self.fail(format_args!("connect: {e}"));
                conn.failures = conn.failures.saturating_add(1);
                let wait = backoff(&self.inner.settings, conn.failures, &mut conn.jitter);
                conn.retry_at = Some(Instant::now() + wait);
                Err(())
            }
        }
    }

    async fn drop_if_closed(&self, generation: u64, sender: &Sender) {
        if sender.is_closed() {
            self.drop_connection(generation).await;
        }
    }

    async fn drop_connection(&self, generation: u64) {
        let mut conn = self.inner.connection.lock().await;
        if conn.current.as_ref().is_some_and(|(g, _)| *g == generation) {
            conn.current = None;
        }
    }

    /// TCP, TLS with the identity's current certificate, then the HTTP
    /// handshake the ALPN result names.
    async fn connect(&self) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
        let settings = &self.inner.settings;
        let identity = self.inner.identity.current()?;
        let (chain, key) = identity.parts();
        drop(identity);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(Arc::clone(&settings.roots))
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = if settings.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let tcp = TcpStream::connect(settings.addr).await?;
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(settings.server_name.clone(), tcp)
            .await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        let io = TokioIo::new(tls);
        if h2 {
            // Pings while requests are in flight: a connection that died
            // silently (a dropped NAT entry, a crashed peer) fails its
            // requests within the ping timeout, not the request timeout.
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(false)
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http/2 connection ended");
                }
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http/1.1 connection ended");
                }
            });
            Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(sender))))
        }
    }
}

impl AsyncTransport for HttpsTransport {
    async fn send(&self, transmit: &Transmit) -> Outcome {
        self.send_frames(std::slice::from_ref(&transmit.frame))
            .await
            .pop()
            .unwrap_or(Outcome::Transient)
    }
}

/// The wait before reconnect attempt `failures + 1`.
fn backoff(settings: &HttpsSettings, failures: u32, jitter: &mut u64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = settings
        .backoff_min
        .saturating_mul(1 << exp)
        .min(settings.backoff_max);
    let half = u64::try_from(base.as_millis() / 2).unwrap_or(u64::MAX);
    let cut = if half > 0 {
        splitmix(jitter) % (half + 1)
    } else {
        0
    };
    base - Duration::from_millis(cut)
}

/// SplitMix64: the backoff's jitter, reproducible from the seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How long a `Retry-After` asks to wait: delta-seconds, or an HTTP-date
/// measured against `now`; absent or unreadable: one second.
fn retry_after(value: Option<&str>, now: DateTime<Utc>) -> chrono::Duration {
    let Some(v) = value.map(str::trim) else {
        return DEFAULT_RETRY_AFTER;
    };
    if let Ok(secs) = v.parse::<u32>() {
        return chrono::Duration::seconds(i64::from(secs));
    }
    match DateTime::parse_from_rfc2822(v) {
        Ok(at) => (at.with_timezone(&Utc) - now).max(chrono::Duration::zero()),
        Err(_) => DEFAULT_RETRY_AFTER,
    }
}

/// Each frame's outcome from the answer to its request.
fn map_answer(
    status: StatusCode,
    retry: Option<&str>,
    acks: &[Ack],
    frames: &[Frame],
    now: DateTime<Utc>,
) -> Vec<Outcome> {
    // The i-th ack answers the i-th frame only if it names its batch.
    let acked = |i: usize, f: &Frame| {
        acks.get(i)
            .filter(|a| a.batch_id == Some(f.batch_id()))
            .map(|a| a.outcome)
    };
    match status {
        StatusCode::OK => frames
            .iter()
            .enumerate()
            .map(|(i, f)| acked(i, f).unwrap_or(Outcome::Transient))
            .collect(),
        // WIRE.md: one ack per frame read before the bad bytes, then one
        // (rejected) for the frame at them, all zero if its header did
        // not pass; the frames after it were not read: sent again.
        StatusCode::BAD_REQUEST => frames
            .iter()
            .enumerate()
            .map(|(i, f)| match acked(i, f) {
                Some(outcome) => outcome,
                None if i + 1 == acks.len() && acks[i].batch_id.is_none() => Outcome::Rejected,
                None => Outcome::Transient,
            })
            .collect(),
        StatusCode::PAYLOAD_TOO_LARGE => vec![Outcome::Rejected; frames.len()],
        StatusCode::TOO_MANY_REQUESTS => {
            let wait = retry_after(retry, now);
            vec![Outcome::Throttled { retry_after: wait }; frames.len()]
        }
        _ => vec![Outcome::Transient; frames.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use opsdata::{BatchId, DataType, FrameEncoder, TenantBatch, TenantId};

    fn frame(n: u8) -> Frame {
        let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        FrameEncoder::new()
            .encode_frame(
                &TenantBatch::new(tenant, DataType::Alert),
                BatchId::from_random_bytes([n; 16]),
                now,
            )
            .unwrap()
    }

    fn ack(f: &Frame, outcome: Outcome) -> Ack {
        Ack {
            batch_id: Some(f.batch_id()),
            outcome,
        }
    }

    #[test]
    fn each_status_maps_as_documented() {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let frames = [frame(1), frame(2), frame(3)];
        let acks = [
            ack(&frames[0], Outcome::Delivered),
            // Names another batch: not this frame's answer.
            ack(&frames[0], Outcome::Delivered),
        ];
        use Outcome::*;
        assert_eq!(
            map_answer(StatusCode::OK, None, &acks, &frames, now),
            [Delivered, Transient, Transient]
        );
        // 400: the frame at the bad bytes is rejected (by its id, or by
        // its place when its header was unreadable); the frames after it
        // were not read, so they are sent again.
        let bad = [ack(&frames[0], Delivered), ack(&frames[1], Rejected)];
        assert_eq!(
            map_answer(StatusCode::BAD_REQUEST, None, &bad, &frames, now),
            [Delivered, Rejected, Transient]
        );
        let unreadable = [
            ack(&frames[0], Delivered),
            Ack {
                batch_id: None,
                outcome: Rejected,
            },
        ];
        assert_eq!(
            map_answer(StatusCode::BAD_REQUEST, None, &unreadable, &frames, now),
            [Delivered, Rejected, Transient]
        );
        assert_eq!(
            map_answer(StatusCode::BAD_REQUEST, None, &acks[..1], &frames, now),
            [Delivered, Transient, Transient]
        );
        assert_eq!(
            map_answer(StatusCode::PAYLOAD_TOO_LARGE, None, &[], &frames, now),
            [Rejected; 3]
        );
        for status in [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ] {
            assert_eq!(
                map_answer(status, None, &acks, &frames, now),
                [Transient; 3]
            );
        }
        let t = |s| Throttled {
            retry_after: chrono::Duration::seconds(s),
        };
        assert_eq!(
            map_answer(
                StatusCode::TOO_MANY_REQUESTS,
                Some("7"),
                &[],
                &frames[..1],
                now
            ),
            [t(7)]
        );
        assert_eq!(
            map_answer(
                StatusCode::TOO_MANY_REQUESTS,
                Some("Mon, 23 Nov 2026 12:00:42 GMT"),
                &[],
                &frames[..1],
                now
            ),
            [t(42)]
        );
        for bad in [None, Some("soon"), Some("-3")] {
            assert_eq!(
                map_answer(StatusCode::TOO_MANY_REQUESTS, bad, &[], &frames[..1], now),
                [t(1)]
            );
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_jitters_at_most_half() {
        let settings = HttpsSettings {
            addr: "127.0.0.1:1".parse().unwrap(),
            server_name: ServerName::try_from("localhost").unwrap(),
            authority: "localhost:1".into(),
            roots: Arc::new(RootCertStore::empty()),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(3),
            seed: 9,
            http1_only: false,
            clock: system_clock(),
        };
        let mut j = 9;
        let mut last_base = Duration::ZERO;
        for n in 1..10u32 {
            let base = (Duration::from_millis(100) * (1 << (n - 1))).min(Duration::from_secs(3));
            let w = backoff(&settings, n, &mut j);
            assert!(w <= base && w >= base / 2, "{n}: {w:?} for {base:?}");
            assert!(base >= last_base);
            last_base = base;
        }
        assert_eq!(last_base, Duration::from_secs(3));
    }
}
