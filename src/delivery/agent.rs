use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    DeliveryError, DeliveryEvent, DeliveryPolicy, Outbox, Outcome, RecoveryReport, StorageOp,
    Transmit,
};
use crate::frame::{BatchId, Frame, FrameLimits};
use crate::tenant::TenantId;

/// Sends one frame to the service and says how it went. Implemented by the
/// host over its own I/O (HTTP, TLS, a test double); errors of the link are
/// [`Outcome::Transient`], a refusal for bad data [`Outcome::Rejected`].
pub trait Transport {
    /// Sends `transmit` and reports the outcome.
    fn send(&mut self, now: DateTime<Utc>, transmit: &Transmit) -> Outcome;
}

/// Durable storage for frames not yet delivered, implemented by the host.
pub trait Spool {
    /// The spool's error.
    type Error: std::error::Error;

    /// Stores a frame durably; returns only once it is.
    ///
    /// # Errors
    ///
    /// The spool's error; the frame is then not known to be stored.
    fn persist(&mut self, batch_id: BatchId, frame: &Frame) -> Result<(), Self::Error>;

    /// Removes a stored frame (a frame not stored is not an error).
    ///
    /// # Errors
    ///
    /// The spool's error.
    fn remove(&mut self, batch_id: BatchId) -> Result<(), Self::Error>;

    /// Hands every stored frame to `sink`, in the order they were persisted.
    ///
    /// # Errors
    ///
    /// The spool's error.
    fn load(&mut self, sink: &mut dyn FnMut(Bytes)) -> Result<(), Self::Error>;
}

/// A spool in memory, for tests and examples.
#[derive(Debug, Default, Clone)]
pub struct MemorySpool {
    seq: u64,
    order: BTreeMap<u64, BatchId>,
    frames: BTreeMap<BatchId, (u64, Bytes)>,
}

impl MemorySpool {
    /// An empty spool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Stores raw bytes as if persisted (to test recovery from damage).
    pub fn insert_raw(&mut self, batch_id: BatchId, bytes: Bytes) {
        self.seq += 1;
        if let Some((old, _)) = self.frames.insert(batch_id, (self.seq, bytes)) {
            self.order.remove(&old);
        }
        self.order.insert(self.seq, batch_id);
    }
}

impl Spool for MemorySpool {
    type Error = Infallible;

    fn persist(&mut self, batch_id: BatchId, frame: &Frame) -> Result<(), Infallible> {
        self.insert_raw(batch_id, frame.as_bytes().clone());
        Ok(())
    }

    fn remove(&mut self, batch_id: BatchId) -> Result<(), Infallible> {
        if let Some((seq, _)) = self.frames.remove(&batch_id) {
            self.order.remove(&seq);
        }
        Ok(())
    }

    fn load(&mut self, sink: &mut dyn FnMut(Bytes)) -> Result<(), Infallible> {
        for id in self.order.values() {
            sink(self.frames[id].1.clone());
        }
        Ok(())
    }
}

/// A service in memory, for tests and examples: it takes every frame of a
/// reachable tenant, de-duplicating by batch id as the real service does,
/// and fails transiently for a tenant marked unreachable.
#[derive(Debug, Default, Clone)]
pub struct MemoryTransport {
    unreachable: BTreeSet<TenantId>,
    seen: BTreeSet<BatchId>,
    delivered: Vec<Frame>,
    attempts: u64,
}

impl MemoryTransport {
    /// A service that takes everything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a tenant reachable or not.
    pub fn set_reachable(&mut self, tenant: TenantId, reachable: bool) {
        if reachable {
            self.unreachable.remove(&tenant);
        } else {
            self.unreachable.insert(tenant);
        }
    }

    /// The frames the service took, once each, in order.
    #[must_use]
    pub fn delivered(&self) -> &[Frame] {
        &self.delivered
    }

    /// Sends attempted, failed ones included.
    #[must_use]
    pub fn attempts(&self) -> u64 {
        self.attempts
    }
}

impl Transport for MemoryTransport {
    fn send(&mut self, _now: DateTime<Utc>, transmit: &Transmit) -> Outcome {
        self.attempts += 1;
        if self.unreachable.contains(&transmit.tenant) {
            return Outcome::Transient;
        }
        if self.seen.insert(transmit.batch_id) {
            self.delivered.push(transmit.frame.clone());
        }
        Outcome::Delivered
    }
}

