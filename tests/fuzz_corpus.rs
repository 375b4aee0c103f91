//! Replays every committed fuzz seed (and any crash reproducer kept under
//! `fuzz/regressions/`) through the fuzz targets' logic, on stable, so a
//! regression found by fuzzing stays fixed.

#![allow(clippy::disallowed_methods)] // the test reads the corpus from disk

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("record_json", opsdata::fuzz::record_json),
    ("record_differential", opsdata::fuzz::record_differential),
    ("frame_decoder", opsdata::fuzz::frame_decoder),
    ("outbox_ops", opsdata::fuzz::outbox_ops),
    ("sealed_open", opsdata::fuzz::sealed_open),
    ("auth_headers", opsdata::fuzz::auth_headers),
    ("ingest_bytes", opsdata::fuzz::ingest_bytes),
    ("paging_token", opsdata::fuzz::paging_token),
];

#[test]
fn seed_corpora_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let mut count = 0;
        for dir in ["corpus", "regressions"] {
            let dir = root.join(dir).join(name);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Reproducers are optional; a seed corpus is not.
                Err(_) if dir.starts_with(root.join("regressions")) => continue,
                Err(e) => panic!("{dir:?}: {e}"),
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                target(&data);
                count += 1;
            }
        }
        assert!(count > 0, "no seeds for fuzz target {name}");
    }
}

// ---------------------------------------------------------------------------
// The paging-token seeds (moved from tests/export.rs: they need the
// `fuzzing` feature)
// ---------------------------------------------------------------------------

use chrono::{DateTime, TimeZone, Utc};
use opsdata::{DataType, Pager, PagingKey, Performance, Record, Tagged, TenantId};
use uuid::Uuid;

const QUERY: &str = "Performance | where CounterName == '% Processor Time'";

fn tenant_a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}

/// 2026-11-23T12:00:00Z, the documented vector's issue time.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// The key of the documented vector (docs/EXPORT.md): bytes 0, 1, …, 31.
fn vector_key() -> PagingKey {
    let mut key = [0u8; 32];
    for (i, b) in (0u8..).zip(key.iter_mut()) {
        *b = i;
    }
    PagingKey::from_bytes(key)
}

fn perf_rows(tenant: TenantId, n: usize) -> Vec<Tagged<Record>> {
    (0..n as u64)
        .map(|i| {
            Tagged::new(
                tenant,
                Record::from(Performance {
                    object_name: "Processor".into(),
                    counter_name: "% Processor Time".into(),
                    perfmon_instance_name: "_Total".into(),
                    performance_data_id: Uuid::from_u128(u128::from(i) + 1),
                    performance_source_internal_id: 7,
                    sample_value: i as f64 / 4.0,
                    time_sampled: now(),
                    time_added: now(),
                }),
            )
        })
        .collect()
}

#[test]
fn paging_token_seed_corpus_is_current() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/paging_token");
    let seeds = opsdata::fuzz::paging_token_seeds();
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = seeds.iter().map(|(n, _)| (*n).to_owned()).collect();
    names.sort();
    // Besides the generated seeds, the corpus holds inputs the fuzzer found
    // (`fuzz/minimize.sh`), named by libFuzzer after their SHA-1; any other
    // name is a generated seed that is no longer generated.
    let found_by_fuzzer = |n: &String| n.len() == 40 && n.bytes().all(|b| b.is_ascii_hexdigit());
    let generated: Vec<String> = on_disk
        .into_iter()
        .filter(|n| !found_by_fuzzer(n))
        .collect();
    assert_eq!(generated, names, "regenerate with UPDATE_CORPUS=1");
    for (name, bytes) in &seeds {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        opsdata::fuzz::paging_token(bytes);
    }
    // The valid seed is the documented vector, and it pages.
    let vector = &seeds
        .iter()
        .find(|(n, _)| *n == "offset-3-vector")
        .unwrap()
        .1;
    let pager = Pager::new(vector_key()).with_page_size(4).unwrap();
    let rows = perf_rows(tenant_a(), 10);
    let page = pager
        .page(
            tenant_a(),
            DataType::Performance,
            QUERY,
            Some(std::str::from_utf8(&vector[1..]).unwrap()),
            &rows,
            now(),
        )
        .unwrap();
    assert_eq!((page.offset, page.rows.len()), (3, 4));
}
