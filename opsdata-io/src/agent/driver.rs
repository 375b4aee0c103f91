//! The driver task: one tokio task owns the core `Outbox` and runs its
//! drain contract (`ASYNC-DRIVER.md` §10 of the design notes).
//!
//! One round: read the clock once; take the inputs waiting (commands,
//! finished requests), at most `max_round` of them; handle an overdue
//! timeout; record the outbox's events (journal, then the host's channel)
//! and apply its storage operations, in order, in one `spawn_blocking`
//! job that the round awaits; only then ask for transmits, each spawned
//! into a `JoinSet` (the outbox keeps each tenant under `max_in_flight`);
//! then park on the command channel, the `JoinSet` and a `Sleep` to the
//! outbox's next timeout. Expiry is decided by comparing the clock with
//! `poll_timeout`, never by the `Sleep` alone.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opsdata::{
    BatchId, DeliveryEvent, DeliveryPolicy, Frame, FrameLimits, Outbox, Outcome, PhaseCounts,
    RecoveryReport, Spool, StorageOp, Transmit,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::DriverError;
use crate::clock::{Clock, system_clock};

/// Sends one frame and says how it went; what the driver runs, up to
/// `max_in_flight` at once per tenant. [`HttpsTransport`](super::HttpsTransport)
/// is the real one; tests use in-process fakes.
///
/// Link failures are [`Outcome::Transient`], a refusal for bad data
/// [`Outcome::Rejected`]: a send never fails otherwise.
pub trait AsyncTransport: Send + Sync + 'static {
    /// Sends `transmit` and reports the outcome.
    fn send(&self, transmit: &Transmit) -> impl Future<Output = Outcome> + Send;
}

/// Records the outbox's events durably before the driver applies the
/// storage operations of the same round: a dropped batch leaves the spool
/// only once its drop is on record, so a crash in between cannot lose the
/// report (the frame is still in the spool, its drop on record; the host
/// removes it at restart before recovery, or reports it again).
///
/// Called from a blocking thread (`spawn_blocking`), one call at a time.
pub trait EventJournal: Send + 'static {
    /// Records `events` (in order); returns once they are durable.
    ///
    /// # Errors
    ///
    /// An I/O error; the driver keeps the events and the storage operations
    /// waiting behind them, reports [`AgentEvent::JournalFailed`] and tries
    /// again later, sending nothing new meanwhile.
    fn record(&mut self, events: &[DeliveryEvent]) -> std::io::Result<()>;
}

/// The driver's settings: the outbox's policy and jitter seed, the frame
/// limits recovery checks, the clock, and the bounds of one round.
#[derive(Clone)]
pub struct AgentSettings {
    policy: DeliveryPolicy,
    seed: u64,
    limits: FrameLimits,
    clock: Clock,
    max_round: usize,
    max_park: Duration,
    storage_retry: Duration,
    commands: usize,
}

impl fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentSettings")
            .field("policy", &self.policy)
            .field("limits", &self.limits)
            .field("max_round", &self.max_round)
            .field("max_park", &self.max_park)
            .field("storage_retry", &self.storage_retry)
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl AgentSettings {
    /// The outbox's policy and its jitter seed (the caller's randomness),
    /// with the default frame limits, the system clock, 64 inputs and 64
    /// transmits a round, a park of at most 60 s between clock readings,
    /// a failed spool or journal write retried after 1 s, and room for 256
    /// commands in the channel.
    #[must_use]
    pub fn new(policy: DeliveryPolicy, seed: u64) -> Self {
        AgentSettings {
            policy,
            seed,
            limits: FrameLimits::default(),
            clock: system_clock(),
            max_round: 64,
            max_park: Duration::from_secs(60),
            storage_retry: Duration::from_secs(1),
            commands: 256,
        }
    }

    /// The limits the frames read back from the spool are checked against.
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Where the driver reads the time (once per round). Tests move it;
    /// call [`AgentHandle::wake`] after moving it so the driver reads it.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Inputs taken, and transmits started, per round (each at most this
    /// many) before the driver yields.
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero.
    pub fn with_max_round(mut self, n: usize) -> Result<Self, DriverError> {
        if n == 0 {
            return Err(DriverError::Setting {
                setting: "max_round",
                reason: "must be positive",
            });
        }
        self.max_round = n;
        Ok(self)
    }

    /// The longest the driver parks without reading the clock again (a
    /// wall clock can jump).
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero.
    pub fn with_max_park(mut self, d: Duration) -> Result<Self, DriverError> {
        if d.is_zero() {
            return Err(DriverError::Setting {
                setting: "max_park",
                reason: "must be positive",
            });
        }
        self.max_park = d;
        Ok(self)
    }

    /// How long after a failed spool or journal write the driver tries it
    /// again.
    ///
    /// # Errors
    ///
    /// [`DriverError::Setting`] for zero.
    pub fn with_storage_retry(mut self, d: Duration) -> Result<Self, DriverError> {
        if d.is_zero() {
            return Err(DriverError::Setting {
                setting: "storage_retry",
                reason: "must be positive",
            });
        }
        self.storage_retry = d;
        Ok(self)
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &DeliveryPolicy {
        &self.policy
    }
}

/// What the driver tells the host, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub enum AgentEvent {
    /// An event of the outbox: a batch delivered or dropped (its data lost:
    /// the reason says why), a tenant offline, online or queued, a retry
    /// scheduled. Given after the journal recorded it and before the
    /// storage operations of its round are applied.
    Delivery(DeliveryEvent),
    /// A spool operation failed; it is retried (nothing is sent meanwhile).
    SpoolFailed {
        /// The spool's error.
        error: String,
    },
    /// The event journal failed; it is retried (nothing is sent, and no
    /// storage operation applied, meanwhile).
    JournalFailed {
        /// The journal's error.
        error: String,
    },
}

