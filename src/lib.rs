//! # opsdata
//!
//! Sans-I/O primitives for a multi-tenant operational-data service in the
//! style of Log Analytics / OMS: the six record schemas (Alert,
//! Configuration, Event, Metadata, Performance, State), tenant tagging, and,
//! as the crate grows, compressed frames, a delivery state machine, per-tenant
//! keys and the service-side ingest.
//!
//! The crate does no I/O of its own: no sockets, files, threads, clocks or
//! randomness. Every time-dependent call takes `now: DateTime<Utc>` from the
//! caller, so it runs the same on a fake clock in a test as on the wall clock
//! in an agent.
//!
//! ## Example
//!
//! Build records, tag them with their workspace, gather one tenant's
//! records of one type into a batch, validate them and write them as JSON
//! Lines, the payload format a frame carries:
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use opsdata::{
//!     DataType, Performance, Record, RecordLimits, Tagged, TenantBatch, TenantId,
//! };
//! use uuid::Uuid;
//!
//! // A fake clock: the caller owns time.
//! let start = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
//! let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
//! let limits = RecordLimits::default();
//!
//! let mut batch = TenantBatch::new(tenant, DataType::Performance);
//! for i in 0..3u32 {
//!     let now = start + Duration::seconds(10 * i64::from(i));
//!     let record = Record::from(Performance {
//!         object_name: "Processor".into(),
//!         counter_name: "% Processor Time".into(),
//!         perfmon_instance_name: "_Total".into(),
//!         performance_data_id: Uuid::from_u128(u128::from(i) + 1),
//!         performance_source_internal_id: 42,
//!         sample_value: 10.0 * f64::from(i),
//!         time_sampled: now,
//!         time_added: now,
//!     });
//!     record.validate(&limits)?;
//!     batch.push(Tagged::new(tenant, record))?;
//! }
//!
//! let mut payload = Vec::new();
//! for record in batch.records() {
//!     record.write_json(&mut payload);
//!     payload.push(b'\n');
//! }
//! let first_line = payload.split(|&b| b == b'\n').next().unwrap();
//! let back = Record::from_json(DataType::Performance, first_line)?;
//! assert_eq!(&back, &batch.records()[0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layout
//!
//! The public surface is flat: everything is re-exported from the crate
//! root. Each subsystem has one error enum ([`RecordError`],
//! [`TenantError`]). `ARCHITECTURE.md` in the repository describes the
//! modules and the direction of their dependencies.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod delivery;
mod frame;
#[doc(hidden)]
pub mod fuzz;
mod keys;
// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
mod record;
mod solution;
mod tenant;

pub use delivery::{
    Agent, AgentError, DeliveryError, DeliveryEvent, DeliveryPolicy, DropReason, MemorySpool,
    MemoryTransport, Outbox, Outcome, Phase, PhaseCounts, PolicyError, RecoveryReport, Spool,
    StorageOp, TenantStatus, Transmit, Transport,
};
pub use frame::{
    BatchId, Batcher, BatcherConfig, BatcherRejection, ClosedBatch, Codec, Decoded,
    FIXED_HEADER_LEN, FRAME_MAGIC, FRAME_VERSION, Frame, FrameDecoder, FrameEncoder, FrameError,
    FrameHeader, FrameLimits, PayloadReader, SCHEMA_VERSION, SEAL_SECTION_LEN, SealSection,
    UNSEALED_OVERHEAD,
};
pub use keys::{
    Applied, DeterministicEntropy, Entropy, EntropyUnavailable, FramePeek, KeyAction, KeyCensus,
    KeyError, KeyId, KeyInfo, KeyMaterial, KeyRing, KeyStatus, KeyStore, MemoryKeyStore,
    RotationPolicy, RotationReason, SUITE_AES_256_GCM, SealPart, ShredReceipt, SystemEntropy,
    WrappingKey, load_ring, open, peek, rewrap, save_ring, seal,
};
// keys: credential re-exports go here.
pub use record::{
    Alert, AlertPriority, AlertSeverity, ChannelLevel, Configuration, CustomFields, DataType,
    Event, HealthState, Metadata, NameProblem, Performance, Record, RecordError, RecordLimits,
    ResolutionState, State,
};
pub use solution::Solution;
pub use tenant::{BatchRejection, Tagged, TenantBatch, TenantError, TenantId};
