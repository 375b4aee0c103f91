//! [`FileSpool`]: a crash-safe [`opsdata::Spool`] on disk.
//!
//! The spool is an append-only log of **segments** in one directory. Each
//! entry is a frame exactly as encoded (`docs/FRAME.md` of the core), a
//! **removal marker** naming a batch id, or a **move record** followed by a
//! frame (a frame relocated by compaction, keeping its original place in the
//! persist order). A small **checkpoint** file names the first segment
//! recovery must read. The format is specified in `docs/SPOOL.md`.
//!
//! Durability: [`persist`](opsdata::Spool::persist) returns once the frame is
//! `sync_data`'d (and the directory synced when it created a segment).
//! [`remove`](opsdata::Spool::remove) writes its marker without syncing it
//! unless [`SpoolConfig::with_sync_removals`] asks: a marker lost to a power
//! failure only makes the agent send that batch again after restart, and the
//! service drops the duplicate by its batch id.
//!
//! A removal is not only a delivery, though: a batch the agent *dropped*
//! (rejected by the service, or pushed out of a full queue) is removed the
//! same way. If that marker is lost to a power failure, the dropped batch
//! comes back after restart: it can be reported dropped a second time, or
//! even be delivered after it was reported dropped. Hosts that must report
//! each drop exactly once should set
//! [`with_sync_removals(true)`](SpoolConfig::with_sync_removals) (or keep
//! their own durable record of drops, and remove such batches again after
//! recovery).
//!
//! Memory: the spool keeps an index of live batch ids (about 100 bytes
//! each); recovery and [`load`](opsdata::Spool::load) read one entry at a
//! time, never a whole segment, and no length read from disk is trusted
//! beyond [`SpoolConfig::max_frame_len`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use opsdata::{
    BatchId, FIXED_HEADER_LEN, FRAME_MAGIC, Frame, FrameError, FrameHeader, FrameLimits,
    SEAL_SECTION_LEN, Spool,
};

/// Magic of a segment file's header: `89 4F 50 47` (`\x89OPG`).
pub const SEGMENT_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'G'];
/// Magic of a removal marker: `89 4F 50 52` (`\x89OPR`).
pub const MARKER_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'R'];
/// Magic of a move record: `89 4F 50 4D` (`\x89OPM`).
pub const MOVE_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'M'];
/// Magic of the checkpoint file: `89 4F 50 4B` (`\x89OPK`).
pub const CHECKPOINT_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'K'];
/// Length of a segment header: magic, version, 3 reserved, segment number,
/// CRC-32.
pub const SEGMENT_HEADER_LEN: u64 = 20;
/// Length of a removal marker: magic, batch id, CRC-32.
pub const MARKER_LEN: u64 = 24;
/// Length of a move record: magic, original segment, original offset,
/// CRC-32.
pub const MOVE_LEN: u64 = 24;
/// Length of the checkpoint file: magic, version, 3 reserved, first
/// segment, CRC-32.
pub const CHECKPOINT_LEN: u64 = 20;

const FORMAT_VERSION: u8 = 1;
const CHECKPOINT_NAME: &str = "CHECKPOINT";
const CHECKPOINT_TMP: &str = "CHECKPOINT.tmp";
const LOCK_NAME: &str = "LOCK";
const CORRUPT_SUFFIX: &str = ".corrupt";
/// Room kept for each live frame's eventual removal marker, and the segment
/// header of a roll that marker might cause.
const MARKER_RESERVE: u64 = MARKER_LEN + SEGMENT_HEADER_LEN;

/// A [`SpoolConfig`] setting that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolConfigError {
    /// A segment must hold at least its header and the largest entry.
    #[error("segment_bytes {segment_bytes} is below the minimum {min}")]
    SegmentTooSmall {
        /// The size asked for.
        segment_bytes: u64,
        /// The smallest allowed with these frame limits.
        min: u64,
    },
    /// The disk bound must leave room for compaction and at least one
    /// largest frame in the outbox (see [`SpoolConfig::outbox_limit_bytes`]).
    #[error("max_disk_bytes {max_disk_bytes} is below the minimum {min}")]
    DiskTooSmall {
        /// The bound asked for.
        max_disk_bytes: u64,
        /// The smallest allowed with this segment size and frame limits.
        min: u64,
    },
}

/// The spool's settings, validated when set.
///
/// ```
/// use opsdata_io::SpoolConfig;
/// let config = SpoolConfig::new(512 << 20)?.with_segment_bytes(8 << 20)?;
/// assert_eq!(config.max_disk_bytes(), 512 << 20);
/// assert!(config.outbox_limit_bytes() < config.max_disk_bytes() / 2);
/// assert!(SpoolConfig::new(1 << 20).is_err());
/// # Ok::<(), opsdata_io::SpoolConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    max_disk_bytes: u64,
    segment_bytes: u64,
    limits: FrameLimits,
    sync_removals: bool,
}

impl SpoolConfig {
    /// Default segment size: 16 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

    /// Settings bounding the spool's files to `max_disk_bytes`, with
    /// 16 MiB segments, the default [`FrameLimits`], removals not synced.
    ///
    /// # Errors
    ///
    /// [`SpoolConfigError::DiskTooSmall`] if the bound leaves no room for
    /// one largest frame (about 68 MiB with the defaults).
    pub fn new(max_disk_bytes: u64) -> Result<Self, SpoolConfigError> {
        SpoolConfig {
            max_disk_bytes,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            limits: FrameLimits::default(),
            sync_removals: false,
        }
        .validated()
    }

    /// The size at which a segment is closed and the next one started.
    ///
    /// # Errors
    ///
    /// [`SpoolConfigError::SegmentTooSmall`] below the segment header plus
    /// the largest entry ([`max_entry_len`](Self::max_entry_len)),
    /// [`SpoolConfigError::DiskTooSmall`] if the disk bound no longer fits.
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Result<Self, SpoolConfigError> {
        self.segment_bytes = segment_bytes;
        self.validated()
    }

    /// The bound on the bytes of the segment files.
    ///
    /// # Errors
    ///
    /// [`SpoolConfigError::DiskTooSmall`] if it leaves no room for four
    /// largest frames (one for the outbox limit) besides the overhead of
    /// [`outbox_limit_bytes`](Self::outbox_limit_bytes).
    pub fn with_max_disk_bytes(mut self, max_disk_bytes: u64) -> Result<Self, SpoolConfigError> {
        self.max_disk_bytes = max_disk_bytes;
        self.validated()
    }

    /// The frame limits: frames over them are refused by `persist`, and
    /// lengths read from disk are trusted up to them only. Use the limits the
    /// agent's encoder uses.
    ///
    /// # Errors
    ///
    /// As [`with_segment_bytes`](Self::with_segment_bytes), since the
    /// largest entry changes.
    pub fn with_frame_limits(mut self, limits: FrameLimits) -> Result<Self, SpoolConfigError> {
        self.limits = limits;
        self.validated()
    }

