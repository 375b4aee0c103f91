//! The ingest service over HTTPS (`docs/WIRE.md`), as a component: an
//! [`IngestService`] built from an [`IngestConfig`], an
//! [`AsyncBlobStore`], a key store and a clock gives an
//! [`axum::Router`] ([`IngestService::router`]) a host mounts in its own
//! server, and [`serve`] runs it over rustls with mutual TLS.
//!
//! - Concurrency: each tenant's ingest state and key ring sit behind a lock
//!   of their own (a sharded map of tenants); the CPU work of a request
//!   (decoding, validating, sealing) runs on tokio's blocking pool; blob
//!   writes run concurrently and no lock is held across an await.
//! - Durability: a frame is answered delivered only once its blob store
//!   `put` has returned (durable, by the [`AsyncBlobStore`] contract).
//!   The work of a request runs in a task of its own, so a client that
//!   disconnects cannot leave a frame half-stored or marked in flight.
//! - Keys: a tenant's key-ring usage is reserved in blocks
//!   (`ServiceLimits::with_key_reservation_block`), so the ring is written
//!   once per block, not per seal.
//! - Observability: `tracing` spans and events (the host installs a
//!   subscriber), `GET /metrics` (Prometheus text), `GET /healthz`,
//!   `GET /readyz`. No record content, secret or key in either.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ringstore::AsyncKeyStore;
use chrono::{DateTime, Utc};
use opsdata::{
    Frame, FrameError, IngestConfig, KeyError, KeyRing, KeyStore, ObjectKey, RotationPolicy,
    SystemEntropy, TenantId, TenantStats, WrappingKey, open, peek,
};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::blobs::AsyncBlobStore;
use crate::identity::TlsError;

mod config;
mod http;
mod ingest;
mod metrics;
mod planner;
mod rings;
mod serve;
mod tenants;

pub use config::ServiceLimits;
pub use http::{ClientAuth, PeerCertificates};
pub use planner::{PlannerError, RetentionRun};
pub use serve::{ServeConfig, ServeError, serve, serve_app};

use metrics::Metrics;
use rings::{KeyVault, SharedRingStore, SyncRingStore};
use tenants::{EntropySource, RingNeed, TenantSlot, Tenants, lock};

pub use crate::clock::Clock;

