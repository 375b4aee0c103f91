//! A model-based property test of the delivery state machine [`Outbox`].
//!
//! Random sequences of pushes, sends, outcomes and clock moves (forwards to
//! the timer, forwards by a random amount, and now and then backwards) are
//! applied to an [`Outbox`] and to a plain reference model of the rules it
//! must obey; after every step all storage operations and events are drained
//! and checked against the model:
//!
//! - conservation: every frame pushed ends in exactly one `Delivered` or
//!   `Dropped`, or is still held; nothing disappears without an event;
//! - expiry: counted from the frame's `created` time; a frame pushed past
//!   it is dropped at once (`Expired`), others when it comes;
//! - storage: one `Persist` per held batch, one `Remove` when it leaves;
//! - limits: `held_bytes` / `held_batches` / per-tenant bytes within the
//!   policy, and equal to the model's sums;
//! - drop priority: each `QueueFull` drop is, among the batches not in
//!   flight and the new frame, the oldest of the first type in `drop_order`,
//!   and only while the new frame does not fit; a new frame that would not
//!   fit even with every batch the rule puts before it gone is dropped
//!   alone, evicting nothing;
//! - connectivity: `Transient` takes a tenant offline, `Delivered` /
//!   `Rejected` bring it back; offline, one probe at a time, the oldest of
//!   the most important type; online, oldest first, `max_in_flight` at most;
//! - schedule: probes no earlier than `F + k * retry_interval`, at the next
//!   grid slot within the cache window, then queued waits of
//!   `retry_interval`, doubling, capped at `queue_retry_max` (exactly
//!   without jitter; jitter only shortens them, never below
//!   `retry_interval`); `Queued` once the window has passed;
//! - throttling: no send of a tenant before `now + min(retry_after,
//!   max_retry_after)`, and the timer wakes the host when that time comes;
//! - liveness: when `poll_transmit` runs dry no tenant could still send;
//! - the timer: `poll_timeout` is no later than the next thing due, and not
//!   in the past once everything due has been handled.
//!
//! Each group of rules has its own property test, so that a violation of one
//! rule does not hide the others. Fixed scenarios pin the exact schedule and
//! the drop order; a test whose doc begins "Bug:" is the regression test of
//! a bug this model found.
//! `PROPTEST_CASES` overrides the number of cases.

mod common;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    BatchId, DataType, DeliveryError, DeliveryEvent, DeliveryPolicy, DropReason, Frame,
    FrameEncoder, Outbox, Outcome, Phase, PhaseCounts, StorageOp, Tagged, TenantBatch, TenantId,
    TenantStatus,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

const TENANTS: usize = 3;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tenant_id(i: usize) -> TenantId {
    TenantId::new(Uuid::from_u128(i as u128 + 1)).unwrap()
}

fn tenant_index(t: TenantId) -> Option<usize> {
    (0..TENANTS).find(|&i| tenant_id(i) == t)
}

/// The frame of `records` sample records of `data_type` for tenant
/// `tenant`, with batch id number `n`. Encoding is the slow part of a case
/// in a debug build, so frames are made once and shared.
fn frame(tenant: usize, data_type: DataType, records: usize, n: u32) -> Frame {
    type Cache = Mutex<HashMap<(usize, u8, usize, u32), Frame>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (tenant, data_type.as_u8(), records, n);
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(f) = cache.lock().unwrap().get(&key) {
        return f.clone();
    }
    let t = tenant_id(tenant);
    let batch = TenantBatch::from_records(
        t,
        data_type,
        (0..records).map(|_| Tagged::new(t, common::sample(data_type))),
    )
    .unwrap();
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_le_bytes());
    id[4] = tenant as u8;
    id[5] = data_type.as_u8();
    id[6] = records as u8;
    let f = FrameEncoder::new()
        .encode_frame(&batch, BatchId::from_random_bytes(id), t0())
        .unwrap();
    cache.lock().unwrap().insert(key, f.clone());
    f
}

fn take(
    events: &mut Vec<DeliveryEvent>,
    pred: impl Fn(&DeliveryEvent) -> bool,
) -> Option<DeliveryEvent> {
    let i = events.iter().position(pred)?;
    Some(events.remove(i))
}

// ---------------------------------------------------------------------------
// The rules, grouped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Conservation, storage, held bytes and limits, typed errors, time.
    Accounting,
    /// Which batches a full outbox drops.
    Eviction,
    /// Online / offline, the probe, oldest first, in-flight caps.
    Connectivity,
    /// When an offline tenant's sends may happen: the retry grid, backoff,
    /// Queued.
    Schedule,
    /// `Throttled`: no send of the tenant before the wait is over, and the
    /// timer wakes the host when it is.
    Throttle,
    /// Sends that may happen do happen.
    Liveness,
    /// `poll_timeout`.
    Timer,
}

#[derive(Debug, Clone, Copy)]
struct Checks(&'static [Rule]);

impl Checks {
    fn ensure(self, rule: Rule, ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
        if ok || !self.0.contains(&rule) {
            Ok(())
        } else {
            Err(format!("[{rule:?}] {}", msg()))
        }
    }
}

/// The model and the outbox disagree so much that the model cannot go on.
fn desync(msg: String) -> Result<(), String> {
    Err(format!("[desync] {msg}"))
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone)]
struct Batch {
    id: BatchId,
    tenant: usize,
    data_type: DataType,
    rank: u8,
    bytes: u64,
    records: u32,
    /// Push order.
    seq: u64,
    expires: Option<DateTime<Utc>>,
    frame: Frame,
    in_flight: bool,
    /// Sent while its tenant was offline.
    probe: bool,
    sends: u32,
}

#[derive(Debug, Clone)]
struct Outage {
    /// F, the first failure.
    since: DateTime<Utc>,
    /// Transient outcomes of probes since F.
    probe_failures: u32,
    /// The announced (and checked) time of the next attempt.
    sched_at: DateTime<Utc>,
    /// Whether `Queued` was given.
    queued: bool,
    /// Failures past the cache window: the next queued wait is
    /// `retry_interval * 2^queued_failures`, capped at `queue_retry_max`.
    queued_failures: u32,
}

#[derive(Debug, Clone, Default)]
struct TenantModel {
    outage: Option<Outage>,
    /// No send of the tenant before this (from `Throttled`).
    throttle_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Model {
    policy: DeliveryPolicy,
    /// The host's clock: calls are made at it, or behind it.
    clock: DateTime<Utc>,
    /// The latest time the outbox has seen: the time it acts at.
    now: DateTime<Utc>,
    seen: bool,
    seq: u64,
    /// Held batches, in push order.
    held: Vec<Batch>,
    tenants: [TenantModel; TENANTS],
    pushed: Vec<BatchId>,
    terminal: HashMap<BatchId, u32>,
    persisted: HashMap<BatchId, u32>,
    removed: HashMap<BatchId, u32>,
}

impl Model {
    fn new(policy: DeliveryPolicy) -> Self {
        Model {
            policy,
            clock: t0(),
            now: t0(),
            seen: false,
            seq: 0,
            held: Vec::new(),
            tenants: Default::default(),
            pushed: Vec::new(),
            terminal: HashMap::new(),
            persisted: HashMap::new(),
            removed: HashMap::new(),
        }
    }

    /// A call at `call`: the outbox acts at the latest time it has seen.
    fn observe(&mut self, call: DateTime<Utc>) -> DateTime<Utc> {
        self.now = if self.seen { self.now.max(call) } else { call };
        self.seen = true;
        call
    }

    /// A call `lag` minutes behind the clock.
    fn call(&mut self, lag: i64) -> DateTime<Utc> {
        self.observe(self.clock - Duration::minutes(lag))
    }

    fn rank(&self, data_type: DataType) -> u8 {
        self.policy
            .drop_order()
            .iter()
            .position(|&t| t == data_type)
            .unwrap() as u8
    }

    fn get(&self, id: BatchId) -> Option<&Batch> {
        self.held.iter().find(|b| b.id == id)
    }

