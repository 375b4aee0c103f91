//! The six record schemas, their wire numbers and their validation.
//!
//! Every record type is a plain struct with public fields whose JSON names are
//! the source schema's names with spaces removed (`AlertName`, `ProblemID`).
//! Deserializing is strict about shape (wrong types, duplicate keys, unknown
//! fields and out-of-range numbers are errors); [`Record::validate`] then
//! checks the limits the schema puts on values (string lengths, field sizes,
//! ranges, time order).
//!
//! Each type has a borrowed twin (`PerformanceRef<'a>`, ..., and
//! [`RecordRef`]) that parses the same JSON by the same rules into strings
//! borrowed from the text, for readers that validate or forward records
//! without keeping them; validation is written once, on the borrowed types.

mod alert;
mod borrowed;
mod configuration;
mod event;
mod metadata;
mod performance;
mod rfc3339;
mod state;
mod uuid_text;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

pub use alert::{Alert, AlertPriority, AlertRef, AlertSeverity, ResolutionState};
pub use borrowed::RecordRef;
pub use configuration::{Configuration, ConfigurationRef};
pub use event::{ChannelLevel, CustomFields, Event, EventRef};
pub use metadata::{Metadata, MetadataRef};
pub use performance::{Performance, PerformanceRef};
pub use state::{HealthState, State, StateRef};

/// The kind of a record, with its number on the wire.
///
/// The six kinds and their numbers are part of the frame format (a frame
/// header carries the number), so this enum is deliberately exhaustive:
/// adding a kind is a new format version, not a minor release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum DataType {
    /// Alerts raised by monitors and rules. Wire number 1.
    Alert = 1,
    /// Configuration changes. Wire number 2.
    Configuration = 2,
    /// Event log entries. Wire number 3.
    Event = 3,
    /// Inventory metadata about a managed entity. Wire number 4.
    Metadata = 4,
    /// Performance counter samples. Wire number 5.
    Performance = 5,
    /// Health state changes. Wire number 6.
    State = 6,
}

impl DataType {
    /// All six data types, in wire-number order.
    pub const ALL: [DataType; 6] = [
        DataType::Alert,
        DataType::Configuration,
        DataType::Event,
        DataType::Metadata,
        DataType::Performance,
        DataType::State,
    ];

    /// The number that stands for this type on the wire (1–6).
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The data type with wire number `n`, or `None` for a number outside 1–6.
    #[must_use]
    pub const fn from_u8(n: u8) -> Option<DataType> {
        Some(match n {
            1 => DataType::Alert,
            2 => DataType::Configuration,
            3 => DataType::Event,
            4 => DataType::Metadata,
            5 => DataType::Performance,
            6 => DataType::State,
            _ => return None,
        })
    }

    /// The type's name as it is written in JSON and on the command line
    /// (`"Alert"`, `"Performance"`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DataType::Alert => "Alert",
            DataType::Configuration => "Configuration",
            DataType::Event => "Event",
            DataType::Metadata => "Metadata",
            DataType::Performance => "Performance",
            DataType::State => "State",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataType {
    type Err = RecordError;

    /// Parses a type name, ignoring ASCII case (`"performance"`, `"Alert"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| RecordError::UnknownDataType {
                input: truncate_for_error(s),
            })
    }
}

impl Serialize for DataType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One record of any of the six types.
///
/// Serializes as the inner record's JSON object (no type tag: the frame that
/// carries a record names its type). Parse one with [`Record::from_json`];
/// build one from any of the six structs with `Record::from`.
///
/// The four larger types are boxed so that a `Record` is no bigger than a
/// [`Performance`] sample, the type agents send by far the most of: a batch
/// of samples costs about 130 bytes a record instead of 450.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An [`Alert`].
    Alert(Box<Alert>),
    /// A [`Configuration`] change.
    Configuration(Configuration),
    /// An [`Event`].
    Event(Box<Event>),
    /// A [`Metadata`] inventory record.
    Metadata(Box<Metadata>),
    /// A [`Performance`] sample.
    Performance(Performance),
    /// A [`State`] change.
    State(Box<State>),
}

