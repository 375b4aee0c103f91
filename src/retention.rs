//! Retention and purge, sans I/O: which stored objects to delete, when a
//! closed workspace is purged and its keys shredded, and the census of
//! surviving frames per key id that rotation needs.
//!
//! `docs/RETENTION.md` specifies the rules; in short:
//!
//! - **Retention follows the plan.** A [`RetentionPolicy`] holds a period
//!   per [`Plan`] from this **default** table, configurable with
//!   [`RetentionPolicy::with_plan_retention`]:
//!
//!   | plan | default retention |
//!   |---|---|
//!   | [`Plan::Free`] | 7 days |
//!   | [`Plan::Standard`] | 30 days |
//!   | [`Plan::Premium`] | 365 days |
//!   | [`Plan::PerGb`] | 31 days |
//!
//!   Aggregated metrics are kept 390 days whatever the plan
//!   ([`RetentionPolicy::with_aggregated_metrics`]), and a closed workspace
//!   is purged 30 days after it was closed
//!   ([`RetentionPolicy::with_purge_after_close`]).
//! - **Overrides**, most specific first, for raw data of type `t` in
//!   workspace `w`: `w`'s period for `t`
//!   ([`Workspace::with_type_retention`]), then `w`'s period for all its raw
//!   data ([`Workspace::with_retention`]), then the policy's period for `t`
//!   ([`RetentionPolicy::with_type_retention`]), then the policy's period for
//!   `w`'s plan.
//! - **Boundaries.** A record of time `t` kept for `r` is *inside retention*
//!   while `now < t + r`; from `t + r` exactly it is past retention. An
//!   object is deleted only when its **newest** record is past retention,
//!   so an object that still holds one record inside retention is never
//!   deleted for age. A workspace closed at `c` is purged from
//!   `c + purge_after_close` exactly (30 days by default), not a
//!   nanosecond earlier; it can be reopened strictly before that.
//! - **Unknown tenants.** An object whose tenant is not among the
//!   workspaces passed is kept (never deleted silently), counted in the
//!   census, and reported in [`RetentionPlan::unknown_tenants`].
//!
//! [`RetentionPolicy::plan`] takes the inventory as an iterator and reads it
//! once; it holds memory for the workspaces, for one census entry per tenant
//! and key id, and for the actions it returns, never for the inventory. For
//! an inventory too large for even its actions to be collected,
//! [`RetentionPlanner`] hands out each object's action as it is pushed.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use opsdata::*;
//!
//! let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
//! let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
//! let policy = RetentionPolicy::default();
//! let mut workspace = Workspace::new(tenant, Plan::Standard);
//! let kek = KeyId::new(1)?;
//! let object = |n: u8, newest| {
//!     let key = ObjectKey::for_batch(BatchId::from_random_bytes([n; 16]));
//!     let kind = ObjectKind::Raw(DataType::Event);
//!     StoredObject::new(tenant, key, kind, newest, newest, Some(kek))
//! };
//! let old = object(1, t0)?;
//! let new = object(2, t0 + Duration::days(20))?;
//!
//! // Standard keeps 30 days: at t0 + 30 days the first object goes.
//! let now = t0 + Duration::days(30);
//! let plan = policy.plan(now, [&workspace], [old, new])?;
//! assert_eq!(
//!     plan.actions(),
//!     [RetentionAction::DeleteObject {
//!         tenant,
//!         object: old.object(),
//!         reason: DeleteReason::Expired,
//!     }]
//! );
//! assert_eq!(plan.census(tenant).frames(kek), 1); // for RotationPolicy::evaluate
//!
//! // Closed: 30 days later everything goes, and the keys are shredded.
//! workspace.close(&policy, now)?;
//! let purge = now + Duration::days(30);
//! let plan = policy.plan(purge, [&workspace], [new])?;
//! assert_eq!(plan.actions().len(), 3); // DeleteObject, ShredKeys, MarkPurged
//! assert!(matches!(plan.actions()[1], RetentionAction::ShredKeys { .. }));
//! workspace.mark_purged(purge)?;
//! assert!(workspace.reopen(purge).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use crate::ingest::ObjectKey;
use crate::keys::{KeyCensus, KeyError, KeyId, KeyRing, ShredReceipt};
use crate::record::DataType;
use crate::tenant::TenantId;

mod state;

/// A workspace's pricing plan: it sets how long its raw data is kept (the
/// table in [`RetentionPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Plan {
    /// The free tier: 7 days by default.
    Free,
    /// Standard: 30 days by default.
    Standard,
    /// Premium: 365 days by default.
    Premium,
    /// Pay per GB ingested (the service's "PerGB2018"): 31 days by default.
    PerGb,
}

impl Plan {
    /// Every plan, in declaration order.
    pub const ALL: [Plan; 4] = [Plan::Free, Plan::Standard, Plan::Premium, Plan::PerGb];

