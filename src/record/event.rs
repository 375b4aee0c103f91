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
        EventChecks {
            publisher_name: &self.publisher_name,
            logging_computer: &self.logging_computer,
            event_data: &self.event_data,
            event_parameters: &self.event_parameters,
            time_generated: &self.time_generated,
            time_added: &self.time_added,
            custom: &self.custom,
        }
        .run(limits)
    }
}

/// The fields of an [`Event`] or an [`EventRef`] that validation reads:
/// the one implementation of their validation. Generic over the parameter
/// list, which is measured as JSON text either way.
struct EventChecks<'r, P: Serialize + ?Sized> {
    publisher_name: &'r str,
    logging_computer: &'r str,
    event_data: &'r str,
    event_parameters: &'r P,
    time_generated: &'r DateTime<Utc>,
    time_added: &'r DateTime<Utc>,
    custom: &'r CustomFields,
}

impl<P: Serialize + ?Sized> EventChecks<'_, P> {
    fn run(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Event,
            limits,
        };
        c.text("PublisherName", self.publisher_name, 255)?;
        c.text("LoggingComputer", self.logging_computer, 255)?;
        c.large("EventData", self.event_data)?;
        // Measured as JSON text: escaping can make it up to six times the
        // strings' own bytes, so no shortcut on the raw lengths is sound.
        c.size(
            Cow::Borrowed("EventParameters"),
            json_len(self.event_parameters),
        )?;
        c.time("TimeGenerated", self.time_generated)?;
        c.time("TimeAdded", self.time_added)?;
        let fields = Event::FIXED_FIELDS.len() + self.custom.len();
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

pub use self::view::Event as EventRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// An [`Event`](crate::Event) borrowing its strings from the JSON text it was parsed from
    /// (owning only those that had escapes). Same fields, parsing rules,
    /// validation and errors as [`Event`](crate::Event). The parameter list is a vector of
    /// borrowed strings, and custom fields, rare, are parsed into an owned
    /// [`CustomFields`] (a record without any allocates nothing for them).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    pub struct Event<'a> {
        /// `EventId`.
        #[serde(rename = "EventId", with = "crate::record::uuid_text")]
        pub event_id: Uuid,
        /// `EventOriginalID`.
        #[serde(rename = "EventOriginalID", with = "crate::record::uuid_text")]
        pub event_original_id: Uuid,
        /// `BaseManagedEntityInternalId`.
        #[serde(rename = "BaseManagedEntityInternalId")]
        pub base_managed_entity_internal_id: i32,
        /// `RuleId`.
        #[serde(rename = "RuleId", with = "crate::record::uuid_text")]
        pub rule_id: Uuid,
        /// `PublisherId`.
        #[serde(rename = "PublisherId", with = "crate::record::uuid_text")]
        pub publisher_id: Uuid,
        /// `PublisherName`, at most 255 characters.
        #[serde(rename = "PublisherName", borrow)]
        pub publisher_name: Cow<'a, str>,
        /// `FullNumber`.
        #[serde(rename = "FullNumber")]
        pub full_number: i64,
        /// `Number`.
        #[serde(rename = "Number")]
        pub number: i32,
        /// `Category`.
        #[serde(rename = "Category")]
        pub category: i32,
        /// `ChannelLevel`.
        #[serde(rename = "ChannelLevel")]
        pub channel_level: ChannelLevel,
        /// `LoggingComputer`, at most 255 characters.
        #[serde(rename = "LoggingComputer", borrow)]
        pub logging_computer: Cow<'a, str>,
        /// `EventData`: XML text, at most the field size limit.
        #[serde(rename = "EventData", borrow)]
        pub event_data: Cow<'a, str>,
        /// `EventParameters`: their compact JSON text must fit in the field
        /// size limit.
        #[serde(
            rename = "EventParameters",
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::list"
        )]
        pub event_parameters: Vec<Cow<'a, str>>,
        /// `TimeGenerated`.
        #[serde(rename = "TimeGenerated", with = "crate::record::rfc3339")]
        pub time_generated: DateTime<Utc>,
        /// `TimeAdded`.
        #[serde(rename = "TimeAdded", with = "crate::record::rfc3339")]
        pub time_added: DateTime<Utc>,
        /// Custom fields.
        #[serde(flatten)]
        pub custom: Cow<'a, CustomFields>,
    }
}

impl EventRef<'_> {
    /// Checks the event against the schema's limits: the implementation
    /// [`Event::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Event::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        EventChecks {
            publisher_name: &self.publisher_name,
            logging_computer: &self.logging_computer,
            event_data: &self.event_data,
            event_parameters: self.event_parameters.as_slice(),
            time_generated: &self.time_generated,
            time_added: &self.time_added,
            custom: &self.custom,
        }
        .run(limits)
    }

    /// The owned event, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Event {
        Event {
            event_id: self.event_id,
            event_original_id: self.event_original_id,
            base_managed_entity_internal_id: self.base_managed_entity_internal_id,
            rule_id: self.rule_id,
            publisher_id: self.publisher_id,
            publisher_name: String::from(&*self.publisher_name),
            full_number: self.full_number,
            number: self.number,
            category: self.category,
            channel_level: self.channel_level,
            logging_computer: String::from(&*self.logging_computer),
            event_data: String::from(&*self.event_data),
            event_parameters: self
                .event_parameters
                .iter()
                .map(|p| String::from(&**p))
                .collect(),
            time_generated: self.time_generated,
            time_added: self.time_added,
            custom: self.custom.clone().into_owned(),
        }
    }
}
