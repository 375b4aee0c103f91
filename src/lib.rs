//! # opsdata
//!
//! Sans-I/O primitives for a multi-tenant operational-data service in the
//! style of Log Analytics / OMS: the six record schemas (Alert,
//! Configuration, Event, Metadata, Performance, State), tenant tagging,
//! compressed self-describing frames, the agent's delivery state machine
//! (retry every 8 minutes for 2 hours, then queue; when full, drop by data
//! type starting with Performance), per-tenant keys rotated every 90 days,
//! sealed frames, crypto-shredding, and agents' credential renewal.
//!
//! The crate does no I/O of its own: no sockets, files, threads, clocks or
//! randomness. Every time-dependent call takes `now: DateTime<Utc>` from the
//! caller, and randomness comes through [`Entropy`] or a seed, so it runs
//! the same on a fake clock in a test as on the wall clock in an agent.
//!
//! ## Example
//!
//! An agent batches a tenant's records into a frame and hands it to its
//! [`Outbox`]; the first send fails, the retry goes 8 minutes later; the
//! service seals what it received under the tenant's key and later opens it
//! and reads the records back. All on a fake clock:
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use opsdata::*;
//! use uuid::Uuid;
//!
//! let start = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(); // the fake clock
//! let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
//!
//! // Agent: records -> batch -> frame -> outbox.
//! let mut batch = TenantBatch::new(tenant, DataType::Performance);
//! for i in 0..3u32 {
//!     let record = Record::from(Performance {
//!         object_name: "Processor".into(),
//!         counter_name: "% Processor Time".into(),
//!         perfmon_instance_name: "_Total".into(),
//!         performance_data_id: Uuid::from_u128(u128::from(i) + 1),
//!         performance_source_internal_id: 42,
//!         sample_value: 10.0 * f64::from(i),
//!         time_sampled: start,
//!         time_added: start,
//!     });
//!     record.validate(&RecordLimits::default())?;
//!     batch.push(Tagged::new(tenant, record))?;
//! }
//! let batch_id = BatchId::from_time_and_random(start, [7; 10]); // caller's randomness
//! let frame = FrameEncoder::new().encode_frame(&batch, batch_id, start)?;
//! let mut outbox = Outbox::new(DeliveryPolicy::default(), 42);
//! outbox.push(start, frame)?;
//! while let Some(_op) = outbox.poll_storage() { /* persist to the spool */ }
//!
//! // The service is unreachable: the tenant goes offline, retry in 8 minutes.
//! let tx = outbox.poll_transmit(start).expect("a frame to send");
//! outbox.handle_outcome(start, tx.batch_id, Outcome::Transient)?;
//! assert_eq!(outbox.poll_timeout(), Some(start + Duration::minutes(8)));
//! assert!(outbox.poll_transmit(start + Duration::minutes(7)).is_none());
//! let later = start + Duration::minutes(8);
//! outbox.handle_timeout(later);
//! let tx = outbox.poll_transmit(later).expect("the retry");
//! assert_eq!(tx.attempt, 2);
//!
//! // Service: check the frame, seal it under the tenant's primary key.
//! let received = Frame::decode(tx.frame.as_bytes().clone(), &FrameLimits::default())?;
//! let mut entropy = DeterministicEntropy::from_u64(1); // SystemEntropy in production
//! let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
//! for action in RotationPolicy::default().evaluate(&ring, &KeyCensus::new(), later) {
//!     let _ = ring.apply(&action, &mut entropy, later)?; // generate the first key
//! }
//! for action in RotationPolicy::default().evaluate(&ring, &KeyCensus::new(), later) {
//!     let _ = ring.apply(&action, &mut entropy, later)?; // and promote it
//! }
//! let stored = seal(&received, &mut ring, &mut entropy, later)?;
//! outbox.handle_outcome(later, tx.batch_id, Outcome::Delivered)?;
//! assert_eq!(outbox.held_batches(), 0);
//!
//! // Later: open and read the records back.
//! let records = open(&stored, &ring)?.records(&FrameLimits::default())?;
//! assert_eq!(records, batch.records());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layout
//!
//! The public surface is flat: everything is re-exported from the crate
//! root. Each subsystem has one error enum ([`RecordError`],
//! [`TenantError`], [`FrameError`], [`DeliveryError`] and [`PolicyError`]
//! for delivery, [`KeyError`], [`CredentialError`], [`AuthError`],
//! [`IngestError`], [`RetentionError`], [`ExportError`], [`IncidentError`],
//! [`AccessError`]). `ARCHITECTURE.md` in the repository describes the modules and the direction of their
//! dependencies; `docs/` specifies every format.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod access;
mod auth;
mod delivery;
mod export;
mod frame;
// The fuzz targets' logic: only with the `fuzzing` feature, so users'
// builds never compile it (fuzz/Cargo.toml and tests/fuzz_corpus.rs enable
// it).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod incident;
mod ingest;
mod keys;
// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
mod record;
mod retention;
mod solution;
mod tenant;