    const fn index(self) -> usize {
        match self {
            Plan::Free => 0,
            Plan::Standard => 1,
            Plan::Premium => 2,
            Plan::PerGb => 3,
        }
    }
}

/// What a stored object holds, which decides how long it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// Records of one data type, as ingested: kept by the workspace's plan
    /// and overrides.
    Raw(DataType),
    /// Aggregated metrics (rollups): kept
    /// [`aggregated_metrics`](RetentionPolicy::aggregated_metrics), 390 days
    /// by default, whatever the plan.
    AggregatedMetrics,
}

/// Why a retention setting, a workspace step or a planning input was
/// refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// Text given to [`Workspace::restore`] that is not a saved workspace
    /// or breaks one of its rules (`docs/STATE.md`).
    #[error("not a valid saved workspace: {reason}")]
    State {
        /// The rule broken.
        reason: &'static str,
    },
    /// A period that is zero or negative.
    #[error("{setting} must be positive, not {period}")]
    NotPositive {
        /// Which setting.
        setting: &'static str,
        /// The period given.
        period: Duration,
    },
    /// A period longer than [`RetentionPolicy::MAX_PERIOD`].
    #[error("{setting} of {period} is longer than the {max} allowed")]
    TooLong {
        /// Which setting.
        setting: &'static str,
        /// The period given.
        period: Duration,
        /// The longest allowed.
        max: Duration,
    },
    /// An inventory item whose newest record is older than its oldest.
    #[error(
        "object {object:?} of tenant {tenant}: newest record {newest} is before the oldest {oldest}"
    )]
    RecordTimes {
        /// The tenant.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
        /// The oldest record time given.
        oldest: DateTime<Utc>,
        /// The newest record time given.
        newest: DateTime<Utc>,
    },
    /// Two workspaces of the same tenant were passed to one plan.
    #[error("tenant {tenant} has more than one workspace")]
    DuplicateWorkspace {
        /// The tenant.
        tenant: TenantId,
    },
    /// The step needs a closed workspace, and this one is active.
    #[error("workspace {tenant} is not closed")]
    NotClosed {
        /// The tenant.
        tenant: TenantId,
    },
    /// The workspace was purged: it can be neither closed nor reopened.
    #[error("workspace {tenant} was purged at {at}")]
    Purged {
        /// The tenant.
        tenant: TenantId,
        /// When.
        at: DateTime<Utc>,
    },
    /// A reopen at or after the purge time: the purge may be under way.
    #[error("workspace {tenant} is purged from {purge_at}: too late to reopen")]
    PurgeDue {
        /// The tenant.
        tenant: TenantId,
        /// When the purge became due.
        purge_at: DateTime<Utc>,
    },
    /// A workspace marked purged before its purge time.
    #[error("workspace {tenant} may be purged from {purge_at}, not before")]
    PurgeNotDue {
        /// The tenant.
        tenant: TenantId,
        /// When the purge becomes due.
        purge_at: DateTime<Utc>,
    },
    /// Closing at `closed_at` would put the purge past the last
    /// representable time.
    #[error("workspace {tenant} closed at {closed_at}: its purge time is past the end of time")]
    PurgeTimeOverflow {
        /// The tenant.
        tenant: TenantId,
        /// The time of the close refused.
        closed_at: DateTime<Utc>,
    },
    /// The key ring passed to [`shred_keys`] is another tenant's.
    #[error("key ring of tenant {found} passed to shred tenant {expected}")]
    WrongRing {
        /// The tenant to shred.
        expected: TenantId,
        /// The ring's.
        found: TenantId,
    },
    /// Shredding failed in the key ring (not closing, or its grace period
    /// not over).
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Checks a period: positive and at most [`RetentionPolicy::MAX_PERIOD`].
fn period(setting: &'static str, period: Duration) -> Result<Duration, RetentionError> {
    if period <= Duration::zero() {
        Err(RetentionError::NotPositive { setting, period })
    } else if period > RetentionPolicy::MAX_PERIOD {
        Err(RetentionError::TooLong {
            setting,
            period,
            max: RetentionPolicy::MAX_PERIOD,
        })
    } else {
        Ok(period)
    }
}

/// Sets (a checked period) or clears `data_type`'s entry in `types`.
fn set_type(
    types: &mut BTreeMap<DataType, Duration>,
    setting: &'static str,
    data_type: DataType,
    d: Option<Duration>,
) -> Result<(), RetentionError> {
    match d {
        Some(d) => {
            types.insert(data_type, period(setting, d)?);
        }
        None => {
            types.remove(&data_type);
        }
    }
    Ok(())
}

