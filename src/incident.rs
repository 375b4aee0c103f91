//! Data-loss notification: the [`LossLedger`] turns lost batches and the
//! service's own losses into per-tenant incidents and the notices owed to
//! each affected customer within a day, and tracks each incident through
//! detected → assessed → diagnosed → stabilized → closed with a post-mortem.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use chrono::{DateTime, Duration, Utc};

use crate::delivery::{DeliveryEvent, DropReason};
use crate::record::DataType;
use crate::tenant::TenantId;

mod state;

/// The longest a customer may wait for a loss notice: 24 hours after the
/// first loss of the incident. [`LedgerPolicy::with_notice_deadline`] may
/// shorten it, never lengthen it.
pub const MAX_NOTICE_DEADLINE: Duration = Duration::hours(24);

/// `t + d`, saturating at the end of time: a `now` the caller passes must not
/// make the ledger panic.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A data type's slot in per-type arrays.
fn type_index(data_type: DataType) -> usize {
    usize::from(data_type.as_u8() - 1)
}

/// An incident's id, unique within one [`LossLedger`], given in order from 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IncidentId(u64);

impl IncidentId {
    /// The number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "incident {}", self.0)
    }
}

impl fmt::Debug for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IncidentId({})", self.0)
    }
}

/// The [`LossLedger`]'s settings, each validated when set.
///
/// Defaults: a notice is due 24 hours after the incident's first loss at
/// the latest ([`MAX_NOTICE_DEADLINE`]), or earlier, once no new loss has
/// come for a grouping delay of 1 hour; at most 1 000 closed incidents are
/// kept for display.
///
/// ```
/// use chrono::Duration;
/// use opsdata::LedgerPolicy;
/// let policy = LedgerPolicy::default()
///     .with_notice_deadline(Duration::hours(4))?
///     .with_grouping_delay(Duration::minutes(15))?;
/// assert_eq!(policy.notice_deadline(), Duration::hours(4));
/// assert!(LedgerPolicy::default().with_notice_deadline(Duration::hours(25)).is_err());
/// # Ok::<(), opsdata::IncidentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerPolicy {
    notice_deadline: Duration,
    grouping_delay: Duration,
    max_closed: usize,
    max_notified: usize,
}

impl Default for LedgerPolicy {
    fn default() -> Self {
        LedgerPolicy {
            notice_deadline: MAX_NOTICE_DEADLINE,
            grouping_delay: Duration::hours(1),
            max_closed: 1_000,
            max_notified: 10_000,
        }
    }
}

impl LedgerPolicy {
    /// How long after an incident's first loss its notice is due at the
    /// latest. Default and ceiling 24 hours.
    #[must_use]
    pub fn notice_deadline(&self) -> Duration {
        self.notice_deadline
    }

    /// How long the ledger waits after an incident's latest loss for more
    /// before the notice is due, so that one outage makes one notice; never
    /// past the deadline. Default 1 hour.
    #[must_use]
    pub fn grouping_delay(&self) -> Duration {
        self.grouping_delay
    }

    /// How many closed incidents the ledger keeps for display before it
    /// evicts the oldest closed one. Default 1 000.
    #[must_use]
    pub fn max_closed(&self) -> usize {
        self.max_closed
    }

    /// How many incidents whose notice went out, but which are not closed,
    /// the ledger keeps for their lifecycle before it evicts the oldest
    /// (the first detected). Evicting one loses only its lifecycle: its
    /// customers were told. Default 10 000.
    #[must_use]
    pub fn max_notified(&self) -> usize {
        self.max_notified
    }

    /// Sets [`max_notified`](Self::max_notified).
    ///
    /// # Errors
    ///
    /// [`IncidentError::Setting`] for zero.
    pub fn with_max_notified(mut self, max_notified: usize) -> Result<Self, IncidentError> {
        if max_notified == 0 {
            return Err(IncidentError::Setting {
                setting: "max_notified",
                requirement: "positive",
            });
        }
        self.max_notified = max_notified;
        Ok(self)
    }

