//! A refused call changes nothing, the clock included (ARCHITECTURE.md,
//! "Error policy"): for every state machine that keeps a latest time seen,
//! a call that returns an error with a far-future `now` leaves every later
//! answer as it would have been without that call. Each test runs two twins
//! through the same script, one of them also taking the refused call, and
//! compares everything they say afterwards.

mod common;

use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    AccessError, AuthPolicy, BatchId, Batcher, BatcherConfig, DataType, DeliveryError,
    DeliveryPolicy, DeterministicEntropy, EnrollmentKey, Frame, FrameEncoder, FrameLimits,
    IncidentError, Ingest, IngestConfig, IngestError, KeyError, KeyRing, LedgerPolicy, Loss,
    LossLedger, LossReason, LossWindow, Outbox, Outcome, Plan, Principal, RateLimit,
    RetentionError, RetentionPolicy, RotationPolicy, SessionPolicy, SessionStore, Tagged,
    TenantBatch, TenantId, UserId, Workspace, WorkspaceKeys, WorkspaceState, sign_data_collector,
    verify_data_collector,
};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// The refused calls' clock: 100 days ahead.
fn far() -> DateTime<Utc> {
    t0() + Duration::days(100)
}

fn a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}

fn b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}

fn frame(t: TenantId, data_type: DataType, n: u128, created: DateTime<Utc>) -> Frame {
    let batch = TenantBatch::from_records(
        t,
        data_type,
        (0..2).map(|_| Tagged::new(t, common::sample(data_type))),
    )
    .unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, BatchId::new(Uuid::from_u128(n)).unwrap(), created)
        .unwrap()
}

// ---------------------------------------------------------------- Outbox

/// Everything an outbox says after `script`: events, timers, transmits.
fn outbox_script(outbox: &mut Outbox) -> Vec<String> {
    let mut said = Vec::new();
    let drain = |outbox: &mut Outbox, said: &mut Vec<String>| {
        while let Some(op) = outbox.poll_storage() {
            said.push(format!("{op:?}"));
        }
        while let Some(e) = outbox.poll_event() {
            said.push(format!("{e:?}"));
        }
        said.push(format!("timeout {:?}", outbox.poll_timeout()));
    };
    outbox
        .push(t0(), frame(a(), DataType::Performance, 1, t0()))
        .unwrap();
    drain(outbox, &mut said);
    let tx = outbox.poll_transmit(t0()).expect("a frame to send");
    outbox
        .handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    drain(outbox, &mut said);
    // Time passes, on the honest clock.
    let mut now = t0();
    for _ in 0..40 {
        now += Duration::minutes(8);
        outbox.handle_timeout(now);
        while let Some(tx) = outbox.poll_transmit(now) {
            said.push(format!("send {} at {now}", tx.attempt));
            outbox
                .handle_outcome(now, tx.batch_id, Outcome::Transient)
                .unwrap();
        }
        drain(outbox, &mut said);
    }
    said
}

#[test]
fn outbox_handle_outcome_for_an_unknown_batch_does_not_move_the_clock() {
    // The bug: an outcome for an unknown batch recorded its `now`, so every
    // later call was taken as happening then (retries scheduled 100 days
    // late, frames expired at once).
    let mut twin = Outbox::new(DeliveryPolicy::default(), 7);
    let mut refused = Outbox::new(DeliveryPolicy::default(), 7);
    let unknown = BatchId::new(Uuid::from_u128(99)).unwrap();
    assert!(matches!(
        refused.handle_outcome(far(), unknown, Outcome::Delivered),
        Err(DeliveryError::UnknownBatch { .. })
    ));
    assert_eq!(outbox_script(&mut refused), outbox_script(&mut twin));
}

