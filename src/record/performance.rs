use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits};

/// One sample of a performance counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// `ObjectName` (for example `Processor`), at most 255 characters.
    #[serde(rename = "ObjectName")]
    pub object_name: String,
    /// `CounterName` (for example `% Processor Time`), at most 255 characters.
    #[serde(rename = "CounterName")]
    pub counter_name: String,
    /// `PerfmonInstanceName` (for example `_Total`), at most 255 characters;
    /// may be empty.
    #[serde(rename = "PerfmonInstanceName")]
    pub perfmon_instance_name: String,
    /// `PerformanceDataId`.
    #[serde(rename = "PerformanceDataId", with = "super::uuid_text")]
    pub performance_data_id: Uuid,
    /// `PerformanceSourceInternalID`.
    #[serde(rename = "PerformanceSourceInternalID")]
    pub performance_source_internal_id: i32,
    /// `SampleValue`: must be finite (JSON has no NaN or infinity).
    #[serde(rename = "SampleValue")]
    pub sample_value: f64,
    /// `TimeSampled`.
    #[serde(rename = "TimeSampled", with = "super::rfc3339")]
    pub time_sampled: DateTime<Utc>,
    /// `TimeAdded`.
    #[serde(rename = "TimeAdded", with = "super::rfc3339")]
    pub time_added: DateTime<Utc>,
}

impl Performance {
    /// Checks the sample against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::TooLong`] for a name over 255 characters,
    /// [`RecordError::NonFinite`] for a NaN or infinite `SampleValue`,
    /// [`RecordError::TimeOutOfRange`] for a time outside 0000–9999.
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this sample (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> PerformanceRef<'_> {
        PerformanceRef {
            object_name: Cow::Borrowed(&self.object_name),
            counter_name: Cow::Borrowed(&self.counter_name),
            perfmon_instance_name: Cow::Borrowed(&self.perfmon_instance_name),
            performance_data_id: self.performance_data_id,
            performance_source_internal_id: self.performance_source_internal_id,
            sample_value: self.sample_value,
            time_sampled: self.time_sampled,
            time_added: self.time_added,
        }
    }
}

pub use self::view::Performance as PerformanceRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// A [`Performance`](crate::Performance) sample borrowing its strings from the JSON text it was
    /// parsed from (owning only those that had escapes). Same fields, parsing
    /// rules, validation and errors as [`Performance`](crate::Performance).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Performance<'a> {
        /// `ObjectName`, at most 255 characters.
        #[serde(rename = "ObjectName", borrow)]
        pub object_name: Cow<'a, str>,
        /// `CounterName`, at most 255 characters.
        #[serde(rename = "CounterName", borrow)]
        pub counter_name: Cow<'a, str>,
        /// `PerfmonInstanceName`, at most 255 characters; may be empty.
        #[serde(rename = "PerfmonInstanceName", borrow)]
        pub perfmon_instance_name: Cow<'a, str>,
        /// `PerformanceDataId`.
        #[serde(rename = "PerformanceDataId", with = "crate::record::uuid_text")]
        pub performance_data_id: Uuid,
        /// `PerformanceSourceInternalID`.
        #[serde(rename = "PerformanceSourceInternalID")]
        pub performance_source_internal_id: i32,
        /// `SampleValue`: must be finite.
        #[serde(rename = "SampleValue")]
        pub sample_value: f64,
        /// `TimeSampled`.
        #[serde(rename = "TimeSampled", with = "crate::record::rfc3339")]
        pub time_sampled: DateTime<Utc>,
        /// `TimeAdded`.
        #[serde(rename = "TimeAdded", with = "crate::record::rfc3339")]
        pub time_added: DateTime<Utc>,
    }
}

impl PerformanceRef<'_> {
    /// Checks the sample against the schema's limits: the one implementation
    /// [`Performance::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Performance::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Performance,
            limits,
        };
        c.text("ObjectName", &self.object_name, 255)?;
        c.text("CounterName", &self.counter_name, 255)?;
        c.text("PerfmonInstanceName", &self.perfmon_instance_name, 255)?;
        if !self.sample_value.is_finite() {
            return Err(RecordError::NonFinite {
                data_type: DataType::Performance,
                field: "SampleValue",
            });
        }
        c.time("TimeSampled", &self.time_sampled)?;
        c.time("TimeAdded", &self.time_added)
    }

    /// The owned sample, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Performance {
        Performance {
            object_name: String::from(&*self.object_name),
            counter_name: String::from(&*self.counter_name),
            perfmon_instance_name: String::from(&*self.perfmon_instance_name),
            performance_data_id: self.performance_data_id,
            performance_source_internal_id: self.performance_source_internal_id,
            sample_value: self.sample_value,
            time_sampled: self.time_sampled,
            time_added: self.time_added,
        }
    }
}