    /// Sets [`notice_deadline`](Self::notice_deadline).
    ///
    /// # Errors
    ///
    /// [`IncidentError::Setting`] unless `0 < deadline <= 24 h`.
    pub fn with_notice_deadline(mut self, deadline: Duration) -> Result<Self, IncidentError> {
        if deadline <= Duration::zero() || deadline > MAX_NOTICE_DEADLINE {
            return Err(IncidentError::Setting {
                setting: "notice_deadline",
                requirement: "positive and at most 24 hours",
            });
        }
        self.notice_deadline = deadline;
        Ok(self)
    }

    /// Sets [`grouping_delay`](Self::grouping_delay). Zero makes each
    /// notice due at its incident's first loss (so it carries what arrived
    /// before the host's next poll).
    ///
    /// # Errors
    ///
    /// [`IncidentError::Setting`] unless `0 <= delay <= 24 h`.
    pub fn with_grouping_delay(mut self, delay: Duration) -> Result<Self, IncidentError> {
        if delay < Duration::zero() || delay > MAX_NOTICE_DEADLINE {
            return Err(IncidentError::Setting {
                setting: "grouping_delay",
                requirement: "at least zero and at most 24 hours",
            });
        }
        self.grouping_delay = delay;
        Ok(self)
    }

    /// Sets [`max_closed`](Self::max_closed).
    ///
    /// # Errors
    ///
    /// [`IncidentError::Setting`] for zero.
    pub fn with_max_closed(mut self, max_closed: usize) -> Result<Self, IncidentError> {
        if max_closed == 0 {
            return Err(IncidentError::Setting {
                setting: "max_closed",
                requirement: "positive",
            });
        }
        self.max_closed = max_closed;
        Ok(self)
    }
}

/// Why data was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossReason {
    /// An agent's outbox dropped the batch ([`DeliveryEvent::Dropped`]).
    Delivery(DropReason),
    /// The service accepted the data but failed to store it.
    Ingest,
    /// Stored data was lost or damaged beyond repair.
    Storage,
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::Delivery(DropReason::QueueFull) => f.write_str("agent queue full"),
            LossReason::Delivery(DropReason::Rejected) => f.write_str("rejected by the service"),
            LossReason::Delivery(DropReason::Expired) => f.write_str("expired before delivery"),
            LossReason::Delivery(DropReason::Corrupt) => {
                f.write_str("damaged in the agent's spool")
            }
            LossReason::Ingest => f.write_str("not stored by the service"),
            LossReason::Storage => f.write_str("lost from storage"),
        }
    }
}

/// A closed span of time, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LossWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl LossWindow {
    /// The span from `start` to `end`, both included.
    ///
    /// # Errors
    ///
    /// [`IncidentError::Window`] if `end` is before `start`.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, IncidentError> {
        if end < start {
            return Err(IncidentError::Window { start, end });
        }
        Ok(LossWindow { start, end })
    }

    /// The instant `t` alone.
    #[must_use]
    pub fn at(t: DateTime<Utc>) -> Self {
        LossWindow { start: t, end: t }
    }

    /// The first instant.
    #[must_use]
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The last instant.
    #[must_use]
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// The smallest window holding both.
    #[must_use]
    pub fn union(self, other: LossWindow) -> LossWindow {
        LossWindow {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A loss the service reports itself (its storage or ingest lost data), for
/// [`LossLedger::report_loss`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The tenant whose data was lost.
    pub tenant: TenantId,
    /// Its data type.
    pub data_type: DataType,
    /// Records lost (0 if unknown).
    pub records: u64,
    /// Bytes lost (0 if unknown).
    pub bytes: u64,
    /// Why.
    pub reason: LossReason,
    /// The time span of the data that was lost (when it was collected), not
    /// when the loss happened: the ledger counts the loss as happening at
    /// the `now` it is reported.
    pub window: LossWindow,
}

/// What one data type lost in one incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypeLoss {
    /// The data type.
    pub data_type: DataType,
    /// How many losses (dropped batches and reported losses) of this type.
    pub losses: u64,
    /// Records lost (saturating).
    pub records: u64,
    /// Bytes lost (saturating).
    pub bytes: u64,
}

