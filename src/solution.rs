//! The solutions catalogue: which data types each monitoring solution
//! collects.

use std::fmt;

use crate::record::DataType;

/// A monitoring solution a workspace can import, and the data it collects.
///
/// Where the source names data that is not one of the six types (software
/// inventory, WMI and registry data, SQL Server DMV results), the mapping to
/// our types is ours; where the two source documents disagree, the newer one
/// is followed.
///
/// ```
/// use opsdata::{DataType, Solution};
/// assert_eq!(
///     Solution::CapacityPlanning.data_types(),
///     &[DataType::Performance, DataType::Metadata]
/// );
/// assert!(Solution::collecting(DataType::Event).any(|s| s == Solution::LogManagement));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Solution {
    /// Configuration Assessment: configuration data, metadata, state data.
    ConfigurationAssessment,
    /// Capacity Planning: performance data, metadata.
    CapacityPlanning,
    /// Antimalware: configuration data, metadata.
    Antimalware,
    /// System Update Assessment: metadata, state data.
    SystemUpdateAssessment,
    /// Log Management: user-defined, Windows and IIS event logs.
    LogManagement,
    /// Change Tracking: software inventory (configuration) and Windows
    /// service metadata.
    ChangeTracking,
    /// SQL and Active Directory Assessment: WMI and registry data
    /// (configuration), performance data, SQL Server DMV results
    /// (performance).
    SqlAndActiveDirectoryAssessment,
}

impl Solution {
    /// Every solution in the catalogue.
    pub const ALL: [Solution; 7] = [
        Solution::ConfigurationAssessment,
        Solution::CapacityPlanning,
        Solution::Antimalware,
        Solution::SystemUpdateAssessment,
        Solution::LogManagement,
        Solution::ChangeTracking,
        Solution::SqlAndActiveDirectoryAssessment,
    ];

    /// The solution's name as the service shows it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Solution::ConfigurationAssessment => "Configuration Assessment",
            Solution::CapacityPlanning => "Capacity Planning",
            Solution::Antimalware => "Antimalware",
            Solution::SystemUpdateAssessment => "System Update Assessment",
            Solution::LogManagement => "Log Management",
            Solution::ChangeTracking => "Change Tracking",
            Solution::SqlAndActiveDirectoryAssessment => "SQL and Active Directory Assessment",
        }
    }

    /// The data types the solution collects.
    #[must_use]
    pub const fn data_types(self) -> &'static [DataType] {
        use DataType::*;
        match self {
            Solution::ConfigurationAssessment => &[Configuration, Metadata, State],
            Solution::CapacityPlanning => &[Performance, Metadata],
            Solution::Antimalware => &[Configuration, Metadata],
            Solution::SystemUpdateAssessment => &[Metadata, State],
            Solution::LogManagement => &[Event],
            Solution::ChangeTracking => &[Configuration, Metadata],
            Solution::SqlAndActiveDirectoryAssessment => &[Configuration, Performance],
        }
    }

    /// The solutions that collect `data_type`.
    pub fn collecting(data_type: DataType) -> impl Iterator<Item = Solution> {
        Solution::ALL
            .into_iter()
            .filter(move |s| s.data_types().contains(&data_type))
    }
}

impl fmt::Display for Solution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_matches_the_reference_table() {
        use DataType::*;
        let table: [(&str, &[DataType]); 7] = [
            (
                "Configuration Assessment",
                &[Configuration, Metadata, State],
            ),
            ("Capacity Planning", &[Performance, Metadata]),
            ("Antimalware", &[Configuration, Metadata]),
            ("System Update Assessment", &[Metadata, State]),
            ("Log Management", &[Event]),
            ("Change Tracking", &[Configuration, Metadata]),
            (
                "SQL and Active Directory Assessment",
                &[Configuration, Performance],
            ),
        ];
        assert_eq!(Solution::ALL.len(), table.len());
        for (s, (name, types)) in Solution::ALL.iter().zip(table) {
            assert_eq!(s.name(), name);
            assert_eq!(s.data_types(), types, "{name}");
        }
    }

    #[test]
    fn every_type_but_alert_has_a_collector() {
        for t in DataType::ALL {
            let n = Solution::collecting(t).count();
            if t == DataType::Alert {
                assert_eq!(n, 0);
            } else {
                assert!(n > 0, "{t}");
            }
        }
        let perf: Vec<_> = Solution::collecting(DataType::Performance).collect();
        assert_eq!(
            perf,
            [
                Solution::CapacityPlanning,
                Solution::SqlAndActiveDirectoryAssessment
            ]
        );
    }
}
