//! Fuzz target logic for the I/O companion, compiled only with the
//! `fuzzing` feature (as the core's `opsdata::fuzz`), so that stable builds
//! with the feature check it and `tests/fuzz_corpus.rs` replays the
//! committed seed corpora. The cargo-fuzz targets under `fuzz/` are
//! one-line wrappers around these functions. Each function panics only
//! when it finds a bug.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use chrono::DateTime;
use opsdata::{
    BatchId, Codec, DataType, Frame, FrameEncoder, FrameLimits, Performance, Record, Spool, Tagged,
    TenantBatch, TenantId,
};
use zeroize::Zeroizing;

use crate::clock::Clock;

mod http;
use crate::spool::{
    FileSpool, SPOOL_KEY_LEN, SpoolConfig, SpoolError, SpoolKeyBytes, SpoolKeyError, SpoolKeyStore,
    SpoolProtection, SpoolRecovery,
};
pub use http::{WORKSPACE, http_request, http_request_seeds};

// ---------------------------------------------------------------------------
// spool_recovery
// ---------------------------------------------------------------------------

/// The largest frame body of the fuzzed spools: small, so that a few KiB
/// of input hold several frames and segments.
const SPOOL_MAX_BODY: u32 = 1 << 10;

/// At most this many files come from one input.
const SPOOL_MAX_FILES: usize = 6;

/// At most this many operations after the recovery.
const SPOOL_MAX_OPS: usize = 24;

/// The spool key of every fuzzed protected spool (and of the protected
/// seeds): bytes 0, 1, …, 31.
const SPOOL_FUZZ_KEY: [u8; SPOOL_KEY_LEN] = {
    let mut k = [0u8; SPOOL_KEY_LEN];
    let mut i = 0;
    while i < SPOOL_KEY_LEN {
        k[i] = i as u8;
        i += 1;
    }
    k
};

/// A key store holding [`SPOOL_FUZZ_KEY`] in memory: no file, no keyring.
#[derive(Debug)]
struct FixedKey;

impl SpoolKeyStore for FixedKey {
    fn load(&self) -> Result<Option<SpoolKeyBytes>, SpoolKeyError> {
        Ok(Some(Zeroizing::new(SPOOL_FUZZ_KEY)))
    }

    fn store(&mut self, _key: &[u8; SPOOL_KEY_LEN]) -> Result<(), SpoolKeyError> {
        panic!("the fixed key store already holds a key: nothing may replace it")
    }

    fn survives_reboot(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "the fuzz harness's fixed key".to_owned()
    }
}

/// The spool settings an input's first byte chooses: bits 0–1 the segment
/// size (the smallest allowed, 2 KiB, 4 KiB, 64 KiB), bit 2 sealed at rest
/// (opened with [`FileSpool::open_protected`]), bit 3 removals synced, bit
/// 4 the smallest disk bound the settings allow (else 1 MiB).
fn spool_config(flags: u8) -> SpoolConfig {
    let limits = FrameLimits::default()
        .with_max_body(SPOOL_MAX_BODY)
        .expect("a valid body limit");
    let base = SpoolConfig::new(1 << 30)
        .and_then(|c| c.with_frame_limits(limits))
        .and_then(|c| c.with_sealed_at_rest(flags & 4 != 0))
        .expect("valid settings");
    let smallest = base.max_entry_len() + 20;
    let segment = [smallest, 2048, 4096, 1 << 16][usize::from(flags & 3)];
    let config = base
        .with_segment_bytes(segment)
        .expect("a valid segment size")
        .with_sync_removals(flags & 8 != 0);
    if flags & 16 == 0 {
        return config.with_max_disk_bytes(1 << 20).expect("1 MiB fits");
    }
    // The smallest bound accepted: a binary search over what `validated`
    // takes (monotone in the bound).
    let (mut lo, mut hi) = (0u64, 1u64 << 20);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if config.with_max_disk_bytes(mid).is_ok() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    config.with_max_disk_bytes(hi).expect("the bound found")
}