/// The earlier of `a` (if any) and `b`.
fn earliest(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> DateTime<Utc> {
    a.map_or(b, |a| a.min(b))
}

/// How long data is kept, per plan and per data type, and how long a closed
/// workspace waits before its purge.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | plan table | Free 7 days, Standard 30, Premium 365, PerGb 31 | raw data of a workspace on that plan |
/// | per data type | none | raw data of that type, in every workspace without an override of its own |
/// | `aggregated_metrics` | 390 days | [`ObjectKind::AggregatedMetrics`], whatever the plan |
/// | `purge_after_close` | 30 days | between [`Workspace::close`] and the purge |
///
/// Every period must be positive and at most [`MAX_PERIOD`](Self::MAX_PERIOD)
/// (ten years). The plan table is a default chosen for this crate, not the
/// service's price list: set the periods your plans promise.
///
/// **Precedence** for raw data of type `t` in workspace `w`, most specific
/// first: `w`'s period for `t`, `w`'s period for all its raw data, the
/// policy's period for `t`, the policy's period for `w`'s plan
/// ([`retention_for`](Self::retention_for)). Aggregated metrics take only
/// `aggregated_metrics`.
///
/// **Boundaries.** A record of time `t` kept for `r` is inside retention
/// while `now < t + r`, and past it from `t + r` exactly. An object is
/// deleted for age only once its *newest* record is past retention. A
/// workspace closed at `c` is purged from `c + purge_after_close` exactly.
///
/// ```
/// use chrono::Duration;
/// use opsdata::{DataType, Plan, RetentionError, RetentionPolicy};
/// let policy = RetentionPolicy::default()
///     .with_plan_retention(Plan::Free, Duration::days(3))?
///     .with_type_retention(DataType::Alert, Some(Duration::days(90)))?;
/// assert_eq!(policy.plan_retention(Plan::Free), Duration::days(3));
/// assert_eq!(policy.plan_retention(Plan::Premium), Duration::days(365));
/// assert!(matches!(
///     policy.with_aggregated_metrics(Duration::zero()),
///     Err(RetentionError::NotPositive { .. })
/// ));
/// # Ok::<(), RetentionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    plans: [Duration; 4],
    types: BTreeMap<DataType, Duration>,
    aggregated_metrics: Duration,
    purge_after_close: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        let mut plans = [Duration::zero(); 4];
        for plan in Plan::ALL {
            plans[plan.index()] = Self::default_plan_retention(plan);
        }
        RetentionPolicy {
            plans,
            types: BTreeMap::new(),
            aggregated_metrics: Duration::days(390),
            purge_after_close: Duration::days(30),
        }
    }
}

impl RetentionPolicy {
    /// The longest period any setting may have: 3 653 days, ten years
    /// counting their leap days.
    pub const MAX_PERIOD: Duration = Duration::days(3_653);

    /// The default plan table: Free 7 days, Standard 30, Premium 365,
    /// PerGb 31.
    #[must_use]
    pub const fn default_plan_retention(plan: Plan) -> Duration {
        Duration::days(match plan {
            Plan::Free => 7,
            Plan::Standard => 30,
            Plan::Premium => 365,
            Plan::PerGb => 31,
        })
    }

