//! Several service nodes over one blob store and one key store
//! (`docs/SCALE.md`), in one process: three `IngestService`s served over
//! HTTPS on loopback, sharing a `MemoryBlobs` and a compare-and-swap key
//! store, with a rotation policy short enough to rotate several times
//! during the run, simultaneous first frames for new tenants on every
//! node, retries landing on another node, and a node restarted mid-run
//! (its memory lost). The process-level version, over Azurite with a node
//! killed by SIGKILL, is in `tests/scale_azurite.rs`.
//!
//! Checked: every batch is acknowledged delivered and stored exactly once;
//! every stored object opens with the stored ring, and through every node
//! (`read_stored`); the stored ring has at most one primary; the usage it
//! records for each key is at least the frames sealed under that key; the
//! key store was written once per reserved block, never once per frame.

// Tests may read the wall clock and draw random ids.
#![allow(clippy::disallowed_methods)]

mod service_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Duration;
use futures_util::future::join_all;
use opsdata::{
    BatchId, Frame, KeyId, KeyRing, KeyStatus, ObjectKey, Outcome, RotationPolicy, TenantId, peek,
};
use opsdata_io::{AsyncBlobStore, IngestService, MemoryBlobs};
use service_support::*;

const WS_C: &str = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a";
const BLOCK: u64 = 4;

fn policy() -> RotationPolicy {
    // A new key once the primary has 24 uses recorded, promoted 3 minutes
    // (of the test's clock) after it was made.
    RotationPolicy::default()
        .with_usage_limits(24, 1_000_000)
        .unwrap()
        .with_propagation_delay(Duration::minutes(3))
        .unwrap()
}

fn node(
    blobs: &Arc<MemoryBlobs>,
    clock: &FakeClock,
    keys: &SharedKeys,
) -> IngestService<TestStore> {
    IngestService::builder(TestStore {
        inner: blobs.clone(),
        ..TestStore::default()
    })
    .limits(limits().with_key_reservation_block(BLOCK).unwrap())
    .clock(clock.clock())
    .key_store(keys.clone(), wrapping_key())
    .provisioning(policy())
    .build()
    .unwrap()
}

async fn post(
    addr: std::net::SocketAddr,
    pki: &Pki,
    agent: &pki::Issued,
    frames: &[Frame],
) -> Vec<opsdata_io::Ack> {
    let mut c = Client::connect(addr, pki.client(Some(agent), b"h2"))
        .await
        .unwrap();
    let r = c.post(body(frames)).await.unwrap();
    assert_eq!(r.status, hyper::StatusCode::OK, "{:?}", r.body);
    acks(&r.body)
}