/// A snapshot of the agent, from [`AgentHandle::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentStatus {
    /// Batches held (in flight included).
    pub held_batches: usize,
    /// Bytes of frames held.
    pub held_bytes: u64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Held batches by phase.
    pub phases: PhaseCounts,
    /// When the outbox next has timed work (`None`: nothing scheduled).
    pub next_timeout: Option<DateTime<Utc>>,
    /// Whether the agent is shutting down (it takes no more frames).
    pub stopping: bool,
}

enum Command {
    Push {
        frame: Frame,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Status {
        reply: oneshot::Sender<AgentStatus>,
    },
    Wake,
    Shutdown,
}

/// A cheap, cloneable handle to a running [`AsyncAgent`]: pushes frames,
/// asks for its status, wakes it after a test moved its clock.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    commands: mpsc::Sender<Command>,
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Push { frame, .. } => write!(f, "Push({})", frame.batch_id()),
            Command::Status { .. } => f.write_str("Status"),
            Command::Wake => f.write_str("Wake"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl AgentHandle {
    /// Hands a frame to the agent. Returns once the frame is in the spool
    /// (durable) or was dropped at once (its `Dropped` event given): a
    /// frame whose push returned `Ok` survives a crash. Waits while the
    /// command channel is full, and while the spool is failing.
    ///
    /// # Errors
    ///
    /// [`DriverError::Delivery`] if a batch with this id is already held
    /// (nothing changes); [`DriverError::Stopped`] if the agent is shutting
    /// down or has stopped (the frame was not taken).
    pub async fn push(&self, frame: Frame) -> Result<(), DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Push { frame, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)?
    }

    /// What the agent holds now.
    ///
    /// # Errors
    ///
    /// [`DriverError::Stopped`] if the driver has stopped.
    pub async fn status(&self) -> Result<AgentStatus, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Status { reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)
    }

    /// Makes the driver run a round now (read the clock, handle what is
    /// due): for a host or test that moved the agent's clock. A no-op if
    /// the command channel is full (the driver is busy anyway) or closed.
    pub fn wake(&self) {
        let _ = self.commands.try_send(Command::Wake);
    }
}

