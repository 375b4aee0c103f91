use std::borrow::Cow;

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
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this record (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> MetadataRef<'_> {
        MetadataRef {
            base_managed_entity_id: self.base_managed_entity_id,
            object_status: self.object_status.as_deref().map(Cow::Borrowed),
            organizational_unit: self.organizational_unit.as_deref().map(Cow::Borrowed),
            active_directory_object_sid: self
                .active_directory_object_sid
                .as_deref()
                .map(Cow::Borrowed),
            physical_processors: self.physical_processors,
            network_name: self.network_name.as_deref().map(Cow::Borrowed),
            ip_address: self.ip_address.as_deref().map(Cow::Borrowed),
            forest_dns_name: self.forest_dns_name.as_deref().map(Cow::Borrowed),
            netbios_computer_name: self.netbios_computer_name.as_deref().map(Cow::Borrowed),
            virtual_machine_name: self.virtual_machine_name.as_deref().map(Cow::Borrowed),
            last_inventory_date: self.last_inventory_date,
            host_server_name: self.host_server_name.as_deref().map(Cow::Borrowed),
            is_virtual_machine: self.is_virtual_machine,
            netbios_domain_name: self.netbios_domain_name.as_deref().map(Cow::Borrowed),
            logical_processors: self.logical_processors,
            dns_name: self.dns_name.as_deref().map(Cow::Borrowed),
            display_name: self.display_name.as_deref().map(Cow::Borrowed),
            domain_dns_name: self.domain_dns_name.as_deref().map(Cow::Borrowed),
            active_directory_site: self.active_directory_site.as_deref().map(Cow::Borrowed),
            principal_name: self.principal_name.as_deref().map(Cow::Borrowed),
            offset_in_minute_from_greenwich_time: self.offset_in_minute_from_greenwich_time,
        }
    }
}

pub use self::view::Metadata as MetadataRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// [`Metadata`](crate::Metadata) borrowing its strings from the JSON text it was parsed from
    /// (owning only those that had escapes). Same fields, parsing rules,
    /// validation and errors as [`Metadata`](crate::Metadata).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metadata<'a> {
        /// `BaseManagedEntityId`: the entity described.
        #[serde(rename = "BaseManagedEntityId", with = "crate::record::uuid_text")]
        pub base_managed_entity_id: Uuid,
        /// `ObjectStatus`, at most 255 characters.
        #[serde(
            rename = "ObjectStatus",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub object_status: Option<Cow<'a, str>>,
        /// `OrganizationalUnit`, at most 2048 characters.
        #[serde(
            rename = "OrganizationalUnit",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub organizational_unit: Option<Cow<'a, str>>,
        /// `ActiveDirectoryObjectSid`, at most 255 characters.
        #[serde(
            rename = "ActiveDirectoryObjectSid",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub active_directory_object_sid: Option<Cow<'a, str>>,
        /// `PhysicalProcessors`.
        #[serde(rename = "PhysicalProcessors", default)]
        pub physical_processors: Option<u32>,
        /// `NetworkName`, at most 255 characters.
        #[serde(
            rename = "NetworkName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub network_name: Option<Cow<'a, str>>,
        /// `IPAddress`, at most 255 characters (the source's "IPAddress" and
        /// "IP Address" are this one field).
        #[serde(
            rename = "IPAddress",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub ip_address: Option<Cow<'a, str>>,
        /// `ForestDNSName`, at most 255 characters.
        #[serde(
            rename = "ForestDNSName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub forest_dns_name: Option<Cow<'a, str>>,
        /// `NetbiosComputerName`, at most 255 characters.
        #[serde(
            rename = "NetbiosComputerName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub netbios_computer_name: Option<Cow<'a, str>>,
        /// `VirtualMachineName`, at most 255 characters.
        #[serde(
            rename = "VirtualMachineName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub virtual_machine_name: Option<Cow<'a, str>>,
        /// `LastInventoryDate`.
        #[serde(
            rename = "LastInventoryDate",
            default,
            with = "crate::record::rfc3339::option"
        )]
        pub last_inventory_date: Option<DateTime<Utc>>,
        /// `HostServerName`, at most 255 characters.
        #[serde(
            rename = "HostServerName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub host_server_name: Option<Cow<'a, str>>,
        /// `IsVirtualMachine`.
        #[serde(rename = "IsVirtualMachine", default)]
        pub is_virtual_machine: Option<bool>,
        /// `NetbiosDomainName`, at most 255 characters.
        #[serde(
            rename = "NetbiosDomainName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub netbios_domain_name: Option<Cow<'a, str>>,
        /// `LogicalProcessors`.
        #[serde(rename = "LogicalProcessors", default)]
        pub logical_processors: Option<u32>,
        /// `DNSName`, at most 255 characters.
        #[serde(
            rename = "DNSName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub dns_name: Option<Cow<'a, str>>,
        /// `DisplayName`, at most 255 characters.
        #[serde(
            rename = "DisplayName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub display_name: Option<Cow<'a, str>>,
        /// `DomainDnsName`, at most 255 characters.
        #[serde(
            rename = "DomainDnsName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub domain_dns_name: Option<Cow<'a, str>>,
        /// `ActiveDirectorySite`, at most 255 characters.
        #[serde(
            rename = "ActiveDirectorySite",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub active_directory_site: Option<Cow<'a, str>>,
        /// `PrincipalName`, at most 255 characters.
        #[serde(
            rename = "PrincipalName",
            default,
            borrow,
            deserialize_with = "crate::record::borrowed::cow_str::option"
        )]
        pub principal_name: Option<Cow<'a, str>>,
        /// `OffsetInMinuteFromGreenwichTime`: the entity's UTC offset, within
        /// −840..=840 minutes (UTC−14:00 to UTC+14:00).
        #[serde(rename = "OffsetInMinuteFromGreenwichTime", default)]
        pub offset_in_minute_from_greenwich_time: Option<i32>,
    }
}

