//! An outage, on a fake clock: one agent, two tenants, mixed record types.
//! The service is unreachable for tenant A from minute 10 to hour 3 and the
//! queue is small. The timeline shows the retries every 8 minutes, the move
//! to the queue after 2 hours, drops starting with Performance while the
//! service is still down, recovery, and, in an hourly line, tenant B's
//! deliveries going on unaffected; the tally proves that every record was
//! delivered or reported dropped.
//!
//! Run with `cargo run --example outage`.

use std::collections::BTreeMap;
use std::error::Error;

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    Agent, BatchId, Batcher, BatcherConfig, DataType, DeliveryEvent, DeliveryPolicy, FrameEncoder,
    FrameLimits, MemorySpool, MemoryTransport, Outbox, Record, Tagged, TenantId,
};
use uuid::Uuid;

/// The queue limit: small enough that tenant A's backlog fills it well
/// before the service comes back at 03:00.
const LIMIT: u64 = 32 << 10;

fn main() -> Result<(), Box<dyn Error>> {
    let start = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
    let a: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
    let b: TenantId = "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?;
    let name = |t: TenantId| if t == a { "A" } else { "B" };
    let clock = |t: DateTime<Utc>| {
        let m = (t - start).num_minutes();
        format!("{:02}:{:02}", m / 60, m % 60)
    };

    let limits = FrameLimits::default();
    let mut batcher = Batcher::new(
        BatcherConfig::default().with_max_age(Duration::minutes(1))?,
        &limits,
    )?;
    let mut encoder = FrameEncoder::new();
    // A small queue, so that tenant A's backlog fills it during the outage.
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(LIMIT)?
        .with_jitter_percent(0)?;
    let mut agent = Agent::new(
        Outbox::new(policy, 7),
        MemoryTransport::new(),
        MemorySpool::new(),
    );

    let outage = (start + Duration::minutes(10), start + Duration::hours(3));
    let end = start + Duration::hours(4);
    let mut pushed: BTreeMap<(TenantId, DataType), u64> = BTreeMap::new();
    let mut dropped: BTreeMap<(TenantId, DataType), u64> = BTreeMap::new();
    let mut deliveries: BTreeMap<TenantId, u64> = BTreeMap::new();
    // This hour's deliveries and drops, for the hourly line.
    let mut hour_delivered: BTreeMap<TenantId, u64> = BTreeMap::new();
    let mut hour_dropped: BTreeMap<(TenantId, DataType), u64> = BTreeMap::new();
    let mut next_id = 0u128;
    let mut now = start;
    println!("time  event");
    let mut was_down = false;
    while now <= end {
        let down = now >= outage.0 && now < outage.1;
        agent.transport_mut().set_reachable(a, !down);
        if down != was_down {
            let what = if down {
                "the service becomes unreachable for tenant A"
            } else {
                "the service is reachable again for tenant A (the outbox learns it at its next attempt)"
            };
            println!("{}  -- {what}", clock(now));
            was_down = down;
        }
        // What the agent collects this minute.
        let minute = (now - start).num_minutes();
        for tenant in [a, b] {
            for record in collect(now, minute) {
                batcher.push(now, Tagged::new(tenant, record))?;
            }
        }
        batcher.handle_timeout(now);
        while let Some(batch) = batcher.poll_batch() {
            next_id += 1;
            let id = BatchId::new(Uuid::from_u128(next_id))?;
            *pushed
                .entry((batch.tenant(), batch.data_type()))
                .or_default() += u64::from(batch.record_count());
            agent.push(now, encoder.encode_closed_frame(&batch, id)?)?;
        }
        agent.tick(now)?;
        while let Some(event) = agent.poll_event() {
            match event {
                DeliveryEvent::Delivered { tenant, .. } => {
                    *deliveries.entry(tenant).or_default() += 1;
                    *hour_delivered.entry(tenant).or_default() += 1;
                }
                DeliveryEvent::TenantOffline { tenant, .. } => {
                    println!(
                        "{}  tenant {} offline: cached, retrying every 8 minutes",
                        clock(now),
                        name(tenant)
                    );
                }
                DeliveryEvent::RetryScheduled {
                    tenant,
                    at,
                    attempt,
                } => {
                    println!(
                        "{}  tenant {} attempt {attempt} failed; next at {}",
                        clock(now),
                        name(tenant),
                        clock(at)
                    );
                }
                DeliveryEvent::Queued { tenant, batches } => {
                    println!(
                        "{}  tenant {} unreachable for 2 hours: {batches} batches queued, retrying with backoff",
                        clock(now),
                        name(tenant)
                    );
                }
                DeliveryEvent::TenantOnline { tenant } => {
                    println!(
                        "{}  tenant {} online: draining its backlog",
                        clock(now),
                        name(tenant)
                    );
                }
                DeliveryEvent::Dropped {
                    tenant,
                    data_type,
                    records,
                    ..
                } => {
                    let total = dropped.entry((tenant, data_type)).or_default();
                    if *total == 0 {
                        println!(
                            "{}  tenant {} queue full ({} KiB held): first {data_type} batch dropped, {records} records",
                            clock(now),
                            name(tenant),
                            agent.outbox().held_bytes() >> 10
                        );
                    }
                    *total += u64::from(records);
                    *hour_dropped.entry((tenant, data_type)).or_default() += 1;
                }
                other => println!("{}  {other:?}", clock(now)),
            }
        }
        // Step to the next minute, or to the agent's next retry if sooner.
        let next_minute = now + Duration::minutes(1);
        if (next_minute - start).num_minutes() % 60 == 0 {
            // The hourly lines: what each tenant got through, holds and lost.
            for (i, tenant) in [b, a].into_iter().enumerate() {
                let (held, bytes) = agent.outbox().tenant_held(tenant);
                let drops: Vec<String> = hour_dropped
                    .iter()
                    .filter(|((t, _), _)| *t == tenant)
                    .map(|((_, ty), n)| format!("{n} {ty}"))
                    .collect();
                let drops = if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                };
                let lead = if i == 0 {
                    format!("{}  hourly", clock(next_minute))
                } else {
                    String::new()
                };
                println!(
                    "{lead:<13} tenant {}: delivered {:>3} batches this hour, holds {held:>3} ({:>2} KiB), dropped {drops}",
                    name(tenant),
                    hour_delivered.get(&tenant).copied().unwrap_or(0),
                    bytes >> 10
                );
            }
            hour_delivered.clear();
            hour_dropped.clear();
        }
        now = agent
            .next_wakeup()
            .filter(|&w| w > now)
            .map_or(next_minute, |w| w.min(next_minute));
    }
    batcher.flush(now);
    while let Some(batch) = batcher.poll_batch() {
        next_id += 1;
        *pushed
            .entry((batch.tenant(), batch.data_type()))
            .or_default() += u64::from(batch.record_count());
        agent.push(
            now,
            encoder.encode_closed_frame(&batch, BatchId::new(Uuid::from_u128(next_id))?)?,
        )?;
    }
    agent.tick(now)?;
    while let Some(event) = agent.poll_event() {
        if let DeliveryEvent::Dropped {
            tenant,
            data_type,
            records,
            ..
        } = event
        {
            *dropped.entry((tenant, data_type)).or_default() += u64::from(records);
        }
    }

    // The tally: every record pushed was delivered or reported dropped.
    let mut delivered: BTreeMap<(TenantId, DataType), u64> = BTreeMap::new();
    for frame in agent.transport().delivered() {
        *delivered
            .entry((frame.tenant(), frame.data_type()))
            .or_default() += u64::from(frame.header().record_count);
    }
    println!("\ntenant  type           pushed  delivered  dropped");
    let mut ok = true;
    for (&(tenant, data_type), &n) in &pushed {
        let d = delivered.get(&(tenant, data_type)).copied().unwrap_or(0);
        let x = dropped.get(&(tenant, data_type)).copied().unwrap_or(0);
        ok &= n == d + x;
        println!(
            "{:<7} {:<14} {n:>6} {d:>10} {x:>8}",
            name(tenant),
            data_type.name()
        );
    }
    println!(
        "\nbatches delivered: A {}, B {}; still held: {}",
        deliveries.get(&a).copied().unwrap_or(0),
        deliveries.get(&b).copied().unwrap_or(0),
        agent.outbox().held_batches()
    );
    if !ok || agent.outbox().held_batches() != 0 {
        return Err("records unaccounted for".into());
    }
    println!("every record was delivered or reported dropped");
    Ok(())
}

