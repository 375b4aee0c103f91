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
    BatchId, DeliveryEvent, DropReason, FIXED_HEADER_LEN, FRAME_MAGIC, Frame, FrameError,
    FrameHeader, FrameLimits, SEAL_SECTION_LEN, Spool,
};

mod config;
mod error;
mod format;
mod keystore;
mod protect;
mod recovery;
mod scan;

pub use keystore::{
    KeyFileStore, OS_KEY_SERVICE, OsKeyStore, OsStore, SPOOL_KEY_LEN, SpoolKeyBytes, SpoolKeyError,
    SpoolKeyStore, SpoolProtection,
};
pub use protect::{KeyReport, SPOOLKEY_MAGIC};

pub use config::{SpoolConfig, SpoolConfigError};
pub use error::{Corruption, SpoolError};
pub use format::{
    CHECKPOINT_LEN, CHECKPOINT_MAGIC, MARKER_LEN, MARKER_MAGIC, MOVE_LEN, MOVE_MAGIC,
    SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};
pub use recovery::{DamagedFrame, DamagedRange, MovedAside, SpoolRecovery};

use error::io_error;
use format::*;
use scan::*;

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
    /// For a frame the spool sealed: its tenant and key.
    kek: Option<(opsdata::TenantId, opsdata::KeyId)>,
}

/// What sealing adds to a frame: the seal section and the body's tag.
const SEAL_OVERHEAD: u64 = SEAL_SECTION_LEN as u64 + 16;

impl Loc {
    /// The frame's length as the outbox counts it: unsealed.
    fn held(&self) -> u64 {
        self.frame_len - if self.kek.is_some() { SEAL_OVERHEAD } else { 0 }
    }
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
/// [`SpoolConfig::outbox_limit_bytes`]). A compaction pass is spread over
/// calls: a `persist` of `ℓ` bytes copies at most `4·(ℓ + 88)` bytes plus
/// one entry. Recovery keeps every entry that passes its checks, before and
/// after any damage, and reports what it skipped ([`SpoolRecovery`]).
/// Memory: an index of live batch ids (about 100 bytes each); recovery and
/// [`load`](Spool::load) read one entry at a time.
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
    /// Test hook: bytes of entries copied by the last `maintain`.
    #[cfg(test)]
    last_copied: u64,
    disk_bytes: u64,
    held_bytes: u64,
    live_entry_bytes: u64,
    reader: Option<(u64, File)>,
    /// The compaction pass in progress: segments below this number are
    /// compacted.
    pass: Option<u64>,
    /// The segment being compacted, and its live frames not yet copied
    /// (the next one last).
    compacting: Option<(u64, Vec<BatchId>)>,
    /// Sealing at rest, if on.
    protection: Option<protect::Protected>,
    /// Held for the spool's life: the directory's lock.
    _lock: File,
}

impl FileSpool {
    /// With protection: writes `SPOOLKEY` for a spool protected for the
    /// first time (sealed frames start in the next segment), and makes
    /// sure the tail is a segment whose sealed frames the spool sealed.
    fn start_protection(&mut self, new: bool) -> Result<(), SpoolError> {
        let Some(p) = self.protection.as_mut() else {
            return Ok(());
        };
        if new {
            p.since = self.tail_seg.checked_add(1).ok_or_else(|| {
                SpoolError::SegmentNumbersExhausted {
                    dir: self.dir.clone(),
                    last: self.tail_seg,
                }
            })?;
            let dir = self.dir.clone();
            p.save(&dir)?;
        }
        let since = self.protection.as_ref().map_or(0, |p| p.since);
        if self.tail_seg < since {
            self.roll()?;
        }
        if self.tail_seg < since {
            // Not reached for a `SPOOLKEY` read at open: recovery refused
            // one naming a segment past the one after its last, before
            // touching anything, and the tail is that last segment or the
            // one after it. Kept as an error, not a panic, because this
            // guards what the file says.
            return Err(SpoolError::KeysFile {
                reason: "protected from a segment past the next",
            });
        }
        Ok(())
    }

