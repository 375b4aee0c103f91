//! What an agent's spool holds, and whether every frame in it is sound:
//! what an operator runs when an agent will not drain.
//!
//! Lists the frames per tenant and data type (batches, records, bytes, the
//! oldest batch's age), checks every frame's CRCs (header and body; with
//! `--records`, also inflates and parses every record), and prints what
//! recovery found (torn bytes cut, segments moved aside and why).
//!
//! Recovery may change a spool (it cuts a torn tail, moves a corrupt
//! segment aside), so by default the tool works on a copy in a temporary
//! directory and leaves the agent's spool as it is; `--in-place` runs on
//! the spool itself (stop the agent first: the spool is locked while an
//! agent holds it).
//!
//! ```text
//! cargo run -p opsdata-io --example spool -- /tmp/opsdata-pki/spool
//! cargo run -p opsdata-io --example spool -- --help
//! ```
//!
//! Exit status: 0 when every frame passes its checks and nothing was moved
//! aside; 2 otherwise; 1 when the spool cannot be read.

// An example may read the wall clock.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Parser;
use opsdata::{DataType, Frame, FrameLimits, PayloadReader, Spool, TenantId};
use opsdata_io::{FileSpool, KeyFileStore, SpoolConfig, SpoolProtection, system_clock};

/// Lists what an agent's spool holds (per tenant and data type: batches,
/// records, bytes, oldest age) and checks every frame's CRCs.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The spool directory (the agent example keeps it in <DIR>/spool).
    spool: PathBuf,
    /// The spool's bound on disk, in MiB, as the agent opens it (recovery
    /// needs it to check the segments).
    #[arg(long, default_value_t = 256)]
    spool_mib: u64,
    /// Also inflate and parse every record (slower; finds what the CRC
    /// cannot: records the writer got wrong).
    #[arg(long)]
    records: bool,
    /// Run recovery on the spool itself instead of a copy (it may cut a
    /// torn tail and move corrupt segments aside, as the agent would).
    #[arg(long)]
    in_place: bool,
    /// The spool key's file, for a spool sealed at rest (the agent example
    /// keeps it in <DIR>/spool.key); without it a protected spool does not
    /// open.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Tally {
    batches: u64,
    records: u64,
    bytes: u64,
    oldest: Option<DateTime<Utc>>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("spool: {e}");
            ExitCode::from(1)
        }
    }
}

/// Copies a directory tree (files and subdirectories), but not the lock
/// file of a running agent.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            bytes += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}

