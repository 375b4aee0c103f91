//! Load generator and benchmark of the HTTPS ingest service, end to end on
//! loopback: agents (the agent's `HttpsTransport`, one HTTP/2 connection
//! each) → the service (a
//! child process running this binary with `serve`, durable
//! `LocalDirBlobs`, key rings in memory with usage reserved in blocks) →
//! a local directory. Beside it, in the same run, decoding alone (the
//! core's decoder, payload reader and record validation, one thread) of
//! the same frames.
//!
//! Prints one table row per scenario: frames/s, records/s, MB/s of
//! payload (uncompressed content), the service's CPU cores used (from
//! `/proc/<pid>/stat` of the service process: utime + stime over the run),
//! the payload MB/s per service core as a fraction of decoding alone per
//! core, and request latency p50 / p99.
//!
//! The last two scenarios go through a small TCP proxy on loopback that
//! delays every chunk by 25 ms each way (a 50 ms round trip): one HTTP/2
//! connection with one request in flight, then with four (what an agent
//! with `max_in_flight` 4 may do on one connection).
//!
//! ```text
//! cargo run --release -p opsdata-io --example loadgen -- [--seconds 10] [--dir /tmp/opsdata-loadgen] [--memory]
//! ```
//!
//! Linux only (it reads `/proc`).

// A benchmark reads the clock, draws ids and spawns its service.
#![allow(clippy::disallowed_methods)]

#[path = "support/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "support/pki.rs"]
mod pki;
#[path = "support/proxy.rs"]
mod proxy;

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Parser, Subcommand};
use opsdata::{
    Frame, FrameDecoder, FrameLimits, MemoryKeyStore, PayloadReader, RecordLimits, RotationPolicy,
    WrappingKey,
};
use opsdata_io::{
    IngestService, LocalDirBlobs, ServeConfig, ServiceLimits, TlsIdentity, load_certificates,
};
use uuid::Uuid;

/// End-to-end benchmark of the HTTPS ingest service.
#[derive(Debug, Parser)]
#[command(
    about = "End-to-end benchmark of the HTTPS ingest service (loopback, durable local store)."
)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Working directory (certificates, the service's blobs; emptied first).
    #[arg(long, default_value = "/tmp/opsdata-loadgen")]
    dir: PathBuf,
    /// Store blobs in memory instead of the durable local directory (to
    /// see what storage costs; acks are then not durable).
    #[arg(long)]
    memory: bool,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run the service only (what the benchmark spawns): prints `ADDR
    /// <addr>`, serves until stdin closes.
    Serve {
        /// The working directory the benchmark made.
        dir: PathBuf,
        /// Blobs in memory.
        #[arg(long)]
        memory: bool,
    },
}

const WORKSPACES: [&str; 4] = [
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "16fd2706-8baf-433b-82eb-8c7fada847da",
    "886313e1-3b8a-5372-9b90-0c9aee199e5d",
];

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::Serve { dir, memory }) => {
            if memory {
                serve(&dir, opsdata_io::MemoryBlobs::new())
            } else {
                serve(&dir, LocalDirBlobs::new(dir.join("blobs"))?)
            }
        }
        None => bench(&args),
    }
}

fn serve<B: opsdata_io::AsyncBlobStore>(dir: &Path, store: B) -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let identity =
            TlsIdentity::from_pem_files(&dir.join("service.pem"), &dir.join("service.key"))?;
        let ca = load_certificates(&dir.join("enrollment-ca.pem"))?;
        let service = IngestService::builder(store)
            .limits(ServiceLimits::default())
            .key_store(
                MemoryKeyStore::new(),
                WrappingKey::new(1, opsdata::KeyMaterial::from_bytes([7; 32])),
            )
            .provisioning(RotationPolicy::default())
            .build()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("ADDR {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        // Serve until the benchmark closes our stdin.
        let stop = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        });
        opsdata_io::serve(listener, service, ServeConfig::new(identity, ca), async {
            let _ = stop.await;
        })
        .await?;
        Ok(())
    })
}

struct Scenario {
    name: &'static str,
    records: usize,
    connections: usize,
    /// Requests in flight per connection (HTTP/2 streams).
    in_flight: usize,
    /// Through the delaying proxy (50 ms round trip).
    proxied: bool,
}

