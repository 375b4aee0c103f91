//! Real backends for [`opsdata`]: the I/O its sans-I/O core leaves to the
//! host, written once.
//!
//! - [`FileSpool`]: a crash-safe [`opsdata::Spool`] on disk (segment log of
//!   frames and removal markers, `docs/SPOOL.md`).
//! - [`TlsTransport`]: an [`opsdata::Transport`] over mutual TLS (rustls),
//!   speaking the wire protocol of `docs/WIRE.md`.
//! - [`ObjectStoreBlobs`]: an [`opsdata::BlobStore`] over `object_store`
//!   (Azure Blob, S3, GCS, local filesystem), each tenant under its own
//!   prefix.
#![forbid(unsafe_code)]

mod blobs;
mod spool;
mod tls;
mod wire;

#[cfg(feature = "azure")]
pub use blobs::AzureBlobConfig;
pub use blobs::{BlobError, BlobOp, ObjectStoreBlobs};
pub use spool::{
    CHECKPOINT_LEN, CHECKPOINT_MAGIC, Corruption, FileSpool, MARKER_LEN, MARKER_MAGIC, MOVE_LEN,
    MOVE_MAGIC, MovedAside, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SpoolConfig, SpoolConfigError,
    SpoolError, SpoolRecovery,
};
pub use tls::{
    Clock, ServiceConfig, ServiceEvent, ServiceHandle, ServiceSettings, ServiceState, ServiceStats,
    Timeouts, TlsError, TlsIdentity, TlsService, TlsTransport, TransportSettings, TransportStats,
    load_certificates,
};
pub use wire::{ACK_LEN, ACK_MAGIC, Ack, WireError};