    /// Sets how long raw data of a workspace on `plan` is kept.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_plan_retention(mut self, plan: Plan, d: Duration) -> Result<Self, RetentionError> {
        self.plans[plan.index()] = period("plan retention", d)?;
        Ok(self)
    }

    /// Sets (or with `None` clears) how long raw data of `data_type` is
    /// kept in workspaces without an override of their own.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_type_retention(
        mut self,
        data_type: DataType,
        d: Option<Duration>,
    ) -> Result<Self, RetentionError> {
        set_type(&mut self.types, "data type retention", data_type, d)?;
        Ok(self)
    }

    /// Sets how long aggregated metrics are kept.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_aggregated_metrics(mut self, d: Duration) -> Result<Self, RetentionError> {
        self.aggregated_metrics = period("aggregated metrics retention", d)?;
        Ok(self)
    }

    /// Sets the time between closing a workspace and purging it. It applies
    /// to workspaces closed after the change: a closed workspace keeps the
    /// purge time it was given when it was closed. Give the
    /// [`RotationPolicy`](crate::RotationPolicy) the same
    /// `shred_after_close`, so its key ring may be shredded when it is
    /// purged.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_purge_after_close(mut self, d: Duration) -> Result<Self, RetentionError> {
        self.purge_after_close = period("purge_after_close", d)?;
        Ok(self)
    }

    /// How long raw data of a workspace on `plan` is kept, before overrides.
    #[must_use]
    pub fn plan_retention(&self, plan: Plan) -> Duration {
        self.plans[plan.index()]
    }

    /// The policy's period for raw data of `data_type`, if set.
    #[must_use]
    pub fn type_retention(&self, data_type: DataType) -> Option<Duration> {
        self.types.get(&data_type).copied()
    }

    /// How long aggregated metrics are kept.
    #[must_use]
    pub fn aggregated_metrics(&self) -> Duration {
        self.aggregated_metrics
    }

    /// The time between closing a workspace and purging it.
    #[must_use]
    pub fn purge_after_close(&self) -> Duration {
        self.purge_after_close
    }

    /// How long `workspace` keeps objects of `kind`: for raw data of type
    /// `t`, the workspace's period for `t`, else the workspace's period,
    /// else the policy's period for `t`, else its plan's; for aggregated
    /// metrics, [`aggregated_metrics`](Self::aggregated_metrics).
    #[must_use]
    pub fn retention_for(&self, workspace: &Workspace, kind: ObjectKind) -> Duration {
        match kind {
            ObjectKind::Raw(t) => workspace
                .type_retention(t)
                .or(workspace.retention())
                .or(self.type_retention(t))
                .unwrap_or(self.plan_retention(workspace.plan())),
            ObjectKind::AggregatedMetrics => self.aggregated_metrics,
        }
    }

    /// Plans retention at `now` over `inventory`, read once: a
    /// [`DeleteObject`](RetentionAction::DeleteObject) for each object past
    /// retention or of a workspace being purged, then, for each workspace
    /// whose purge is due, [`ShredKeys`](RetentionAction::ShredKeys) and
    /// [`MarkPurged`](RetentionAction::MarkPurged); and the census of the
    /// objects that survive. Carry the actions out in order. Pure: the same
    /// inputs give the same plan. [`RetentionPlanner`] does the same
    /// object by object.
    ///
    /// # Errors
    ///
    /// [`RetentionError::DuplicateWorkspace`] if two workspaces have the
    /// same tenant.
    pub fn plan<'a>(
        &'a self,
        now: DateTime<Utc>,
        workspaces: impl IntoIterator<Item = &'a Workspace>,
        inventory: impl IntoIterator<Item = StoredObject>,
    ) -> Result<RetentionPlan, RetentionError> {
        let mut planner = RetentionPlanner::new(self, now, workspaces)?;
        let mut deletions = Vec::new();
        for object in inventory {
            deletions.extend(planner.push(object));
        }
        let mut plan = planner.finish();
        deletions.append(&mut plan.actions);
        plan.actions = deletions;
        Ok(plan)
    }
}

/// Where a workspace is in its life: `Active → Closed → Purged`, and back
/// from `Closed` to `Active` by [`Workspace::reopen`] before the purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkspaceState {
    /// Collecting; data is kept by retention.
    Active,
    /// Closed at `at`; its data is still kept by retention until
    /// `purge_at`, from which everything is deleted and its keys shredded.
    Closed {
        /// When it was closed.
        at: DateTime<Utc>,
        /// When the purge becomes due: `at` plus the policy's
        /// `purge_after_close` when it was closed.
        purge_at: DateTime<Utc>,
    },
    /// Purged: its data deleted and its keys shredded. Final.
    Purged {
        /// When it was marked purged.
        at: DateTime<Utc>,
    },
}

/// A workspace (one tenant) as retention sees it: its plan, its overrides
/// and where it is in its life.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use opsdata::{Plan, RetentionError, RetentionPolicy, TenantId, Workspace, WorkspaceState};
/// let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// let policy = RetentionPolicy::default();
/// let mut w = Workspace::new(tenant, Plan::Premium);
/// w.close(&policy, t0)?;
/// assert_eq!(w.purge_at(), Some(t0 + Duration::days(30)));
/// w.reopen(t0 + Duration::days(29))?;
/// assert_eq!(w.state(), WorkspaceState::Active);
/// # Ok::<(), RetentionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    tenant: TenantId,
    plan: Plan,
    retention: Option<Duration>,
    types: BTreeMap<DataType, Duration>,
    state: WorkspaceState,
    /// The latest time a lifecycle call has seen: an earlier `now` counts
    /// as this one.
    latest: Option<DateTime<Utc>>,
}

impl Workspace {
    /// An active workspace on `plan`, without overrides.
    #[must_use]
    pub fn new(tenant: TenantId, plan: Plan) -> Self {
        Workspace {
            tenant,
            plan,
            retention: None,
            types: BTreeMap::new(),
            state: WorkspaceState::Active,
            latest: None,
        }
    }

    /// `now`, or the latest time seen if that is later; not remembered.
    fn seen(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.latest.map_or(now, |l| l.max(now))
    }

    /// [`seen`](Self::seen), remembered: only for a call that succeeds (a
    /// refused call records no time, ARCHITECTURE.md).
    fn observe(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.seen(now);
        self.latest = Some(now);
        now
    }

    /// The latest time [`close`](Workspace::close),
    /// [`reopen`](Workspace::reopen), [`begin_purge`](Workspace::begin_purge)
    /// or [`mark_purged`](Workspace::mark_purged) has seen; persist it with
    /// the state and restore it with
    /// [`with_latest_seen`](Workspace::with_latest_seen).
    #[must_use]
    pub fn latest_seen(&self) -> Option<DateTime<Utc>> {
        self.latest
    }