    /// Carries out the key rotation steps due (the spool's
    /// [`RotationPolicy`](opsdata::RotationPolicy) against the census of
    /// live frames per key): new keys, and keys no frame needs any more
    /// disabled, then destroyed. `persist` does this for its frame's tenant
    /// before sealing; call this from time to time (or after removals) to
    /// retire keys of tenants with no new frames. Nothing to do without
    /// protection.
    ///
    /// # Errors
    ///
    /// [`SpoolError::Key`], or the errors of writing `SPOOLKEY`.
    pub fn rotate_keys(&mut self) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        let dir = self.dir.clone();
        if let Some(p) = self.protection.as_mut()
            && p.rotate_all()?
        {
            p.save(&dir)?;
        }
        Ok(())
    }

    /// The protection's keys and census (no key material); `None` without
    /// protection.
    #[must_use]
    pub fn key_report(&self) -> Option<KeyReport> {
        self.protection.as_ref().map(protect::Protected::report)
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
        self.held_bytes -= loc.held();
        self.live_entry_bytes -= loc.entry_len;
        if let Some(p) = self.protection.as_mut() {
            p.count(loc.kek, false);
        }
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
        self.held_bytes += loc.held();
        self.live_entry_bytes += loc.entry_len;
        if let Some(p) = self.protection.as_mut() {
            p.count(loc.kek, true);
        }
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
                kek: loc.kek,
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

    /// The compaction budget of a persist of `len` bytes: the bytes of
    /// entries it may copy (`4·(len + 88)`; `docs/SPOOL.md`, *The work of
    /// one call*).
    fn budget(len: u64) -> u64 {
        COMPACTION_FACTOR * (len + MARKER_RESERVE + SEGMENT_HEADER_LEN)
    }

    /// Reclaims space, copying at most about `budget` bytes: drops the
    /// oldest segments once nothing in them is live, and compacts the
    /// oldest segment (its live frames re-appended) while the files exceed
    /// twice the live entries plus two segments. A compaction **pass**
    /// covers the segments older than the tail at its start, so a frame is
    /// moved at most once per pass; a pass goes on over as many calls as
    /// its budget takes, one frame at a time (it stops as soon as the
    /// copies made reach `budget`, so a call copies less than `budget`
    /// plus one entry). The segment being compacted is checked against the
    /// threshold when it is started only. Only the oldest segments are ever
    /// dropped, so a marker is never dropped before the frame it removes.
    /// Dropped segments are recorded in a checkpoint (the tail synced
    /// first) and deleted before the next segment is started, so the files
    /// never hold more than one segment's copies on top of what they held.
    /// (The disk bound this keeps is proved in `docs/SPOOL.md`.)
    fn maintain(&mut self, budget: u64) -> Result<(), SpoolError> {
        let mut dropped = Vec::new();
        let mut copied = 0u64;
        while let Some((head, info)) = self
            .segs
            .iter()
            .map(|(&s, &i)| (s, i))
            .find(|(s, _)| !dropped.contains(s))
        {
            if head >= self.tail_seg {
                self.pass = None;
                break;
            }
            if info.live_frames == 0 {
                dropped.push(head);
                self.compacting = None;
                continue;
            }
            if self.compacting.as_ref().is_none_or(|(s, _)| *s != head) {
                // Starting a segment: is compaction (still) due?
                self.drop_segments(&mut dropped)?;
                if self.pass.is_some_and(|end| head >= end) {
                    self.pass = None;
                }
                let slack = 2 * self.live_entry_bytes + 2 * self.config.segment_bytes;
                if self.disk_bytes <= slack {
                    self.pass = None;
                    break;
                }
                if self.pass.is_none() {
                    self.pass = Some(self.tail_seg);
                }
                let mut queue: Vec<BatchId> = self
                    .index
                    .iter()
                    .filter(|(_, l)| l.seg == head)
                    .map(|(id, _)| *id)
                    .collect();
                queue.reverse();
                self.compacting = Some((head, queue));
            }
            if copied >= budget {
                break;
            }
            let next = self.compacting.as_mut().and_then(|(_, q)| q.pop());
            let Some(id) = next else {
                // Every frame of the queue was copied, removed or replaced
                // since: none is left in the head.
                self.compacting = None;
                if self.segs.get(&head).is_some_and(|i| i.live_frames == 0) {
                    dropped.push(head);
                    continue;
                }
                // Invariant: the queue listed every live frame of the head
                // and a frame never moves into an older segment, so this
                // cannot happen; stop rather than loop.
                break;
            };
            let Some(&loc) = self.index.get(&id) else {
                continue;
            };
            if loc.seg != head {
                continue;
            }
            // The copy gains at most a move record and may roll to a new
            // segment.
            let copy = MOVE_LEN + loc.frame_len + SEGMENT_HEADER_LEN;
            let fits = self.disk_bytes + copy + self.marker_reserve(self.index.len() as u64)
                <= self.config.max_disk_bytes;
            if !fits {
                self.pass = None;
                self.compacting = None;
                break;
            }
            self.relocate(id)?;
            copied += MOVE_LEN + loc.frame_len;
        }
        #[cfg(test)]
        {
            self.last_copied = copied;
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
        // Refused before anything is sealed (a refused call changes
        // nothing, the key ring's usage included).
        let overhead = if self.protection.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        };
        let (len, max) = (frame.len() as u64 + overhead, self.config.max_frame_len());
        if len > max {
            return Err(SpoolError::FrameTooLarge { len, max });
        }
        let sealed;
        let (frame, kek) = match self.protection.as_mut() {
            Some(p) => {
                let (f, id) = p.seal(&self.dir, frame)?;
                sealed = f;
                (&sealed, Some((frame.tenant(), id)))
            }
            None => (frame, None),
        };
        // Sealing adds exactly the overhead counted above.
        let len = frame.len() as u64;
        self.maintain(Self::budget(len))?;
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
                kek,
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
        self.append(&marker_pair(batch_id))?;
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
            match (&self.protection, loc.kek) {
                (Some(p), Some(_)) => sink(p.open(Bytes::from(bytes), &self.config.limits)?),
                _ => sink(Bytes::from(bytes)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