    fn get_mut(&mut self, id: BatchId) -> Option<&mut Batch> {
        self.held.iter_mut().find(|b| b.id == id)
    }

    fn take(&mut self, id: BatchId) -> Option<Batch> {
        let i = self.held.iter().position(|b| b.id == id)?;
        Some(self.held.remove(i))
    }

    fn held_bytes(&self) -> u64 {
        self.held.iter().map(|b| b.bytes).sum()
    }

    fn tenant_bytes(&self, t: usize) -> u64 {
        self.held
            .iter()
            .filter(|b| b.tenant == t)
            .map(|b| b.bytes)
            .sum()
    }

    fn tenant_batches(&self, t: usize) -> usize {
        self.held.iter().filter(|b| b.tenant == t).count()
    }

    fn in_flight(&self, t: usize) -> u32 {
        self.held
            .iter()
            .filter(|b| b.tenant == t && b.in_flight)
            .count() as u32
    }

    fn waiting(&self, t: usize) -> impl Iterator<Item = &Batch> {
        self.held
            .iter()
            .filter(move |b| b.tenant == t && !b.in_flight)
    }

    /// Whether holding `bytes` more for `tenant` would pass a limit.
    fn over_limit(&self, tenant: usize, bytes: u64) -> bool {
        let p = &self.policy;
        self.held_bytes() + bytes > p.limit_bytes()
            || p.limit_batches()
                .is_some_and(|n| self.held.len() as u64 + 1 > n)
            || p.tenant_limit_bytes()
                .is_some_and(|n| self.tenant_bytes(tenant) + bytes > n)
    }

    /// Whether evicting every batch the drop rule puts before `new` (not in
    /// flight, of its tenant when there is a per-tenant limit, a type no
    /// later in `drop_order`) would make room for it.
    fn could_fit(&self, new: &Batch) -> bool {
        let own_only = self.policy.tenant_limit_bytes().is_some();
        let stays =
            |b: &&Batch| b.in_flight || (own_only && b.tenant != new.tenant) || b.rank > new.rank;
        let kept: Vec<&Batch> = self.held.iter().filter(stays).collect();
        let p = &self.policy;
        let bytes: u64 = kept.iter().map(|b| b.bytes).sum();
        let tenant: u64 = kept
            .iter()
            .filter(|b| b.tenant == new.tenant)
            .map(|b| b.bytes)
            .sum();
        bytes + new.bytes <= p.limit_bytes()
            && p.limit_batches().is_none_or(|n| (kept.len() as u64) < n)
            && p.tenant_limit_bytes()
                .is_none_or(|n| tenant + new.bytes <= n)
    }

    /// The batch the drop rule takes next: among the batches not in flight
    /// (only the new frame's tenant's when there is a per-tenant limit) and
    /// the new frame, the first type in `drop_order`, oldest first.
    fn eviction_pick<'a>(&'a self, new: &'a Batch) -> &'a Batch {
        let own_only = self.policy.tenant_limit_bytes().is_some();
        self.held
            .iter()
            .filter(|b| !b.in_flight && (!own_only || b.tenant == new.tenant))
            .chain(std::iter::once(new))
            .min_by_key(|b| (b.rank, b.seq))
            .unwrap()
    }

    fn oldest_waiting(&self, t: usize) -> Option<BatchId> {
        self.waiting(t).min_by_key(|b| b.seq).map(|b| b.id)
    }

    /// The oldest batch of the most important type (last in `drop_order`).
    fn probe_pick(&self, t: usize) -> Option<BatchId> {
        self.waiting(t)
            .min_by_key(|b| (Reverse(b.rank), b.seq))
            .map(|b| b.id)
    }

    /// The earliest time the retry schedule allows an offline tenant's next
    /// send: `F + k * retry_interval` for the k-th attempt, and not before
    /// the time announced.
    fn schedule_floor(&self, t: usize) -> Option<DateTime<Utc>> {
        self.tenants[t].outage.as_ref().map(|o| {
            let k = i32::try_from(o.probe_failures + 1).unwrap();
            (o.since + self.policy.retry_interval() * k).max(o.sched_at)
        })
    }

    /// When the tenant may send next, if it has a batch waiting and room to
    /// send it; the past if it may send now.
    fn due(&self, t: usize) -> Option<DateTime<Utc>> {
        self.waiting(t).next()?;
        let tm = &self.tenants[t];
        let room = match tm.outage {
            None => self.in_flight(t) < self.policy.max_in_flight(),
            Some(_) => self.in_flight(t) == 0,
        };
        room.then(|| {
            let sched = tm.outage.as_ref().map(|o| o.sched_at);
            [tm.throttle_until, sched]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        })
    }

    fn describe(&self, t: usize) -> String {
        format!(
            "tenant {t}: {:?}, in flight {}, waiting {:?}",
            self.tenants[t],
            self.in_flight(t),
            self.waiting(t)
                .map(|b| (b.seq, b.data_type))
                .collect::<Vec<_>>()
        )
    }
}

fn dropped(b: &Batch, reason: DropReason) -> DeliveryEvent {
    DeliveryEvent::Dropped {
        tenant: tenant_id(b.tenant),
        data_type: b.data_type,
        batch_id: b.id,
        records: b.records,
        bytes: b.bytes,
        reason,
    }
}

// ---------------------------------------------------------------------------
// Operations.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Delivered,
    Transient,
    Throttled { minutes: i64 },
    Rejected,
}

impl Kind {
    fn outcome(self) -> Outcome {
        match self {
            Kind::Delivered => Outcome::Delivered,
            Kind::Transient => Outcome::Transient,
            Kind::Throttled { minutes } => Outcome::Throttled {
                retry_after: Duration::minutes(minutes),
            },
            Kind::Rejected => Outcome::Rejected,
        }
    }
}

/// One step. `lag` (minutes) makes the call with a time that far behind
/// the latest seen.
#[derive(Debug, Clone)]
enum Op {
    Push {
        tenant: usize,
        data_type: DataType,
        records: usize,
        lag: i64,
    },
    /// `poll_transmit` until it runs dry.
    Transmit { lag: i64 },
    /// The outcome of the `pick`-th batch in flight (in push order).
    Outcome { pick: usize, kind: Kind, lag: i64 },
    /// The clock moves on; `handle_timeout`; then, if `drain`, transmit.
    Advance { seconds: i64, drain: bool },
    /// The clock moves to `poll_timeout`; `handle_timeout`; transmit.
    Timer,
    /// `handle_timeout` with a time in the past.
    StaleTimeout { minutes: i64 },
    /// An outcome for a batch not in flight (or never pushed).
    BadOutcome { pick: usize, kind: Kind },
    /// A held frame pushed again.
    Duplicate { pick: usize },
}

#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    held: (usize, u64),
    timeout: Option<DateTime<Utc>>,
    tenants: Vec<(TenantStatus, (usize, u64))>,
    phases: Vec<Option<Phase>>,
}

struct Harness {
    outbox: Outbox,
    m: Model,
    c: Checks,
    /// Batches that became held during the step.
    entered: Vec<BatchId>,
    /// Batches that stopped being held during the step.
    left: Vec<BatchId>,
}

impl Harness {
    fn new(policy: DeliveryPolicy, seed: u64, checks: &'static [Rule]) -> Self {
        Harness {
            outbox: Outbox::new(policy.clone(), seed),
            m: Model::new(policy),
            c: Checks(checks),
            entered: Vec::new(),
            left: Vec::new(),
        }
    }

