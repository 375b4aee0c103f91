//! Borrowed records: [`RecordRef`] and the serde helpers the `…Ref` types
//! share.
//!
//! A `…Ref<'a>` type has the same fields, JSON names and parsing rules as
//! its owned twin, but its strings are `Cow<'a, str>`: borrowed from the
//! JSON text when the string has no escapes, owned only when an escape had
//! to be decoded. Parsing one allocates nothing for a record without escapes
//! (an [`Event`](super::Event) still allocates its parameter list and any
//! custom fields). Validation is written once: the owned types validate
//! through their borrowed view, so both give the same errors by
//! construction.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{
    AlertRef, ConfigurationRef, DataType, EventRef, MetadataRef, PerformanceRef, Record,
    RecordError, RecordLimits, StateRef,
};

/// One record of any of the six types, borrowing its strings from the JSON
/// text it was parsed from (see [`RecordRef::from_json`]).
///
/// The borrowed twin of [`Record`]: same parsing rules, same validation,
/// same errors; [`RecordRef::to_owned`] gives the `Record` that
/// [`Record::from_json`] gives for the same text.
///
/// ```
/// use opsdata::{DataType, Record, RecordLimits, RecordRef};
/// let json = br#"{"ObjectName":"Processor","CounterName":"% Processor Time","PerfmonInstanceName":"_Total","PerformanceDataId":"0f8fad5b-d9cb-469f-a165-70867728950e","PerformanceSourceInternalID":7,"SampleValue":12.5,"TimeSampled":"2026-11-23T12:00:00Z","TimeAdded":"2026-11-23T12:00:01Z"}"#;
/// let view = RecordRef::from_json(DataType::Performance, json)?;
/// view.validate(&RecordLimits::default())?;
/// assert_eq!(view.to_owned(), Record::from_json(DataType::Performance, json)?);
/// # Ok::<(), opsdata::RecordError>(())
/// ```
// The variants are not boxed on purpose: a `RecordRef` lives for one record
// while a payload is read, and a box would be an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RecordRef<'a> {
    /// An [`AlertRef`].
    Alert(AlertRef<'a>),
    /// A [`ConfigurationRef`].
    Configuration(ConfigurationRef<'a>),
    /// An [`EventRef`].
    Event(EventRef<'a>),
    /// A [`MetadataRef`].
    Metadata(MetadataRef<'a>),
    /// A [`PerformanceRef`].
    Performance(PerformanceRef<'a>),
    /// A [`StateRef`].
    State(StateRef<'a>),
}

impl<'a> RecordRef<'a> {
    /// The record's data type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        match self {
            RecordRef::Alert(_) => DataType::Alert,
            RecordRef::Configuration(_) => DataType::Configuration,
            RecordRef::Event(_) => DataType::Event,
            RecordRef::Metadata(_) => DataType::Metadata,
            RecordRef::Performance(_) => DataType::Performance,
            RecordRef::State(_) => DataType::State,
        }
    }

    /// Parses one JSON object as a record of `data_type`, borrowing its
    /// strings from `json`. The rules are [`Record::from_json`]'s, and so
    /// are the errors, to the byte.
    ///
    /// # Errors
    ///
    /// [`RecordError::Json`] with the data type and serde_json's description.
    pub fn from_json(data_type: DataType, json: &'a [u8]) -> Result<RecordRef<'a>, RecordError> {
        fn parse<'a, T: Deserialize<'a>>(
            data_type: DataType,
            json: &'a [u8],
        ) -> Result<T, RecordError> {
            serde_json::from_slice(json).map_err(|source| RecordError::Json { data_type, source })
        }
        Ok(match data_type {
            DataType::Alert => RecordRef::Alert(parse(data_type, json)?),
            DataType::Configuration => RecordRef::Configuration(parse(data_type, json)?),
            DataType::Event => RecordRef::Event(parse(data_type, json)?),
            DataType::Metadata => RecordRef::Metadata(parse(data_type, json)?),
            // The type agents send the most of: its canonical form first,
            // serde for anything else (and for every error).
            DataType::Performance => {
                RecordRef::Performance(match super::performance::parse_canonical(json) {
                    Some(record) => record,
                    None => parse(data_type, json)?,
                })
            }
            DataType::State => RecordRef::State(parse(data_type, json)?),
        })
    }

    /// Checks the record against the schema's limits, exactly as
    /// [`Record::validate`] does (the owned types validate through this
    /// code).
    ///
    /// # Errors
    ///
    /// As [`Record::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        match self {
            RecordRef::Alert(r) => r.validate(limits),
            RecordRef::Configuration(r) => r.validate(limits),
            RecordRef::Event(r) => r.validate(limits),
            RecordRef::Metadata(r) => r.validate(limits),
            RecordRef::Performance(r) => r.validate(limits),
            RecordRef::State(r) => r.validate(limits),
        }
    }

    /// The owned record, copying the borrowed strings.
    #[must_use]
    pub fn to_owned(&self) -> Record {
        match self {
            RecordRef::Alert(r) => Record::from(r.to_owned()),
            RecordRef::Configuration(r) => Record::from(r.to_owned()),
            RecordRef::Event(r) => Record::from(r.to_owned()),
            RecordRef::Metadata(r) => Record::from(r.to_owned()),
            RecordRef::Performance(r) => Record::from(r.to_owned()),
            RecordRef::State(r) => Record::from(r.to_owned()),
        }
    }
}

/// A string borrowed when the JSON text has it unescaped. The visitor names
/// what it expects exactly as `String`'s does, so errors read the same.
struct CowStrVisitor;

impl<'de> Visitor<'de> for CowStrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }

    // `String` accepts UTF-8 bytes too; so does this, for the same errors
    // with any deserializer.
    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        std::str::from_utf8(v)
            .map(Cow::Borrowed)
            .map_err(|_| E::invalid_value(de::Unexpected::Bytes(v), &self))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        std::str::from_utf8(v)
            .map(|s| Cow::Owned(s.to_owned()))
            .map_err(|_| E::invalid_value(de::Unexpected::Bytes(v), &self))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|e| E::invalid_value(de::Unexpected::Bytes(&e.into_bytes()), &self))
    }
}

/// A borrowed string in a `Deserialize` position (a list element).
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(CowStrVisitor).map(BorrowedStr)
    }
}

/// `#[serde(deserialize_with = "cow_str::option")]` for `Option<Cow<str>>`:
/// as `Option<String>` (`null` is `None`), borrowing the string.
pub(crate) mod cow_str {
    use super::*;

    pub(crate) fn option<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Cow<'a, str>>, D::Error> {
        struct OptionVisitor;
        impl<'de> Visitor<'de> for OptionVisitor {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("option")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_string(CowStrVisitor).map(Some)
            }
        }
        d.deserialize_option(OptionVisitor)
    }

    /// `Vec<Cow<str>>` as `Vec<String>` reads, borrowing each string.
    pub(crate) fn list<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Cow<'a, str>>, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = Vec<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // As serde's own `Vec` impl: trust a size hint only so far.
                let cap = seq.size_hint().unwrap_or(0).min(4096);
                let mut out = Vec::with_capacity(cap);
                while let Some(BorrowedStr(s)) = seq.next_element()? {
                    out.push(s);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}