impl Record {
    /// The record's data type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        match self {
            Record::Alert(_) => DataType::Alert,
            Record::Configuration(_) => DataType::Configuration,
            Record::Event(_) => DataType::Event,
            Record::Metadata(_) => DataType::Metadata,
            Record::Performance(_) => DataType::Performance,
            Record::State(_) => DataType::State,
        }
    }

    /// Checks the record against the schema's limits.
    ///
    /// # Errors
    ///
    /// The first violation found, as a [`RecordError`] naming
    /// the record type and the field: [`RecordError::TooLong`],
    /// [`RecordError::FieldTooLarge`], [`RecordError::NonFinite`],
    /// [`RecordError::Negative`], [`RecordError::TimeOrder`],
    /// [`RecordError::TimeOutOfRange`],
    /// [`RecordError::OutOfRange`], [`RecordError::UndefinedValue`],
    /// [`RecordError::CustomFieldName`] or [`RecordError::TooManyFields`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        match self {
            Record::Alert(r) => r.validate(limits),
            Record::Configuration(r) => r.validate(limits),
            Record::Event(r) => r.validate(limits),
            Record::Metadata(r) => r.validate(limits),
            Record::Performance(r) => r.validate(limits),
            Record::State(r) => r.validate(limits),
        }
    }

    /// Parses one JSON object as a record of `data_type`.
    ///
    /// Parsing is strict: wrong JSON types, numbers out of their field's range,
    /// duplicate keys, unknown keys (except on [`Event`], where they are
    /// custom fields), missing required fields, trailing data and more than
    /// 127 nested arrays and objects (the record object counts as the first)
    /// are all errors. Parsing does not validate the
    /// values; call [`Record::validate`] for that.
    ///
    /// # Errors
    ///
    /// [`RecordError::Json`] with the data type and serde_json's description.
    pub fn from_json(data_type: DataType, json: &[u8]) -> Result<Record, RecordError> {
        fn parse<'a, T: Deserialize<'a>>(
            data_type: DataType,
            json: &'a [u8],
        ) -> Result<T, RecordError> {
            serde_json::from_slice(json).map_err(|source| RecordError::Json { data_type, source })
        }
        Ok(match data_type {
            DataType::Alert => Record::Alert(parse(data_type, json)?),
            DataType::Configuration => Record::Configuration(parse(data_type, json)?),
            DataType::Event => Record::Event(parse(data_type, json)?),
            DataType::Metadata => Record::Metadata(parse(data_type, json)?),
            DataType::Performance => Record::Performance(parse(data_type, json)?),
            DataType::State => Record::State(parse(data_type, json)?),
        })
    }

    /// Appends the record's compact JSON object to `out` (no newline).
    ///
    /// Serialization itself cannot fail for these types, but a non-finite
    /// [`Performance::sample_value`] would be written as `null` and then fail
    /// to parse back: validate records before writing them.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every field type here serializes
        // infallibly (no maps with non-string keys, no failing Serialize impls).
        serde_json::to_writer(out, self).expect("records serialize infallibly into a Vec");
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Alert(r) => r.serialize(serializer),
            Record::Configuration(r) => r.serialize(serializer),
            Record::Event(r) => r.serialize(serializer),
            Record::Metadata(r) => r.serialize(serializer),
            Record::Performance(r) => r.serialize(serializer),
            Record::State(r) => r.serialize(serializer),
        }
    }
}

macro_rules! record_from {
    ($($ty:ident => $wrap:expr),*) => {$(
        impl From<$ty> for Record {
            fn from(r: $ty) -> Record {
                Record::$ty($wrap(r))
            }
        }
    )*};
}
record_from!(
    Alert => Box::new,
    Configuration => std::convert::identity,
    Event => Box::new,
    Metadata => Box::new,
    Performance => std::convert::identity,
    State => Box::new
);

/// The limits [`Record::validate`] enforces beyond the schema's fixed string
/// lengths.
///
/// Built with [`RecordLimits::default`] and adjusted with the `with_*`
/// methods, which refuse nonsense values.
///
/// ```
/// use opsdata::RecordLimits;
/// let limits = RecordLimits::default().with_max_field_bytes(16 * 1024)?;
/// assert_eq!(limits.max_field_bytes(), 16 * 1024);
/// assert!(RecordLimits::default().with_max_field_bytes(0).is_err());
/// # Ok::<(), opsdata::RecordError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    max_field_bytes: usize,
    max_event_fields: usize,
}