/// The notice owed to a customer, from [`LossLedger::poll_notices`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Notice {
    /// The incident it reports.
    pub incident: IncidentId,
    /// The affected customer.
    pub tenant: TenantId,
    /// When the losses happened (as the ledger learnt of them): the first
    /// loss to the last.
    pub window: LossWindow,
    /// The span of data the service reported lost ([`Loss::window`]), if
    /// any was reported; dropped batches do not say when their data was
    /// collected, so they add nothing here.
    pub affected: Option<LossWindow>,
    /// Losses per data type, in wire order, only types that lost something.
    pub per_type: Vec<TypeLoss>,
    /// The reasons, each once, in the order first seen.
    pub reasons: Vec<LossReason>,
    /// When the notice was due at the latest: first loss + the notice
    /// deadline.
    pub deadline: DateTime<Utc>,
    /// When it was handed out (the `now` of the poll).
    pub emitted_at: DateTime<Utc>,
    /// Whether it was handed out after its deadline (`emitted_at >
    /// deadline`; exactly at the deadline is on time).
    pub overdue: bool,
}

impl Notice {
    /// Records lost over all data types (saturating).
    #[must_use]
    pub fn records(&self) -> u64 {
        self.per_type
            .iter()
            .fold(0u64, |n, t| n.saturating_add(t.records))
    }

    /// Bytes lost over all data types (saturating).
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.per_type
            .iter()
            .fold(0u64, |n, t| n.saturating_add(t.bytes))
    }
}

/// Where an incident stands. Each stage is entered once, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum IncidentStage {
    /// The first loss was recorded.
    Detected,
    /// Its scope and impact have been assessed.
    Assessed,
    /// Its cause has been found.
    Diagnosed,
    /// The loss has stopped.
    Stabilized,
    /// Done, with a post-mortem ([`Incident::post_mortem`]).
    Closed,
}

impl IncidentStage {
    /// Every stage, in order.
    pub const ALL: [IncidentStage; 5] = [
        IncidentStage::Detected,
        IncidentStage::Assessed,
        IncidentStage::Diagnosed,
        IncidentStage::Stabilized,
        IncidentStage::Closed,
    ];

    fn index(self) -> usize {
        match self {
            IncidentStage::Detected => 0,
            IncidentStage::Assessed => 1,
            IncidentStage::Diagnosed => 2,
            IncidentStage::Stabilized => 3,
            IncidentStage::Closed => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    losses: u64,
    records: u64,
    bytes: u64,
}

/// One incident: a tenant's losses grouped into one notice, and where the
/// incident stands. Read it through [`LossLedger::incident`] or
/// [`LossLedger::incidents`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    id: IncidentId,
    tenant: TenantId,
    first_loss: DateTime<Utc>,
    last_loss: DateTime<Utc>,
    deadline: DateTime<Utc>,
    affected: Option<LossWindow>,
    totals: [Totals; 6],
    reasons: Vec<LossReason>,
    notified_at: Option<DateTime<Utc>>,
    overdue: bool,
    entered: [Option<DateTime<Utc>>; 5],
    post_mortem: Option<String>,
}

impl Incident {
    /// Its id.
    #[must_use]
    pub fn id(&self) -> IncidentId {
        self.id
    }

    /// The affected customer.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// When its first loss was recorded.
    #[must_use]
    pub fn first_loss(&self) -> DateTime<Utc> {
        self.first_loss
    }

    /// When its latest loss was recorded.
    #[must_use]
    pub fn last_loss(&self) -> DateTime<Utc> {
        self.last_loss
    }

    /// When its notice is due at the latest.
    #[must_use]
    pub fn deadline(&self) -> DateTime<Utc> {
        self.deadline
    }

    /// The span of data reported lost, as in [`Notice::affected`].
    #[must_use]
    pub fn affected(&self) -> Option<LossWindow> {
        self.affected
    }

