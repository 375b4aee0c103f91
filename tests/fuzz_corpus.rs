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