    fn run(&mut self, op: &Op) -> Result<(), String> {
        self.entered.clear();
        self.left.clear();
        match *op {
            Op::Push {
                tenant,
                data_type,
                records,
                lag,
            } => self.push(tenant, data_type, records, lag)?,
            Op::Transmit { lag } => self.transmit(lag)?,
            Op::Outcome { pick, kind, lag } => self.outcome(pick, kind, lag)?,
            Op::Advance { seconds, drain } => {
                self.m.clock += Duration::seconds(seconds);
                self.timeout(self.m.clock)?;
                if drain {
                    self.transmit(0)?;
                }
            }
            Op::Timer => {
                let clock = self.m.clock;
                let call = self
                    .outbox
                    .poll_timeout()
                    .filter(|&t| t > clock)
                    .unwrap_or(clock);
                self.m.clock = call;
                self.timeout(call)?;
                self.transmit(0)?;
                let now = self.m.now;
                let next = self.outbox.poll_timeout();
                self.c
                    .ensure(Rule::Timer, next.is_none_or(|t| t > now), || {
                        format!(
                            "after handle_timeout and poll_transmit at {now}, poll_timeout is \
                             {next:?}: a host following it would spin"
                        )
                    })?;
            }
            Op::StaleTimeout { minutes } => {
                self.timeout(self.m.clock - Duration::minutes(minutes))?
            }
            Op::BadOutcome { pick, kind } => self.bad_outcome(pick, kind)?,
            Op::Duplicate { pick } => self.duplicate(pick)?,
        }
        self.invariants()
    }