    /// Losses per data type so far, as in [`Notice::per_type`].
    #[must_use]
    pub fn per_type(&self) -> Vec<TypeLoss> {
        DataType::ALL
            .iter()
            .zip(&self.totals)
            .filter(|(_, t)| t.losses > 0)
            .map(|(&data_type, t)| TypeLoss {
                data_type,
                losses: t.losses,
                records: t.records,
                bytes: t.bytes,
            })
            .collect()
    }

    /// The reasons so far, each once, in the order first seen.
    #[must_use]
    pub fn reasons(&self) -> &[LossReason] {
        &self.reasons
    }

    /// When its notice was handed out, or `None` while it is still open
    /// (and absorbing the tenant's new losses).
    #[must_use]
    pub fn notified_at(&self) -> Option<DateTime<Utc>> {
        self.notified_at
    }

    /// Whether the notice is late: handed out after the deadline, or not
    /// yet handed out and `now` is past the deadline.
    #[must_use]
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        match self.notified_at {
            Some(_) => self.overdue,
            None => now > self.deadline,
        }
    }

    /// The stage it has reached.
    #[must_use]
    pub fn stage(&self) -> IncidentStage {
        // Detected is always set, so the search always finds a stage.
        IncidentStage::ALL
            .into_iter()
            .rev()
            .find(|s| self.entered[s.index()].is_some())
            .unwrap_or(IncidentStage::Detected)
    }

    /// When it entered `stage`, or `None` if it has not.
    #[must_use]
    pub fn entered(&self, stage: IncidentStage) -> Option<DateTime<Utc>> {
        self.entered[stage.index()]
    }

    /// The post-mortem, once closed.
    #[must_use]
    pub fn post_mortem(&self) -> Option<&str> {
        self.post_mortem.as_deref()
    }

    fn add(
        &mut self,
        now: DateTime<Utc>,
        data_type: DataType,
        records: u64,
        bytes: u64,
        reason: LossReason,
        affected: Option<LossWindow>,
    ) {
        self.last_loss = now;
        let t = &mut self.totals[type_index(data_type)];
        t.losses = t.losses.saturating_add(1);
        t.records = t.records.saturating_add(records);
        t.bytes = t.bytes.saturating_add(bytes);
        if !self.reasons.contains(&reason) {
            // Bounded: there are only a handful of distinct reasons.
            self.reasons.push(reason);
        }
        if let Some(w) = affected {
            self.affected = Some(self.affected.map_or(w, |a| a.union(w)));
        }
    }
}

/// Misuse of the ledger or a nonsense setting: a typed error that changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncidentError {
    /// A [`LedgerPolicy`] setting out of range.
    #[error("{setting} must be {requirement}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// A [`LossWindow`] that ends before it starts.
    #[error("loss window ends at {end}, before its start {start}")]
    Window {
        /// Its start.
        start: DateTime<Utc>,
        /// Its end.
        end: DateTime<Utc>,
    },
    /// No incident with this id is held (never was, or closed and since
    /// taken out or evicted).
    #[error("unknown {id}")]
    UnknownIncident {
        /// The id.
        id: IncidentId,
    },
    /// A lifecycle step out of order: each stage follows the one before.
    #[error("{id} cannot go from {from:?} to {to:?}")]
    Transition {
        /// The incident.
        id: IncidentId,
        /// Its stage.
        from: IncidentStage,
        /// The stage asked for.
        to: IncidentStage,
    },
    /// Closing an incident whose customer has not been notified yet: poll
    /// its notice first.
    #[error("{id} cannot close before its notice is handed out")]
    NotNotified {
        /// The incident.
        id: IncidentId,
    },
    /// Closing with an empty (or blank) post-mortem.
    #[error("{id} needs a post-mortem to close")]
    EmptyPostMortem {
        /// The incident.
        id: IncidentId,
    },
    /// Text given to [`LossLedger::restore`] that is not a saved ledger or
    /// breaks one of its rules (`docs/STATE.md`).
    #[error("not a valid saved loss ledger: {reason}")]
    State {
        /// The rule broken.
        reason: &'static str,
    },
    /// Closing with a post-mortem longer than [`MAX_POST_MORTEM_BYTES`].
    #[error("{id}: a post-mortem of {bytes} bytes is longer than the {max} allowed")]
    PostMortemTooLong {
        /// The incident.
        id: IncidentId,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
}

