//! The outbox in scenarios: the 8-minute / 2-hour schedule, the queue, drop
//! priority, outcomes, storage, recovery, and the Agent driver.

mod common;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    Agent, BatchId, DataType, DeliveryError, DeliveryEvent, DeliveryPolicy, DropReason, Frame,
    FrameEncoder, FrameLimits, MemorySpool, MemoryTransport, Outbox, Outcome, Phase, Spool,
    StorageOp, Tagged, TenantBatch, TenantId, TenantStatus,
};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn tenant(n: u128) -> TenantId {
    TenantId::new(Uuid::from_u128(n)).unwrap()
}

/// A frame of `records` sample records of `t` for tenant `n`, with id `id`.
fn frame(n: u128, t: DataType, records: usize, id: u128) -> Frame {
    let tenant = tenant(n);
    let batch = TenantBatch::from_records(
        tenant,
        t,
        (0..records).map(|_| Tagged::new(tenant, common::sample(t))),
    )
    .unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, BatchId::new(Uuid::from_u128(id)).unwrap(), t0())
        .unwrap()
}

fn events(o: &mut Outbox) -> Vec<DeliveryEvent> {
    std::iter::from_fn(|| o.poll_event()).collect()
}
fn storage(o: &mut Outbox) -> Vec<StorageOp> {
    std::iter::from_fn(|| o.poll_storage()).collect()
}

fn no_jitter() -> DeliveryPolicy {
    DeliveryPolicy::default().with_jitter_percent(0).unwrap()
}

#[test]
fn retries_every_8_minutes_for_2_hours_then_queues_with_backoff() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Alert, 1, 1)).unwrap();
    let _ = storage(&mut o);
    let tx = o.poll_transmit(t0()).unwrap();
    let f = t0() + Duration::seconds(30);
    o.handle_outcome(f, tx.batch_id, Outcome::Transient)
        .unwrap();
    let ev = events(&mut o);
    assert_eq!(
        ev[0],
        DeliveryEvent::TenantOffline {
            tenant: tenant(1),
            since: f
        }
    );
    assert_eq!(
        o.tenant_status(tenant(1)),
        TenantStatus::Offline { since: f }
    );
    assert_eq!(o.phase(tx.batch_id), Some(Phase::Cached));

    // Probes exactly at F + 8 min, F + 16 min, ..., F + 120 min.
    let mut attempts = Vec::new();
    let mut now = f;
    for k in 1..=15 {
        let due = o.poll_timeout().unwrap();
        assert_eq!(due, f + Duration::minutes(8 * k), "probe {k}");
        // Nothing goes out a millisecond early.
        assert!(o.poll_transmit(due - Duration::milliseconds(1)).is_none());
        now = due;
        o.handle_timeout(now);
        let tx = o.poll_transmit(now).unwrap();
        attempts.push(tx.attempt);
        o.handle_outcome(now, tx.batch_id, Outcome::Transient)
            .unwrap();
    }
    assert_eq!(attempts, (2..=16).collect::<Vec<u32>>());
    // Past the window: the Queued event, then waits that grow up to 1 h.
    o.handle_timeout(now);
    let ev = events(&mut o);
    assert!(
        ev.iter().any(
            |e| matches!(e, DeliveryEvent::Queued { tenant: t, batches: 1 } if *t == tenant(1))
        ),
        "{ev:?}"
    );
    assert_eq!(o.phase(tx.batch_id), Some(Phase::Queued));
    let mut waits = Vec::new();
    for _ in 0..5 {
        let due = o.poll_timeout().unwrap();
        waits.push((due - now).num_minutes());
        now = due;
        let tx = o.poll_transmit(now).unwrap();
        o.handle_outcome(now, tx.batch_id, Outcome::Transient)
            .unwrap();
    }
    // Queued waits: retry_interval, then doubling, capped at 1 h.
    assert_eq!(waits, [8, 16, 32, 60, 60]);
    // Success brings the tenant back.
    let due = o.poll_timeout().unwrap();
    let tx = o.poll_transmit(due).unwrap();
    o.handle_outcome(due, tx.batch_id, Outcome::Delivered)
        .unwrap();
    let ev = events(&mut o);
    assert!(ev.contains(&DeliveryEvent::TenantOnline { tenant: tenant(1) }));
    assert_eq!(o.held_batches(), 0);
    assert_eq!(o.poll_timeout(), None);
}