    fn drain(&mut self) -> (Vec<DeliveryEvent>, Vec<StorageOp>) {
        let ops = std::iter::from_fn(|| self.outbox.poll_storage()).collect();
        let events = std::iter::from_fn(|| self.outbox.poll_event()).collect();
        (events, ops)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            held: (self.outbox.held_batches(), self.outbox.held_bytes()),
            timeout: self.outbox.poll_timeout(),
            tenants: (0..TENANTS)
                .map(|t| {
                    let id = tenant_id(t);
                    (self.outbox.tenant_status(id), self.outbox.tenant_held(id))
                })
                .collect(),
            phases: self
                .m
                .pushed
                .iter()
                .map(|&id| self.outbox.phase(id))
                .collect(),
        }
    }

    fn terminal(&mut self, id: BatchId) -> Result<(), String> {
        let n = self.m.terminal.entry(id).or_default();
        *n += 1;
        let n = *n;
        self.c.ensure(Rule::Accounting, n == 1, || {
            format!("batch {id} got {n} terminal events")
        })
    }

    /// A batch leaves the model with a terminal event.
    fn leave(&mut self, b: &Batch) -> Result<(), String> {
        self.left.push(b.id);
        self.terminal(b.id)
    }

    fn unexpected(&self, events: Vec<DeliveryEvent>, during: &str) -> Result<(), String> {
        for e in events {
            let rule = match e {
                DeliveryEvent::Delivered { .. } | DeliveryEvent::Dropped { .. } => Rule::Accounting,
                DeliveryEvent::TenantOffline { .. } | DeliveryEvent::TenantOnline { .. } => {
                    Rule::Connectivity
                }
                _ => Rule::Schedule,
            };
            self.c.ensure(rule, false, || {
                format!("unexpected event during {during}: {e:?}")
            })?;
        }
        Ok(())
    }

    /// Exactly one Persist for each batch that became held, one Remove for
    /// each that left.
    fn check_storage(&mut self, ops: Vec<StorageOp>) -> Result<(), String> {
        let c = self.c;
        for op in ops {
            match op {
                StorageOp::Persist { batch_id, frame } => {
                    let n = self.m.persisted.entry(batch_id).or_default();
                    *n += 1;
                    let n = *n;
                    let same = self
                        .m
                        .get(batch_id)
                        .is_some_and(|b| b.frame.as_bytes() == frame.as_bytes());
                    c.ensure(
                        Rule::Accounting,
                        n == 1 && same && self.entered.contains(&batch_id),
                        || {
                            format!(
                                "Persist of {batch_id} (persisted {n} times, held with this frame: \
                                 {same}) in a step where {:?} became held",
                                self.entered
                            )
                        },
                    )?;
                }
                StorageOp::Remove { batch_id } => {
                    let n = self.m.removed.entry(batch_id).or_default();
                    *n += 1;
                    let n = *n;
                    let p = self.m.persisted.get(&batch_id).copied().unwrap_or(0);
                    c.ensure(
                        Rule::Accounting,
                        n == 1 && p == 1 && self.left.contains(&batch_id),
                        || {
                            format!(
                                "Remove of {batch_id} (removed {n} times, persisted {p} times) in \
                                 a step where {:?} left",
                                self.left
                            )
                        },
                    )?;
                }
                other => c.ensure(Rule::Accounting, false, || {
                    format!("unknown storage op {other:?}")
                })?,
            }
        }
        for id in &self.entered {
            let n = self.m.persisted.get(id).copied().unwrap_or(0);
            c.ensure(Rule::Accounting, n == 1, || {
                format!("batch {id} became held without a Persist")
            })?;
        }
        for id in &self.left {
            let p = self.m.persisted.get(id).copied().unwrap_or(0);
            let r = self.m.removed.get(id).copied().unwrap_or(0);
            c.ensure(Rule::Accounting, p == 1 && r == 1, || {
                format!("batch {id} left the outbox with {p} Persist and {r} Remove")
            })?;
        }
        Ok(())
    }

    fn push(
        &mut self,
        tenant: usize,
        data_type: DataType,
        records: usize,
        lag: i64,
    ) -> Result<(), String> {
        let c = self.c;
        let call = self.m.call(lag);
        let now = self.m.now;
        let n = self.m.pushed.len() as u32;
        let frame = frame(tenant, data_type, records, n);
        let id = frame.batch_id();
        if let Err(e) = self.outbox.push(call, frame.clone()) {
            return desync(format!("push of a new batch refused: {e}"));
        }
        self.m.pushed.push(id);
        self.m.seq += 1;
        let new = Batch {
            id,
            tenant,
            data_type,
            rank: self.m.rank(data_type),
            bytes: frame.len() as u64,
            records: records as u32,
            seq: self.m.seq,
            // Expiry counts from the frame's creation, not from the push.
            expires: self
                .m
                .policy
                .expire_after(data_type)
                .map(|d| frame.header().created + d),
            frame,
            in_flight: false,
            probe: false,
            sends: 0,
        };
        let (events, ops) = self.drain();
        if new.expires.is_some_and(|x| x <= now) {
            // Already expired: dropped at once, alone, never persisted.
            let expected = dropped(&new, DropReason::Expired);
            c.ensure(Rule::Accounting, events == [expected.clone()], || {
                format!("push of an expired frame gave {events:?}, not {expected:?}")
            })?;
            self.terminal(id)?;
            return self.check_storage(ops);
        }
        // Hopeless: the new frame goes alone, before anything is evicted.
        let hopeless = !self.m.could_fit(&new);
        let mut new_dropped = false;
        let mut other = Vec::new();
        for ev in events {
            let DeliveryEvent::Dropped {
                batch_id, reason, ..
            } = ev
            else {
                other.push(ev);
                continue;
            };
            c.ensure(Rule::Accounting, reason == DropReason::QueueFull, || {
                format!("push dropped {batch_id} for {reason:?}")
            })?;
            c.ensure(Rule::Eviction, !new_dropped, || {
                format!("{batch_id} dropped after the new frame itself was")
            })?;
            c.ensure(Rule::Eviction, self.m.over_limit(tenant, new.bytes), || {
                format!(
                    "{batch_id} dropped though the new frame ({} bytes) already fits; held {} \
                     bytes in {} batches",
                    new.bytes,
                    self.m.held_bytes(),
                    self.m.held.len()
                )
            })?;
            let pick = if hopeless {
                &new
            } else {
                self.m.eviction_pick(&new)
            };
            let victim = if batch_id == id {
                Some(&new)
            } else {
                self.m.get(batch_id)
            };
            c.ensure(Rule::Eviction, batch_id == pick.id, || {
                format!(
                    "dropped {:?}, the drop rule takes {:?} (seq {}) first",
                    victim.map(|b| (b.seq, b.data_type, b.in_flight)),
                    pick.data_type,
                    pick.seq
                )
            })?;
            if batch_id == id {
                c.ensure(Rule::Accounting, ev == dropped(&new, reason), || {
                    format!("{ev:?} does not describe the new frame")
                })?;
                new_dropped = true;
                self.terminal(id)?;
            } else {
                let Some(b) = self.m.take(batch_id) else {
                    return desync(format!("dropped {batch_id}, which is not held"));
                };
                c.ensure(Rule::Eviction, !b.in_flight, || {
                    format!("evicted {batch_id}, which is in flight")
                })?;
                c.ensure(Rule::Accounting, ev == dropped(&b, reason), || {
                    format!("{ev:?} does not describe the batch")
                })?;
                self.leave(&b)?;
            }
        }
        if !new_dropped {
            c.ensure(
                Rule::Eviction,
                !self.m.over_limit(tenant, new.bytes),
                || {
                    format!(
                        "the new frame ({} bytes) was taken over a limit: held {} bytes in {} \
                         batches, the tenant {} bytes",
                        new.bytes,
                        self.m.held_bytes(),
                        self.m.held.len(),
                        self.m.tenant_bytes(tenant)
                    )
                },
            )?;
            self.m.held.push(new);
            self.entered.push(id);
        }
        self.unexpected(other, "push")?;
        self.check_storage(ops)
    }

    fn transmit(&mut self, lag: i64) -> Result<(), String> {
        let c = self.c;
        let call = self.m.call(lag);
        let now = self.m.now;
        let max = self.m.policy.max_in_flight();
        let mut sent = 0;
        while let Some(tx) = self.outbox.poll_transmit(call) {
            sent += 1;
            if sent > 1000 {
                return desync("poll_transmit does not run dry".into());
            }
            let id = tx.batch_id;
            let Some(b) = self.m.get(id) else {
                return desync(format!("sent {id}, which is not held"));
            };
            let t = b.tenant;
            c.ensure(Rule::Accounting, !b.in_flight, || {
                format!("sent {id}, which is already in flight")
            })?;
            c.ensure(
                Rule::Accounting,
                tx.tenant == tenant_id(t) && tx.frame.as_bytes() == b.frame.as_bytes(),
                || format!("the transmit of {id} does not carry its tenant and frame"),
            )?;
            c.ensure(Rule::Accounting, tx.attempt == b.sends + 1, || {
                format!(
                    "attempt {} of {id}, sent {} times before",
                    tx.attempt, b.sends
                )
            })?;
            let in_flight = self.m.in_flight(t);
            let offline = self.m.tenants[t].outage.is_some();
            if offline {
                c.ensure(Rule::Connectivity, in_flight == 0, || {
                    format!("offline tenant {t} sent {id} with {in_flight} in flight")
                })?;
                let pick = self.m.probe_pick(t);
                c.ensure(Rule::Connectivity, pick == Some(id), || {
                    format!(
                        "offline tenant {t} probed with {:?}, the probe is {:?}",
                        (b.seq, b.data_type),
                        pick.and_then(|p| self.m.get(p))
                            .map(|p| (p.seq, p.data_type))
                    )
                })?;
            } else {
                c.ensure(Rule::Connectivity, in_flight < max, || {
                    format!("online tenant {t} sent {id} with {in_flight} of {max} in flight")
                })?;
                let pick = self.m.oldest_waiting(t);
                c.ensure(Rule::Connectivity, pick == Some(id), || {
                    format!(
                        "online tenant {t} sent {:?}, its oldest is {:?}",
                        (b.seq, b.data_type),
                        pick.and_then(|p| self.m.get(p))
                            .map(|p| (p.seq, p.data_type))
                    )
                })?;
            }
            if let Some(floor) = self.m.schedule_floor(t) {
                c.ensure(Rule::Schedule, now >= floor, || {
                    format!(
                        "tenant {t} sent at {now}, before its retry slot {floor}; {}",
                        self.m.describe(t)
                    )
                })?;
            }
            if let Some(until) = self.m.tenants[t].throttle_until {
                c.ensure(Rule::Throttle, now >= until, || {
                    format!(
                        "tenant {t} sent at {now}, throttled until {until}; {}",
                        self.m.describe(t)
                    )
                })?;
            }
            let b = self.m.get_mut(id).unwrap();
            b.in_flight = true;
            b.probe = offline;
            b.sends += 1;
        }
        let (events, ops) = self.drain();
        self.unexpected(events, "poll_transmit")?;
        self.check_storage(ops)?;
        for t in 0..TENANTS {
            let due = self.m.due(t);
            c.ensure(Rule::Liveness, due.is_none_or(|d| d > now), || {
                format!(
                    "poll_transmit ran dry at {now}, but tenant {t} may send since {due:?}; {}",
                    self.m.describe(t)
                )
            })?;
        }
        Ok(())
    }

    fn outcome(&mut self, pick: usize, kind: Kind, lag: i64) -> Result<(), String> {
        let c = self.c;
        let in_flight: Vec<BatchId> = self
            .m
            .held
            .iter()
            .filter(|b| b.in_flight)
            .map(|b| b.id)
            .collect();
        if in_flight.is_empty() {
            return Ok(());
        }
        let id = in_flight[pick % in_flight.len()];
        let call = self.m.call(lag);
        let now = self.m.now;
        if let Err(e) = self.outbox.handle_outcome(call, id, kind.outcome()) {
            return desync(format!("outcome for {id}, in flight, refused: {e}"));
        }
        let (mut events, ops) = self.drain();
        let t = self.m.get(id).unwrap().tenant;
        let tenant = tenant_id(t);
        match kind {
            Kind::Delivered | Kind::Rejected => {
                let b = self.m.take(id).unwrap();
                let expected = match kind {
                    Kind::Delivered => DeliveryEvent::Delivered {
                        tenant,
                        data_type: b.data_type,
                        batch_id: id,
                        records: b.records,
                        bytes: b.bytes,
                    },
                    _ => dropped(&b, DropReason::Rejected),
                };
                let seen = take(&mut events, |e| *e == expected).is_some();
                c.ensure(Rule::Accounting, seen, || format!("no {expected:?}"))?;
                self.leave(&b)?;
                if self.m.tenants[t].outage.take().is_some() {
                    let online = DeliveryEvent::TenantOnline { tenant };
                    let seen = take(&mut events, |e| *e == online).is_some();
                    c.ensure(Rule::Connectivity, seen, || {
                        format!("{kind:?} for offline tenant {t} without TenantOnline")
                    })?;
                }
            }
            Kind::Transient | Kind::Throttled { .. } => {
                let b = self.m.get_mut(id).unwrap();
                let was_probe = b.probe;
                b.in_flight = false;
                b.probe = false;
                self.expired_on_return(&mut events, id)?;
                match kind {
                    Kind::Transient => match self.m.tenants[t].outage.as_mut() {
                        None => {
                            let offline = DeliveryEvent::TenantOffline { tenant, since: now };
                            let seen = take(&mut events, |e| *e == offline).is_some();
                            c.ensure(Rule::Connectivity, seen, || {
                                format!("Transient for online tenant {t} without {offline:?}")
                            })?;
                            self.m.tenants[t].outage = Some(Outage {
                                since: now,
                                probe_failures: 0,
                                sched_at: now,
                                queued: false,
                                queued_failures: 0,
                            });
                            self.expect_retry(&mut events, t)?;
                        }
                        Some(o) if was_probe => {
                            o.probe_failures += 1;
                            self.expect_retry(&mut events, t)?;
                        }
                        Some(_) => {}
                    },
                    Kind::Throttled { minutes } => {
                        let wait = Duration::minutes(minutes).min(self.m.policy.max_retry_after());
                        let until = now + wait;
                        let tm = &mut self.m.tenants[t];
                        tm.throttle_until = tm.throttle_until.max(Some(until));
                        let ev = take(
                            &mut events,
                            |e| matches!(e, DeliveryEvent::RetryScheduled { tenant: x, .. } if *x == tenant),
                        );
                        if let Some(DeliveryEvent::RetryScheduled { at, .. }) = ev {
                            c.ensure(Rule::Throttle, at >= until, || {
                                format!("throttled until {until}, but retry announced at {at}")
                            })?;
                        }
                    }
                    _ => unreachable!(),
                }
            }
        }
        self.unexpected(events, "handle_outcome")?;
        self.check_storage(ops)
    }

    /// A batch back from a send after its expiry may be dropped at once.
    fn expired_on_return(
        &mut self,
        events: &mut Vec<DeliveryEvent>,
        id: BatchId,
    ) -> Result<(), String> {
        let c = self.c;
        let now = self.m.now;
        let ev = take(
            events,
            |e| matches!(e, DeliveryEvent::Dropped { batch_id, reason: DropReason::Expired, .. } if *batch_id == id),
        );
        if let Some(ev) = ev {
            let b = self.m.take(id).unwrap();
            c.ensure(
                Rule::Accounting,
                b.expires.is_some_and(|x| x <= now),
                || {
                    format!(
                        "{id} dropped as expired at {now}, it expires at {:?}",
                        b.expires
                    )
                },
            )?;
            c.ensure(
                Rule::Accounting,
                ev == dropped(&b, DropReason::Expired),
                || format!("{ev:?} does not describe the batch"),
            )?;
            self.leave(&b)?;
        }
        Ok(())
    }

    /// After a failure that sets the tenant's schedule (going offline, or a
    /// failed probe), the next attempt must be announced within the rules.
    fn expect_retry(&mut self, events: &mut Vec<DeliveryEvent>, t: usize) -> Result<(), String> {
        let c = self.c;
        let f = self.m.now;
        let p = &self.m.policy;
        let (interval, window) = (p.retry_interval(), p.cache_window());
        let (qmax, jitter) = (p.queue_retry_max(), p.jitter_percent());
        let throttle = self.m.tenants[t]
            .throttle_until
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let o = self.m.tenants[t].outage.as_mut().unwrap();
        let failures = o.probe_failures + 1;
        // No earlier than F + k * interval for the k-th attempt.
        let grid = o.since + interval * i32::try_from(failures).unwrap();
        // The next slot on the grid after this failure.
        let k = (f - o.since).num_milliseconds() / interval.num_milliseconds() + 1;
        let slot = o.since + interval * i32::try_from(k).unwrap();
        let queued = slot > o.since + window;
        let (lo, hi) = if queued {
            // The first queued wait is retry_interval, then doubling, capped
            // at queue_retry_max; jitter shaves up to jitter_percent of it
            // off, but never below retry_interval.
            let base = i32::try_from(o.queued_failures)
                .ok()
                .filter(|&n| n < 31)
                .and_then(|n| interval.checked_mul(1 << n))
                .map_or(qmax, |b| b.min(qmax));
            let shave = Duration::milliseconds(base.num_milliseconds() * i64::from(jitter) / 100);
            let min_wait = (base - shave).max(interval);
            (grid.max(f + min_wait), f + base)
        } else {
            (grid, slot)
        };
        // A throttle may only put the retry later.
        let hi = hi.max(throttle);
        let ev = take(
            events,
            |e| matches!(e, DeliveryEvent::RetryScheduled { tenant, .. } if *tenant == tenant_id(t)),
        );
        let at = match ev {
            Some(DeliveryEvent::RetryScheduled { at, attempt, .. }) => {
                c.ensure(Rule::Schedule, attempt == failures, || {
                    format!("RetryScheduled attempt {attempt} after {failures} failures")
                })?;
                at
            }
            _ => {
                c.ensure(Rule::Schedule, false, || {
                    format!("no RetryScheduled for tenant {t} after the failure at {f}")
                })?;
                hi
            }
        };
        c.ensure(Rule::Schedule, lo <= at && at <= hi, || {
            format!(
                "tenant {t} (offline since {}, failure {failures} at {f}) retries at {at}; the \
                 rules allow [{lo}, {hi}]",
                o.since
            )
        })?;
        c.ensure(Rule::Throttle, at >= throttle, || {
            format!("tenant {t} throttled until {throttle}, its retry is scheduled at {at}")
        })?;
        o.sched_at = at;
        if queued {
            o.queued_failures += 1;
        }
        Ok(())
    }

    fn timeout(&mut self, call: DateTime<Utc>) -> Result<(), String> {
        let c = self.c;
        let window = self.m.policy.cache_window();
        self.m.observe(call);
        self.outbox.handle_timeout(call);
        let now = self.m.now;
        let (events, ops) = self.drain();
        let mut other = Vec::new();
        for ev in events {
            match ev {
                DeliveryEvent::Queued { tenant, batches } => {
                    let Some(t) = tenant_index(tenant) else {
                        return desync(format!("Queued for unknown tenant {tenant}"));
                    };
                    let held = self.m.tenant_batches(t);
                    let o = self.m.tenants[t].outage.as_mut();
                    let due = o
                        .as_ref()
                        .is_some_and(|o| !o.queued && o.since + window <= now);
                    c.ensure(Rule::Schedule, due, || {
                        format!("Queued for tenant {t} at {now}, not due: {o:?}")
                    })?;
                    c.ensure(Rule::Schedule, batches == held, || {
                        format!("Queued for tenant {t} with {batches} batches, it holds {held}")
                    })?;
                    if let Some(o) = o {
                        o.queued = true;
                    }
                }
                DeliveryEvent::Dropped {
                    batch_id,
                    reason: DropReason::Expired,
                    ..
                } => {
                    let Some(b) = self.m.take(batch_id) else {
                        return desync(format!("expired {batch_id}, which is not held"));
                    };
                    c.ensure(Rule::Accounting, !b.in_flight, || {
                        format!("{batch_id} expired while in flight")
                    })?;
                    c.ensure(
                        Rule::Accounting,
                        b.expires.is_some_and(|x| x <= now),
                        || format!("{batch_id} expired at {now}, due at {:?}", b.expires),
                    )?;
                    c.ensure(
                        Rule::Accounting,
                        ev == dropped(&b, DropReason::Expired),
                        || format!("{ev:?} does not describe the batch"),
                    )?;
                    self.leave(&b)?;
                }
                ev => other.push(ev),
            }
        }
        self.unexpected(other, "handle_timeout")?;
        for t in 0..TENANTS {
            if let Some(o) = &self.m.tenants[t].outage {
                c.ensure(Rule::Schedule, o.queued || o.since + window > now, || {
                    format!(
                        "handle_timeout at {now} gave no Queued for tenant {t}, offline since {}",
                        o.since
                    )
                })?;
            }
        }
        for b in &self.m.held {
            c.ensure(
                Rule::Accounting,
                b.in_flight || b.expires.is_none_or(|x| x > now),
                || format!("{} expired at {:?}, still held at {now}", b.id, b.expires),
            )?;
        }
        self.check_storage(ops)?;
        // A repeated handle_timeout does nothing.
        self.outbox.handle_timeout(call);
        let (events, ops) = self.drain();
        c.ensure(
            Rule::Accounting,
            events.is_empty() && ops.is_empty(),
            || format!("a repeated handle_timeout at {now} gave {events:?} {ops:?}"),
        )
    }

    fn bad_outcome(&mut self, pick: usize, kind: Kind) -> Result<(), String> {
        let c = self.c;
        let mut ids = self.m.pushed.clone();
        ids.push(BatchId::from_random_bytes([0xEE; 16]));
        let id = ids[pick % ids.len()];
        let held = match self.m.get(id) {
            Some(b) if b.in_flight => return Ok(()),
            Some(_) => true,
            None => false,
        };
        let before = self.snapshot();
        let call = self.m.call(0);
        let res = self.outbox.handle_outcome(call, id, kind.outcome());
        let ok = match &res {
            Err(DeliveryError::UnknownBatch { batch_id }) => !held && *batch_id == id,
            Err(DeliveryError::NotInFlight { batch_id }) => held && *batch_id == id,
            _ => false,
        };
        c.ensure(Rule::Accounting, ok, || {
            format!("outcome for {id} (held: {held}, not in flight) gave {res:?}")
        })?;
        let (events, ops) = self.drain();
        let after = self.snapshot();
        c.ensure(
            Rule::Accounting,
            events.is_empty() && ops.is_empty() && after == before,
            || {
                format!(
                    "a refused outcome changed things: {events:?} {ops:?} {before:?} -> {after:?}"
                )
            },
        )
    }

    fn duplicate(&mut self, pick: usize) -> Result<(), String> {
        let c = self.c;
        if self.m.held.is_empty() {
            return Ok(());
        }
        let b = &self.m.held[pick % self.m.held.len()];
        let (id, frame) = (b.id, b.frame.clone());
        let before = self.snapshot();
        let call = self.m.call(0);
        let res = self.outbox.push(call, frame.clone());
        let ok = matches!(&res, Err(DeliveryError::DuplicateBatch { batch_id, frame: back })
            if *batch_id == id && back.as_bytes() == frame.as_bytes());
        c.ensure(Rule::Accounting, ok, || {
            format!("a second push of held {id} gave {res:?}")
        })?;
        let (events, ops) = self.drain();
        let after = self.snapshot();
        c.ensure(
            Rule::Accounting,
            events.is_empty() && ops.is_empty() && after == before,
            || format!("a refused push changed things: {events:?} {ops:?} {before:?} -> {after:?}"),
        )
    }

    fn invariants(&self) -> Result<(), String> {
        let c = self.c;
        let m = &self.m;
        let p = &m.policy;
        let (batches, bytes) = (self.outbox.held_batches(), self.outbox.held_bytes());
        c.ensure(
            Rule::Accounting,
            batches == m.held.len() && bytes == m.held_bytes(),
            || {
                format!(
                    "outbox holds {batches} batches / {bytes} bytes, the model {} / {}",
                    m.held.len(),
                    m.held_bytes()
                )
            },
        )?;
        c.ensure(Rule::Accounting, bytes <= p.limit_bytes(), || {
            format!("held {bytes} bytes, limit {}", p.limit_bytes())
        })?;
        c.ensure(
            Rule::Accounting,
            p.limit_batches().is_none_or(|n| batches as u64 <= n),
            || format!("held {batches} batches, limit {:?}", p.limit_batches()),
        )?;
        for t in 0..TENANTS {
            let held = self.outbox.tenant_held(tenant_id(t));
            let model = (m.tenant_batches(t), m.tenant_bytes(t));
            c.ensure(Rule::Accounting, held == model, || {
                format!("tenant {t} holds {held:?}, the model {model:?}")
            })?;
            c.ensure(
                Rule::Accounting,
                p.tenant_limit_bytes().is_none_or(|n| held.1 <= n),
                || {
                    format!(
                        "tenant {t} holds {} bytes, limit {:?}",
                        held.1,
                        p.tenant_limit_bytes()
                    )
                },
            )?;
        }
        // The O(1) counters by data type equal the model's sums.
        for t in DataType::ALL {
            let held = self.outbox.held_by_type(t);
            let of_type = m.held.iter().filter(|b| b.data_type == t);
            let model = (of_type.clone().count(), of_type.map(|b| b.bytes).sum());
            c.ensure(Rule::Accounting, held == model, || {
                format!("{t:?}: held_by_type {held:?}, the model {model:?}")
            })?;
            c.ensure(
                Rule::Accounting,
                self.outbox.held_of_type(t) == model.0,
                || format!("{t:?}: held_of_type disagrees with the model"),
            )?;
        }
        // Conservation: each id pushed is held, or had exactly one terminal event.
        for id in &m.pushed {
            let held = m.get(*id).is_some();
            let ended = m.terminal.get(id).copied().unwrap_or(0);
            c.ensure(
                Rule::Accounting,
                usize::from(held) + ended as usize == 1,
                || format!("{id}: held {held}, {ended} terminal events"),
            )?;
        }
        for t in 0..TENANTS {
            let status = self.outbox.tenant_status(tenant_id(t));
            let model = match &m.tenants[t].outage {
                None => TenantStatus::Online,
                Some(o) => TenantStatus::Offline { since: o.since },
            };
            c.ensure(Rule::Connectivity, status == model, || {
                format!("tenant {t} is {status:?}, the model {model:?}")
            })?;
        }
        let mut phases = PhaseCounts::default();
        for b in &m.held {
            let phase = self.outbox.phase(b.id);
            let model = if b.in_flight {
                Phase::InFlight
            } else {
                match &m.tenants[b.tenant].outage {
                    None => Phase::Pending,
                    Some(o) if o.queued => Phase::Queued,
                    Some(_) => Phase::Cached,
                }
            };
            c.ensure(Rule::Connectivity, phase == Some(model), || {
                format!("{} is {phase:?}, the model {model:?}", b.id)
            })?;
            *match model {
                Phase::Pending => &mut phases.pending,
                Phase::InFlight => &mut phases.in_flight,
                Phase::Cached => &mut phases.cached,
                _ => &mut phases.queued,
            } += 1;
        }
        let counted = self.outbox.held_by_phase();
        c.ensure(Rule::Connectivity, counted == phases, || {
            format!("held_by_phase {counted:?}, the model {phases:?}")
        })?;
        // The timer: no later than the next thing due.
        let window = p.cache_window();
        let mut due: Vec<(DateTime<Utc>, Rule, String)> = Vec::new();
        for t in 0..TENANTS {
            let tm = &m.tenants[t];
            if let Some(o) = &tm.outage
                && !o.queued
            {
                let what = format!("tenant {t}'s cache window ends");
                due.push((o.since + window, Rule::Timer, what));
            }
            if let Some(d) = m.due(t)
                && d > m.now
            {
                // Due at the retry schedule's slot, or at a throttle's end.
                let slot = tm.outage.as_ref().is_some_and(|o| o.sched_at == d);
                let rule = if !slot && tm.throttle_until == Some(d) {
                    Rule::Throttle
                } else {
                    Rule::Timer
                };
                due.push((d, rule, format!("tenant {t} may send; {}", m.describe(t))));
            }
        }
        for b in m.held.iter().filter(|b| !b.in_flight) {
            if let Some(x) = b.expires {
                due.push((x, Rule::Timer, format!("{} expires", b.id)));
            }
        }
        let timeout = self.outbox.poll_timeout();
        for (at, rule, what) in due {
            c.ensure(rule, timeout.is_some_and(|x| x <= at), || {
                format!(
                    "at {}, poll_timeout is {timeout:?}, but at {at} {what}",
                    m.now
                )
            })?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Strategies.

#[derive(Debug, Clone)]
struct PolicySpec {
    max_in_flight: u32,
    limit_bytes: u64,
    limit_batches: Option<u64>,
    tenant_limit_bytes: Option<u64>,
    drop_order: Option<Vec<DataType>>,
    jitter_percent: u8,
    expire: Option<(DataType, i64)>,
}

impl PolicySpec {
    /// A small outbox: eviction is frequent; no jitter.
    fn small() -> Self {
        PolicySpec {
            max_in_flight: 3,
            limit_bytes: 3000,
            limit_batches: None,
            tenant_limit_bytes: None,
            drop_order: None,
            jitter_percent: 0,
            expire: None,
        }
    }

    fn policy(&self) -> DeliveryPolicy {
        let mut p = DeliveryPolicy::default()
            .with_retry_interval(Duration::minutes(8))
            .unwrap()
            .with_cache_window(Duration::hours(2))
            .unwrap()
            .with_queue_retry_max(Duration::hours(1))
            .unwrap()
            .with_max_retry_after(Duration::minutes(30))
            .unwrap()
            .with_jitter_percent(self.jitter_percent)
            .unwrap()
            .with_limit_bytes(self.limit_bytes)
            .unwrap()
            .with_limit_batches(self.limit_batches)
            .unwrap()
            .with_tenant_limit_bytes(self.tenant_limit_bytes)
            .unwrap()
            .with_max_in_flight(self.max_in_flight)
            .unwrap();
        if let Some(order) = &self.drop_order {
            p = p
                .with_drop_order(order.clone().try_into().unwrap())
                .unwrap();
        }
        if let Some((t, minutes)) = self.expire {
            p = p
                .with_expire_after(t, Some(Duration::minutes(minutes)))
                .unwrap();
        }
        p
    }
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    let varied = (
        1u32..=4,
        1500u64..4500,
        proptest::option::of(2u64..9),
        proptest::option::weighted(0.3, 700u64..2500),
        proptest::option::weighted(0.3, Just(DataType::ALL.to_vec()).prop_shuffle()),
        prop_oneof![Just(0u8), Just(20u8)],
        proptest::option::weighted(0.3, (common::data_type(), 20i64..400)),
    )
        .prop_map(
            |(
                max_in_flight,
                limit_bytes,
                limit_batches,
                tenant_limit_bytes,
                drop_order,
                jitter_percent,
                expire,
            )| {
                PolicySpec {
                    max_in_flight,
                    limit_bytes,
                    limit_batches,
                    tenant_limit_bytes,
                    drop_order,
                    jitter_percent,
                    expire,
                }
            },
        );
    prop_oneof![Just(PolicySpec::small()), varied]
}

fn lag() -> impl Strategy<Value = i64> {
    prop_oneof![9 => Just(0i64), 1 => 1i64..180]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Delivered),
        3 => Just(Kind::Transient),
        1 => (0i64..90).prop_map(|minutes| Kind::Throttled { minutes }),
        1 => Just(Kind::Rejected),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..TENANTS, common::data_type(), 1usize..=3, lag()).prop_map(
            |(tenant, data_type, records, lag)| Op::Push { tenant, data_type, records, lag }
        ),
        4 => lag().prop_map(|lag| Op::Transmit { lag }),
        5 => (any::<usize>(), kind(), lag()).prop_map(|(pick, kind, lag)| Op::Outcome {
            pick,
            kind,
            lag
        }),
        2 => (prop_oneof![0i64..20, 0i64..200], prop_oneof![3 => Just(0i64), 1 => 0i64..60], any::<bool>())
            .prop_map(|(m, s, drain)| Op::Advance { seconds: m * 60 + s, drain }),
        3 => Just(Op::Timer),
        1 => (1i64..120).prop_map(|minutes| Op::StaleTimeout { minutes }),
        1 => (any::<usize>(), kind()).prop_map(|(pick, kind)| Op::BadOutcome { pick, kind }),
        1 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..60)
}

