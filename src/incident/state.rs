//! Saving and restoring a [`LossLedger`] across a restart (`docs/STATE.md`,
//! "Loss ledger"): the promise that every loss is notified within 24 hours
//! of its incident's first loss must survive the host's restart.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Incident, IncidentError, IncidentId, IncidentStage, LedgerPolicy, LossLedger, LossReason,
    LossWindow, MAX_NOTICE_DEADLINE, MAX_POST_MORTEM_BYTES, Totals, type_index,
};
use crate::delivery::DropReason;
use crate::record::DataType;
use crate::tenant::TenantId;

/// The `format` field of a saved ledger.
const FORMAT: &str = "opsdata.loss_ledger";
/// The version written and read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    format: String,
    version: u32,
    latest: Option<DateTime<Utc>>,
    next_id: u64,
    incidents: Vec<SavedIncident>,
    /// Closed incidents, oldest closed first.
    closed: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedIncident {
    id: u64,
    tenant: TenantId,
    first_loss: DateTime<Utc>,
    last_loss: DateTime<Utc>,
    deadline: DateTime<Utc>,
    affected: Option<SavedWindow>,
    per_type: Vec<SavedType>,
    reasons: Vec<String>,
    notified_at: Option<DateTime<Utc>>,
    overdue: bool,
    assessed: Option<DateTime<Utc>>,
    diagnosed: Option<DateTime<Utc>>,
    stabilized: Option<DateTime<Utc>>,
    closed: Option<DateTime<Utc>>,
    post_mortem: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedType {
    data_type: DataType,
    losses: u64,
    records: u64,
    bytes: u64,
}

fn reason_name(r: LossReason) -> &'static str {
    match r {
        LossReason::Delivery(DropReason::QueueFull) => "delivery.queue_full",
        LossReason::Delivery(DropReason::Rejected) => "delivery.rejected",
        LossReason::Delivery(DropReason::Expired) => "delivery.expired",
        LossReason::Delivery(DropReason::Corrupt) => "delivery.corrupt",
        LossReason::Ingest => "ingest",
        LossReason::Storage => "storage",
    }
}

const REASONS: [LossReason; 6] = [
    LossReason::Delivery(DropReason::QueueFull),
    LossReason::Delivery(DropReason::Rejected),
    LossReason::Delivery(DropReason::Expired),
    LossReason::Delivery(DropReason::Corrupt),
    LossReason::Ingest,
    LossReason::Storage,
];

fn bad(reason: &'static str) -> IncidentError {
    IncidentError::State { reason }
}

impl LossLedger {
    /// The ledger's state as JSON (`docs/STATE.md`, "Loss ledger"), for
    /// the host to store durably and hand to
    /// [`restore`](LossLedger::restore) after a restart: every incident
    /// held with its deadline, the closed ones' order, the next id and the
    /// latest time seen. The policy is not saved: it is the host's
    /// configuration. Save after every call that changed the ledger (or at
    /// least after every loss recorded), before acknowledging what caused
    /// it.
    #[must_use]
    pub fn save(&self) -> String {
        let incidents = self
            .incidents
            .values()
            .map(|i| SavedIncident {
                id: i.id.0,
                tenant: i.tenant,
                first_loss: i.first_loss,
                last_loss: i.last_loss,
                deadline: i.deadline,
                affected: i.affected.map(|w| SavedWindow {
                    start: w.start,
                    end: w.end,
                }),
                per_type: i
                    .per_type()
                    .into_iter()
                    .map(|t| SavedType {
                        data_type: t.data_type,
                        losses: t.losses,
                        records: t.records,
                        bytes: t.bytes,
                    })
                    .collect(),
                reasons: i
                    .reasons
                    .iter()
                    .map(|&r| reason_name(r).to_owned())
                    .collect(),
                notified_at: i.notified_at,
                overdue: i.overdue,
                assessed: i.entered(IncidentStage::Assessed),
                diagnosed: i.entered(IncidentStage::Diagnosed),
                stabilized: i.entered(IncidentStage::Stabilized),
                closed: i.entered(IncidentStage::Closed),
                post_mortem: i.post_mortem.clone(),
            })
            .collect();
        let saved = Saved {
            format: FORMAT.to_owned(),
            version: VERSION,
            latest: self.latest,
            next_id: self.next_id,
            incidents,
            closed: self.closed.iter().map(|id| id.0).collect(),
        };
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(&saved).expect("the saved ledger serializes")
    }

