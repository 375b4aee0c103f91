use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits, wire_enum};

wire_enum! {
    /// An alert's resolution state (System Center Operations Manager values).
    ///
    /// Open: 1–246 are custom states defined by the operator, and every
    /// number round-trips unchanged.
    pub struct ResolutionState;
    closed = false;
    /// 0: New.
    NEW = 0 => "New";
    /// 247: Awaiting Evidence.
    AWAITING_EVIDENCE = 247 => "Awaiting Evidence";
    /// 248: Assigned to Engineering.
    ASSIGNED_TO_ENGINEERING = 248 => "Assigned to Engineering";
    /// 249: Acknowledged.
    ACKNOWLEDGED = 249 => "Acknowledged";
    /// 250: Scheduled.
    SCHEDULED = 250 => "Scheduled";
    /// 254: Resolved.
    RESOLVED = 254 => "Resolved";
    /// 255: Closed.
    CLOSED = 255 => "Closed";
}

impl ResolutionState {
    /// Whether the state is one of the operator-defined custom states (1–246).
    #[must_use]
    pub const fn is_custom(self) -> bool {
        matches!(self.0, 1..=246)
    }
}

wire_enum! {
    /// An alert's priority. Closed: only 0–2 pass validation.
    pub struct AlertPriority;
    closed = true;
    /// 0: Low.
    LOW = 0 => "Low";
    /// 1: Medium.
    MEDIUM = 1 => "Medium";
    /// 2: High.
    HIGH = 2 => "High";
}

wire_enum! {
    /// An alert's severity. Closed: only 0–2 pass validation.
    pub struct AlertSeverity;
    closed = true;
    /// 0: Information.
    INFORMATION = 0 => "Information";
    /// 1: Warning.
    WARNING = 1 => "Warning";
    /// 2: Critical.
    CRITICAL = 2 => "Critical";
}

/// An alert raised by a monitor or a rule.
///
/// String limits follow the operations database: names, owners and
/// categories 255 characters, the description 2000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// `AlertName`, at most 255 characters.
    #[serde(rename = "AlertName")]
    pub alert_name: String,
    /// `AlertDescription`, at most 2000 characters.
    #[serde(rename = "AlertDescription")]
    pub alert_description: String,
    /// `BaseManagedEntityId`: the entity the alert is about.
    #[serde(rename = "BaseManagedEntityId", with = "super::uuid_text")]
    pub base_managed_entity_id: Uuid,
    /// `ProblemID`.
    #[serde(rename = "ProblemID", with = "super::uuid_text")]
    pub problem_id: Uuid,
    /// `IsMonitorAlert`: raised by a monitor (true) or a rule (false).
    #[serde(rename = "IsMonitorAlert")]
    pub is_monitor_alert: bool,
    /// `RuleId`: the rule or monitor that raised it.
    #[serde(rename = "RuleId", with = "super::uuid_text")]
    pub rule_id: Uuid,
    /// `ResolutionState`.
    #[serde(rename = "ResolutionState")]
    pub resolution_state: ResolutionState,
    /// `Priority`.
    #[serde(rename = "Priority")]
    pub priority: AlertPriority,
    /// `Severity`.
    #[serde(rename = "Severity")]
    pub severity: AlertSeverity,
    /// `Category`, at most 255 characters.
    #[serde(rename = "Category")]
    pub category: String,
    /// `Owner`, at most 255 characters.
    #[serde(rename = "Owner", default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// `ResolvedBy`, at most 255 characters.
    #[serde(
        rename = "ResolvedBy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resolved_by: Option<String>,
    /// `TimeRaised`.
    #[serde(rename = "TimeRaised", with = "super::rfc3339")]
    pub time_raised: DateTime<Utc>,
    /// `TimeAdded`: when the alert was added to the database.
    #[serde(rename = "TimeAdded", with = "super::rfc3339")]
    pub time_added: DateTime<Utc>,
    /// `LastModified`.
    #[serde(rename = "LastModified", with = "super::rfc3339")]
    pub last_modified: DateTime<Utc>,
    /// `LastModifiedBy`, at most 255 characters.
    #[serde(rename = "LastModifiedBy")]
    pub last_modified_by: String,
    /// `LastModifiedExceptRepeatCount`.
    #[serde(rename = "LastModifiedExceptRepeatCount", with = "super::rfc3339")]
    pub last_modified_except_repeat_count: DateTime<Utc>,
    /// `TimeResolved`: not earlier than `TimeRaised`.
    #[serde(
        rename = "TimeResolved",
        default,
        with = "super::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_resolved: Option<DateTime<Utc>>,
    /// `TimeResolutionStateLastModified`.
    #[serde(rename = "TimeResolutionStateLastModified", with = "super::rfc3339")]
    pub time_resolution_state_last_modified: DateTime<Utc>,
    /// `TimeResolutionStateLastModifiedInDB`.
    #[serde(
        rename = "TimeResolutionStateLastModifiedInDB",
        with = "super::rfc3339"
    )]
    pub time_resolution_state_last_modified_in_db: DateTime<Utc>,
    /// `RepeatCount`: how often the alert repeated; not negative.
    #[serde(rename = "RepeatCount")]
    pub repeat_count: i32,
}

