//! Replays every committed fuzz seed of opsdata-io's targets (and any crash
//! reproducer kept under `fuzz/regressions/`) through the targets' logic,
//! on stable, so a regression found by fuzzing stays fixed.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("spool_recovery", opsdata_io::fuzz::spool_recovery),
    ("http_request", opsdata_io::fuzz::http_request),
];

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

/// Writes the seed corpus of `http_request` (`UPDATE_CORPUS=1`), and
/// replays it.
#[test]
fn http_request_seeds_replay() {
    let seeds = opsdata_io::fuzz::http_request_seeds();
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/http_request");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (_, bytes) in &seeds {
        opsdata_io::fuzz::http_request(bytes);
    }
}

#[allow(dead_code)]
#[path = "../examples/support/pki.rs"]
mod pki;

/// The certificates `http_request` authenticates its client with
/// (`src/fuzz/*.der`): an enrollment CA and an agent of
/// `opsdata_io::fuzz::WORKSPACE`, made with the tests' PKI helpers at the
/// target's fixed time, 2026-11-23T12:00:00Z. Written with
/// `UPDATE_CERTIFICATES=1`; either way, the agent's certificate must
/// authenticate under the CA at that time.
#[test]
fn http_request_certificates() {
    use chrono::TimeZone;
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fuzz");
    if std::env::var_os("UPDATE_CERTIFICATES").is_some() {
        let ca = pki::ca("opsdata fuzz enrollment CA", now).unwrap();
        let agent = pki::agent(
            &ca,
            opsdata_io::fuzz::WORKSPACE,
            "5f1c2b7e-0d7a-4c1e-9a53-6a1f0c2d9e11",
            now,
        )
        .unwrap();
        std::fs::write(dir.join("enrollment-ca.der"), &ca.der).unwrap();
        std::fs::write(dir.join("agent.der"), &agent.der).unwrap();
        return;
    }
    let ca = std::fs::read(dir.join("enrollment-ca.der")).unwrap();
    let agent = std::fs::read(dir.join("agent.der")).unwrap();
    let ca = opsdata::EnrollmentCa::new(&[ca.into()]).unwrap();
    let principal = ca.authenticate(&[agent.into()], now).unwrap();
    assert_eq!(
        principal.tenant(),
        opsdata_io::fuzz::WORKSPACE.parse().unwrap()
    );
}