/// The records collected at minute `m`: Performance every minute, Event
/// every 5, State every 15, Alert every 30, Metadata and Configuration
/// hourly.
fn collect(now: DateTime<Utc>, m: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let every = |n: i64| m % n == 0;
    let sample = |t: DataType| {
        let mut r = sample_record(t, now);
        if let Record::Performance(p) = &mut r {
            p.sample_value = (m % 100) as f64;
        }
        r
    };
    for _ in 0..4 {
        out.push(sample(DataType::Performance));
    }
    if every(5) {
        out.push(sample(DataType::Event));
    }
    if every(15) {
        out.push(sample(DataType::State));
    }
    if every(30) {
        out.push(sample(DataType::Alert));
    }
    if every(60) {
        out.push(sample(DataType::Metadata));
        out.push(sample(DataType::Configuration));
    }
    out
}

fn sample_record(t: DataType, now: DateTime<Utc>) -> Record {
    use opsdata::*;
    let id = Uuid::from_u128(now.timestamp_millis() as u128);
    match t {
        DataType::Performance => Record::from(Performance {
            object_name: "Processor".into(),
            counter_name: "% Processor Time".into(),
            perfmon_instance_name: "_Total".into(),
            performance_data_id: id,
            performance_source_internal_id: 1,
            sample_value: 0.0,
            time_sampled: now,
            time_added: now,
        }),
        DataType::Event => Record::from(Event {
            event_id: id,
            event_original_id: id,
            base_managed_entity_internal_id: 1,
            rule_id: id,
            publisher_id: id,
            publisher_name: "Service Control Manager".into(),
            full_number: 7036,
            number: 7036,
            category: 0,
            channel_level: ChannelLevel::INFORMATION,
            logging_computer: "web01".into(),
            event_data: "<DataItem/>".into(),
            event_parameters: vec!["W3SVC".into(), "running".into()],
            time_generated: now,
            time_added: now,
            custom: CustomFields::new(),
        }),
        DataType::State => Record::from(State {
            state_change_event_id: id,
            state_id: id,
            new_health_state: HealthState::SUCCESS,
            old_health_state: HealthState::WARNING,
            context: "<Context/>".into(),
            time_generated: now,
            time_added: now,
            state_id2: id,
            base_managed_entity_id: id,
            monitor_id: id,
            health_state: HealthState::SUCCESS,
            last_modified: now,
            last_green_alert_generated: None,
            database_time_modified: now,
        }),
        DataType::Alert => Record::from(Alert {
            alert_name: "Heartbeat".into(),
            alert_description: "Periodic alert".into(),
            base_managed_entity_id: id,
            problem_id: id,
            is_monitor_alert: false,
            rule_id: id,
            resolution_state: ResolutionState::NEW,
            priority: AlertPriority::LOW,
            severity: AlertSeverity::INFORMATION,
            category: "Custom".into(),
            owner: None,
            resolved_by: None,
            time_raised: now,
            time_added: now,
            last_modified: now,
            last_modified_by: "System".into(),
            last_modified_except_repeat_count: now,
            time_resolved: None,
            time_resolution_state_last_modified: now,
            time_resolution_state_last_modified_in_db: now,
            repeat_count: 0,
        }),
        DataType::Metadata => Record::from(Metadata {
            base_managed_entity_id: id,
            dns_name: Some("web01.contoso.com".into()),
            last_inventory_date: Some(now),
            ..Metadata::default()
        }),
        DataType::Configuration => Record::from(Configuration {
            customer_id: id,
            agent_id: id,
            entity_id: id,
            managed_type_id: id,
            managed_type_property_id: id,
            current_value: "Automatic".into(),
            change_date: now,
        }),
    }
}
