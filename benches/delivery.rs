//! Outbox cost per operation as the backlog grows: a push -> transmit ->
//! delivered cycle with 1 000 and with 100 000 batches held, and a push that
//! evicts under pressure. The goal: 100 times the backlog costs at most
//! twice as much per operation.
//!
//! `cargo bench --bench delivery`

use chrono::{DateTime, Duration, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use opsdata::{
    BatchId, DataType, DeliveryPolicy, Frame, FrameEncoder, Outbox, Outcome, TenantBatch, TenantId,
};
use std::hint::black_box;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tenant(n: u128) -> TenantId {
    TenantId::new(Uuid::from_u128(n)).unwrap()
}

/// `n` empty frames of one tenant and type, with ids from `first`.
fn frames(n: usize, t: TenantId, dt: DataType, first: u128) -> Vec<Frame> {
    let mut encoder = FrameEncoder::new();
    let batch = TenantBatch::new(t, dt);
    (0..n as u128)
        .map(|i| {
            let id = BatchId::new(Uuid::from_u128(first + i)).unwrap();
            encoder.encode_frame(&batch, id, t0()).unwrap()
        })
        .collect()
}

/// An outbox holding `held` batches of a tenant that is offline with its
/// probe in flight, so none of them can be sent.
fn with_backlog(held: usize, policy: DeliveryPolicy) -> Outbox {
    let mut o = Outbox::new(policy, 1);
    let backlog = tenant(1);
    for f in frames(held, backlog, DataType::Performance, 1_000_000) {
        o.push(t0(), f).unwrap();
    }
    let tx = o.poll_transmit(t0()).unwrap();
    o.handle_outcome(t0(), tx.batch_id, Outcome::Transient)
        .unwrap();
    let due = o.poll_timeout().unwrap();
    let _probe = o.poll_transmit(due).unwrap();
    while o.poll_storage().is_some() {}
    while o.poll_event().is_some() {}
    o
}

fn bench_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox_cycle");
    for held in [1_000usize, 100_000] {
        let mut o = with_backlog(held, DeliveryPolicy::default());
        let live = tenant(2);
        let pool = frames(4096, live, DataType::Event, 1);
        let mut i = 0;
        let now = t0() + Duration::minutes(9);
        g.bench_with_input(
            BenchmarkId::new("push_transmit_delivered", held),
            &held,
            |b, _| {
                b.iter(|| {
                    let f = pool[i % pool.len()].clone();
                    i += 1;
                    o.push(now, f).unwrap();
                    while o.poll_storage().is_some() {}
                    let tx = o.poll_transmit(now).unwrap();
                    o.handle_outcome(now, tx.batch_id, Outcome::Delivered)
                        .unwrap();
                    while o.poll_storage().is_some() {}
                    while let Some(e) = o.poll_event() {
                        let _ = black_box(e);
                    }
                })
            },
        );
    }
    g.finish();
}

fn bench_eviction(c: &mut Criterion) {
    let mut g = c.benchmark_group("outbox_evict");
    for held in [1_000usize, 100_000] {
        // Full at `held` batches: every push of a Performance frame evicts
        // the oldest one.
        let policy = DeliveryPolicy::default()
            .with_limit_batches(Some(held as u64))
            .unwrap();
        let mut o = with_backlog(held, policy);
        // A frame comes round again only after `held` newer pushes, by which
        // time it has been evicted: its id is free.
        let pool = frames(held + 1, tenant(1), DataType::Performance, 1);
        let mut i = 0usize;
        let now = t0() + Duration::minutes(9);
        g.bench_with_input(BenchmarkId::new("push_evicting", held), &held, |b, _| {
            b.iter(|| {
                o.push(now, pool[i % pool.len()].clone()).unwrap();
                i += 1;
                while o.poll_storage().is_some() {}
                while let Some(e) = o.poll_event() {
                    let _ = black_box(e);
                }
            })
        });
        assert!(o.held_batches() <= held);
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench_cycle, bench_eviction
}
criterion_main!(benches);
