use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Check, DataType, NameProblem, RecordError, RecordLimits, json_len, truncate_for_error,
    wire_enum,
};

wire_enum! {
    /// An event's level (the Windows event channel level). Open: other
    /// numbers are kept as they are.
    pub struct ChannelLevel;
    closed = false;
    /// 1: Critical.
    CRITICAL = 1 => "Critical";
    /// 2: Error.
    ERROR = 2 => "Error";
    /// 3: Warning.
    WARNING = 3 => "Warning";
    /// 4: Information.
    INFORMATION = 4 => "Information";
    /// 5: Verbose.
    VERBOSE = 5 => "Verbose";
}

/// The custom fields of an [`Event`]: extra names mapped to JSON values,
/// written into the same JSON object as the fixed fields.
///
/// Names are kept in sorted order, so an event serializes the same way every
/// time. Any name can be inserted; [`Event::validate`] enforces the naming
/// rule: an ASCII letter first, then at most 44 more of `[A-Za-z0-9_]`, and no
/// name equal (ignoring ASCII case) to a fixed field. Parsing refuses a name
/// that appears twice.
///
/// ```
/// use opsdata::CustomFields;
/// let mut custom = CustomFields::new();
/// custom.insert("SiteName", "Contoso-West");
/// custom.insert("RetryCount", 3);
/// assert_eq!(custom.get("RetryCount"), Some(&serde_json::json!(3)));
/// assert_eq!(custom.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct CustomFields(BTreeMap<String, Value>);

impl CustomFields {
    /// The longest name allowed, in characters.
    pub const MAX_NAME_LEN: usize = 45;

    /// No custom fields.
    #[must_use]
    pub fn new() -> Self {
        CustomFields(BTreeMap::new())
    }

    /// Sets a field, returning the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of a field.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Removes a field, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    /// The number of custom fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks a name against the naming rule (without the fixed-field check).
    fn check_name(name: &str) -> Result<(), NameProblem> {
        let mut chars = name.chars();
        match chars.next() {
            None => return Err(NameProblem::Empty),
            Some(c) if !c.is_ascii_alphabetic() => return Err(NameProblem::BadStart),
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(NameProblem::BadCharacter);
        }
        // All ASCII from here on, so bytes are characters.
        if name.len() > Self::MAX_NAME_LEN {
            return Err(NameProblem::TooLong);
        }
        if Event::FIXED_FIELDS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name))
        {
            return Err(NameProblem::CollidesWithFixedField);
        }
        Ok(())
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for CustomFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        CustomFields(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for CustomFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = CustomFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of custom field names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CustomFields, A::Error> {
                let mut fields = BTreeMap::new();
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    if fields.contains_key(&name) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{}`",
                            truncate_for_error(&name)
                        )));
                    }
                    fields.insert(name, value);
                }
                Ok(CustomFields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// An event log entry, with any custom fields it was written with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `EventId`.
    #[serde(rename = "EventId", with = "super::uuid_text")]
    pub event_id: Uuid,
    /// `EventOriginalID`.
    #[serde(rename = "EventOriginalID", with = "super::uuid_text")]
    pub event_original_id: Uuid,
    /// `BaseManagedEntityInternalId`.
    #[serde(rename = "BaseManagedEntityInternalId")]
    pub base_managed_entity_internal_id: i32,
    /// `RuleId`: the rule that collected the event.
    #[serde(rename = "RuleId", with = "super::uuid_text")]
    pub rule_id: Uuid,
    /// `PublisherId`.
    #[serde(rename = "PublisherId", with = "super::uuid_text")]
    pub publisher_id: Uuid,
    /// `PublisherName`, at most 255 characters.
    #[serde(rename = "PublisherName")]
    pub publisher_name: String,
    /// `FullNumber`.
    #[serde(rename = "FullNumber")]
    pub full_number: i64,
    /// `Number`: the event number.
    #[serde(rename = "Number")]
    pub number: i32,
    /// `Category`.
    #[serde(rename = "Category")]
    pub category: i32,
    /// `ChannelLevel`.
    #[serde(rename = "ChannelLevel")]
    pub channel_level: ChannelLevel,
    /// `LoggingComputer`, at most 255 characters.
    #[serde(rename = "LoggingComputer")]
    pub logging_computer: String,
    /// `EventData`: XML text, at most the field size limit (32 KiB).
    #[serde(rename = "EventData")]
    pub event_data: String,
    /// `EventParameters`: the event's insertion strings. Their compact JSON
    /// text must fit in the field size limit.
    #[serde(rename = "EventParameters")]
    pub event_parameters: Vec<String>,
    /// `TimeGenerated`.
    #[serde(rename = "TimeGenerated", with = "super::rfc3339")]
    pub time_generated: DateTime<Utc>,
    /// `TimeAdded`.
    #[serde(rename = "TimeAdded", with = "super::rfc3339")]
    pub time_added: DateTime<Utc>,
    /// Custom fields, written into the same JSON object.
    #[serde(flatten)]
    pub custom: CustomFields,
}

impl Event {
    /// The JSON names of the fixed fields.
    pub const FIXED_FIELDS: [&'static str; 15] = [
        "EventId",
        "EventOriginalID",
        "BaseManagedEntityInternalId",
        "RuleId",
        "PublisherId",
        "PublisherName",
        "FullNumber",
        "Number",
        "Category",
        "ChannelLevel",
        "LoggingComputer",
        "EventData",
        "EventParameters",
        "TimeGenerated",
        "TimeAdded",
    ];

    /// Checks the event against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::TooLong`], [`RecordError::FieldTooLarge`] (also for a
    /// custom value), [`RecordError::TimeOutOfRange`],
    /// [`RecordError::TooManyFields`] or [`RecordError::CustomFieldName`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Event,
            limits,
        };
        c.text("PublisherName", &self.publisher_name, 255)?;
        c.text("LoggingComputer", &self.logging_computer, 255)?;
        c.large("EventData", &self.event_data)?;
        // Measured as JSON text: escaping can make it up to six times the
        // strings' own bytes, so no shortcut on the raw lengths is sound.
        c.size(
            Cow::Borrowed("EventParameters"),
            json_len(&self.event_parameters),
        )?;
        c.time("TimeGenerated", &self.time_generated)?;
        c.time("TimeAdded", &self.time_added)?;
        let fields = Self::FIXED_FIELDS.len() + self.custom.len();
        if fields > limits.max_event_fields() {
            return Err(RecordError::TooManyFields {
                data_type: DataType::Event,
                fields,
                max: limits.max_event_fields(),
            });
        }
        for (name, value) in self.custom.iter() {
            if let Err(problem) = CustomFields::check_name(name) {
                return Err(RecordError::CustomFieldName {
                    data_type: DataType::Event,
                    name: truncate_for_error(name),
                    problem,
                });
            }
            let bytes = match value {
                Value::String(s) => s.len(),
                other => json_len(other),
            };
            c.size(Cow::Owned(name.to_owned()), bytes)?;
        }
        Ok(())
    }
}
