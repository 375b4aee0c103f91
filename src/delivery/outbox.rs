use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::{
    DeliveryError, DeliveryEvent, DeliveryPolicy, DropReason, Outcome, Phase, PhaseCounts,
    StorageOp, TenantStatus, Transmit,
};
use crate::frame::{BatchId, Frame};
use crate::record::DataType;
use crate::tenant::TenantId;

mod recover;
pub use recover::RecoveryReport;

/// A key ordering batches for eviction: drop rank first, then age.
type EvictKey = (u8, u64, BatchId);
/// A key ordering batches for probing: most important type first, then age.
type ProbeKey = (u8, u64, BatchId);

/// Batches and bytes not in flight, by drop rank: what eviction could free.
#[derive(Debug, Default, Clone, Copy)]
struct Evictable {
    batches: [u64; 6],
    bytes: [u64; 6],
}

impl Evictable {
    fn add(&mut self, rank: u8, bytes: u64) {
        let r = usize::from(rank);
        self.batches[r] += 1;
        self.bytes[r] += bytes;
    }
    fn sub(&mut self, rank: u8, bytes: u64) {
        let r = usize::from(rank);
        self.batches[r] -= 1;
        self.bytes[r] -= bytes;
    }
    /// Batches and bytes of ranks up to and including `rank`.
    fn up_to(&self, rank: u8) -> (u64, u64) {
        let r = usize::from(rank) + 1;
        (self.batches[..r].iter().sum(), self.bytes[..r].iter().sum())
    }
}

#[derive(Debug)]
struct Held {
    frame: Frame,
    tenant: TenantId,
    data_type: DataType,
    records: u32,
    bytes: u64,
    seq: u64,
    rank: u8,
    in_flight: bool,
    attempts: u32,
    expires: Option<DateTime<Utc>>,
}

impl Held {
    fn evict_key(&self, id: BatchId) -> EvictKey {
        (self.rank, self.seq, id)
    }
    fn probe_key(&self, id: BatchId) -> ProbeKey {
        (u8::MAX - self.rank, self.seq, id)
    }
}

#[derive(Debug)]
struct Tenant {
    status: TenantStatus,
    /// Held, not in flight, oldest first.
    waiting: BTreeSet<(u64, BatchId)>,
    /// The same batches, most important type first.
    by_importance: BTreeSet<ProbeKey>,
    /// The same batches, in drop order.
    evictable: BTreeSet<EvictKey>,
    /// Their totals by drop rank.
    evictable_totals: Evictable,
    in_flight: u32,
    bytes: u64,
    batches: usize,
    /// The offline schedule: no probe before this. Cleared when the tenant
    /// comes back online.
    retry_at: Option<DateTime<Utc>>,
    /// The service's `Retry-After`: no send before this, online or not. Kept
    /// until it passes, whatever else happens.
    throttled_until: Option<DateTime<Utc>>,
    /// The batch sent as the offline probe.
    probe: Option<BatchId>,
    /// Failed probes since going offline.
    failures: u32,
    /// Failed probes since being queued.
    queued_failures: u32,
    /// Whether the Queued event has been given for this outage.
    queued: bool,
}

impl Tenant {
    /// No send of this tenant before this: the later of its schedule and
    /// its throttle.
    fn not_before(&self) -> Option<DateTime<Utc>> {
        self.retry_at.max(self.throttled_until)
    }

    /// Whether the tenant has room to send, ignoring time: online below
    /// `max_in_flight`, or offline with no probe out.
    fn has_room(&self, max_in_flight: u32) -> bool {
        match self.status {
            TenantStatus::Online => self.in_flight < max_in_flight,
            TenantStatus::Offline { .. } => self.in_flight == 0,
        }
    }

    fn new() -> Self {
        Tenant {
            status: TenantStatus::Online,
            waiting: BTreeSet::new(),
            by_importance: BTreeSet::new(),
            evictable: BTreeSet::new(),
            evictable_totals: Evictable::default(),
            in_flight: 0,
            bytes: 0,
            batches: 0,
            retry_at: None,
            throttled_until: None,
            probe: None,
            failures: 0,
            queued_failures: 0,
            queued: false,
        }
    }
}

/// A data type's slot in per-type arrays.
fn type_index(data_type: DataType) -> usize {
    usize::from(data_type.as_u8() - 1)
}

