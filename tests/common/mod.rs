//! Shared test support: proptest strategies for valid records of every type,
//! and fixed sample records for golden files.

#![allow(dead_code)] // each test binary uses a different part of this module

use chrono::{DateTime, TimeZone, Utc};
use opsdata::{
    Alert, AlertPriority, AlertSeverity, ChannelLevel, Configuration, CustomFields, DataType,
    Event, HealthState, Metadata, Performance, Record, ResolutionState, State, TenantId,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

/// Any time RFC 3339 can write (years 0000–9999), to the nanosecond.
pub fn time() -> impl Strategy<Value = DateTime<Utc>> {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    (MIN..=MAX, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("in range"))
}

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

pub fn tenant() -> impl Strategy<Value = TenantId> {
    (1u128..).prop_map(|n| TenantId::new(Uuid::from_u128(n)).expect("not nil"))
}

/// A string of at most `max` characters, any Unicode (control characters,
/// quotes and non-BMP included).
pub fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max.min(40)).prop_map(|c| c.into_iter().collect())
}

/// A finite f64 of any magnitude, signed zeros and subnormals included.
pub fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite().prop_map(Value::from),
        text(20).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(8), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

pub fn custom_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_]{0,44}".prop_filter("not a fixed field", |n| {
        !Event::FIXED_FIELDS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(n))
    })
}

pub fn alert() -> impl Strategy<Value = Alert> {
    (
        (text(255), text(2000), uuid(), uuid(), any::<bool>(), uuid()),
        (any::<u8>(), 0u8..=2, 0u8..=2, text(255)),
        (option::of(text(255)), option::of(text(255))),
        (time(), time(), time(), text(255), time()),
        (
            option::of(0i64..=10_000_000_000),
            time(),
            time(),
            0..=i32::MAX,
        ),
    )
        .prop_map(
            |(
                (alert_name, alert_description, bme, problem_id, is_monitor_alert, rule_id),
                (rs, priority, severity, category),
                (owner, resolved_by),
                (time_raised, time_added, last_modified, last_modified_by, lmerc),
                (resolved_after_ms, trslm, trslm_db, repeat_count),
            )| {
                // Resolved no earlier than raised, and still within year 9999.
                let time_resolved = resolved_after_ms.map(|ms| {
                    let latest = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
                    (time_raised + chrono::Duration::milliseconds(ms)).min(latest)
                });
                Alert {
                    alert_name,
                    alert_description,
                    base_managed_entity_id: bme,
                    problem_id,
                    is_monitor_alert,
                    rule_id,
                    resolution_state: ResolutionState(rs),
                    priority: AlertPriority(priority),
                    severity: AlertSeverity(severity),
                    category,
                    owner,
                    resolved_by,
                    time_raised,
                    time_added,
                    last_modified,
                    last_modified_by,
                    last_modified_except_repeat_count: lmerc,
                    time_resolved,
                    time_resolution_state_last_modified: trslm,
                    time_resolution_state_last_modified_in_db: trslm_db,
                    repeat_count,
                }
            },
        )
}

pub fn configuration() -> impl Strategy<Value = Configuration> {
    (uuid(), uuid(), uuid(), uuid(), uuid(), text(2000), time()).prop_map(
        |(c, a, e, t, p, v, d)| Configuration {
            customer_id: c,
            agent_id: a,
            entity_id: e,
            managed_type_id: t,
            managed_type_property_id: p,
            current_value: v,
            change_date: d,
        },
    )
}

pub fn event() -> impl Strategy<Value = Event> {
    (
        (uuid(), uuid(), any::<i32>(), uuid(), uuid(), text(255)),
        (
            any::<i64>(),
            any::<i32>(),
            any::<i32>(),
            any::<u8>(),
            text(255),
        ),
        (text(500), vec(text(30), 0..5), time(), time()),
        btree_map(custom_name(), json_value(), 0..5),
    )
        .prop_map(
            |(
                (event_id, event_original_id, bmeii, rule_id, publisher_id, publisher_name),
                (full_number, number, category, level, logging_computer),
                (event_data, event_parameters, time_generated, time_added),
                custom,
            )| Event {
                event_id,
                event_original_id,
                base_managed_entity_internal_id: bmeii,
                rule_id,
                publisher_id,
                publisher_name,
                full_number,
                number,
                category,
                channel_level: ChannelLevel(level),
                logging_computer,
                event_data,
                event_parameters,
                time_generated,
                time_added,
                custom: custom.into_iter().collect::<CustomFields>(),
            },
        )
}