fn stored_ring(keys: &SharedKeys, t: TenantId) -> KeyRing {
    opsdata::load_ring(&*keys.0.lock().unwrap(), t, &wrapping_key())
        .unwrap()
        .expect("a ring")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_store_each_batch_once_under_one_shared_ring() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let blobs = Arc::new(MemoryBlobs::new());
    let mut nodes: Vec<IngestService<TestStore>> =
        (0..3).map(|_| node(&blobs, &clock, &keys)).collect();
    let mut running = Vec::new();
    for n in &nodes {
        running.push(Some(start(n, &pki).await));
    }
    let tenants: Vec<(TenantId, pki::Issued)> = [WS_A, WS_B, WS_C]
        .iter()
        .map(|w| (tenant(w), pki.agent(w)))
        .collect();
    let mut sent: BTreeMap<TenantId, HashSet<BatchId>> = BTreeMap::new();
    let addr = |running: &Vec<Option<Running>>, i: usize| running[i].as_ref().unwrap().addr;

    // Every tenant is new: its first frames reach all three nodes at once.
    for (t, agent) in &tenants {
        let frames: Vec<Frame> = (0..3).map(|_| frame(*t, 2)).collect();
        let answers = join_all((0..3).map(|i| {
            post(
                addr(&running, i),
                &pki,
                agent,
                std::slice::from_ref(&frames[i]),
            )
        }))
        .await;
        for acks in answers {
            assert_eq!(acks.len(), 1);
            assert_eq!(acks[0].outcome, Outcome::Delivered);
        }
        sent.entry(*t)
            .or_default()
            .extend(frames.iter().map(Frame::batch_id));
    }

    // Rounds of traffic spread over the nodes, a minute of the test's clock
    // apart (so rings are re-read and rotated), each batch also retried on
    // the next node (its answer lost), and node 1 restarted half way.
    for round in 0..16 {
        clock.set(pki.now + Duration::minutes(round + 1));
        if round == 8 {
            running[1].take().unwrap().shutdown().await;
            nodes[1] = node(&blobs, &clock, &keys);
            running[1] = Some(start(&nodes[1], &pki).await);
        }
        let mut posts = Vec::new();
        for (k, (t, agent)) in tenants.iter().enumerate() {
            for i in 0..3 {
                let frames: Vec<Frame> = (0..2).map(|_| frame(*t, 1)).collect();
                sent.entry(*t)
                    .or_default()
                    .extend(frames.iter().map(Frame::batch_id));
                let first = addr(&running, (i + k) % 3);
                let retry = addr(&running, (i + k + 1) % 3);
                let pki = &pki;
                posts.push(async move {
                    let a = post(first, pki, agent, &frames).await;
                    let b = post(retry, pki, agent, &frames).await;
                    (a, b)
                });
            }
        }
        for (a, b) in join_all(posts).await {
            for ack in a.iter().chain(&b) {
                assert_eq!(ack.outcome, Outcome::Delivered, "round {round}");
            }
        }
    }

    let mut rotated = false;
    for (t, _) in &tenants {
        // Exactly once: the objects are the batches sent, no more.
        let objects = blobs.list(*t).await.unwrap();
        let expected: HashSet<ObjectKey> =
            sent[t].iter().map(|b| ObjectKey::for_batch(*b)).collect();
        assert_eq!(objects.len(), expected.len());
        assert_eq!(objects.iter().copied().collect::<HashSet<_>>(), expected);

        let ring = stored_ring(&keys, *t);
        let primaries = ring
            .versions()
            .filter(|v| v.status == KeyStatus::Primary)
            .count();
        assert_eq!(primaries, 1);
        rotated |= ring.versions().count() > 1;
        let mut census: BTreeMap<KeyId, u64> = BTreeMap::new();
        for o in &objects {
            let bytes = blobs.get(*t, *o).await.unwrap().unwrap();
            let id = peek(&bytes).unwrap().kek_id.expect("sealed");
            *census.entry(id).or_default() += 1;
            let sealed = Frame::decode(bytes, &Default::default()).unwrap();
            assert_eq!(
                opsdata::open(&sealed, &ring).unwrap().batch_id(),
                o.batch_id()
            );
            for n in &nodes {
                let back = n.read_stored(*t, *o).await.unwrap().expect("stored");
                assert_eq!(back.batch_id(), o.batch_id());
                assert!(!back.header().sealed);
            }
        }
        for (id, frames) in census {
            let recorded = ring.reserved(id).unwrap();
            assert!(
                recorded >= frames,
                "key {id}: recorded {recorded} < {frames} sealed"
            );
        }
    }
    assert!(
        rotated,
        "the policy rotated no ring: the test would not test rotation"
    );

    // One key-store write per reserved block (or provisioning, or rotation
    // step), never one per frame: at most one per BLOCK seals, plus the
    // provisioning and rotation writes.
    let seals: f64 = nodes
        .iter()
        .map(|n| metric(&n.metrics_text(), "opsdata_seals_total"))
        .sum();
    let writes = keys.1.load(Ordering::SeqCst) as f64;
    assert!(seals > 0.0);
    assert!(
        writes < seals / 2.0,
        "{writes} key-store writes for {seals} seals (blocks of {BLOCK})"
    );
    for r in running.into_iter().flatten() {
        r.shutdown().await;
    }
}

/// A node that meets a frame sealed under a key it has never seen (made and
/// promoted by another node since it last read the ring) reads the ring
/// again before it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_the_ring_again_for_a_key_it_does_not_know() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let blobs = Arc::new(MemoryBlobs::new());
    let (one, two) = (node(&blobs, &clock, &keys), node(&blobs, &clock, &keys));
    let (r1, r2) = (start(&one, &pki).await, start(&two, &pki).await);
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    let first = frame(a, 1);
    assert_eq!(
        post(r1.addr, &pki, &agent, std::slice::from_ref(&first)).await[0].outcome,
        Outcome::Delivered
    );
    // Node two learns the ring by reading a stored frame.
    let o1 = ObjectKey::for_batch(first.batch_id());
    assert!(two.read_stored(a, o1).await.unwrap().is_some());
    // Node one rotates (a new key is made, then promoted after the
    // propagation delay) and seals under the new key.
    let reads_before = metric(&two.metrics_text(), "opsdata_key_ring_reads_total");
    let mut last = None;
    for m in 1..40 {
        clock.set(pki.now + Duration::minutes(m));
        let f = frame(a, 1);
        assert_eq!(
            post(r1.addr, &pki, &agent, std::slice::from_ref(&f)).await[0].outcome,
            Outcome::Delivered
        );
        last = Some(f);
    }
    let last = ObjectKey::for_batch(last.unwrap().batch_id());
    let bytes = blobs.get(a, last).await.unwrap().unwrap();
    let id = peek(&bytes).unwrap().kek_id.unwrap();
    assert!(id.get() > 1, "node one never sealed under a newer key");
    let back = two.read_stored(a, last).await.unwrap().expect("stored");
    assert_eq!(back.batch_id(), last.batch_id());
    assert!(metric(&two.metrics_text(), "opsdata_key_ring_reads_total") > reads_before);
    r1.shutdown().await;
    r2.shutdown().await;
}