/// `t + d`, saturating at the end of time: a `now` the caller passes must not
/// make the outbox panic.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// SplitMix64: jitter from the caller's seed, reproducible in tests.
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The sans-I/O retry / cache / queue / drop-priority state machine.
///
/// **Inputs**: [`push`](Outbox::push) a frame,
/// [`handle_outcome`](Outbox::handle_outcome) of a transmit,
/// [`handle_timeout`](Outbox::handle_timeout) when the timer fires.
///
/// **Drain contract**: after every input, call, in this order,
/// [`poll_storage`](Outbox::poll_storage) until `None`, applying each
/// operation to the spool (so a frame is durable before it is sent and
/// removed only after it is delivered or dropped); then
/// [`poll_transmit`](Outbox::poll_transmit) until `None`, sending each;
/// then [`poll_event`](Outbox::poll_event) until `None`; then arm the timer
/// for [`poll_timeout`](Outbox::poll_timeout) (`None`: nothing is
/// scheduled). An early or repeated `handle_timeout` does nothing; a `now`
/// earlier than one already seen is taken as the latest seen.
///
/// Events may also be polled before the storage operations: recording each
/// [`DeliveryEvent::Dropped`] durably before applying the
/// [`StorageOp::Remove`] of its batch is how a host makes drop reports
/// crash-safe (after a crash in between, the frame is still in the spool
/// and its drop on record; the host removes it, or reports it again).
///
/// Every frame pushed ends in exactly one [`DeliveryEvent::Delivered`] or
/// [`DeliveryEvent::Dropped`], or is still held.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// # let frame = FrameEncoder::new()
/// #     .encode_frame(&TenantBatch::new(tenant, DataType::Alert), BatchId::from_random_bytes([1; 16]), now)?;
/// let mut outbox = Outbox::new(DeliveryPolicy::default(), 42);
/// outbox.push(now, frame)?;
/// while let Some(op) = outbox.poll_storage() { /* persist to the spool */ }
/// let tx = outbox.poll_transmit(now).expect("a frame to send");
/// outbox.handle_outcome(now, tx.batch_id, Outcome::Delivered)?;
/// assert!(matches!(outbox.poll_event(), Some(DeliveryEvent::Delivered { .. })));
/// assert_eq!(outbox.held_batches(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Outbox {
    policy: DeliveryPolicy,
    jitter: Jitter,
    latest: Option<DateTime<Utc>>,
    seq: u64,
    batches: BTreeMap<BatchId, Held>,
    tenants: BTreeMap<TenantId, Tenant>,
    evictable: BTreeSet<EvictKey>,
    /// Their totals by drop rank.
    evictable_totals: Evictable,
    expiries: BTreeSet<(DateTime<Utc>, BatchId)>,
    held_bytes: u64,
    /// Batches and bytes held by data type (index `as_u8() - 1`).
    by_type: [(usize, u64); 6],
    /// The tenant served last, for round-robin sending.
    cursor: Option<TenantId>,
    events: VecDeque<DeliveryEvent>,
    storage: VecDeque<StorageOp>,
}

impl Outbox {
    /// An empty outbox; `seed` is the caller's randomness for jitter.
    #[must_use]
    pub fn new(policy: DeliveryPolicy, seed: u64) -> Self {
        Outbox {
            policy,
            jitter: Jitter(seed),
            latest: None,
            seq: 0,
            batches: BTreeMap::new(),
            tenants: BTreeMap::new(),
            evictable: BTreeSet::new(),
            evictable_totals: Evictable::default(),
            expiries: BTreeSet::new(),
            held_bytes: 0,
            by_type: [(0, 0); 6],
            cursor: None,
            events: VecDeque::new(),
            storage: VecDeque::new(),
        }
    }

    /// `now`, or the latest time seen if that is later, recorded: call it
    /// only once a call can no longer fail (a refused call leaves the clock
    /// alone, ARCHITECTURE.md).
    fn observe(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        now
    }

