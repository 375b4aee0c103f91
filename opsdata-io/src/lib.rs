//! Real backends for [`opsdata`]: the I/O its sans-I/O core leaves to the
//! host, written once.
//!
//! - [`FileSpool`]: a crash-safe [`opsdata::Spool`] on disk (segment log of
//!   frames and removal markers, `docs/SPOOL.md`), optionally sealed at rest
//!   under a key in a [`SpoolKeyStore`] ([`FileSpool::open_protected`]).
//! - [`AsyncAgent`]: the agent on tokio, the core's `Outbox` driven by one
//!   task (spool operations in order before each transmit, up to
//!   `max_in_flight` requests per tenant at once, timers from
//!   `poll_timeout`), sending through [`HttpsTransport`] (HTTPS wire v2:
//!   `POST /v1/frames` over mutual TLS, one HTTP/2 connection) or any
//!   [`AsyncTransport`].
//! - [`IngestService`]: the ingest service over HTTPS (`docs/WIRE.md`,
//!   `docs/SERVICE.md`) as an `axum::Router`, and [`serve`] to run it over
//!   rustls with mutual TLS.
//! - [`AsyncBlobStore`]: where the service stores sealed frames:
//!   [`ObjectStoreBlobs`] (`object_store`: Azure Blob, S3, GCS, local
//!   files), [`LocalDirBlobs`] (a durable local directory), each tenant
//!   under its own prefix.
//! - [`TlsIdentity`], [`load_certificates`]: certificates and keys for
//!   either side.
//!
//! The wire acknowledgement ([`Ack`]) and the formats are specified in
//! `opsdata-io/docs/` (`WIRE.md`, `SPOOL.md`, `BLOBS.md`).
//!
//! An agent whose backlog survives a restart, on a fake clock (the
//! transport here is the core's in-memory one):
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use opsdata::*;
//! use opsdata_io::{FileSpool, SpoolConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("opsdata-io-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
//! let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
//! let config = SpoolConfig::new(256 << 20)?;
//! let policy = DeliveryPolicy::default().with_limit_bytes(config.outbox_limit_bytes())?;
//! let frame = FrameEncoder::new().encode_frame(
//!     &TenantBatch::new(tenant, DataType::Alert),
//!     BatchId::from_random_bytes([7; 16]),
//!     now,
//! )?;
//!
//! // The service is down: the frame is persisted (fsync) and kept.
//! let (spool, _) = FileSpool::open(&dir, config)?;
//! let mut down = MemoryTransport::new();
//! down.set_reachable(tenant, false);
//! let mut agent = Agent::new(Outbox::new(policy.clone(), 1), down, spool);
//! agent.push(now, frame)?;
//! assert_eq!(agent.outbox().held_batches(), 1);
//! drop(agent); // the process ends
//!
//! // The next start recovers the backlog from disk and sends it.
//! let (spool, found) = FileSpool::open(&dir, config)?;
//! assert_eq!(found.frames, 1);
//! let later = now + chrono::Duration::minutes(1);
//! let (agent, _) = Agent::recover(policy, 2, later, MemoryTransport::new(), spool, &FrameLimits::default())?;
//! assert_eq!(agent.transport().delivered().len(), 1);
//! assert!(agent.spool().is_empty());
//! # drop(agent);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod agent;
mod blobs;
mod clock;
// The fuzz targets' logic: only with the `fuzzing` feature, so users'
// builds never compile it (fuzz/Cargo.toml and tests/fuzz_corpus.rs enable
// it).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod identity;
mod lease;
mod ringstore;
mod service;
mod spool;
mod wire;

pub use agent::{
    AgentEvent, AgentHandle, AgentSettings, AgentStatus, AsyncAgent, AsyncTransport, DriverError,
    EventJournal, HttpsSettings, HttpsTransport, HttpsTransportStats, IdentitySource, PemIdentity,
};
#[cfg(feature = "azure")]
pub use blobs::AzureBlobConfig;
pub use blobs::{
    AsyncBlobStore, BlobError, BlobOp, LocalDirBlobs, MemoryBlobs, ObjectStoreBlobs, PutOutcome,
};
pub use clock::{Clock, system_clock};
pub use identity::{Timeouts, TlsError, TlsIdentity, load_certificates};
pub use lease::{Lease, LeaseError, LeaseRecord, LeaseState};
pub use ringstore::{AsyncKeyStore, ObjectStoreKeyStore, RingStoreError};
pub use service::{
    ClientAuth, IngestService, PeerCertificates, PlannerError, ReadError, RetentionRun,
    ServeConfig, ServeError, ServiceBuilder, ServiceLimits, serve, serve_app,
};
pub use spool::{
    CHECKPOINT_LEN, CHECKPOINT_MAGIC, Corruption, DamagedFrame, DamagedRange, FileSpool,
    KeyFileStore, KeyReport, MARKER_LEN, MARKER_MAGIC, MOVE_LEN, MOVE_MAGIC, MovedAside,
    OS_KEY_SERVICE, OsKeyStore, OsStore, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SPOOL_KEY_LEN,
    SPOOLKEY_MAGIC, SpoolConfig, SpoolConfigError, SpoolError, SpoolKeyBytes, SpoolKeyError,
    SpoolKeyStore, SpoolProtection, SpoolRecovery,
};
pub use wire::{
    ACK_LEN, ACK_MAGIC, ACKS_CONTENT_TYPE, Ack, FRAMES_CONTENT_TYPE, FRAMES_PATH, WireError,
};