/// Two nodes rotating at once make one key per version: whichever writes
/// second meets a conflict, reads the first one's ring, finds nothing left
/// to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_rotating_at_once_make_one_key() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let blobs = Arc::new(MemoryBlobs::new());
    let (one, two) = (node(&blobs, &clock, &keys), node(&blobs, &clock, &keys));
    let (r1, r2) = (start(&one, &pki).await, start(&two, &pki).await);
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    // 24 uses recorded makes the rotation due: 6 blocks of 4.
    for _ in 0..6 {
        let fs: Vec<Frame> = (0..BLOCK).map(|_| frame(a, 1)).collect();
        for ack in post(r1.addr, &pki, &agent, &fs).await {
            assert_eq!(ack.outcome, Outcome::Delivered);
        }
    }
    // Both nodes re-read the ring at the same minute, both before either
    // writes, and both find the rotation due.
    clock.set(pki.now + Duration::minutes(2));
    let both = Arc::new(std::sync::Barrier::new(2));
    keys.3.lock().unwrap().extend([both.clone(), both]);
    let (f1, f2) = ([frame(a, 1)], [frame(a, 1)]);
    let (x, y) = tokio::join!(
        post(r1.addr, &pki, &agent, &f1),
        post(r2.addr, &pki, &agent, &f2),
    );
    assert_eq!(x[0].outcome, Outcome::Delivered);
    assert_eq!(y[0].outcome, Outcome::Delivered);
    let ring = stored_ring(&keys, a);
    let ids: Vec<KeyId> = ring.versions().map(|v| v.id).collect();
    assert_eq!(ids.len(), 2, "one new key, not one per node: {ids:?}");
    let conflicts: f64 = [&one, &two]
        .iter()
        .map(|n| metric(&n.metrics_text(), "opsdata_key_ring_conflicts_total"))
        .sum();
    assert_eq!(conflicts, 1.0, "the second writer met the first one's ring");
    // Every frame stored opens with the one stored ring.
    for o in blobs.list(a).await.unwrap() {
        let sealed =
            Frame::decode(blobs.get(a, o).await.unwrap().unwrap(), &Default::default()).unwrap();
        assert!(opsdata::open(&sealed, &ring).is_ok());
    }
    r1.shutdown().await;
    r2.shutdown().await;
}

/// With `with_nodes(2)`, each of two nodes admits half a tenant's burst:
/// together they admit the configured burst, not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_tenants_rate_limit() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let blobs = Arc::new(MemoryBlobs::new());
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    let frames: Vec<Frame> = (0..6).map(|_| frame(a, 20)).collect();
    let content = u64::from(frames[0].header().content_len);
    // A burst of two frames' worth, refilled slowly; the test's clock
    // stands still.
    let rate = opsdata::RateLimit::new(content / 10 + 1, 2 * content + 1).unwrap();
    let node = || {
        IngestService::builder(TestStore {
            inner: blobs.clone(),
            ..TestStore::default()
        })
        .ingest_config(opsdata::IngestConfig::default().with_rate_limit(Some(rate)))
        .limits(limits().with_nodes(2).unwrap())
        .clock(clock.clock())
        .key_store(keys.clone(), wrapping_key())
        .provisioning(policy())
        .build()
        .unwrap()
    };
    let (one, two) = (node(), node());
    let (r1, r2) = (start(&one, &pki).await, start(&two, &pki).await);
    let mut admitted = 0;
    for (i, f) in frames.iter().enumerate() {
        let addr = if i % 2 == 0 { r1.addr } else { r2.addr };
        let mut c = Client::connect(addr, pki.client(Some(&agent), b"h2"))
            .await
            .unwrap();
        let r = c.post(body(std::slice::from_ref(f))).await.unwrap();
        match r.status {
            hyper::StatusCode::OK => admitted += 1,
            hyper::StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("{s}"),
        }
    }
    // Each node's share is one frame's worth: two admitted in all (each
    // node alone with the whole limit would have admitted two).
    assert_eq!(admitted, 2);
    assert_eq!(blobs.count(a), 2);
    assert!(opsdata_io::ServiceLimits::default().with_nodes(0).is_err());
    r1.shutdown().await;
    r2.shutdown().await;
}