    /// Takes a frame to deliver. A frame already past its data type's
    /// `expire_after` (counted from its header's `created` time) is dropped
    /// at once with [`DropReason::Expired`]. If holding it would pass a limit, batches
    /// are dropped in the policy's drop order, oldest first within a type,
    /// until it fits; the new frame is itself a candidate under the same
    /// rule (a new Performance frame is dropped rather than an Alert). If
    /// dropping every batch the rule puts before it would still not make
    /// room (a frame larger than a limit, or the room held by batches in
    /// flight or of more important types), the new frame alone is dropped
    /// and nothing held is evicted: that is checked first, in O(1). Each
    /// drop is a [`DeliveryEvent::Dropped`] with [`DropReason::QueueFull`].
    ///
    /// # Errors
    ///
    /// [`DeliveryError::DuplicateBatch`], handing the frame back, if a batch
    /// with its id is already held. Nothing changes, `now` included (it is
    /// not recorded as seen).
    pub fn push(&mut self, now: DateTime<Utc>, frame: Frame) -> Result<(), DeliveryError> {
        let batch_id = frame.batch_id();
        if self.batches.contains_key(&batch_id) {
            return Err(DeliveryError::DuplicateBatch {
                batch_id,
                frame: Box::new(frame),
            });
        }
        let now = self.observe(now);
        self.insert(now, frame, true);
        Ok(())
    }

    fn over_limit(&self, tenant: TenantId, bytes: u64) -> bool {
        let tenant_bytes = self.tenants.get(&tenant).map_or(0, |t| t.bytes);
        self.held_bytes + bytes > self.policy.limit_bytes()
            || self
                .policy
                .limit_batches()
                .is_some_and(|n| self.batches.len() as u64 + 1 > n)
            || self
                .policy
                .tenant_limit_bytes()
                .is_some_and(|n| tenant_bytes + bytes > n)
    }

    /// Whether evicting every batch the drop rule puts before a new frame
    /// of `rank` (every evictable batch of a rank up to its own: those of
    /// its rank are older) would make room for it under every limit. With a
    /// per-tenant limit only the tenant's own batches count, as only they
    /// may be evicted. O(1): the totals by rank are kept as batches enter
    /// and leave the evictable indexes.
    fn could_fit(&self, tenant: TenantId, rank: u8, bytes: u64) -> bool {
        let t = self.tenants.get(&tenant);
        let tenant_bytes = t.map_or(0, |t| t.bytes);
        let (free_batches, free_bytes) = if self.policy.tenant_limit_bytes().is_some() {
            t.map_or((0, 0), |t| t.evictable_totals.up_to(rank))
        } else {
            self.evictable_totals.up_to(rank)
        };
        let fits_bytes = self.held_bytes - free_bytes + bytes <= self.policy.limit_bytes();
        let fits_batches = self
            .policy
            .limit_batches()
            .is_none_or(|n| self.batches.len() as u64 - free_batches < n);
        let fits_tenant = self.policy.tenant_limit_bytes().is_none_or(|n| {
            // Only the tenant's own batches are freed toward its share.
            let own = t.map_or(0, |t| t.evictable_totals.up_to(rank).1);
            tenant_bytes - own + bytes <= n
        });
        fits_bytes && fits_batches && fits_tenant
    }

    /// Holds a new frame, evicting by the drop rule if need be. `persist`:
    /// a pushed frame, to be persisted once held; otherwise a recovered
    /// one, already in the spool, which must be removed from it if refused.
    fn insert(&mut self, now: DateTime<Utc>, frame: Frame, persist: bool) {
        let batch_id = frame.batch_id();
        let tenant = frame.tenant();
        let data_type = frame.data_type();
        let bytes = frame.len() as u64;
        let rank = self.policy.drop_rank(data_type);
        self.seq += 1;
        let seq = self.seq;
        let new_key: EvictKey = (rank, seq, batch_id);
        // Expiry counts from the frame's creation (its batch's close time),
        // so neither a late push nor a restart gives it more time.
        let expires = self
            .policy
            .expire_after(data_type)
            .map(|d| later(frame.header().created, d));
        if expires.is_some_and(|at| at <= now) {
            self.refuse(&frame, DropReason::Expired, persist);
            return;
        }
        if self.over_limit(tenant, bytes) && !self.could_fit(tenant, rank, bytes) {
            // Evicting everything ranked before it would not make room: the
            // new frame alone goes, and nothing held is lost for it.
            self.refuse(&frame, DropReason::QueueFull, persist);
            return;
        }
        while self.over_limit(tenant, bytes) {
            // With a per-tenant limit, a tenant's frame only evicts its own.
            let victim = if self.policy.tenant_limit_bytes().is_some() {
                self.tenants
                    .get(&tenant)
                    .and_then(|t| t.evictable.first().copied())
            } else {
                self.evictable.first().copied()
            };
            match victim {
                Some(v) if v < new_key => self.drop_batch(v.2, DropReason::QueueFull),
                // Not reached: could_fit said the batches before the new
                // frame make room. Refusing it is still the safe answer.
                _ => {
                    self.refuse(&frame, DropReason::QueueFull, persist);
                    return;
                }
            }
        }
        let held = Held {
            records: frame.header().record_count,
            frame: frame.clone(),
            tenant,
            data_type,
            bytes,
            seq,
            rank,
            in_flight: false,
            attempts: 0,
            expires,
        };
        if let Some(at) = expires {
            self.expiries.insert((at, batch_id));
        }
        let t = self.tenants.entry(tenant).or_insert_with(Tenant::new);
        t.bytes += bytes;
        t.batches += 1;
        self.held_bytes += bytes;
        let ty = &mut self.by_type[type_index(data_type)];
        ty.0 += 1;
        ty.1 += bytes;
        self.batches.insert(batch_id, held);
        self.mark_waiting(batch_id);
        if persist {
            self.storage
                .push_back(StorageOp::Persist { batch_id, frame });
        }
    }

