//! The async agent: the core [`Outbox`](opsdata::Outbox) driven on tokio
//! ([`AsyncAgent`]), sending over HTTPS ([`HttpsTransport`], wire v2 of
//! `docs/WIRE.md`) or any [`AsyncTransport`].
//!
//! - `driver`: one task owns the outbox. The host pushes frames through an
//!   [`AgentHandle`] and receives [`AgentEvent`]s; the driver applies the
//!   outbox's spool operations in order (`spawn_blocking`, one job at a
//!   time) before it asks for the next transmit, runs up to
//!   `max_in_flight` requests per tenant at once, arms its timer from
//!   `poll_timeout`, and records events (through an [`EventJournal`])
//!   before it applies a dropped batch's `Remove`.
//! - `transport`: [`HttpsTransport`], one HTTP/2 connection (ALPN `h2`,
//!   falling back to HTTP/1.1) over rustls with the agent's client
//!   certificate, re-read from an [`IdentitySource`] at each new
//!   connection; reconnects with bounded, jittered exponential backoff.
//!
//! How an HTTP answer becomes each frame's [`Outcome`](opsdata::Outcome):
//!
//! | answer | outcome of each frame of the request |
//! |---|---|
//! | 200 | its acknowledgement's outcome (acks come in frame order, each naming its batch); a frame without an ack, or whose ack names another batch: `Transient` |
//! | 400 | its acknowledgement's outcome if it has one; the frame at the bad bytes (the last acknowledgement, all zero when its header was unreadable) `Rejected`: resending it cannot help; the frames after it were not read: `Transient` |
//! | 413 | `Rejected` (over the service's limits: resending cannot help) |
//! | 429 | `Throttled` for the `Retry-After` (delta-seconds or HTTP-date; absent or unreadable: one second) |
//! | 503, any other status | `Transient` |
//! | connection refused, TLS failure, timeout, reset | `Transient` |

mod driver;
mod identity;
mod transport;

use std::error::Error as StdError;

pub use driver::{
    AgentEvent, AgentHandle, AgentSettings, AgentStatus, AsyncAgent, AsyncTransport, EventJournal,
};
pub use identity::{IdentitySource, PemIdentity};
pub use transport::{HttpsSettings, HttpsTransport, HttpsTransportStats};

/// Errors of the async agent: settings, the agent's identity, its spool
/// and journal, and a driver that has stopped. Transport failures are not
/// errors: they are the outcomes of the frames sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A setting out of range.
    #[error("{setting}: {reason}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The agent's certificate or key could not be read or used.
    #[error("identity: {0}")]
    Tls(#[from] crate::TlsError),
    /// The service's name is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The roots the service's certificate must chain to: none given, or
    /// one that is not a usable CA certificate.
    #[error("trusted roots: {0}")]
    Roots(String),
    /// The spool failed. A failed operation is retried before anything is
    /// sent.
    #[error("spool: {0}")]
    Spool(Box<dyn StdError + Send + Sync>),
    /// The event journal failed; the storage operations waiting on it are
    /// not applied until it succeeds.
    #[error("event journal: {0}")]
    Journal(std::io::Error),
    /// The outbox refused a push (a batch with this id is already held).
    #[error("outbox: {0}")]
    Delivery(#[from] opsdata::DeliveryError),
    /// The driver has stopped (shut down, or ended by an error).
    #[error("the agent driver has stopped")]
    Stopped,
    /// The driver task panicked or was cancelled.
    #[error("the agent driver task failed: {0}")]
    Task(String),
}