/// The ingest service: see the module docs. Cheap to clone (an `Arc`).
pub struct IngestService<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for IngestService<B> {
    fn clone(&self) -> Self {
        IngestService {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<B> {
    config: IngestConfig,
    limits: ServiceLimits,
    store: B,
    vault: Option<KeyVault>,
    provision: Option<RotationPolicy>,
    clock: Clock,
    tenants: Tenants,
    metrics: Metrics,
    ready: AtomicBool,
    permits: Arc<Semaphore>,
    ca: Option<opsdata::EnrollmentCa>,
}

impl<B> fmt::Debug for IngestService<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestService")
            .field("limits", &self.inner.limits)
            .field("vault", &self.inner.vault)
            .field("tenants", &self.inner.tenants)
            .field("metrics", &self.inner.metrics)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IngestService`]: [`IngestService::builder`].
pub struct ServiceBuilder<B> {
    store: B,
    config: IngestConfig,
    limits: ServiceLimits,
    vault: Option<KeyVault>,
    provision: Option<RotationPolicy>,
    clock: Clock,
    entropy: EntropySource,
    ca: Option<opsdata::EnrollmentCa>,
}

impl<B> fmt::Debug for ServiceBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("limits", &self.limits)
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl<B: AsyncBlobStore> ServiceBuilder<B> {
    /// The ingest configuration (frame and record limits, de-duplication
    /// window, rate limit). Default: [`IngestConfig::default`].
    #[must_use]
    pub fn ingest_config(mut self, config: IngestConfig) -> Self {
        self.config = config;
        self
    }

    /// The limits and timeouts.
    #[must_use]
    pub fn limits(mut self, limits: ServiceLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Keeps the tenants' key rings in `store`, sealed under `wrapping`
    /// (`docs/KEYS.md` of the core). A tenant's ring is loaded on its first
    /// frame and re-read at least once a minute; usage is reserved in
    /// blocks and the ring written once per block (and when provisioned or
    /// rotated), each write conditional on the version read when the store
    /// implements [`KeyStore::put_if`] (then several nodes may share it:
    /// `docs/SCALE.md`), a plain write otherwise (one node only). The
    /// store's calls run on tokio's blocking pool. A frame whose ring
    /// cannot be loaded or saved is answered transient.
    #[must_use]
    pub fn key_store<S>(mut self, store: S, wrapping: WrappingKey) -> Self
    where
        S: KeyStore + Send + 'static,
    {
        self.vault = Some(KeyVault {
            store: Box::new(SyncRingStore(Arc::new(std::sync::Mutex::new(store)))),
            wrapping,
            shared: false,
        });
        self
    }

    /// Keeps the tenants' key rings in `store`, an async key store that
    /// several service nodes share (such as [`ObjectStoreKeyStore`] over
    /// Azure Blob Storage, S3 or GCS), sealed under `wrapping`: every
    /// change is a compare-and-swap, so nodes never make two keys of one
    /// version, never hand out one seal twice, and the stored usage is
    /// never below the seals made (`docs/SCALE.md`). The store must write
    /// conditionally (create if absent, update if unchanged); one that
    /// cannot answers every ring write with an error.
    ///
    /// [`ObjectStoreKeyStore`]: crate::ObjectStoreKeyStore
    #[must_use]
    pub fn shared_key_store<S>(mut self, store: S, wrapping: WrappingKey) -> Self
    where
        S: AsyncKeyStore,
    {
        self.vault = Some(KeyVault {
            store: Box::new(SharedRingStore(Arc::new(store))),
            wrapping,
            shared: true,
        });
        self
    }

    /// Gives a tenant without a key ring a new one (first key generated and
    /// promoted under `policy`) on its first frame, and rotates its keys
    /// forward under `policy` (checked at most once a minute per tenant).
    /// Needs a key store ([`key_store`](ServiceBuilder::key_store)).
    #[must_use]
    pub fn provisioning(mut self, policy: RotationPolicy) -> Self {
        self.provision = Some(policy);
        self
    }

    /// The clock (default: the system's).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where each tenant's seals draw randomness (default: the system's
    /// generator, [`SystemEntropy`]). Called once per tenant.
    #[must_use]
    pub fn entropy(
        mut self,
        source: impl Fn() -> Box<dyn opsdata::Entropy + Send> + Send + Sync + 'static,
    ) -> Self {
        self.entropy = Arc::new(source);
        self
    }

    /// The enrollment CA a request's [`PeerCertificates`] are checked
    /// against when the router is mounted in a server that inserts only
    /// the peer's certificates (not a [`ClientAuth`]). [`serve`] does not
    /// need it (it authenticates each connection itself).
    ///
    /// # Errors
    ///
    /// [`TlsError::Auth`] if a CA certificate is unusable.
    pub fn enrollment_ca(
        mut self,
        ca: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<Self, TlsError> {
        self.ca = Some(opsdata::EnrollmentCa::new(ca)?);
        Ok(self)
    }

    /// The service.
    ///
    /// # Errors
    ///
    /// [`TlsError::NoKeyStore`] for provisioning without a key store.
    pub fn build(self) -> Result<IngestService<B>, TlsError> {
        if self.provision.is_some() && self.vault.is_none() {
            return Err(TlsError::NoKeyStore);
        }
        let permits = Arc::new(Semaphore::new(self.limits.max_concurrent_requests));
        // This node's share of the per-tenant rate limit.
        let mut config = self.config;
        if let Some(rate) = config.rate_limit() {
            let share = rate
                .per_node(self.limits.nodes)
                .map_err(|_| TlsError::Zero { setting: "nodes" })?;
            config = config.with_rate_limit(Some(share));
        }
        Ok(IngestService {
            inner: Arc::new(Inner {
                tenants: Tenants::new(config.clone(), self.entropy),
                config,
                limits: self.limits,
                store: self.store,
                vault: self.vault,
                provision: self.provision,
                clock: self.clock,
                metrics: Metrics::new(),
                ready: AtomicBool::new(true),
                permits,
                ca: self.ca,
            }),
        })
    }
}

impl<B: AsyncBlobStore> IngestService<B> {
    /// A builder storing into `store`; the rest defaults (no key store:
    /// add rings with [`add_ring`](IngestService::add_ring), or set
    /// [`key_store`](ServiceBuilder::key_store)).
    pub fn builder(store: B) -> ServiceBuilder<B> {
        ServiceBuilder {
            store,
            config: IngestConfig::default(),
            limits: ServiceLimits::default(),
            vault: None,
            provision: None,
            clock: Arc::new(system_now),
            entropy: Arc::new(|| Box::new(SystemEntropy::new())),
            ca: None,
        }
    }

    /// The blob store.
    pub fn store(&self) -> &B {
        &self.inner.store
    }

    /// The limits.
    #[must_use]
    pub fn limits(&self) -> ServiceLimits {
        self.inner.limits
    }

    /// Adds (or replaces) a tenant's key ring in memory. With a key store,
    /// the stored ring, if there is one, replaces it at the first frame;
    /// if there is none, this one is stored then (created if absent).
    pub fn add_ring(&self, ring: KeyRing) {
        let slot = self.inner.tenants.get(ring.tenant());
        lock(&slot.state).ring = Some(ring);
    }

    /// What ingest counted for `tenant`.
    #[must_use]
    pub fn stats(&self, tenant: TenantId) -> TenantStats {
        lock(&self.inner.tenants.get(tenant).state)
            .ingest
            .stats(tenant)
    }

    /// The primary key's usage and reserved count for `tenant` as this
    /// node sees them, if it has a ring with a primary. With a key store
    /// several nodes share, both count this node's block only: the usage
    /// is the next seal's place in it, the reserved count the block's end
    /// (the whole store's reserved count is in the stored ring).
    #[must_use]
    pub fn key_usage(&self, tenant: TenantId) -> Option<(u64, u64)> {
        let slot = self.inner.tenants.get(tenant);
        let st = lock(&slot.state);
        let ring = st.ring.as_ref()?;
        let p = ring.primary()?;
        Some((p.usage, ring.reserved(p.id).unwrap_or(p.usage)))
    }

    /// The Prometheus text exposition of the metrics (what `GET /metrics`
    /// answers).
    #[must_use]
    pub fn metrics_text(&self) -> String {
        self.inner.metrics.encode()
    }

    /// Marks the service not ready (`GET /readyz` answers 503) and makes
    /// new frame requests answer 503: [`serve`] calls it when graceful
    /// shutdown starts.
    pub fn set_shutting_down(&self) {
        self.inner.ready.store(false, Ordering::SeqCst);
    }

    /// Whether it is ready (not shutting down).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    /// Makes the tenant's ring ready ([`rings::ring_ready`]): to seal
    /// (`to_seal`: loaded, fresh, seals reserved) or to open (loaded; with
    /// `reread`, read again whatever its age). `None` when ready (or
    /// without a key store), else why not, for the frames' answers.
    async fn ring_ready(
        &self,
        slot: &TenantSlot,
        tenant: TenantId,
        to_seal: bool,
        reread: bool,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let vault = self.inner.vault.as_ref()?;
        let need = lock(&slot.state).ring_needs_work(now, reread, to_seal);
        // One ring change per tenant on this node at a time; whoever waits
        // finds the work done (the need is checked again inside). Only the
        // periodic re-read due: whoever finds it under way goes on sealing
        // from its block rather than wait.
        let _io = match need {
            RingNeed::Nothing => return None,
            RingNeed::Stale => slot.ring_io.try_lock().ok()?,
            RingNeed::Urgent => slot.ring_io.lock().await,
        };
        let m = &self.inner.metrics;
        let result = rings::ring_ready(
            slot,
            tenant,
            vault,
            self.inner.provision.as_ref(),
            self.inner.limits.key_reservation_block,
            to_seal,
            reread,
            now,
        )
        .await;
        let work = match &result {
            Ok(w) => *w,
            Err((w, _)) => *w,
        };
        m.key_ring_reads.inc_by(work.reads);
        m.key_reservations.inc_by(work.writes);
        m.key_ring_conflicts.inc_by(work.conflicts);
        match result {
            Ok(_) => None,
            Err((_, e)) => {
                warn!(%tenant, error = %e, "key ring not ready");
                Some(e.to_string())
            }
        }
    }

    /// Reads `object` of `tenant` back from the blob store, opened: the
    /// frame as the agent sent it. A frame sealed under a key this node's
    /// copy of the ring does not know (a key another node generated since
    /// this node last read the ring) makes it read the ring again first.
    /// The frame's tenant is checked against `tenant`.
    ///
    /// # Errors
    ///
    /// [`ReadError::Store`] if the blob store fails; [`ReadError::Frame`]
    /// for stored bytes that are not a frame of `tenant`;
    /// [`ReadError::KeyRing`] if the tenant's ring cannot be read;
    /// [`ReadError::Key`] if the frame does not open with it.
    pub async fn read_stored(
        &self,
        tenant: TenantId,
        object: ObjectKey,
    ) -> Result<Option<Frame>, ReadError> {
        let Some(bytes) = self
            .inner
            .store
            .get(tenant, object)
            .await
            .map_err(|e| ReadError::Store(Box::new(e)))?
        else {
            return Ok(None);
        };
        let limits = self.inner.config.limits();
        let frame = Frame::decode(bytes, &limits).map_err(ReadError::Frame)?;
        if frame.tenant() != tenant {
            return Err(ReadError::Frame(FrameError::TenantMismatch {
                expected: tenant,
                found: frame.tenant(),
            }));
        }
        if !frame.header().sealed {
            return Ok(Some(frame));
        }
        let kek = peek(frame.as_bytes()).map_err(ReadError::Key)?.kek_id;
        let slot = self.inner.tenants.get(tenant);
        let known = |slot: &TenantSlot| {
            let st = lock(&slot.state);
            st.ring
                .as_ref()
                .is_some_and(|r| kek.is_none_or(|id| r.get(id).is_some()))
        };
        if !known(&slot) {
            let now = self.now();
            if let Some(e) = self.ring_ready(&slot, tenant, false, true, now).await {
                return Err(ReadError::KeyRing(e));
            }
        }
        let st = lock(&slot.state);
        let ring = st
            .ring
            .as_ref()
            .ok_or_else(|| ReadError::KeyRing("no key ring for the tenant".to_owned()))?;
        open(&frame, ring).map(Some).map_err(ReadError::Key)
    }
}

/// Why [`IngestService::read_stored`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The blob store failed.
    #[error("blob store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The stored bytes are not a frame of the tenant.
    #[error("stored frame: {0}")]
    Frame(#[source] FrameError),
    /// The tenant's key ring could not be read.
    #[error("key ring: {0}")]
    KeyRing(String),
    /// The frame does not open with the tenant's ring.
    #[error("opening the stored frame: {0}")]
    Key(#[source] KeyError),
}

fn system_now() -> DateTime<Utc> {
    // The I/O layer reads the clock; the core never does.
    DateTime::<Utc>::from(std::time::SystemTime::now())
}