    /// Drops a frame that is not held: its event, and, if it came from the
    /// spool (`!pushed`), its removal from there.
    fn refuse(&mut self, frame: &Frame, reason: DropReason, pushed: bool) {
        let batch_id = frame.batch_id();
        self.events.push_back(DeliveryEvent::Dropped {
            tenant: frame.tenant(),
            data_type: frame.data_type(),
            batch_id,
            records: frame.header().record_count,
            bytes: frame.len() as u64,
            reason,
        });
        if !pushed {
            self.storage.push_back(StorageOp::Remove { batch_id });
        }
    }

    /// Puts a held batch into the indexes of batches not in flight.
    fn mark_waiting(&mut self, id: BatchId) {
        let Some(h) = self.batches.get_mut(&id) else {
            return;
        };
        h.in_flight = false;
        let (seq, ek, pk, tenant) = (h.seq, h.evict_key(id), h.probe_key(id), h.tenant);
        let (rank, bytes) = (h.rank, h.bytes);
        if self.evictable.insert(ek) {
            self.evictable_totals.add(rank, bytes);
        }
        if let Some(t) = self.tenants.get_mut(&tenant) {
            t.waiting.insert((seq, id));
            t.by_importance.insert(pk);
            if t.evictable.insert(ek) {
                t.evictable_totals.add(rank, bytes);
            }
        }
    }

    /// Takes a held batch out of the indexes of batches not in flight.
    fn unmark_waiting(&mut self, id: BatchId) {
        let Some(h) = self.batches.get(&id) else {
            return;
        };
        let (seq, ek, pk, tenant) = (h.seq, h.evict_key(id), h.probe_key(id), h.tenant);
        let (rank, bytes) = (h.rank, h.bytes);
        if self.evictable.remove(&ek) {
            self.evictable_totals.sub(rank, bytes);
        }
        if let Some(t) = self.tenants.get_mut(&tenant) {
            t.waiting.remove(&(seq, id));
            t.by_importance.remove(&pk);
            if t.evictable.remove(&ek) {
                t.evictable_totals.sub(rank, bytes);
            }
        }
    }

    /// Removes a batch, with its event and storage operation.
    fn remove(&mut self, id: BatchId) -> Option<Held> {
        self.unmark_waiting(id);
        let h = self.batches.remove(&id)?;
        if let Some(at) = h.expires {
            self.expiries.remove(&(at, id));
        }
        self.held_bytes -= h.bytes;
        let ty = &mut self.by_type[type_index(h.data_type)];
        ty.0 -= 1;
        ty.1 -= h.bytes;
        if let Some(t) = self.tenants.get_mut(&h.tenant) {
            t.bytes -= h.bytes;
            t.batches -= 1;
            if h.in_flight {
                t.in_flight -= 1;
            }
            if t.probe == Some(id) {
                t.probe = None;
            }
        }
        self.storage.push_back(StorageOp::Remove { batch_id: id });
        Some(h)
    }

