//! Shared by the HTTPS service tests: test PKI, a fake clock, a small
//! hyper client over tokio-rustls, stores that fail or wait.
#![allow(dead_code, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opsdata::{
    BatchId, CasError, DataType, Frame, FrameEncoder, KeyMaterial, KeyStore, MemoryKeyStore,
    ObjectKey, Performance, Record, RingVersion, RotationPolicy, Tagged, TenantBatch, TenantId,
    VersionedRing, WrappingKey,
};
use opsdata_io::{
    ACK_LEN, Ack, AsyncBlobStore, BlobError, Clock, IngestService, MemoryBlobs, PutOutcome,
    ServiceLimits,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio_rustls::TlsConnector;
use uuid::Uuid;

#[path = "../pki_support/mod.rs"]
mod pki_support;
#[allow(unused_imports)]
pub use pki_support::{Pki, identity, pki};

pub const WS_A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
pub const WS_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

pub fn tenant(s: &str) -> TenantId {
    s.parse().unwrap()
}

/// The service's clock, moved by the test.
#[derive(Clone)]
pub struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub fn new(t: DateTime<Utc>) -> Self {
        FakeClock(Arc::new(AtomicI64::new(t.timestamp_millis())))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let c = self.0.clone();
        Arc::new(move || DateTime::from_timestamp_millis(c.load(Ordering::SeqCst)).unwrap())
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

pub fn next_id() -> BatchId {
    BatchId::from_random_bytes(*Uuid::new_v4().as_bytes())
}

/// A frame of `records` Performance records for `t`.
pub fn frame(t: TenantId, records: usize) -> Frame {
    let recs = (0..records).map(|i| {
        Tagged::new(
            t,
            Record::Performance(Performance {
                object_name: "Processor".into(),
                counter_name: "% Processor Time".into(),
                perfmon_instance_name: format!("{i}"),
                performance_data_id: Uuid::new_v4(),
                performance_source_internal_id: 7,
                sample_value: 12.5,
                time_sampled: t0(),
                time_added: t0(),
            }),
        )
    });
    let batch = TenantBatch::from_records(t, DataType::Performance, recs).unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, next_id(), t0())
        .unwrap()
}

pub fn body(frames: &[Frame]) -> Bytes {
    let mut v = Vec::new();
    for f in frames {
        v.extend_from_slice(f.as_bytes());
    }
    Bytes::from(v)
}

pub fn acks(body: &[u8]) -> Vec<Ack> {
    assert_eq!(body.len() % ACK_LEN, 0, "{} bytes of acks", body.len());
    body.chunks(ACK_LEN)
        .map(|c| Ack::decode(c.try_into().unwrap()).unwrap())
        .collect()
}

/// A key store shared between services (a restart keeps it), counting
/// writes; when the flag is set, the next `get_versioned` answers nothing (a node
/// that read before another node's ring was written); each barrier in the
/// list holds one `get_versioned` until as many reads as it counts have
/// arrived (nodes that all read before any writes).
#[derive(Clone, Default)]
pub struct SharedKeys(
    pub Arc<std::sync::Mutex<MemoryKeyStore>>,
    pub Arc<AtomicUsize>,
    pub Arc<AtomicBool>,
    pub Arc<std::sync::Mutex<Vec<Arc<std::sync::Barrier>>>>,
);

impl KeyStore for SharedKeys {
    type Error = std::convert::Infallible;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), Self::Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.lock().unwrap().put(tenant, sealed)
    }

    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, Self::Error> {
        if self.2.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        self.0.lock().unwrap().get(tenant)
    }

    fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> Result<Option<VersionedRing>, CasError<Self::Error>> {
        if self.2.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        let read = self.0.lock().unwrap().get_versioned(tenant);
        let barrier = self.3.lock().unwrap().pop();
        if let Some(b) = barrier {
            b.wait();
        }
        read
    }

    fn put_if(
        &mut self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> Result<RingVersion, CasError<Self::Error>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.lock().unwrap().put_if(tenant, sealed, expected)
    }
}

