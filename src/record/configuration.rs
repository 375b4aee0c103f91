use std::borrow::Cow;

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
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this record (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> ConfigurationRef<'_> {
        ConfigurationRef {
            customer_id: self.customer_id,
            agent_id: self.agent_id,
            entity_id: self.entity_id,
            managed_type_id: self.managed_type_id,
            managed_type_property_id: self.managed_type_property_id,
            current_value: Cow::Borrowed(&self.current_value),
            change_date: self.change_date,
        }
    }
}

pub use self::view::Configuration as ConfigurationRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// A [`Configuration`](crate::Configuration) change borrowing its strings from the JSON text it
    /// was parsed from (owning only those that had escapes). Same fields,
    /// parsing rules, validation and errors as [`Configuration`](crate::Configuration).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Configuration<'a> {
        /// `CustomerID`.
        #[serde(rename = "CustomerID", with = "crate::record::uuid_text")]
        pub customer_id: Uuid,
        /// `AgentID`.
        #[serde(rename = "AgentID", with = "crate::record::uuid_text")]
        pub agent_id: Uuid,
        /// `EntityID`.
        #[serde(rename = "EntityID", with = "crate::record::uuid_text")]
        pub entity_id: Uuid,
        /// `ManagedTypeID`.
        #[serde(rename = "ManagedTypeID", with = "crate::record::uuid_text")]
        pub managed_type_id: Uuid,
        /// `ManagedTypePropertyID`.
        #[serde(rename = "ManagedTypePropertyID", with = "crate::record::uuid_text")]
        pub managed_type_property_id: Uuid,
        /// `CurrentValue`, at most the field size limit.
        #[serde(rename = "CurrentValue", borrow)]
        pub current_value: Cow<'a, str>,
        /// `ChangeDate`.
        #[serde(rename = "ChangeDate", with = "crate::record::rfc3339")]
        pub change_date: DateTime<Utc>,
    }
}

impl ConfigurationRef<'_> {
    /// Checks the record against the schema's limits: the one implementation
    /// [`Configuration::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Configuration::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Configuration,
            limits,
        };
        c.large("CurrentValue", &self.current_value)?;
        c.time("ChangeDate", &self.change_date)
    }

    /// The owned record, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Configuration {
        Configuration {
            customer_id: self.customer_id,
            agent_id: self.agent_id,
            entity_id: self.entity_id,
            managed_type_id: self.managed_type_id,
            managed_type_property_id: self.managed_type_property_id,
            current_value: String::from(&*self.current_value),
            change_date: self.change_date,
        }
    }
}