    fn drop_batch(&mut self, id: BatchId, reason: DropReason) {
        if let Some(h) = self.remove(id) {
            self.events.push_back(DeliveryEvent::Dropped {
                tenant: h.tenant,
                data_type: h.data_type,
                batch_id: id,
                records: h.records,
                bytes: h.bytes,
                reason,
            });
        }
    }

    /// The next frame to send now, if any: tenants take turns; an online
    /// tenant sends its oldest batch while it has fewer than `max_in_flight`
    /// in flight; an offline tenant sends one probe (its oldest batch of the
    /// most important type) when its schedule allows.
    pub fn poll_transmit(&mut self, now: DateTime<Utc>) -> Option<Transmit> {
        self.next_transmit(now, |_| false)
    }

    /// [`poll_transmit`](Outbox::poll_transmit), passing over a tenant
    /// whose next batch is one `skip` names (the [`Agent`](super::Agent)
    /// skips batches it has already sent in the same call).
    pub(crate) fn next_transmit(
        &mut self,
        now: DateTime<Utc>,
        skip: impl Fn(BatchId) -> bool,
    ) -> Option<Transmit> {
        let now = self.observe(now);
        let max = self.policy.max_in_flight();
        // Round robin from the tenant after the last one served. This visits
        // tenants, not batches: O(tenants) at worst, with no allocation.
        use std::ops::Bound::{Excluded, Unbounded};
        let after = match self.cursor {
            Some(c) => self.tenants.range((Excluded(c), Unbounded)),
            None => self.tenants.range(..),
        };
        let upto = self
            .cursor
            .map(|c| self.tenants.range(..=c))
            .into_iter()
            .flatten();
        let (tenant, id) = after.chain(upto).find_map(|(&tenant, t)| {
            if t.not_before().is_some_and(|at| at > now) || !t.has_room(max) {
                return None;
            }
            let pick = match t.status {
                TenantStatus::Online => t.waiting.first().map(|&(_, id)| id),
                TenantStatus::Offline { .. } => t.by_importance.first().map(|&(_, _, id)| id),
            };
            pick.filter(|&id| !skip(id)).map(|id| (tenant, id))
        })?;
        self.unmark_waiting(id);
        let t = self.tenants.get_mut(&tenant).expect("found among its keys");
        t.in_flight += 1;
        if matches!(t.status, TenantStatus::Offline { .. }) {
            t.probe = Some(id);
        }
        let h = self.batches.get_mut(&id).expect("indexed batches are held");
        h.in_flight = true;
        h.attempts += 1;
        self.cursor = Some(tenant);
        Some(Transmit {
            tenant,
            batch_id: id,
            attempt: h.attempts,
            frame: h.frame.clone(),
        })
    }

    /// Reports how a transmit went.
    ///
    /// A `Transient` failure schedules the tenant's next attempt strictly
    /// after `now` (at least `retry_interval` later once queued, jitter
    /// included), except at `DateTime::MAX_UTC`, where times saturate. A
    /// `Throttled` is honoured as asked: with no wait, the batch is due
    /// again at once.
    ///
    /// # Errors
    ///
    /// [`DeliveryError::UnknownBatch`] if the batch is not held,
    /// [`DeliveryError::NotInFlight`] if it is held but was not sent.
    /// Nothing changes, `now` included (it is not recorded as seen).
    pub fn handle_outcome(
        &mut self,
        now: DateTime<Utc>,
        batch_id: BatchId,
        outcome: Outcome,
    ) -> Result<(), DeliveryError> {
        let h = self
            .batches
            .get(&batch_id)
            .ok_or(DeliveryError::UnknownBatch { batch_id })?;
        if !h.in_flight {
            return Err(DeliveryError::NotInFlight { batch_id });
        }
        let tenant = h.tenant;
        // Only now, past the checks: a refused outcome records no time.
        let now = self.observe(now);
        match outcome {
            Outcome::Delivered => {
                if let Some(h) = self.remove(batch_id) {
                    self.events.push_back(DeliveryEvent::Delivered {
                        tenant,
                        data_type: h.data_type,
                        batch_id,
                        records: h.records,
                        bytes: h.bytes,
                    });
                }
                self.set_online(tenant);
            }
            Outcome::Rejected => {
                self.drop_batch(batch_id, DropReason::Rejected);
                // The service answered: it is reachable.
                self.set_online(tenant);
            }
            Outcome::Transient => {
                let was_probe = self.return_to_waiting(batch_id, tenant);
                self.failed(now, tenant, was_probe);
            }
            Outcome::Throttled { retry_after } => {
                self.return_to_waiting(batch_id, tenant);
                let wait = retry_after
                    .max(Duration::zero())
                    .min(self.policy.max_retry_after());
                let t = self.tenants.get_mut(&tenant).expect("held batch's tenant");
                let until = later(now, wait);
                t.throttled_until = t.throttled_until.max(Some(until));
                let at = t.not_before().unwrap_or(until);
                let attempt = t.failures;
                self.events.push_back(DeliveryEvent::RetryScheduled {
                    tenant,
                    at,
                    attempt,
                });
            }
        }
        Ok(())
    }

