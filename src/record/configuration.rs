use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits};

/// A change to a configuration property of a managed entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    /// `CustomerID`.
    #[serde(rename = "CustomerID", with = "super::uuid_text")]
    pub customer_id: Uuid,
    /// `AgentID`: the agent that collected the change.
    #[serde(rename = "AgentID", with = "super::uuid_text")]
    pub agent_id: Uuid,
    /// `EntityID`: the entity whose property changed.
    #[serde(rename = "EntityID", with = "super::uuid_text")]
    pub entity_id: Uuid,
    /// `ManagedTypeID`.
    #[serde(rename = "ManagedTypeID", with = "super::uuid_text")]
    pub managed_type_id: Uuid,
    /// `ManagedTypePropertyID`.
    #[serde(rename = "ManagedTypePropertyID", with = "super::uuid_text")]
    pub managed_type_property_id: Uuid,
    /// `CurrentValue`: the new value, at most the field size limit (32 KiB).
    #[serde(rename = "CurrentValue")]
    pub current_value: String,
    /// `ChangeDate`.
    #[serde(rename = "ChangeDate", with = "super::rfc3339")]
    pub change_date: DateTime<Utc>,
}

impl Configuration {
    /// Checks the record against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::FieldTooLarge`] for a `CurrentValue` over the field limit,
    /// [`RecordError::TimeOutOfRange`] for a `ChangeDate` outside 0000–9999.
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Configuration,
            limits,
        };
        c.large("CurrentValue", &self.current_value)?;
        c.time("ChangeDate", &self.change_date)
    }
}