impl Alert {
    /// Checks the alert against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// The first violation, as a [`RecordError`] naming the field:
    /// [`RecordError::TooLong`], [`RecordError::UndefinedValue`],
    /// [`RecordError::TimeOutOfRange`], [`RecordError::TimeOrder`] or
    /// [`RecordError::Negative`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this alert (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> AlertRef<'_> {
        AlertRef {
            alert_name: Cow::Borrowed(&self.alert_name),
            alert_description: Cow::Borrowed(&self.alert_description),
            base_managed_entity_id: self.base_managed_entity_id,
            problem_id: self.problem_id,
            is_monitor_alert: self.is_monitor_alert,
            rule_id: self.rule_id,
            resolution_state: self.resolution_state,
            priority: self.priority,
            severity: self.severity,
            category: Cow::Borrowed(&self.category),
            owner: self.owner.as_deref().map(Cow::Borrowed),
            resolved_by: self.resolved_by.as_deref().map(Cow::Borrowed),
            time_raised: self.time_raised,
            time_added: self.time_added,
            last_modified: self.last_modified,
            last_modified_by: Cow::Borrowed(&self.last_modified_by),
            last_modified_except_repeat_count: self.last_modified_except_repeat_count,
            time_resolved: self.time_resolved,
            time_resolution_state_last_modified: self.time_resolution_state_last_modified,
            time_resolution_state_last_modified_in_db: self
                .time_resolution_state_last_modified_in_db,
            repeat_count: self.repeat_count,
        }
    }
}

pub use self::view::Alert as AlertRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// An [`Alert`](crate::Alert) borrowing its strings from the JSON text it was parsed from
    /// (owning only those that had escapes). Same fields, parsing rules,
    /// validation and errors as [`Alert`](crate::Alert).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Alert<'a> {
        /// `AlertName`, at most 255 characters.
        #[serde(rename = "AlertName", borrow)]
        pub alert_name: Cow<'a, str>,
        /// `AlertDescription`, at most 2000 characters.
        #[serde(rename = "AlertDescription", borrow)]
        pub alert_description: Cow<'a, str>,
        /// `BaseManagedEntityId`.
        #[serde(rename = "BaseManagedEntityId", with = "crate::record::uuid_text")]
        pub base_managed_entity_id: Uuid,
        /// `ProblemID`.
        #[serde(rename = "ProblemID", with = "crate::record::uuid_text")]
        pub problem_id: Uuid,
        /// `IsMonitorAlert`.
        #[serde(rename = "IsMonitorAlert")]
        pub is_monitor_alert: bool,
        /// `RuleId`.
        #[serde(rename = "RuleId", with = "crate::record::uuid_text")]
        pub rule_id: Uuid,
        /// `ResolutionState`.
        #[serde(rename = "ResolutionState")]
        pub resolution_state: ResolutionState,
        /// `Priority`.
        #[serde(rename = "Priority")]
        pub priority: AlertPriority,
        /// `Severity`.
        #[serde(rename = "Severity")]
        pub severity: AlertSeverity,
        /// `Category`, at most 255 characters.
        #[serde(rename = "Category", borrow)]
        pub category: Cow<'a, str>,
        /// `Owner`, at most 255 characters.
        #[serde(
            rename = "Owner",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub owner: Option<Cow<'a, str>>,
        /// `ResolvedBy`, at most 255 characters.
        #[serde(
            rename = "ResolvedBy",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub resolved_by: Option<Cow<'a, str>>,
        /// `TimeRaised`.
        #[serde(rename = "TimeRaised", with = "crate::record::rfc3339")]
        pub time_raised: DateTime<Utc>,
        /// `TimeAdded`.
        #[serde(rename = "TimeAdded", with = "crate::record::rfc3339")]
        pub time_added: DateTime<Utc>,
        /// `LastModified`.
        #[serde(rename = "LastModified", with = "crate::record::rfc3339")]
        pub last_modified: DateTime<Utc>,
        /// `LastModifiedBy`, at most 255 characters.
        #[serde(rename = "LastModifiedBy", borrow)]
        pub last_modified_by: Cow<'a, str>,
        /// `LastModifiedExceptRepeatCount`.
        #[serde(
            rename = "LastModifiedExceptRepeatCount",
            with = "crate::record::rfc3339"
        )]
        pub last_modified_except_repeat_count: DateTime<Utc>,
        /// `TimeResolved`: not earlier than `TimeRaised`.
        #[serde(
            rename = "TimeResolved",
            default,
            with = "crate::record::rfc3339::option"
        )]
        pub time_resolved: Option<DateTime<Utc>>,
        /// `TimeResolutionStateLastModified`.
        #[serde(
            rename = "TimeResolutionStateLastModified",
            with = "crate::record::rfc3339"
        )]
        pub time_resolution_state_last_modified: DateTime<Utc>,
        /// `TimeResolutionStateLastModifiedInDB`.
        #[serde(
            rename = "TimeResolutionStateLastModifiedInDB",
            with = "crate::record::rfc3339"
        )]
        pub time_resolution_state_last_modified_in_db: DateTime<Utc>,
        /// `RepeatCount`: not negative.
        #[serde(rename = "RepeatCount")]
        pub repeat_count: i32,
    }
}

