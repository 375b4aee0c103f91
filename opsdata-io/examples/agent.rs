//! An agent delivering records of all six types over HTTPS (mutual TLS,
//! HTTP/2), on the async driver.
//!
//! Reads its credential from `<dir>/agent.pem` + `<dir>/agent.key` (its
//! workspace is the certificate's first CN; the files are read again at
//! each new connection, so a renewed certificate is picked up), trusts the
//! service through `<dir>/service-ca.pem`, and pushes `--rounds` rounds of
//! one batch per data type (Alert, Configuration, Event, Metadata,
//! Performance, State), or the records of a JSON Lines file (`--records`,
//! `--data-type`), into an `AsyncAgent`: an `Outbox` over a
//! `FileSpool` in `<dir>/spool`, sending through `HttpsTransport` with up
//! to `--max-in-flight` requests at once. Prints every delivery event
//! (`Delivered`, and `Dropped` with the records lost and why); exits with
//! an error if batches are still held when the service is unreachable or
//! `--wait` runs out. What is held stays in the spool: the next run
//! recovers it and sends it first.
//!
//! ```text
//! cargo run -p opsdata-io --example agent -- /tmp/opsdata-pki --addr 127.0.0.1:4443
//! cargo run -p opsdata-io --example agent -- --help
//! ```

// An example may read the wall clock and draw random ids; the library never does.
#![allow(clippy::disallowed_methods)]

#[path = "../../examples/support/records.rs"]
mod records;

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use opsdata::{
    BatchId, DataType, DeliveryEvent, DeliveryPolicy, Frame, FrameEncoder, FrameLimits, Record,
    Tagged, TenantBatch, TenantId, subject_ids,
};
use opsdata_io::{
    AgentEvent, AgentSettings, AsyncAgent, FileSpool, HttpsSettings, HttpsTransport, KeyFileStore,
    PemIdentity, SpoolConfig, SpoolProtection, load_certificates, system_clock,
};
use uuid::Uuid;

/// Sends sample records of the six data types to an opsdata service over
/// HTTPS with mutual TLS, keeping its backlog in a crash-safe spool.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directory holding agent.pem, agent.key and service-ca.pem (as the
    /// `certs` example writes them); the spool is kept in <DIR>/spool.
    dir: PathBuf,
    /// The service's address.
    #[arg(long, default_value = "127.0.0.1:4443")]
    addr: SocketAddr,
    /// The name the service's certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Rounds of sample batches to push (six batches each, one per data
    /// type), when no --records file is given.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Requests in flight at once (over one HTTP/2 connection).
    #[arg(long, default_value_t = 4)]
    max_in_flight: u32,
    /// The spool's bound on disk, in MiB.
    #[arg(long, default_value_t = 256)]
    spool_mib: u64,
    /// Seconds to wait for delivery before exiting with what is still held.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Offer only HTTP/1.1 (requests then take turns on one connection).
    #[arg(long)]
    http1: bool,
    /// Where the spool key is kept (a 0600 file, created on first use);
    /// default <DIR>/spool.key. The spool is sealed at rest under it.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Keep the spool in the clear (not recommended: a copy of the spool
    /// directory then shows every cached record).
    #[arg(long, conflicts_with = "key_file")]
    unprotected: bool,
    /// Send the records of this JSON Lines file (docs/RECORDS.md) instead
    /// of the samples; needs --data-type.
    #[arg(long, requires = "data_type")]
    records: Option<PathBuf>,
    /// The data type of every record in --records.
    #[arg(long)]
    data_type: Option<DataType>,
    /// Records per batch (frame) when reading --records.
    #[arg(long, default_value_t = 500)]
    batch_records: usize,
}

