//! The service-side ingest pipeline, sans I/O: authenticated bytes in,
//! per-frame outcomes and storage operations out.
//!
//! For each request the host has authenticated (a [`Principal`]), [`Ingest`]
//! decodes the frames with the streaming decoder and its limits, requires
//! every frame's tenant to be the principal's, parses and validates the
//! records (through their borrowed view, [`RecordRef`](crate::RecordRef),
//! without keeping them), answers a batch it has already accepted with
//! `Delivered` without storing it again, applies a per-tenant rate limit, seals the frame under
//! the tenant's primary key and asks the host to store it
//! ([`StoreOp::Put`]). Each frame gets the [`Outcome`] an agent's
//! [`Outbox`](crate::Outbox) understands.
//!
//! Tenant storage goes through [`BlobStore`], whose every method takes the
//! tenant: an object of one tenant cannot be named through another's.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};

use crate::auth::Principal;
use crate::delivery::Outcome;
use crate::frame::{BatchId, Decoded, Frame, FrameDecoder, FrameError, FrameLimits, PayloadReader};
use crate::keys::{Entropy, KeyError, KeyRing, open, seal};
use crate::record::{DataType, RecordError, RecordLimits};
use crate::tenant::TenantId;

/// The name of a stored object within its tenant: the batch id. Never
/// built from caller-supplied text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(BatchId);

impl ObjectKey {
    /// The object that holds batch `batch_id`.
    #[must_use]
    pub fn for_batch(batch_id: BatchId) -> Self {
        ObjectKey(batch_id)
    }

    /// The batch it holds.
    #[must_use]
    pub fn batch_id(&self) -> BatchId {
        self.0
    }
}

/// What the host must do to tenant storage. Poll with
/// [`Ingest::poll_store`] after each request and apply each before
/// answering the agent, so `Delivered` is only said of stored data. An
/// operation that fails goes back to [`Ingest::handle_store_failed`], and
/// its batch is answered [`Outcome::Transient`].
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub enum StoreOp {
    /// Store the sealed frame as `object` of `tenant`.
    Put {
        /// The tenant.
        tenant: TenantId,
        /// The object's key.
        object: ObjectKey,
        /// The sealed frame.
        frame: Frame,
    },
}

/// Why ingest refused a frame, a request, or a setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The bytes are not valid frames (or a limit was passed).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame names another tenant than the authenticated principal.
    #[error("frame of tenant {found} sent by a principal of tenant {principal}")]
    TenantMismatch {
        /// The principal's tenant.
        principal: TenantId,
        /// The frame's.
        found: TenantId,
    },
    /// A record failed validation.
    #[error("record {index}: {error}")]
    Record {
        /// Its position in the frame.
        index: usize,
        /// Why.
        error: RecordError,
    },
    /// Sealing or opening failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key ring passed is not the principal's tenant's.
    #[error("key ring of tenant {ring} passed for a principal of tenant {principal}")]
    WrongRing {
        /// The principal's tenant.
        principal: TenantId,
        /// The ring's.
        ring: TenantId,
    },
    /// A setting that makes no sense.
    #[error("ingest config: {0}")]
    Config(&'static str),
    /// A stored object is not a frame of the tenant it is stored under.
    #[error("stored object {object:?} of tenant {tenant} is not that tenant's frame")]
    StoredTenantMismatch {
        /// The tenant asked for.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
    },
    /// The blob store failed.
    #[error("blob store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// A per-tenant rate limit: a token bucket of uncompressed payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    bytes_per_second: u64,
    burst: u64,
}

impl RateLimit {
    /// `bytes_per_second` sustained, up to `burst` at once.
    ///
    /// # Errors
    ///
    /// [`IngestError::Config`] unless both are positive and the burst is
    /// at least one second's worth.
    pub fn new(bytes_per_second: u64, burst: u64) -> Result<Self, IngestError> {
        if bytes_per_second == 0 || burst < bytes_per_second {
            return Err(IngestError::Config(
                "a rate limit needs a positive rate and a burst of at least one second",
            ));
        }
        Ok(RateLimit {
            bytes_per_second,
            burst,
        })
    }