impl RecordLimits {
    /// Default size limit of one field value: 32 KiB, the Data Collector
    /// API's limit per field.
    pub const DEFAULT_MAX_FIELD_BYTES: usize = 32 * 1024;
    /// The largest `max_field_bytes` accepted: 1 MiB.
    pub const MAX_FIELD_BYTES_CEILING: usize = 1024 * 1024;
    /// Default limit on the fields of one [`Event`], fixed and custom
    /// together: 500, the Data Collector API's column limit.
    pub const DEFAULT_MAX_EVENT_FIELDS: usize = 500;
    /// The largest `max_event_fields` accepted.
    pub const MAX_EVENT_FIELDS_CEILING: usize = 10_000;

    /// The size limit of one field value, in bytes.
    #[must_use]
    pub fn max_field_bytes(&self) -> usize {
        self.max_field_bytes
    }

    /// The limit on the number of fields of an [`Event`], fixed fields
    /// included.
    #[must_use]
    pub fn max_event_fields(&self) -> usize {
        self.max_event_fields
    }

    /// Sets the size limit of one field value, in bytes.
    ///
    /// # Errors
    ///
    /// [`RecordError::InvalidLimit`] unless `1 <= bytes <= MAX_FIELD_BYTES_CEILING`.
    pub fn with_max_field_bytes(mut self, bytes: usize) -> Result<Self, RecordError> {
        if bytes == 0 || bytes > Self::MAX_FIELD_BYTES_CEILING {
            return Err(RecordError::InvalidLimit {
                setting: "max_field_bytes",
                value: bytes,
            });
        }
        self.max_field_bytes = bytes;
        Ok(self)
    }

    /// Sets the limit on the fields of one [`Event`], fixed and custom
    /// together.
    ///
    /// # Errors
    ///
    /// [`RecordError::InvalidLimit`] if `fields` is smaller than the number of
    /// fixed fields ([`Event::FIXED_FIELDS`]) or larger than
    /// `MAX_EVENT_FIELDS_CEILING`.
    pub fn with_max_event_fields(mut self, fields: usize) -> Result<Self, RecordError> {
        if fields < Event::FIXED_FIELDS.len() || fields > Self::MAX_EVENT_FIELDS_CEILING {
            return Err(RecordError::InvalidLimit {
                setting: "max_event_fields",
                value: fields,
            });
        }
        self.max_event_fields = fields;
        Ok(self)
    }
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits {
            max_field_bytes: Self::DEFAULT_MAX_FIELD_BYTES,
            max_event_fields: Self::DEFAULT_MAX_EVENT_FIELDS,
        }
    }
}

/// Why a custom field name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name does not start with an ASCII letter.
    BadStart,
    /// The name has a character outside `[A-Za-z0-9_]`.
    BadCharacter,
    /// The name is longer than [`CustomFields::MAX_NAME_LEN`] characters.
    TooLong,
    /// The name equals (ignoring ASCII case) one of the fixed fields.
    CollidesWithFixedField,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "is empty",
            NameProblem::BadStart => "does not start with a letter",
            NameProblem::BadCharacter => "has a character outside [A-Za-z0-9_]",
            NameProblem::TooLong => "is longer than 45 characters",
            NameProblem::CollidesWithFixedField => "collides with a fixed field",
        })
    }
}