pub use access::{
    AccessControl, AccessError, Action, Denied, Region, Role, SessionId, SessionPolicy,
    SessionStore, UserId,
};
pub use auth::{AGENT_OU, AgentIdentity, EnrollmentCa, Principal, subject_ids};
pub use auth::{
    AgentServiceSignature, AuthError, AuthPolicy, DataCollectorSignature, EnrollmentKey, KeySlot,
    PeerReply, Verified, WorkspaceKeys, claimed_workspace, content_hash, sign_agent_service,
    sign_data_collector, verify_agent_service, verify_data_collector,
};
pub use delivery::{
    Agent, AgentError, DeliveryError, DeliveryEvent, DeliveryPolicy, DropReason, MemorySpool,
    MemoryTransport, Outbox, Outcome, Phase, PhaseCounts, PolicyError, RecoveryReport, Spool,
    StorageOp, TenantStatus, Transmit, Transport,
};
pub use export::{
    CUSTOM_FIELDS_COLUMN, CsvExport, ExportContinuation, ExportError, ExportSummary,
    PAGE_TOKEN_LEN, Page, Pager, PagingKey, SavedPagingKeys, csv_header,
};
pub use frame::{
    BatchId, Batcher, BatcherConfig, BatcherRejection, ClosedBatch, Codec, Damage, Decoded,
    FIXED_HEADER_LEN, FRAME_MAGIC, FRAME_VERSION, Frame, FrameDecoder, FrameEncoder, FrameError,
    FrameHeader, FrameLimits, FrameScan, PayloadReader, Resynced, SCHEMA_VERSION, SEAL_SECTION_LEN,
    SealSection, UNSEALED_OVERHEAD, scan_frames,
};
pub use incident::{
    Incident, IncidentError, IncidentId, IncidentStage, LedgerPolicy, Loss, LossLedger, LossReason,
    LossWindow, MAX_NOTICE_DEADLINE, MAX_POST_MORTEM_BYTES, Notice, TypeLoss,
};
pub use ingest::{
    BlobStore, FrameAnswer, Ingest, IngestConfig, IngestError, IngestReport, MemoryBlobStore,
    ObjectKey, RateLimit, StoreOp, TenantStats, WrongTenant, apply_store_op, read_back,
};
pub use keys::{
    AgentCredentials, AgentKey, CertificateInfo, Credential, CredentialError, CredentialPhase,
    CredentialPolicy, RenewalWindow, RetiredCredential,
};
pub use keys::{
    Applied, CasError, DeterministicEntropy, Entropy, EntropyUnavailable, FramePeek, KeyAction,
    KeyCensus, KeyError, KeyId, KeyInfo, KeyMaterial, KeyRing, KeyStatus, KeyStore, MemoryKeyStore,
    Reservation, RingVersion, RotationPolicy, RotationReason, SUITE_AES_256_GCM, SealPart,
    ShredReceipt, SystemEntropy, VersionedRing, WrappingKey, load_ring, open, peek, rewrap,
    save_ring, seal,
};
pub use record::{
    Alert, AlertPriority, AlertRef, AlertSeverity, ChannelLevel, Configuration, ConfigurationRef,
    CustomFields, DataType, Event, EventRef, HealthState, Metadata, MetadataRef, NameProblem,
    Performance, PerformanceRef, Record, RecordError, RecordLimits, RecordRef, ResolutionState,
    State, StateRef,
};
pub use retention::{
    DeleteReason, ObjectKind, Plan, RetentionAction, RetentionError, RetentionPlan,
    RetentionPlanner, RetentionPolicy, RetentionStats, StoredObject, Workspace, WorkspaceState,
    shred_keys,
};
pub use solution::Solution;
pub use tenant::{BatchRejection, Tagged, TenantBatch, TenantError, TenantId};