impl AlertRef<'_> {
    /// Checks the alert against the schema's limits: the one implementation
    /// [`Alert::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Alert::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Alert,
            limits,
        };
        c.text("AlertName", &self.alert_name, 255)?;
        c.text("AlertDescription", &self.alert_description, 2000)?;
        c.defined("Priority", self.priority.0, self.priority.is_valid())?;
        c.defined("Severity", self.severity.0, self.severity.is_valid())?;
        c.text("Category", &self.category, 255)?;
        c.opt_text("Owner", self.owner.as_deref(), 255)?;
        c.opt_text("ResolvedBy", self.resolved_by.as_deref(), 255)?;
        c.time("TimeRaised", &self.time_raised)?;
        c.time("TimeAdded", &self.time_added)?;
        c.time("LastModified", &self.last_modified)?;
        c.text("LastModifiedBy", &self.last_modified_by, 255)?;
        c.time(
            "LastModifiedExceptRepeatCount",
            &self.last_modified_except_repeat_count,
        )?;
        c.opt_time("TimeResolved", self.time_resolved.as_ref())?;
        c.time(
            "TimeResolutionStateLastModified",
            &self.time_resolution_state_last_modified,
        )?;
        c.time(
            "TimeResolutionStateLastModifiedInDB",
            &self.time_resolution_state_last_modified_in_db,
        )?;
        if self.time_resolved.is_some_and(|t| t < self.time_raised) {
            return Err(RecordError::TimeOrder {
                data_type: DataType::Alert,
                field: "TimeResolved",
                earlier_than: "TimeRaised",
            });
        }
        if self.repeat_count < 0 {
            return Err(RecordError::Negative {
                data_type: DataType::Alert,
                field: "RepeatCount",
                value: self.repeat_count.into(),
            });
        }
        Ok(())
    }

    /// The owned alert, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Alert {
        Alert {
            alert_name: String::from(&*self.alert_name),
            alert_description: String::from(&*self.alert_description),
            base_managed_entity_id: self.base_managed_entity_id,
            problem_id: self.problem_id,
            is_monitor_alert: self.is_monitor_alert,
            rule_id: self.rule_id,
            resolution_state: self.resolution_state,
            priority: self.priority,
            severity: self.severity,
            category: String::from(&*self.category),
            owner: self.owner.as_deref().map(String::from),
            resolved_by: self.resolved_by.as_deref().map(String::from),
            time_raised: self.time_raised,
            time_added: self.time_added,
            last_modified: self.last_modified,
            last_modified_by: String::from(&*self.last_modified_by),
            last_modified_except_repeat_count: self.last_modified_except_repeat_count,
            time_resolved: self.time_resolved,
            time_resolution_state_last_modified: self.time_resolution_state_last_modified,
            time_resolution_state_last_modified_in_db: self
                .time_resolution_state_last_modified_in_db,
            repeat_count: self.repeat_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_state_names_and_custom_range() {
        assert_eq!(ResolutionState::NEW.name(), Some("New"));
        assert_eq!(ResolutionState(255), ResolutionState::CLOSED);
        assert!(ResolutionState(1).is_custom());
        assert!(ResolutionState(246).is_custom());
        assert!(!ResolutionState(247).is_custom());
        assert!(!ResolutionState(0).is_custom());
        assert_eq!(ResolutionState(17).name(), None);
        // Open: every number is valid.
        assert!((0..=255u8).all(|v| ResolutionState(v).is_valid()));
        assert_eq!(
            format!("{:?}", ResolutionState(249)),
            "ResolutionState(249 Acknowledged)"
        );
        assert_eq!(ResolutionState(12).to_string(), "12");
    }

    #[test]
    fn priority_and_severity_are_closed() {
        assert!(AlertPriority::HIGH.is_valid());
        assert!(!AlertPriority(3).is_valid());
        assert!(AlertSeverity::CRITICAL.is_valid());
        assert!(!AlertSeverity(3).is_valid());
    }
}