#[test]
fn outbox_refused_push_and_outcome_do_not_move_the_clock() {
    let script = |outbox: &mut Outbox, refuse: bool| {
        outbox
            .push(t0(), frame(a(), DataType::Alert, 5, t0()))
            .unwrap();
        while outbox.poll_storage().is_some() {}
        if refuse {
            // A duplicate push, and an outcome for a batch not in flight.
            let dup = outbox.push(far(), frame(a(), DataType::Alert, 5, t0()));
            assert!(matches!(dup, Err(DeliveryError::DuplicateBatch { .. })));
            let id = BatchId::new(Uuid::from_u128(5)).unwrap();
            let r = outbox.handle_outcome(far(), id, Outcome::Transient);
            assert!(matches!(r, Err(DeliveryError::NotInFlight { .. })));
        }
        outbox_script(outbox)
    };
    let mut twin = Outbox::new(DeliveryPolicy::default(), 3);
    let mut refused = Outbox::new(DeliveryPolicy::default(), 3);
    assert_eq!(script(&mut refused, true), script(&mut twin, false));
}

// ------------------------------------------------------------- Workspace

#[test]
fn workspace_reopen_not_closed_does_not_move_the_clock() {
    // The bug: `reopen` on an active workspace (NotClosed) recorded its
    // `now`; a later `close` was stamped with it and the purge came 100
    // days late.
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(a(), Plan::Premium);
    assert!(matches!(
        w.reopen(far()),
        Err(RetentionError::NotClosed { .. })
    ));
    assert_eq!(w.latest_seen(), None);
    w.close(&policy, t0()).unwrap();
    assert_eq!(
        w.state(),
        WorkspaceState::Closed {
            at: t0(),
            purge_at: t0() + Duration::days(30)
        }
    );
    // And the purge is due on time.
    let due = t0() + Duration::days(30);
    assert!(w.begin_purge(due - Duration::seconds(1)).is_err());
    w.begin_purge(due).unwrap();
    w.mark_purged(due).unwrap();
    assert_eq!(w.state(), WorkspaceState::Purged { at: due });
}

#[test]
fn workspace_refused_lifecycle_calls_do_not_move_the_clock() {
    let policy = RetentionPolicy::default();
    let mut twin = Workspace::new(a(), Plan::Premium);
    let mut refused = Workspace::new(a(), Plan::Premium);
    // Active: mark_purged and begin_purge are refused.
    assert!(refused.mark_purged(far()).is_err());
    assert!(refused.begin_purge(far()).is_err());
    for w in [&mut twin, &mut refused] {
        w.close(&policy, t0()).unwrap();
    }
    // Closed, purge not due: mark_purged refused (with a time before the
    // purge, yet later than any seen).
    let early = t0() + Duration::days(29);
    assert!(matches!(
        refused.mark_purged(early),
        Err(RetentionError::PurgeNotDue { .. })
    ));
    assert_eq!(refused, twin);
    // Reopening a day before the purge still works for both.
    for w in [&mut twin, &mut refused] {
        w.reopen(t0() + Duration::days(1)).unwrap();
    }
    assert_eq!(refused, twin);
}

// ------------------------------------------------------------ LossLedger

fn ledger_script(ledger: &mut LossLedger) -> Vec<String> {
    let mut said = Vec::new();
    let loss = Loss {
        tenant: a(),
        data_type: DataType::Event,
        records: 10,
        bytes: 1000,
        reason: LossReason::Storage,
        window: LossWindow::new(t0() - Duration::minutes(5), t0()).unwrap(),
    };
    let id = ledger.report_loss(t0(), loss);
    said.push(format!("timeout {:?}", ledger.poll_timeout()));
    let mut now = t0();
    for _ in 0..30 {
        now += Duration::hours(1);
        while let Some(n) = ledger.poll_notices(now) {
            said.push(format!("{n:?}"));
        }
    }
    said.push(format!("{:?}", ledger.assess(now, id)));
    said.push(format!("{:?}", ledger.incident(id)));
    said
}

#[test]
fn loss_ledger_refused_steps_do_not_move_the_clock() {
    let mut twin = LossLedger::new(LedgerPolicy::default());
    let mut refused = LossLedger::new(LedgerPolicy::default());
    // An id this ledger never gave: the first id of another ledger.
    let unknown = LossLedger::new(LedgerPolicy::default()).report_loss(
        t0(),
        Loss {
            tenant: b(),
            data_type: DataType::Alert,
            records: 1,
            bytes: 1,
            reason: LossReason::Storage,
            window: LossWindow::new(t0(), t0()).unwrap(),
        },
    );
    assert!(matches!(
        refused.assess(far(), unknown),
        Err(IncidentError::UnknownIncident { .. })
    ));
    assert!(refused.close(far(), unknown, "x").is_err());
    assert_eq!(ledger_script(&mut refused), ledger_script(&mut twin));
}