#[test]
fn jitter_only_shortens_queued_waits_and_is_reproducible() {
    let run = |seed| {
        let policy = DeliveryPolicy::default()
            .with_cache_window(Duration::minutes(8))
            .unwrap();
        let mut o = Outbox::new(policy, seed);
        o.push(t0(), frame(1, DataType::Alert, 1, 1)).unwrap();
        let mut now = t0();
        let tx = o.poll_transmit(now).unwrap();
        o.handle_outcome(now, tx.batch_id, Outcome::Transient)
            .unwrap();
        let mut waits = Vec::new();
        for _ in 0..6 {
            o.handle_timeout(now); // the drain contract: timers first
            let due = o.poll_timeout().unwrap();
            waits.push(due - now);
            now = due;
            let tx = o.poll_transmit(now).unwrap();
            o.handle_outcome(now, tx.batch_id, Outcome::Transient)
                .unwrap();
        }
        waits
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    // The first wait is the cache-window slot; queued wait n lies within
    // [80 %, 100 %] of min(8 min * 2^(n-1), 1 h).
    for (n, w) in a.iter().enumerate().skip(1) {
        let base = (Duration::minutes(8) * (1 << (n - 1))).min(Duration::hours(1));
        assert!(
            *w <= base && *w >= base * 4 / 5,
            "wait {n}: {w} against {base}"
        );
    }
}

#[test]
fn drops_begin_with_performance_and_oldest_first() {
    let first = [
        frame(1, DataType::Performance, 3, 1),
        frame(1, DataType::Alert, 1, 2),
        frame(1, DataType::Performance, 3, 3),
        frame(1, DataType::Event, 1, 4),
    ];
    let state = frame(1, DataType::State, 1, 5);
    let total: u64 = first.iter().map(|f| f.len() as u64).sum();
    // Room for the four; the State frame fits once exactly the first
    // Performance frame is gone.
    let limit = total + (state.len() as u64).saturating_sub(first[0].len() as u64);
    let policy = no_jitter().with_limit_bytes(limit).unwrap();
    let mut o = Outbox::new(policy, 1);
    for f in first {
        o.push(t0(), f).unwrap();
    }
    assert!(events(&mut o).is_empty(), "the first four fit");
    // Full: a new State frame evicts the oldest Performance.
    o.push(t0(), state).unwrap();
    let dropped: Vec<_> = events(&mut o)
        .into_iter()
        .filter_map(|e| match e {
            DeliveryEvent::Dropped {
                batch_id,
                data_type,
                reason,
                ..
            } => Some((batch_id, data_type, reason)),
            _ => None,
        })
        .collect();
    let id = |n| BatchId::new(Uuid::from_u128(n)).unwrap();
    // Exactly the oldest Performance frame makes room.
    assert_eq!(
        dropped,
        [(id(1), DataType::Performance, DropReason::QueueFull)]
    );
    assert!(o.held_bytes() <= o.policy().limit_bytes());
    assert_eq!(o.phase(id(3)), Some(Phase::Pending));
    assert_eq!(o.phase(id(5)), Some(Phase::Pending));
}

#[test]
fn a_new_performance_frame_is_refused_rather_than_evict_an_alert() {
    let alert = frame(1, DataType::Alert, 1, 1);
    let policy = no_jitter()
        .with_limit_bytes(alert.len() as u64 * 2)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), alert).unwrap();
    o.push(t0(), frame(1, DataType::Alert, 1, 2)).unwrap();
    let _ = events(&mut o);
    let _ = storage(&mut o);
    o.push(t0(), frame(1, DataType::Performance, 1, 3)).unwrap();
    let ev = events(&mut o);
    assert!(
        matches!(
            ev.as_slice(),
            [DeliveryEvent::Dropped {
                data_type: DataType::Performance,
                reason: DropReason::QueueFull,
                ..
            }]
        ),
        "{ev:?}"
    );
    // Refused outright: never persisted, so nothing to remove.
    assert!(storage(&mut o).is_empty());
    assert_eq!(o.held_batches(), 2);
}

#[test]
fn in_flight_batches_are_never_evicted() {
    let perf = frame(1, DataType::Performance, 1, 1);
    let policy = no_jitter()
        .with_limit_bytes(perf.len() as u64 + 10)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), perf).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    let _ = events(&mut o);
    o.push(t0(), frame(1, DataType::Performance, 1, 2)).unwrap();
    let ev = events(&mut o);
    assert!(
        matches!(ev.as_slice(), [DeliveryEvent::Dropped { batch_id, .. }] if *batch_id != tx.batch_id)
    );
    assert_eq!(o.phase(tx.batch_id), Some(Phase::InFlight));
}

#[test]
fn tenants_are_independent() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Event, 1, 1)).unwrap();
    o.push(t0(), frame(2, DataType::Event, 1, 2)).unwrap();
    let a = o.poll_transmit(t0()).unwrap();
    let b = o.poll_transmit(t0()).unwrap();
    assert_ne!(a.tenant, b.tenant);
    let (down, up) = if a.tenant == tenant(1) {
        (a, b)
    } else {
        (b, a)
    };
    o.handle_outcome(t0(), down.batch_id, Outcome::Transient)
        .unwrap();
    o.handle_outcome(t0(), up.batch_id, Outcome::Delivered)
        .unwrap();
    // Tenant 2 keeps sending at once while tenant 1 waits 8 minutes.
    o.push(t0(), frame(2, DataType::Event, 1, 3)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    assert_eq!(tx.tenant, tenant(2));
    assert!(o.poll_transmit(t0()).is_none());
    assert_eq!(o.tenant_status(tenant(2)), TenantStatus::Online);
}