fn run_case(
    spec: &PolicySpec,
    seed: u64,
    ops: &[Op],
    rules: &'static [Rule],
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(spec.policy(), seed, rules);
    for (i, op) in ops.iter().enumerate() {
        h.run(op)
            .map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES, when set, overrides the count (for longer runs).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Regressions are pinned as plain tests below, not in a file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn model_accounting(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Accounting])?;
    }

    #[test]
    fn model_eviction(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Eviction])?;
    }

    #[test]
    fn model_connectivity(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Connectivity])?;
    }

    #[test]
    fn model_schedule(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Schedule])?;
    }

    #[test]
    fn model_throttle(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Throttle])?;
    }

    #[test]
    fn model_liveness(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Liveness])?;
    }

    #[test]
    fn model_timer(spec in policy_spec(), seed in any::<u64>(), ops in ops()) {
        run_case(&spec, seed, &ops, &[Rule::Timer])?;
    }
}

// ---------------------------------------------------------------------------
// Fixed scenarios.

fn events(o: &mut Outbox) -> Vec<DeliveryEvent> {
    std::iter::from_fn(|| o.poll_event()).collect()
}

fn storage(o: &mut Outbox) -> Vec<StorageOp> {
    std::iter::from_fn(|| o.poll_storage()).collect()
}