    /// Whether `remove` syncs its marker (default no: for a delivered batch
    /// a lost marker only means a resend the service de-duplicates; for a
    /// dropped batch it means the batch comes back after a power failure
    /// and may be reported dropped twice, or delivered after being
    /// reported dropped, so hosts that must report drops exactly once
    /// should say yes).
    #[must_use]
    pub fn with_sync_removals(mut self, sync: bool) -> Self {
        self.sync_removals = sync;
        self
    }

    /// The bound on the bytes of the spool's segment files.
    #[must_use]
    pub fn max_disk_bytes(&self) -> u64 {
        self.max_disk_bytes
    }

    /// The segment size.
    #[must_use]
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The frame limits.
    #[must_use]
    pub fn frame_limits(&self) -> FrameLimits {
        self.limits
    }

    /// Whether removals are synced.
    #[must_use]
    pub fn sync_removals(&self) -> bool {
        self.sync_removals
    }

    /// The longest frame the limits allow: a sealed frame with the largest
    /// body (`64 + 68 + 4 + (max_body + 16) + 4`).
    #[must_use]
    pub fn max_frame_len(&self) -> u64 {
        (FIXED_HEADER_LEN + SEAL_SECTION_LEN + 4 + 16 + 4) as u64
            + u64::from(self.limits.max_body())
    }

    /// The longest entry: a move record and the longest frame.
    #[must_use]
    pub fn max_entry_len(&self) -> u64 {
        MOVE_LEN + self.max_frame_len()
    }

    /// Bytes of the disk bound not available to frames:
    /// `3·segment_bytes + max_frame_len + 108` (see
    /// [`outbox_limit_bytes`](Self::outbox_limit_bytes)).
    fn fixed_overhead(&self) -> u64 {
        3 * self.segment_bytes + self.max_frame_len() + 108
    }

    /// The [`opsdata::DeliveryPolicy::limit_bytes`] to configure the outbox
    /// with, so that the spool never reaches its bound in steady state:
    /// `(max_disk_bytes − 3·segment_bytes − max_frame_len − 108) / 4`.
    ///
    /// Why (the proof is in `docs/SPOOL.md`, *The disk bound*): with `L`
    /// bytes of frames held in `n` frames, a frame is at least 72 bytes, so
    /// `n ≤ L/72`; the live entries take `V ≤ L + 24n ≤ 4L/3` (a move
    /// record is 24 bytes) and the marker reserve is `44(n+1) ≤ 11L/18 +
    /// 44`. After compaction the files hold at most `2V + 2·segment_bytes`;
    /// a persist adds at most a frame, a segment header and its 44-byte
    /// reserve; a remove adds at most its marker and a segment header,
    /// which its frame's reserve already counted; compacting the oldest
    /// segment adds at most its live entries (under one segment) plus 44
    /// bytes per frame moved, each frame at most once per call. So the
    /// files and reserve never pass `35L/9 + 3·segment_bytes +
    /// max_frame_len + 108`, which `L ≤` this limit keeps within
    /// `max_disk_bytes` (`35/9 < 4`).
    #[must_use]
    pub fn outbox_limit_bytes(&self) -> u64 {
        self.max_disk_bytes.saturating_sub(self.fixed_overhead()) / 4
    }

    fn validated(self) -> Result<Self, SpoolConfigError> {
        let min_segment = SEGMENT_HEADER_LEN + self.max_entry_len();
        if self.segment_bytes < min_segment {
            return Err(SpoolConfigError::SegmentTooSmall {
                segment_bytes: self.segment_bytes,
                min: min_segment,
            });
        }
        // The outbox limit must hold at least one largest frame.
        let min_disk = self.fixed_overhead() + 4 * self.max_frame_len();
        if self.max_disk_bytes < min_disk {
            return Err(SpoolConfigError::DiskTooSmall {
                max_disk_bytes: self.max_disk_bytes,
                min: min_disk,
            });
        }
        Ok(self)
    }
}

/// Errors of [`FileSpool`]. Any error leaves what was already persisted
/// intact: a failed append is cut back off the file and not counted, and
/// later operations work once the cause is gone, except after a failed
/// sync: the spool is then [`Poisoned`](SpoolError::Poisoned) until it is
/// reopened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file system is full.
    #[error("disk full: {op} {}: {source}", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Storing the frame would pass [`SpoolConfig::max_disk_bytes`] (the
    /// room kept for the markers of live frames included). Nothing was
    /// written; configure the outbox with
    /// [`SpoolConfig::outbox_limit_bytes`] to never see this.
    #[error("spool full: {needed} more bytes needed, {used} of {max} used")]
    Full {
        /// Bytes the operation needed, marker reserve included.
        needed: u64,
        /// Bytes of segment files.
        used: u64,
        /// The bound.
        max: u64,
    },
    /// The frame is longer than the configured frame limits allow, so
    /// recovery would refuse it.
    #[error("frame of {len} bytes is over the spool's limit of {max}")]
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The longest allowed.
        max: u64,
    },
    /// An earlier sync failed, so what the spool holds in memory may no
    /// longer match the disk (a failed `fsync` may drop written pages, and
    /// a later one may report success without writing them). Every
    /// operation returns this until the spool is dropped and reopened,
    /// which recovers from what is really on disk. With the core's
    /// `Agent`, take it apart (`Agent::into_parts`), drop the spool, and
    /// build the agent again with `Agent::recover` over a newly opened one.
    #[error("an earlier sync failed: reopen the spool")]
    Poisoned,
    /// The next segment would need a number past `u64::MAX` (the directory
    /// holds a segment named `seg-ffffffffffffffff.log`): no segment can
    /// be started. Nothing was written.
    #[error("no segment number left after {} in {}", segment_name(*last), dir.display())]
    SegmentNumbersExhausted {
        /// The directory.
        dir: PathBuf,
        /// The last segment's number.
        last: u64,
    },
    /// Another [`FileSpool`] (in this or another process) has the directory
    /// open.
    #[error("spool directory {} is in use", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| {
        let path = path.to_path_buf();
        if source.kind() == io::ErrorKind::StorageFull {
            SpoolError::DiskFull { op, path, source }
        } else {
            SpoolError::Io { op, path, source }
        }
    }
}