#[test]
fn an_online_tenant_sends_oldest_first_within_max_in_flight() {
    let policy = no_jitter().with_max_in_flight(2).unwrap();
    let mut o = Outbox::new(policy, 1);
    for id in 1..=5 {
        o.push(t0(), frame(1, DataType::Event, 1, id)).unwrap();
    }
    let a = o.poll_transmit(t0()).unwrap();
    let b = o.poll_transmit(t0()).unwrap();
    assert!(o.poll_transmit(t0()).is_none());
    let id = |n| BatchId::new(Uuid::from_u128(n)).unwrap();
    assert_eq!((a.batch_id, b.batch_id), (id(1), id(2)));
    o.handle_outcome(t0(), a.batch_id, Outcome::Delivered)
        .unwrap();
    assert_eq!(o.poll_transmit(t0()).unwrap().batch_id, id(3));
}

#[test]
fn an_offline_tenant_probes_with_its_oldest_most_important_batch() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Performance, 1, 1)).unwrap();
    o.push(t0(), frame(1, DataType::Event, 1, 2)).unwrap();
    o.push(t0(), frame(1, DataType::Alert, 1, 3)).unwrap();
    o.push(t0(), frame(1, DataType::Alert, 1, 4)).unwrap();
    let sent: Vec<_> = std::iter::from_fn(|| o.poll_transmit(t0())).collect();
    assert_eq!(sent.len(), 4);
    for tx in &sent {
        o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
            .unwrap();
    }
    let due = o.poll_timeout().unwrap();
    let probe = o.poll_transmit(due).unwrap();
    assert_eq!(probe.batch_id, BatchId::new(Uuid::from_u128(3)).unwrap());
    assert!(o.poll_transmit(due).is_none(), "one probe at a time");
}

#[test]
fn throttling_is_honoured_and_clamped() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Event, 1, 1)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(
        t0(),
        tx.batch_id,
        Outcome::Throttled {
            retry_after: Duration::seconds(90),
        },
    )
    .unwrap();
    assert!(o.poll_transmit(t0() + Duration::seconds(89)).is_none());
    let tx = o.poll_transmit(t0() + Duration::seconds(90)).unwrap();
    // A hostile Retry-After of a year waits at most max_retry_after (1 h).
    let now = t0() + Duration::seconds(90);
    o.handle_outcome(
        now,
        tx.batch_id,
        Outcome::Throttled {
            retry_after: Duration::days(365),
        },
    )
    .unwrap();
    assert_eq!(o.poll_timeout(), Some(now + Duration::hours(1)));
    assert_eq!(o.tenant_status(tenant(1)), TenantStatus::Online);
}

#[test]
fn rejected_batches_are_dropped_not_retried() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Event, 2, 1)).unwrap();
    let _ = storage(&mut o);
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Rejected)
        .unwrap();
    assert!(matches!(
        events(&mut o).as_slice(),
        [DeliveryEvent::Dropped {
            reason: DropReason::Rejected,
            records: 2,
            ..
        }]
    ));
    assert!(matches!(
        storage(&mut o).as_slice(),
        [StorageOp::Remove { .. }]
    ));
    assert!(o.poll_transmit(t0()).is_none());
    assert_eq!(o.held_batches(), 0);
}

#[test]
fn misuse_is_a_typed_error_that_changes_nothing() {
    let mut o = Outbox::new(no_jitter(), 1);
    let f = frame(1, DataType::Event, 1, 1);
    o.push(t0(), f.clone()).unwrap();
    let err = o.push(t0(), f.clone()).unwrap_err();
    assert!(matches!(err, DeliveryError::DuplicateBatch { ref frame, .. } if **frame == f));
    let unknown = BatchId::new(Uuid::from_u128(99)).unwrap();
    assert!(matches!(
        o.handle_outcome(t0(), unknown, Outcome::Delivered),
        Err(DeliveryError::UnknownBatch { .. })
    ));
    assert!(matches!(
        o.handle_outcome(t0(), f.batch_id(), Outcome::Delivered),
        Err(DeliveryError::NotInFlight { .. })
    ));
    assert_eq!(o.held_batches(), 1);
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Delivered)
        .unwrap();
    assert!(matches!(
        o.handle_outcome(t0(), tx.batch_id, Outcome::Delivered),
        Err(DeliveryError::UnknownBatch { .. })
    ));
}

