//! The async driver over an in-process fake transport and the core's
//! `MemorySpool`: storage operations applied before the next transmit,
//! `max_in_flight` reached and never passed, timers from `poll_timeout`,
//! a `Dropped` on record before its `Remove`, graceful shutdown, spool
//! failures retried before anything is sent.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::Duration;
use common::{frame, t0};
use opsdata::{
    BatchId, DataType, DeliveryEvent, DeliveryPolicy, DropReason, Frame, FrameEncoder, MemorySpool,
    Outcome, Spool, TenantBatch, TenantId, Transmit,
};
use opsdata_io::{
    AgentEvent, AgentSettings, AsyncAgent, AsyncTransport, DriverError, EventJournal,
};
use tokio::sync::Semaphore;

/// What happened, in order, across the spool, the journal and the
/// transport.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Persist(BatchId),
    Remove(BatchId),
    Send(BatchId),
    Journal(DeliveryEvent),
}

type Log = Arc<Mutex<Vec<Step>>>;

fn log_of(log: &Log) -> Vec<Step> {
    log.lock().unwrap().clone()
}

/// A `MemorySpool` that logs each operation, optionally slowly, and fails
/// its first `fail` persists.
struct LoggedSpool {
    inner: MemorySpool,
    log: Log,
    slow: StdDuration,
    fail: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("disk full (test)")]
struct DiskFull;

impl Spool for LoggedSpool {
    type Error = DiskFull;
    fn persist(&mut self, batch_id: BatchId, frame: &Frame) -> Result<(), DiskFull> {
        std::thread::sleep(self.slow);
        if self.fail > 0 {
            self.fail -= 1;
            return Err(DiskFull);
        }
        self.inner.persist(batch_id, frame).unwrap();
        self.log.lock().unwrap().push(Step::Persist(batch_id));
        Ok(())
    }
    fn remove(&mut self, batch_id: BatchId) -> Result<(), DiskFull> {
        self.inner.remove(batch_id).unwrap();
        self.log.lock().unwrap().push(Step::Remove(batch_id));
        Ok(())
    }
    fn load(&mut self, sink: &mut dyn FnMut(Bytes)) -> Result<(), DiskFull> {
        self.inner.load(sink).unwrap();
        Ok(())
    }
}

struct LoggedJournal(Log);
impl EventJournal for LoggedJournal {
    fn record(&mut self, events: &[DeliveryEvent]) -> std::io::Result<()> {
        let mut log = self.0.lock().unwrap();
        log.extend(events.iter().cloned().map(Step::Journal));
        Ok(())
    }
}

/// A journal whose first `fail` records fail.
struct FlakyJournal(Log, usize);
impl EventJournal for FlakyJournal {
    fn record(&mut self, events: &[DeliveryEvent]) -> std::io::Result<()> {
        if self.1 > 0 {
            self.1 -= 1;
            return Err(std::io::Error::other("journal disk full (test)"));
        }
        let mut log = self.0.lock().unwrap();
        log.extend(events.iter().cloned().map(Step::Journal));
        Ok(())
    }
}

/// A transport in the test's hands: each send waits for a permit of
/// `gate`, then answers the next scripted outcome (`Delivered` once the
/// script is empty). Counts sends in flight.
struct Fake {
    log: Log,
    gate: Arc<Semaphore>,
    script: Mutex<VecDeque<Outcome>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    per_tenant: Mutex<std::collections::BTreeMap<TenantId, (usize, usize)>>,
}