pub fn metadata() -> impl Strategy<Value = Metadata> {
    let s = || option::of(text(255));
    (
        (
            uuid(),
            s(),
            option::of(text(2048)),
            s(),
            option::of(any::<u32>()),
        ),
        (s(), s(), s(), s(), s(), option::of(time())),
        (
            s(),
            option::of(any::<bool>()),
            s(),
            option::of(any::<u32>()),
        ),
        (s(), s(), s(), s(), s(), option::of(-840i32..=840)),
    )
        .prop_map(
            |(
                (bme, object_status, ou, sid, physical),
                (network, ip, forest, netbios, vm_name, last_inventory),
                (host, is_vm, netbios_domain, logical),
                (dns, display, domain_dns, site, principal, offset),
            )| Metadata {
                base_managed_entity_id: bme,
                object_status,
                organizational_unit: ou,
                active_directory_object_sid: sid,
                physical_processors: physical,
                network_name: network,
                ip_address: ip,
                forest_dns_name: forest,
                netbios_computer_name: netbios,
                virtual_machine_name: vm_name,
                last_inventory_date: last_inventory,
                host_server_name: host,
                is_virtual_machine: is_vm,
                netbios_domain_name: netbios_domain,
                logical_processors: logical,
                dns_name: dns,
                display_name: display,
                domain_dns_name: domain_dns,
                active_directory_site: site,
                principal_name: principal,
                offset_in_minute_from_greenwich_time: offset,
            },
        )
}

pub fn performance() -> impl Strategy<Value = Performance> {
    (
        text(255),
        text(255),
        text(255),
        uuid(),
        any::<i32>(),
        finite(),
        time(),
        time(),
    )
        .prop_map(|(o, c, i, id, src, v, ts, ta)| Performance {
            object_name: o,
            counter_name: c,
            perfmon_instance_name: i,
            performance_data_id: id,
            performance_source_internal_id: src,
            sample_value: v,
            time_sampled: ts,
            time_added: ta,
        })
}

pub fn state() -> impl Strategy<Value = State> {
    (
        (uuid(), uuid(), 0u8..=3, 0u8..=3, text(500), time(), time()),
        (
            uuid(),
            uuid(),
            uuid(),
            0u8..=3,
            time(),
            option::of(time()),
            time(),
        ),
    )
        .prop_map(
            |(
                (sce, state_id, new, old, context, time_generated, time_added),
                (state_id2, bme, monitor, health, last_modified, green, db_time),
            )| State {
                state_change_event_id: sce,
                state_id,
                new_health_state: HealthState(new),
                old_health_state: HealthState(old),
                context,
                time_generated,
                time_added,
                state_id2,
                base_managed_entity_id: bme,
                monitor_id: monitor,
                health_state: HealthState(health),
                last_modified,
                last_green_alert_generated: green,
                database_time_modified: db_time,
            },
        )
}

/// A valid record of `data_type`.
pub fn record_of(data_type: DataType) -> BoxedStrategy<Record> {
    match data_type {
        DataType::Alert => alert().prop_map(Record::from).boxed(),
        DataType::Configuration => configuration().prop_map(Record::from).boxed(),
        DataType::Event => event().prop_map(Record::from).boxed(),
        DataType::Metadata => metadata().prop_map(Record::from).boxed(),
        DataType::Performance => performance().prop_map(Record::from).boxed(),
        DataType::State => state().prop_map(Record::from).boxed(),
    }
}

/// A valid record of any type.
pub fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        alert().prop_map(Record::from),
        configuration().prop_map(Record::from),
        event().prop_map(Record::from),
        metadata().prop_map(Record::from),
        performance().prop_map(Record::from),
        state().prop_map(Record::from),
    ]
}

pub fn data_type() -> impl Strategy<Value = DataType> {
    proptest::sample::select(DataType::ALL.to_vec())
}

/// The fixed time all sample records use.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 34, 56).unwrap() + chrono::Duration::milliseconds(789)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0f8f_ad5b_d9cb_469f_a165_7086_7728_0000 + n)
}

