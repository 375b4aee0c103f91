//! Record JSON throughput: write, parse and validate ~1 MiB of Performance
//! records, in MB/s of JSON text.
//!
//! `cargo bench --bench records`

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opsdata::{DataType, Performance, Record, RecordLimits};
use std::hint::black_box;
use uuid::Uuid;

fn performance_records(target_bytes: usize) -> Vec<Record> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut records = Vec::new();
    let mut bytes = 0;
    let mut i = 0u32;
    while bytes < target_bytes {
        let t = t0 + Duration::milliseconds(i64::from(i) * 250);
        let r = Record::from(Performance {
            object_name: "LogicalDisk".into(),
            counter_name: "Avg. Disk sec/Transfer".into(),
            perfmon_instance_name: format!("C:{}", i % 4),
            performance_data_id: Uuid::from_u128(0x5eed_0000 + u128::from(i)),
            performance_source_internal_id: 17 + (i % 3) as i32,
            sample_value: f64::from(i % 1000) * 0.001_734,
            time_sampled: t,
            time_added: t + Duration::milliseconds(1234),
        });
        let mut line = Vec::new();
        r.write_json(&mut line);
        bytes += line.len() + 1;
        records.push(r);
        i += 1;
    }
    records
}

fn json_lines(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.write_json(&mut out);
        out.push(b'\n');
    }
    out
}

fn bench_records(c: &mut Criterion) {
    let records = performance_records(1 << 20);
    let payload = json_lines(&records);
    let limits = RecordLimits::default();

    let mut g = c.benchmark_group("records_1MiB_performance");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut out = Vec::with_capacity(payload.len());
    g.bench_function("write_json", |b| {
        b.iter(|| {
            out.clear();
            for r in &records {
                r.write_json(&mut out);
                out.push(b'\n');
            }
            black_box(out.len())
        })
    });
    g.bench_function("from_json", |b| {
        b.iter(|| {
            let mut n = 0;
            for line in payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let r = Record::from_json(DataType::Performance, line).unwrap();
                n += usize::from(matches!(r, Record::Performance(_)));
            }
            black_box(n)
        })
    });
    g.bench_function("validate", |b| {
        b.iter(|| {
            for r in &records {
                r.validate(&limits).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_records);
criterion_main!(benches);