    /// The sustained rate, bytes per second.
    #[must_use]
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// The burst, bytes.
    #[must_use]
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// One node's share of this limit when `nodes` service nodes share a
    /// tenant's traffic evenly: rate and burst divided by `nodes` (at
    /// least one byte a second, and a burst of at least one second). With
    /// the traffic spread evenly the nodes together admit about this
    /// limit; a node that receives more than its share throttles early
    /// (`opsdata-io`'s `docs/SCALE.md`, "Rate limits").
    ///
    /// ```
    /// use opsdata::RateLimit;
    /// let share = RateLimit::new(3_000_000, 6_000_000)?.per_node(3)?;
    /// assert_eq!((share.bytes_per_second(), share.burst()), (1_000_000, 2_000_000));
    /// # Ok::<(), opsdata::IngestError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`IngestError::Config`] for 0 nodes.
    pub fn per_node(self, nodes: u32) -> Result<Self, IngestError> {
        if nodes == 0 {
            return Err(IngestError::Config("a rate limit shared by zero nodes"));
        }
        let n = u64::from(nodes);
        let bytes_per_second = (self.bytes_per_second / n).max(1);
        Ok(RateLimit {
            bytes_per_second,
            burst: (self.burst / n).max(bytes_per_second),
        })
    }
}

/// Ingest's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    limits: FrameLimits,
    record_limits: RecordLimits,
    dedupe_window: usize,
    rate: Option<RateLimit>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            limits: FrameLimits::default(),
            record_limits: RecordLimits::default(),
            dedupe_window: 100_000,
            rate: None,
        }
    }
}

impl IngestConfig {
    /// The frame limits the decoder applies.
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The record limits records are validated against.
    #[must_use]
    pub fn with_record_limits(mut self, limits: RecordLimits) -> Self {
        self.record_limits = limits;
        self
    }

    /// How many accepted batch ids are remembered per tenant to drop
    /// duplicates (default 100 000; memory is about 50 bytes each).
    ///
    /// # Errors
    ///
    /// [`IngestError::Config`] for 0.
    pub fn with_dedupe_window(mut self, batches: usize) -> Result<Self, IngestError> {
        if batches == 0 {
            return Err(IngestError::Config("dedupe_window must be positive"));
        }
        self.dedupe_window = batches;
        Ok(self)
    }

    /// A per-tenant rate limit (default none).
    #[must_use]
    pub fn with_rate_limit(mut self, rate: Option<RateLimit>) -> Self {
        self.rate = rate;
        self
    }

    /// The frame limits the decoder applies.
    #[must_use]
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// The record limits records are validated against.
    #[must_use]
    pub fn record_limits(&self) -> &RecordLimits {
        &self.record_limits
    }

    /// How many accepted batch ids are remembered per tenant.
    #[must_use]
    pub fn dedupe_window(&self) -> usize {
        self.dedupe_window
    }

    /// The per-tenant rate limit, if any.
    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate
    }
}

/// How one frame of a request went.
#[derive(Debug)]
#[non_exhaustive]
pub struct FrameAnswer {
    /// The batch, if the frame's header could be read.
    pub batch_id: BatchId,
    /// What to tell the agent.
    pub outcome: Outcome,
    /// Why it was not stored, for the service's logs (`None` when stored,
    /// for a duplicate, and when throttled: the outcome says it all).
    pub error: Option<IngestError>,
    /// Whether it was a duplicate of a batch already accepted.
    pub duplicate: bool,
}

/// How a request went: an answer per whole frame, and the error that
/// stopped reading, if any (the rest of the request was not read).
#[derive(Debug, Default)]
#[must_use]
pub struct IngestReport {
    /// One answer per frame read, in order.
    pub answers: Vec<FrameAnswer>,
    /// Why reading stopped before the end, if it did.
    pub stopped: Option<IngestError>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<BatchId>,
    order: VecDeque<BatchId>,
}

/// A principal, as mismatches are counted: the workspace for a signed
/// request, the agent for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Workspace(TenantId),
    Agent(TenantId, uuid::Uuid),
}

