//! A small ingest service over mutual TLS.
//!
//! Listens on `[addr]` (default `127.0.0.1:4443`), requires a client
//! certificate chaining to `<dir>/enrollment-ca.pem`, derives the agent's
//! principal from it, runs the core's `Ingest` (tenant check, validation,
//! de-duplication, sealing under the tenant's key, made on first sight) and
//! stores through an `ObjectStoreBlobs` (`object_store`), answering each
//! frame (`docs/WIRE.md`). Presents `<dir>/service.pem` +
//! `<dir>/service.key`. Logs each connection and what it stores per tenant.
//! Stop it with Ctrl-C.
//!
//! Storage: the local directory `<dir>/blobs` (one folder per tenant), or,
//! when `OPSDATA_AZURE_ACCOUNT`, `OPSDATA_AZURE_CONTAINER` and
//! `OPSDATA_AZURE_KEY` are set, that Azure Blob Storage container
//! (`OPSDATA_AZURE_ENDPOINT` overrides the endpoint, e.g. Azurite's
//! `http://127.0.0.1:10000/devstoreaccount1`; plain HTTP is then allowed).
//! Key rings: sealed under the wrapping key `<dir>/wrapping.key` (32 random
//! bytes, generated with mode 0600 on the first run) and kept one file per
//! tenant in `<dir>/keys/` (`support/keys.rs`), so a restarted service
//! opens what earlier runs stored. Keep both with the blobs' backups: a lost
//! wrapping key or ring makes the tenant's data unreadable.
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
use opsdata::{Outcome, RotationPolicy, SystemEntropy, TenantId};

#[path = "support/keys.rs"]
mod keys;
use opsdata_io::{
    AzureBlobConfig, ObjectStoreBlobs, ServiceConfig, ServiceEvent, TlsIdentity, TlsService,
    load_certificates,
};

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
    let mut entropy = SystemEntropy::new();
    let wrapping = keys::wrapping_key(&dir.join("wrapping.key"), &mut entropy)?;
    let key_store = keys::FileKeyStore::open(&dir.join("keys"))?;
    let config = ServiceConfig::new(identity, enrollment_ca)
        .with_key_store(key_store, wrapping)
        .with_provisioning(RotationPolicy::default());
    // Any `opsdata::BlobStore` will do; this one is `object_store`'s.
    let store = open_store(dir)?;

    // Per tenant: frames and records stored.
    let stored: Mutex<BTreeMap<TenantId, (u64, u64)>> = Mutex::new(BTreeMap::new());
    let service = TlsService::new(config, store, Box::new(entropy), Arc::new(Utc::now))?
        .with_observer(move |event| log(event, &stored));
    let service = Arc::new(service);

    let listener = TcpListener::bind(addr)?;
    println!("listening on {}", listener.local_addr()?);
    service.spawn(listener)?.join();
    Ok(())
}

/// Azure Blob Storage if configured by the environment, else `<dir>/blobs`.
fn open_store(dir: &Path) -> Result<ObjectStoreBlobs, Box<dyn Error>> {
    let var = |name| std::env::var(name).ok();
    let store = match (
        var("OPSDATA_AZURE_ACCOUNT"),
        var("OPSDATA_AZURE_CONTAINER"),
        var("OPSDATA_AZURE_KEY"),
    ) {
        (Some(account), Some(container), Some(key)) => {
            let mut config = AzureBlobConfig::new(account, container, key);
            if let Some(endpoint) = var("OPSDATA_AZURE_ENDPOINT") {
                let http = endpoint.starts_with("http://");
                config = config.with_endpoint(endpoint).with_allow_http(http);
            }
            println!("storing in Azure Blob Storage: {config:?}");
            ObjectStoreBlobs::azure(&config)?
        }
        _ => {
            let blobs = dir.join("blobs");
            println!("storing under {}", blobs.display());
            ObjectStoreBlobs::local(blobs)?
        }
    };
    Ok(store)
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