/// The async agent: a driver task running the core `Outbox` over an
/// [`AsyncTransport`] and a [`Spool`] (a `FileSpool` in production).
///
/// Every frame pushed ends in exactly one `Delivered` or `Dropped` event,
/// or is still in the spool for the next start to recover. Stop it with
/// [`shutdown`](AsyncAgent::shutdown): it takes no more frames, starts no
/// more requests, waits for those in flight and applies what they decided,
/// and hands the spool back. Dropping the agent and every [`AgentHandle`]
/// stops the driver the same way (the spool is then dropped with it).
///
/// ```
/// use opsdata::*;
/// use opsdata_io::{AgentEvent, AgentSettings, AsyncAgent, AsyncTransport};
/// # use chrono::{TimeZone, Utc};
///
/// /// A service that takes everything (tests use fakes like this one;
/// /// `HttpsTransport` is the real one).
/// struct Accepting;
/// impl AsyncTransport for Accepting {
///     async fn send(&self, _: &Transmit) -> Outcome {
///         Outcome::Delivered
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let settings = AgentSettings::new(DeliveryPolicy::default(), 42);
/// let (mut agent, _recovered) =
///     AsyncAgent::start(settings, Accepting, MemorySpool::new()).await?;
/// let frame = FrameEncoder::new().encode_frame(
///     &TenantBatch::new(tenant, DataType::Alert),
///     BatchId::from_random_bytes([1; 16]),
///     now,
/// )?;
/// agent.push(frame).await?; // returns once the frame is in the spool
/// let Some(AgentEvent::Delivery(DeliveryEvent::Delivered { .. })) = agent.next_event().await
/// else {
///     panic!("delivered");
/// };
/// let spool = agent.shutdown().await?;
/// assert!(spool.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncAgent<S> {
    handle: AgentHandle,
    events: mpsc::UnboundedReceiver<AgentEvent>,
    /// `None` once `shutdown` has taken its result.
    task: Option<tokio::task::JoinHandle<Result<S, DriverError>>>,
}

impl<S> AsyncAgent<S>
where
    S: Spool + Send + 'static,
    S::Error: Send + Sync + 'static,
{
    /// Recovers the outbox from `spool` (read in a blocking task) and
    /// starts the driver on the current tokio runtime. The recovered
    /// backlog is sent first. No events are journaled (see
    /// [`start_with_journal`](AsyncAgent::start_with_journal)).
    ///
    /// # Errors
    ///
    /// [`DriverError::Spool`] if the spool cannot be read.
    pub async fn start<T: AsyncTransport>(
        settings: AgentSettings,
        transport: T,
        spool: S,
    ) -> Result<(Self, RecoveryReport), DriverError> {
        Self::start_inner(settings, transport, spool, None).await
    }

    /// As [`start`](AsyncAgent::start), recording every event in `journal`
    /// before the storage operations of its round are applied (so a
    /// dropped batch's report survives a crash; recovery's own drops
    /// included).
    ///
    /// # Errors
    ///
    /// [`DriverError::Spool`] if the spool cannot be read.
    pub async fn start_with_journal<T: AsyncTransport>(
        settings: AgentSettings,
        transport: T,
        spool: S,
        journal: impl EventJournal,
    ) -> Result<(Self, RecoveryReport), DriverError> {
        Self::start_inner(settings, transport, spool, Some(Box::new(journal))).await
    }

    async fn start_inner<T: AsyncTransport>(
        settings: AgentSettings,
        transport: T,
        spool: S,
        journal: Option<Box<dyn EventJournal>>,
    ) -> Result<(Self, RecoveryReport), DriverError> {
        let (spool, frames) = tokio::task::spawn_blocking(move || {
            let mut spool = spool;
            let mut frames = Vec::new();
            spool
                .load(&mut |bytes| frames.push(bytes))
                .map(|()| (spool, frames))
                .map_err(|e| DriverError::Spool(Box::new(e)))
        })
        .await
        .map_err(task_error)??;
        let now = (settings.clock)();
        let (outbox, report) = Outbox::recover(
            settings.policy.clone(),
            settings.seed,
            now,
            frames,
            &settings.limits,
        );
        tracing::info!(
            recovered = report.recovered,
            dropped = report.dropped,
            skipped = report.skipped.len(),
            "agent started"
        );
        let (commands, receiver) = mpsc::channel(settings.commands);
        let (events_tx, events) = mpsc::unbounded_channel();
        let driver = Driver {
            outbox,
            transport: Arc::new(transport),
            spool: Some(spool),
            journal,
            commands: receiver,
            commands_open: true,
            events: events_tx,
            in_flight: JoinSet::new(),
            sending: HashMap::new(),
            inbox: VecDeque::new(),
            done: VecDeque::new(),
            pending_events: Vec::new(),
            pending_ops: VecDeque::new(),
            push_replies: Vec::new(),
            storage_retry_at: None,
            stopping: false,
            settings,
        };
        let task = tokio::spawn(driver.run());
        Ok((
            AsyncAgent {
                handle: AgentHandle { commands },
                events,
                task: Some(task),
            },
            report,
        ))
    }
}

impl<S> AsyncAgent<S> {
    /// A handle to push frames from other tasks.
    #[must_use]
    pub fn handle(&self) -> AgentHandle {
        self.handle.clone()
    }