    /// Restores the latest time seen (see [`Workspace::latest_seen`]).
    #[must_use]
    pub fn with_latest_seen(mut self, latest: Option<DateTime<Utc>>) -> Self {
        self.latest = latest;
        self
    }

    /// Changes the plan.
    #[must_use]
    pub fn with_plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }

    /// Sets (or with `None` clears) how long this workspace keeps all its
    /// raw data, whatever its plan and the policy's per-type periods.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_retention(mut self, d: Option<Duration>) -> Result<Self, RetentionError> {
        self.retention = d.map(|d| period("workspace retention", d)).transpose()?;
        Ok(self)
    }

    /// Sets (or with `None` clears) how long this workspace keeps raw data
    /// of `data_type`: the most specific setting, it beats every other.
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`].
    pub fn with_type_retention(
        mut self,
        data_type: DataType,
        d: Option<Duration>,
    ) -> Result<Self, RetentionError> {
        set_type(
            &mut self.types,
            "workspace data type retention",
            data_type,
            d,
        )?;
        Ok(self)
    }

    /// Sets the lifecycle state as persisted, for a host restoring a
    /// workspace from its storage (a closed workspace keeps the purge time
    /// it was given when it was closed).
    ///
    /// # Errors
    ///
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`] if a
    /// `Closed` state's `purge_at - at` is not a valid `purge_after_close`.
    pub fn with_state(mut self, state: WorkspaceState) -> Result<Self, RetentionError> {
        if let WorkspaceState::Closed { at, purge_at } = state {
            period("purge_after_close", purge_at.signed_duration_since(at))?;
        }
        self.state = state;
        Ok(self)
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The plan.
    #[must_use]
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// The workspace's period for all its raw data, if set.
    #[must_use]
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The workspace's period for raw data of `data_type`, if set.
    #[must_use]
    pub fn type_retention(&self, data_type: DataType) -> Option<Duration> {
        self.types.get(&data_type).copied()
    }

    /// Where it is in its life.
    #[must_use]
    pub fn state(&self) -> WorkspaceState {
        self.state
    }

    /// When its purge is due, if it is closed.
    #[must_use]
    pub fn purge_at(&self) -> Option<DateTime<Utc>> {
        match self.state {
            WorkspaceState::Closed { purge_at, .. } => Some(purge_at),
            _ => None,
        }
    }

    /// Closes the workspace at `now`: it is purged `purge_after_close`
    /// later (30 days by default). Closing a closed workspace keeps the
    /// first date. Close its key ring at the same time
    /// ([`KeyRing::close`]), so its keys may be shredded at the purge.
    /// A `now` earlier than one this workspace has seen counts as the
    /// latest seen.
    ///
    /// # Errors
    ///
    /// [`RetentionError::Purged`] if it was purged;
    /// [`RetentionError::PurgeTimeOverflow`] if the purge time would fall
    /// past the last representable time. Nothing changes on error.
    pub fn close(
        &mut self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<(), RetentionError> {
        match self.state {
            WorkspaceState::Active => {
                let now = self.seen(now);
                let purge_at = now.checked_add_signed(policy.purge_after_close).ok_or(
                    RetentionError::PurgeTimeOverflow {
                        tenant: self.tenant,
                        closed_at: now,
                    },
                )?;
                self.observe(now);
                self.state = WorkspaceState::Closed { at: now, purge_at };
                Ok(())
            }
            WorkspaceState::Closed { .. } => Ok(()),
            WorkspaceState::Purged { at } => Err(RetentionError::Purged {
                tenant: self.tenant,
                at,
            }),
        }
    }

    /// Reopens a closed workspace strictly before its purge time, which
    /// cancels the purge. Cancel its key ring's closing too
    /// ([`KeyRing::cancel_close`]).
    ///
    /// # Errors
    ///
    /// [`RetentionError::PurgeDue`] at or after the purge time, even before
    /// the purge was carried out (it may be under way);
    /// [`RetentionError::Purged`] after it; [`RetentionError::NotClosed`]
    /// if it is active. Nothing changes on error, the latest time seen
    /// included.
    ///
    /// A `now` earlier than one this workspace has seen counts as the
    /// latest seen: once [`begin_purge`](Workspace::begin_purge) has run, a
    /// reopen stamped by a clock that lags is refused too.
    pub fn reopen(&mut self, now: DateTime<Utc>) -> Result<(), RetentionError> {
        // Not recorded until the call succeeds: a refused reopen (say
        // `NotClosed`, with a clock far ahead) must not stamp a later close.
        let now = self.seen(now);
        match self.state {
            WorkspaceState::Active => Err(RetentionError::NotClosed {
                tenant: self.tenant,
            }),
            WorkspaceState::Closed { purge_at, .. } if now >= purge_at => {
                Err(RetentionError::PurgeDue {
                    tenant: self.tenant,
                    purge_at,
                })
            }
            WorkspaceState::Closed { .. } => {
                self.observe(now);
                self.state = WorkspaceState::Active;
                Ok(())
            }
            WorkspaceState::Purged { at } => Err(RetentionError::Purged {
                tenant: self.tenant,
                at,
            }),
        }
    }

    /// Records that a purge is starting at `now` (the plan's `now`): call it
    /// before carrying out the first action of a workspace's purge, and
    /// persist the workspace. From then on [`reopen`](Workspace::reopen)
    /// is refused even with an earlier `now`, so a request stamped by a
    /// lagging clock cannot bring back a workspace whose data is being
    /// deleted.
    ///
    /// # Errors
    ///
    /// [`RetentionError::PurgeNotDue`] before the purge time;
    /// [`RetentionError::NotClosed`] if it is active. Nothing changes on
    /// error.
    pub fn begin_purge(&mut self, now: DateTime<Utc>) -> Result<(), RetentionError> {
        let seen = self.seen(now);
        match self.state {
            WorkspaceState::Active => Err(RetentionError::NotClosed {
                tenant: self.tenant,
            }),
            WorkspaceState::Closed { purge_at, .. } if seen < purge_at => {
                Err(RetentionError::PurgeNotDue {
                    tenant: self.tenant,
                    purge_at,
                })
            }
            WorkspaceState::Closed { .. } | WorkspaceState::Purged { .. } => {
                self.observe(now);
                Ok(())
            }
        }
    }

    /// Records that the purge was carried out (the
    /// [`MarkPurged`](RetentionAction::MarkPurged) action). Marking a
    /// purged workspace again changes nothing.
    ///
    /// # Errors
    ///
    /// [`RetentionError::PurgeNotDue`] before the purge time;
    /// [`RetentionError::NotClosed`] if it is active. Nothing changes on
    /// error, the latest time seen included.
    pub fn mark_purged(&mut self, now: DateTime<Utc>) -> Result<(), RetentionError> {
        let now = self.seen(now);
        match self.state {
            WorkspaceState::Active => Err(RetentionError::NotClosed {
                tenant: self.tenant,
            }),
            WorkspaceState::Closed { purge_at, .. } if now < purge_at => {
                Err(RetentionError::PurgeNotDue {
                    tenant: self.tenant,
                    purge_at,
                })
            }
            WorkspaceState::Closed { .. } => {
                self.observe(now);
                self.state = WorkspaceState::Purged { at: now };
                Ok(())
            }
            WorkspaceState::Purged { .. } => {
                self.observe(now);
                Ok(())
            }
        }
    }
}

/// One stored object as the inventory lists it: whose it is, what it holds,
/// the times of its oldest and newest records, and the key version its
/// frame is sealed under ([`peek`](crate::peek) reads it without a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredObject {
    tenant: TenantId,
    object: ObjectKey,
    kind: ObjectKind,
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
    kek_id: Option<KeyId>,
}