    /// A ledger from what [`save`](LossLedger::save) wrote, under `policy`
    /// (which may differ from the one in force when it was saved: each
    /// incident keeps the deadline it was given, and an open incident's
    /// notice is due at the earlier of that deadline and its last loss plus
    /// `policy`'s grouping delay). Every loss not yet notified keeps its
    /// deadline, so a host that restores and polls on time still hands out
    /// every notice within 24 hours of its incident's first loss.
    ///
    /// # Errors
    ///
    /// [`IncidentError::State`] for text that is not a saved ledger of
    /// version 1 or breaks one of its rules (`docs/STATE.md`): ids unique
    /// and below `next_id`, at most one open incident per tenant, a
    /// deadline at most 24 hours after the first loss, stages entered in
    /// order, a closed incident notified and with a post-mortem of at most
    /// [`MAX_POST_MORTEM_BYTES`], `closed` naming exactly the closed ones.
    pub fn restore(policy: LedgerPolicy, json: &str) -> Result<LossLedger, IncidentError> {
        let saved: Saved = serde_json::from_str(json).map_err(|_| bad("not a saved ledger"))?;
        if saved.format != FORMAT {
            return Err(bad("not a saved loss ledger (format)"));
        }
        if saved.version != VERSION {
            return Err(bad("unsupported version"));
        }
        let mut ledger = LossLedger::new(policy);
        ledger.latest = saved.latest;
        ledger.next_id = saved.next_id;
        for s in saved.incidents {
            let incident = incident(s, saved.next_id)?;
            let id = incident.id;
            if incident.notified_at.is_none() {
                if ledger.open.insert(incident.tenant, id).is_some() {
                    return Err(bad("two open incidents for one tenant"));
                }
                ledger.due.insert((ledger.due_at(&incident), id));
            } else if incident.post_mortem.is_none() {
                ledger.notified.insert(id);
            }
            if ledger.incidents.insert(id, incident).is_some() {
                return Err(bad("an incident id twice"));
            }
        }
        let mut closed = BTreeSet::new();
        for id in saved.closed {
            let id = IncidentId(id);
            let is_closed = ledger
                .incidents
                .get(&id)
                .is_some_and(|i| i.post_mortem.is_some());
            if !is_closed || !closed.insert(id) {
                return Err(bad("closed lists an incident that is not closed, or twice"));
            }
            ledger.closed.push_back(id);
        }
        let all_closed = ledger
            .incidents
            .values()
            .filter(|i| i.post_mortem.is_some())
            .count();
        if all_closed != closed.len() {
            return Err(bad("a closed incident missing from closed"));
        }
        Ok(ledger)
    }
}

/// One incident, checked.
fn incident(s: SavedIncident, next_id: u64) -> Result<Incident, IncidentError> {
    if s.id == 0 || s.id >= next_id {
        return Err(bad("an incident id not below next_id"));
    }
    if s.last_loss < s.first_loss {
        return Err(bad("last_loss before first_loss"));
    }
    let latest_deadline = s
        .first_loss
        .checked_add_signed(MAX_NOTICE_DEADLINE)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if s.deadline < s.first_loss || s.deadline > latest_deadline {
        return Err(bad("deadline not within 24 hours of the first loss"));
    }
    let affected = match s.affected {
        Some(w) => Some(
            LossWindow::new(w.start, w.end).map_err(|_| bad("a window ends before it starts"))?,
        ),
        None => None,
    };
    let mut totals = [Totals::default(); 6];
    let mut types = BTreeSet::new();
    for t in s.per_type {
        if !types.insert(t.data_type) || t.losses == 0 {
            return Err(bad("per_type repeats a type or has zero losses"));
        }
        totals[type_index(t.data_type)] = Totals {
            losses: t.losses,
            records: t.records,
            bytes: t.bytes,
        };
    }
    if types.is_empty() {
        return Err(bad("an incident without losses"));
    }
    let mut reasons = Vec::new();
    for name in &s.reasons {
        let r = REASONS
            .into_iter()
            .find(|&r| reason_name(r) == name)
            .ok_or(bad("unknown reason"))?;
        if reasons.contains(&r) {
            return Err(bad("a reason twice"));
        }
        reasons.push(r);
    }
    if reasons.is_empty() {
        return Err(bad("an incident without a reason"));
    }
    let entered = [
        Some(s.first_loss),
        s.assessed,
        s.diagnosed,
        s.stabilized,
        s.closed,
    ];
    // Stages are entered in order: no gap, and never earlier than the last.
    let reached = entered.iter().take_while(|e| e.is_some()).count();
    if entered[reached..].iter().any(Option::is_some)
        || entered[..reached].windows(2).any(|w| w[1] < w[0])
    {
        return Err(bad("stages not entered in order"));
    }
    match (&s.post_mortem, s.closed) {
        (Some(pm), Some(_)) if s.notified_at.is_some() => {
            if pm.trim().is_empty() || pm.len() > MAX_POST_MORTEM_BYTES {
                return Err(bad("a post-mortem empty or too long"));
            }
        }
        (None, None) => {}
        _ => return Err(bad("closed without a notice or a post-mortem")),
    }
    if s.notified_at.is_none() && s.overdue {
        return Err(bad("overdue before its notice"));
    }
    Ok(Incident {
        id: IncidentId(s.id),
        tenant: s.tenant,
        first_loss: s.first_loss,
        last_loss: s.last_loss,
        deadline: s.deadline,
        affected,
        totals,
        reasons,
        notified_at: s.notified_at,
        overdue: s.overdue,
        entered,
        post_mortem: s.post_mortem,
    })
}