    /// Pushes a frame: [`AgentHandle::push`].
    ///
    /// # Errors
    ///
    /// As [`AgentHandle::push`].
    pub async fn push(&self, frame: Frame) -> Result<(), DriverError> {
        self.handle.push(frame).await
    }

    /// What the agent holds now: [`AgentHandle::status`].
    ///
    /// # Errors
    ///
    /// As [`AgentHandle::status`].
    pub async fn status(&self) -> Result<AgentStatus, DriverError> {
        self.handle.status().await
    }

    /// The next event; `None` once the driver has stopped and every event
    /// was read.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<AgentEvent> {
        self.events.try_recv().ok()
    }

    /// Stops the agent gracefully: no more pushes (they get
    /// [`DriverError::Stopped`]), no new requests, the requests in flight
    /// finished and their outcomes applied to the spool; then the spool is
    /// handed back. Events not yet read stay readable
    /// ([`next_event`](AsyncAgent::next_event)).
    ///
    /// # Errors
    ///
    /// [`DriverError::Spool`] or [`DriverError::Journal`] if the last
    /// writes failed (what they did not apply is recovered from the spool
    /// at the next start); [`DriverError::Task`] if the driver panicked;
    /// [`DriverError::Stopped`] if `shutdown` already returned.
    pub async fn shutdown(&mut self) -> Result<S, DriverError> {
        let task = self.task.take().ok_or(DriverError::Stopped)?;
        // A closed channel means the driver has already ended.
        let _ = self.handle.commands.send(Command::Shutdown).await;
        task.await.map_err(task_error)?
    }
}

fn task_error(e: JoinError) -> DriverError {
    DriverError::Task(e.to_string())
}

/// The state of the driver task.
struct Driver<T, S: Spool> {
    settings: AgentSettings,
    outbox: Outbox,
    transport: Arc<T>,
    /// Moved into the blocking job and back.
    spool: Option<S>,
    journal: Option<Box<dyn EventJournal>>,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    events: mpsc::UnboundedSender<AgentEvent>,
    in_flight: JoinSet<Outcome>,
    /// The batch of each request task, so a task that panicked is still
    /// answered (transient).
    sending: HashMap<tokio::task::Id, BatchId>,
    /// Commands received while parked, for the next round.
    inbox: VecDeque<Command>,
    /// Requests finished while parked, for the next round.
    done: VecDeque<Result<(tokio::task::Id, Outcome), JoinError>>,
    /// Events taken from the outbox and not yet recorded.
    pending_events: Vec<DeliveryEvent>,
    /// Storage operations taken from the outbox and not yet applied, in
    /// order.
    pending_ops: VecDeque<StorageOp>,
    /// Pushes answered once the storage operations of their round are
    /// applied.
    push_replies: Vec<oneshot::Sender<Result<(), DriverError>>>,
    /// After a failed write: not before this.
    storage_retry_at: Option<Instant>,
    stopping: bool,
}