// ---------------------------------------------------------- SessionStore

#[test]
fn session_store_refused_calls_do_not_move_the_clock() {
    let policy = SessionPolicy::default().with_max_sessions(1).unwrap();
    let alice = UserId::new(Uuid::from_u128(1)).unwrap();
    let script = |store: &mut SessionStore, refuse: bool| {
        let mut e = DeterministicEntropy::from_u64(5);
        let id = store.create(t0(), alice, &mut e).unwrap();
        if refuse {
            let mut other = DeterministicEntropy::from_u64(6);
            let stranger = opsdata::SessionId::generate(&mut other).unwrap();
            assert_eq!(
                store.touch(far(), &stranger),
                Err(AccessError::UnknownSession)
            );
            assert_eq!(
                store.check(far(), &stranger),
                Err(AccessError::UnknownSession)
            );
        }
        let mut said = vec![format!(
            "{:?}",
            store.touch(t0() + Duration::minutes(20), &id)
        )];
        // Full of one live session: a second is refused (and evicts
        // nothing, records nothing).
        let mut e2 = DeterministicEntropy::from_u64(8);
        said.push(format!(
            "{:?}",
            store
                .create(t0() + Duration::minutes(21), alice, &mut e2)
                .map(|_| ())
        ));
        said.push(format!(
            "{:?}",
            store.check(t0() + Duration::minutes(40), &id)
        ));
        said.push(format!("{:?} {}", store.poll_timeout(), store.len()));
        said
    };
    let mut twin = SessionStore::new(policy.clone());
    let mut refused = SessionStore::new(policy);
    let got = script(&mut refused, true);
    assert_eq!(got, script(&mut twin, false));
    // The session is alive in both: the far-future call did not expire it.
    assert!(got[0].starts_with("Ok("), "{got:?}");
    assert!(got[1].contains("TooManySessions"), "{got:?}");
}

#[test]
fn session_store_refused_create_evicts_nothing_with_a_far_future_clock() {
    // A create refused for a broken entropy source with a far-future `now`
    // must not evict the live sessions that `now` would call expired.
    struct Broken;
    impl opsdata::Entropy for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), opsdata::EntropyUnavailable> {
            Err(opsdata::EntropyUnavailable)
        }
    }
    let alice = UserId::new(Uuid::from_u128(1)).unwrap();
    let mut store = SessionStore::new(SessionPolicy::default());
    let id = store
        .create(t0(), alice, &mut DeterministicEntropy::from_u64(1))
        .unwrap();
    assert!(matches!(
        store.create(far(), alice, &mut Broken),
        Err(AccessError::Entropy(_))
    ));
    assert_eq!(store.len(), 1);
    assert_eq!(store.touch(t0() + Duration::minutes(1), &id), Ok(alice));
}

// ---------------------------------------------------------------- Ingest

fn principal(t: TenantId) -> Principal {
    let key =
        EnrollmentKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 64]))
            .unwrap();
    let s = sign_data_collector(t, &key, t0(), b"x");
    let v = verify_data_collector(
        &WorkspaceKeys::new(t, key),
        &s.authorization,
        &s.x_ms_date,
        b"x",
        &AuthPolicy::default(),
        t0(),
    )
    .unwrap();
    Principal::from_signature(&v)
}

fn ring(t: TenantId, seed: u64) -> KeyRing {
    let mut e = DeterministicEntropy::from_u64(seed);
    let mut r = KeyRing::new(t, &RotationPolicy::default());
    let k = r.generate(&mut e, t0()).unwrap();
    r.promote(k, t0()).unwrap();
    r
}