/// Why recovery moved a segment aside.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The segment header is not a valid header for this segment.
    #[error("bad segment header")]
    SegmentHeader,
    /// An entry starts with none of the known magics.
    #[error("unknown entry magic {0:02x?}")]
    UnknownEntry([u8; 4]),
    /// A removal marker or move record fails its CRC.
    #[error("marker or move record fails its CRC")]
    RecordCrc,
    /// A removal marker passes its CRC but names the nil batch id, which
    /// no frame has.
    #[error("removal marker names the nil batch id")]
    NilMarker,
    /// A move record is not followed by a frame.
    #[error("move record not followed by a frame")]
    MoveWithoutFrame,
    /// A frame fails the core's checks.
    #[error("frame: {0}")]
    Frame(#[source] FrameError),
    /// A frame header declares a frame longer than the limits allow.
    #[error("frame of {len} bytes declared, limit {max}")]
    FrameTooLarge {
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The segment ends inside an entry, and it is not the last segment.
    #[error("segment ends inside an entry")]
    Truncated,
}

/// A segment recovery moved aside.
#[derive(Debug)]
#[non_exhaustive]
pub struct MovedAside {
    /// Where the segment now is (its name with `.corrupt` appended).
    pub path: PathBuf,
    /// Offset of the first entry that could not be read.
    pub offset: u64,
    /// Bytes from there to the end of the file: the frames and markers in
    /// them are lost (a lost marker brings its frame back: a resend,
    /// or a dropped batch held again).
    pub bytes_lost: u64,
    /// Live frames of the good prefix, re-appended to the spool.
    pub frames_kept: usize,
    /// Why.
    pub reason: Corruption,
}

/// What [`FileSpool::open`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
#[must_use]
pub struct SpoolRecovery {
    /// Live frames.
    pub frames: usize,
    /// Their bytes: the held bytes, recomputed from disk.
    pub held_bytes: u64,
    /// Bytes of segment files after recovery.
    pub disk_bytes: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes cut off the last segment: an incomplete last entry, or an
    /// unreadable one followed only by zeros (and those zeros).
    pub torn_bytes: u64,
    /// Segments moved aside, with what was kept and lost.
    pub moved_aside: Vec<MovedAside>,
    /// Segment files older than the checkpoint, deleted (left by a crash
    /// between a checkpoint and the deletion it allowed).
    pub stale_segments_removed: usize,
    /// Whether a checkpoint file was present but unreadable (recovery then
    /// reads every segment; at worst dead frames come back and are resent).
    pub checkpoint_ignored: bool,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    /// Offset of the frame itself (after its move record, if any).
    offset: u64,
    frame_len: u64,
    /// Frame plus its move record, if any.
    entry_len: u64,
    /// Place in the persist order: where the frame was first written.
    key: (u64, u64),
}

#[derive(Debug, Clone, Copy, Default)]
struct SegInfo {
    size: u64,
    live_frames: u64,
    live_bytes: u64,
}

/// A crash-safe [`Spool`] in a directory (format: `docs/SPOOL.md`).
///
/// An append-only log of segments holding frames exactly as encoded and
/// removal markers. [`persist`](Spool::persist) returns once the frame is
/// `sync_data`'d (and the directory synced when it created a segment);
/// [`remove`](Spool::remove) is not synced unless
/// [`SpoolConfig::with_sync_removals`] asks, since a marker lost to a power
/// failure only makes the agent resend the batch, which the service drops
/// by its batch id; but a lost marker of a *dropped* batch brings it back
/// (see the module docs: hosts that must report drops exactly once should
/// sync removals). Segments whose frames are all removed are deleted after
/// a checkpoint; the oldest segments are compacted while the files pass
/// twice the live entries plus two segments, so disk use stays bounded (see
/// [`SpoolConfig::outbox_limit_bytes`]). One `persist` may then move many
/// live frames (each at most once): the work of a call is not bounded by
/// a segment. Memory: an index of live batch ids
/// (about 100 bytes each); recovery and [`load`](Spool::load) read one entry
/// at a time.
///
/// ```
/// use opsdata::Spool;
/// use opsdata_io::{FileSpool, SpoolConfig};
/// # fn frame() -> opsdata::Frame {
/// #     use opsdata::*;
/// #     let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// #     let batch = TenantBatch::from_records(t, DataType::Event, std::iter::empty()).unwrap();
/// #     let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// #     FrameEncoder::new().encode_frame(&batch, BatchId::from_random_bytes([7; 16]), now).unwrap()
/// # }
/// let dir = std::env::temp_dir().join(format!("spool-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let config = SpoolConfig::new(256 << 20)?;
/// let (mut spool, recovery) = FileSpool::open(&dir, config)?;
/// assert_eq!(recovery.frames, 0);
/// let f = frame();
/// spool.persist(f.batch_id(), &f)?;
/// drop(spool);
///
/// let (mut spool, recovery) = FileSpool::open(&dir, config)?;
/// assert_eq!((recovery.frames, recovery.held_bytes), (1, f.len() as u64));
/// let mut loaded = Vec::new();
/// spool.load(&mut |bytes| loaded.push(bytes))?;
/// assert_eq!(loaded, vec![f.as_bytes().clone()]);
/// # drop(spool);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileSpool {
    dir: PathBuf,
    config: SpoolConfig,
    index: BTreeMap<BatchId, Loc>,
    order: BTreeMap<(u64, u64), BatchId>,
    segs: BTreeMap<u64, SegInfo>,
    tail_seg: u64,
    tail: File,
    /// The logical length of the tail: bytes beyond it are a failed append.
    tail_len: u64,
    /// A failed append could not be cut off yet.
    tail_dirty: bool,
    /// Bytes were appended to the tail since its last sync (markers, or
    /// frames relocated by compaction that the index now points at).
    tail_unsynced: bool,
    /// A sync failed: every operation returns [`SpoolError::Poisoned`].
    poisoned: bool,
    /// Test hook: make every sync fail.
    #[cfg(test)]
    fail_syncs: bool,
    /// Test hook: successful tail syncs.
    #[cfg(test)]
    tail_syncs: u64,
    disk_bytes: u64,
    held_bytes: u64,
    live_entry_bytes: u64,
    reader: Option<(u64, File)>,
    /// Held for the spool's life: the directory's lock.
    _lock: File,
}

fn segment_name(seg: u64) -> String {
    format!("seg-{seg:016x}.log")
}

/// The segment number of a segment file's name: `seg-`, 16 lower-case hex
/// digits, `.log`. Any other name (upper-case digits included) is not a
/// segment, and is ignored as the format says.
fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// Magic, version, three reserved bytes, a u64, CRC: the layout of segment
/// headers and checkpoints.
fn versioned_record(magic: [u8; 4], value: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&magic);
    b[4] = FORMAT_VERSION;
    b[8..16].copy_from_slice(&value.to_be_bytes());
    let c = crc(&b[..16]);
    b[16..].copy_from_slice(&c.to_be_bytes());
    b
}

fn parse_versioned_record(magic: [u8; 4], b: &[u8; 20]) -> Option<u64> {
    (b[..4] == magic
        && b[4] == FORMAT_VERSION
        && b[5..8] == [0, 0, 0]
        && u32_at(b, 16) == crc(&b[..16]))
    .then(|| u64_at(b, 8))
}

fn marker_record(batch_id: BatchId) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&MARKER_MAGIC);
    b[4..20].copy_from_slice(batch_id.as_bytes());
    let c = crc(&b[..20]);
    b[20..].copy_from_slice(&c.to_be_bytes());
    b
}

fn move_record(key: (u64, u64)) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&MOVE_MAGIC);
    b[4..12].copy_from_slice(&key.0.to_be_bytes());
    b[12..20].copy_from_slice(&key.1.to_be_bytes());
    let c = crc(&b[..20]);
    b[20..].copy_from_slice(&c.to_be_bytes());
    b
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), SpoolError> {
    // Directories cannot be opened for syncing here; renames and creations
    // are made durable by the file system's own journal, if any.
    Ok(())
}

/// One entry read by the scanner.
enum Entry {
    Frame {
        offset: u64,
        frame_len: u64,
        entry_len: u64,
        batch_id: BatchId,
        moved_from: Option<(u64, u64)>,
    },
    Marker {
        batch_id: BatchId,
    },
}

