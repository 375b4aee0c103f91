//! Sample records of every one of the six types, shared by the core's
//! `examples/quickstart.rs` and opsdata-io's `examples/agent.rs` and
//! `tests/tls.rs`. Each includes what it uses.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use opsdata::{
    Alert, AlertPriority, AlertSeverity, BatchId, ChannelLevel, Configuration, CustomFields,
    DataType, Event, Frame, FrameEncoder, HealthState, Metadata, Performance, Record,
    ResolutionState, State, Tagged, TenantBatch, TenantId,
};
use uuid::Uuid;

/// One frame per data type, each holding agent `n`'s sample records of that
/// type for `tenant`, with batch ids from `next_id`.
pub fn frames(
    tenant: TenantId,
    now: DateTime<Utc>,
    n: usize,
    next_id: &mut dyn FnMut() -> BatchId,
) -> Vec<Frame> {
    let mut encoder = FrameEncoder::new();
    DataType::ALL
        .iter()
        .map(|&data_type| {
            let mut batch = TenantBatch::new(tenant, data_type);
            for record in sample_records(now, n) {
                if record.data_type() == data_type {
                    batch
                        .push(Tagged::new(tenant, record))
                        .expect("a record of the batch's type and tenant");
                }
            }
            encoder
                .encode_frame(&batch, next_id(), now)
                .expect("sample records fit the default limits")
        })
        .collect()
}

/// One or more records of every type, as agent `n` might collect them.
pub fn sample_records(now: DateTime<Utc>, n: usize) -> Vec<Record> {
    let computer = format!("web{n:02}.contoso.com");
    let entity = Uuid::new_v4();
    let earlier = now - Duration::minutes(5);
    let mut records = Vec::new();

    records.push(Record::from(Alert {
        alert_name: "Disk space low".into(),
        alert_description: format!("Logical disk C: on {computer} has less than 10% free space."),
        base_managed_entity_id: entity,
        problem_id: Uuid::new_v4(),
        is_monitor_alert: true,
        rule_id: Uuid::new_v4(),
        resolution_state: ResolutionState::NEW,
        priority: AlertPriority::HIGH,
        severity: AlertSeverity::CRITICAL,
        category: "Capacity".into(),
        owner: None,
        resolved_by: None,
        time_raised: earlier,
        time_added: now,
        last_modified: now,
        last_modified_by: "System".into(),
        last_modified_except_repeat_count: now,
        time_resolved: None,
        time_resolution_state_last_modified: now,
        time_resolution_state_last_modified_in_db: now,
        repeat_count: 0,
    }));

    records.push(Record::from(Configuration {
        customer_id: Uuid::new_v4(),
        agent_id: Uuid::new_v4(),
        entity_id: entity,
        managed_type_id: Uuid::new_v4(),
        managed_type_property_id: Uuid::new_v4(),
        current_value: "Automatic".into(),
        change_date: earlier,
    }));

    let mut custom = CustomFields::new();
    custom.insert("SiteName", "Default Web Site");
    custom.insert("HttpStatus", 503);
    records.push(Record::from(Event {
        event_id: Uuid::new_v4(),
        event_original_id: Uuid::new_v4(),
        base_managed_entity_internal_id: 1001,
        rule_id: Uuid::new_v4(),
        publisher_id: Uuid::new_v4(),
        publisher_name: "Microsoft-Windows-IIS".into(),
        full_number: 1_073_743_833,
        number: 2009,
        category: 0,
        channel_level: ChannelLevel::ERROR,
        logging_computer: computer.clone(),
        event_data: "<DataItem><Site>Default Web Site</Site></DataItem>".into(),
        event_parameters: vec!["Default Web Site".into(), "503".into()],
        time_generated: earlier,
        time_added: now,
        custom,
    }));

    records.push(Record::from(Metadata {
        base_managed_entity_id: entity,
        dns_name: Some(computer.clone()),
        display_name: Some(computer.clone()),
        ip_address: Some(format!("10.0.0.{}", 10 + n)),
        logical_processors: Some(8),
        physical_processors: Some(2),
        is_virtual_machine: Some(true),
        offset_in_minute_from_greenwich_time: Some(60),
        last_inventory_date: Some(now),
        ..Metadata::default()
    }));

    for (counter, value) in [("% Processor Time", 37.5), ("Available MBytes", 2048.0)] {
        records.push(Record::from(Performance {
            object_name: if counter.starts_with('%') {
                "Processor".into()
            } else {
                "Memory".into()
            },
            counter_name: counter.into(),
            perfmon_instance_name: "_Total".into(),
            performance_data_id: Uuid::new_v4(),
            performance_source_internal_id: 17,
            sample_value: value,
            time_sampled: now,
            time_added: now,
        }));
    }

    records.push(Record::from(State {
        state_change_event_id: Uuid::new_v4(),
        state_id: Uuid::new_v4(),
        new_health_state: HealthState::WARNING,
        old_health_state: HealthState::SUCCESS,
        context: "<Context><Free>9.5</Free></Context>".into(),
        time_generated: earlier,
        time_added: now,
        state_id2: Uuid::new_v4(),
        base_managed_entity_id: entity,
        monitor_id: Uuid::new_v4(),
        health_state: HealthState::WARNING,
        last_modified: now,
        last_green_alert_generated: None,
        database_time_modified: now,
    }));

    records
}