impl StoredObject {
    /// An inventory item; `kek_id` is `None` for an object not sealed.
    ///
    /// # Errors
    ///
    /// [`RetentionError::RecordTimes`] if `newest` is before `oldest`.
    pub fn new(
        tenant: TenantId,
        object: ObjectKey,
        kind: ObjectKind,
        oldest: DateTime<Utc>,
        newest: DateTime<Utc>,
        kek_id: Option<KeyId>,
    ) -> Result<Self, RetentionError> {
        if newest < oldest {
            return Err(RetentionError::RecordTimes {
                tenant,
                object,
                oldest,
                newest,
            });
        }
        Ok(StoredObject {
            tenant,
            object,
            kind,
            oldest,
            newest,
            kek_id,
        })
    }

    /// The tenant it is stored under.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
    /// Its key in the tenant's blob store.
    #[must_use]
    pub fn object(&self) -> ObjectKey {
        self.object
    }
    /// What it holds.
    #[must_use]
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }
    /// The time of its oldest record.
    #[must_use]
    pub fn oldest(&self) -> DateTime<Utc> {
        self.oldest
    }
    /// The time of its newest record: this decides when it is deleted.
    #[must_use]
    pub fn newest(&self) -> DateTime<Utc> {
        self.newest
    }
    /// The key version it is sealed under, if sealed.
    #[must_use]
    pub fn kek_id(&self) -> Option<KeyId> {
        self.kek_id
    }
}

/// Why an object is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeleteReason {
    /// Its newest record is past retention.
    Expired,
    /// Its workspace is being purged (or was purged, and the object was
    /// left behind).
    WorkspacePurge,
}