/// The frames of a JSON Lines file of `data_type` records, `per_batch`
/// records each.
fn file_frames(
    path: &std::path::Path,
    tenant: TenantId,
    data_type: DataType,
    per_batch: usize,
    now: chrono::DateTime<Utc>,
    next_id: &mut dyn FnMut() -> BatchId,
) -> Result<Vec<Frame>, Box<dyn Error>> {
    let text = std::fs::read(path)?;
    let mut encoder = FrameEncoder::new();
    let mut frames = Vec::new();
    let mut batch = TenantBatch::new(tenant, data_type);
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let record = Record::from_json(data_type, line)
            .map_err(|e| format!("{}: line {}: {e}", path.display(), number + 1))?;
        batch
            .push(Tagged::new(tenant, record))
            .map_err(|e| format!("{}: line {}: {}", path.display(), number + 1, e.error))?;
        if batch.len() >= per_batch.max(1) {
            frames.push(encoder.encode_frame(&batch, next_id(), now)?);
            batch = TenantBatch::new(tenant, data_type);
        }
    }
    if !batch.is_empty() {
        frames.push(encoder.encode_frame(&batch, next_id(), now)?);
    }
    Ok(frames)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let dir = &args.dir;

    let certificate = load_certificates(&dir.join("agent.pem"))?.remove(0);
    let (tenant, agent_id) = subject_ids(&certificate)?;
    println!("agent {agent_id} of workspace {tenant}");

    let settings = HttpsSettings::new(
        args.addr,
        &args.server_name,
        load_certificates(&dir.join("service-ca.pem"))?,
    )?
    .with_connect_timeout(Duration::from_secs(5))?
    .with_request_timeout(Duration::from_secs(20))?
    .with_http1_only(args.http1);
    let transport = HttpsTransport::new(
        settings,
        PemIdentity::new(dir.join("agent.pem"), dir.join("agent.key")),
    );
    let seed = u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into()?);
    // The backlog on disk; the outbox holds what the spool can keep within
    // that bound.
    let config = SpoolConfig::new(args.spool_mib << 20)?.with_sealed_at_rest(!args.unprotected)?;
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(config.outbox_limit_bytes())?
        .with_max_in_flight(args.max_in_flight)?;
    // Sealed at rest (recommended): the spool key in a 0600 file of its
    // own, outside the spool directory.
    let (spool, found) = if args.unprotected {
        FileSpool::open(dir.join("spool"), config)?
    } else {
        let key = args
            .key_file
            .clone()
            .unwrap_or_else(|| dir.join("spool.key"));
        let protection = SpoolProtection::new(KeyFileStore::new(key), system_clock());
        FileSpool::open_protected(dir.join("spool"), config, protection)?
    };
    println!(
        "spool: {} frame(s), {} byte(s) held from an earlier run; {} torn byte(s) cut, {} segment(s) moved aside",
        found.frames,
        found.held_bytes,
        found.torn_bytes,
        found.moved_aside.len()
    );
    // Frames lost to damage in the spool are losses like any other: a
    // host feeds these to its `LossLedger` so the customer is told.
    let corrupt: Vec<DeliveryEvent> = found.losses().collect();
    for lost in &corrupt {
        print_event(&AgentEvent::Delivery(lost.clone()));
    }
    // Sends what an earlier run left, before anything new.
    let (mut agent, report) = AsyncAgent::start(
        AgentSettings::new(policy, seed).with_limits(FrameLimits::default()),
        transport.clone(),
        spool,
    )
    .await?;
    if report.recovered + report.dropped + report.skipped.len() > 0 {
        println!("recovered: {report:?}");
    }

    let mut next_id = || BatchId::from_random_bytes(*Uuid::new_v4().as_bytes());
    let now = Utc::now();
    let frames = match (&args.records, args.data_type) {
        (Some(path), Some(data_type)) => file_frames(
            path,
            tenant,
            data_type,
            args.batch_records,
            now,
            &mut next_id,
        )?,
        _ => (0..args.rounds)
            .flat_map(|round| records::frames(tenant, now, round, &mut next_id))
            .collect(),
    };
    for frame in frames {
        println!(
            "push {} batch {}: {} record(s), {} bytes",
            frame.data_type(),
            frame.batch_id(),
            frame.header().record_count,
            frame.len()
        );
        // Returns once the frame is in the spool.
        agent.push(frame).await?;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let (mut lost_batches, mut lost_records) = (0u64, 0u64);
    for lost in &corrupt {
        if let DeliveryEvent::Dropped { records, .. } = lost {
            lost_batches += 1;
            lost_records += u64::from(*records);
        }
    }
    let held = loop {
        while let Some(event) = agent.try_next_event() {
            if let AgentEvent::Delivery(DeliveryEvent::Dropped { records, .. }) = &event {
                lost_batches += 1;
                lost_records += u64::from(*records);
            }
            print_event(&event);
        }
        let status = agent.status().await?;
        if status.held_batches == 0 {
            break 0;
        }
        let offline = status.phases.cached + status.phases.queued;
        if status.in_flight == 0 && offline > 0 {
            // The service is unreachable: the next attempt is minutes away.
            println!(
                "service unreachable; next attempt at {}",
                status
                    .next_timeout
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
            );
            break status.held_batches;
        }
        if tokio::time::Instant::now() >= deadline {
            break status.held_batches;
        }
        match tokio::time::timeout_at(deadline, agent.next_event()).await {
            Ok(Some(event)) => {
                if let AgentEvent::Delivery(DeliveryEvent::Dropped { records, .. }) = &event {
                    lost_batches += 1;
                    lost_records += u64::from(*records);
                }
                print_event(&event);
            }
            Ok(None) => break status.held_batches,
            Err(_) => {}
        }
    };
    agent.shutdown().await?;
    while let Some(event) = agent.try_next_event() {
        print_event(&event);
    }
    println!("transport: {:?}", transport.stats());
    if lost_batches > 0 {
        println!("LOST: {lost_batches} batch(es), {lost_records} record(s) dropped");
    }
    if held > 0 {
        return Err(format!(
            "{held} batch(es) still held in the spool (the next run sends them first); last error: {}",
            transport.last_error().unwrap_or_else(|| "none".to_owned())
        )
        .into());
    }
    println!("all batches delivered");
    Ok(())
}

fn print_event(event: &AgentEvent) {
    match event {
        AgentEvent::Delivery(DeliveryEvent::Delivered {
            data_type,
            batch_id,
            records,
            ..
        }) => println!("delivered {data_type} batch {batch_id}: {records} record(s)"),
        AgentEvent::Delivery(DeliveryEvent::Dropped {
            data_type,
            batch_id,
            records,
            reason,
            ..
        }) => {
            println!("DROPPED {data_type} batch {batch_id}: {records} record(s) lost ({reason:?})")
        }
        other => println!("{other:?}"),
    }
}
