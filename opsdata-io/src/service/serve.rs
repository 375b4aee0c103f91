//! Serving the router over rustls with mutual TLS: the accept loop, the
//! connection limit, the handshake timeout, client-certificate
//! authentication, HTTP/1.1 and HTTP/2 by ALPN, graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use opsdata::EnrollmentCa;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::IngestService;
use super::http::{ClientAuth, PeerCertificates};
use crate::blobs::AsyncBlobStore;
use crate::identity::{TlsError, TlsIdentity, provider, root_store};

/// The TLS side of [`serve`]: the service's certificate and key, and the
/// enrollment CA agents' certificates must chain to.
#[derive(Debug)]
pub struct ServeConfig {
    identity: TlsIdentity,
    enrollment_ca: Vec<CertificateDer<'static>>,
}

impl ServeConfig {
    /// The service presents `identity` and requires a client certificate
    /// chaining to one of `enrollment_ca`.
    #[must_use]
    pub fn new(identity: TlsIdentity, enrollment_ca: Vec<CertificateDer<'static>>) -> Self {
        ServeConfig {
            identity,
            enrollment_ca,
        }
    }

    /// The rustls configuration: client certificates required
    /// (`WebPkiClientVerifier`), ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    ///
    /// [`TlsError::NoCertificates`] without a CA; [`TlsError::Rustls`],
    /// [`TlsError::Verifier`] if rustls refuses the CA or the identity.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let roots = root_store(&self.enrollment_ca, "enrollment CA")?;
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()?;
        let (chain, key) = self.identity.parts();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS configuration or the enrollment CA was refused.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `service`'s router on `listener` over mutual TLS until
/// `shutdown` resolves, then shuts down gracefully: stops accepting,
/// marks the service not ready, lets every request in flight finish
/// (HTTP/2 clients get `GOAWAY`, HTTP/1.1 connections close after their
/// response), and returns once every connection has ended.
///
/// # Errors
///
/// [`ServeError::Tls`] if the TLS configuration or CA is refused (before
/// serving anything).
pub async fn serve<B: AsyncBlobStore>(
    listener: TcpListener,
    service: IngestService<B>,
    tls: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let app = service.router();
    serve_app(listener, service, app, tls, shutdown).await
}

/// [`serve`] with the host's own `app`: an axum router into which the
/// service's [`router`](IngestService::router) is merged (next to the
/// host's routes). Each request gets the connection's [`ClientAuth`] and
/// [`PeerCertificates`] extensions.
///
/// # Errors
///
/// As [`serve`].
pub async fn serve_app<B: AsyncBlobStore>(
    listener: TcpListener,
    service: IngestService<B>,
    app: Router,
    tls: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ca = Arc::new(EnrollmentCa::new(&tls.enrollment_ca).map_err(TlsError::from)?);
    let acceptor = TlsAcceptor::from(Arc::new(tls.server_config()?));
    let limits = service.limits();
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let addr = listener.local_addr().ok();
    info!(?addr, "serving");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, a reset before accept: keep
                // listening, after a pause so a lasting error does not spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let m = &service.inner.metrics;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            m.connections
                .get_or_create(&[("result", "over_limit")])
                .inc();
            debug!(%peer, "over the connection limit: closed");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection {
            service: service.clone(),
            app: app.clone(),
            acceptor: acceptor.clone(),
            ca: Arc::clone(&ca),
            builder: Arc::clone(&builder),
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            let _slot = slot;
            conn.run(tcp, peer).await;
        });
    }
    info!("shutting down: no new connections; finishing requests in flight");
    service.set_shutting_down();
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    info!("shut down");
    Ok(())
}

struct Connection<B> {
    service: IngestService<B>,
    app: Router,
    acceptor: TlsAcceptor,
    ca: Arc<EnrollmentCa>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
}

impl<B: AsyncBlobStore> Connection<B> {
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: std::net::SocketAddr) {
        let m = &self.service.inner.metrics;
        m.connections_open.inc();
        let _open = Open(self.service.clone());
        let limits = self.service.limits();
        let tls =
            match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    m.connections
                        .get_or_create(&[("result", "handshake_failed")])
                        .inc();
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    m.connections
                        .get_or_create(&[("result", "handshake_timeout")])
                        .inc();
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        // rustls has checked the chain against the CA; the core checks it
        // again, on the service's clock, and reads workspace and agent.
        let auth = match ClientAuth::authenticate(&self.ca, &chain, self.service.now()) {
            Ok(a) => a,
            Err(e) => {
                m.connections
                    .get_or_create(&[("result", "auth_failed")])
                    .inc();
                debug!(%peer, error = %e, "client certificate refused");
                return;
            }
        };
        m.connections.get_or_create(&[("result", "accepted")]).inc();
        debug!(%peer, tenant = %auth.principal().tenant(), "connected");
        let close = auth.close_signal();
        let certs = PeerCertificates(Arc::new(chain));
        let app = self.app.clone();
        let activity = Activity::new();
        let busy = activity.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(auth.clone());
            req.extensions_mut().insert(certs.clone());
            let app = app.clone();
            let busy = busy.clone();
            async move {
                let _request = busy.request();
                app.oneshot(req).await
            }
        });
        let io = Watched {
            io: tls,
            activity: activity.clone(),
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut closing = false;
        let idle = limits.idle_timeout;
        let mut tick = tokio::time::interval((idle / 4).max(std::time::Duration::from_millis(10)));
        loop {
            // Biased, the close signals first: a request that asks for the
            // connection to be closed (an expired certificate) notifies
            // before its response is written, so the shutdown (HTTP/2
            // `GOAWAY`) starts before the client can send another request
            // on it. Unbiased, the connection could be polled first and
            // accept that request.
            tokio::select! {
                biased;
                () = close.notified(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = self.stop.wait_for(|s| *s), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick(), if !closing => {
                    if activity.idle_for() >= idle {
                        debug!(%peer, "idle connection shut down");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "connection ended");
                    }
                    break;
                }
            }
        }
    }
}

/// Counts an open connection down when it ends.
struct Open<B>(IngestService<B>);

impl<B> Drop for Open<B> {
    fn drop(&mut self) {
        self.0.inner.metrics.connections_open.dec();
    }
}

/// When a connection last read a byte, and how many requests it has in
/// flight.
#[derive(Clone)]
struct Activity(Arc<ActivityInner>);

struct ActivityInner {
    start: std::time::Instant,
    /// Milliseconds since `start` of the last read.
    last_read: std::sync::atomic::AtomicU64,
    requests: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(ActivityInner {
            start: std::time::Instant::now(),
            last_read: std::sync::atomic::AtomicU64::new(0),
            requests: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    fn read(&self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0
            .last_read
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last read, zero while a request is in flight.
    fn idle_for(&self) -> std::time::Duration {
        if self.0.requests.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return std::time::Duration::ZERO;
        }
        let last = self.0.last_read.load(std::sync::atomic::Ordering::Relaxed);
        self.0
            .start
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }

    fn request(&self) -> RequestGuard {
        self.0
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RequestGuard(self.clone())
    }
}

/// A request in flight on a connection; counted down when dropped.
struct RequestGuard(Activity);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.read();
        self.0
            .0
            .requests
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A stream that records when it last read a byte.
struct Watched<T> {
    io: T,
    activity: Activity,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