/// The longest post-mortem [`LossLedger::close`] keeps: 64 KiB of UTF-8.
/// Link to a longer document rather than paste it.
pub const MAX_POST_MORTEM_BYTES: usize = 64 << 10;

/// The sans-I/O data-loss ledger: groups a tenant's losses into incidents
/// and says when each customer must be told.
///
/// **Inputs**: [`handle_dropped`](LossLedger::handle_dropped) for the
/// delivery layer's [`DeliveryEvent::Dropped`] events (others are ignored),
/// [`report_loss`](LossLedger::report_loss) for losses the service finds
/// itself; the lifecycle steps [`assess`](LossLedger::assess),
/// [`diagnose`](LossLedger::diagnose), [`stabilize`](LossLedger::stabilize),
/// [`close`](LossLedger::close).
///
/// **Grouping**: a tenant has at most one *open* incident, one whose notice
/// has not been handed out yet; it absorbs every new loss of that tenant.
/// Its notice becomes due at the earlier of (a) its latest loss plus the
/// grouping delay (default 1 hour: one outage, one notice) and (b) its
/// deadline, its first loss plus the notice deadline (at most 24 hours).
/// New losses can postpone (a) but never (b). Once the notice is handed
/// out, the incident is no longer open and the tenant's next loss opens a
/// new incident.
///
/// **Drain contract**: after every input, and whenever the timer fires,
/// call [`poll_notices`](LossLedger::poll_notices) until `None`, delivering
/// each notice; then arm the timer for
/// [`poll_timeout`](LossLedger::poll_timeout) (`None`: no incident is open).
/// A host that polls no later than `poll_timeout` hands out every notice at
/// or before its deadline; a notice handed out later is marked
/// [`overdue`](Notice::overdue). There is no `handle_timeout`: polling is
/// the timer's work. A `now` earlier than one already seen is taken as the
/// latest seen. Every call does O(log n) work in the incidents held.
///
/// **Memory**: each incident takes constant space (per-type totals, at most
/// a handful of reasons, a post-mortem of at most
/// [`MAX_POST_MORTEM_BYTES`]). An open incident (one per tenant at most)
/// stays until notified; notified ones stay for their lifecycle, and beyond
/// [`LedgerPolicy::max_notified`] the oldest is evicted; closed ones stay
/// for display until [`take_closed`](LossLedger::take_closed) takes them
/// out (oldest first), and beyond [`LedgerPolicy::max_closed`] the oldest
/// closed one is evicted when another closes. Only notified incidents are
/// ever evicted, so no loss leaves the ledger without a notice.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use opsdata::*;
///
/// let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let mut ledger = LossLedger::new(LedgerPolicy::default());
///
/// // The service lost a quarter hour of a tenant's events from storage.
/// let id = ledger.report_loss(t0, Loss {
///     tenant,
///     data_type: DataType::Event,
///     records: 120,
///     bytes: 40_000,
///     reason: LossReason::Storage,
///     window: LossWindow::new(t0 - Duration::minutes(15), t0)?,
/// });
/// // Nothing more for an hour: the notice is due then.
/// assert!(ledger.poll_notices(t0).is_none());
/// assert_eq!(ledger.poll_timeout(), Some(t0 + Duration::hours(1)));
/// let notice = ledger.poll_notices(t0 + Duration::hours(1)).expect("due");
/// assert_eq!((notice.tenant, notice.records(), notice.overdue), (tenant, 120, false));
/// assert_eq!(notice.deadline, t0 + Duration::hours(24));
///
/// // The incident's lifecycle, step by step.
/// let t1 = t0 + Duration::hours(2);
/// ledger.assess(t1, id)?;
/// ledger.diagnose(t1, id)?;
/// assert!(ledger.close(t1, id, "disk firmware").is_err()); // not stabilized yet
/// ledger.stabilize(t1, id)?;
/// ledger.close(t1, id, "disk firmware; replaced and re-replicated")?;
/// assert_eq!(ledger.incident(id).unwrap().stage(), IncidentStage::Closed);
/// let archived = ledger.take_closed().expect("the closed incident");
/// assert_eq!(archived.post_mortem(), Some("disk firmware; replaced and re-replicated"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LossLedger {
    policy: LedgerPolicy,
    latest: Option<DateTime<Utc>>,
    next_id: u64,
    incidents: BTreeMap<IncidentId, Incident>,
    /// Each tenant's open (not yet notified) incident.
    open: BTreeMap<TenantId, IncidentId>,
    /// Open incidents by when their notice is due.
    due: BTreeSet<(DateTime<Utc>, IncidentId)>,
    /// Closed incidents still held, oldest closed first.
    closed: VecDeque<IncidentId>,
    /// Incidents notified but not closed, still held.
    notified: BTreeSet<IncidentId>,
}