#[test]
fn time_going_backwards_is_taken_as_the_latest_seen() {
    let mut o = Outbox::new(no_jitter(), 1);
    o.push(t0(), frame(1, DataType::Event, 1, 1)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    let due = o.poll_timeout().unwrap();
    // A clock stepping back after the due time does not delay the probe.
    o.handle_timeout(due);
    assert!(o.poll_transmit(t0()).is_some());
}

#[test]
fn batches_expire_when_asked_to() {
    let policy = no_jitter()
        .with_expire_after(DataType::Performance, Some(Duration::minutes(30)))
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(1, DataType::Performance, 1, 1)).unwrap();
    o.push(t0(), frame(1, DataType::Alert, 1, 2)).unwrap();
    let sent: Vec<_> = std::iter::from_fn(|| o.poll_transmit(t0())).collect();
    for tx in sent {
        o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
            .unwrap();
    }
    let _ = events(&mut o);
    o.handle_timeout(t0() + Duration::minutes(29));
    assert!(
        events(&mut o)
            .iter()
            .all(|e| !matches!(e, DeliveryEvent::Dropped { .. }))
    );
    o.handle_timeout(t0() + Duration::minutes(30));
    let ev = events(&mut o);
    assert!(
        matches!(
            ev.as_slice(),
            [DeliveryEvent::Dropped {
                data_type: DataType::Performance,
                reason: DropReason::Expired,
                ..
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(o.held_batches(), 1);
}

#[test]
fn a_tenant_limit_keeps_one_tenants_backlog_from_evicting_another() {
    let one = frame(1, DataType::Alert, 1, 1).len() as u64;
    let policy = no_jitter()
        .with_limit_bytes(one * 3)
        .unwrap()
        .with_tenant_limit_bytes(Some(one * 2))
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(2, DataType::Performance, 1, 100))
        .unwrap();
    for id in 1..=5 {
        o.push(t0(), frame(1, DataType::Alert, 1, id)).unwrap();
    }
    // Tenant 1 may hold two frames; its third and later evict its own.
    assert_eq!(o.tenant_held(tenant(1)).0, 2);
    assert_eq!(
        o.tenant_held(tenant(2)).0,
        1,
        "tenant 2's Performance frame survives"
    );
}

#[test]
fn storage_ops_persist_before_send_and_remove_after() {
    let mut o = Outbox::new(no_jitter(), 1);
    let f = frame(1, DataType::Event, 1, 1);
    o.push(t0(), f.clone()).unwrap();
    assert!(
        matches!(storage(&mut o).as_slice(), [StorageOp::Persist { frame, .. }] if *frame == f)
    );
    let tx = o.poll_transmit(t0()).unwrap();
    assert!(storage(&mut o).is_empty());
    o.handle_outcome(t0(), tx.batch_id, Outcome::Delivered)
        .unwrap();
    assert!(
        matches!(storage(&mut o).as_slice(), [StorageOp::Remove { batch_id }] if *batch_id == f.batch_id())
    );
}

#[test]
fn recovery_skips_damaged_frames_and_duplicates() {
    let good = frame(1, DataType::Event, 1, 1);
    let mut damaged = good.as_bytes().to_vec();
    damaged[70] ^= 0xff;
    let frames = vec![
        Bytes::from_static(b"not a frame"),
        good.as_bytes().clone(),
        Bytes::from(damaged),
        good.as_bytes().clone(),
        frame(2, DataType::Alert, 1, 2).into_bytes(),
    ];
    let (mut o, report) = Outbox::recover(no_jitter(), 1, t0(), frames, &FrameLimits::default());
    assert_eq!(report.recovered, 2);
    assert_eq!(report.duplicates, 1);
    assert_eq!(
        report.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
        [0, 2]
    );
    assert!(
        storage(&mut o).is_empty(),
        "recovered frames are not persisted again"
    );
    assert_eq!(o.held_batches(), 2);
}

#[test]
fn the_agent_drives_outbox_transport_and_spool() {
    let mut agent = Agent::new(
        Outbox::new(no_jitter(), 1),
        MemoryTransport::new(),
        MemorySpool::new(),
    );
    agent.transport_mut().set_reachable(tenant(1), false);
    agent.push(t0(), frame(1, DataType::Alert, 1, 1)).unwrap();
    agent.push(t0(), frame(2, DataType::Alert, 1, 2)).unwrap();
    assert_eq!(agent.transport().delivered().len(), 1);
    assert_eq!(agent.spool().len(), 1, "the undelivered frame is spooled");
    agent.transport_mut().set_reachable(tenant(1), true);
    let wake = agent.next_wakeup().unwrap();
    assert_eq!(wake, t0() + Duration::minutes(8));
    agent.tick(wake).unwrap();
    assert_eq!(agent.transport().delivered().len(), 2);
    assert!(agent.spool().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Cut a run at a random point, throw the agent's memory away, recover
    /// from the spool and carry on: every record pushed is delivered (the
    /// service de-duplicates by batch id) or reported dropped; none is lost.
    /// A cut is between steps, or mid-drain: a transmit has been handed out
    /// (a batch is in flight) and its outcome never comes back, whether the
    /// send was lost on the way or the service took it.
    #[test]
    fn crash_recovery_loses_nothing(
        steps in proptest::collection::vec((0u128..3, common::data_type(), 1usize..4, 0i64..30, any::<bool>()), 1..40),
        crash_at in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3), 0..3),
        small_limit in any::<bool>(),
    ) {
        let limit = if small_limit { 6 << 10 } else { 100 << 20 };
        let policy = no_jitter().with_limit_bytes(limit).unwrap();
        let crashes: Vec<(usize, u8)> =
            crash_at.iter().map(|(i, mode)| (i.index(steps.len()), *mode)).collect();
        // Batches the service took whose outcome was lost in a crash.
        let mut outcome_lost = std::collections::BTreeSet::new();
        let mut extra_id = 1000u128;
        let mut transport = MemoryTransport::new();
        let mut spool = MemorySpool::new();
        let mut agent = Agent::new(Outbox::new(policy.clone(), 1), transport.clone(), spool.clone());
        let mut now = t0();
        let mut pushed = std::collections::BTreeMap::new();
        let mut dropped = std::collections::BTreeSet::new();
        for (i, (n, t, records, minutes, reachable)) in steps.into_iter().enumerate() {
            now += Duration::minutes(minutes);
            agent.transport_mut().set_reachable(tenant(n + 1), reachable);
            let f = frame(n + 1, t, records, i as u128 + 1);
            pushed.insert(f.batch_id(), records);
            agent.push(now, f).unwrap();
            agent.tick(now).unwrap();
            while let Some(e) = agent.poll_event() {
                if let DeliveryEvent::Dropped { batch_id, .. } = e {
                    prop_assert!(dropped.insert(batch_id));
                }
            }
            for &(_, mode) in crashes.iter().filter(|c| c.0 == i) {
                // The process dies: only the transport's record of what the
                // service took and the spool survive.
                let (mut outbox, mut t, mut s) = agent.into_parts();
                if mode > 0 {
                    // Mid-drain: a fresh tenant's frame makes sure something
                    // is due; a transmit is handed out, and the process dies
                    // before its outcome is handled.
                    extra_id += 1;
                    let f = frame(4, DataType::Event, 1, extra_id);
                    pushed.insert(f.batch_id(), 1);
                    outbox.push(now, f).unwrap();
                    while let Some(op) = outbox.poll_storage() {
                        match op {
                            StorageOp::Persist { batch_id, frame } => s.persist(batch_id, &frame).unwrap(),
                            StorageOp::Remove { batch_id } => s.remove(batch_id).unwrap(),
                            _ => unreachable!(),
                        }
                    }
                    while let Some(e) = outbox.poll_event() {
                        if let DeliveryEvent::Dropped { batch_id, .. } = e {
                            prop_assert!(dropped.insert(batch_id));
                        }
                    }
                    let tx = outbox.poll_transmit(now);
                    prop_assert!(tx.is_some(), "a batch is in flight at the crash");
                    let tx = tx.unwrap();
                    prop_assert_eq!(outbox.phase(tx.batch_id), Some(Phase::InFlight));
                    if mode == 2 {
                        // The service took it; the answer is lost.
                        let _ = opsdata::Transport::send(&mut t, now, &tx);
                        outcome_lost.insert(tx.batch_id);
                    }
                }
                drop(outbox);
                transport = t;
                spool = s;
                let (recovered, report) = Agent::recover(policy.clone(), 1, now, transport.clone(), spool.clone(), &FrameLimits::default()).unwrap();
                prop_assert!(report.skipped.is_empty());
                agent = recovered;
            }
        }
        // The service comes back for everyone; drain.
        for n in 1..=3 {
            agent.transport_mut().set_reachable(tenant(n), true);
        }
        for _ in 0..40 {
            match agent.next_wakeup() {
                Some(at) => { now = now.max(at); agent.tick(now).unwrap(); }
                None => break,
            }
            while let Some(e) = agent.poll_event() {
                if let DeliveryEvent::Dropped { batch_id, .. } = e {
                    prop_assert!(dropped.insert(batch_id));
                }
            }
        }
        prop_assert_eq!(agent.outbox().held_batches(), 0);
        let delivered: std::collections::BTreeSet<BatchId> =
            agent.transport().delivered().iter().map(|f| f.batch_id()).collect();
        for id in pushed.keys() {
            if outcome_lost.contains(id) {
                // The service has it; the outbox, never told, may still
                // have sent it again or dropped it later: at least once.
                prop_assert!(delivered.contains(id), "batch {} taken, then lost", id);
                continue;
            }
            prop_assert!(delivered.contains(id) ^ dropped.contains(id), "batch {} delivered {} dropped {}", id, delivered.contains(id), dropped.contains(id));
        }
        prop_assert!(agent.spool().is_empty());
    }
}

#[test]
fn spool_order_is_persist_order() {
    let mut s = MemorySpool::new();
    let a = frame(1, DataType::Event, 1, 1);
    let b = frame(1, DataType::Event, 1, 2);
    s.persist(b.batch_id(), &b).unwrap();
    s.persist(a.batch_id(), &a).unwrap();
    let mut got = Vec::new();
    s.load(&mut |bytes| got.push(bytes)).unwrap();
    assert_eq!(got, vec![b.as_bytes().clone(), a.as_bytes().clone()]);
}

/// Bug: with `jitter_percent` 100 the random cut could take the whole of a
/// queued wait, scheduling the retry at the very time of the failure (a
/// zero wait), so a driver sending whatever is due spins on one batch.
#[test]
fn regression_full_jitter_never_schedules_a_retry_at_the_failure() {
    let ms = Duration::milliseconds(1);
    let policy = DeliveryPolicy::default()
        .with_retry_interval(ms)
        .unwrap()
        .with_queue_retry_max(ms)
        .unwrap()
        .with_cache_window(ms)
        .unwrap()
        .with_jitter_percent(100)
        .unwrap();
    for seed in 0..8 {
        let mut o = Outbox::new(policy.clone(), seed);
        o.push(t0(), frame(1, DataType::Alert, 1, 1)).unwrap();
        let mut now = t0();
        for failure in 0..40 {
            let tx = o.poll_transmit(now).expect("the probe is due");
            o.handle_outcome(now, tx.batch_id, Outcome::Transient)
                .unwrap();
            let at = events(&mut o)
                .into_iter()
                .find_map(|e| match e {
                    DeliveryEvent::RetryScheduled { at, .. } => Some(at),
                    _ => None,
                })
                .expect("a retry is scheduled");
            assert!(
                at > now,
                "seed {seed} failure {failure}: retry at {at}, failed at {now}"
            );
            assert!(o.poll_transmit(now).is_none(), "sent again at once");
            now = o.poll_timeout().unwrap();
            o.handle_timeout(now);
        }
    }
}

/// Bug: the first queued wait (the first retry past the cache window) was
/// 2 × `retry_interval`, not `retry_interval`: the queued-failure count was
/// incremented before the backoff exponent was taken from it.
#[test]
fn regression_first_queued_wait_is_one_retry_interval() {
    let policy = no_jitter().with_cache_window(Duration::minutes(8)).unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(1, DataType::Alert, 1, 1)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    // The one slot inside the window: F + 8 min.
    let mut now = t0();
    let mut waits = Vec::new();
    for _ in 0..6 {
        let due = o.poll_timeout().unwrap();
        waits.push((due - now).num_minutes());
        now = due;
        o.handle_timeout(now);
        let tx = o.poll_transmit(now).unwrap();
        o.handle_outcome(now, tx.batch_id, Outcome::Transient)
            .unwrap();
    }
    // In the window: 8; queued: 8, 16, 32, then capped at 60.
    assert_eq!(waits, [8, 8, 16, 32, 60, 60]);
}

/// A transport that always answers `outcome` and fails the test if one
/// `Agent` call sends more than `cap` times.
struct Stubborn {
    outcome: Outcome,
    sends: u32,
    cap: u32,
}

impl opsdata::Transport for Stubborn {
    fn send(&mut self, _now: DateTime<Utc>, _tx: &opsdata::Transmit) -> Outcome {
        self.sends += 1;
        assert!(self.sends <= self.cap, "one call sent {} times", self.sends);
        self.outcome
    }
}

/// Bug: at `now == DateTime::MAX_UTC` a failing tenant's retry time
/// saturates at `now`, so the batch is due again at once and
/// `Agent::drive` sends it forever; a service answering `Throttled` with no
/// wait did the same at any time. Each call now sends each batch at most
/// once.
#[test]
fn regression_agent_drive_is_bounded_at_the_end_of_time() {
    let cases = [
        (DateTime::<Utc>::MAX_UTC, Outcome::Transient),
        (
            t0(),
            Outcome::Throttled {
                retry_after: Duration::zero(),
            },
        ),
    ];
    for (now, outcome) in cases {
        let transport = Stubborn {
            outcome,
            sends: 0,
            cap: 1000,
        };
        let mut agent = Agent::new(Outbox::new(no_jitter(), 1), transport, MemorySpool::new());
        agent.push(now, frame(1, DataType::Alert, 1, 1)).unwrap();
        assert_eq!(agent.transport().sends, 1, "{outcome:?}: one send a call");
        agent.push(now, frame(1, DataType::Event, 1, 2)).unwrap();
        agent.tick(now).unwrap();
        assert!(agent.transport().sends <= 4, "{outcome:?}");
        assert_eq!(agent.outbox().held_batches(), 2);
        assert_eq!(agent.spool().len(), 2);
    }
}

/// Dropped batch ids in `events`, with their reasons.
fn drops(events: &[DeliveryEvent]) -> Vec<(BatchId, DropReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            DeliveryEvent::Dropped {
                batch_id, reason, ..
            } => Some((*batch_id, *reason)),
            _ => None,
        })
        .collect()
}