impl<T, S> Driver<T, S>
where
    T: AsyncTransport,
    S: Spool + Send + 'static,
    S::Error: Send + Sync + 'static,
{
    async fn run(mut self) -> Result<S, DriverError> {
        loop {
            let now = (self.settings.clock)();
            let mut busy = self.take_inputs(now);
            if self.outbox.poll_timeout().is_some_and(|at| at <= now) {
                self.outbox.handle_timeout(now);
            }
            let stored = match self.flush_storage().await {
                Ok(stored) => stored,
                Err(e) if self.stopping => {
                    // Shutting down with a failing spool: stop here; the
                    // spool holds everything not known to be settled, and
                    // the next start recovers it.
                    tracing::error!(error = %e, "agent stopped with a failing spool");
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if stored && !self.stopping {
                busy |= self.start_transmits(now);
            }
            if self.stopping
                && self.in_flight.is_empty()
                && self.done.is_empty()
                && stored
                && self.pending_ops.is_empty()
            {
                break;
            }
            if busy {
                // The round's bound was reached: let other tasks run, then
                // go on.
                tokio::task::yield_now().await;
                continue;
            }
            self.park(now, stored).await;
        }
        // Refuse what is still queued, so no pusher waits forever.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            self.refuse(cmd);
        }
        tracing::info!(held = self.outbox.held_batches(), "agent stopped");
        Ok(self
            .spool
            .take()
            .expect("the spool is back after every job"))
    }

    /// Takes at most `max_round` commands and finished requests; returns
    /// whether more were waiting.
    fn take_inputs(&mut self, now: DateTime<Utc>) -> bool {
        let max = self.settings.max_round;
        let mut n = 0;
        while n < max {
            let cmd = match self.inbox.pop_front() {
                Some(cmd) => cmd,
                None if self.commands_open => match self.commands.try_recv() {
                    Ok(cmd) => cmd,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // Every handle is gone: nobody can push again.
                        self.commands_open = false;
                        self.stopping = true;
                        break;
                    }
                },
                None => break,
            };
            self.command(now, cmd);
            n += 1;
        }
        let more_commands = n == max;
        let mut n = 0;
        while n < max {
            let finished = match self.done.pop_front() {
                Some(f) => f,
                None => match self.in_flight.try_join_next_with_id() {
                    Some(f) => f,
                    None => break,
                },
            };
            self.finished(now, finished);
            n += 1;
        }
        more_commands || n == max
    }

    fn command(&mut self, now: DateTime<Utc>, cmd: Command) {
        match cmd {
            Command::Push { frame, reply } if !self.stopping => {
                match self.outbox.push(now, frame) {
                    Ok(()) => self.push_replies.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Wake => {}
            Command::Shutdown => {
                tracing::debug!(in_flight = self.in_flight.len(), "agent shutting down");
                self.stopping = true;
            }
            cmd @ Command::Push { .. } => self.refuse(cmd),
        }
    }

    fn refuse(&mut self, cmd: Command) {
        match cmd {
            Command::Push { reply, .. } => {
                let _ = reply.send(Err(DriverError::Stopped));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Wake | Command::Shutdown => {}
        }
    }

    fn status(&self) -> AgentStatus {
        AgentStatus {
            held_batches: self.outbox.held_batches(),
            held_bytes: self.outbox.held_bytes(),
            in_flight: self.in_flight.len(),
            phases: self.outbox.held_by_phase(),
            next_timeout: self.outbox.poll_timeout(),
            stopping: self.stopping,
        }
    }

    fn finished(
        &mut self,
        now: DateTime<Utc>,
        finished: Result<(tokio::task::Id, Outcome), JoinError>,
    ) {
        let (id, outcome) = match finished {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                // The transport panicked (or the task was cancelled): the
                // send's fate is unknown, so it is retried.
                tracing::error!(error = %e, "a request task failed");
                (e.id(), Outcome::Transient)
            }
        };
        let Some(batch_id) = self.sending.remove(&id) else {
            // Every task is spawned with its entry in `sending`.
            tracing::error!("a request task with no batch");
            return;
        };
        tracing::trace!(%batch_id, ?outcome, "request finished");
        if let Err(e) = self.outbox.handle_outcome(now, batch_id, outcome) {
            // Not reached: a batch in flight is held until its outcome.
            tracing::error!(error = %e, "outcome refused by the outbox");
        }
    }

    /// Starts what the outbox has to send now; returns whether the round's
    /// bound was reached.
    fn start_transmits(&mut self, now: DateTime<Utc>) -> bool {
        for _ in 0..self.settings.max_round {
            let Some(tx) = self.outbox.poll_transmit(now) else {
                return false;
            };
            let batch_id = tx.batch_id;
            let transport = Arc::clone(&self.transport);
            tracing::trace!(%batch_id, attempt = tx.attempt, "request started");
            let handle = self
                .in_flight
                .spawn(async move { transport.send(&tx).await });
            self.sending.insert(handle.id(), batch_id);
        }
        true
    }

    /// Records the outbox's events and applies its storage operations, in
    /// one blocking job, events first. Returns whether nothing is left to
    /// apply (so transmits may start).
    async fn flush_storage(&mut self) -> Result<bool, DriverError> {
        while let Some(e) = self.outbox.poll_event() {
            self.pending_events.push(e);
        }
        while let Some(op) = self.outbox.poll_storage() {
            self.pending_ops.push_back(op);
        }
        if self.pending_events.is_empty() && self.pending_ops.is_empty() {
            self.answer_pushes();
            return Ok(true);
        }
        if self
            .storage_retry_at
            .is_some_and(|at| Instant::now() < at && !self.stopping)
        {
            return Ok(false);
        }
        let spool = self
            .spool
            .take()
            .expect("the spool is back after every job");
        let journal = self.journal.take();
        let events = std::mem::take(&mut self.pending_events);
        let ops = std::mem::take(&mut self.pending_ops);
        let sink = self.events.clone();
        let job = tokio::task::spawn_blocking(move || apply(spool, journal, events, ops, &sink));
        let done = job.await.map_err(task_error)?;
        self.spool = Some(done.spool);
        self.journal = done.journal;
        self.pending_events = done.events;
        self.pending_ops = done.ops;
        match done.result {
            Ok(()) => {
                self.storage_retry_at = None;
                self.answer_pushes();
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, "storage failed; retried");
                let event = match &e {
                    DriverError::Journal(j) => AgentEvent::JournalFailed {
                        error: j.to_string(),
                    },
                    other => AgentEvent::SpoolFailed {
                        error: other.to_string(),
                    },
                };
                let _ = self.events.send(event);
                self.storage_retry_at = Some(Instant::now() + self.settings.storage_retry);
                if self.stopping { Err(e) } else { Ok(false) }
            }
        }
    }

    fn answer_pushes(&mut self) {
        for reply in self.push_replies.drain(..) {
            let _ = reply.send(Ok(()));
        }
    }

    /// Waits for a command, a finished request, the outbox's next timeout
    /// or a storage retry; what arrives is kept for the next round. The
    /// outbox's timer counts only when its work can be done: not while
    /// shutting down (no new sends) nor while storage is failing (no sends
    /// before it succeeds), where an overdue timer would spin the loop.
    async fn park(&mut self, now: DateTime<Utc>, stored: bool) {
        let mut wait = self.settings.max_park;
        if let Some(at) = self.outbox.poll_timeout()
            && stored
            && !self.stopping
        {
            let until = (at - now).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until);
        }
        if let Some(at) = self.storage_retry_at {
            wait = wait.min(at.saturating_duration_since(Instant::now()));
        }
        let sleep = tokio::time::sleep(wait);
        let commands_open = self.commands_open;
        let requests = !self.in_flight.is_empty();
        tokio::select! {
            biased;
            finished = self.in_flight.join_next_with_id(), if requests => {
                if let Some(f) = finished {
                    self.done.push_back(f);
                }
            }
            cmd = self.commands.recv(), if commands_open => match cmd {
                Some(cmd) => self.inbox.push_back(cmd),
                None => {
                    self.commands_open = false;
                    self.stopping = true;
                }
            },
            () = sleep => {}
        }
    }
}