/// Why a scan stopped before the end of its file.
enum Stop {
    /// The file ends inside the entry.
    Incomplete,
    /// The entry is whole but bad.
    Bad(Corruption),
}

/// Reads a segment one entry at a time.
struct Scanner {
    reader: BufReader<File>,
    pos: u64,
    file_len: u64,
    max_frame_len: u64,
    limits: FrameLimits,
}

impl Scanner {
    fn remaining(&self) -> u64 {
        self.file_len - self.pos
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_exact(buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Whether every byte from here to the end of the file is zero (what a
    /// crash leaves when the file grew before its data was written).
    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 8 << 10];
        while self.remaining() > 0 {
            let n = usize::try_from(self.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
            self.read(&mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The next entry; `Ok(None)` at the end of the file. On a `Stop`, the
    /// entry started at the position before the call.
    fn next(&mut self) -> io::Result<Result<Option<Entry>, Stop>> {
        if self.remaining() == 0 {
            return Ok(Ok(None));
        }
        if self.remaining() < 4 {
            return Ok(Err(Stop::Incomplete));
        }
        let mut magic = [0u8; 4];
        self.read(&mut magic)?;
        match magic {
            MARKER_MAGIC | MOVE_MAGIC => {
                if self.remaining() < 20 {
                    return Ok(Err(Stop::Incomplete));
                }
                let mut rec = [0u8; 24];
                rec[..4].copy_from_slice(&magic);
                self.read(&mut rec[4..])?;
                if u32_at(&rec, 20) != crc(&rec[..20]) {
                    return Ok(Err(Stop::Bad(Corruption::RecordCrc)));
                }
                if magic == MARKER_MAGIC {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&rec[4..20]);
                    return Ok(match BatchId::new(uuid::Uuid::from_bytes(id)) {
                        Ok(batch_id) => Ok(Some(Entry::Marker { batch_id })),
                        Err(_) => Err(Stop::Bad(Corruption::NilMarker)),
                    });
                }
                let key = (u64_at(&rec, 4), u64_at(&rec, 12));
                if self.remaining() < 4 {
                    return Ok(Err(Stop::Incomplete));
                }
                let mut fmagic = [0u8; 4];
                self.read(&mut fmagic)?;
                if fmagic != FRAME_MAGIC {
                    return Ok(Err(Stop::Bad(Corruption::MoveWithoutFrame)));
                }
                Ok(self.frame_after_magic(Some(key))?)
            }
            FRAME_MAGIC => Ok(self.frame_after_magic(None)?),
            other => Ok(Err(Stop::Bad(Corruption::UnknownEntry(other)))),
        }
    }

    fn frame_after_magic(
        &mut self,
        moved_from: Option<(u64, u64)>,
    ) -> io::Result<Result<Option<Entry>, Stop>> {
        let offset = self.pos - 4;
        // The prefix: the fixed header, the seal section if SEALED, and the
        // header CRC, which covers the SEALED bit and body_len. Nothing in
        // the header is used before that CRC is checked: a length with a
        // flipped bit must not make a whole frame look cut short.
        let mut prefix = [0u8; FIXED_HEADER_LEN + SEAL_SECTION_LEN + 4];
        prefix[..4].copy_from_slice(&FRAME_MAGIC);
        if self.remaining() < 2 {
            return Ok(Err(Stop::Incomplete));
        }
        self.read(&mut prefix[4..6])?;
        let sealed = prefix[5] & 0x01 != 0;
        let hlen = FIXED_HEADER_LEN + if sealed { SEAL_SECTION_LEN } else { 0 };
        let prefix_len = hlen + 4;
        if self.remaining() < (prefix_len - 6) as u64 {
            return Ok(Err(Stop::Incomplete));
        }
        self.read(&mut prefix[6..prefix_len])?;
        let computed = crc(&prefix[..hlen]);
        let stored = u32_at(&prefix, hlen);
        if computed != stored {
            return Ok(Err(Stop::Bad(Corruption::Frame(FrameError::HeaderCrc {
                computed,
                stored,
            }))));
        }
        let mut head = [0u8; FIXED_HEADER_LEN];
        head.copy_from_slice(&prefix[..FIXED_HEADER_LEN]);
        let header = match FrameHeader::parse(&head) {
            Ok(h) => h,
            Err(e) => return Ok(Err(Stop::Bad(Corruption::Frame(e)))),
        };
        let frame_len = header.frame_len() as u64;
        if frame_len > self.max_frame_len {
            return Ok(Err(Stop::Bad(Corruption::FrameTooLarge {
                len: frame_len,
                max: self.max_frame_len,
            })));
        }
        let rest = frame_len - prefix_len as u64;
        if self.remaining() < rest {
            return Ok(Err(Stop::Incomplete));
        }
        // Bounded: frame_len ≤ max_frame_len, checked above.
        let mut bytes = vec![0u8; usize::try_from(frame_len).unwrap_or(usize::MAX)];
        bytes[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
        self.read(&mut bytes[prefix_len..])?;
        match Frame::decode(Bytes::from(bytes), &self.limits) {
            Ok(frame) => Ok(Ok(Some(Entry::Frame {
                offset,
                frame_len,
                entry_len: frame_len + if moved_from.is_some() { MOVE_LEN } else { 0 },
                batch_id: frame.batch_id(),
                moved_from,
            }))),
            Err(e) => Ok(Err(Stop::Bad(Corruption::Frame(e)))),
        }
    }
}

/// A segment whose scan stopped at a bad entry.
struct Damaged {
    seg: u64,
    good_len: u64,
    file_len: u64,
    reason: Corruption,
    /// Batch ids its good prefix removed: their markers are re-appended.
    removed: BTreeSet<BatchId>,
}

impl FileSpool {
    /// Opens (or creates) the spool in `dir` and recovers it: reads every
    /// segment from the checkpoint on, one entry at a time; cuts an
    /// incomplete last entry, or an unreadable one followed only by zeros,
    /// off the last segment; moves a
    /// segment with a bad entry elsewhere aside (`*.corrupt`), re-appending
    /// the live frames and markers of its good prefix; recomputes the held
    /// bytes from what is on disk.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Locked`] if another spool has `dir` open;
    /// [`SpoolError::Io`] / [`SpoolError::DiskFull`] if a file cannot be
    /// read, written, renamed or synced. Damaged contents are not errors:
    /// they are repaired and reported in [`SpoolRecovery`].
    pub fn open(
        dir: impl AsRef<Path>,
        config: SpoolConfig,
    ) -> Result<(FileSpool, SpoolRecovery), SpoolError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => return Err(io_error("lock", &lock_path)(e)),
        }
        let mut report = SpoolRecovery::default();

        // The checkpoint: segments before its first are dead.
        let ckpt_path = dir.join(CHECKPOINT_NAME);
        // At most one byte past a checkpoint's length is read: whatever
        // the file holds, a longer one is not a checkpoint.
        let read_checkpoint = || -> io::Result<Vec<u8>> {
            let mut b = Vec::with_capacity(21);
            File::open(&ckpt_path)?
                .take(CHECKPOINT_LEN + 1)
                .read_to_end(&mut b)?;
            Ok(b)
        };
        let first = match read_checkpoint() {
            Ok(b) => match <[u8; 20]>::try_from(b.as_slice())
                .ok()
                .and_then(|b| parse_versioned_record(CHECKPOINT_MAGIC, &b))
            {
                Some(first) => first,
                None => {
                    report.checkpoint_ignored = true;
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("read", &ckpt_path)(e)),
        };
        let tmp = dir.join(CHECKPOINT_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_error("remove", &tmp))?;
        }

        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            if let Some(seg) = entry.file_name().to_str().and_then(parse_segment_name) {
                found.push(seg);
            }
        }
        found.sort_unstable();
        let mut segments = Vec::new();
        for seg in found {
            if seg < first {
                let p = dir.join(segment_name(seg));
                fs::remove_file(&p).map_err(io_error("remove", &p))?;
                report.stale_segments_removed += 1;
            } else {
                segments.push(seg);
            }
        }
        report.segments = segments.len();

        let mut index: BTreeMap<BatchId, Loc> = BTreeMap::new();
        let mut order: BTreeMap<(u64, u64), BatchId> = BTreeMap::new();
        let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
        let mut damaged: Vec<Damaged> = Vec::new();
        let max_frame_len = config.max_frame_len();
        for (i, &seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let path = dir.join(segment_name(seg));
            let file = File::open(&path).map_err(io_error("open", &path))?;
            let file_len = file.metadata().map_err(io_error("stat", &path))?.len();
            let mut scanner = Scanner {
                reader: BufReader::with_capacity(64 << 10, file),
                pos: 0,
                file_len,
                max_frame_len,
                limits: config.limits,
            };
            let read_err = io_error("read", &path);
            let mut removed = BTreeSet::new();
            let header_ok = if file_len < SEGMENT_HEADER_LEN {
                None
            } else {
                let mut h = [0u8; 20];
                scanner.read(&mut h).map_err(read_err)?;
                Some(parse_versioned_record(SEGMENT_MAGIC, &h) == Some(seg))
            };
            let stop = match header_ok {
                None => Some((0, Stop::Incomplete)),
                Some(false) => Some((0, Stop::Bad(Corruption::SegmentHeader))),
                Some(true) => loop {
                    let at = scanner.pos;
                    match scanner.next().map_err(io_error("read", &path))? {
                        Ok(None) => break None,
                        Ok(Some(Entry::Marker { batch_id })) => {
                            if let Some(old) = index.remove(&batch_id) {
                                order.remove(&old.key);
                            }
                            removed.insert(batch_id);
                        }
                        Ok(Some(Entry::Frame {
                            offset,
                            frame_len,
                            entry_len,
                            batch_id,
                            moved_from,
                        })) => {
                            let key = moved_from.unwrap_or((seg, at));
                            let loc = Loc {
                                seg,
                                offset,
                                frame_len,
                                entry_len,
                                key,
                            };
                            if let Some(old) = index.insert(batch_id, loc) {
                                order.remove(&old.key);
                            }
                            order.insert(key, batch_id);
                            removed.remove(&batch_id);
                        }
                        Err(stop) => break Some((at, stop)),
                    }
                },
            };
            match stop {
                None => {
                    sizes.insert(seg, file_len);
                }
                Some((at, stop)) => {
                    let torn = last
                        && match &stop {
                            Stop::Incomplete => true,
                            // A bad entry followed by nothing but zeros to
                            // the end of the file (or by nothing at all) is
                            // what a crash leaves when the file grew before
                            // its data was written: torn too. Cutting it
                            // off loses only that entry.
                            Stop::Bad(_) => {
                                scanner.rest_is_zero().map_err(io_error("read", &path))?
                            }
                        };
                    if torn {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_error("open", &path))?;
                        if at == 0 {
                            // Not even a whole header: write it afresh.
                            f.set_len(0).map_err(io_error("truncate", &path))?;
                            (&f).write_all(&versioned_record(SEGMENT_MAGIC, seg))
                                .map_err(io_error("write", &path))?;
                            report.torn_bytes += file_len;
                            sizes.insert(seg, SEGMENT_HEADER_LEN);
                        } else {
                            f.set_len(at).map_err(io_error("truncate", &path))?;
                            report.torn_bytes += file_len - at;
                            sizes.insert(seg, at);
                        }
                        f.sync_data().map_err(io_error("sync", &path))?;
                    } else {
                        let reason = match stop {
                            Stop::Incomplete => Corruption::Truncated,
                            Stop::Bad(c) => c,
                        };
                        sizes.insert(seg, at);
                        damaged.push(Damaged {
                            seg,
                            good_len: at,
                            file_len,
                            reason,
                            removed,
                        });
                    }
                }
            }
        }

        // The tail: the last segment, unless it is damaged or missing.
        let last_seg = segments.last().copied();
        let tail_damaged = last_seg.is_some_and(|s| damaged.iter().any(|d| d.seg == s));
        let (tail_seg, create) = match last_seg {
            Some(s) if !tail_damaged => (s, false),
            Some(s) => (
                s.checked_add(1)
                    .ok_or_else(|| SpoolError::SegmentNumbersExhausted {
                        dir: dir.clone(),
                        last: s,
                    })?,
                true,
            ),
            None => (first.max(1), true),
        };
        let tail_path = dir.join(segment_name(tail_seg));
        let tail = OpenOptions::new()
            .create(create)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&tail_path)
            .map_err(io_error("open", &tail_path))?;
        if create {
            tail.set_len(0).map_err(io_error("truncate", &tail_path))?;
            (&tail)
                .write_all(&versioned_record(SEGMENT_MAGIC, tail_seg))
                .map_err(io_error("write", &tail_path))?;
            tail.sync_data().map_err(io_error("sync", &tail_path))?;
            sync_dir(&dir)?;
            sizes.insert(tail_seg, SEGMENT_HEADER_LEN);
        }
        let tail_len = sizes[&tail_seg];

        let mut segs: BTreeMap<u64, SegInfo> = sizes
            .iter()
            .map(|(&s, &size)| {
                (
                    s,
                    SegInfo {
                        size,
                        ..SegInfo::default()
                    },
                )
            })
            .collect();
        let mut held_bytes = 0;
        let mut live_entry_bytes = 0;
        for loc in index.values() {
            // Every location was read from a segment whose size is in
            // `sizes`, so the entry exists.
            let info = segs.entry(loc.seg).or_default();
            info.live_frames += 1;
            info.live_bytes += loc.entry_len;
            held_bytes += loc.frame_len;
            live_entry_bytes += loc.entry_len;
        }
        let mut spool = FileSpool {
            dir,
            config,
            index,
            order,
            segs,
            tail_seg,
            tail,
            tail_len,
            tail_dirty: false,
            tail_unsynced: false,
            poisoned: false,
            #[cfg(test)]
            fail_syncs: false,
            #[cfg(test)]
            tail_syncs: 0,
            disk_bytes: 0,
            held_bytes,
            live_entry_bytes,
            reader: None,
            _lock: lock,
        };
        spool.seek_tail()?;
        spool.disk_bytes = spool.segs.values().map(|s| s.size).sum();

        // Damaged segments: keep their good prefix, then move them aside.
        for d in damaged {
            let live: Vec<BatchId> = spool
                .order
                .values()
                .copied()
                .filter(|id| spool.index[id].seg == d.seg)
                .collect();
            for &id in &live {
                spool.relocate(id)?;
            }
            for &id in &d.removed {
                if !spool.index.contains_key(&id) {
                    spool.append(&marker_record(id))?;
                }
            }
            spool.sync_tail()?;
            let from = spool.dir.join(segment_name(d.seg));
            let mut to = from.clone().into_os_string();
            to.push(CORRUPT_SUFFIX);
            let to = PathBuf::from(to);
            fs::rename(&from, &to).map_err(io_error("rename", &from))?;
            spool.sync_directory()?;
            if let Some(info) = spool.segs.remove(&d.seg) {
                spool.disk_bytes -= info.size;
            }
            spool.reader = None;
            report.moved_aside.push(MovedAside {
                path: to,
                offset: d.good_len,
                bytes_lost: d.file_len - d.good_len,
                frames_kept: live.len(),
                reason: d.reason,
            });
        }
        let first_live = *spool.segs.keys().next().unwrap_or(&spool.tail_seg);
        spool.write_checkpoint(first_live)?;
        spool.maintain()?;

        report.frames = spool.index.len();
        report.held_bytes = spool.held_bytes;
        report.disk_bytes = spool.disk_bytes;
        Ok((spool, report))
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// Frames stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of the frames stored (what the outbox counts as held).
    #[must_use]
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Bytes of the segment files.
    #[must_use]
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Segment files.
    #[must_use]
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    fn tail_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.tail_seg))
    }

    fn seek_tail(&mut self) -> Result<(), SpoolError> {
        let path = self.tail_path();
        self.tail
            .seek(SeekFrom::Start(self.tail_len))
            .map_err(io_error("seek", &path))?;
        Ok(())
    }

    /// Cuts a failed append off the tail, if one is left.
    fn clean_tail(&mut self) -> Result<(), SpoolError> {
        if self.tail_dirty {
            let path = self.tail_path();
            self.tail
                .set_len(self.tail_len)
                .map_err(io_error("truncate", &path))?;
            self.seek_tail()?;
            self.tail_dirty = false;
        }
        Ok(())
    }

    /// Appends `parts` at the tail as one entry, rolling first if it would
    /// pass the segment size. Returns the segment and offset it starts at.
    /// On failure the bytes are cut off again (or on the next append).
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(u64, u64), SpoolError> {
        self.clean_tail()?;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if self.tail_len > SEGMENT_HEADER_LEN && self.tail_len + len > self.config.segment_bytes {
            self.roll()?;
        }
        let at = (self.tail_seg, self.tail_len);
        let path = self.tail_path();
        let mut result = Ok(());
        for p in parts {
            result = self.tail.write_all(p);
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            self.tail_dirty = true;
            // Best effort now; retried before the next append otherwise.
            let _ = self.clean_tail();
            return Err(io_error("write", &path)(e));
        }
        self.tail_len += len;
        self.tail_unsynced = true;
        self.disk_bytes += len;
        if let Some(info) = self.segs.get_mut(&self.tail_seg) {
            info.size += len;
        }
        Ok(at)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(u64, u64), SpoolError> {
        self.append_parts(&[bytes])
    }

    /// Fails with [`SpoolError::Poisoned`] once a sync has failed.
    fn check_poisoned(&self) -> Result<(), SpoolError> {
        if self.poisoned {
            return Err(SpoolError::Poisoned);
        }
        Ok(())
    }

    /// Runs a sync; a failure poisons the spool.
    fn sync_with(
        &mut self,
        sync: impl FnOnce(&Self) -> Result<(), SpoolError>,
    ) -> Result<(), SpoolError> {
        #[cfg(test)]
        if self.fail_syncs {
            self.poisoned = true;
            return Err(SpoolError::Io {
                op: "sync",
                path: self.dir.clone(),
                source: io::Error::other("test: sync fails"),
            });
        }
        let result = sync(self);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn sync_tail(&mut self) -> Result<(), SpoolError> {
        self.sync_with(|s| {
            let path = s.tail_path();
            s.tail.sync_data().map_err(io_error("sync", &path))
        })?;
        self.tail_unsynced = false;
        #[cfg(test)]
        {
            self.tail_syncs += 1;
        }
        Ok(())
    }

    fn sync_directory(&mut self) -> Result<(), SpoolError> {
        self.sync_with(|s| sync_dir(&s.dir))
    }

    /// Closes the tail (synced) and starts the next segment.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let seg =
            self.tail_seg
                .checked_add(1)
                .ok_or_else(|| SpoolError::SegmentNumbersExhausted {
                    dir: self.dir.clone(),
                    last: self.tail_seg,
                })?;
        self.sync_tail()?;
        let path = self.dir.join(segment_name(seg));
        let create = || -> io::Result<File> {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)?;
            f.write_all(&versioned_record(SEGMENT_MAGIC, seg))?;
            Ok(f)
        };
        let file = match create() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(io_error("create segment", &path)(e));
            }
        };
        if let Err(e) = self.sync_with(|_| file.sync_data().map_err(io_error("sync", &path))) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.sync_directory()?;
        self.tail = file;
        self.tail_seg = seg;
        self.tail_len = SEGMENT_HEADER_LEN;
        self.tail_dirty = false;
        self.disk_bytes += SEGMENT_HEADER_LEN;
        self.segs.insert(
            seg,
            SegInfo {
                size: SEGMENT_HEADER_LEN,
                ..SegInfo::default()
            },
        );
        Ok(())
    }

    fn read_entry(&mut self, loc: Loc) -> Result<Vec<u8>, SpoolError> {
        let path = self.dir.join(segment_name(loc.seg));
        if self.reader.as_ref().is_none_or(|(s, _)| *s != loc.seg) {
            let f = File::open(&path).map_err(io_error("open", &path))?;
            self.reader = Some((loc.seg, f));
        }
        let Some((_, f)) = self.reader.as_mut() else {
            unreachable!("the reader was set just above");
        };
        // Bounded: frame_len was checked against max_frame_len when the
        // frame was persisted or read back.
        let mut buf = vec![0u8; usize::try_from(loc.frame_len).unwrap_or(usize::MAX)];
        f.seek(SeekFrom::Start(loc.offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(io_error("read", &path))?;
        Ok(buf)
    }

    fn forget(&mut self, batch_id: BatchId) -> Option<Loc> {
        let loc = self.index.remove(&batch_id)?;
        self.order.remove(&loc.key);
        if let Some(info) = self.segs.get_mut(&loc.seg) {
            info.live_frames -= 1;
            info.live_bytes -= loc.entry_len;
        }
        self.held_bytes -= loc.frame_len;
        self.live_entry_bytes -= loc.entry_len;
        Some(loc)
    }

    fn remember(&mut self, batch_id: BatchId, loc: Loc) {
        self.forget(batch_id);
        self.index.insert(batch_id, loc);
        self.order.insert(loc.key, batch_id);
        if let Some(info) = self.segs.get_mut(&loc.seg) {
            info.live_frames += 1;
            info.live_bytes += loc.entry_len;
        }
        self.held_bytes += loc.frame_len;
        self.live_entry_bytes += loc.entry_len;
    }

    /// Re-appends a live frame at the tail behind a move record keeping its
    /// place in the persist order. Not synced.
    fn relocate(&mut self, batch_id: BatchId) -> Result<(), SpoolError> {
        let Some(&loc) = self.index.get(&batch_id) else {
            return Ok(());
        };
        let bytes = self.read_entry(loc)?;
        let (seg, start) = self.append_parts(&[&move_record(loc.key), &bytes])?;
        self.remember(
            batch_id,
            Loc {
                seg,
                offset: start + MOVE_LEN,
                frame_len: loc.frame_len,
                entry_len: MOVE_LEN + loc.frame_len,
                key: loc.key,
            },
        );
        Ok(())
    }

    /// Records `first` as the first live segment. Syncs the tail first if
    /// anything was appended since its last sync: the checkpoint lets
    /// older segments be deleted, and the copies compaction made of their
    /// frames (or anything else the index relies on) must be on disk
    /// before they are.
    fn write_checkpoint(&mut self, first: u64) -> Result<(), SpoolError> {
        if self.tail_unsynced {
            self.sync_tail()?;
        }
        let tmp = self.dir.join(CHECKPOINT_TMP);
        let mut f = File::create(&tmp).map_err(io_error("write checkpoint", &tmp))?;
        f.write_all(&versioned_record(CHECKPOINT_MAGIC, first))
            .map_err(io_error("write checkpoint", &tmp))?;
        self.sync_with(|_| f.sync_all().map_err(io_error("sync", &tmp)))?;
        drop(f);
        let path = self.dir.join(CHECKPOINT_NAME);
        fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
        self.sync_directory()
    }

    /// Marker room kept for the live frames (and one more).
    fn marker_reserve(&self, live: u64) -> u64 {
        MARKER_RESERVE * (live + 1)
    }

    /// Reclaims space: drops the oldest segments once nothing in them is
    /// live, and compacts the oldest segment (its live frames re-appended)
    /// while the files exceed twice the live entries plus two segments.
    /// Only the oldest segments are ever dropped, so a marker is never
    /// dropped before the frame it removes. Dropped segments are recorded
    /// in a checkpoint (the tail synced first) and deleted before the next
    /// segment is compacted, so the files never hold more than one
    /// segment's copies on top of what they held. Segments from the tail at
    /// the start of the call on are not compacted, so a frame is moved at
    /// most once per call. (The disk bound this keeps is proved in
    /// `docs/SPOOL.md`.)
    fn maintain(&mut self) -> Result<(), SpoolError> {
        let last = self.tail_seg;
        let mut dropped = Vec::new();
        while let Some((head, info)) = self
            .segs
            .iter()
            .map(|(&s, &i)| (s, i))
            .find(|(s, _)| !dropped.contains(s))
        {
            if head >= last {
                break;
            }
            if info.live_frames > 0 {
                self.drop_segments(&mut dropped)?;
                let slack = 2 * self.live_entry_bytes + 2 * self.config.segment_bytes;
                // Each copy gains at most a move record and may roll to a
                // new segment.
                let copy = info.live_bytes
                    + (MOVE_LEN + SEGMENT_HEADER_LEN) * info.live_frames
                    + SEGMENT_HEADER_LEN;
                let fits = self.disk_bytes + copy + self.marker_reserve(self.index.len() as u64)
                    <= self.config.max_disk_bytes;
                if self.disk_bytes <= slack || !fits {
                    break;
                }
                let live: Vec<BatchId> = self
                    .index
                    .iter()
                    .filter(|(_, l)| l.seg == head)
                    .map(|(id, _)| *id)
                    .collect();
                for id in live {
                    self.relocate(id)?;
                }
            }
            dropped.push(head);
        }
        self.drop_segments(&mut dropped)
    }

    /// Deletes `dropped`, the oldest segments, none of them live: records
    /// the first segment left in the checkpoint (which syncs the tail
    /// first), then unlinks them.
    fn drop_segments(&mut self, dropped: &mut Vec<u64>) -> Result<(), SpoolError> {
        if dropped.is_empty() {
            return Ok(());
        }
        let first = self
            .segs
            .keys()
            .copied()
            .find(|s| !dropped.contains(s))
            .unwrap_or(self.tail_seg);
        self.write_checkpoint(first)?;
        for seg in dropped.drain(..) {
            let path = self.dir.join(segment_name(seg));
            if self.reader.as_ref().is_some_and(|(s, _)| *s == seg) {
                self.reader = None;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // The checkpoint already says it is dead: the next open
                // deletes it.
                Err(e) => return Err(io_error("remove", &path)(e)),
            }
            if let Some(info) = self.segs.remove(&seg) {
                self.disk_bytes -= info.size;
            }
        }
        Ok(())
    }
}

impl Spool for FileSpool {
    type Error = SpoolError;

    /// Appends the frame and syncs it. A batch id already stored is
    /// replaced (the new frame takes the end of the order).
    ///
    /// # Errors
    ///
    /// [`SpoolError::FrameTooLarge`] over the frame limits;
    /// [`SpoolError::Full`] if it would pass the disk bound;
    /// [`SpoolError::Io`] / [`SpoolError::DiskFull`] from the file system.
    /// The frame is then not stored and nothing stored changes.
    /// [`SpoolError::Poisoned`] once a sync has failed (this call's
    /// included: the spool must be reopened).
    fn persist(&mut self, batch_id: BatchId, frame: &Frame) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        let len = frame.len() as u64;
        let max = self.config.max_frame_len();
        if len > max {
            return Err(SpoolError::FrameTooLarge { len, max });
        }
        self.maintain()?;
        let replaced = u64::from(self.index.contains_key(&batch_id));
        let live = self.index.len() as u64 + 1 - replaced;
        let needed = len + SEGMENT_HEADER_LEN + self.marker_reserve(live);
        if self.disk_bytes + needed > self.config.max_disk_bytes {
            return Err(SpoolError::Full {
                needed,
                used: self.disk_bytes,
                max: self.config.max_disk_bytes,
            });
        }
        let (seg, offset) = self.append(frame.as_bytes())?;
        if let Err(e) = self.sync_tail() {
            // Not known to be stored: cut it off, so it is not counted now
            // and not found by recovery if the cut succeeds.
            self.tail_len = offset;
            self.disk_bytes -= len;
            if let Some(info) = self.segs.get_mut(&seg) {
                info.size -= len;
            }
            self.tail_dirty = true;
            let _ = self.clean_tail();
            return Err(e);
        }
        self.remember(
            batch_id,
            Loc {
                seg,
                offset,
                frame_len: len,
                entry_len: len,
                key: (seg, offset),
            },
        );
        Ok(())
    }

    /// Appends a removal marker (synced only with
    /// [`SpoolConfig::with_sync_removals`]). A batch id not stored writes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Io`] / [`SpoolError::DiskFull`]; the frame then stays
    /// stored. [`SpoolError::Poisoned`] once a sync has failed.
    fn remove(&mut self, batch_id: BatchId) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        if !self.index.contains_key(&batch_id) {
            return Ok(());
        }
        self.append(&marker_record(batch_id))?;
        if self.config.sync_removals {
            // The marker is written: a failed sync leaves it to the page
            // cache, and the frame counts as removed either way.
            let synced = self.sync_tail();
            self.forget(batch_id);
            return synced;
        }
        self.forget(batch_id);
        Ok(())
    }

    /// Hands every stored frame to `sink` in persist order, reading one
    /// frame at a time.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Io`] if a segment cannot be read;
    /// [`SpoolError::Poisoned`] once a sync has failed.
    fn load(&mut self, sink: &mut dyn FnMut(Bytes)) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        let locs: Vec<Loc> = self.order.values().map(|id| self.index[id]).collect();
        for loc in locs {
            let bytes = self.read_entry(loc)?;
            sink(Bytes::from(bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn frame(n: u8) -> Frame {
        use opsdata::{DataType, FrameEncoder, TenantBatch, TenantId};
        let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let batch = TenantBatch::from_records(t, DataType::Event, std::iter::empty()).unwrap();
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        FrameEncoder::new()
            .encode_frame(&batch, BatchId::from_random_bytes([n.max(1); 16]), now)
            .unwrap()
    }

    /// Small segments: a few empty frames fill one.
    fn config() -> SpoolConfig {
        let limits = FrameLimits::default().with_max_body(1 << 10).unwrap();
        SpoolConfig::new(1 << 30)
            .unwrap()
            .with_frame_limits(limits)
            .unwrap()
            .with_segment_bytes(2 << 10)
            .unwrap()
    }

    #[test]
    fn regression_copies_are_synced_before_their_originals_are_deleted() {
        let d = test_dir("copies");
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        let mut ids = Vec::new();
        let mut n = 1u8;
        while spool.segments() < 3 {
            let f = frame(n);
            spool.persist(f.batch_id(), &f).unwrap();
            ids.push(f.batch_id());
            n += 1;
        }
        let head = *spool.segs.keys().next().unwrap();
        let in_head: Vec<BatchId> = ids
            .iter()
            .copied()
            .filter(|id| spool.index[id].seg == head)
            .collect();
        assert!(in_head.len() >= 3);
        // A compaction that copied two frames and then failed: the copies
        // are in the index but not synced.
        spool.relocate(in_head[0]).unwrap();
        spool.relocate(in_head[1]).unwrap();
        assert!(spool.tail_unsynced);
        // The head's other frames are removed (markers not synced either).
        for id in &in_head[2..] {
            spool.remove(*id).unwrap();
        }
        assert_eq!(spool.segs[&head].live_frames, 0);
        let syncs = spool.tail_syncs;
        spool.maintain().unwrap();
        assert!(!spool.segs.contains_key(&head), "the head was dropped");
        assert!(spool.tail_syncs > syncs, "the copies were synced first");
        assert!(!spool.tail_unsynced);
        drop(spool);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn regression_the_last_segment_number_is_a_typed_error_not_an_overflow() {
        // A valid last segment numbered u64::MAX: opens, but cannot roll.
        let d = test_dir("max-seg");
        fs::create_dir_all(&d).unwrap();
        let path = d.join(segment_name(u64::MAX));
        fs::write(&path, versioned_record(SEGMENT_MAGIC, u64::MAX)).unwrap();
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        let mut result = Ok(());
        for n in 1..=u8::MAX {
            let f = frame(n);
            result = spool.persist(f.batch_id(), &f);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(
                result,
                Err(SpoolError::SegmentNumbersExhausted { last: u64::MAX, .. })
            ),
            "{result:?}"
        );
        drop(spool);
        // A damaged last segment numbered u64::MAX: nowhere to re-append.
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0x55; 40]);
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            FileSpool::open(&d, config()),
            Err(SpoolError::SegmentNumbersExhausted { last: u64::MAX, .. })
        ));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn regression_a_failed_sync_poisons_the_spool_until_reopened() {
        let d = test_dir("poison");
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        let a = frame(1);
        spool.persist(a.batch_id(), &a).unwrap();
        spool.fail_syncs = true;
        let b = frame(2);
        assert!(matches!(
            spool.persist(b.batch_id(), &b),
            Err(SpoolError::Io { .. })
        ));
        // The cause is gone, but memory can no longer be trusted.
        spool.fail_syncs = false;
        assert!(matches!(
            spool.persist(b.batch_id(), &b),
            Err(SpoolError::Poisoned)
        ));
        assert!(matches!(
            spool.remove(a.batch_id()),
            Err(SpoolError::Poisoned)
        ));
        assert!(matches!(spool.load(&mut |_| {}), Err(SpoolError::Poisoned)));
        drop(spool);
        let (mut spool, rec) = FileSpool::open(&d, config()).unwrap();
        assert_eq!(rec.frames, 1);
        spool.persist(b.batch_id(), &b).unwrap();
        drop(spool);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let h = versioned_record(SEGMENT_MAGIC, 42);
        assert_eq!(parse_versioned_record(SEGMENT_MAGIC, &h), Some(42));
        assert_eq!(parse_versioned_record(CHECKPOINT_MAGIC, &h), None);
        for i in 0..h.len() {
            let mut bad = h;
            bad[i] ^= 1;
            assert_eq!(
                parse_versioned_record(SEGMENT_MAGIC, &bad),
                None,
                "byte {i}"
            );
        }
        let id = BatchId::from_random_bytes([3; 16]);
        let m = marker_record(id);
        assert_eq!(m.len() as u64, MARKER_LEN);
        assert_eq!(u32_at(&m, 20), crc(&m[..20]));
        let mv = move_record((7, 9));
        assert_eq!((u64_at(&mv, 4), u64_at(&mv, 12)), (7, 9));
    }

    #[test]
    fn segment_names_parse_strictly() {
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert_eq!(parse_segment_name("seg-0000000000000abc.log.corrupt"), None);
        assert_eq!(parse_segment_name("seg-abc.log"), None);
        assert_eq!(parse_segment_name("seg-000000000000zabc.log"), None);
        assert_eq!(parse_segment_name("CHECKPOINT"), None);
        assert_eq!(parse_segment_name("seg-0000000000000ABC.log"), None);
        assert_eq!(parse_segment_name("seg-+000000000000abc.log"), None);
    }

    #[test]
    fn settings_are_validated() {
        let c = SpoolConfig::new(1 << 30).unwrap();
        assert!(matches!(
            c.with_segment_bytes(1 << 20),
            Err(SpoolConfigError::SegmentTooSmall { .. })
        ));
        assert!(matches!(
            SpoolConfig::new(60 << 20),
            Err(SpoolConfigError::DiskTooSmall { .. })
        ));
        // The outbox limit leaves the documented overhead and a quarter.
        let expect = ((1u64 << 30) - 3 * c.segment_bytes() - c.max_frame_len() - 108) / 4;
        assert_eq!(c.outbox_limit_bytes(), expect);
        assert!(c.outbox_limit_bytes() >= c.max_frame_len());
    }
}
