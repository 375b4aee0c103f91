//! Delivery: the [`Outbox`] retry / cache / queue / drop-priority state
//! machine and its settings, events and storage operations.
//!
//! The outbox holds frames until the service accepts them. Each tenant is a
//! destination with its own state: while it is reachable its backlog drains
//! oldest first; when a send fails it goes offline, and one probe batch is
//! retried every `retry_interval` (8 minutes) for `cache_window` (2 hours),
//! then with exponential backoff (queued). When holding a new frame would
//! pass a limit, batches are dropped by data type in `drop_order`, starting
//! with Performance, oldest first. Nothing disappears without an event.

mod agent;
mod outbox;
mod policy;

use chrono::{DateTime, Utc};

use crate::frame::{BatchId, Frame};
use crate::record::DataType;
use crate::tenant::TenantId;

pub use agent::{Agent, AgentError, MemorySpool, MemoryTransport, Spool, Transport};
pub use outbox::{Outbox, RecoveryReport};
pub use policy::{DeliveryPolicy, PolicyError};

/// A frame to send now, handed out by [`Outbox::poll_transmit`]. Report how
/// it went with [`Outbox::handle_outcome`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Transmit {
    /// The tenant (the frame header's tenant).
    pub tenant: TenantId,
    /// The batch id, to name the outcome.
    pub batch_id: BatchId,
    /// Which attempt this is for the batch, from 1.
    pub attempt: u32,
    /// The frame, cheap to clone.
    pub frame: Frame,
}

/// How a send went, as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The service took the batch: it is removed.
    Delivered,
    /// The service could not be reached or failed; retry on the schedule.
    Transient,
    /// The service asked to wait before sending this tenant's data again.
    /// Clamped to [`DeliveryPolicy::max_retry_after`].
    Throttled {
        /// How long the service asked to wait.
        retry_after: chrono::Duration,
    },
    /// The service refused the batch for good (bad data): it is dropped and
    /// never retried.
    Rejected,
}

/// Why a batch was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Holding it (or a newer frame) would pass a limit; it came first in
    /// the drop order.
    QueueFull,
    /// The service refused it.
    Rejected,
    /// It was older than its data type's `expire_after`.
    Expired,
    /// Its stored frame was damaged (it failed a check when the spool was
    /// read back after a restart) and only its header could still be read:
    /// its records are lost. See [`Outbox::recover`].
    Corrupt,
}

/// What happened, for logs, metrics and the data-loss ledger. Poll with
/// [`Outbox::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum DeliveryEvent {
    /// The service took the batch.
    Delivered {
        /// Its tenant.
        tenant: TenantId,
        /// Its data type.
        data_type: DataType,
        /// Its id.
        batch_id: BatchId,
        /// Records in it.
        records: u32,
        /// Its frame's length.
        bytes: u64,
    },
    /// A tenant's next attempt is scheduled.
    RetryScheduled {
        /// The tenant.
        tenant: TenantId,
        /// When it may send again.
        at: DateTime<Utc>,
        /// How many attempts have failed since it went offline.
        attempt: u32,
    },
    /// A tenant has been unreachable for longer than the cache window: its
    /// batches are queued and retried with backoff.
    Queued {
        /// The tenant.
        tenant: TenantId,
        /// Batches it holds.
        batches: usize,
    },
    /// A tenant became unreachable.
    TenantOffline {
        /// The tenant.
        tenant: TenantId,
        /// When.
        since: DateTime<Utc>,
    },
    /// A tenant is reachable again.
    TenantOnline {
        /// The tenant.
        tenant: TenantId,
    },
    /// A batch was dropped: its data is lost.
    Dropped {
        /// Its tenant.
        tenant: TenantId,
        /// Its data type.
        data_type: DataType,
        /// Its id.
        batch_id: BatchId,
        /// Records in it.
        records: u32,
        /// Its frame's length.
        bytes: u64,
        /// Why.
        reason: DropReason,
    },
}

/// What the host must do to its spool. Poll with [`Outbox::poll_storage`]
/// and apply each before acting on the next transmit.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub enum StorageOp {
    /// Store the frame durably.
    Persist {
        /// Its id.
        batch_id: BatchId,
        /// The frame.
        frame: Frame,
    },
    /// Remove the stored frame.
    Remove {
        /// Its id.
        batch_id: BatchId,
    },
}

/// A tenant's connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TenantStatus {
    /// Sends go out as capacity allows.
    Online,
    /// Unreachable since the time given: one probe at a time, on schedule.
    Offline {
        /// When the first failure was seen.
        since: DateTime<Utc>,
    },
}

/// Where a held batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting to be sent; its tenant is online.
    Pending,
    /// Sent; its outcome is awaited.
    InFlight,
    /// Its tenant is offline, within the cache window.
    Cached,
    /// Its tenant has been offline for longer than the cache window.
    Queued,
}

/// Batches held in each [`Phase`], from [`Outbox::held_by_phase`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhaseCounts {
    /// Waiting to be sent; their tenant is online.
    pub pending: usize,
    /// Sent; outcome awaited.
    pub in_flight: usize,
    /// Their tenant is offline, within the cache window.
    pub cached: usize,
    /// Their tenant has been offline for longer than the cache window.
    pub queued: usize,
}

/// Misuse of the outbox: a typed error that changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A frame with this batch id is already held.
    #[error("batch {batch_id} is already held")]
    DuplicateBatch {
        /// The id.
        batch_id: BatchId,
        /// The frame offered, handed back.
        frame: Box<Frame>,
    },
    /// An outcome for a batch that is not held.
    #[error("outcome for unknown batch {batch_id}")]
    UnknownBatch {
        /// The id.
        batch_id: BatchId,
    },
    /// An outcome for a batch that is held but not in flight.
    #[error("outcome for batch {batch_id}, which is not in flight")]
    NotInFlight {
        /// The id.
        batch_id: BatchId,
    },
}
