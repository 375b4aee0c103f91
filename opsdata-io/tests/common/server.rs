//! A minimal HTTPS ingest server for the agent's tests (HTTPS wire v2):
//! mutual TLS (client certificates against an enrollment CA, then the
//! core's `EnrollmentCa::authenticate`), HTTP/2 and HTTP/1.1 by ALPN,
//! `POST /v1/frames` into the core's `Ingest` with a `MemoryBlobStore`,
//! one 26-byte ack per frame read. Status codes as the contract says:
//! 200 read, 400 not frames, 413 over the body limit; a test can force
//! any status (429 with `Retry-After`, 503...), hold requests on a gate
//! (to observe them in flight at once), or have some batches rejected.
//!
//! Not the service: the service is the `svc` branch's; this is the
//! smallest peer that speaks the same contract, so the agent's tests do
//! not depend on it.

#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opsdata::{
    BatchId, DeterministicEntropy, EnrollmentCa, FIXED_HEADER_LEN, FrameHeader, FrameLimits,
    Ingest, IngestConfig, KeyRing, MemoryBlobStore, Outcome, Principal, RotationPolicy, TenantId,
    apply_store_op,
};
use opsdata_io::{ACKS_CONTENT_TYPE, Ack, FRAMES_PATH};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

#[allow(unused_imports)]
pub use super::pki_support::{Pki, identity};

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Ingest the frames and answer their acks.
    Ingest,
    /// Answer this status (with this `Retry-After`) without reading.
    Status(u16, Option<String>),
}

/// The store and key rings behind the ingest.
pub struct Store {
    pub ingest: Ingest,
    pub rings: HashMap<TenantId, KeyRing>,
    pub entropy: DeterministicEntropy,
    pub blobs: MemoryBlobStore,
}

/// The server's shared state; tests read and steer it.
pub struct State {
    pub store: Mutex<Store>,
    ca: EnrollmentCa,
    pub mode: Mutex<Mode>,
    /// When set, each request waits for a permit before it is answered.
    pub gate: Mutex<Option<Arc<Semaphore>>>,
    /// Batches answered `Rejected` without being ingested.
    pub reject: Box<dyn Fn(BatchId) -> bool + Send + Sync>,
    /// The ingest's clock.
    pub now: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// The longest body read; longer is 413.
    pub max_body: usize,
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
    pub requests: AtomicU64,
    pub connections: AtomicU64,
    /// Each connection's client certificate (leaf), in order.
    pub client_leaves: Mutex<Vec<CertificateDer<'static>>>,
    /// Each request's HTTP version.
    pub versions: Mutex<Vec<Version>>,
}

impl State {
    pub fn new(pki: &Pki, limits: FrameLimits) -> Arc<State> {
        Self::rejecting(pki, limits, |_| false)
    }