    /// Puts an in-flight batch back; returns whether it was the probe.
    fn return_to_waiting(&mut self, id: BatchId, tenant: TenantId) -> bool {
        let t = self.tenants.get_mut(&tenant).expect("held batch's tenant");
        t.in_flight -= 1;
        let was_probe = t.probe == Some(id);
        if was_probe {
            t.probe = None;
        }
        self.mark_waiting(id);
        // A batch that expired while in flight goes now.
        if let Some(at) = self.batches.get(&id).and_then(|h| h.expires)
            && self.latest.is_some_and(|now| at <= now)
        {
            self.drop_batch(id, DropReason::Expired);
        }
        was_probe
    }

    fn set_online(&mut self, tenant: TenantId) {
        if let Some(t) = self.tenants.get_mut(&tenant)
            && matches!(t.status, TenantStatus::Offline { .. })
        {
            t.status = TenantStatus::Online;
            // The schedule ends with the outage; a throttle does not: the
            // service asked for a pause, and a delivery of another batch
            // says nothing about it.
            t.retry_at = None;
            t.failures = 0;
            t.queued_failures = 0;
            t.queued = false;
            self.events
                .push_back(DeliveryEvent::TenantOnline { tenant });
        }
    }

    /// A transient failure: the tenant goes offline, or its probe failed.
    fn failed(&mut self, now: DateTime<Utc>, tenant: TenantId, was_probe: bool) {
        let interval = self.policy.retry_interval();
        let window = self.policy.cache_window();
        let t = self.tenants.get_mut(&tenant).expect("held batch's tenant");
        let since = match t.status {
            TenantStatus::Online => {
                t.status = TenantStatus::Offline { since: now };
                t.failures = 0;
                self.events
                    .push_back(DeliveryEvent::TenantOffline { tenant, since: now });
                now
            }
            TenantStatus::Offline { since } if was_probe => since,
            // A batch sent before the outage failing late changes no schedule.
            TenantStatus::Offline { .. } => return,
        };
        t.failures += 1;
        // The next slot on the 8-minute grid from the first failure, while it
        // is within the cache window; then backoff with jitter.
        let k = ((now - since).num_milliseconds() / interval.num_milliseconds().max(1)) + 1;
        let slot = i32::try_from(k)
            .ok()
            .and_then(|k| interval.checked_mul(k))
            .map(|d| later(since, d));
        let at = match slot.filter(|&slot| slot <= later(since, window)) {
            Some(slot) => slot,
            None => {
                // The first queued wait is `retry_interval`, then doubling.
                let exp = t.queued_failures.min(30);
                t.queued_failures = t.queued_failures.saturating_add(1);
                let base = interval
                    .checked_mul(1i32 << exp)
                    .unwrap_or(self.policy.queue_retry_max())
                    .min(self.policy.queue_retry_max());
                let shave = base.num_milliseconds() * i64::from(self.policy.jitter_percent()) / 100;
                let cut = if shave > 0 {
                    (self.jitter.next() % (shave as u64 + 1)) as i64
                } else {
                    0
                };
                // Jitter never takes a queued wait below `retry_interval`:
                // no queued retry comes sooner than one in the cache window
                // would, and none at the very time of the failure.
                let wait = (base - Duration::milliseconds(cut)).max(interval);
                later(now, wait)
            }
        };
        t.retry_at = Some(at);
        let at = t.not_before().unwrap_or(at);
        let attempt = t.failures;
        self.events.push_back(DeliveryEvent::RetryScheduled {
            tenant,
            at,
            attempt,
        });
    }

