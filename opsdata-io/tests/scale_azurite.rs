//! Three service nodes, each its own process, on loopback over one Azurite
//! container (blobs and key rings both in it, `docs/SCALE.md`): agents
//! spread over the nodes, simultaneous first frames for new tenants on
//! every node, a rotation policy short enough to rotate during the run, one
//! node killed with SIGKILL mid-run (requests in flight) and restarted, and
//! each node contending for the planner lease all along.
//!
//! Checked, reading Azurite directly at the end: every batch pushed is
//! stored exactly once; every stored object opens with the stored ring;
//! each ring has one primary (also sampled during the run); the usage each
//! ring records for a key is at least the frames stored under it; the
//! lease was held by one node at a time (each node logs the intervals in
//! which it may act; no two nodes' intervals overlap).
//!
//! The nodes are this test binary run again (`scale_node`, ignored when
//! run directly), so no other build is needed.

// Tests may read the wall clock and draw random ids.
#![allow(clippy::disallowed_methods)]

mod azurite_support;
mod service_support;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use azurite_support::{Azurite, TempDir, install_azurite};
use chrono::{Duration, Utc};
use futures_util::future::join_all;
use object_store::{ObjectStore, ObjectStoreExt};
use opsdata::{
    BatchId, Frame, KeyId, KeyRing, KeyStatus, ObjectKey, Outcome, RotationPolicy, TenantId, peek,
};
use opsdata_io::{
    AsyncBlobStore, AsyncKeyStore, AzureBlobConfig, IngestService, Lease, LeaseRecord, LeaseState,
    ObjectStoreBlobs, ObjectStoreKeyStore, ServeConfig, ServiceLimits, TlsIdentity,
    load_certificates,
};
use service_support::{Client, Pki, acks, body, frame, pki, tenant, wrapping_key};
use uuid::Uuid;

const CONTAINER: &str = "scale";
const ENV_DIR: &str = "OPSDATA_SCALE_DIR";
const ENV_NODE: &str = "OPSDATA_SCALE_NODE";
const ENV_AZURITE: &str = "OPSDATA_SCALE_AZURITE";
const BLOCK: u64 = 4;
const WORKSPACES: [&str; 4] = [
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a",
    "5a6b7c8d-1e2f-4a3b-9c4d-5e6f7a8b9c0d",
];

fn policy() -> RotationPolicy {
    // A new key once 24 uses are recorded, promoted 2 s after it was made.
    RotationPolicy::default()
        .with_usage_limits(24, 1_000_000)
        .unwrap()
        .with_propagation_delay(Duration::seconds(2))
        .unwrap()
}

fn raw_store(url: &str) -> Arc<dyn ObjectStore> {
    azurite_support::raw_store(url, CONTAINER)
}

/// One node: run by `three_nodes_over_azurite_with_a_node_killed` in a
/// process of its own; does nothing when run without its environment.
#[test]
#[ignore = "a node of three_nodes_over_azurite_with_a_node_killed, run in its own process"]
fn scale_node() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let n: usize = std::env::var(ENV_NODE).unwrap().parse().unwrap();
    let url = std::env::var(ENV_AZURITE).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let config = AzureBlobConfig::emulator(&url, CONTAINER);
        let svc = IngestService::builder(ObjectStoreBlobs::azure(&config).unwrap())
            .limits(
                ServiceLimits::default()
                    .with_key_reservation_block(BLOCK)
                    .unwrap()
                    .with_nodes(3)
                    .unwrap(),
            )
            .shared_key_store(ObjectStoreKeyStore::azure(&config).unwrap(), wrapping_key())
            .provisioning(policy())
            .build()
            .unwrap();
        let tls = ServeConfig::new(
            TlsIdentity::from_pem_files(&dir.join("service.pem"), &dir.join("service.key"))
                .unwrap(),
            load_certificates(&dir.join("enrollment-ca.pem")).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tmp = dir.join(format!("port-{n}.tmp"));
        std::fs::write(&tmp, port.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("port-{n}"))).unwrap();

        // The planner: act (here, log the interval it may act in) only
        // while holding the lease.
        let lease_log = dir.join(format!("lease-{n}-{}.log", std::process::id()));
        let store = raw_store(&url);
        tokio::spawn(async move {
            let mut lease = Lease::new(store, "leases/planner", Uuid::new_v4())
                .unwrap()
                .with_ttl(Duration::seconds(3), Duration::seconds(1))
                .unwrap();
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&lease_log)
                .unwrap();
            loop {
                let now = Utc::now();
                if let Ok(LeaseState::Held { term, until }) = lease.poll(now).await
                    && lease.holds(now)
                {
                    // Unbuffered: a SIGKILL loses nothing written.
                    writeln!(
                        log,
                        "{} {term} {} {}",
                        lease.node(),
                        now.timestamp_millis(),
                        until.timestamp_millis()
                    )
                    .unwrap();
                }
                tokio::time::sleep(StdDuration::from_millis(200)).await;
            }
        });
        opsdata_io::serve(listener, svc, tls, std::future::pending())
            .await
            .unwrap();
    });
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(dir: &Path, n: usize, url: &str) -> (Node, SocketAddr) {
    let port_file = dir.join(format!("port-{n}"));
    let _ = std::fs::remove_file(&port_file);
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "scale_node", "--ignored", "--nocapture"])
        .env(ENV_DIR, dir)
        .env(ENV_NODE, n.to_string())
        .env(ENV_AZURITE, url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let node = Node { child };
    let started = Instant::now();
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            let port: u16 = p.trim().parse().unwrap();
            return (node, SocketAddr::from(([127, 0, 0, 1], port)));
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(60),
            "node {n} did not start"
        );
        std::thread::sleep(StdDuration::from_millis(50));
    }
}