impl Who {
    fn of(principal: &Principal) -> Who {
        match principal {
            Principal::Agent(a) => Who::Agent(a.tenant, a.agent_id),
            Principal::Workspace { tenant, .. } => Who::Workspace(*tenant),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// What ingest has counted, per tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantStats {
    /// Frames accepted for storage. A frame whose store failed
    /// ([`Ingest::handle_store_failed`]) is also counted in
    /// `store_failures`, and again here when its retry is accepted.
    pub frames: u64,
    /// Records accepted for storage (as `frames`).
    pub records: u64,
    /// Uncompressed payload bytes stored.
    pub content_bytes: u64,
    /// Body bytes received (after the codec, before sealing).
    pub body_bytes: u64,
    /// Duplicates answered without storing.
    pub duplicates: u64,
    /// Frames rejected (bad data).
    pub rejected: u64,
    /// Frames throttled.
    pub throttled: u64,
    /// Frames naming another tenant, sent by this tenant's principals (for
    /// each principal, see [`Ingest::tenant_mismatches`]).
    pub tenant_mismatches: u64,
    /// Records stored per data type.
    pub records_by_type: BTreeMap<DataType, u64>,
    /// Store operations the host reported failed
    /// ([`Ingest::handle_store_failed`]).
    pub store_failures: u64,
}

/// The service-side ingest pipeline. See the module docs.
///
/// **Drain contract**: after each [`handle_request`](Ingest::handle_request),
/// apply every [`poll_store`](Ingest::poll_store) operation, handing each
/// one that fails to [`handle_store_failed`](Ingest::handle_store_failed),
/// then send the report's outcomes to the agent, [`Outcome::Transient`]
/// for a batch whose store failed.
#[derive(Debug)]
pub struct Ingest {
    config: IngestConfig,
    seen: HashMap<TenantId, Seen>,
    buckets: HashMap<TenantId, Bucket>,
    stats: HashMap<TenantId, TenantStats>,
    mismatches: HashMap<Who, u64>,
    store: VecDeque<StoreOp>,
    reader: PayloadReader,
    latest: Option<DateTime<Utc>>,
}

impl Ingest {
    /// A pipeline with `config`.
    #[must_use]
    pub fn new(config: IngestConfig) -> Self {
        Ingest {
            reader: PayloadReader::new(config.limits),
            config,
            seen: HashMap::new(),
            buckets: HashMap::new(),
            stats: HashMap::new(),
            mismatches: HashMap::new(),
            store: VecDeque::new(),
            latest: None,
        }
    }

    /// What has been counted for `tenant`.
    #[must_use]
    pub fn stats(&self, tenant: TenantId) -> TenantStats {
        self.stats.get(&tenant).cloned().unwrap_or_default()
    }

    /// How many frames naming another tenant `principal` has sent: an agent
    /// is counted by its agent id, a signed request by its workspace. A
    /// principal with any is misconfigured or hostile.
    #[must_use]
    pub fn tenant_mismatches(&self, principal: &Principal) -> u64 {
        self.mismatches
            .get(&Who::of(principal))
            .copied()
            .unwrap_or(0)
    }

    fn count_mismatch(&mut self, who: Who, tenant: TenantId) {
        self.stats.entry(tenant).or_default().tenant_mismatches += 1;
        *self.mismatches.entry(who).or_default() += 1;
    }

    /// The next storage operation.
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.store.pop_front()
    }

    /// Tells the pipeline that `op` could not be applied: its batch is
    /// forgotten by the de-duplication, so the agent's retry is stored
    /// instead of being answered as a duplicate of data that was never
    /// stored. Answer the batch [`Outcome::Transient`].
    pub fn handle_store_failed(&mut self, op: &StoreOp) {
        match op {
            StoreOp::Put { tenant, object, .. } => {
                let batch_id = object.batch_id();
                if let Some(seen) = self.seen.get_mut(tenant)
                    && seen.ids.remove(&batch_id)
                {
                    seen.order.retain(|id| *id != batch_id);
                }
                self.stats.entry(*tenant).or_default().store_failures += 1;
            }
        }
    }

    /// Ingests the bytes of one request from `principal`, sealing under
    /// `ring` (the principal's tenant's key ring) with `entropy`.
    ///
    /// Frames are read in order. A frame that cannot be read, or that
    /// names another tenant, stops the reading (the decoder does not
    /// resynchronise); frames before it keep their answers.
    ///
    /// # Errors
    ///
    /// [`IngestError::WrongRing`] if `ring` is not the principal's tenant's;
    /// nothing is read then.
    pub fn handle_request(
        &mut self,
        now: DateTime<Utc>,
        principal: &Principal,
        ring: &mut KeyRing,
        entropy: &mut (impl Entropy + ?Sized),
        bytes: &[u8],
    ) -> Result<IngestReport, IngestError> {
        let tenant = principal.tenant();
        if ring.tenant() != tenant {
            return Err(IngestError::WrongRing {
                principal: tenant,
                ring: ring.tenant(),
            });
        }
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        let mut report = IngestReport::default();
        let mut decoder = FrameDecoder::new(self.config.limits).expect_tenant(tenant);
        decoder.push(bytes);
        loop {
            match decoder.poll_frame() {
                Ok(Decoded::Frame(frame)) => {
                    let answer = self.frame(now, principal, frame, ring, entropy);
                    report.answers.push(answer);
                }
                Ok(Decoded::NeedMore(_)) => {
                    if let Err(e) = decoder.finish() {
                        report.stopped = Some(e.into());
                    }
                    break;
                }
                Err(FrameError::TenantMismatch { found, .. }) => {
                    self.count_mismatch(Who::of(principal), tenant);
                    report.stopped = Some(IngestError::TenantMismatch {
                        principal: tenant,
                        found,
                    });
                    break;
                }
                Err(e) => {
                    report.stopped = Some(e.into());
                    break;
                }
            }
        }
        Ok(report)
    }

    fn frame(
        &mut self,
        now: DateTime<Utc>,
        principal: &Principal,
        frame: Frame,
        ring: &mut KeyRing,
        entropy: &mut (impl Entropy + ?Sized),
    ) -> FrameAnswer {
        let tenant = principal.tenant();
        let batch_id = frame.batch_id();
        let answer = |outcome, error| FrameAnswer {
            batch_id,
            outcome,
            error,
            duplicate: false,
        };
        // Checked again here, not trusted from the decoder's expectation.
        if frame.tenant() != tenant {
            self.count_mismatch(Who::of(principal), tenant);
            return answer(
                Outcome::Rejected,
                Some(IngestError::TenantMismatch {
                    principal: tenant,
                    found: frame.tenant(),
                }),
            );
        }
        if self
            .seen
            .get(&tenant)
            .is_some_and(|s| s.ids.contains(&batch_id))
        {
            self.stats.entry(tenant).or_default().duplicates += 1;
            return FrameAnswer {
                batch_id,
                outcome: Outcome::Delivered,
                error: None,
                duplicate: true,
            };
        }
        if frame.header().sealed {
            self.stats.entry(tenant).or_default().rejected += 1;
            return answer(
                Outcome::Rejected,
                Some(IngestError::Key(KeyError::AlreadySealed)),
            );
        }
        // Records are validated through their borrowed view, as they are
        // parsed, without being kept. Every line is still parsed after an
        // invalid record, so that a frame that does not parse is refused
        // for that (as when all records were parsed before any was
        // validated), and an invalid record is reported only for a frame
        // that parses.
        let record_limits = &self.config.record_limits;
        let mut invalid = None;
        let parsed = self.reader.visit_records(&frame, |index, record| {
            if invalid.is_none()
                && let Err(error) = record.validate(record_limits)
            {
                invalid = Some(IngestError::Record { index, error });
            }
        });
        let count = match (parsed, invalid) {
            (Ok(count), None) => count,
            (Err(e), _) => {
                self.stats.entry(tenant).or_default().rejected += 1;
                return answer(Outcome::Rejected, Some(e.into()));
            }
            (Ok(_), Some(e)) => {
                self.stats.entry(tenant).or_default().rejected += 1;
                return answer(Outcome::Rejected, Some(e));
            }
        };
        let content = u64::from(frame.header().content_len);
        if let Some(wait) = self.take_tokens(now, tenant, content) {
            self.stats.entry(tenant).or_default().throttled += 1;
            return answer(Outcome::Throttled { retry_after: wait }, None);
        }
        let sealed = match seal(&frame, ring, entropy, now) {
            Ok(s) => s,
            // The workspace was purged and its keys shredded: its data can
            // never be stored, so the agent must not retry it forever.
            Err(e @ KeyError::Shredded { .. }) => {
                self.stats.entry(tenant).or_default().rejected += 1;
                return answer(Outcome::Rejected, Some(e.into()));
            }
            // The service cannot seal (no key yet, a key used up): the data
            // is fine, so the agent should try again later.
            Err(e) => return answer(Outcome::Transient, Some(e.into())),
        };
        self.remember(tenant, batch_id);
        let s = self.stats.entry(tenant).or_default();
        s.frames += 1;
        s.records += u64::from(count);
        s.content_bytes += content;
        s.body_bytes += u64::from(frame.header().body_len);
        *s.records_by_type.entry(frame.data_type()).or_default() += u64::from(count);
        self.store.push_back(StoreOp::Put {
            tenant,
            object: ObjectKey(batch_id),
            frame: sealed,
        });
        answer(Outcome::Delivered, None)
    }

    fn remember(&mut self, tenant: TenantId, batch_id: BatchId) {
        let window = self.config.dedupe_window;
        let seen = self.seen.entry(tenant).or_default();
        if seen.ids.insert(batch_id) {
            seen.order.push_back(batch_id);
        }
        while seen.order.len() > window {
            if let Some(old) = seen.order.pop_front() {
                seen.ids.remove(&old);
            }
        }
    }

    /// Takes `bytes` from the tenant's bucket; returns how long to wait if
    /// there are not enough.
    fn take_tokens(
        &mut self,
        now: DateTime<Utc>,
        tenant: TenantId,
        bytes: u64,
    ) -> Option<Duration> {
        let rate = self.config.rate?;
        let b = self.buckets.entry(tenant).or_insert(Bucket {
            tokens: rate.burst as f64,
            at: now,
        });
        let elapsed = (now - b.at).num_milliseconds().max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate.bytes_per_second as f64).min(rate.burst as f64);
        b.at = now;
        // A frame larger than the burst could never pass: let it through on
        // a full bucket rather than throttle it forever.
        let need = (bytes as f64).min(rate.burst as f64);
        if b.tokens >= need {
            b.tokens -= need;
            None
        } else {
            let secs = (need - b.tokens) / rate.bytes_per_second as f64;
            Some(
                Duration::milliseconds((secs * 1000.0).ceil() as i64)
                    .max(Duration::milliseconds(1)),
            )
        }
    }
}