#[path = "../examples/support/keys.rs"]
#[allow(dead_code)]
mod file_keys;

/// The `service` example's file key store has no compare-and-swap: while
/// one node has a key directory open, a second refuses to start on it.
#[test]
fn a_second_node_on_the_examples_file_key_store_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("opsdata-io-keys-{}", uuid::Uuid::new_v4()));
    let first = file_keys::FileKeyStore::open(&dir).unwrap();
    let second = file_keys::FileKeyStore::open(&dir).unwrap_err();
    assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
    assert!(
        second.to_string().contains("another service node"),
        "{second}"
    );
    drop(first);
    // Once the first is gone, a node may start.
    let _again = file_keys::FileKeyStore::open(&dir).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Retention and purge run on one node at a time (the planner lease), and
/// running them again changes nothing: every action is safe to repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_runs_retention_and_running_it_again_changes_nothing() {
    use opsdata::{Plan, RetentionPolicy, Workspace, WorkspaceState};
    use opsdata_io::Lease;

    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let blobs = Arc::new(MemoryBlobs::new());
    let nodes: Vec<IngestService<TestStore>> =
        (0..3).map(|_| node(&blobs, &clock, &keys)).collect();
    let running = join_all(nodes.iter().map(|n| start(n, &pki))).await;
    let (a, b) = (tenant(WS_A), tenant(WS_B));
    for (i, (t, w)) in [(a, WS_A), (b, WS_B)].into_iter().enumerate() {
        let fs = [frame(t, 1), frame(t, 1)];
        for ack in post(running[i].addr, &pki, &pki.agent(w), &fs).await {
            assert_eq!(ack.outcome, Outcome::Delivered);
        }
    }
    // B's workspace closes now, and its key ring with it.
    let retention = RetentionPolicy::default();
    let mut closed = Workspace::new(b, Plan::Standard);
    closed.close(&retention, pki.now).unwrap();
    nodes[2].close_key_ring(b, &policy()).await.unwrap();
    assert!(stored_ring(&keys, b).closing().is_some());
    // 31 days on: A's frames (made on t0, Standard keeps 30 days) have
    // expired, and B's purge and key shredding are due.
    clock.set(pki.now + Duration::days(31));
    let leases: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::memory::InMemory::new());
    let mut contenders: Vec<Lease> = (1..=3u128)
        .map(|i| Lease::new(leases.clone(), "leases/planner", uuid::Uuid::from_u128(i)).unwrap())
        .collect();
    let mut lists: Vec<Vec<Workspace>> = (0..3)
        .map(|_| vec![Workspace::new(a, Plan::Standard), closed.clone()])
        .collect();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let these = join_all(
            nodes
                .iter()
                .zip(contenders.iter_mut())
                .zip(lists.iter_mut())
                .map(|((n, l), w)| n.run_retention(l, &retention, w)),
        )
        .await;
        let ran: Vec<_> = these
            .into_iter()
            .map(Result::unwrap)
            .filter(|r| r.ran)
            .collect();
        assert_eq!(ran.len(), 1, "exactly one node runs the plan: {ran:?}");
        runs.push(ran[0]);
    }
    let first = runs[0];
    assert_eq!(
        (first.objects, first.deleted, first.shredded, first.purged),
        (4, 4, 1, 1),
        "{first}"
    );
    assert!(!first.stopped);
    assert_eq!(blobs.count(a) + blobs.count(b), 0);
    assert!(stored_ring(&keys, b).shredded().is_some());
    assert!(
        lists
            .iter()
            .any(|l| matches!(l[1].state(), WorkspaceState::Purged { .. }))
    );
    // Again: nothing left to delete, shredding and marking repeat as no-ops.
    let again = runs[1];
    assert_eq!((again.objects, again.deleted), (0, 0), "{again}");
    assert!(stored_ring(&keys, b).shredded().is_some());
    // A frame for the purged workspace is not stored: its keys are gone,
    // and it is rejected (never retried), not answered transient.
    let acks = post(running[0].addr, &pki, &pki.agent(WS_B), &[frame(b, 1)]).await;
    assert_eq!(acks[0].outcome, Outcome::Rejected);
    assert_eq!(blobs.count(b), 0);
    assert!(
        metric(
            &nodes[0].metrics_text(),
            "opsdata_frames_rejected_total{reason=\"purged\"}"
        ) >= 1.0
    );
    for r in running {
        r.shutdown().await;
    }
}