impl LossLedger {
    /// An empty ledger.
    #[must_use]
    pub fn new(policy: LedgerPolicy) -> Self {
        LossLedger {
            policy,
            latest: None,
            next_id: 1,
            incidents: BTreeMap::new(),
            open: BTreeMap::new(),
            due: BTreeSet::new(),
            closed: VecDeque::new(),
            notified: BTreeSet::new(),
        }
    }

    /// Its settings.
    #[must_use]
    pub fn policy(&self) -> &LedgerPolicy {
        &self.policy
    }

    fn clock(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        now
    }

    fn due_at(&self, incident: &Incident) -> DateTime<Utc> {
        later(incident.last_loss, self.policy.grouping_delay).min(incident.deadline)
    }

    /// Records a delivery event: a [`DeliveryEvent::Dropped`] is a loss of
    /// its records and bytes for its tenant and data type, with reason
    /// [`LossReason::Delivery`]; every other event is ignored.
    ///
    /// Returns the incident that took the loss, or `None` for an ignored
    /// event.
    pub fn handle_dropped(
        &mut self,
        now: DateTime<Utc>,
        event: &DeliveryEvent,
    ) -> Option<IncidentId> {
        match *event {
            DeliveryEvent::Dropped {
                tenant,
                data_type,
                records,
                bytes,
                reason,
                ..
            } => Some(self.record(
                now,
                tenant,
                data_type,
                u64::from(records),
                bytes,
                LossReason::Delivery(reason),
                None,
            )),
            _ => None,
        }
    }