/// A step the host carries out, in the order the plan gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum RetentionAction {
    /// Delete the object: [`BlobStore::delete`](crate::BlobStore::delete)
    /// `(tenant, object)`.
    DeleteObject {
        /// The tenant.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
        /// Why.
        reason: DeleteReason,
    },
    /// Crypto-shred the tenant's keys: [`shred_keys`] on its ring (or
    /// [`KeyRing::shred`]), then persist the ring. Comes after every
    /// deletion of the tenant's objects.
    ShredKeys {
        /// The tenant.
        tenant: TenantId,
    },
    /// Record the purge: [`Workspace::mark_purged`] `(at)`. Comes last, so
    /// a host that stops half-way plans the rest of the purge again.
    MarkPurged {
        /// The tenant.
        tenant: TenantId,
        /// When (the plan's `now`).
        at: DateTime<Utc>,
    },
}

/// Counts of what a plan saw and decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionStats {
    /// Objects in the inventory.
    pub objects: u64,
    /// Objects deleted because their newest record is past retention.
    pub expired: u64,
    /// Objects deleted because their workspace is purged.
    pub purged: u64,
    /// Objects kept.
    pub kept: u64,
    /// Objects kept although their oldest record is past retention: they
    /// still hold a newer record inside it.
    pub kept_partly_expired: u64,
    /// Objects kept because their tenant has no workspace (included in
    /// `kept`).
    pub unknown_tenant: u64,
}

/// What [`RetentionPolicy::plan`] (or [`RetentionPlanner::finish`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RetentionPlan {
    actions: Vec<RetentionAction>,
    census: BTreeMap<TenantId, KeyCensus>,
    unknown: BTreeMap<TenantId, u64>,
    next_due: Option<DateTime<Utc>>,
    stats: RetentionStats,
}

impl RetentionPlan {
    /// The actions, in the order to carry them out. From
    /// [`RetentionPlanner::finish`], only the workspace-level ones
    /// (`ShredKeys`, `MarkPurged`): `push` returned the deletions.
    pub fn actions(&self) -> &[RetentionAction] {
        &self.actions
    }

    /// The actions, owned.
    pub fn into_actions(self) -> Vec<RetentionAction> {
        self.actions
    }

    /// How many surviving objects of `tenant` are sealed under each key
    /// version: the census [`RotationPolicy::evaluate`](crate::RotationPolicy::evaluate)
    /// takes for the tenant's ring. Empty for a tenant with no surviving
    /// sealed object.
    #[must_use]
    pub fn census(&self, tenant: TenantId) -> KeyCensus {
        self.census.get(&tenant).cloned().unwrap_or_default()
    }

    /// Every tenant with surviving sealed objects, and its census.
    pub fn censuses(&self) -> impl Iterator<Item = (TenantId, &KeyCensus)> {
        self.census.iter().map(|(t, c)| (*t, c))
    }

    /// Tenants that have objects in the inventory but no workspace, with
    /// how many objects each: kept, and to be looked into.
    pub fn unknown_tenants(&self) -> impl Iterator<Item = (TenantId, u64)> + '_ {
        self.unknown.iter().map(|(t, n)| (*t, *n))
    }

    /// The earliest time after `now` at which planning again over the same
    /// inventory would delete something or purge a workspace, if any: when
    /// to run the next plan (new data may only make it later).
    #[must_use]
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.next_due
    }

    /// Counts of what the plan saw and decided.
    #[must_use]
    pub fn stats(&self) -> RetentionStats {
        self.stats
    }
}

/// Retention planning one object at a time, for an inventory of any size:
/// [`push`](Self::push) each object and carry out the action it returns,
/// then [`finish`](Self::finish) for the census and the workspace-level
/// actions. Memory is one entry per workspace and per tenant and key id,
/// whatever the number of objects.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use opsdata::*;
/// let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let workspace = Workspace::new(tenant, Plan::Free); // 7 days
/// let policy = RetentionPolicy::default();
/// let mut planner = RetentionPlanner::new(&policy, t0 + Duration::days(7), [&workspace])?;
/// let key = ObjectKey::for_batch(BatchId::from_random_bytes([1; 16]));
/// let kind = ObjectKind::Raw(DataType::Performance);
/// let object = StoredObject::new(tenant, key, kind, t0, t0, None)?;
/// assert!(matches!(planner.push(object), Some(RetentionAction::DeleteObject { .. })));
/// let plan = planner.finish();
/// assert!(plan.actions().is_empty());
/// assert_eq!(plan.stats().expired, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RetentionPlanner<'p> {
    policy: &'p RetentionPolicy,
    now: DateTime<Utc>,
    workspaces: BTreeMap<TenantId, &'p Workspace>,
    plan: RetentionPlan,
}

impl<'p> RetentionPlanner<'p> {
    /// A planner at `now` for `workspaces`.
    ///
    /// # Errors
    ///
    /// [`RetentionError::DuplicateWorkspace`] if two workspaces have the
    /// same tenant.
    pub fn new(
        policy: &'p RetentionPolicy,
        now: DateTime<Utc>,
        workspaces: impl IntoIterator<Item = &'p Workspace>,
    ) -> Result<Self, RetentionError> {
        let mut map = BTreeMap::new();
        for w in workspaces {
            if map.insert(w.tenant, w).is_some() {
                return Err(RetentionError::DuplicateWorkspace { tenant: w.tenant });
            }
        }
        Ok(RetentionPlanner {
            policy,
            now,
            workspaces: map,
            plan: RetentionPlan {
                actions: Vec::new(),
                census: BTreeMap::new(),
                unknown: BTreeMap::new(),
                next_due: None,
                stats: RetentionStats::default(),
            },
        })
    }