fn no_jitter() -> DeliveryPolicy {
    DeliveryPolicy::default().with_jitter_percent(0).unwrap()
}

fn minutes(n: i32) -> Duration {
    Duration::minutes(i64::from(n))
}

/// The ids of the batches dropped for `QueueFull`, in order.
fn queue_full(events: &[DeliveryEvent]) -> Vec<BatchId> {
    events
        .iter()
        .map(|e| match e {
            DeliveryEvent::Dropped {
                batch_id,
                reason: DropReason::QueueFull,
                ..
            } => *batch_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn offline_probe_goes_at_f_plus_8_16_minutes_through_the_window_then_queues_with_backoff() {
    let mut o = Outbox::new(no_jitter(), 7);
    let tenant = tenant_id(0);
    let f = t0();
    o.push(f, frame(0, DataType::Alert, 1, 0)).unwrap();
    let _ = storage(&mut o);
    let tx = o.poll_transmit(f).unwrap();
    o.handle_outcome(f, tx.batch_id, Outcome::Transient)
        .unwrap();
    assert_eq!(
        events(&mut o),
        [
            DeliveryEvent::TenantOffline { tenant, since: f },
            DeliveryEvent::RetryScheduled {
                tenant,
                at: f + minutes(8),
                attempt: 1
            },
        ]
    );
    // F + 8k for k = 1..=15: the last slot is the window's end, F + 2 h.
    for k in 1..=15 {
        let slot = f + minutes(8 * k);
        assert_eq!(o.poll_timeout(), Some(slot), "k = {k}");
        let early = slot - Duration::seconds(1);
        o.handle_timeout(early);
        assert_eq!(events(&mut o), [], "nothing at {early}");
        assert!(o.poll_transmit(early).is_none(), "no probe at {early}");
        o.handle_timeout(slot);
        let ev = events(&mut o);
        if k < 15 {
            assert_eq!(ev, [], "k = {k}");
            assert_eq!(o.phase(tx.batch_id), Some(Phase::Cached));
        } else {
            // The cache window is over: the tenant's batches are queued.
            assert_eq!(ev, [DeliveryEvent::Queued { tenant, batches: 1 }]);
            assert_eq!(o.phase(tx.batch_id), Some(Phase::Queued));
        }
        let probe = o.poll_transmit(slot).expect("the probe at its slot");
        assert_eq!(probe.batch_id, tx.batch_id);
        assert_eq!(probe.attempt, k as u32 + 1);
        assert!(o.poll_transmit(slot).is_none(), "one probe at a time");
        o.handle_outcome(slot, probe.batch_id, Outcome::Transient)
            .unwrap();
        match events(&mut o)[..] {
            [DeliveryEvent::RetryScheduled { at, attempt, .. }] => {
                assert_eq!(attempt, k as u32 + 1);
                if k < 15 {
                    assert_eq!(at, f + minutes(8 * (k + 1)));
                } else {
                    assert!(at > f + Duration::hours(2));
                }
            }
            ref other => panic!("k = {k}: {other:?}"),
        }
    }
    // Queued: waits grow, up to queue_retry_max (1 h), and no Queued again.
    let mut now = f + Duration::hours(2);
    let mut last = minutes(8);
    for i in 0..8 {
        let at = o.poll_timeout().unwrap();
        let wait = at - now;
        assert!(
            wait >= last && wait <= Duration::hours(1),
            "wait {i}: {wait}"
        );
        assert!(o.poll_transmit(at - Duration::seconds(1)).is_none());
        o.handle_timeout(at);
        assert_eq!(events(&mut o), []);
        let probe = o.poll_transmit(at).expect("the queued probe");
        o.handle_outcome(at, probe.batch_id, Outcome::Transient)
            .unwrap();
        let _ = events(&mut o);
        (now, last) = (at, wait);
    }
    assert_eq!(last, Duration::hours(1));
    // Delivery brings the tenant back.
    let at = o.poll_timeout().unwrap();
    let probe = o.poll_transmit(at).unwrap();
    o.handle_outcome(at, probe.batch_id, Outcome::Delivered)
        .unwrap();
    assert!(events(&mut o).contains(&DeliveryEvent::TenantOnline { tenant }));
    assert_eq!(o.tenant_status(tenant), TenantStatus::Online);
    assert_eq!(o.held_batches(), 0);
}

#[test]
fn drops_begin_with_performance_oldest_first() {
    use DataType::*;
    let held = [Performance, Alert, Performance, State, Event];
    let frames: Vec<Frame> = held
        .iter()
        .enumerate()
        .map(|(i, &t)| frame(0, t, 1, i as u32))
        .collect();
    let limit: usize = frames.iter().map(Frame::len).sum();
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(limit as u64)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    for f in &frames {
        o.push(t0(), f.clone()).unwrap();
    }
    assert_eq!(events(&mut o), []);
    let _ = storage(&mut o);
    // A new Alert needs the room of both Performance batches, oldest first.
    let alert = frame(0, Alert, 1, 10);
    assert!(alert.len() > frames[0].len() && alert.len() <= frames[0].len() + frames[2].len());
    o.push(t0(), alert.clone()).unwrap();
    assert_eq!(
        queue_full(&events(&mut o)),
        [frames[0].batch_id(), frames[2].batch_id()]
    );
    // The next: State, then Event; Alerts stay.
    let alert2 = frame(0, Alert, 1, 11);
    assert!(alert2.len() > frames[3].len());
    o.push(t0(), alert2.clone()).unwrap();
    assert_eq!(
        queue_full(&events(&mut o)),
        [frames[3].batch_id(), frames[4].batch_id()]
    );
    assert_eq!(o.held_of_type(Alert), 3);
    assert!(o.held_bytes() <= limit as u64);
}

#[test]
fn a_new_performance_frame_is_refused_while_only_alerts_are_held() {
    let alerts: Vec<Frame> = (0..3).map(|i| frame(0, DataType::Alert, 1, i)).collect();
    let limit: usize = alerts.iter().map(Frame::len).sum();
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(limit as u64)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    for f in &alerts {
        o.push(t0(), f.clone()).unwrap();
    }
    let _ = storage(&mut o);
    let perf = frame(0, DataType::Performance, 1, 3);
    o.push(t0(), perf.clone()).unwrap();
    assert_eq!(
        events(&mut o),
        [DeliveryEvent::Dropped {
            tenant: tenant_id(0),
            data_type: DataType::Performance,
            batch_id: perf.batch_id(),
            records: 1,
            bytes: perf.len() as u64,
            reason: DropReason::QueueFull,
        }]
    );
    assert!(storage(&mut o).is_empty(), "nothing to persist or remove");
    assert_eq!(o.held_batches(), 3);
    // A new Alert evicts the oldest Alert instead.
    let alert = frame(0, DataType::Alert, 1, 4);
    o.push(t0(), alert).unwrap();
    assert_eq!(queue_full(&events(&mut o)), [alerts[0].batch_id()]);
}

#[test]
fn batches_in_flight_are_never_evicted() {
    let perf: Vec<Frame> = (0..2)
        .map(|i| frame(0, DataType::Performance, 1, i))
        .collect();
    let limit: usize = perf.iter().map(Frame::len).sum();
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(limit as u64)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    for f in &perf {
        o.push(t0(), f.clone()).unwrap();
    }
    while o.poll_transmit(t0()).is_some() {}
    let _ = storage(&mut o);
    let alert = frame(0, DataType::Alert, 1, 2);
    o.push(t0(), alert.clone()).unwrap();
    assert_eq!(queue_full(&events(&mut o)), [alert.batch_id()]);
    assert_eq!(o.held_batches(), 2);
}

#[test]
fn the_probe_is_the_oldest_of_the_most_important_type_and_other_tenants_go_on() {
    use DataType::*;
    let mut o = Outbox::new(no_jitter(), 1);
    let first = frame(0, Performance, 1, 0);
    o.push(t0(), first.clone()).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    let older_alert = frame(0, Alert, 1, 2);
    for f in [
        frame(0, Event, 1, 1),
        older_alert.clone(),
        frame(0, Alert, 1, 3),
    ] {
        o.push(t0(), f).unwrap();
    }
    // Tenant 1 is not held up by tenant 0's outage.
    let other = frame(1, Performance, 1, 4);
    o.push(t0(), other.clone()).unwrap();
    let sent = o.poll_transmit(t0()).unwrap();
    assert_eq!(sent.batch_id, other.batch_id());
    assert!(o.poll_transmit(t0()).is_none());
    let probe = o.poll_transmit(t0() + minutes(8)).unwrap();
    assert_eq!(probe.batch_id, older_alert.batch_id());
    assert!(o.poll_transmit(t0() + minutes(8)).is_none());
}

#[test]
fn a_throttle_is_clamped_to_max_retry_after() {
    let policy = no_jitter()
        .with_max_retry_after(Duration::minutes(30))
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(0, DataType::Event, 1, 0)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    let retry_after = Duration::hours(5);
    o.handle_outcome(t0(), tx.batch_id, Outcome::Throttled { retry_after })
        .unwrap();
    let end = t0() + minutes(30);
    assert_eq!(o.poll_timeout(), Some(end));
    assert!(o.poll_transmit(end - Duration::seconds(1)).is_none());
    assert_eq!(o.poll_transmit(end).unwrap().batch_id, tx.batch_id);
}

#[test]
fn outcomes_for_batches_not_in_flight_are_typed_errors_that_change_nothing() {
    let mut o = Outbox::new(no_jitter(), 1);
    let f = frame(0, DataType::Event, 1, 0);
    o.push(t0(), f.clone()).unwrap();
    let _ = storage(&mut o);
    let unknown = BatchId::from_random_bytes([0xEE; 16]);
    assert!(matches!(
        o.handle_outcome(t0(), unknown, Outcome::Delivered),
        Err(DeliveryError::UnknownBatch { batch_id }) if batch_id == unknown
    ));
    assert!(matches!(
        o.handle_outcome(t0(), f.batch_id(), Outcome::Transient),
        Err(DeliveryError::NotInFlight { batch_id }) if batch_id == f.batch_id()
    ));
    assert_eq!(events(&mut o), []);
    assert!(storage(&mut o).is_empty());
    assert_eq!(o.tenant_status(tenant_id(0)), TenantStatus::Online);
    assert_eq!(o.phase(f.batch_id()), Some(Phase::Pending));
}

/// Bug: with three batches in flight, a Transient takes the tenant offline,
/// a Throttled asks it to wait 10 minutes, then a Delivered brings it back
/// online, and the throttle is forgotten: the throttled batch goes again at
/// once.
#[test]
fn throttle_survives_the_tenant_coming_back_online() {
    let policy = no_jitter().with_max_in_flight(3).unwrap();
    let mut o = Outbox::new(policy, 1);
    for i in 0..3 {
        o.push(t0(), frame(0, DataType::Alert, 1, i)).unwrap();
    }
    let sent: Vec<BatchId> = std::iter::from_fn(|| o.poll_transmit(t0()))
        .map(|tx| tx.batch_id)
        .collect();
    assert_eq!(sent.len(), 3);
    o.handle_outcome(t0(), sent[0], Outcome::Transient).unwrap();
    let retry_after = Duration::minutes(10);
    o.handle_outcome(t0(), sent[1], Outcome::Throttled { retry_after })
        .unwrap();
    o.handle_outcome(t0(), sent[2], Outcome::Delivered).unwrap();
    assert!(events(&mut o).contains(&DeliveryEvent::TenantOnline {
        tenant: tenant_id(0)
    }));
    let early = o.poll_transmit(t0()).map(|tx| tx.batch_id);
    assert_eq!(early, None, "sent while throttled until t0 + 10 min");
    assert!(o.poll_transmit(t0() + retry_after).is_some());
}

/// Bug: an online tenant with one batch throttled and another still in
/// flight has room to send when the throttle ends, but `poll_timeout` says
/// nothing is scheduled, so a host following it does not wake.
#[test]
fn throttle_end_is_on_the_timer_while_other_batches_are_in_flight() {
    let mut o = Outbox::new(no_jitter(), 1);
    for i in 0..2 {
        o.push(t0(), frame(0, DataType::Alert, 1, i)).unwrap();
    }
    let a = o.poll_transmit(t0()).unwrap();
    let _b = o.poll_transmit(t0()).unwrap();
    let retry_after = Duration::minutes(5);
    o.handle_outcome(t0(), a.batch_id, Outcome::Throttled { retry_after })
        .unwrap();
    assert!(o.poll_transmit(t0()).is_none());
    assert_eq!(o.poll_timeout(), Some(t0() + retry_after));
}