pub fn wrapping_key() -> WrappingKey {
    WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]))
}

/// A store in memory that can be made to fail, or to hold every put until
/// released. Its objects may be shared with other `TestStore`s (services
/// sharing one store, as nodes do).
#[derive(Default)]
pub struct TestStore {
    pub inner: Arc<MemoryBlobs>,
    pub failing: AtomicBool,
    pub panicking: AtomicBool,
    pub gate: Option<Gate>,
}

pub struct Gate {
    pub open: AtomicBool,
    pub opened: Notify,
    pub waiting: AtomicUsize,
    pub arrived: Notify,
}

impl Gate {
    pub fn new() -> Self {
        Gate {
            open: AtomicBool::new(false),
            opened: Notify::new(),
            waiting: AtomicUsize::new(0),
            arrived: Notify::new(),
        }
    }
    pub fn release(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

impl AsyncBlobStore for TestStore {
    type Error = BlobError;

    async fn put(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<PutOutcome, BlobError> {
        if let Some(g) = &self.gate {
            let opened = g.opened.notified();
            g.waiting.fetch_add(1, Ordering::SeqCst);
            g.arrived.notify_waiters();
            if !g.open.load(Ordering::SeqCst) {
                opened.await;
            }
        }
        if self.panicking.load(Ordering::SeqCst) {
            panic!("the test store panics");
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(BlobError::Io {
                op: opsdata_io::BlobOp::Put,
                source: std::io::Error::other("the test store is failing"),
            });
        }
        self.inner.put(tenant, object, frame).await
    }
    async fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        self.inner.get(tenant, object).await
    }
    async fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        self.inner.list(tenant).await
    }
    async fn delete(&self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        self.inner.delete(tenant, object).await
    }
}

pub fn limits() -> ServiceLimits {
    ServiceLimits::default()
}

pub fn build(
    store: TestStore,
    clock: &FakeClock,
    limits: ServiceLimits,
    keys: SharedKeys,
) -> IngestService<TestStore> {
    build_over(store, clock, limits, keys)
}

/// A service over any blob store.
pub fn build_over<B: AsyncBlobStore>(
    store: B,
    clock: &FakeClock,
    limits: ServiceLimits,
    keys: SharedKeys,
) -> IngestService<B> {
    IngestService::builder(store)
        .limits(limits)
        .clock(clock.clock())
        .key_store(keys, wrapping_key())
        .provisioning(RotationPolicy::default())
        .build()
        .unwrap()
}

/// A running service: its address, and what stops it.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<Result<(), opsdata_io::ServeError>>,
}

impl Running {
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap().unwrap();
    }
}

pub async fn start<B: AsyncBlobStore>(svc: &IngestService<B>, pki: &Pki) -> Running {
    start_app(svc, pki, svc.router()).await
}

pub async fn start_app<B: AsyncBlobStore>(
    svc: &IngestService<B>,
    pki: &Pki,
    app: axum::Router,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(opsdata_io::serve_app(
        listener,
        svc.clone(),
        app,
        pki.serve_config(),
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        stop: Some(tx),
        done,
    }
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Client> {
        let h2 = config.alpn_protocols.first().map(Vec::as_slice) == Some(b"h2");
        let io = TokioIo::new(tls(addr, config).await?);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Client::H2(send))
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Ok(Client::H1(send))
        }
    }

    pub async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        let resp = match self {
            Client::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Client::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Client::H1(s) => s.is_closed(),
            Client::H2(s) => s.is_closed(),
        }
    }

    pub async fn post(&mut self, body: Bytes) -> Result<Answer, hyper::Error> {
        let req = hyper::Request::post(opsdata_io::FRAMES_PATH)
            .header("host", "localhost")
            .header("content-type", opsdata_io::FRAMES_CONTENT_TYPE)
            .body(Full::new(body))
            .unwrap();
        self.send(req).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(req).await
    }
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

pub fn cert_of(issued: &pki::Issued) -> CertificateDer<'static> {
    issued.der.clone()
}