/// Errors of the record layer: parsing, validation and settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A string field has more characters than the schema allows.
    #[error("{data_type} field {field}: {chars} characters, over the maximum of {max}")]
    TooLong {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
        /// Its length in characters (Unicode scalar values).
        chars: usize,
        /// The schema's maximum.
        max: usize,
    },
    /// A field value is larger than [`RecordLimits::max_field_bytes`].
    #[error("{data_type} field {field}: {bytes} bytes, over the limit of {max}")]
    FieldTooLarge {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name (for a custom field, its name, cut to 64 characters).
        field: Cow<'static, str>,
        /// Its size in bytes: UTF-8 length for a string, length of the compact
        /// JSON text for a list or a custom value.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A number that must be finite is NaN or infinite.
    #[error("{data_type} field {field}: value is not finite")]
    NonFinite {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
    },
    /// A count that must not be negative is.
    #[error("{data_type} field {field}: {value} is negative")]
    Negative {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A time is earlier than the time it must follow.
    #[error("{data_type} field {field} is earlier than {earlier_than}")]
    TimeOrder {
        /// The record's type.
        data_type: DataType,
        /// The field that is too early.
        field: &'static str,
        /// The field it must not precede.
        earlier_than: &'static str,
    },
    /// A time outside the years 0000–9999, which RFC 3339 cannot write.
    #[error("{data_type} field {field}: {value} is outside the years 0000-9999")]
    TimeOutOfRange {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
        /// The time found.
        value: DateTime<Utc>,
    },
    /// A number is outside its field's range.
    #[error("{data_type} field {field}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
        /// The value found.
        value: i64,
        /// The smallest value allowed.
        min: i64,
        /// The largest value allowed.
        max: i64,
    },
    /// A closed enumeration holds a number it does not define.
    #[error("{data_type} field {field}: {value} is not a defined value")]
    UndefinedValue {
        /// The record's type.
        data_type: DataType,
        /// The field's JSON name.
        field: &'static str,
        /// The value found.
        value: u8,
    },
    /// A custom field's name breaks the naming rule.
    #[error("{data_type} custom field {name:?} {problem}")]
    CustomFieldName {
        /// The record's type.
        data_type: DataType,
        /// The name, cut to 64 characters.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// A record has more fields than [`RecordLimits::max_event_fields`].
    #[error("{data_type} record: {fields} fields, over the limit of {max}")]
    TooManyFields {
        /// The record's type.
        data_type: DataType,
        /// Fixed plus custom fields.
        fields: usize,
        /// The limit.
        max: usize,
    },
    /// The JSON text is not a valid record of the type.
    #[error("{data_type} record: {source}")]
    Json {
        /// The type the text was parsed as.
        data_type: DataType,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// A data type name that is not one of the six.
    #[error("unknown data type {input:?}")]
    UnknownDataType {
        /// The input, cut to 64 characters.
        input: String,
    },
    /// A [`RecordLimits`] setting outside its allowed range.
    #[error("record limit {setting} = {value} is outside its allowed range")]
    InvalidLimit {
        /// The setting's name.
        setting: &'static str,
        /// The value refused.
        value: usize,
    },
}

/// Cuts attacker-controlled text kept in an error to a readable size.
pub(crate) fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_owned(),
    }
}

/// Field checks shared by the record types.
pub(crate) struct Check<'a> {
    pub(crate) data_type: DataType,
    pub(crate) limits: &'a RecordLimits,
}

impl Check<'_> {
    /// A string of at most `max_chars` characters (and at most the field size
    /// limit in bytes).
    pub(crate) fn text(
        &self,
        field: &'static str,
        value: &str,
        max_chars: usize,
    ) -> Result<(), RecordError> {
        self.large(field, value)?;
        // A string of n bytes has at most n characters: skip the count then.
        if value.len() > max_chars {
            let chars = value.chars().count();
            if chars > max_chars {
                return Err(RecordError::TooLong {
                    data_type: self.data_type,
                    field,
                    chars,
                    max: max_chars,
                });
            }
        }
        Ok(())
    }

    /// An optional [`Check::text`].
    pub(crate) fn opt_text(
        &self,
        field: &'static str,
        value: Option<&str>,
        max_chars: usize,
    ) -> Result<(), RecordError> {
        value.map_or(Ok(()), |v| self.text(field, v, max_chars))
    }

    /// A string bounded only by the field size limit.
    pub(crate) fn large(&self, field: &'static str, value: &str) -> Result<(), RecordError> {
        self.size(Cow::Borrowed(field), value.len())
    }

    /// A value of `bytes` bytes against the field size limit.
    pub(crate) fn size(&self, field: Cow<'static, str>, bytes: usize) -> Result<(), RecordError> {
        if bytes > self.limits.max_field_bytes {
            return Err(RecordError::FieldTooLarge {
                data_type: self.data_type,
                field,
                bytes,
                max: self.limits.max_field_bytes,
            });
        }
        Ok(())
    }

    /// A time RFC 3339 can write: years 0000 to 9999.
    pub(crate) fn time(
        &self,
        field: &'static str,
        value: &DateTime<Utc>,
    ) -> Result<(), RecordError> {
        if (0..=9999).contains(&value.year()) {
            Ok(())
        } else {
            Err(RecordError::TimeOutOfRange {
                data_type: self.data_type,
                field,
                value: *value,
            })
        }
    }

    /// An optional [`Check::time`].
    pub(crate) fn opt_time(
        &self,
        field: &'static str,
        value: Option<&DateTime<Utc>>,
    ) -> Result<(), RecordError> {
        value.map_or(Ok(()), |v| self.time(field, v))
    }

    /// A value that must be one of a closed enumeration's numbers.
    pub(crate) fn defined(
        &self,
        field: &'static str,
        value: u8,
        defined: bool,
    ) -> Result<(), RecordError> {
        if defined {
            Ok(())
        } else {
            Err(RecordError::UndefinedValue {
                data_type: self.data_type,
                field,
                value,
            })
        }
    }
}

