//! Bench (issue 13, item 8c): one agent through a 50 ms round trip, with
//! `max_in_flight` 1 and 4, frames per second each, printed as a table.
//!
//! Everything runs here, on loopback: the minimal HTTPS ingest server of
//! the tests (`tests/common/server.rs`: mutual TLS, HTTP/2, the core's
//! `Ingest`, blobs in memory), a delaying TCP proxy in front of it
//! (`support/proxy.rs`: each chunk written `--delay-ms` later, each way),
//! and an `AsyncAgent` over a `FileSpool` (fsync per persist, as in
//! production) sending 10-record frames through `HttpsTransport`. Each
//! run pushes `--frames` frames after one warm-up frame (so the TLS and
//! HTTP/2 handshakes are not counted) and times until the last is
//! delivered. The HTTP/1.1 row shows why the one connection must be
//! HTTP/2: requests then take turns, whatever `max_in_flight` says.
//!
//! ```text
//! cargo run --release -p opsdata-io --example pipelining
//! cargo run --release -p opsdata-io --example pipelining -- --frames 400 --delay-ms 25
//! ```

// An example may read the wall clock.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/pki_support/mod.rs"]
mod pki_support;
#[path = "support/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../tests/common/server.rs"]
mod server;

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use opsdata::{
    BatchId, DataType, DeliveryEvent, DeliveryPolicy, Frame, FrameEncoder, FrameLimits,
    Performance, Record, Tagged, TenantBatch, TenantId,
};
use opsdata_io::{
    AgentEvent, AgentSettings, AsyncAgent, FileSpool, HttpsSettings, HttpsTransport, SpoolConfig,
};
use server::{IngestServer, Pki, State, identity};
use uuid::Uuid;

const WORKSPACE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// One agent through a delaying proxy: frames/s with max_in_flight 1 and 4.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Frames per run (after one warm-up frame).
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// The proxy's one-way delay in milliseconds (the round trip grows by
    /// twice this).
    #[arg(long, default_value_t = 25)]
    delay_ms: u64,
    /// Records per frame.
    #[arg(long, default_value_t = 10)]
    records: usize,
}

fn frame(tenant: TenantId, seq: u64, records: usize, now: DateTime<Utc>) -> Frame {
    let recs = (0..records).map(|i| {
        Tagged::new(
            tenant,
            Record::Performance(Performance {
                object_name: "Processor".into(),
                counter_name: "% Processor Time".into(),
                perfmon_instance_name: format!("_Total-{i}"),
                performance_data_id: Uuid::from_u128(u128::from(seq) * 1000 + i as u128),
                performance_source_internal_id: 7,
                sample_value: (seq % 100) as f64 + 0.5,
                time_sampled: now,
                time_added: now,
            }),
        )
    });
    let batch = TenantBatch::from_records(tenant, DataType::Performance, recs).unwrap();
    FrameEncoder::new()
        .encode_frame(
            &batch,
            BatchId::from_random_bytes(*Uuid::new_v4().as_bytes()),
            now,
        )
        .unwrap()
}

/// Waits for `n` deliveries; a drop or an outage ends the run.
async fn delivered(
    agent: &mut AsyncAgent<FileSpool>,
    transport: &HttpsTransport,
    mut left: usize,
) -> Result<(), Box<dyn Error>> {
    while left > 0 {
        match agent.next_event().await {
            Some(AgentEvent::Delivery(DeliveryEvent::Delivered { .. })) => left -= 1,
            Some(AgentEvent::Delivery(DeliveryEvent::Dropped { .. })) | None => {
                return Err("a frame was dropped or the agent stopped".into());
            }
            Some(AgentEvent::Delivery(DeliveryEvent::TenantOffline { .. })) => {
                return Err(format!(
                    "the service was unreachable: {}",
                    transport.last_error().unwrap_or_default()
                )
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(())
}

struct Run {
    label: String,
    max_in_flight: u32,
    seconds: f64,
    frames: usize,
    connects: u64,
}

async fn run(
    pki: &Pki,
    proxy: std::net::SocketAddr,
    max_in_flight: u32,
    http1: bool,
    args: &Args,
) -> Result<Run, Box<dyn Error>> {
    let tenant: TenantId = WORKSPACE.parse()?;
    let dir = std::env::temp_dir().join(format!(
        "opsdata-pipelining-{}-{max_in_flight}-{http1}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let config = SpoolConfig::new(256 << 20)?;
    let (spool, _) = FileSpool::open(&dir, config)?;
    let transport = HttpsTransport::new(
        HttpsSettings::new(proxy, "localhost", pki.roots())?.with_http1_only(http1),
        Arc::new(identity(&pki.agent(WORKSPACE))),
    );
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(config.outbox_limit_bytes())?
        .with_max_in_flight(max_in_flight)?;
    let (mut agent, _) = AsyncAgent::start(
        AgentSettings::new(policy, 1).with_limits(FrameLimits::default()),
        transport.clone(),
        spool,
    )
    .await?;
    let now = Utc::now();
    // Warm-up: the TLS and HTTP handshakes.
    agent.push(frame(tenant, 0, args.records, now)).await?;
    delivered(&mut agent, &transport, 1).await?;
    let frames: Vec<Frame> = (1..=args.frames as u64)
        .map(|seq| frame(tenant, seq, args.records, now))
        .collect();
    let start = Instant::now();
    let handle = agent.handle();
    let pusher = tokio::spawn(async move {
        for f in frames {
            handle.push(f).await?;
        }
        Ok::<_, opsdata_io::DriverError>(())
    });
    delivered(&mut agent, &transport, args.frames).await?;
    let seconds = start.elapsed().as_secs_f64();
    pusher.await??;
    agent.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run {
        label: if http1 { "HTTP/1.1" } else { "HTTP/2" }.to_owned(),
        max_in_flight,
        seconds,
        frames: args.frames,
        connects: transport.stats().connects,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let pki = Pki::new();
    let state = State::new(&pki, FrameLimits::default());
    let server = IngestServer::start(&pki, state, "127.0.0.1:0".parse()?).await;
    let proxy = proxy::DelayProxy::start(server.addr, Duration::from_millis(args.delay_ms)).await?;
    println!(
        "one agent -> proxy (+{} ms round trip) -> HTTPS ingest server, {} frames of {} records",
        2 * args.delay_ms,
        args.frames,
        args.records
    );
    let mut runs = Vec::new();
    for (mif, http1) in [(1, false), (4, false), (4, true)] {
        runs.push(run(&pki, proxy.addr, mif, http1, &args).await?);
    }
    let base = runs[0].frames as f64 / runs[0].seconds;
    println!();
    println!(
        "| wire | max_in_flight | frames | seconds | frames/s | × one at a time | connections |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        let rate = r.frames as f64 / r.seconds;
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.2} | {} |",
            r.label,
            r.max_in_flight,
            r.frames,
            r.seconds,
            rate,
            rate / base,
            r.connects
        );
    }
    server.stop().await;
    Ok(())
}
