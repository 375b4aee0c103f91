//! An agent delivering records of all six types over mutual TLS.
//!
//! Reads its credential from `<dir>/agent.pem` + `<dir>/agent.key` (its
//! workspace is the certificate's first CN), trusts the service through
//! `<dir>/service-ca.pem`, and sends one batch of each data type (Alert,
//! Configuration, Event, Metadata, Performance, State) through the core's
//! `Agent` (an `Outbox` over a `FileSpool` in `<dir>/spool`) and a
//! `TlsTransport` to `[addr]` (default `127.0.0.1:4443`), expecting a
//! certificate for `[server-name]` (default `localhost`). Prints the
//! delivery events; exits with an error if a batch is still held (the
//! service is unreachable). What is held stays in the spool: the next run
//! recovers it and sends it first.
//!
//! ```text
//! cargo run -p opsdata-io --example agent -- <dir> [addr] [server-name]
//! ```

// An example may read the wall clock and draw random ids; the library never does.
#![allow(clippy::disallowed_methods)]

#[path = "../../examples/support/records.rs"]
mod records;

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use opsdata::{
    Agent, AgentKey, BatchId, Credential, DeliveryPolicy, FrameLimits, SystemEntropy, subject_ids,
};
use opsdata_io::{
    FileSpool, SpoolConfig, Timeouts, TlsIdentity, TlsTransport, TransportSettings,
    load_certificates,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use uuid::Uuid;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, addr, server_name) = match args.as_slice() {
        [dir] => (dir.as_str(), "127.0.0.1:4443", "localhost"),
        [dir, addr] => (dir.as_str(), addr.as_str(), "localhost"),
        [dir, addr, name] => (dir.as_str(), addr.as_str(), name.as_str()),
        _ => return Err("usage: agent <dir> [addr] [server-name]".into()),
    };
    let dir = Path::new(dir);

    // The agent's credential, as the core holds it.
    let certificate = load_certificates(&dir.join("agent.pem"))?.remove(0);
    let (tenant, agent_id) = subject_ids(&certificate)?;
    let pkcs8 = PrivatePkcs8KeyDer::from_pem_file(dir.join("agent.key"))?;
    let entropy = SystemEntropy::new();
    let key = AgentKey::from_pkcs8(pkcs8.secret_pkcs8_der(), entropy.secure_random())?;
    drop(pkcs8);
    let credential = Credential::new(certificate, key)?;
    println!("agent {agent_id} of workspace {tenant}");

    let settings = TransportSettings::new(
        addr.parse()?,
        server_name,
        load_certificates(&dir.join("service-ca.pem"))?,
    )?
    .with_timeouts(Timeouts::new(
        Duration::from_secs(5),
        Duration::from_secs(10),
        Duration::from_secs(10),
    )?);
    let transport = TlsTransport::new(settings, &TlsIdentity::from_credential(&credential))?;
    let seed = u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into()?);
    // The backlog on disk, at most 256 MiB of it; the outbox holds what the
    // spool can keep within that bound.
    let config = SpoolConfig::new(256 << 20)?;
    let policy = DeliveryPolicy::default().with_limit_bytes(config.outbox_limit_bytes())?;
    let (spool, found) = FileSpool::open(dir.join("spool"), config)?;
    println!(
        "spool: {} frame(s), {} byte(s) held from an earlier run; {} torn byte(s) cut, {} segment(s) moved aside",
        found.frames,
        found.held_bytes,
        found.torn_bytes,
        found.moved_aside.len()
    );
    let now = Utc::now();
    // Sends what an earlier run left, before anything new.
    let (mut agent, report) =
        Agent::recover(policy, seed, now, transport, spool, &FrameLimits::default())?;
    if report.recovered + report.dropped + report.skipped.len() > 0 {
        println!("recovered: {report:?}");
    }

    let mut next_id = || BatchId::from_random_bytes(*Uuid::new_v4().as_bytes());
    for frame in records::frames(tenant, now, 0, &mut next_id) {
        println!(
            "push {} batch {}: {} record(s), {} bytes",
            frame.data_type(),
            frame.batch_id(),
            frame.header().record_count,
            frame.len()
        );
        agent.push(now, frame)?;
    }
    agent.tick(now)?;
    while let Some(event) = agent.poll_event() {
        println!("{event:?}");
    }
    let stats = agent.transport().stats();
    println!("transport: {stats:?}");
    let held = agent.outbox().held_by_phase();
    let held = held.pending + held.in_flight + held.cached + held.queued;
    if held > 0 {
        return Err(format!(
            "{held} batch(es) still held (retried on the policy's schedule by a long-running agent); last error: {}",
            agent
                .transport()
                .last_error()
                .map_or_else(|| "none".to_owned(), ToString::to_string)
        )
        .into());
    }
    println!("all batches delivered");
    Ok(())
}