/// Tenant storage. Every method takes the tenant, and objects are named
/// by [`ObjectKey`] within it: no call can name another tenant's object.
pub trait BlobStore {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores `frame` as `object` of `tenant`.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn put(
        &mut self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<(), Self::Error>;

    /// The bytes of `object` of `tenant`, if stored.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, Self::Error>;

    /// The objects of `tenant`.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, Self::Error>;

    /// Removes `object` of `tenant`; removing what is not there is fine.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn delete(&mut self, tenant: TenantId, object: ObjectKey) -> Result<(), Self::Error>;
}

/// A [`BlobStore`] in memory, namespaced by tenant.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobStore {
    tenants: BTreeMap<TenantId, BTreeMap<ObjectKey, Bytes>>,
}

impl MemoryBlobStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// A [`MemoryBlobStore`] refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of tenant {found} put under tenant {tenant}")]
pub struct WrongTenant {
    /// The tenant named.
    pub tenant: TenantId,
    /// The frame's.
    pub found: TenantId,
}

impl BlobStore for MemoryBlobStore {
    type Error = WrongTenant;

    fn put(
        &mut self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<(), WrongTenant> {
        // The store checks the tag too, at its own boundary.
        if frame.tenant() != tenant {
            return Err(WrongTenant {
                tenant,
                found: frame.tenant(),
            });
        }
        self.tenants
            .entry(tenant)
            .or_default()
            .insert(object, frame.as_bytes().clone());
        Ok(())
    }

    fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, WrongTenant> {
        Ok(self
            .tenants
            .get(&tenant)
            .and_then(|t| t.get(&object))
            .cloned())
    }

    fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, WrongTenant> {
        Ok(self
            .tenants
            .get(&tenant)
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default())
    }

    fn delete(&mut self, tenant: TenantId, object: ObjectKey) -> Result<(), WrongTenant> {
        if let Some(t) = self.tenants.get_mut(&tenant) {
            t.remove(&object);
        }
        Ok(())
    }
}

/// Applies a [`StoreOp`] to `store`.
///
/// # Errors
///
/// [`IngestError::Store`] with the store's error.
pub fn apply_store_op<S: BlobStore + ?Sized>(
    store: &mut S,
    op: &StoreOp,
) -> Result<(), IngestError> {
    match op {
        StoreOp::Put {
            tenant,
            object,
            frame,
        } => store
            .put(*tenant, *object, frame)
            .map_err(|e| IngestError::Store(Box::new(e))),
    }
}

/// Reads `object` of `tenant` back and opens it with the tenant's `ring`:
/// the unsealed frame, ready for [`PayloadReader`].
///
/// # Errors
///
/// [`IngestError::Store`], [`IngestError::Frame`] if the stored bytes are
/// not a frame, [`IngestError::StoredTenantMismatch`] if they are another
/// tenant's, [`IngestError::Key`] if it does not open (another tenant's
/// ring included).
pub fn read_back<S: BlobStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    object: ObjectKey,
    ring: &KeyRing,
    limits: &FrameLimits,
) -> Result<Option<Frame>, IngestError> {
    let Some(bytes) = store
        .get(tenant, object)
        .map_err(|e| IngestError::Store(Box::new(e)))?
    else {
        return Ok(None);
    };
    let frame = Frame::decode(bytes, limits)?;
    if frame.tenant() != tenant || frame.batch_id() != object.batch_id() {
        return Err(IngestError::StoredTenantMismatch { tenant, object });
    }
    Ok(Some(open(&frame, ring)?))
}