fn bench(args: &Args) -> Result<(), Box<dyn Error>> {
    let dir = &args.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let now = Utc::now();
    let enrollment = pki::ca("loadgen enrollment CA", now)?;
    let service_ca = pki::ca("loadgen service CA", now)?;
    let service = pki::service(&service_ca, &["localhost"], now)?;
    std::fs::write(dir.join("enrollment-ca.pem"), &enrollment.pem)?;
    std::fs::write(dir.join("service.pem"), &service.pem)?;
    std::fs::write(dir.join("service.key"), &service.key_pem)?;
    let agents: Vec<pki::Issued> = WORKSPACES
        .iter()
        .map(|w| pki::agent(&enrollment, w, &Uuid::new_v4().to_string(), now))
        .collect::<Result<_, _>>()?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("serve").arg(dir);
    if args.memory {
        cmd.arg("--memory");
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let addr = read_addr(&mut child)?;
    let pid = child.id();

    println!(
        "blobs: {}",
        if args.memory {
            "in memory (not durable)"
        } else {
            "LocalDirBlobs (durable)"
        }
    );
    println!(
        "| scenario | conns | tenants | frames/s | records/s | payload MB/s | service cores | of decode alone per core | p50 ms | p99 ms | decode alone MB/s/core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let scenarios = [
        Scenario {
            name: "1 MiB frames",
            records: 3_300,
            connections: 16,
            in_flight: 1,
            proxied: false,
        },
        Scenario {
            name: "10-record frames",
            records: 10,
            connections: 16,
            in_flight: 1,
            proxied: false,
        },
        Scenario {
            name: "10-record frames, 50 ms RTT proxy, 1 in flight",
            records: 10,
            connections: 1,
            in_flight: 1,
            proxied: true,
        },
        Scenario {
            name: "10-record frames, 50 ms RTT proxy, 4 in flight",
            records: 10,
            connections: 1,
            in_flight: 4,
            proxied: true,
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy = rt.block_on(proxy::DelayProxy::start(addr, Duration::from_millis(25)))?;
    for s in &scenarios {
        let templates: Vec<Frame> = WORKSPACES
            .iter()
            .map(|w| load::template(w.parse().expect("a workspace id"), s.records))
            .collect();
        let decode = decode_alone(&templates[0], Duration::from_secs(2));
        let cpu0 = cpu_seconds(pid)?;
        let started = Instant::now();
        let result = rt.block_on(load::run(
            &[if s.proxied { proxy.addr } else { addr }],
            &service_ca,
            &agents,
            &templates,
            (s.connections, s.in_flight),
            Duration::from_secs(args.seconds),
        ))?;
        let wall = started.elapsed().as_secs_f64();
        let cores = (cpu_seconds(pid)? - cpu0) / wall;
        let content = f64::from(templates[0].header().content_len);
        let records = f64::from(templates[0].header().record_count);
        let fps = result.frames as f64 / wall;
        let mbps = fps * content / 1e6;
        let mut lat = result.latencies;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} |",
            s.name,
            s.connections,
            WORKSPACES.len().min(s.connections),
            fps,
            fps * records,
            mbps,
            cores,
            if cores > 0.0 {
                mbps / cores / decode
            } else {
                0.0
            },
            pct(0.5),
            pct(0.99),
            decode,
        );
        if result.errors > 0 {
            println!("  ({} requests failed or not delivered)", result.errors);
        }
    }
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}

fn read_addr(child: &mut Child) -> Result<SocketAddr, Box<dyn Error>> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    Ok(line
        .strip_prefix("ADDR ")
        .ok_or("the service did not start")?
        .trim()
        .parse()?)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, Box<dyn Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f[11].parse()?, f[12].parse()?);
    // USER_HZ is 100 on Linux.
    Ok((utime + stime) / 100.0)
}

/// Payload MB/s that one thread decodes, validates: the service's CPU work
/// without TLS, HTTP, sealing or storage.
fn decode_alone(frame: &Frame, for_at_least: Duration) -> f64 {
    let limits = FrameLimits::default();
    let record_limits = RecordLimits::default();
    let mut reader = PayloadReader::new(limits);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < for_at_least {
        let mut d = FrameDecoder::new(limits);
        d.push(frame.as_bytes());
        let Ok(opsdata::Decoded::Frame(f)) = d.poll_frame() else {
            panic!("the template decodes");
        };
        // The path the service's ingest takes: borrowed records, validated.
        reader
            .visit_records(&f, |_, r| r.validate(&record_limits).expect("valid"))
            .expect("records");
        n += 1;
    }
    n as f64 * f64::from(frame.header().content_len) / started.elapsed().as_secs_f64() / 1e6
}