#[test]
fn ingest_refused_request_does_not_move_the_clock() {
    // The rate limit is where the clock shows: a bucket refilled by a
    // far-future `now` would let a burst through that the twin throttles.
    let content = u64::from(
        frame(a(), DataType::Performance, 1, t0())
            .header()
            .content_len,
    );
    let rate = RateLimit::new(content, 2 * content).unwrap();
    let config = IngestConfig::default().with_rate_limit(Some(rate));
    let script = |ingest: &mut Ingest, refuse: bool| {
        let mut ring_a = ring(a(), 1);
        let mut e = DeterministicEntropy::from_u64(2);
        let p = principal(a());
        let mut said = Vec::new();
        for n in 1..=2 {
            let f = frame(a(), DataType::Performance, n, t0());
            let r = ingest
                .handle_request(t0(), &p, &mut ring_a, &mut e, f.as_bytes())
                .unwrap();
            said.push(format!("{:?}", r.answers[0].outcome));
        }
        if refuse {
            let mut ring_b = ring(b(), 3);
            let f = frame(a(), DataType::Performance, 9, t0());
            let r = ingest.handle_request(far(), &p, &mut ring_b, &mut e, f.as_bytes());
            assert!(matches!(r, Err(IngestError::WrongRing { .. })));
        }
        let f = frame(a(), DataType::Performance, 3, t0());
        let r = ingest
            .handle_request(t0(), &p, &mut ring_a, &mut e, f.as_bytes())
            .unwrap();
        said.push(format!("{:?}", r.answers[0].outcome));
        said
    };
    let mut twin = Ingest::new(config.clone());
    let mut refused = Ingest::new(config);
    let got = script(&mut refused, true);
    assert_eq!(got, script(&mut twin, false));
    assert!(got[2].starts_with("Throttled"), "{got:?}");
}

// --------------------------------------------------------------- KeyRing

#[test]
fn key_ring_refused_calls_do_not_move_the_clock() {
    let policy = RotationPolicy::default();
    let script = |r: &mut KeyRing, refuse: bool| {
        let mut e = DeterministicEntropy::from_u64(4);
        let k1 = r.generate(&mut e, t0()).unwrap();
        if refuse {
            let unknown = opsdata::KeyId::new(77).unwrap();
            assert!(matches!(
                r.promote(unknown, far()),
                Err(KeyError::UnknownKey { .. })
            ));
            // Destroying a version that is not disabled.
            assert!(matches!(
                r.destroy(k1, far()),
                Err(KeyError::InvalidTransition { .. })
            ));
        }
        r.promote(k1, t0() + Duration::hours(1)).unwrap();
        assert!(matches!(r.shred(far()), Err(KeyError::NotClosing { .. })));
        r.close(&policy, t0() + Duration::hours(2)).unwrap();
        let shred = r.shred(t0() + Duration::days(31)).ok().map(|s| s.at);
        (format!("{:?}", r.versions().collect::<Vec<_>>()), shred)
    };
    let mut twin = KeyRing::new(a(), &policy);
    let mut refused = KeyRing::new(a(), &policy);
    let got = script(&mut refused, true);
    assert_eq!(got, script(&mut twin, false));
    // Shredded 30 days after the close, at the time asked.
    assert_eq!(got.1.unwrap(), t0() + Duration::days(31));
}

// --------------------------------------------------------------- Batcher

#[test]
fn batcher_refused_push_does_not_move_the_clock() {
    let script = |batcher: &mut Batcher, refuse: bool| {
        if refuse {
            // A record that does not validate: an Alert name too long.
            let mut bad = common::sample(DataType::Alert);
            if let opsdata::Record::Alert(alert) = &mut bad {
                alert.alert_name = "x".repeat(300); // over its 255 characters
            }
            let r = batcher.push(far(), Tagged::new(a(), bad));
            assert!(r.is_err());
        }
        batcher
            .push(
                t0(),
                Tagged::new(a(), common::sample(DataType::Performance)),
            )
            .unwrap();
        let due = batcher.poll_timeout();
        batcher.handle_timeout(t0() + Duration::seconds(10));
        let batch = batcher.poll_batch().map(|b| b.opened_at());
        (due, batch)
    };
    let limits = FrameLimits::default();
    let mut twin = Batcher::new(BatcherConfig::default(), &limits).unwrap();
    let mut refused = Batcher::new(BatcherConfig::default(), &limits).unwrap();
    let got = script(&mut refused, true);
    assert_eq!(got, script(&mut twin, false));
    assert_eq!(got.0, Some(t0() + Duration::seconds(10)));
}