    /// Records a loss the service found itself, as happening at `now`.
    /// Returns the incident that took it.
    pub fn report_loss(&mut self, now: DateTime<Utc>, loss: Loss) -> IncidentId {
        self.record(
            now,
            loss.tenant,
            loss.data_type,
            loss.records,
            loss.bytes,
            loss.reason,
            Some(loss.window),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: DateTime<Utc>,
        tenant: TenantId,
        data_type: DataType,
        records: u64,
        bytes: u64,
        reason: LossReason,
        affected: Option<LossWindow>,
    ) -> IncidentId {
        let now = self.clock(now);
        let id = match self.open.get(&tenant) {
            Some(&id) => id,
            None => {
                let id = IncidentId(self.next_id);
                self.next_id += 1;
                let mut entered = [None; 5];
                entered[IncidentStage::Detected.index()] = Some(now);
                let incident = Incident {
                    id,
                    tenant,
                    first_loss: now,
                    last_loss: now,
                    deadline: later(now, self.policy.notice_deadline),
                    affected: None,
                    totals: [Totals::default(); 6],
                    reasons: Vec::new(),
                    notified_at: None,
                    overdue: false,
                    entered,
                    post_mortem: None,
                };
                self.due.insert((self.due_at(&incident), id));
                self.incidents.insert(id, incident);
                self.open.insert(tenant, id);
                id
            }
        };
        // The open map only names held incidents.
        let incident = self.incidents.get_mut(&id).expect("open incident is held");
        let before = later(incident.last_loss, self.policy.grouping_delay).min(incident.deadline);
        incident.add(now, data_type, records, bytes, reason, affected);
        let after = later(incident.last_loss, self.policy.grouping_delay).min(incident.deadline);
        if before != after {
            self.due.remove(&(before, id));
            self.due.insert((after, id));
        }
        id
    }

    /// The next notice that is due at `now` (earliest due first), or
    /// `None`. Handing it out closes the incident to new losses. See the
    /// drain contract on [`LossLedger`].
    pub fn poll_notices(&mut self, now: DateTime<Utc>) -> Option<Notice> {
        let now = self.clock(now);
        let &(due, id) = self.due.first()?;
        if due > now {
            return None;
        }
        self.due.pop_first();
        // The due index only names held, open incidents.
        let incident = self.incidents.get_mut(&id).expect("due incident is held");
        self.open.remove(&incident.tenant);
        incident.notified_at = Some(now);
        incident.overdue = now > incident.deadline;
        let notice = Notice {
            incident: id,
            tenant: incident.tenant,
            window: LossWindow {
                start: incident.first_loss,
                end: incident.last_loss,
            },
            affected: incident.affected,
            per_type: incident.per_type(),
            reasons: incident.reasons.clone(),
            deadline: incident.deadline,
            emitted_at: now,
            overdue: incident.overdue,
        };
        // Bounded memory however many incidents are never closed: evict
        // the oldest notified one (its customers were told).
        self.notified.insert(id);
        if self.notified.len() > self.policy.max_notified
            && let Some(old) = self.notified.pop_first()
        {
            self.incidents.remove(&old);
        }
        Some(notice)
    }

    /// When the next notice becomes due (possibly already past: poll now),
    /// or `None` if no incident is open.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.due.first().map(|&(t, _)| t)
    }

    fn step(
        &mut self,
        now: DateTime<Utc>,
        id: IncidentId,
        to: IncidentStage,
    ) -> Result<(), IncidentError> {
        let incident = self
            .incidents
            .get(&id)
            .ok_or(IncidentError::UnknownIncident { id })?;
        let from = incident.stage();
        if from.index() + 1 != to.index() {
            return Err(IncidentError::Transition { id, from, to });
        }
        let now = self.clock(now);
        // Checked above.
        let incident = self.incidents.get_mut(&id).expect("held");
        incident.entered[to.index()] = Some(now);
        Ok(())
    }

    /// Marks the incident assessed at `now`.
    ///
    /// # Errors
    ///
    /// [`IncidentError::UnknownIncident`], or [`IncidentError::Transition`]
    /// unless it stands at [`IncidentStage::Detected`].
    pub fn assess(&mut self, now: DateTime<Utc>, id: IncidentId) -> Result<(), IncidentError> {
        self.step(now, id, IncidentStage::Assessed)
    }

    /// Marks the incident diagnosed at `now`.
    ///
    /// # Errors
    ///
    /// [`IncidentError::UnknownIncident`], or [`IncidentError::Transition`]
    /// unless it stands at [`IncidentStage::Assessed`].
    pub fn diagnose(&mut self, now: DateTime<Utc>, id: IncidentId) -> Result<(), IncidentError> {
        self.step(now, id, IncidentStage::Diagnosed)
    }

    /// Marks the incident stabilized at `now`.
    ///
    /// # Errors
    ///
    /// [`IncidentError::UnknownIncident`], or [`IncidentError::Transition`]
    /// unless it stands at [`IncidentStage::Diagnosed`].
    pub fn stabilize(&mut self, now: DateTime<Utc>, id: IncidentId) -> Result<(), IncidentError> {
        self.step(now, id, IncidentStage::Stabilized)
    }

