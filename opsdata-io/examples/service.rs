//! The ingest service over HTTPS with mutual TLS (`docs/WIRE.md`).
//!
//! Serves `POST /v1/frames`, `GET /healthz`, `GET /readyz` and
//! `GET /metrics` on `--addr` (default `127.0.0.1:4443`), HTTP/2 and
//! HTTP/1.1, requiring a client certificate chaining to
//! `<dir>/enrollment-ca.pem`, presenting `<dir>/service.pem` +
//! `<dir>/service.key` (the files the `certs` example writes). Each tenant
//! gets a key ring on first sight, sealed under `<dir>/wrapping.key` (32
//! random bytes, made with mode 0600 on the first run) and kept one file
//! per tenant in `<dir>/keys/`; keep both with the blobs' backups.
//!
//! Storage: the local directory `<dir>/blobs`, durable (each frame synced,
//! with its directory, before it is acknowledged), or, with `--azure-*`
//! (or the `OPSDATA_AZURE_*` variables), an Azure Blob Storage container.
//! The file key store in `<dir>/keys` serves one node (a second process on
//! it refuses to start); with `--azure-*` and `--shared-keys` the rings live
//! in the container and any number of nodes may share it, each started the
//! same way with `--nodes N` (`docs/SCALE.md`).
//!
//! Logs go to stderr through `tracing-subscriber` (`RUST_LOG`, default
//! `info`). Ctrl-C (or SIGTERM) shuts down gracefully: requests in flight
//! finish, then the process exits.
//!
//! ```text
//! cargo run -p opsdata-io --example certs -- <dir> <workspace-id>
//! cargo run -p opsdata-io --example service -- <dir> [--addr 127.0.0.1:4443]
//! ```

// An example may read the wall clock; the library takes it from here.
#![allow(clippy::disallowed_methods)]

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use opsdata::{RotationPolicy, SystemEntropy};
use opsdata_io::{
    AzureBlobConfig, IngestService, LocalDirBlobs, ObjectStoreBlobs, ObjectStoreKeyStore,
    ServeConfig, ServiceLimits, TlsIdentity, load_certificates,
};
use tracing_subscriber::EnvFilter;

#[path = "support/keys.rs"]
mod keys;

/// The opsdata ingest service: HTTPS, mutual TLS, durable storage.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "The opsdata ingest service: HTTPS, mutual TLS, durable storage."
)]
struct Args {
    /// Directory with `enrollment-ca.pem`, `service.pem`, `service.key`
    /// (from the `certs` example); `blobs/`, `keys/` and `wrapping.key`
    /// are kept there too.
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4443")]
    addr: String,
    /// Largest request body, in bytes (larger: 413).
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Frame requests processed at once (more: 503).
    #[arg(long, default_value_t = 256)]
    max_concurrent_requests: usize,
    /// Seconds a request's head may take (and an idle HTTP/1.1 connection).
    #[arg(long, default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a request's body may take.
    #[arg(long, default_value_t = 60)]
    body_timeout: u64,
    /// Seconds a connection may stay quiet (no request in flight) before
    /// it is shut down.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
    /// Azure storage account (with --azure-container and --azure-key:
    /// store there instead of `<dir>/blobs`).
    #[arg(long, env = "OPSDATA_AZURE_ACCOUNT")]
    azure_account: Option<String>,
    /// Azure container (must exist).
    #[arg(long, env = "OPSDATA_AZURE_CONTAINER")]
    azure_container: Option<String>,
    /// Azure account key.
    #[arg(long, env = "OPSDATA_AZURE_KEY", hide_env_values = true)]
    azure_key: Option<String>,
    /// Azure endpoint (e.g. Azurite's http://127.0.0.1:10000/devstoreaccount1).
    #[arg(long, env = "OPSDATA_AZURE_ENDPOINT")]
    azure_endpoint: Option<String>,
    /// Keep the key rings in the Azure container too (`keyrings/`), shared
    /// with every other node through conditional writes, instead of
    /// `<dir>/keys` (one node only). Needs the `--azure-*` settings.
    #[arg(long, requires = "azure_account")]
    shared_keys: bool,
    /// How many nodes share each tenant's traffic: each applies its share
    /// of a tenant's rate limit.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Seals reserved per key-ring write.
    #[arg(long, default_value_t = 65_536)]
    key_block: u64,
    /// Rotate a tenant's key once this many uses are recorded (default:
    /// the policy's 2^31).
    #[arg(long)]
    rotate_after_uses: Option<u64>,
    /// Seconds a new key waits before it is promoted (default 24 h).
    #[arg(long)]
    propagation_delay: Option<i64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let dir = &args.dir;
    let identity = TlsIdentity::from_pem_files(&dir.join("service.pem"), &dir.join("service.key"))?;
    let enrollment_ca = load_certificates(&dir.join("enrollment-ca.pem"))?;
    let mut entropy = SystemEntropy::new();
    let wrapping = keys::wrapping_key(&dir.join("wrapping.key"), &mut entropy)?;
    let limits = ServiceLimits::default()
        .with_max_body_bytes(args.max_body_bytes)?
        .with_max_connections(args.max_connections)?
        .with_max_concurrent_requests(args.max_concurrent_requests)?
        .with_header_timeout(Duration::from_secs(args.header_timeout))?
        .with_body_timeout(Duration::from_secs(args.body_timeout))?
        .with_idle_timeout(Duration::from_secs(args.idle_timeout))?
        .with_nodes(args.nodes)?
        .with_key_reservation_block(args.key_block)?;
    let mut policy = RotationPolicy::default();
    if let Some(soft) = args.rotate_after_uses {
        let hard = policy.hard_usage_limit();
        policy = policy.with_usage_limits(soft, hard)?;
    }
    if let Some(secs) = args.propagation_delay {
        policy = policy.with_propagation_delay(chrono::Duration::seconds(secs))?;
    }
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let tls = ServeConfig::new(identity, enrollment_ca);
    let shutdown = shutdown_signal();
    match (&args.azure_account, &args.azure_container, &args.azure_key) {
        (Some(account), Some(container), Some(key)) => {
            let mut config = AzureBlobConfig::new(account, container, key);
            if let Some(endpoint) = &args.azure_endpoint {
                let http = endpoint.starts_with("http://");
                config = config.with_endpoint(endpoint).with_allow_http(http);
            }
            tracing::info!(
                ?config,
                shared_keys = args.shared_keys,
                "storing in Azure Blob Storage"
            );
            let builder = IngestService::builder(ObjectStoreBlobs::azure(&config)?)
                .limits(limits)
                .clock(Arc::new(Utc::now))
                .provisioning(policy);
            let builder = if args.shared_keys {
                builder.shared_key_store(ObjectStoreKeyStore::azure(&config)?, wrapping)
            } else {
                builder.key_store(keys::FileKeyStore::open(&dir.join("keys"))?, wrapping)
            };
            let service = builder.build()?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            opsdata_io::serve(listener, service, tls, shutdown).await?;
        }
        _ => {
            let blobs = dir.join("blobs");
            tracing::info!(dir = %blobs.display(), "storing in a local directory (durable)");
            let store = LocalDirBlobs::new(&blobs)?;
            let service = IngestService::builder(store)
                .limits(limits)
                .clock(Arc::new(Utc::now))
                .key_store(keys::FileKeyStore::open(&dir.join("keys"))?, wrapping)
                .provisioning(policy)
                .build()?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            opsdata_io::serve(listener, service, tls, shutdown).await?;
        }
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}