impl Fake {
    fn new(log: &Log, open: bool) -> Arc<Fake> {
        Arc::new(Fake {
            log: Arc::clone(log),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
            script: Mutex::new(VecDeque::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            per_tenant: Mutex::new(Default::default()),
        })
    }
    fn script(&self, outcomes: impl IntoIterator<Item = Outcome>) {
        self.script.lock().unwrap().extend(outcomes);
    }
    fn max_for(&self, tenant: TenantId) -> usize {
        self.per_tenant
            .lock()
            .unwrap()
            .get(&tenant)
            .map_or(0, |t| t.1)
    }
}

/// The driver takes the transport by value; the test keeps an `Arc`.
struct Shared(Arc<Fake>);

impl AsyncTransport for Shared {
    async fn send(&self, tx: &Transmit) -> Outcome {
        let f = &self.0;
        {
            // The batch must be durable before it is sent.
            let mut log = f.log.lock().unwrap();
            assert!(
                log.contains(&Step::Persist(tx.batch_id)),
                "{} sent before it was persisted",
                tx.batch_id
            );
            log.push(Step::Send(tx.batch_id));
        }
        let now = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        f.max_in_flight.fetch_max(now, Ordering::SeqCst);
        {
            let mut t = f.per_tenant.lock().unwrap();
            let e = t.entry(tx.tenant).or_default();
            e.0 += 1;
            e.1 = e.1.max(e.0);
        }
        f.gate.acquire().await.unwrap().forget();
        f.per_tenant.lock().unwrap().get_mut(&tx.tenant).unwrap().0 -= 1;
        f.in_flight.fetch_sub(1, Ordering::SeqCst);
        f.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Outcome::Delivered)
    }
}

fn spool(log: &Log) -> LoggedSpool {
    LoggedSpool {
        inner: MemorySpool::new(),
        log: Arc::clone(log),
        slow: StdDuration::ZERO,
        fail: 0,
    }
}

fn settings(max_in_flight: u32) -> AgentSettings {
    let policy = DeliveryPolicy::default()
        .with_max_in_flight(max_in_flight)
        .unwrap();
    AgentSettings::new(policy, 7).with_clock(Arc::new(t0))
}

/// Runs a test body with a bound of `secs`: a test that would hang fails
/// instead. In the paused-time tests the bound is on virtual time (a day,
/// when the timers they wait for are minutes away).
async fn bounded(secs: u64, body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(StdDuration::from_secs(secs), body)
        .await
        .expect("the test finished within its bound");
}

/// Waits (generously bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Reads events until `n` batches are settled (delivered or dropped).
async fn settled<S>(agent: &mut AsyncAgent<S>, n: usize) -> Vec<DeliveryEvent> {
    let mut seen = Vec::new();
    let mut settled = 0;
    while settled < n {
        let event = tokio::time::timeout(StdDuration::from_secs(30), agent.next_event())
            .await
            .expect("events within 30 s")
            .expect("the driver is running");
        if let AgentEvent::Delivery(e) = event {
            if matches!(
                e,
                DeliveryEvent::Delivered { .. } | DeliveryEvent::Dropped { .. }
            ) {
                settled += 1;
            }
            seen.push(e);
        }
    }
    seen
}