/// Bug: a frame that could not fit even after every batch ranked before it
/// was gone (larger than the limit, or the room taken by batches in flight
/// or of more important types) first evicted that whole backlog and was
/// then refused anyway. Now the new frame alone is dropped, nothing else.
#[test]
fn regression_an_unfittable_frame_evicts_nothing() {
    let id = |n| BatchId::new(Uuid::from_u128(n)).unwrap();
    let small = frame(1, DataType::Performance, 1, 1).len() as u64;
    let big = frame(1, DataType::Alert, 40, 9);
    assert!(big.len() as u64 > 3 * small);

    // Larger than limit_bytes itself.
    let policy = no_jitter().with_limit_bytes(3 * small).unwrap();
    let mut o = Outbox::new(policy, 1);
    for n in 1..=2 {
        o.push(t0(), frame(1, DataType::Performance, 1, n)).unwrap();
    }
    let _ = storage(&mut o);
    o.push(t0(), big.clone()).unwrap();
    assert_eq!(drops(&events(&mut o)), [(id(9), DropReason::QueueFull)]);
    assert!(storage(&mut o).is_empty(), "nothing persisted or removed");
    assert_eq!(o.held_batches(), 2);

    // Room taken by a batch in flight: evicting the waiting Performance
    // batch would not make enough.
    let policy = no_jitter()
        .with_limit_bytes(big.len() as u64 + small)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(1, DataType::Event, 2, 1)).unwrap();
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    o.push(t0(), frame(1, DataType::Performance, 1, 2)).unwrap();
    let probe = o.poll_transmit(t0() + Duration::minutes(8)).unwrap();
    assert_eq!(probe.batch_id, id(1), "the Event batch is in flight");
    let _ = events(&mut o);
    o.push(t0() + Duration::minutes(8), big.clone()).unwrap();
    assert_eq!(drops(&events(&mut o)), [(id(9), DropReason::QueueFull)]);
    assert_eq!(
        o.phase(id(2)),
        Some(Phase::Cached),
        "the Performance batch stays"
    );

    // A tenant share: only the tenant's own batches count, and its Alert
    // is ranked after the new Event frame.
    let event = frame(1, DataType::Event, 40, 9);
    let alert = frame(1, DataType::Alert, 3, 2);
    assert!(event.len() as u64 / 2 > small);
    let share = alert.len() as u64 + small + event.len() as u64 / 2;
    let policy = no_jitter()
        .with_tenant_limit_bytes(Some(share))
        .unwrap()
        .with_max_in_flight(1)
        .unwrap();
    let mut o = Outbox::new(policy, 1);
    o.push(t0(), frame(2, DataType::Performance, 1, 3)).unwrap();
    o.push(t0(), frame(1, DataType::Performance, 1, 1)).unwrap();
    o.push(t0(), alert).unwrap();
    let _ = events(&mut o);
    o.push(t0(), event).unwrap();
    assert_eq!(drops(&events(&mut o)), [(id(9), DropReason::QueueFull)]);
    assert_eq!(o.held_batches(), 3);
}

