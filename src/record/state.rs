use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits, wire_enum};

wire_enum! {
    /// A monitor's health state. Closed: only 0–3 pass validation.
    pub struct HealthState;
    closed = true;
    /// 0: Uninitialized.
    UNINITIALIZED = 0 => "Uninitialized";
    /// 1: Success.
    SUCCESS = 1 => "Success";
    /// 2: Warning.
    WARNING = 2 => "Warning";
    /// 3: Error.
    ERROR = 3 => "Error";
}

/// A change of a monitor's health state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// `StateChangeEventId`.
    #[serde(rename = "StateChangeEventId", with = "super::uuid_text")]
    pub state_change_event_id: Uuid,
    /// `StateId`.
    #[serde(rename = "StateId", with = "super::uuid_text")]
    pub state_id: Uuid,
    /// `NewHealthState`.
    #[serde(rename = "NewHealthState")]
    pub new_health_state: HealthState,
    /// `OldHealthState`.
    #[serde(rename = "OldHealthState")]
    pub old_health_state: HealthState,
    /// `Context`: XML text, at most the field size limit (32 KiB).
    #[serde(rename = "Context")]
    pub context: String,
    /// `TimeGenerated`.
    #[serde(rename = "TimeGenerated", with = "super::rfc3339")]
    pub time_generated: DateTime<Utc>,
    /// `TimeAdded`.
    #[serde(rename = "TimeAdded", with = "super::rfc3339")]
    pub time_added: DateTime<Utc>,
    /// `StateId2`.
    #[serde(rename = "StateId2", with = "super::uuid_text")]
    pub state_id2: Uuid,
    /// `BaseManagedEntityId`.
    #[serde(rename = "BaseManagedEntityId", with = "super::uuid_text")]
    pub base_managed_entity_id: Uuid,
    /// `MonitorId`.
    #[serde(rename = "MonitorId", with = "super::uuid_text")]
    pub monitor_id: Uuid,
    /// `HealthState`: the monitor's current state.
    #[serde(rename = "HealthState")]
    pub health_state: HealthState,
    /// `LastModified`.
    #[serde(rename = "LastModified", with = "super::rfc3339")]
    pub last_modified: DateTime<Utc>,
    /// `LastGreenAlertGenerated`.
    #[serde(
        rename = "LastGreenAlertGenerated",
        default,
        with = "super::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_green_alert_generated: Option<DateTime<Utc>>,
    /// `DatabaseTimeModified`.
    #[serde(rename = "DatabaseTimeModified", with = "super::rfc3339")]
    pub database_time_modified: DateTime<Utc>,
}

impl State {
    /// Checks the record against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::UndefinedValue`] for a health state outside 0–3,
    /// [`RecordError::FieldTooLarge`] for a `Context` over the field limit,
    /// [`RecordError::TimeOutOfRange`] for a time outside 0000–9999.
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this record (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> StateRef<'_> {
        StateRef {
            state_change_event_id: self.state_change_event_id,
            state_id: self.state_id,
            new_health_state: self.new_health_state,
            old_health_state: self.old_health_state,
            context: Cow::Borrowed(&self.context),
            time_generated: self.time_generated,
            time_added: self.time_added,
            state_id2: self.state_id2,
            base_managed_entity_id: self.base_managed_entity_id,
            monitor_id: self.monitor_id,
            health_state: self.health_state,
            last_modified: self.last_modified,
            last_green_alert_generated: self.last_green_alert_generated,
            database_time_modified: self.database_time_modified,
        }
    }
}

pub use self::view::State as StateRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// A [`State`](crate::State) change borrowing its strings from the JSON text it was
    /// parsed from (owning only those that had escapes). Same fields, parsing
    /// rules, validation and errors as [`State`](crate::State).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct State<'a> {
        /// `StateChangeEventId`.
        #[serde(rename = "StateChangeEventId", with = "crate::record::uuid_text")]
        pub state_change_event_id: Uuid,
        /// `StateId`.
        #[serde(rename = "StateId", with = "crate::record::uuid_text")]
        pub state_id: Uuid,
        /// `NewHealthState`.
        #[serde(rename = "NewHealthState")]
        pub new_health_state: HealthState,
        /// `OldHealthState`.
        #[serde(rename = "OldHealthState")]
        pub old_health_state: HealthState,
        /// `Context`: XML text, at most the field size limit.
        #[serde(rename = "Context", borrow)]
        pub context: Cow<'a, str>,
        /// `TimeGenerated`.
        #[serde(rename = "TimeGenerated", with = "crate::record::rfc3339")]
        pub time_generated: DateTime<Utc>,
        /// `TimeAdded`.
        #[serde(rename = "TimeAdded", with = "crate::record::rfc3339")]
        pub time_added: DateTime<Utc>,
        /// `StateId2`.
        #[serde(rename = "StateId2", with = "crate::record::uuid_text")]
        pub state_id2: Uuid,
        /// `BaseManagedEntityId`.
        #[serde(rename = "BaseManagedEntityId", with = "crate::record::uuid_text")]
        pub base_managed_entity_id: Uuid,
        /// `MonitorId`.
        #[serde(rename = "MonitorId", with = "crate::record::uuid_text")]
        pub monitor_id: Uuid,
        /// `HealthState`.
        #[serde(rename = "HealthState")]
        pub health_state: HealthState,
        /// `LastModified`.
        #[serde(rename = "LastModified", with = "crate::record::rfc3339")]
        pub last_modified: DateTime<Utc>,
        /// `LastGreenAlertGenerated`.
        #[serde(
            rename = "LastGreenAlertGenerated",
            default,
            with = "crate::record::rfc3339::option"
        )]
        pub last_green_alert_generated: Option<DateTime<Utc>>,
        /// `DatabaseTimeModified`.
        #[serde(rename = "DatabaseTimeModified", with = "crate::record::rfc3339")]
        pub database_time_modified: DateTime<Utc>,
    }
}

impl StateRef<'_> {
    /// Checks the record against the schema's limits: the one implementation
    /// [`State::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`State::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::State,
            limits,
        };
        let s = self.new_health_state;
        c.defined("NewHealthState", s.0, s.is_valid())?;
        let s = self.old_health_state;
        c.defined("OldHealthState", s.0, s.is_valid())?;
        c.large("Context", &self.context)?;
        c.time("TimeGenerated", &self.time_generated)?;
        c.time("TimeAdded", &self.time_added)?;
        let s = self.health_state;
        c.defined("HealthState", s.0, s.is_valid())?;
        c.time("LastModified", &self.last_modified)?;
        c.opt_time(
            "LastGreenAlertGenerated",
            self.last_green_alert_generated.as_ref(),
        )?;
        c.time("DatabaseTimeModified", &self.database_time_modified)
    }

    /// The owned record, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> State {
        State {
            state_change_event_id: self.state_change_event_id,
            state_id: self.state_id,
            new_health_state: self.new_health_state,
            old_health_state: self.old_health_state,
            context: String::from(&*self.context),
            time_generated: self.time_generated,
            time_added: self.time_added,
            state_id2: self.state_id2,
            base_managed_entity_id: self.base_managed_entity_id,
            monitor_id: self.monitor_id,
            health_state: self.health_state,
            last_modified: self.last_modified,
            last_green_alert_generated: self.last_green_alert_generated,
            database_time_modified: self.database_time_modified,
        }
    }
}
