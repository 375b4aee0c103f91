//! Saving and restoring a [`Workspace`] across a restart (`docs/STATE.md`,
//! "Workspace"): a closed workspace must be purged on time after it, and a
//! lagging clock must not undo a purge begun before it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{Plan, RetentionError, Workspace, WorkspaceState, period};
use crate::record::DataType;
use crate::tenant::TenantId;

/// The `format` field of a saved workspace.
const FORMAT: &str = "opsdata.workspace";
/// The version written and read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    format: String,
    version: u32,
    tenant: TenantId,
    plan: String,
    /// Whole seconds.
    retention_secs: Option<i64>,
    /// Whole seconds, by data type name.
    type_retention_secs: BTreeMap<DataType, i64>,
    state: SavedState,
    latest_seen: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case", deny_unknown_fields)]
enum SavedState {
    Active,
    Closed {
        at: DateTime<Utc>,
        purge_at: DateTime<Utc>,
    },
    Purged {
        at: DateTime<Utc>,
    },
}

fn plan_name(plan: Plan) -> &'static str {
    match plan {
        Plan::Free => "free",
        Plan::Standard => "standard",
        Plan::Premium => "premium",
        Plan::PerGb => "per_gb",
    }
}

fn bad(reason: &'static str) -> RetentionError {
    RetentionError::State { reason }
}

fn secs(setting: &'static str, s: i64) -> Result<Duration, RetentionError> {
    let d = Duration::try_seconds(s).ok_or(bad("a period out of range"))?;
    period(setting, d)
}

impl Workspace {
    /// The workspace's state as JSON (`docs/STATE.md`, "Workspace"): its
    /// plan, overrides, lifecycle state and latest time seen, for the host
    /// to store durably after every lifecycle call and hand to
    /// [`restore`](Workspace::restore) after a restart. Periods are saved
    /// in whole seconds (those set through the API are whole seconds or
    /// more in practice; a fraction is dropped).
    #[must_use]
    pub fn save(&self) -> String {
        let saved = Saved {
            format: FORMAT.to_owned(),
            version: VERSION,
            tenant: self.tenant,
            plan: plan_name(self.plan).to_owned(),
            retention_secs: self.retention.map(|d| d.num_seconds()),
            type_retention_secs: self
                .types
                .iter()
                .map(|(&t, d)| (t, d.num_seconds()))
                .collect(),
            state: match self.state {
                WorkspaceState::Active => SavedState::Active,
                WorkspaceState::Closed { at, purge_at } => SavedState::Closed { at, purge_at },
                WorkspaceState::Purged { at } => SavedState::Purged { at },
            },
            latest_seen: self.latest,
        };
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(&saved).expect("the saved workspace serializes")
    }

    /// A workspace from what [`save`](Workspace::save) wrote: a closed one
    /// keeps its purge time, and the latest time seen comes back, so a
    /// reopen stamped by a lagging clock after the restart is refused as
    /// it was before.
    ///
    /// # Errors
    ///
    /// [`RetentionError::State`] for text that is not a saved workspace of
    /// version 1 (unknown plan, period out of range);
    /// [`RetentionError::NotPositive`] or [`RetentionError::TooLong`] for
    /// a period or a `purge_at - at` out of range.
    pub fn restore(json: &str) -> Result<Workspace, RetentionError> {
        let saved: Saved = serde_json::from_str(json).map_err(|_| bad("not a saved workspace"))?;
        if saved.format != FORMAT {
            return Err(bad("not a saved workspace (format)"));
        }
        if saved.version != VERSION {
            return Err(bad("unsupported version"));
        }
        let plan = Plan::ALL
            .into_iter()
            .find(|&p| plan_name(p) == saved.plan)
            .ok_or(bad("unknown plan"))?;
        let mut w = Workspace::new(saved.tenant, plan);
        w.retention = saved
            .retention_secs
            .map(|s| secs("workspace retention", s))
            .transpose()?;
        for (t, s) in saved.type_retention_secs {
            w.types.insert(t, secs("workspace data type retention", s)?);
        }
        let state = match saved.state {
            SavedState::Active => WorkspaceState::Active,
            SavedState::Closed { at, purge_at } => WorkspaceState::Closed { at, purge_at },
            SavedState::Purged { at } => WorkspaceState::Purged { at },
        };
        let w = w.with_state(state)?.with_latest_seen(saved.latest_seen);
        Ok(w)
    }
}