/// The directory the spool fuzz target works in, one per thread of the
/// process (under `/dev/shm` where it exists, so that syncs cost nothing;
/// else the system's temporary directory), made once and reused by every
/// execution. Nothing removes it at exit: the replay test does
/// ([`spool_recovery_cleanup`]).
fn spool_base() -> PathBuf {
    use std::sync::atomic::AtomicUsize;
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static BASE: PathBuf = {
            let shm = Path::new("/dev/shm");
            let root = if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let n = THREADS.fetch_add(1, Ordering::Relaxed);
            let base = root.join(format!("opsdata-fuzz-spool-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&base);
            fs::create_dir_all(&base).expect("the fuzz directory can be made");
            base
        };
    }
    BASE.with(Clone::clone)
}

/// Removes this thread's working directory of [`spool_recovery`].
pub fn spool_recovery_cleanup() {
    let _ = fs::remove_dir_all(spool_base());
}

/// The fixed clock of the protected spools, moved forward by the
/// operations (key rotation is due after days).
fn spool_clock(secs: &Arc<AtomicI64>) -> Clock {
    let s = secs.clone();
    Arc::new(move || DateTime::from_timestamp(s.load(Ordering::SeqCst), 0).expect("in range"))
}

/// 2026-11-23T12:00:00Z.
const SPOOL_EPOCH: i64 = 1_795_435_200;

/// A frame for the operations: tenant `tenant % 3`, `records % 4`
/// Performance records, uncompressed, batch id `id`.
fn spool_frame(id: BatchId, tenant: u8, records: u8) -> Frame {
    let t = TenantId::new(uuid::Uuid::from_u128(u128::from(tenant % 3) + 1)).expect("not nil");
    let now = DateTime::from_timestamp(SPOOL_EPOCH, 0).expect("in range");
    let recs = (0..records % 4).map(|i| {
        Tagged::new(
            t,
            Record::from(Performance {
                object_name: "Processor".into(),
                counter_name: "% Processor Time".into(),
                perfmon_instance_name: format!("cpu{i}"),
                performance_data_id: uuid::Uuid::from_u128(u128::from(i) + 1),
                performance_source_internal_id: i32::from(i),
                sample_value: f64::from(i),
                time_sampled: now,
                time_added: now,
            }),
        )
    });
    let batch = TenantBatch::from_records(t, DataType::Performance, recs).expect("one tenant");
    FrameEncoder::new()
        .with_codec(Codec::None)
        .encode_frame(&batch, id, now)
        .expect("a small batch encodes")
}

/// One file of a fuzzed spool directory: its name and contents.
struct SpoolFile<'a> {
    name: String,
    bytes: &'a [u8],
}

/// Splits an input of [`spool_recovery`] into its settings byte, files and
/// operations.
fn spool_split(data: &[u8]) -> Option<(u8, Vec<SpoolFile<'_>>, &[u8])> {
    let (&[flags, count], mut rest) = data.split_first_chunk::<2>()?;
    let mut files = Vec::new();
    for _ in 0..usize::from(count) % (SPOOL_MAX_FILES + 1) {
        let Some((&[kind, hi, lo], after)) = rest.split_first_chunk::<3>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo])).min(after.len());
        let (bytes, after) = after.split_at(len);
        rest = after;
        let name = match kind {
            0..=0x7f => format!("seg-{:016x}.log", kind),
            0x80..=0xbf => "CHECKPOINT".to_owned(),
            0xc0..=0xdf => "SPOOLKEY".to_owned(),
            0xe0..=0xef => "CHECKPOINT.tmp".to_owned(),
            // Not segments: ignored by recovery, which must leave them.
            0xf0..=0xf7 => format!("seg-{:016X}.log", u64::from(kind) + 0xa),
            _ => format!("seg-{:016x}.log.corrupt", kind & 7),
        };
        // A later file of the same name replaces an earlier one.
        files.retain(|f: &SpoolFile<'_>| f.name != name);
        files.push(SpoolFile { name, bytes });
    }
    Some((flags, files, rest))
}

