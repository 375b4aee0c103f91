//! A small ingest service over mutual TLS.
//!
//! Listens on `[addr]` (default `127.0.0.1:4443`), requires a client
//! certificate chaining to `<dir>/enrollment-ca.pem`, derives the agent's
//! principal from it, runs the core's `Ingest` (tenant check, validation,
//! de-duplication, sealing under the tenant's key, made on first sight) and
//! stores into a `MemoryBlobStore`, answering each frame (`docs/WIRE.md`).
//! Presents `<dir>/service.pem` + `<dir>/service.key`. Logs each connection
//! and what it stores per tenant. Stop it with Ctrl-C.
//!
//! ```text
//! cargo run -p opsdata-io --example certs -- <dir> <workspace-id>
//! cargo run -p opsdata-io --example service -- <dir> [addr]
//! ```

// An example may read the wall clock; the library takes it from here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::error::Error;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use opsdata::{MemoryBlobStore, Outcome, RotationPolicy, SystemEntropy, TenantId};
use opsdata_io::{ServiceConfig, ServiceEvent, TlsIdentity, TlsService, load_certificates};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, addr) = match args.as_slice() {
        [dir] => (dir.as_str(), "127.0.0.1:4443"),
        [dir, addr] => (dir.as_str(), addr.as_str()),
        _ => return Err("usage: service <dir> [addr]".into()),
    };
    let dir = Path::new(dir);
    let identity = TlsIdentity::from_pem_files(&dir.join("service.pem"), &dir.join("service.key"))?;
    let enrollment_ca = load_certificates(&dir.join("enrollment-ca.pem"))?;
    let config =
        ServiceConfig::new(identity, enrollment_ca).with_provisioning(RotationPolicy::default());
    // The one line to change for another store (any `opsdata::BlobStore`).
    let store = MemoryBlobStore::new();

    // Per tenant: frames and records stored.
    let stored: Mutex<BTreeMap<TenantId, (u64, u64)>> = Mutex::new(BTreeMap::new());
    let service = TlsService::new(
        config,
        store,
        Box::new(SystemEntropy::new()),
        Arc::new(Utc::now),
    )?
    .with_observer(move |event| log(event, &stored));
    let service = Arc::new(service);

    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    service.spawn(listener)?.join();
    Ok(())
}

fn log(event: &ServiceEvent, stored: &Mutex<BTreeMap<TenantId, (u64, u64)>>) {
    match event {
        ServiceEvent::Connected {
            peer,
            tenant,
            agent_id,
        } => println!(
            "connected {peer:?}: agent {} of workspace {tenant}",
            agent_id.map_or_else(|| "-".to_owned(), |a| a.to_string())
        ),
        ServiceEvent::Refused { peer, reason } => println!("refused {peer:?}: {reason}"),
        ServiceEvent::Frame {
            tenant,
            batch_id,
            data_type,
            records,
            outcome,
            duplicate,
            error,
        } => {
            if *outcome == Outcome::Delivered && !duplicate {
                let mut s = stored.lock().unwrap_or_else(|e| e.into_inner());
                let t = s.entry(*tenant).or_default();
                t.0 += 1;
                t.1 += u64::from(*records);
                println!(
                    "stored for {tenant}: {data_type} batch {batch_id}, {records} record(s); tenant total {} frame(s), {} record(s)",
                    t.0, t.1
                );
            } else {
                println!(
                    "{tenant}: {data_type} batch {batch_id}: {outcome:?}{}{}",
                    if *duplicate { " (duplicate)" } else { "" },
                    error.as_ref().map_or(String::new(), |e| format!(": {e}"))
                );
            }
        }
        ServiceEvent::Closed {
            peer,
            frames,
            error,
        } => println!(
            "closed {peer:?} after {frames} frame(s){}",
            error.as_ref().map_or(String::new(), |e| format!(": {e}"))
        ),
        other => println!("{other:?}"),
    }
}
