//! `FileSpool` persist + remove throughput against raw sequential
//! `write_all` + `sync_data` of the same frames, one sync per frame, in the
//! same directory (under the target directory), in MB/s of frame bytes.
//!
//! - `spool/raw_write_sync/<size>`: append the frame's bytes to one file
//!   and `sync_data`; the file is cut back to empty every 16 MiB (as the
//!   spool's segments are recycled).
//! - `spool/persist_remove/<size>`: `FileSpool::persist` (append, sync)
//!   then `remove` (a 24-byte marker, not synced), with the default 16 MiB
//!   segments, so rolling, checkpoints and segment deletion are included.
//!
//! - `spool/persist_remove_sealed/<size>`: the same, the spool sealed at
//!   rest (`FileSpool::open_protected`, key in a key file): each persist
//!   seals the frame (AES-256-GCM, a fresh data key).
//!
//! The goals: the spool reaches at least 0.8 of raw; sealed, at least 0.9
//! of the unsealed spool.
//!
//! `cargo bench -p opsdata-io --bench spool`
#![allow(clippy::disallowed_methods)]

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use opsdata::Spool;
use opsdata_io::{FileSpool, KeyFileStore, SpoolConfig, SpoolProtection};

#[path = "../tests/common/mod.rs"]
mod common;

fn bench_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-spool-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn bench_spool(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    // Frames of about 1 KiB, 16 KiB and 256 KiB (codec none, so exact).
    for records in [2, 36, 580] {
        let frames: Vec<_> = (0..64).map(|n| common::frame(n, records, 200)).collect();
        let len = frames[0].len();
        let label = format!("{}KiB", len.div_ceil(1024));
        group.throughput(Throughput::Bytes(len as u64));

        let dir = bench_dir("raw");
        let path = dir.join("raw.log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut written = 0u64;
        let mut i = 0;
        group.bench_function(BenchmarkId::new("raw_write_sync", &label), |b| {
            b.iter(|| {
                if written > 16 << 20 {
                    file.set_len(0).unwrap();
                    file.seek(SeekFrom::Start(0)).unwrap();
                    written = 0;
                }
                file.write_all(frames[i % frames.len()].as_bytes()).unwrap();
                file.sync_data().unwrap();
                written += len as u64;
                i += 1;
            });
        });

        let dir = bench_dir("file");
        let config = SpoolConfig::new(1 << 30).unwrap();
        let (mut spool, _) = FileSpool::open(&dir, config).unwrap();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("persist_remove", &label), |b| {
            b.iter(|| {
                let f = &frames[i % frames.len()];
                spool.persist(f.batch_id(), f).unwrap();
                spool.remove(black_box(f.batch_id())).unwrap();
                i += 1;
            });
        });
        eprintln!(
            "spool {label}: frame {len} bytes, {} segments, {} bytes on disk at the end",
            spool.segments(),
            spool.disk_bytes()
        );
        drop(spool);

        let dir = bench_dir("sealed");
        let key = dir.join("spool.key");
        let config = config.with_sealed_at_rest(true).unwrap();
        let protection = SpoolProtection::new(
            KeyFileStore::new(&key),
            std::sync::Arc::new(chrono::Utc::now),
        );
        let (mut spool, _) =
            FileSpool::open_protected(dir.join("spool"), config, protection).unwrap();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("persist_remove_sealed", &label), |b| {
            b.iter(|| {
                let f = &frames[i % frames.len()];
                spool.persist(f.batch_id(), f).unwrap();
                spool.remove(black_box(f.batch_id())).unwrap();
                i += 1;
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_spool);
criterion_main!(benches);
