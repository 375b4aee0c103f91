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
}