fn index(log: &[Step], step: &Step) -> usize {
    log.iter()
        .position(|s| s == step)
        .unwrap_or_else(|| panic!("{step:?} not in the log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_applied_before_the_next_transmit() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, true);
        let mut slow = spool(&log);
        // A slow disk: a race between a persist and a send would show.
        slow.slow = StdDuration::from_millis(3);
        let (mut agent, _) = AsyncAgent::start(settings(4), Shared(Arc::clone(&fake)), slow)
            .await
            .unwrap();
        // Four pushers at once.
        let mut pushers = tokio::task::JoinSet::new();
        for p in 0..4u64 {
            let handle = agent.handle();
            pushers.spawn(async move {
                for i in 0..10 {
                    handle.push(frame(p * 100 + i, 1, 10)).await.unwrap();
                }
            });
        }
        pushers.join_all().await;
        let events = settled(&mut agent, 40).await;
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, DeliveryEvent::Delivered { .. }))
                .count(),
            40
        );
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
        let log = log_of(&log);
        for step in &log {
            if let Step::Send(id) = step {
                assert!(index(&log, &Step::Persist(*id)) < index(&log, step));
            }
            if let Step::Remove(id) = step {
                // Removed only after it was sent and delivered.
                assert!(index(&log, &Step::Send(*id)) < index(&log, step));
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_returns_once_its_frame_is_durable() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, false);
        let (agent, _) = AsyncAgent::start(settings(4), Shared(Arc::clone(&fake)), spool(&log))
            .await
            .unwrap();
        for i in 0..5 {
            agent.push(frame(i, 1, 10)).await.unwrap();
            assert!(log_of(&log).contains(&Step::Persist(common::batch_id(i))));
        }
        // The same batch again: refused, nothing changes.
        let again = agent.push(frame(0, 1, 10)).await;
        assert!(matches!(again, Err(DriverError::Delivery(_))), "{again:?}");
        assert_eq!(agent.status().await.unwrap().held_batches, 5);
        fake.gate.add_permits(100);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_reached_and_never_passed() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, false);
        let (mut agent, _) = AsyncAgent::start(settings(4), Shared(Arc::clone(&fake)), spool(&log))
            .await
            .unwrap();
        for i in 0..12 {
            agent.push(frame(i, 1, 10)).await.unwrap();
        }
        until("4 requests in flight", || {
            fake.in_flight.load(Ordering::SeqCst) == 4
        })
        .await;
        let status = agent.status().await.unwrap();
        assert_eq!((status.in_flight, status.phases.in_flight), (4, 4));
        assert_eq!(status.phases.pending, 8);
        // One at a time: each completion lets exactly one more go.
        for done in 1..=8 {
            fake.gate.add_permits(1);
            until("the next request", || {
                log_of(&log)
                    .iter()
                    .filter(|s| matches!(s, Step::Send(_)))
                    .count()
                    == 4 + done
            })
            .await;
            assert!(fake.in_flight.load(Ordering::SeqCst) <= 4);
        }
        fake.gate.add_permits(100);
        settled(&mut agent, 12).await;
        assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
    })
    .await;
}