    /// A state whose server answers `Rejected` to the batches `reject`
    /// names, without ingesting them.
    pub fn rejecting(
        pki: &Pki,
        limits: FrameLimits,
        reject: impl Fn(BatchId) -> bool + Send + Sync + 'static,
    ) -> Arc<State> {
        Arc::new(State {
            store: Mutex::new(Store {
                ingest: Ingest::new(IngestConfig::default().with_limits(limits)),
                rings: HashMap::new(),
                entropy: DeterministicEntropy::from_u64(2),
                blobs: MemoryBlobStore::new(),
            }),
            ca: EnrollmentCa::new(std::slice::from_ref(&pki.enrollment.der)).unwrap(),
            mode: Mutex::new(Mode::Ingest),
            gate: Mutex::new(None),
            reject: Box::new(reject),
            now: Box::new(|| DateTime::<Utc>::from(std::time::SystemTime::now())),
            max_body: opsdata::FIXED_HEADER_LEN
                + 4096
                + usize::try_from(limits.max_body()).unwrap(),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            client_leaves: Mutex::new(Vec::new()),
            versions: Mutex::new(Vec::new()),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The tenant's ring, made on first use.
    fn ring(
        rings: &mut HashMap<TenantId, KeyRing>,
        tenant: TenantId,
        now: DateTime<Utc>,
    ) -> &mut KeyRing {
        rings.entry(tenant).or_insert_with(|| {
            let mut e = DeterministicEntropy::from_u64(1);
            let mut r = KeyRing::new(tenant, &RotationPolicy::default());
            let k = r.generate(&mut e, now).unwrap();
            r.promote(k, now).unwrap();
            r
        })
    }
}

/// A running server; stopped (its connections cut) on `stop` or drop.
pub struct IngestServer {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.enrollment.der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![pki.service.der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.service.key_der.clone())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

impl IngestServer {
    /// Serves on `addr` (port 0: any) on the current runtime.
    pub async fn start(pki: &Pki, state: Arc<State>, addr: SocketAddr) -> IngestServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pki));
        let (stop, mut stopped) = watch::channel(false);
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let st = Arc::clone(&st);
                        conns.spawn(async move { connection(acceptor, tcp, st).await });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Cut every connection: as a process that stopped.
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        IngestServer {
            addr,
            state,
            stop,
            task: Some(task),
        }
    }

    /// Stops accepting and cuts every connection.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for IngestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    st: Arc<State>,
) {
    let _ = tcp.set_nodelay(true);
    let Ok(Ok(tls)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
    else {
        return;
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let Ok(principal) = st.ca.authenticate(&chain, (st.now)()) else {
        return;
    };
    st.connections.fetch_add(1, Ordering::SeqCst);
    st.client_leaves.lock().unwrap().push(chain[0].clone());
    let principal = Arc::new(principal);
    let service = hyper::service::service_fn(move |req| {
        let st = Arc::clone(&st);
        let principal = Arc::clone(&principal);
        async move { Ok::<_, std::convert::Infallible>(handle(req, &st, &principal).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ACKS_CONTENT_TYPE)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    st: &State,
    principal: &Principal,
) -> Response<Full<Bytes>> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    st.versions.lock().unwrap().push(req.version());
    let active = st.active.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_active.fetch_max(active, Ordering::SeqCst);
    let response = respond(req, st, principal).await;
    st.active.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn respond(
    req: Request<Incoming>,
    st: &State,
    principal: &Principal,
) -> Response<Full<Bytes>> {
    let gate = st.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.acquire().await.unwrap().forget();
    }
    if req.method() != hyper::Method::POST || req.uri().path() != FRAMES_PATH {
        return answer(StatusCode::NOT_FOUND, Vec::new());
    }
    let mode = st.mode.lock().unwrap().clone();
    if let Mode::Status(code, retry_after) = mode {
        let mut r = answer(StatusCode::from_u16(code).unwrap(), Vec::new());
        if let Some(v) = retry_after {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, v.parse().unwrap());
        }
        return r;
    }
    let body = match Limited::new(req.into_body(), st.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, Vec::new());
        }
        Err(_) => return answer(StatusCode::BAD_REQUEST, Vec::new()),
    };
    // A batch the test has the service refuse (one frame a request).
    if body.len() >= FIXED_HEADER_LEN {
        let head: &[u8; FIXED_HEADER_LEN] = body[..FIXED_HEADER_LEN].try_into().unwrap();
        if let Ok(h) = FrameHeader::parse(head)
            && (st.reject)(h.batch_id)
        {
            let ack = Ack {
                batch_id: Some(h.batch_id),
                outcome: Outcome::Rejected,
            };
            return answer(StatusCode::OK, ack.encode().to_vec());
        }
    }
    let mut s = st.store.lock().unwrap();
    let s = &mut *s;
    let now = (st.now)();
    let ring = State::ring(&mut s.rings, principal.tenant(), now);
    let report = s
        .ingest
        .handle_request(now, principal, ring, &mut s.entropy, &body)
        .unwrap();
    let mut acks = Vec::new();
    for a in &report.answers {
        acks.extend_from_slice(
            &Ack {
                batch_id: Some(a.batch_id),
                outcome: a.outcome,
            }
            .encode(),
        );
    }
    while let Some(op) = s.ingest.poll_store() {
        if apply_store_op(&mut s.blobs, &op).is_err() {
            s.ingest.handle_store_failed(&op);
        }
    }
    let status = if report.stopped.is_some() {
        // WIRE.md: after the acks of the frames read, one rejected ack for
        // the frame at the bad bytes (its batch id if its header passes).
        let mut at = 0usize;
        for _ in &report.answers {
            let head: Option<&[u8; FIXED_HEADER_LEN]> = body
                .get(at..at + FIXED_HEADER_LEN)
                .and_then(|h| h.try_into().ok());
            match head.map(FrameHeader::parse) {
                Some(Ok(h)) => at += h.frame_len(),
                _ => break,
            }
        }
        let bad = body
            .get(at..at + FIXED_HEADER_LEN)
            .and_then(|h| <&[u8; FIXED_HEADER_LEN]>::try_from(h).ok())
            .and_then(|h| FrameHeader::parse(h).ok())
            .map(|h| h.batch_id);
        acks.extend_from_slice(
            &Ack {
                batch_id: bad,
                outcome: Outcome::Rejected,
            }
            .encode(),
        );
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    answer(status, acks)
}