/// Errors of the [`Agent`] driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError<E: std::error::Error + 'static> {
    /// The spool failed; the operation is retried on the next call.
    #[error("spool: {0}")]
    Spool(#[source] E),
    /// The outbox refused an input.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// A small synchronous driver: an [`Outbox`] wired to a [`Transport`] and a
/// [`Spool`], for callers who do not want to drive the state machine
/// themselves. Each call applies the outbox's storage operations to the
/// spool before any send, sends what is due (the transport answers at once),
/// and leaves events to [`poll_event`](Agent::poll_event). Call
/// [`tick`](Agent::tick) at [`next_wakeup`](Agent::next_wakeup).
///
/// **Bounded work**: one call sends each held batch at most once, so it
/// makes at most as many sends as there are batches held. A batch that
/// fails and is due again at once (after a `Throttled` with no wait, or at
/// `DateTime::MAX_UTC`, where retry times saturate) is sent again on the
/// next call, not in a loop within this one.
///
/// **Drop reports are not crash-safe**: the driver applies a dropped
/// batch's [`StorageOp::Remove`] to the spool within the call that drops
/// it, before the host can see its [`DeliveryEvent::Dropped`] through
/// [`poll_event`](Agent::poll_event); a crash between the two loses the
/// report (the frame is gone from the spool, so no restart reports it
/// again). A host that must report every drop across crashes drives the
/// [`Outbox`] itself and records each `Dropped` event durably before
/// applying the `Remove`s (as `opsdata-io/tests/crash.rs` does).
#[derive(Debug)]
pub struct Agent<T, S: Spool> {
    outbox: Outbox,
    transport: T,
    spool: S,
    /// A storage operation that failed, to retry before anything else.
    pending: Option<StorageOp>,
}

impl<T: Transport, S: Spool> Agent<T, S>
where
    S::Error: 'static,
{
    /// An agent around an outbox.
    #[must_use]
    pub fn new(outbox: Outbox, transport: T, spool: S) -> Self {
        Agent {
            outbox,
            transport,
            spool,
            pending: None,
        }
    }

    /// An agent whose outbox is rebuilt from what `spool` holds, and which
    /// then sends what is due at `now` (the recovered backlog has no timer
    /// of its own to start it). Frames that fail their checks are skipped
    /// and listed in the report.
    ///
    /// # Errors
    ///
    /// [`AgentError::Spool`] if the spool cannot be read or updated.
    pub fn recover(
        policy: DeliveryPolicy,
        seed: u64,
        now: DateTime<Utc>,
        transport: T,
        mut spool: S,
        limits: &FrameLimits,
    ) -> Result<(Self, RecoveryReport), AgentError<S::Error>> {
        let mut frames = Vec::new();
        spool
            .load(&mut |bytes| frames.push(bytes))
            .map_err(AgentError::Spool)?;
        let (outbox, report) = Outbox::recover(policy, seed, now, frames, limits);
        let mut agent = Agent::new(outbox, transport, spool);
        agent.drive(now)?;
        Ok((agent, report))
    }

    /// Takes a frame, stores it and sends what is due.
    ///
    /// # Errors
    ///
    /// [`AgentError::Delivery`] for a batch id already held (nothing
    /// changes); [`AgentError::Spool`] if the spool fails (the operation is
    /// kept and retried on the next call; nothing is sent before it succeeds).
    pub fn push(&mut self, now: DateTime<Utc>, frame: Frame) -> Result<(), AgentError<S::Error>> {
        self.outbox.push(now, frame)?;
        self.drive(now)
    }

    /// Handles timers and sends what is due at `now`.
    ///
    /// # Errors
    ///
    /// [`AgentError::Spool`] as in [`Agent::push`].
    pub fn tick(&mut self, now: DateTime<Utc>) -> Result<(), AgentError<S::Error>> {
        self.outbox.handle_timeout(now);
        self.drive(now)
    }

    fn apply_storage(&mut self) -> Result<(), AgentError<S::Error>> {
        while let Some(op) = self.pending.take().or_else(|| self.outbox.poll_storage()) {
            let result = match &op {
                StorageOp::Persist { batch_id, frame } => self.spool.persist(*batch_id, frame),
                StorageOp::Remove { batch_id } => self.spool.remove(*batch_id),
            };
            if let Err(e) = result {
                self.pending = Some(op);
                return Err(AgentError::Spool(e));
            }
        }
        Ok(())
    }

    /// Applies storage operations and sends what is due, each batch at most
    /// once: a batch that fails and is due again at once (a `Throttled`
    /// with no wait, or any failure at `DateTime::MAX_UTC`, where retry
    /// times saturate) waits for the next call. So a call makes at most as
    /// many sends as there are batches held.
    fn drive(&mut self, now: DateTime<Utc>) -> Result<(), AgentError<S::Error>> {
        let mut sent = BTreeSet::new();
        loop {
            self.apply_storage()?;
            let Some(tx) = self.outbox.next_transmit(now, |id| sent.contains(&id)) else {
                break;
            };
            sent.insert(tx.batch_id);
            let outcome = self.transport.send(now, &tx);
            self.outbox.handle_outcome(now, tx.batch_id, outcome)?;
        }
        self.apply_storage()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DeliveryEvent> {
        self.outbox.poll_event()
    }

    /// When to call [`tick`](Agent::tick) next; `None`: nothing scheduled.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.outbox.poll_timeout()
    }

    /// The outbox, to read its state.
    #[must_use]
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The transport.
    #[must_use]
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport, mutably (to change a test double's behaviour).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The spool.
    #[must_use]
    pub fn spool(&self) -> &S {
        &self.spool
    }

    /// Takes the parts apart.
    #[must_use]
    pub fn into_parts(self) -> (Outbox, T, S) {
        (self.outbox, self.transport, self.spool)
    }
}