    /// Whether the purge of `w` is due (or done).
    fn purging(&self, w: &Workspace) -> bool {
        match w.state {
            WorkspaceState::Active => false,
            WorkspaceState::Closed { purge_at, .. } => purge_at <= self.now,
            WorkspaceState::Purged { .. } => true,
        }
    }

    fn due_at(&mut self, t: DateTime<Utc>) {
        self.plan.next_due = Some(earliest(self.plan.next_due, t));
    }

    fn keep(&mut self, object: &StoredObject) {
        self.plan.stats.kept += 1;
        if let Some(id) = object.kek_id {
            self.plan.census.entry(object.tenant).or_default().add(id);
        }
    }

    /// Decides one object: `Some(DeleteObject)` if it is past retention or
    /// its workspace is being purged, `None` if it is kept (and counted in
    /// the census).
    pub fn push(&mut self, object: StoredObject) -> Option<RetentionAction> {
        self.plan.stats.objects += 1;
        let delete = |reason| {
            Some(RetentionAction::DeleteObject {
                tenant: object.tenant,
                object: object.object,
                reason,
            })
        };
        let Some(&workspace) = self.workspaces.get(&object.tenant) else {
            self.plan.stats.unknown_tenant += 1;
            *self.plan.unknown.entry(object.tenant).or_insert(0) += 1;
            self.keep(&object);
            return None;
        };
        if self.purging(workspace) {
            self.plan.stats.purged += 1;
            return delete(DeleteReason::WorkspacePurge);
        }
        let retention = self.policy.retention_for(workspace, object.kind);
        // A record whose expiry is past the end of time never expires.
        let expires = object.newest.checked_add_signed(retention);
        if expires.is_some_and(|e| e <= self.now) {
            self.plan.stats.expired += 1;
            return delete(DeleteReason::Expired);
        }
        if object
            .oldest
            .checked_add_signed(retention)
            .is_some_and(|e| e <= self.now)
        {
            self.plan.stats.kept_partly_expired += 1;
        }
        if let Some(e) = expires {
            self.due_at(e);
        }
        self.keep(&object);
        None
    }

    /// The plan: for each workspace whose purge is due, in tenant order,
    /// [`ShredKeys`](RetentionAction::ShredKeys) then
    /// [`MarkPurged`](RetentionAction::MarkPurged) (carry them out after
    /// every deletion `push` returned); the census of the objects kept;
    /// the unknown tenants; when to plan next.
    pub fn finish(mut self) -> RetentionPlan {
        for (&tenant, &w) in &self.workspaces {
            match w.state {
                WorkspaceState::Closed { purge_at, .. } if purge_at <= self.now => {
                    self.plan
                        .actions
                        .push(RetentionAction::ShredKeys { tenant });
                    self.plan.actions.push(RetentionAction::MarkPurged {
                        tenant,
                        at: self.now,
                    });
                }
                WorkspaceState::Closed { purge_at, .. } => {
                    self.plan.next_due = Some(earliest(self.plan.next_due, purge_at));
                }
                _ => {}
            }
        }
        self.plan
    }
}

/// Carries out [`RetentionAction::ShredKeys`] on `tenant`'s key ring
/// through the keys API ([`KeyRing::shred`]) and returns the receipt;
/// persist the ring afterwards. The ring must have been closed
/// ([`KeyRing::close`]) no later than the workspace, with a
/// `shred_after_close` no longer than the retention policy's
/// `purge_after_close`. Repeating it (a host that stopped before
/// `MarkPurged` and planned again) returns the receipt of the shredding
/// already done.
///
/// # Errors
///
/// [`RetentionError::WrongRing`] if the ring is another tenant's (checked
/// first); [`RetentionError::Key`] with [`KeyError::NotClosing`] if the
/// ring was not closed, or [`KeyError::GracePeriod`] before its grace
/// period ends. Nothing changes on error.
pub fn shred_keys(
    tenant: TenantId,
    ring: &mut KeyRing,
    now: DateTime<Utc>,
) -> Result<ShredReceipt, RetentionError> {
    if ring.tenant() != tenant {
        return Err(RetentionError::WrongRing {
            expected: tenant,
            found: ring.tenant(),
        });
    }
    if let (Some(at), Some((closed_at, _))) = (ring.shredded(), ring.closing()) {
        return Ok(ShredReceipt {
            tenant,
            key_ids: ring.versions().map(|v| v.id).collect(),
            closed_at,
            at,
        });
    }
    Ok(ring.shred(now)?)
}