/// One fixed record of each type, as in the golden files under `tests/data/records/`.
pub fn sample(data_type: DataType) -> Record {
    let t = t0();
    let later = t + chrono::Duration::minutes(3);
    match data_type {
        DataType::Alert => Record::from(Alert {
            alert_name: "Logical disk free space is low".into(),
            alert_description: "The disk C: on server \"web01\" has 4% free space.\nCheck it."
                .into(),
            base_managed_entity_id: id(1),
            problem_id: id(2),
            is_monitor_alert: true,
            rule_id: id(3),
            resolution_state: ResolutionState(17),
            priority: AlertPriority::HIGH,
            severity: AlertSeverity::WARNING,
            category: "PerformanceHealth".into(),
            owner: Some("CONTOSO\\ops".into()),
            resolved_by: None,
            time_raised: t,
            time_added: t,
            last_modified: later,
            last_modified_by: "System".into(),
            last_modified_except_repeat_count: later,
            time_resolved: Some(later),
            time_resolution_state_last_modified: later,
            time_resolution_state_last_modified_in_db: later,
            repeat_count: 2,
        }),
        DataType::Configuration => Record::Configuration(Configuration {
            customer_id: id(10),
            agent_id: id(11),
            entity_id: id(12),
            managed_type_id: id(13),
            managed_type_property_id: id(14),
            current_value: "Automatic (Delayed Start)".into(),
            change_date: t,
        }),
        DataType::Event => {
            let mut custom = CustomFields::new();
            custom.insert("SiteName", "Default Web Site");
            custom.insert("Bytes_Sent", 1_048_576);
            custom.insert("Tags", serde_json::json!(["iis", "prod"]));
            Record::from(Event {
                event_id: id(20),
                event_original_id: id(21),
                base_managed_entity_internal_id: 1001,
                rule_id: id(22),
                publisher_id: id(23),
                publisher_name: "Microsoft-Windows-IIS-W3SVC".into(),
                full_number: 1_073_743_833,
                number: 2009,
                category: 0,
                channel_level: ChannelLevel::ERROR,
                logging_computer: "web01.contoso.com".into(),
                event_data: "<DataItem type=\"System.XmlData\"><EventData><Data>Default Web Site</Data></EventData></DataItem>".into(),
                event_parameters: vec!["Default Web Site".into(), "503".into()],
                time_generated: t,
                time_added: later,
                custom,
            })
        }
        DataType::Metadata => Record::from(Metadata {
            base_managed_entity_id: id(30),
            object_status: Some("Active".into()),
            organizational_unit: Some("OU=Servers,DC=contoso,DC=com".into()),
            physical_processors: Some(2),
            ip_address: Some("10.0.0.15, fe80::1".into()),
            forest_dns_name: Some("contoso.com".into()),
            netbios_computer_name: Some("WEB01".into()),
            last_inventory_date: Some(t),
            host_server_name: Some("hv07.contoso.com".into()),
            is_virtual_machine: Some(true),
            logical_processors: Some(8),
            dns_name: Some("web01.contoso.com".into()),
            display_name: Some("web01.contoso.com".into()),
            offset_in_minute_from_greenwich_time: Some(-480),
            ..Metadata::default()
        }),
        DataType::Performance => Record::Performance(Performance {
            object_name: "Processor".into(),
            counter_name: "% Processor Time".into(),
            perfmon_instance_name: "_Total".into(),
            performance_data_id: id(40),
            performance_source_internal_id: 17,
            sample_value: 37.25,
            time_sampled: t,
            time_added: later,
        }),
        DataType::State => Record::from(State {
            state_change_event_id: id(50),
            state_id: id(51),
            new_health_state: HealthState::ERROR,
            old_health_state: HealthState::SUCCESS,
            context: "<Context><Property Name=\"FreeSpace\">4</Property></Context>".into(),
            time_generated: t,
            time_added: later,
            state_id2: id(52),
            base_managed_entity_id: id(53),
            monitor_id: id(54),
            health_state: HealthState::ERROR,
            last_modified: later,
            last_green_alert_generated: None,
            database_time_modified: later,
        }),
    }
}

/// One fixed record of each type with every optional field set (and, for
/// Event, custom fields of every JSON kind), as in the golden files under
/// `tests/data/records/full/`.
pub fn full_sample(data_type: DataType) -> Record {
    let t = t0();
    let later = t + chrono::Duration::minutes(3);
    match sample(data_type) {
        Record::Alert(mut a) => {
            a.resolved_by = Some("CONTOSO\\oncall".into());
            a.owner = Some("CONTOSO\\ops".into());
            a.time_resolved = Some(later + chrono::Duration::seconds(1));
            Record::Alert(a)
        }
        Record::Metadata(_) => Record::from(Metadata {
            base_managed_entity_id: id(30),
            object_status: Some("Active".into()),
            organizational_unit: Some("OU=Servers,DC=contoso,DC=com".into()),
            active_directory_object_sid: Some(
                "S-1-5-21-3623811015-3361044348-30300820-1013".into(),
            ),
            physical_processors: Some(2),
            network_name: Some("web01.contoso.com".into()),
            ip_address: Some("10.0.0.15, fe80::1".into()),
            forest_dns_name: Some("contoso.com".into()),
            netbios_computer_name: Some("WEB01".into()),
            virtual_machine_name: Some("web01-vm".into()),
            last_inventory_date: Some(t),
            host_server_name: Some("hv07.contoso.com".into()),
            is_virtual_machine: Some(true),
            netbios_domain_name: Some("CONTOSO".into()),
            logical_processors: Some(8),
            dns_name: Some("web01.contoso.com".into()),
            display_name: Some("web01.contoso.com".into()),
            domain_dns_name: Some("contoso.com".into()),
            active_directory_site: Some("Default-First-Site-Name".into()),
            principal_name: Some("web01.contoso.com".into()),
            offset_in_minute_from_greenwich_time: Some(-480),
        }),
        Record::State(mut s) => {
            s.last_green_alert_generated = Some(later);
            Record::State(s)
        }
        Record::Event(mut e) => {
            e.custom.insert("Nothing", serde_json::Value::Null);
            e.custom.insert("Enabled", false);
            e.custom.insert("Ratio", 0.125);
            e.custom.insert("Negative", -42);
            e.custom.insert(
                "Nested",
                serde_json::json!({"a": [1, {"b": null}], "é": "ü"}),
            );
            Record::Event(e)
        }
        other => other,
    }
}

/// CRC-32 (IEEE), bit by bit: independent of the crate's implementation,
/// for tests that edit frames and repair their checksums.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
