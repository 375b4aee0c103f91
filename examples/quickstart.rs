//! The main job on embedded defaults: build records of every type for two
//! workspaces, tag them, gather them into per-tenant, per-type batches,
//! validate them and print them as JSON Lines; then run them through the
//! pipeline: `Batcher` -> OPSF frames -> `Outbox` (driven by an `Agent`, with
//! an in-memory spool) -> an in-memory transport; read what the "service"
//! received back with the streaming decoder, checking each frame's tenant,
//! and print a summary.
//!
//! Run with `cargo run --release --example quickstart`.

// An example may read the wall clock and draw random ids; the library never does.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use opsdata::{
    Agent, Alert, AlertPriority, AlertSeverity, BatchId, Batcher, BatcherConfig, ChannelLevel,
    Configuration, CustomFields, DataType, Decoded, DeliveryEvent, DeliveryPolicy, Event,
    FrameDecoder, FrameEncoder, FrameLimits, HealthState, MemorySpool, MemoryTransport, Metadata,
    Outbox, PayloadReader, Performance, Record, RecordLimits, ResolutionState, State, Tagged,
    TenantBatch, TenantId,
};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn Error>> {
    let now = Utc::now();
    let tenants: [TenantId; 2] = [
        "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?,
        "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?,
    ];
    let limits = RecordLimits::default();

    // What an agent collects, each record tagged with its workspace.
    let mut collected = Vec::new();
    for (i, &tenant) in tenants.iter().enumerate() {
        for record in sample_records(now, i) {
            collected.push(Tagged::new(tenant, record));
        }
    }

    // Gather per (tenant, data type): the unit a frame will carry.
    let mut batches: BTreeMap<(TenantId, DataType), TenantBatch> = BTreeMap::new();
    for tagged in collected.iter().cloned() {
        tagged.item().validate(&limits)?;
        let key = (tagged.tenant(), tagged.data_type());
        batches
            .entry(key)
            .or_insert_with(|| TenantBatch::new(key.0, key.1))
            .push(tagged)?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = Vec::new();
    let mut total = 0;
    for batch in batches.values() {
        writeln!(
            out,
            "# tenant {} · {} · {} record(s)",
            batch.tenant(),
            batch.data_type(),
            batch.len()
        )?;
        for record in batch.records() {
            line.clear();
            record.write_json(&mut line);
            line.push(b'\n');
            out.write_all(&line)?;
            total += 1;
        }
    }
    writeln!(
        out,
        "# {total} records in {} batches, all valid",
        batches.len()
    )?;

    // Frames: the Batcher closes per-tenant, per-type batches (here at
    // flush), the encoder writes them into one stream, and the decoder reads
    // the stream back, each frame checked against the tenant it names.
    let limits = FrameLimits::default();
    let mut batcher = Batcher::new(BatcherConfig::default(), &limits)?;
    for tagged in collected {
        batcher.push(now, tagged)?;
    }
    batcher.flush(now);
    let mut encoder = FrameEncoder::new();
    let mut agent = Agent::new(
        Outbox::new(DeliveryPolicy::default(), rand_seed()),
        MemoryTransport::new(),
        MemorySpool::new(),
    );
    let (mut frames, mut content) = (0, 0);
    while let Some(batch) = batcher.poll_batch() {
        let frame = encoder.encode_closed_frame(&batch, BatchId::new(Uuid::new_v4())?)?;
        frames += 1;
        content += frame.header().content_len as usize;
        agent.push(now, frame)?;
    }
    let delivered = std::iter::from_fn(|| agent.poll_event())
        .filter(|e| matches!(e, DeliveryEvent::Delivered { .. }))
        .count();
    // What the service received, as one byte stream.
    let stream: Vec<u8> = agent
        .transport()
        .delivered()
        .iter()
        .flat_map(|f| f.as_bytes().iter().copied())
        .collect();
    let mut reader = PayloadReader::new(limits);
    let mut read_back = 0;
    for tenant in tenants {
        let mut decoder = FrameDecoder::new(limits);
        decoder.push(&stream);
        while let Decoded::Frame(frame) = decoder.poll_frame()? {
            if frame.tenant() == tenant {
                read_back += reader.records(&frame)?.len();
            }
        }
        decoder.finish()?;
    }
    writeln!(
        out,
        "# {frames} frames, {} bytes for {content} bytes of JSON ({:.1}:1); {delivered} delivered, {read_back} records read back by tenant",
        stream.len(),
        content as f64 / stream.len() as f64
    )?;
    Ok(())
}

/// A seed for the outbox's retry jitter, from the OS.
fn rand_seed() -> u64 {
    u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// One or more records of every type, as agent `n` might collect them.
fn sample_records(now: DateTime<Utc>, n: usize) -> Vec<Record> {
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