fn run(args: &Args) -> Result<bool, Box<dyn Error>> {
    if !args.spool.is_dir() {
        return Err(format!("{} is not a directory", args.spool.display()).into());
    }
    let copy = if args.in_place {
        None
    } else {
        let dir = std::env::temp_dir().join(format!("opsdata-spool-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = copy_tree(&args.spool, &dir)?;
        println!(
            "checking a copy of {} ({bytes} bytes) in {}",
            args.spool.display(),
            dir.display()
        );
        Some(dir)
    };
    let dir = copy.as_deref().unwrap_or(&args.spool);
    let config = SpoolConfig::new(args.spool_mib << 20)?;
    let limits = config.frame_limits();
    let result = check(dir, config, limits, args.records, args.key_file.as_deref());
    if copy.is_some() && matches!(result, Ok(false)) {
        println!(
            "(found on a copy: the agent's spool is unchanged; its next start's recovery does the same)"
        );
    }
    if let Some(copy) = &copy {
        let _ = std::fs::remove_dir_all(copy);
    }
    result
}

fn check(
    dir: &Path,
    config: SpoolConfig,
    limits: FrameLimits,
    deep: bool,
    key_file: Option<&Path>,
) -> Result<bool, Box<dyn Error>> {
    let (mut spool, found) = match key_file {
        Some(key) => {
            let protection = SpoolProtection::new(KeyFileStore::new(key), system_clock());
            FileSpool::open_protected(dir, config.with_sealed_at_rest(true)?, protection)?
        }
        None => FileSpool::open(dir, config)?,
    };
    println!(
        "recovery: {} frame(s), {} byte(s) held, {} byte(s) on disk in {} segment(s); {} torn byte(s) cut; {} stale segment(s) removed{}",
        found.frames,
        found.held_bytes,
        found.disk_bytes,
        found.segments,
        found.torn_bytes,
        found.stale_segments_removed,
        if found.checkpoint_ignored {
            "; checkpoint ignored (damaged or stale)"
        } else {
            ""
        }
    );
    let mut sound = found.moved_aside.is_empty() && found.damaged_frames.is_empty();
    for m in &found.moved_aside {
        println!(
            "MOVED ASIDE {} (damage from byte {}): {} byte(s) skipped, {} intact frame(s) kept",
            m.path.display(),
            m.offset,
            m.bytes_lost,
            m.frames_kept
        );
        for d in &m.damage {
            println!(
                "  skipped {} byte(s) at {}: {:?}",
                d.len, d.offset, d.reason
            );
        }
    }
    for d in &found.damaged_frames {
        println!(
            "DAMAGED {} batch {} of {} ({} record(s), segment {:x} at byte {}){}",
            d.data_type,
            d.batch_id,
            d.tenant,
            d.records,
            d.segment,
            d.offset,
            if d.lost {
                ": LOST"
            } else {
                ": another copy was kept, or it had been removed"
            }
        );
    }

    let now = Utc::now();
    let mut tally: BTreeMap<(TenantId, DataType), Tally> = BTreeMap::new();
    let mut bad = 0u64;
    let mut index = 0u64;
    let mut reader = PayloadReader::new(limits);
    spool.load(&mut |bytes| {
        index += 1;
        let len = bytes.len();
        // Frame::decode checks the header's and the body's CRC-32 and every
        // limit.
        let frame = match Frame::decode(bytes, &limits) {
            Ok(f) => f,
            Err(e) => {
                bad += 1;
                println!("BAD frame #{index} ({len} bytes): {} ({e})", e.check_name());
                return;
            }
        };
        if deep
            && !frame.header().sealed
            && let Err(e) = reader.records(&frame)
        {
            bad += 1;
            println!("BAD records in batch {}: {e}", frame.batch_id());
            return;
        }
        let h = frame.header();
        let t = tally.entry((h.tenant, h.data_type)).or_default();
        t.batches += 1;
        t.records += u64::from(h.record_count);
        t.bytes += frame.len() as u64;
        t.oldest = Some(t.oldest.map_or(h.created, |o| o.min(h.created)));
    })?;
    drop(spool);

    println!();
    println!(
        "{:<36}  {:<13}  {:>8}  {:>10}  {:>12}  {:>12}",
        "tenant", "data type", "batches", "records", "bytes", "oldest age"
    );
    let mut total = Tally::default();
    for ((tenant, data_type), t) in &tally {
        println!(
            "{:<36}  {:<13}  {:>8}  {:>10}  {:>12}  {:>12}",
            tenant.to_string(),
            data_type.to_string(),
            t.batches,
            t.records,
            t.bytes,
            t.oldest.map_or_else(String::new, |o| age(now - o))
        );
        total.batches += t.batches;
        total.records += t.records;
        total.bytes += t.bytes;
    }
    println!(
        "{:<36}  {:<13}  {:>8}  {:>10}  {:>12}",
        "total", "", total.batches, total.records, total.bytes
    );
    println!();
    if bad > 0 {
        println!("{bad} frame(s) failed their checks");
        sound = false;
    } else {
        println!(
            "every frame passed its checks{}",
            if deep { " (records parsed)" } else { " (CRCs)" }
        );
    }
    Ok(sound)
}

/// An age as days, hours, minutes and seconds (the largest two units).
fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    }
}
