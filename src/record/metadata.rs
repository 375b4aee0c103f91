use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits};

/// Inventory metadata about a managed entity (a computer, mostly).
///
/// Inventory is collected piecemeal, so every field but
/// `BaseManagedEntityId` is optional and omitted from JSON when absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// `BaseManagedEntityId`: the entity described.
    #[serde(rename = "BaseManagedEntityId", with = "super::uuid_text")]
    pub base_managed_entity_id: Uuid,
    /// `ObjectStatus`, at most 255 characters.
    #[serde(
        rename = "ObjectStatus",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub object_status: Option<String>,
    /// `OrganizationalUnit`, at most 2048 characters.
    #[serde(
        rename = "OrganizationalUnit",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub organizational_unit: Option<String>,
    /// `ActiveDirectoryObjectSid`, at most 255 characters.
    #[serde(
        rename = "ActiveDirectoryObjectSid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub active_directory_object_sid: Option<String>,
    /// `PhysicalProcessors`.
    #[serde(
        rename = "PhysicalProcessors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub physical_processors: Option<u32>,
    /// `NetworkName`, at most 255 characters.
    #[serde(
        rename = "NetworkName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub network_name: Option<String>,
    /// `IPAddress`, at most 255 characters (the source's "IPAddress" and
    /// "IP Address" are this one field).
    #[serde(rename = "IPAddress", default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// `ForestDNSName`, at most 255 characters.
    #[serde(
        rename = "ForestDNSName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub forest_dns_name: Option<String>,
    /// `NetbiosComputerName`, at most 255 characters.
    #[serde(
        rename = "NetbiosComputerName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub netbios_computer_name: Option<String>,
    /// `VirtualMachineName`, at most 255 characters.
    #[serde(
        rename = "VirtualMachineName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_machine_name: Option<String>,
    /// `LastInventoryDate`.
    #[serde(
        rename = "LastInventoryDate",
        default,
        with = "super::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_inventory_date: Option<DateTime<Utc>>,
    /// `HostServerName`, at most 255 characters.
    #[serde(
        rename = "HostServerName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub host_server_name: Option<String>,
    /// `IsVirtualMachine`.
    #[serde(
        rename = "IsVirtualMachine",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_virtual_machine: Option<bool>,
    /// `NetbiosDomainName`, at most 255 characters.
    #[serde(
        rename = "NetbiosDomainName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub netbios_domain_name: Option<String>,
    /// `LogicalProcessors`.
    #[serde(
        rename = "LogicalProcessors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub logical_processors: Option<u32>,
    /// `DNSName`, at most 255 characters.
    #[serde(rename = "DNSName", default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// `DisplayName`, at most 255 characters.
    #[serde(
        rename = "DisplayName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub display_name: Option<String>,
    /// `DomainDnsName`, at most 255 characters.
    #[serde(
        rename = "DomainDnsName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub domain_dns_name: Option<String>,
    /// `ActiveDirectorySite`, at most 255 characters.
    #[serde(
        rename = "ActiveDirectorySite",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub active_directory_site: Option<String>,
    /// `PrincipalName`, at most 255 characters.
    #[serde(
        rename = "PrincipalName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub principal_name: Option<String>,
    /// `OffsetInMinuteFromGreenwichTime`: the entity's UTC offset, within
    /// −840..=840 minutes (UTC−14:00 to UTC+14:00).
    #[serde(
        rename = "OffsetInMinuteFromGreenwichTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offset_in_minute_from_greenwich_time: Option<i32>,
}

impl Metadata {
    /// The widest UTC offset in minutes, either way: 14 hours.
    pub const MAX_UTC_OFFSET_MINUTES: i32 = 840;

    /// Checks the record against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::TooLong`] for a string over its maximum,
    /// [`RecordError::OutOfRange`] for an offset outside −840..=840,
    /// [`RecordError::TimeOutOfRange`] for a `LastInventoryDate` outside 0000–9999.
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Metadata,
            limits,
        };
        let texts: [(&'static str, &Option<String>, usize); 15] = [
            ("ObjectStatus", &self.object_status, 255),
            ("OrganizationalUnit", &self.organizational_unit, 2048),
            (
                "ActiveDirectoryObjectSid",
                &self.active_directory_object_sid,
                255,
            ),
            ("NetworkName", &self.network_name, 255),
            ("IPAddress", &self.ip_address, 255),
            ("ForestDNSName", &self.forest_dns_name, 255),
            ("NetbiosComputerName", &self.netbios_computer_name, 255),
            ("VirtualMachineName", &self.virtual_machine_name, 255),
            ("HostServerName", &self.host_server_name, 255),
            ("NetbiosDomainName", &self.netbios_domain_name, 255),
            ("DNSName", &self.dns_name, 255),
            ("DisplayName", &self.display_name, 255),
            ("DomainDnsName", &self.domain_dns_name, 255),
            ("ActiveDirectorySite", &self.active_directory_site, 255),
            ("PrincipalName", &self.principal_name, 255),
        ];
        for (field, value, max) in texts {
            c.opt_text(field, value.as_deref(), max)?;
        }
        c.opt_time("LastInventoryDate", self.last_inventory_date.as_ref())?;
        if let Some(offset) = self.offset_in_minute_from_greenwich_time {
            let max = Self::MAX_UTC_OFFSET_MINUTES;
            if !(-max..=max).contains(&offset) {
                return Err(RecordError::OutOfRange {
                    data_type: DataType::Metadata,
                    field: "OffsetInMinuteFromGreenwichTime",
                    value: offset.into(),
                    min: (-max).into(),
                    max: max.into(),
                });
            }
        }
        Ok(())
    }
}