/// Posts `frames` to the nodes, starting with `first`, until every frame
/// is acknowledged delivered: an agent retrying elsewhere when a node is
/// gone, busy or answers transient.
async fn deliver(
    addrs: &Mutex<Vec<SocketAddr>>,
    first: usize,
    pki: &Pki,
    agent: &pki::Issued,
    frames: &[Frame],
) {
    for attempt in 0..200 {
        let addr = addrs.lock().unwrap()[(first + attempt) % 3];
        let answer = async {
            let mut c = Client::connect(addr, pki.client(Some(agent), b"h2"))
                .await
                .ok()?;
            c.post(body(frames)).await.ok()
        };
        if let Some(r) = answer.await
            && r.status == hyper::StatusCode::OK
        {
            let got = acks(&r.body);
            if got.len() == frames.len() && got.iter().all(|a| a.outcome == Outcome::Delivered) {
                return;
            }
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("frames never delivered");
}

/// The node (0–2) holding the planner lease: the lease object names its
/// contender id, which one node's lease log names.
async fn lease_holder(store: &Arc<dyn ObjectStore>, dir: &Path) -> usize {
    let bytes = store
        .get(&object_store::path::Path::from("leases/planner"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let holder = LeaseRecord::decode(&bytes).unwrap().holder.to_string();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("lease-")
            && std::fs::read_to_string(&path).unwrap().contains(&holder)
        {
            return rest.split('-').next().unwrap().parse().unwrap();
        }
    }
    panic!("no node logged holding the lease {holder}");
}

fn primaries(ring: &KeyRing) -> usize {
    ring.versions()
        .filter(|v| v.status == KeyStatus::Primary)
        .count()
}

async fn stored_ring(keys: &ObjectStoreKeyStore, t: TenantId) -> Option<KeyRing> {
    let (bytes, _) = keys.get_versioned(t).await.unwrap()?;
    Some(KeyRing::from_sealed(&bytes, t, &wrapping_key()).unwrap())
}

#[test]
fn three_nodes_over_azurite_with_a_node_killed() {
    if !azurite_support::available("three_nodes_over_azurite_with_a_node_killed") {
        return;
    }
    let started = Instant::now();
    let azurite = Azurite::start(&install_azurite());
    azurite.create_container(CONTAINER);
    let url = azurite.url.clone();
    let dir = TempDir::new("scale");
    let pki = Pki::new();
    std::fs::write(dir.0.join("service.pem"), &pki.service.pem).unwrap();
    std::fs::write(dir.0.join("service.key"), &pki.service.key_pem).unwrap();
    std::fs::write(dir.0.join("enrollment-ca.pem"), &pki.enrollment.pem).unwrap();

    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for n in 0..3 {
        let (node, addr) = spawn_node(&dir.0, n, &url);
        nodes.push(Some(node));
        addrs.push(addr);
    }
    let addrs = Arc::new(Mutex::new(addrs));
    let tenants: Vec<(TenantId, pki::Issued)> = WORKSPACES
        .iter()
        .map(|w| (tenant(w), pki.agent(w)))
        .collect();
    let mut sent: BTreeMap<TenantId, HashSet<BatchId>> = BTreeMap::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = AzureBlobConfig::emulator(&url, CONTAINER);

    rt.block_on(async {
        let keys = ObjectStoreKeyStore::azure(&config).unwrap();
        // Every tenant is new: its first frames reach all three nodes at
        // once.
        join_all(tenants.iter().flat_map(|(t, agent)| {
            let frames: Vec<Frame> = (0..3).map(|_| frame(*t, 2)).collect();
            sent.entry(*t)
                .or_default()
                .extend(frames.iter().map(Frame::batch_id));
            let (addrs, pki) = (&addrs, &pki);
            (0..3).map(move |i| {
                let f = frames[i].clone();
                async move { deliver(addrs, i, pki, agent, std::slice::from_ref(&f)).await }
            })
        }))
        .await;

        // A sampler: every ring read during the run has one primary.
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = {
            let sampling = sampling.clone();
            let ids: Vec<TenantId> = tenants.iter().map(|(t, _)| *t).collect();
            let keys = ObjectStoreKeyStore::azure(&config).unwrap();
            tokio::spawn(async move {
                let mut samples = 0;
                while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                    for t in &ids {
                        if let Some(ring) = stored_ring(&keys, *t).await {
                            assert_eq!(primaries(&ring), 1);
                            samples += 1;
                        }
                    }
                    tokio::time::sleep(StdDuration::from_millis(150)).await;
                }
                samples
            })
        };

        for round in 0..12usize {
            let mut posts = Vec::new();
            for (k, (t, agent)) in tenants.iter().enumerate() {
                for j in 0..3 {
                    let frames: Vec<Frame> = (0..3).map(|_| frame(*t, 1)).collect();
                    sent.entry(*t)
                        .or_default()
                        .extend(frames.iter().map(Frame::batch_id));
                    let (addrs, pki) = (&addrs, &pki);
                    posts.push(
                        async move { deliver(addrs, k + j + round, pki, agent, &frames).await },
                    );
                }
            }
            if round == 4 {
                // SIGKILL the node holding the planner lease while this
                // round's requests are in flight, then start it again (a
                // new process, a new port, a new lease contender).
                let victim = lease_holder(&raw_store(&url), &dir.0).await;
                let all = join_all(posts);
                let kill = async {
                    tokio::time::sleep(StdDuration::from_millis(30)).await;
                    let mut node = nodes[victim].take().unwrap();
                    node.child.kill().unwrap();
                    node.child.wait().unwrap();
                    let (node, addr) =
                        tokio::task::block_in_place(|| spawn_node(&dir.0, victim, &url));
                    nodes[victim] = Some(node);
                    addrs.lock().unwrap()[victim] = addr;
                };
                tokio::join!(all, kill);
            } else {
                join_all(posts).await;
            }
            // Time for pending keys to be promoted (2 s) now and then.
            if round % 4 == 3 {
                tokio::time::sleep(StdDuration::from_millis(2500)).await;
            }
        }
        sampling.store(false, std::sync::atomic::Ordering::SeqCst);
        let samples = sampler.await.unwrap();
        assert!(samples > 0);

        let blobs = ObjectStoreBlobs::azure(&config).unwrap();
        let mut rotated = 0;
        for (t, _) in &tenants {
            let objects = blobs.list(*t).await.unwrap();
            let expected: HashSet<ObjectKey> =
                sent[t].iter().map(|b| ObjectKey::for_batch(*b)).collect();
            assert_eq!(
                objects.len(),
                expected.len(),
                "stored more or fewer than sent"
            );
            assert_eq!(objects.iter().copied().collect::<HashSet<_>>(), expected);
            let ring = stored_ring(&keys, *t).await.expect("a ring");
            assert_eq!(primaries(&ring), 1);
            if ring.versions().count() > 1 {
                rotated += 1;
            }
            let mut census: BTreeMap<KeyId, u64> = BTreeMap::new();
            for o in &objects {
                let bytes = blobs.get(*t, *o).await.unwrap().unwrap();
                *census
                    .entry(peek(&bytes).unwrap().kek_id.expect("sealed"))
                    .or_default() += 1;
                let sealed = Frame::decode(bytes, &Default::default()).unwrap();
                assert_eq!(
                    opsdata::open(&sealed, &ring).unwrap().batch_id(),
                    o.batch_id()
                );
            }
            for (id, frames) in census {
                let recorded = ring.reserved(id).unwrap();
                assert!(
                    recorded >= frames,
                    "key {id}: recorded {recorded} < {frames} stored"
                );
            }
        }
        assert!(
            rotated > 0,
            "no ring rotated: the run did not test rotation"
        );
    });

    // The lease: at most one node may act at any instant.
    let mut intervals: Vec<(String, i64, i64)> = Vec::new();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("lease-")
        {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() == 4 {
                intervals.push((
                    f[0].to_owned(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                ));
            }
        }
    }
    assert!(!intervals.is_empty(), "no node ever held the lease");
    let holders: HashSet<&String> = intervals.iter().map(|i| &i.0).collect();
    assert!(
        holders.len() >= 2,
        "the lease was never taken over from the node killed"
    );
    for a in &intervals {
        for b in &intervals {
            if a.0 != b.0 {
                assert!(
                    a.2 <= b.1 || b.2 <= a.1,
                    "two nodes could act at once: {a:?} and {b:?}"
                );
            }
        }
    }
    eprintln!(
        "three nodes over Azurite: {} batches, {} lease holders, in {:.1?}",
        sent.values().map(HashSet::len).sum::<usize>(),
        holders.len(),
        started.elapsed()
    );
    drop(nodes);
    drop(azurite);
}
