//! The 1 MiB batch of Performance records the frame and ingest benches
//! share, so both measure the same bytes.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkGroup, Throughput, measurement::WallTime};
use opsdata::{DataType, Performance, Record, Tagged, TenantBatch, TenantId};
use uuid::Uuid;

/// The sampling both benches use, with throughput in payload bytes.
pub fn configure(group: &mut BenchmarkGroup<'_, WallTime>, payload_len: usize) {
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(payload_len as u64));
}

/// `records` as one tenant's batch, and the tenant.
pub fn performance_batch(records: &[Record]) -> (TenantId, TenantBatch) {
    let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let mut batch = TenantBatch::new(tenant, DataType::Performance);
    for r in records {
        batch.push(Tagged::new(tenant, r.clone())).unwrap();
    }
    (tenant, batch)
}

/// The payload stays just below this many bytes.
pub const TARGET: usize = 1 << 20;

const OBJECTS: [(&str, &[&str], &[&str]); 4] = [
    (
        "Processor",
        &["% Processor Time", "% Privileged Time", "% User Time"],
        &["_Total", "0", "1", "2", "3"],
    ),
    (
        "Memory",
        &["Available MBytes", "Pages/sec", "% Committed Bytes In Use"],
        &[""],
    ),
    (
        "LogicalDisk",
        &[
            "Avg. Disk sec/Transfer",
            "Disk Reads/sec",
            "Disk Writes/sec",
            "% Free Space",
        ],
        &["_Total", "C:", "D:", "HarddiskVolume1"],
    ),
    (
        "Network Interface",
        &["Bytes Received/sec", "Bytes Sent/sec"],
        &[
            "Intel[R] Ethernet Connection I219-LM",
            "Microsoft Hyper-V Network Adapter",
        ],
    ),
];

/// Performance records whose JSON Lines payload is just below [`TARGET`],
/// with that payload.
pub fn performance_records() -> (Vec<Record>, Vec<u8>) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut records = Vec::new();
    let mut payload = Vec::with_capacity(TARGET);
    let mut line = Vec::new();
    for i in 0u32.. {
        let (object, counters, instances) = OBJECTS[i as usize % OBJECTS.len()];
        let n = (i as usize) / OBJECTS.len();
        let sampled = t0 + chrono::TimeDelta::milliseconds(i64::from(i) * 250 + i64::from(i % 7));
        let record = Record::from(Performance {
            object_name: object.into(),
            counter_name: counters[n % counters.len()].into(),
            perfmon_instance_name: instances[n % instances.len()].into(),
            performance_data_id: Uuid::from_u128(
                0x0193_5a1e_7c00_7000_8000_0000_0000_0000 | u128::from(i),
            ),
            performance_source_internal_id: 1000 + (i % 37) as i32,
            sample_value: f64::from(i.wrapping_mul(2_654_435_761) % 100_000) / 977.0,
            time_sampled: sampled,
            time_added: sampled + chrono::TimeDelta::milliseconds(1500 + i64::from(i % 113)),
        });
        line.clear();
        record.write_json(&mut line);
        line.push(b'\n');
        if payload.len() + line.len() >= TARGET {
            break;
        }
        payload.extend_from_slice(&line);
        records.push(record);
    }
    (records, payload)
}