fn tenant_frame(tenant: TenantId, n: u8) -> Frame {
    FrameEncoder::new()
        .encode_frame(
            &TenantBatch::new(tenant, DataType::Event),
            BatchId::from_random_bytes([n; 16]),
            t0(),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_per_tenant() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, false);
        let (mut agent, _) = AsyncAgent::start(settings(2), Shared(Arc::clone(&fake)), spool(&log))
            .await
            .unwrap();
        let a: TenantId = "11111111-1111-4111-8111-111111111111".parse().unwrap();
        let b: TenantId = "22222222-2222-4222-8222-222222222222".parse().unwrap();
        for n in 1..=6u8 {
            agent.push(tenant_frame(a, n)).await.unwrap();
            agent.push(tenant_frame(b, n + 100)).await.unwrap();
        }
        until("2 + 2 requests in flight", || {
            fake.in_flight.load(Ordering::SeqCst) == 4
        })
        .await;
        fake.gate.add_permits(100);
        settled(&mut agent, 12).await;
        assert_eq!((fake.max_for(a), fake.max_for(b)), (2, 2));
        assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 4);
        agent.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_retry_timer_fires_from_poll_timeout() {
    bounded(86_400, async move {
        let log = Log::default();
        let fake = Fake::new(&log, true);
        // The first send fails: the tenant goes offline, its probe retried on
        // the 8-minute grid.
        fake.script([Outcome::Transient]);
        let start = tokio::time::Instant::now();
        let clock = Arc::new(move || {
            t0() + Duration::from_std(tokio::time::Instant::now() - start).unwrap()
        });
        let (mut agent, _) = AsyncAgent::start(
            settings(4).with_clock(clock.clone()),
            Shared(Arc::clone(&fake)),
            spool(&log),
        )
        .await
        .unwrap();
        agent.push(frame(1, 1, 10)).await.unwrap();
        let mut retry_at = None;
        let delivered_at = loop {
            match agent.next_event().await.unwrap() {
                AgentEvent::Delivery(DeliveryEvent::RetryScheduled { at, .. }) => {
                    retry_at = Some(at)
                }
                AgentEvent::Delivery(DeliveryEvent::Delivered { .. }) => break clock(),
                _ => {}
            }
        };
        let retry_at = retry_at.expect("a retry was scheduled");
        assert_eq!(retry_at, t0() + Duration::minutes(8));
        // Sent again when the timer came due, not before.
        assert!(delivered_at >= retry_at, "{delivered_at} < {retry_at}");
        assert_eq!(
            log_of(&log)
                .iter()
                .filter(|s| matches!(s, Step::Send(_)))
                .count(),
            2
        );
        agent.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_expired_batch_is_dropped_by_the_timer() {
    bounded(86_400, async move {
        let log = Log::default();
        // The service is down: nothing is delivered, the batch waits.
        let fake = Fake::new(&log, true);
        fake.script(std::iter::repeat_n(Outcome::Transient, 100));
        let start = tokio::time::Instant::now();
        let clock = Arc::new(move || {
            t0() + Duration::from_std(tokio::time::Instant::now() - start).unwrap()
        });
        let policy = DeliveryPolicy::default()
            .with_expire_after(DataType::Performance, Some(Duration::minutes(30)))
            .unwrap();
        let (mut agent, _) = AsyncAgent::start_with_journal(
            AgentSettings::new(policy, 1).with_clock(clock.clone()),
            Shared(Arc::clone(&fake)),
            spool(&log),
            LoggedJournal(Arc::clone(&log)),
        )
        .await
        .unwrap();
        agent.push(frame(1, 1, 10)).await.unwrap();
        // Paused time: no timeout here, it would jump ahead too.
        let reason = loop {
            if let AgentEvent::Delivery(DeliveryEvent::Dropped { reason, .. }) =
                agent.next_event().await.unwrap()
            {
                break reason;
            }
        };
        assert_eq!(reason, DropReason::Expired);
        assert!(clock() >= t0() + Duration::minutes(30));
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_is_on_record_before_its_remove() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, false);
        // One in flight at a time; the outbox holds three frames: pushes
        // evict the oldest waiting ones.
        let size = frame(0, 1, 10).len() as u64;
        let policy = DeliveryPolicy::default()
            .with_max_in_flight(1)
            .unwrap()
            .with_limit_bytes(3 * size)
            .unwrap();
        let (mut agent, _) = AsyncAgent::start_with_journal(
            AgentSettings::new(policy, 1).with_clock(Arc::new(t0)),
            Shared(Arc::clone(&fake)),
            spool(&log),
            LoggedJournal(Arc::clone(&log)),
        )
        .await
        .unwrap();
        for i in 0..6 {
            agent.push(frame(i, 1, 10)).await.unwrap();
        }
        // And the service rejects the next one it answers.
        fake.script([Outcome::Rejected]);
        fake.gate.add_permits(100);
        let events = settled(&mut agent, 6).await;
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
        let log = log_of(&log);
        let mut reasons = BTreeSet::new();
        for e in &events {
            if let DeliveryEvent::Dropped {
                batch_id, reason, ..
            } = e
            {
                reasons.insert(format!("{reason:?}"));
                let on_record = index(&log, &Step::Journal(e.clone()));
                assert!(on_record < index(&log, &Step::Remove(*batch_id)));
            }
        }
        assert_eq!(
            reasons,
            BTreeSet::from(["QueueFull".to_owned(), "Rejected".to_owned()])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight_and_keeps_the_rest() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, false);
        let (agent, _) = AsyncAgent::start(settings(2), Shared(Arc::clone(&fake)), spool(&log))
            .await
            .unwrap();
        let handle = agent.handle();
        for i in 0..5 {
            agent.push(frame(i, 1, 10)).await.unwrap();
        }
        until("2 requests in flight", || {
            fake.in_flight.load(Ordering::SeqCst) == 2
        })
        .await;
        let mut agent = agent;
        let stopping = tokio::spawn(async move {
            let spool = agent.shutdown().await;
            (agent, spool)
        });
        for _ in 0..10_000 {
            if handle.status().await.unwrap().stopping {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(1)).await;
        }
        assert!(matches!(
            handle.push(frame(99, 1, 10)).await,
            Err(DriverError::Stopped)
        ));
        // The two in flight finish; nothing new starts.
        fake.gate.add_permits(100);
        let (mut agent, spool) = stopping.await.unwrap();
        let spool = spool.unwrap();
        let sends = log_of(&log)
            .iter()
            .filter(|s| matches!(s, Step::Send(_)))
            .count();
        assert_eq!(sends, 2);
        assert_eq!(spool.inner.len(), 3, "the rest is in the spool");
        let mut delivered = 0;
        while let Some(e) = agent.next_event().await {
            delivered += usize::from(matches!(
                e,
                AgentEvent::Delivery(DeliveryEvent::Delivered { .. })
            ));
        }
        assert_eq!(delivered, 2);
        assert!(matches!(handle.status().await, Err(DriverError::Stopped)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_recovered_and_sent_first() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, true);
        let mut s = spool(&log);
        for i in 0..3 {
            s.persist(common::batch_id(i), &frame(i, 1, 10)).unwrap();
        }
        let (mut agent, report) = AsyncAgent::start(settings(4), Shared(Arc::clone(&fake)), s)
            .await
            .unwrap();
        assert_eq!(report.recovered, 3);
        settled(&mut agent, 3).await;
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_spool_is_retried_and_nothing_is_sent_meanwhile() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, true);
        let mut s = spool(&log);
        s.fail = 3;
        let (mut agent, _) = AsyncAgent::start(
            settings(4)
                .with_storage_retry(StdDuration::from_millis(5))
                .unwrap(),
            Shared(Arc::clone(&fake)),
            s,
        )
        .await
        .unwrap();
        // The push waits until the frame is durable.
        agent.push(frame(1, 1, 10)).await.unwrap();
        let mut failures = 0;
        loop {
            match agent.next_event().await.unwrap() {
                AgentEvent::SpoolFailed { .. } => failures += 1,
                AgentEvent::Delivery(DeliveryEvent::Delivered { .. }) => break,
                _ => {}
            }
        }
        assert_eq!(failures, 3);
        // The fake checks on each send that its batch was persisted first.
        assert_eq!(
            log_of(&log)
                .iter()
                .filter(|s| matches!(s, Step::Send(_)))
                .count(),
            1
        );
        agent.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_journal_holds_back_the_removes_behind_it() {
    bounded(120, async move {
        let log = Log::default();
        let fake = Fake::new(&log, true);
        fake.script([Outcome::Rejected]);
        let (mut agent, _) = AsyncAgent::start_with_journal(
            settings(4)
                .with_storage_retry(StdDuration::from_millis(5))
                .unwrap(),
            Shared(Arc::clone(&fake)),
            spool(&log),
            FlakyJournal(Arc::clone(&log), 3),
        )
        .await
        .unwrap();
        agent.push(frame(1, 1, 10)).await.unwrap();
        let mut failures = 0;
        loop {
            match agent.next_event().await.unwrap() {
                AgentEvent::JournalFailed { .. } => failures += 1,
                AgentEvent::Delivery(DeliveryEvent::Dropped { .. }) => break,
                _ => {}
            }
        }
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.inner.is_empty());
        // The first record (the push's) succeeded; the drop's failed three
        // times, and its batch stayed in the spool until it was on record.
        assert_eq!(failures, 3);
        let log = log_of(&log);
        let id = common::batch_id(1);
        let dropped = log
            .iter()
            .position(|s| matches!(s, Step::Journal(DeliveryEvent::Dropped { .. })))
            .expect("the drop on record");
        assert!(dropped < index(&log, &Step::Remove(id)));
    })
    .await;
}