/// Encodes a spool directory as an input of [`spool_recovery`] (the seeds
/// are real spools, written by [`FileSpool`]): the settings byte, every
/// segment and the checkpoint (and `SPOOLKEY`), then `ops`.
///
/// # Panics
///
/// If the directory cannot be read, or holds more than six such files or
/// a file over 64 KiB.
pub fn spool_recovery_input(flags: u8, dir: &Path, ops: &[u8]) -> Vec<u8> {
    let mut files: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .expect("a spool directory")
        .map(|e| e.expect("an entry").path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let kind = if name == "CHECKPOINT" {
            0x80
        } else if name == "SPOOLKEY" {
            0xc0
        } else if let Some(hex) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
        {
            let n = u64::from_str_radix(hex, 16).expect("a segment number");
            u8::try_from(n)
                .ok()
                .filter(|n| *n < 0x80)
                .expect("a small segment number")
        } else {
            continue;
        };
        files.push((kind, fs::read(&path).expect("readable")));
    }
    assert!(files.len() <= SPOOL_MAX_FILES, "too many files for a seed");
    let mut out = vec![flags, files.len() as u8];
    for (kind, bytes) in files {
        let len = u16::try_from(bytes.len()).expect("a file under 64 KiB");
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(ops);
    out
}

/// Opens the spool of the fuzz target's settings in `dir`.
fn spool_open(
    dir: &Path,
    config: SpoolConfig,
    protected: bool,
    secs: &Arc<AtomicI64>,
) -> Result<(FileSpool, SpoolRecovery), SpoolError> {
    if protected {
        FileSpool::open_protected(
            dir,
            config,
            SpoolProtection::new(FixedKey, spool_clock(secs)),
        )
    } else {
        FileSpool::open(dir, config)
    }
}

/// Loads every frame, checking each against every check of the core's
/// decoder (and that no batch id comes twice).
fn spool_load(spool: &mut FileSpool, limits: &FrameLimits) -> Vec<(BatchId, Bytes)> {
    let mut out = Vec::new();
    spool
        .load(&mut |bytes| out.push(bytes))
        .expect("a recovered spool loads");
    let mut ids = BTreeSet::new();
    out.into_iter()
        .map(|bytes| {
            let frame = Frame::decode(bytes.clone(), limits)
                .unwrap_or_else(|e| panic!("the spool handed out a frame failing a check: {e}"));
            assert!(ids.insert(frame.batch_id()), "a batch id loaded twice");
            (frame.batch_id(), bytes)
        })
        .collect()
}

/// The sum of the segment files' sizes in `dir`.
fn segment_bytes_on_disk(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("the spool directory")
        .map(|e| e.expect("an entry"))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_str().unwrap_or("");
            name.starts_with("seg-")
                && name.ends_with(".log")
                && name[4..name.len() - 4]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(|e| e.metadata().expect("stat").len())
        .sum()
}

/// `FileSpool` recovery from arbitrary bytes, then operations, then a
/// reopen.
///
/// Input: byte 0 chooses the settings (`spool_config`: segment size,
/// sealed at rest, synced removals, disk bound), byte 1 the number of
/// files (mod 7); each file is a kind byte (`0x00`–`0x7f`: the segment of
/// that number; `0x80`–`0xbf`: `CHECKPOINT`; `0xc0`–`0xdf`: `SPOOLKEY`;
/// `0xe0`–`0xef`: `CHECKPOINT.tmp`; above: files recovery ignores), a
/// big-endian u16 length and the contents. The rest is operations, two
/// bytes each (at most 24): persist a new frame or replace a held one,
/// remove a held batch or an unknown one, load, reopen, move the clock
/// forward by days and rotate keys.
///
/// Checks: opening never panics and fails only as documented (a spool
/// with `SPOOLKEY` opened unprotected: `ProtectionRequired`; protected,
/// with a `SPOOLKEY` from the input: its typed key errors, and then no
/// segment changed); every frame recovered passes every check of the
/// core's decoder, unprotected is found byte for byte in the input's
/// segments, and comes once; the report adds up (frames and held bytes
/// as loaded, disk bytes as on disk, skipped bytes as the ranges, losses
/// the lost damaged frames, none of them recovered); each operation does
/// what it says (`persist` may only be refused as `Full`, and either may
/// be refused for a segment number past `u64::MAX`, and then changes
/// nothing); and a reopen finds exactly the frames held, in
/// order, with nothing damaged, torn or moved aside.
pub fn spool_recovery(data: &[u8]) {
    let Some((flags, files, ops)) = spool_split(data) else {
        return;
    };
    let config = spool_config(flags);
    let protected = flags & 4 != 0;
    let limits = config.frame_limits();
    let dir = spool_base().join("spool");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("the spool directory can be made");
    for f in &files {
        fs::write(dir.join(&f.name), f.bytes).expect("a file can be written");
    }
    let has_key_file = files.iter().any(|f| f.name == "SPOOLKEY");
    let secs = Arc::new(AtomicI64::new(SPOOL_EPOCH));

    let (mut spool, report) = match spool_open(&dir, config, protected, &secs) {
        Ok(opened) => opened,
        Err(SpoolError::ProtectionRequired { .. }) if !protected && has_key_file => return,
        Err(
            e @ (SpoolError::KeysFile { .. }
            | SpoolError::WrongKey { .. }
            | SpoolError::Key(_)
            | SpoolError::SegmentNumbersExhausted { .. }),
        ) if protected && has_key_file => {
            // Refused before anything in the directory is touched.
            for f in &files {
                if f.name.starts_with("seg-") {
                    let now = fs::read(dir.join(&f.name))
                        .unwrap_or_else(|_| panic!("{e}: {} is gone", f.name));
                    assert_eq!(now, f.bytes, "{e}: {} changed", f.name);
                }
            }
            return;
        }
        // A valid checkpoint may name a first segment so high that no
        // segment can follow it: documented, refused with this error.
        Err(SpoolError::SegmentNumbersExhausted { .. }) => return,
        Err(e) => panic!("open failed on damaged contents: {e:?}"),
    };

    // The report adds up.
    let loaded = spool_load(&mut spool, &limits);
    assert_eq!(report.frames, loaded.len(), "frames reported");
    assert_eq!(spool.len(), loaded.len());
    let held: u64 = loaded.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(spool.held_bytes(), report.held_bytes, "held bytes reported");
    assert_eq!(held, report.held_bytes, "held bytes against the frames");
    assert_eq!(spool.disk_bytes(), report.disk_bytes);
    assert_eq!(
        segment_bytes_on_disk(&dir),
        report.disk_bytes,
        "disk bytes against the files"
    );
    let ranges: u64 = report
        .moved_aside
        .iter()
        .map(|m| {
            let sum: u64 = m.damage.iter().map(|r| r.len).sum();
            assert_eq!(sum, m.bytes_lost, "a segment's damage ranges");
            assert!(!m.damage.is_empty(), "moved aside without damage");
            assert!(m.path.is_file(), "the segment moved aside is kept");
            sum
        })
        .sum();
    assert_eq!(ranges, report.bytes_skipped, "skipped bytes");
    let lost: Vec<BatchId> = report
        .damaged_frames
        .iter()
        .filter(|d| d.lost)
        .map(|d| d.batch_id)
        .collect();
    assert_eq!(
        report.losses().count(),
        lost.len(),
        "one loss per lost frame"
    );
    for id in &lost {
        assert!(
            loaded.iter().all(|(l, _)| l != id),
            "a batch reported lost was recovered"
        );
    }
    if !protected {
        // Nothing recovered that was not written: every frame is in the
        // input's segments, byte for byte.
        for (id, bytes) in &loaded {
            let found = files.iter().any(|f| {
                f.name.starts_with("seg-")
                    && f.bytes.len() >= bytes.len()
                    && f.bytes.windows(bytes.len()).any(|w| w == &bytes[..])
            });
            assert!(found, "frame {id:?} is not in the input");
        }
    }

    // Operations against a model: the frames held, in persist order.
    let mut model = loaded;
    let mut next = 0u32;
    for op in ops.chunks(2).take(SPOOL_MAX_OPS) {
        let (op, arg) = (op[0], op.get(1).copied().unwrap_or(0));
        match op % 5 {
            0 => {
                let id = if arg & 0x80 != 0 && !model.is_empty() {
                    model[usize::from(arg) % model.len()].0
                } else {
                    next += 1;
                    BatchId::new(uuid::Uuid::from_u128(0xf0f0_0000 + u128::from(next)))
                        .expect("not nil")
                };
                let frame = spool_frame(id, arg, arg >> 2);
                match spool.persist(id, &frame) {
                    Ok(()) => {
                        model.retain(|(m, _)| *m != id);
                        model.push((id, frame.into_bytes()));
                    }
                    Err(SpoolError::Full { .. } | SpoolError::SegmentNumbersExhausted { .. }) => {}
                    Err(e) => panic!("persist failed: {e:?}"),
                }
            }
            1 => {
                let id = if model.is_empty() || arg & 0x80 != 0 {
                    BatchId::new(uuid::Uuid::from_u128(0xdead_0000 + u128::from(arg)))
                        .expect("not nil")
                } else {
                    model[usize::from(arg) % model.len()].0
                };
                match spool.remove(id) {
                    Ok(()) => model.retain(|(m, _)| *m != id),
                    // Its markers need a segment past the last: the frame
                    // stays stored.
                    Err(SpoolError::SegmentNumbersExhausted { .. }) => {}
                    Err(e) => panic!("remove failed: {e:?}"),
                }
            }
            2 => {
                let now = spool_load(&mut spool, &limits);
                assert!(now == model, "load differs from what was persisted");
            }
            3 => {
                drop(spool);
                spool = spool_reopen(&dir, config, protected, &secs, &model, &limits);
            }
            _ => {
                secs.fetch_add(i64::from(arg) * 86_400, Ordering::SeqCst);
                spool.rotate_keys().expect("rotation");
            }
        }
        assert_eq!(spool.len(), model.len(), "frames held");
        let held: u64 = model.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(spool.held_bytes(), held, "held bytes");
    }
    drop(spool);
    drop(spool_reopen(
        &dir, config, protected, &secs, &model, &limits,
    ));
}

/// Reopens a spool that was closed cleanly: it must hold exactly `model`,
/// with nothing to repair.
fn spool_reopen(
    dir: &Path,
    config: SpoolConfig,
    protected: bool,
    secs: &Arc<AtomicI64>,
    model: &[(BatchId, Bytes)],
    limits: &FrameLimits,
) -> FileSpool {
    let (mut spool, report) =
        spool_open(dir, config, protected, secs).expect("a clean spool reopens");
    assert!(
        report.moved_aside.is_empty()
            && report.damaged_frames.is_empty()
            && report.bytes_skipped == 0
            && report.torn_bytes == 0,
        "a clean spool reopened with damage: {report:?}"
    );
    let now = spool_load(&mut spool, limits);
    assert!(now == model, "a reopen lost or changed frames");
    spool
}

/// The seed corpus of [`spool_recovery`]: spools written by [`FileSpool`]
/// itself (plain and sealed at rest, with removals, several segments, a
/// checkpoint after compaction), the same damaged (a flipped byte in a
/// frame and in a marker, a torn tail, zeros after the tail, a bad
/// checkpoint, a bad segment header), and operations after them. The
/// sealed seeds hold fresh data keys, so they differ on each call.
///
/// # Panics
///
/// If a spool cannot be written (the seeds are made in this process's
/// working directory of the target).
pub fn spool_recovery_seeds() -> Vec<(String, Vec<u8>)> {
    // persist / remove / load / reopen / rotate, mixed.
    const OPS: &[u8] = &[0, 5, 0, 0x86, 1, 0, 2, 0, 3, 0, 0, 9, 1, 0x81, 4, 40, 2, 0];
    let secs = Arc::new(AtomicI64::new(SPOOL_EPOCH));
    let dir = spool_base().join("seed");
    let id = |n: u128| BatchId::new(uuid::Uuid::from_u128(n)).expect("not nil");
    let mut seeds = Vec::new();
    let mut write = |name: &str, flags: u8, frames: u128, remove: &[u128]| {
        let _ = fs::remove_dir_all(&dir);
        let config = spool_config(flags);
        let (mut spool, _) = spool_open(&dir, config, flags & 4 != 0, &secs).expect("a new spool");
        for n in 1..=frames {
            let n8 = u8::try_from(n % 256).expect("small");
            spool
                .persist(id(n), &spool_frame(id(n), n8, n8))
                .expect("persist");
            if remove.contains(&n) {
                spool.remove(id(n)).expect("remove");
            }
        }
        drop(spool);
        let input = spool_recovery_input(flags, &dir, &[]);
        seeds.push((format!("{name}-no-ops"), input.clone()));
        let mut with_ops = input;
        with_ops.extend_from_slice(OPS);
        seeds.push((name.to_owned(), with_ops));
    };
    write("plain-one-segment", 0b10, 5, &[2, 4]);
    write("plain-small-segments", 0b00, 7, &[1, 3, 6]);
    write("plain-synced-removals", 0b1001, 4, &[1]);
    // Enough persists and removals on small segments that compaction
    // runs and a checkpoint is written.
    write("plain-compacted", 0b00, 40, &(1..=36).collect::<Vec<_>>());
    write("plain-small-disk", 0b1_0000, 6, &[2]);
    write("sealed-one-segment", 0b110, 4, &[2]);
    write("sealed-small-segments", 0b100, 6, &[1, 5]);

    // Damaged copies of the plain one-segment spool: its only file is the
    // segment (kind, length, bytes after the two first bytes).
    let base = seeds
        .iter()
        .find(|(n, _)| n == "plain-one-segment-no-ops")
        .map(|(_, b)| b.clone())
        .expect("made above");
    // The largest segment: its length field's and its contents' offsets.
    let (mut at, mut seg) = (2, (0, 0, 0));
    for _ in 0..base[1] {
        let len = usize::from(u16::from_be_bytes([base[at + 1], base[at + 2]]));
        if base[at] < 0x80 && len > seg.2 {
            seg = (at + 1, at + 3, len);
        }
        at += 3 + len;
    }
    let (len_at, seg_at, seg_len) = seg;
    assert!(seg_len > 200, "a segment with frames");
    let mut damaged = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        edit(&mut b);
        b.extend_from_slice(OPS);
        seeds.push((name.to_owned(), b));
    };
    // A byte of the first frame's body (past its 64-byte header and CRC).
    damaged("damaged-frame-body", &|b| b[seg_at + 20 + 80] ^= 0x40);
    // A byte of the first frame's header.
    damaged("damaged-frame-header", &|b| b[seg_at + 20 + 10] ^= 0x01);
    // The segment header.
    damaged("damaged-segment-header", &|b| b[seg_at + 2] ^= 0x20);
    // The last byte of the segment: the tail entry fails.
    damaged("damaged-last-byte", &|b| b[seg_at + seg_len - 1] ^= 0xff);
    // A torn tail: the last 30 bytes cut off.
    damaged("torn-tail", &|b| {
        let len = u16::try_from(seg_len - 30).expect("small");
        b[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        b.drain(seg_at + seg_len - 30..seg_at + seg_len);
    });
    // Zeros after the tail, as a crash leaves when the file grew first.
    damaged("zeros-after-tail", &|b| {
        let len = u16::try_from(seg_len + 100).expect("small");
        b[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        b.splice(seg_at + seg_len..seg_at + seg_len, [0; 100]);
    });
    // A bad checkpoint beside the segment, and a stale temporary one.
    damaged("bad-checkpoint", &|b| {
        b[1] += 2;
        b.extend_from_slice(&[0x80, 0, 20]);
        b.extend_from_slice(b"\x89OPK\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        b.extend_from_slice(&[0xe0, 0, 4, 1, 2, 3, 4]);
    });
    // Nothing but operations.
    seeds.push(("empty-spool".to_owned(), [&[0, 0][..], OPS].concat()));
    seeds.push(("empty-sealed-spool".to_owned(), [&[4, 0][..], OPS].concat()));
    let _ = fs::remove_dir_all(&dir);
    seeds
}