    /// Processes what is due at `now`: expired batches are dropped, and
    /// tenants past their cache window are queued.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let now = self.observe(now);
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, id));
            let in_flight = self.batches.get(&id).is_some_and(|h| h.in_flight);
            if in_flight {
                // Dropped when it comes back, if not delivered.
                continue;
            }
            self.drop_batch(id, DropReason::Expired);
        }
        let window = self.policy.cache_window();
        for (&tenant, t) in self.tenants.iter_mut() {
            if let TenantStatus::Offline { since } = t.status
                && !t.queued
                && later(since, window) <= now
            {
                t.queued = true;
                self.events.push_back(DeliveryEvent::Queued {
                    tenant,
                    batches: t.batches,
                });
            }
        }
    }

    /// When [`handle_timeout`](Outbox::handle_timeout) or
    /// [`poll_transmit`](Outbox::poll_transmit) next has work: an expiry, a
    /// tenant's next attempt, or the end of a cache window. `None`: nothing
    /// is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        let window = self.policy.cache_window();
        let max = self.policy.max_in_flight();
        let tenants = self.tenants.values().filter_map(|t| {
            // A tenant waiting only for time to pass: it has batches to send
            // and room to send them.
            let send = t
                .not_before()
                .filter(|_| !t.waiting.is_empty() && t.has_room(max));
            let queue = match t.status {
                TenantStatus::Offline { since } if !t.queued => Some(later(since, window)),
                _ => None,
            };
            match (send, queue) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        self.expiries
            .first()
            .map(|&(at, _)| at)
            .into_iter()
            .chain(tenants)
            .min()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DeliveryEvent> {
        self.events.pop_front()
    }

    /// The next operation for the spool, in order.
    pub fn poll_storage(&mut self) -> Option<StorageOp> {
        self.storage.pop_front()
    }

    /// Batches held, in flight included.
    #[must_use]
    pub fn held_batches(&self) -> usize {
        self.batches.len()
    }

    /// Bytes of frames held, in flight included.
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Batches and bytes held for one tenant.
    #[must_use]
    pub fn tenant_held(&self, tenant: TenantId) -> (usize, u64) {
        self.tenants
            .get(&tenant)
            .map_or((0, 0), |t| (t.batches, t.bytes))
    }

    /// A tenant's connectivity (`Online` for a tenant never seen).
    #[must_use]
    pub fn tenant_status(&self, tenant: TenantId) -> TenantStatus {
        self.tenants
            .get(&tenant)
            .map_or(TenantStatus::Online, |t| t.status)
    }

    /// Where a held batch stands.
    #[must_use]
    pub fn phase(&self, batch_id: BatchId) -> Option<Phase> {
        let h = self.batches.get(&batch_id)?;
        let t = &self.tenants[&h.tenant];
        Some(if h.in_flight {
            Phase::InFlight
        } else {
            match t.status {
                TenantStatus::Online => Phase::Pending,
                TenantStatus::Offline { .. } if t.queued => Phase::Queued,
                TenantStatus::Offline { .. } => Phase::Cached,
            }
        })
    }

    /// Batches held of one data type, in flight included. O(1): a counter
    /// kept as batches come and go.
    #[must_use]
    pub fn held_of_type(&self, data_type: DataType) -> usize {
        self.by_type[type_index(data_type)].0
    }

    /// Batches and bytes held of one data type, in flight included. O(1): a
    /// counter kept as batches come and go.
    #[must_use]
    pub fn held_by_type(&self, data_type: DataType) -> (usize, u64) {
        self.by_type[type_index(data_type)]
    }

    /// Batches held in each [`Phase`]: in flight, and the rest by their
    /// tenant's state (online: pending; offline: cached, then queued past
    /// the cache window). The counts add up to
    /// [`held_batches`](Outbox::held_batches). A pass over the tenants, not
    /// the batches.
    #[must_use]
    pub fn held_by_phase(&self) -> PhaseCounts {
        let mut counts = PhaseCounts::default();
        for t in self.tenants.values() {
            let in_flight = t.in_flight as usize;
            counts.in_flight += in_flight;
            let waiting = t.batches - in_flight;
            match t.status {
                TenantStatus::Online => counts.pending += waiting,
                TenantStatus::Offline { .. } if t.queued => counts.queued += waiting,
                TenantStatus::Offline { .. } => counts.cached += waiting,
            }
        }
        counts
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &DeliveryPolicy {
        &self.policy
    }
}