    /// Closes the incident at `now` with its post-mortem. If more than
    /// [`LedgerPolicy::max_closed`] closed incidents are then held, the
    /// oldest closed one is evicted.
    ///
    /// # Errors
    ///
    /// [`IncidentError::UnknownIncident`];
    /// [`IncidentError::Transition`] unless it stands at
    /// [`IncidentStage::Stabilized`]; [`IncidentError::NotNotified`] while
    /// its notice has not been handed out; [`IncidentError::EmptyPostMortem`]
    /// for a blank post-mortem.
    pub fn close(
        &mut self,
        now: DateTime<Utc>,
        id: IncidentId,
        post_mortem: impl Into<String>,
    ) -> Result<(), IncidentError> {
        let post_mortem = post_mortem.into();
        let incident = self
            .incidents
            .get(&id)
            .ok_or(IncidentError::UnknownIncident { id })?;
        let from = incident.stage();
        if from != IncidentStage::Stabilized {
            return Err(IncidentError::Transition {
                id,
                from,
                to: IncidentStage::Closed,
            });
        }
        if incident.notified_at.is_none() {
            return Err(IncidentError::NotNotified { id });
        }
        if post_mortem.trim().is_empty() {
            return Err(IncidentError::EmptyPostMortem { id });
        }
        if post_mortem.len() > MAX_POST_MORTEM_BYTES {
            return Err(IncidentError::PostMortemTooLong {
                id,
                bytes: post_mortem.len(),
                max: MAX_POST_MORTEM_BYTES,
            });
        }
        let now = self.clock(now);
        // Checked above.
        let incident = self.incidents.get_mut(&id).expect("held");
        incident.entered[IncidentStage::Closed.index()] = Some(now);
        incident.post_mortem = Some(post_mortem);
        self.notified.remove(&id);
        self.closed.push_back(id);
        if self.closed.len() > self.policy.max_closed
            && let Some(old) = self.closed.pop_front()
        {
            self.incidents.remove(&old);
        }
        Ok(())
    }

    /// Takes the oldest closed incident out of the ledger, to archive it,
    /// or `None` if none is held.
    pub fn take_closed(&mut self) -> Option<Incident> {
        let id = self.closed.pop_front()?;
        self.incidents.remove(&id)
    }

    /// The incident with this id, if held.
    #[must_use]
    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.incidents.get(&id)
    }

    /// Every incident held, oldest first: open, notified and closed ones.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// The tenant's open incident (losses not notified yet), if any.
    #[must_use]
    pub fn open_incident(&self, tenant: TenantId) -> Option<IncidentId> {
        self.open.get(&tenant).copied()
    }

    /// How many incidents are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    /// Whether no incident is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn tenant(n: u128) -> TenantId {
        TenantId::new(Uuid::from_u128(n)).unwrap()
    }

    fn loss(t: TenantId, records: u64) -> Loss {
        Loss {
            tenant: t,
            data_type: DataType::State,
            records,
            bytes: records * 10,
            reason: LossReason::Ingest,
            window: LossWindow::at(t0()),
        }
    }

    #[test]
    fn grouping_never_passes_the_deadline() {
        let mut l = LossLedger::new(LedgerPolicy::default());
        let a = tenant(1);
        let id = l.report_loss(t0(), loss(a, 1));
        // A loss every 50 minutes keeps postponing the grouping delay...
        for k in 1..=28 {
            let now = t0() + Duration::minutes(50 * k);
            assert!(l.poll_notices(now).is_none(), "{k}");
            assert_eq!(l.report_loss(now, loss(a, 1)), id);
        }
        // ...but not the deadline.
        assert_eq!(l.poll_timeout(), Some(t0() + Duration::hours(24)));
        let n = l.poll_notices(t0() + Duration::hours(24)).unwrap();
        assert_eq!((n.records(), n.overdue), (29, false));
        assert!(!l.incident(id).unwrap().is_overdue(t0() + Duration::days(9)));
        // The next loss opens a new incident.
        assert_ne!(l.report_loss(t0() + Duration::hours(25), loss(a, 1)), id);
    }

    #[test]
    fn earlier_now_is_taken_as_latest() {
        let mut l = LossLedger::new(LedgerPolicy::default());
        let id = l.report_loss(t0(), loss(tenant(1), 1));
        l.report_loss(t0() - Duration::hours(3), loss(tenant(1), 1));
        let i = l.incident(id).unwrap();
        assert_eq!((i.first_loss(), i.last_loss()), (t0(), t0()));
    }
}