/// Bug: `Outbox::recover` dropped a recovered frame that did not fit but
/// never asked the host to remove it from the spool, so it stayed there and
/// was reported dropped again on every restart; `RecoveryReport::recovered`
/// counted it as well.
#[test]
fn regression_recovery_removes_what_it_drops_from_the_spool() {
    let id = |n| BatchId::new(Uuid::from_u128(n)).unwrap();
    let perf = frame(1, DataType::Performance, 1, 1);
    let alerts = [
        frame(1, DataType::Alert, 1, 2),
        frame(1, DataType::Alert, 1, 3),
    ];
    let huge = frame(1, DataType::Event, 400, 4);
    let limit = (perf.len() + alerts[0].len() + alerts[1].len()) as u64 - 1;
    assert!(huge.len() as u64 > limit);
    let policy = no_jitter().with_limit_bytes(limit).unwrap();
    let mut spool = MemorySpool::new();
    // The Performance frame fits at first, then the second Alert evicts it;
    // the Event frame never fits.
    for f in [&perf, &alerts[0], &alerts[1], &huge] {
        spool.persist(f.batch_id(), f).unwrap();
    }
    let mut transport = MemoryTransport::new();
    transport.set_reachable(tenant(1), false);
    let (mut agent, report) = Agent::recover(
        policy.clone(),
        1,
        t0(),
        transport,
        spool,
        &FrameLimits::default(),
    )
    .unwrap();
    assert_eq!(report.recovered, 2, "only the frames held");
    assert_eq!(report.dropped, 2);
    let dropped: Vec<_> = std::iter::from_fn(|| agent.poll_event())
        .filter_map(|e| match e {
            DeliveryEvent::Dropped { batch_id, .. } => Some(batch_id),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [id(1), id(4)]);
    assert_eq!(agent.spool().len(), 2, "the spool holds what is held");

    // A second restart finds nothing more to drop.
    let (_, transport, spool) = agent.into_parts();
    let (mut agent, report) =
        Agent::recover(policy, 1, t0(), transport, spool, &FrameLimits::default()).unwrap();
    assert_eq!((report.recovered, report.dropped), (2, 0));
    assert!(
        std::iter::from_fn(|| agent.poll_event())
            .all(|e| !matches!(e, DeliveryEvent::Dropped { .. }))
    );
}

/// Bug: `expire_after` counted from when the frame was pushed or
/// recovered, so every restart started the clock again and a batch could
/// outlive its expiry indefinitely. It counts from the frame header's
/// `created` time (the batch's close time).
#[test]
fn regression_expiry_counts_from_the_frame_not_the_push() {
    let policy = no_jitter()
        .with_expire_after(DataType::Performance, Some(Duration::minutes(30)))
        .unwrap();
    let f = frame(1, DataType::Performance, 1, 1);
    assert_eq!(f.header().created, t0());
    // Pushed 20 minutes after it was made, then a restart at 25 minutes.
    let mut o = Outbox::new(policy.clone(), 1);
    o.push(t0() + Duration::minutes(20), f.clone()).unwrap();
    assert_eq!(o.poll_timeout(), Some(t0() + Duration::minutes(30)));
    let restart = t0() + Duration::minutes(25);
    let (mut o, report) = Outbox::recover(
        policy.clone(),
        1,
        restart,
        [f.as_bytes().clone()],
        &FrameLimits::default(),
    );
    assert_eq!(report.recovered, 1);
    assert_eq!(o.poll_timeout(), Some(t0() + Duration::minutes(30)));
    o.handle_timeout(t0() + Duration::minutes(30));
    assert_eq!(
        drops(&events(&mut o)),
        [(f.batch_id(), DropReason::Expired)]
    );
    assert!(matches!(
        storage(&mut o).as_slice(),
        [StorageOp::Remove { .. }]
    ));
    // A frame already past its expiry when pushed is dropped at once,
    // never persisted or sent.
    let mut o = Outbox::new(policy, 1);
    o.push(t0() + Duration::minutes(31), f.clone()).unwrap();
    assert_eq!(
        drops(&events(&mut o)),
        [(f.batch_id(), DropReason::Expired)]
    );
    assert!(storage(&mut o).is_empty());
    assert!(o.poll_transmit(t0() + Duration::minutes(31)).is_none());
    assert_eq!(o.held_batches(), 0);
}

#[test]
fn held_counts_by_type_and_by_phase() {
    let policy = no_jitter().with_cache_window(Duration::minutes(8)).unwrap();
    let mut o = Outbox::new(policy, 1);
    let perf = frame(1, DataType::Performance, 2, 1);
    o.push(t0(), perf.clone()).unwrap();
    o.push(t0(), frame(1, DataType::Alert, 1, 2)).unwrap();
    o.push(t0(), frame(2, DataType::Performance, 1, 3)).unwrap();
    assert_eq!(o.held_of_type(DataType::Performance), 2);
    let perf_bytes = perf.len() + frame(2, DataType::Performance, 1, 3).len();
    assert_eq!(
        o.held_by_type(DataType::Performance),
        (2, perf_bytes as u64)
    );
    assert_eq!(o.held_by_type(DataType::Event), (0, 0));
    let counts = o.held_by_phase();
    assert_eq!((counts.pending, counts.in_flight), (3, 0));
    // Tenant 1 goes offline with its first batch; tenant 2's is in flight.
    let sent: Vec<_> = std::iter::from_fn(|| o.poll_transmit(t0())).collect();
    assert_eq!(o.held_by_phase().in_flight, 3);
    let alert = BatchId::new(Uuid::from_u128(2)).unwrap();
    assert!(sent.iter().any(|tx| tx.batch_id == alert));
    o.handle_outcome(t0(), alert, Outcome::Delivered).unwrap();
    o.handle_outcome(t0(), perf.batch_id(), Outcome::Transient)
        .unwrap();
    let counts = o.held_by_phase();
    assert_eq!((counts.cached, counts.in_flight, counts.queued), (1, 1, 0));
    assert_eq!(o.held_by_type(DataType::Alert), (0, 0));
    o.handle_timeout(t0() + Duration::minutes(8));
    let counts = o.held_by_phase();
    assert_eq!((counts.queued, counts.in_flight, counts.pending), (1, 1, 0));
}
