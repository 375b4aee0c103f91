//! Benchmark of several service nodes over one object store
//! (`docs/SCALE.md`): one node, then three, on this machine, each an
//! `IngestService` served over HTTPS on its own loopback port, all sharing
//! one store for their blobs (`ObjectStoreBlobs`) and their key rings
//! (`ObjectStoreKeyStore`, compare-and-swap). Agents (the agent's
//! `HttpsTransport`, one HTTP/2 connection each) spread their connections
//! over the nodes and send small frames for `--seconds`.
//!
//! Prints one row per node count: frames/s, latency p50 / p99, the
//! process's CPU cores used, and the store round trips per frame: blob
//! puts, key-ring reads and writes (from the nodes' own metrics; the goal
//! is at most one ring write per reserved block per node, plus one per
//! tenant provisioned and per rotation step, never one per frame), the
//! seals made, and conflicting ring writes.
//!
//! The store is `object_store`'s `InMemory` (no latency: the figures are
//! the nodes' own cost), or with `--azurite <blob endpoint>` an Azurite (or
//! Azure) container `--container` that must exist.
//!
//! ```text
//! cargo run --release -p opsdata-io --example scalebench -- [--seconds 10] [--block 256]
//! ```
//!
//! Linux only (it reads `/proc/self/stat`).

// A benchmark reads the clock and draws ids.
#![allow(clippy::disallowed_methods)]

#[path = "support/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "support/pki.rs"]
mod pki;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use object_store::ObjectStore;
use opsdata::{Frame, KeyMaterial, RotationPolicy, WrappingKey};
use opsdata_io::{
    AzureBlobConfig, IngestService, ObjectStoreBlobs, ObjectStoreKeyStore, ServeConfig,
    ServiceLimits, TlsIdentity,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

/// Several ingest nodes over one object store.
#[derive(Debug, Parser)]
#[command(about = "Several ingest nodes over one object store: throughput and store round trips")]
struct Args {
    /// Seconds per row.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seals reserved per key-ring write.
    #[arg(long, default_value_t = 256)]
    block: u64,
    /// Agent connections (4 tenants).
    #[arg(long, default_value_t = 12)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Records per frame.
    #[arg(long, default_value_t = 10)]
    records: usize,
    /// Azurite's (or Azure's) blob endpoint, e.g. http://127.0.0.1:10000.
    #[arg(long)]
    azurite: Option<String>,
    /// The container, which must exist.
    #[arg(long, default_value = "opsdata")]
    container: String,
}

const WORKSPACES: [&str; 4] = [
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a",
    "5a6b7c8d-1e2f-4a3b-9c4d-5e6f7a8b9c0d",
];

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let now = Utc::now();
    let enrollment = pki::ca("scalebench enrollment CA", now)?;
    let service_ca = pki::ca("scalebench service CA", now)?;
    let service = pki::service(&service_ca, &["localhost"], now)?;
    let agents: Vec<pki::Issued> = WORKSPACES
        .iter()
        .map(|w| pki::agent(&enrollment, w, &Uuid::new_v4().to_string(), now))
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "store: {}; {} connections x {} in flight, {}-record frames, blocks of {}",
        args.azurite
            .as_deref()
            .map_or("InMemory".to_owned(), |u| format!("Azurite at {u}")),
        args.connections,
        args.in_flight,
        args.records,
        args.block
    );
    println!(
        "| nodes | frames/s | p50 ms | p99 ms | process cores | blob puts/frame | ring reads/frame | ring writes/frame | ring writes | seals | conflicts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (row, nodes) in [1usize, 3].into_iter().enumerate() {
        // A fresh root per row, so each starts with no rings and no blobs.
        let root = format!("bench-{}-{row}", now.timestamp());
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let azure = args
            .azurite
            .as_ref()
            .map(|url| AzureBlobConfig::emulator(url, args.container.clone()));
        let stores = || -> Result<(ObjectStoreBlobs, ObjectStoreKeyStore), Box<dyn Error>> {
            let (blobs, keys) = match &azure {
                None => (
                    ObjectStoreBlobs::new(memory.clone()),
                    ObjectStoreKeyStore::new(memory.clone()),
                ),
                Some(config) => (
                    ObjectStoreBlobs::azure(config)?,
                    ObjectStoreKeyStore::azure(config)?,
                ),
            };
            Ok((
                blobs.with_root(&format!("{root}/frames"))?,
                keys.with_root(&format!("{root}/keys"))?,
            ))
        };
        let templates: Vec<Frame> = WORKSPACES
            .iter()
            .map(|w| load::template(w.parse().expect("a workspace id"), args.records))
            .collect();
        let result = rt.block_on(async {
            let mut services = Vec::new();
            let mut addrs = Vec::new();
            let mut stops = Vec::new();
            for _ in 0..nodes {
                let (blobs, keys) = stores()?;
                let svc = IngestService::builder(blobs)
                    .limits(
                        ServiceLimits::default()
                            .with_key_reservation_block(args.block)?
                            .with_nodes(u32::try_from(nodes)?)?,
                    )
                    .shared_key_store(keys, WrappingKey::new(1, KeyMaterial::from_bytes([7; 32])))
                    .provisioning(RotationPolicy::default())
                    .build()?;
                let identity = TlsIdentity::new(
                    vec![service.der.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(service.key_der.clone())),
                )?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addrs.push(listener.local_addr()?);
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                stops.push(tx);
                let tls = ServeConfig::new(identity, vec![enrollment.der.clone()]);
                tokio::spawn(opsdata_io::serve(listener, svc.clone(), tls, async {
                    let _ = rx.await;
                }));
                services.push(svc);
            }
            let cpu0 = cpu_seconds()?;
            let started = Instant::now();
            let r = load::run(
                &addrs,
                &service_ca,
                &agents,
                &templates,
                (args.connections, args.in_flight),
                Duration::from_secs(args.seconds),
            )
            .await?;
            let wall = started.elapsed().as_secs_f64();
            let cores = (cpu_seconds()? - cpu0) / wall;
            let sum = |name: &str| -> f64 {
                services
                    .iter()
                    .map(|s| metric(&s.metrics_text(), name))
                    .sum()
            };
            let stats = (
                sum("opsdata_frames_stored_total"),
                sum("opsdata_key_ring_reads_total"),
                sum("opsdata_key_reservations_total"),
                sum("opsdata_key_ring_conflicts_total"),
                sum("opsdata_seals_total"),
            );
            for s in stops {
                let _ = s.send(());
            }
            Ok::<_, Box<dyn Error>>((r, wall, cores, stats))
        })?;
        let (r, wall, cores, (stored, reads, writes, conflicts, seals)) = result;
        let mut lat = r.latencies;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let frames = r.frames as f64;
        println!(
            "| {nodes} | {:.0} | {:.1} | {:.1} | {:.2} | {:.3} | {:.4} | {:.4} | {writes:.0} | {seals:.0} | {conflicts:.0} |",
            frames / wall,
            pct(0.5),
            pct(0.99),
            cores,
            stored / frames.max(1.0),
            reads / frames.max(1.0),
            writes / frames.max(1.0),
        );
        if r.errors > 0 {
            println!("  ({} requests failed or not delivered)", r.errors);
        }
    }
    Ok(())
}

/// The value of the metric line `name` in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> Result<f64, Box<dyn Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    // USER_HZ is 100 on Linux.
    Ok((utime + stime) / 100.0)
}