/// What a blocking storage job hands back: the spool and journal, what it
/// did not get to, and how it ended.
struct Applied<S> {
    spool: S,
    journal: Option<Box<dyn EventJournal>>,
    events: Vec<DeliveryEvent>,
    ops: VecDeque<StorageOp>,
    result: Result<(), DriverError>,
}

/// The blocking job: journal the events, hand them to the host, then apply
/// the storage operations in order, stopping at the first failure.
fn apply<S>(
    mut spool: S,
    mut journal: Option<Box<dyn EventJournal>>,
    events: Vec<DeliveryEvent>,
    mut ops: VecDeque<StorageOp>,
    sink: &mpsc::UnboundedSender<AgentEvent>,
) -> Applied<S>
where
    S: Spool,
    S::Error: Send + Sync + 'static,
{
    if !events.is_empty() {
        if let Some(Err(e)) = journal.as_mut().map(|j| j.record(&events)) {
            return Applied {
                spool,
                journal,
                events,
                ops,
                result: Err(DriverError::Journal(e)),
            };
        }
        for e in events {
            // The host may have stopped listening; the events are on
            // record anyway when a journal is set.
            let _ = sink.send(AgentEvent::Delivery(e));
        }
    }
    while let Some(op) = ops.front() {
        let result = match op {
            StorageOp::Persist { batch_id, frame } => spool.persist(*batch_id, frame),
            StorageOp::Remove { batch_id } => spool.remove(*batch_id),
            // A later core's operation this driver does not know: applying
            // nothing is not safe, so it is treated as a failure to retry.
            other => {
                let error = format!("unknown storage operation {other:?}");
                return Applied {
                    spool,
                    journal,
                    events: Vec::new(),
                    ops,
                    result: Err(DriverError::Spool(error.into())),
                };
            }
        };
        if let Err(e) = result {
            return Applied {
                spool,
                journal,
                events: Vec::new(),
                ops,
                result: Err(DriverError::Spool(Box::new(e))),
            };
        }
        ops.pop_front();
    }
    Applied {
        spool,
        journal,
        events: Vec::new(),
        ops,
        result: Ok(()),
    }
}