/// The length of `value`'s compact JSON text, computed without buffering it.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // The counting writer never fails and the values measured (strings, lists
    // of strings, serde_json::Value) serialize infallibly.
    serde_json::to_writer(&mut counter, value).expect("serializing into a counter cannot fail");
    counter.0
}

/// Defines a number-on-the-wire enumeration: a `u8` newtype with named
/// constants that keeps any value it is given.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub struct $name:ident;
        closed = $closed:expr;
        $( $(#[$cmeta:meta])* $konst:ident = $value:expr => $label:expr; )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u8);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: $name = $name($value); )*

            /// The name of a defined value, or `None` for any other number.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($label), )*
                    _ => None,
                }
            }

            /// Whether the value is one the record layer accepts: any value
            /// for an open enumeration, a named one for a closed enumeration.
            #[must_use]
            pub const fn is_valid(self) -> bool {
                !$closed || self.name().is_some()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({} {})", stringify!($name), self.0, n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}", self.0),
                }
            }
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                $name(v)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.0
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_type_numbers_are_the_wire_numbers() {
        let numbers: Vec<u8> = DataType::ALL.iter().map(|t| t.as_u8()).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
        for t in DataType::ALL {
            assert_eq!(DataType::from_u8(t.as_u8()), Some(t));
            assert_eq!(t.name().parse::<DataType>().unwrap(), t);
            assert_eq!(t.name().to_lowercase().parse::<DataType>().unwrap(), t);
        }
        assert_eq!(DataType::from_u8(0), None);
        assert_eq!(DataType::from_u8(7), None);
        assert!(matches!(
            "Perf".parse::<DataType>(),
            Err(RecordError::UnknownDataType { .. })
        ));
    }

    #[test]
    fn data_type_serializes_as_its_name() {
        assert_eq!(
            serde_json::to_string(&DataType::Performance).unwrap(),
            "\"Performance\""
        );
        let t: DataType = serde_json::from_str("\"State\"").unwrap();
        assert_eq!(t, DataType::State);
        assert!(serde_json::from_str::<DataType>("5").is_err());
    }

    #[test]
    fn a_record_is_no_bigger_than_a_performance_sample() {
        let record = std::mem::size_of::<Record>();
        let sample = std::mem::size_of::<Performance>();
        assert!(
            record <= sample + 8,
            "Record {record} bytes, Performance {sample}"
        );
    }

    #[test]
    fn limits_refuse_nonsense() {
        let d = RecordLimits::default();
        assert_eq!(d.max_field_bytes(), 32 * 1024);
        assert_eq!(d.max_event_fields(), 500);
        assert!(d.with_max_field_bytes(0).is_err());
        assert!(
            d.with_max_field_bytes(RecordLimits::MAX_FIELD_BYTES_CEILING + 1)
                .is_err()
        );
        assert!(
            d.with_max_event_fields(Event::FIXED_FIELDS.len() - 1)
                .is_err()
        );
        assert_eq!(
            d.with_max_event_fields(Event::FIXED_FIELDS.len())
                .unwrap()
                .max_event_fields(),
            Event::FIXED_FIELDS.len()
        );
    }

    #[test]
    fn truncation_keeps_errors_small_and_respects_char_boundaries() {
        let long = "é".repeat(1000);
        let cut = truncate_for_error(&long);
        assert_eq!(cut.chars().count(), 64 + 3);
        assert_eq!(truncate_for_error("short"), "short");
    }

    #[test]
    fn json_len_matches_serialized_length() {
        let v = serde_json::json!({"a": [1, "x\"y", null], "b": 2.5});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