impl MetadataRef<'_> {
    /// Checks the record against the schema's limits: the one implementation
    /// [`Metadata::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Metadata::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Metadata,
            limits,
        };
        let texts: [(&'static str, &Option<Cow<'_, str>>, usize); 15] = [
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
            let max = Metadata::MAX_UTC_OFFSET_MINUTES;
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

    /// The owned record, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Metadata {
        Metadata {
            base_managed_entity_id: self.base_managed_entity_id,
            object_status: self.object_status.as_deref().map(String::from),
            organizational_unit: self.organizational_unit.as_deref().map(String::from),
            active_directory_object_sid: self
                .active_directory_object_sid
                .as_deref()
                .map(String::from),
            physical_processors: self.physical_processors,
            network_name: self.network_name.as_deref().map(String::from),
            ip_address: self.ip_address.as_deref().map(String::from),
            forest_dns_name: self.forest_dns_name.as_deref().map(String::from),
            netbios_computer_name: self.netbios_computer_name.as_deref().map(String::from),
            virtual_machine_name: self.virtual_machine_name.as_deref().map(String::from),
            last_inventory_date: self.last_inventory_date,
            host_server_name: self.host_server_name.as_deref().map(String::from),
            is_virtual_machine: self.is_virtual_machine,
            netbios_domain_name: self.netbios_domain_name.as_deref().map(String::from),
            logical_processors: self.logical_processors,
            dns_name: self.dns_name.as_deref().map(String::from),
            display_name: self.display_name.as_deref().map(String::from),
            domain_dns_name: self.domain_dns_name.as_deref().map(String::from),
            active_directory_site: self.active_directory_site.as_deref().map(String::from),
            principal_name: self.principal_name.as_deref().map(String::from),
            offset_in_minute_from_greenwich_time: self.offset_in_minute_from_greenwich_time,
        }
    }
}
