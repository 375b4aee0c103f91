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

use chrono::{DateTime, Utc};
use opsdata::{
    IngestConfig, KeyRing, KeyStore, RotationPolicy, SystemEntropy, TenantId, TenantStats,
    WrappingKey,
};
use tokio::sync::Semaphore;

use crate::blobs::AsyncBlobStore;
use crate::identity::TlsError;

mod config;
mod http;
mod ingest;
mod metrics;
mod serve;
mod tenants;

pub use config::ServiceLimits;
pub use http::{ClientAuth, PeerCertificates};
pub use serve::{ServeConfig, ServeError, serve, serve_app};

use metrics::Metrics;
use tenants::{EntropySource, Erased, KeyVault, Tenants, lock};

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
    /// frame; usage is reserved in blocks and the ring saved once per
    /// block (and when provisioned or rotated). A frame whose ring cannot
    /// be loaded or saved is answered transient.
    #[must_use]
    pub fn key_store<S>(mut self, store: S, wrapping: WrappingKey) -> Self
    where
        S: KeyStore + Send + 'static,
    {
        self.vault = Some(KeyVault {
            store: std::sync::Mutex::new(Box::new(Erased(store))),
            wrapping,
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
        Ok(IngestService {
            inner: Arc::new(Inner {
                tenants: Tenants::new(self.config.clone(), self.entropy),
                config: self.config,
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
    /// rings are loaded from it instead; one added here is saved there at
    /// its first reservation.
    pub fn add_ring(&self, ring: KeyRing) {
        let state = self.inner.tenants.get(ring.tenant());
        lock(&state).ring = Some(ring);
    }

    /// What ingest counted for `tenant`.
    #[must_use]
    pub fn stats(&self, tenant: TenantId) -> TenantStats {
        lock(&self.inner.tenants.get(tenant)).ingest.stats(tenant)
    }

    /// The primary key's usage and reserved count for `tenant`, if it has
    /// a ring with a primary.
    #[must_use]
    pub fn key_usage(&self, tenant: TenantId) -> Option<(u64, u64)> {
        let state = self.inner.tenants.get(tenant);
        let st = lock(&state);
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
}

fn system_now() -> DateTime<Utc> {
    // The I/O layer reads the clock; the core never does.
    DateTime::<Utc>::from(std::time::SystemTime::now())
}
