//! Replays every committed fuzz seed of opsdata-io's targets (and any crash
//! reproducer kept under `fuzz/regressions/`) through the targets' logic,
//! on stable, so a regression found by fuzzing stays fixed.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[("spool_recovery", opsdata_io::fuzz::spool_recovery)];

#[test]
fn seed_corpora_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
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
    opsdata_io::fuzz::spool_recovery_cleanup();
}

/// Writes the seed corpus of `spool_recovery` (`UPDATE_CORPUS=1`): spools
/// written by `FileSpool` itself, and damaged copies. The sealed seeds hold
/// fresh data keys, so the files change on each run: they are only
/// written when asked. Either way, every seed replays.
#[test]
fn spool_recovery_seeds_replay() {
    let seeds = opsdata_io::fuzz::spool_recovery_seeds();
    assert!(seeds.len() > 10);
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/spool_recovery");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (_, bytes) in &seeds {
        opsdata_io::fuzz::spool_recovery(bytes);
    }
    opsdata_io::fuzz::spool_recovery_cleanup();
}
