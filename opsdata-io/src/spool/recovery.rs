//! [`FileSpool::open`]: recovering a spool from its directory.

use super::*;

/// A segment recovery moved aside after finding damage in it.
///
/// Recovery reads every entry of a damaged segment that passes its checks,
/// before and after the damage, re-appends its live frames (and the
/// removal markers it held for frames elsewhere) to the spool, and then
/// renames the segment `….log.corrupt` for the operator.
#[derive(Debug)]
#[non_exhaustive]
pub struct MovedAside {
    /// Where the segment now is (its name with `.corrupt` appended).
    pub path: PathBuf,
    /// Offset of the first byte skipped.
    pub offset: u64,
    /// Bytes skipped in this segment (the sum of its `damage` ranges):
    /// only these are lost.
    pub bytes_lost: u64,
    /// Live frames of the segment (before and after the damage),
    /// re-appended to the spool.
    pub frames_kept: usize,
    /// Every range skipped (why, in each range's `reason`), in file order.
    pub damage: Vec<DamagedRange>,
}

/// A range of a segment that failed its checks and was skipped: from the
/// start of a bad entry to the next entry that passes every check (or the
/// end of the file).
#[derive(Debug)]
#[non_exhaustive]
pub struct DamagedRange {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Why its first entry failed.
    pub reason: Corruption,
}

/// A frame that failed its checks but whose header (under its own CRC)
/// was intact, so what it was is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedFrame {
    /// The batch id.
    pub batch_id: BatchId,
    /// The tenant.
    pub tenant: opsdata::TenantId,
    /// The data type.
    pub data_type: opsdata::DataType,
    /// The segment it was in.
    pub segment: u64,
    /// Its offset there (of its move record, if it had one).
    pub offset: u64,
    /// Records in it, as its header says.
    pub records: u32,
    /// Its frame's length, as its header says.
    pub bytes: u64,
    /// Whether the batch is lost: no intact copy of it is held and no
    /// removal marker after the damage removed it (`false`: it had been
    /// removed, or another copy was recovered).
    pub lost: bool,
}

impl DamagedFrame {
    /// The loss to report for it, if the batch is [`lost`](Self::lost): a
    /// [`DeliveryEvent::Dropped`] with [`DropReason::Corrupt`], which the
    /// host reports like any other drop (print it, feed it to its
    /// `LossLedger`, so the customer is notified within the day).
    #[must_use]
    pub fn dropped(&self) -> Option<DeliveryEvent> {
        self.lost.then_some(DeliveryEvent::Dropped {
            tenant: self.tenant,
            data_type: self.data_type,
            batch_id: self.batch_id,
            records: self.records,
            bytes: self.bytes,
            reason: DropReason::Corrupt,
        })
    }
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
    /// Bytes skipped as damaged in all segments (torn bytes not included).
    pub bytes_skipped: u64,
    /// Frames that failed their checks but whose header was readable, in
    /// the order found. Frames damaged in their header are only counted
    /// in `bytes_skipped`.
    pub damaged_frames: Vec<DamagedFrame>,
    /// Segments moved aside, with what was kept and skipped.
    pub moved_aside: Vec<MovedAside>,
    /// Segment files older than the checkpoint, deleted (left by a crash
    /// between a checkpoint and the deletion it allowed).
    pub stale_segments_removed: usize,
    /// Whether a checkpoint file was present but unreadable (recovery then
    /// reads every segment; at worst dead frames come back and are resent).
    pub checkpoint_ignored: bool,
}

impl SpoolRecovery {
    /// The batches lost to damage, as drops to report
    /// ([`DamagedFrame::dropped`]): one `Dropped { reason: Corrupt }` per
    /// lost frame whose header was readable.
    pub fn losses(&self) -> impl Iterator<Item = DeliveryEvent> + '_ {
        self.damaged_frames.iter().filter_map(DamagedFrame::dropped)
    }
}

/// A segment in which damage was skipped.
pub(super) struct Damaged {
    seg: u64,
    damage: Vec<DamagedRange>,
    /// Batch ids its markers removed: their markers are re-appended.
    removed: BTreeSet<BatchId>,
}

/// What the scan of all segments builds.
#[derive(Default)]
struct Scan {
    index: BTreeMap<BatchId, Loc>,
    order: BTreeMap<(u64, u64), BatchId>,
    /// Damaged frames with a readable header.
    damaged_frames: Vec<DamagedFrame>,
    /// Their batch ids, and those a marker removed after them.
    damaged_ids: BTreeSet<BatchId>,
    marked_after: BTreeSet<BatchId>,
    /// With protection: the first segment whose sealed frames the spool
    /// sealed.
    since: Option<u64>,
}

impl Scan {
    fn apply(&mut self, seg: u64, at: u64, entry: Entry, removed: &mut BTreeSet<BatchId>) {
        match entry {
            Entry::Marker { batch_id } => {
                if let Some(old) = self.index.remove(&batch_id) {
                    self.order.remove(&old.key);
                }
                removed.insert(batch_id);
                if self.damaged_ids.contains(&batch_id) {
                    self.marked_after.insert(batch_id);
                }
            }
            Entry::Frame {
                offset,
                frame_len,
                entry_len,
                batch_id,
                moved_from,
                tenant,
                kek,
            } => {
                let key = moved_from.unwrap_or((seg, at));
                let loc = Loc {
                    seg,
                    offset,
                    frame_len,
                    entry_len,
                    key,
                    kek: match (self.since, kek) {
                        (Some(since), Some(id)) if key.0 >= since => Some((tenant, id)),
                        _ => None,
                    },
                };
                if let Some(old) = self.index.insert(batch_id, loc) {
                    self.order.remove(&old.key);
                }
                self.order.insert(key, batch_id);
                removed.remove(&batch_id);
            }
        }
    }

    fn damaged(&mut self, seg: u64, at: u64, r: Readable) {
        self.damaged_ids.insert(r.batch_id);
        self.damaged_frames.push(DamagedFrame {
            batch_id: r.batch_id,
            tenant: r.tenant,
            data_type: r.data_type,
            segment: seg,
            offset: at,
            records: r.records,
            bytes: r.frame_len,
            lost: true,
        });
    }
}

impl FileSpool {
    /// Opens every sealed frame held, and removes (with a marker) those
    /// that do not open under their tenant's key ring: damage their checks
    /// could not see (a `SPOOLKEY` from another history of the directory,
    /// a frame sealed under a key its ring no longer holds). Each is a
    /// lost [`DamagedFrame`] in `report`. Found here, not at
    /// [`load`](Spool::load), where one such frame would fail every load.
    ///
    /// The markers are synced before the report is returned, whatever
    /// `sync_removals` says: a marker lost to a power failure would bring
    /// the frame back, and its loss would be reported a second time.
    fn remove_unopenable(&mut self, report: &mut SpoolRecovery) -> Result<(), SpoolError> {
        if self.protection.is_none() {
            return Ok(());
        }
        let sealed: Vec<(BatchId, Loc)> = self
            .index
            .iter()
            .filter(|(_, loc)| loc.kek.is_some())
            .map(|(id, loc)| (*id, *loc))
            .collect();
        let limits = self.config.limits;
        let mut removed = false;
        for (id, loc) in sealed {
            let bytes = Bytes::from(self.read_entry(loc)?);
            // Borrowed anew each time (`remove` needs the spool mutably);
            // checked above, so the `break` is not taken.
            let Some(p) = self.protection.as_ref() else {
                break;
            };
            match p.open(bytes.clone(), &limits) {
                Ok(_) => {}
                Err(SpoolError::Key(_)) => {
                    // The scan decoded this entry with these limits (every
                    // check of the frame format), so its header is
                    // readable: the `continue` is not taken.
                    let Ok(frame) = Frame::decode(bytes, &limits) else {
                        continue;
                    };
                    let (tenant, data_type, records) = (
                        frame.tenant(),
                        frame.data_type(),
                        frame.header().record_count,
                    );
                    self.remove(id)?;
                    removed = true;
                    report.damaged_frames.push(DamagedFrame {
                        batch_id: id,
                        tenant,
                        data_type,
                        segment: loc.seg,
                        // Where its entry starts: its move record, if any.
                        offset: loc.offset - (loc.entry_len - loc.frame_len),
                        records,
                        bytes: loc.frame_len,
                        lost: true,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if removed && self.tail_unsynced {
            self.sync_tail()?;
        }
        Ok(())
    }
}

/// How many times [`take_lock`] tries, and how long it waits before each
/// retry: [`LOCK_ATTEMPTS`] − 1 waits of [`LOCK_RETRY`], 50 ms in all.
const LOCK_ATTEMPTS: u32 = 11;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Takes the spool directory's exclusive lock (`flock`), or answers
/// [`SpoolError::Locked`].
///
/// A lock can outlive the spool that held it for a moment: closing a file
/// releases its lock only when the last reference to the open file goes,
/// and a process reading this one's `/proc/<pid>/fd` links (`lsof`,
/// monitoring agents) holds such a reference while it reads. A spool
/// reopened right after it was dropped would then be refused. The lock is
/// tried again for 50 ms before the answer is `Locked`: a spool really
/// open elsewhere holds it for longer.
fn take_lock(lock: &File, lock_path: &Path, dir: &Path) -> Result<(), SpoolError> {
    let mut attempt = 1;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if attempt < LOCK_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(LOCK_RETRY);
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error("lock", lock_path)(e)),
        }
    }
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
    /// [`SpoolError::Locked`] if another spool has `dir` open (tried for
    /// 50 ms first: a lock can outlive a dropped spool for a moment);
    /// [`SpoolError::ProtectionRequired`] if the spool is sealed at rest
    /// (open it with [`open_protected`](Self::open_protected));
    /// [`SpoolError::Io`] / [`SpoolError::DiskFull`] if a file cannot be
    /// read, written, renamed or synced. Damaged contents are not errors:
    /// they are repaired and reported in [`SpoolRecovery`].
    pub fn open(
        dir: impl AsRef<Path>,
        config: SpoolConfig,
    ) -> Result<(FileSpool, SpoolRecovery), SpoolError> {
        Self::open_inner(dir.as_ref(), config, None)
    }

    /// Opens (or creates) the spool in `dir` sealed at rest under a key
    /// kept in `protection`'s store, and recovers it as
    /// [`open`](Self::open) does (`docs/SPOOL.md`, *Protection at rest*).
    ///
    /// Every frame persisted from now on is sealed (the core's seal
    /// format, AES-256-GCM, a fresh data key per frame) under its tenant's
    /// spool key ring, itself sealed under the spool key in `SPOOLKEY`;
    /// [`load`](Spool::load) opens them. The key is checked before anything
    /// in the directory is touched. Recovery opens every sealed frame held:
    /// one that does not open under its ring is removed and reported as a
    /// lost [`DamagedFrame`]. A spool with no key yet gets one: made
    /// from the system's randomness and put in the store. Frames already in
    /// an unprotected spool are kept as they are (not converted), loaded as
    /// they are, and counted in [`KeyReport::unsealed_frames`] until they
    /// leave.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and, with nothing in the directory
    /// changed: [`SpoolError::KeyStoreForgets`] for a store that forgets
    /// at reboot unless allowed; [`SpoolError::SealedConfigRequired`]
    /// unless `config` is sealed at rest; [`SpoolError::KeyMissing`] if
    /// the spool is protected and the store has no key;
    /// [`SpoolError::WrongKey`] if the store's key is not the spool's;
    /// [`SpoolError::KeysFile`] if `SPOOLKEY` is malformed or names a first
    /// sealed segment past the one after the directory's last;
    /// [`SpoolError::KeyStore`] if the store fails.
    pub fn open_protected(
        dir: impl AsRef<Path>,
        config: SpoolConfig,
        protection: SpoolProtection,
    ) -> Result<(FileSpool, SpoolRecovery), SpoolError> {
        Self::open_inner(dir.as_ref(), config, Some(protection))
    }

    fn open_inner(
        dir: &Path,
        config: SpoolConfig,
        protection: Option<SpoolProtection>,
    ) -> Result<(FileSpool, SpoolRecovery), SpoolError> {
        let dir = dir.to_path_buf();
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error("open", &lock_path))?;
        take_lock(&lock, &lock_path, &dir)?;
        // The key first: a missing or wrong one changes nothing.
        let opened = match protection {
            Some(p) => Some(protect::Protected::resolve(&dir, &config, p)?),
            None => {
                if dir.join(protect::SPOOLKEY_NAME).exists() {
                    return Err(SpoolError::ProtectionRequired { dir });
                }
                None
            }
        };
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
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            if let Some(seg) = entry.file_name().to_str().and_then(parse_segment_name) {
                found.push(seg);
            }
        }
        found.sort_unstable();
        // `SPOOLKEY` names the first segment sealed frames may be in: the
        // one after the tail when protection was turned on. The tail is
        // never deleted, so a directory whose last segment is before the
        // one it names has lost segments (or holds another directory's
        // `SPOOLKEY`). Refused here, like the key's other errors, before
        // anything in the directory is touched.
        if let Some(o) = opened.as_ref().filter(|o| !o.new) {
            let last = found
                .iter()
                .copied()
                .rfind(|&s| s >= first)
                .unwrap_or(first.max(1));
            if last.saturating_add(1) < o.protected.since {
                return Err(SpoolError::KeysFile {
                    reason: "protected from a segment past the next",
                });
            }
        }
        let tmp = dir.join(CHECKPOINT_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_error("remove", &tmp))?;
        }
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

        let mut scan = Scan {
            since: opened.as_ref().map(|o| o.protected.since),
            ..Scan::default()
        };
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
                #[cfg(test)]
                bytes_read: 0,
            };
            let read_err = || io_error("read", &path);
            let mut removed = BTreeSet::new();
            let mut damage: Vec<DamagedRange> = Vec::new();
            // Where the segment ends: the file, or the start of a torn tail.
            let mut end = file_len;
            // The header. A bad one is damage like any other (the entries
            // after it are read), unless it is a torn tail.
            let header_ok = if file_len < SEGMENT_HEADER_LEN {
                None
            } else {
                let mut h = [0u8; 20];
                scanner.read(&mut h).map_err(read_err())?;
                Some(parse_versioned_record(SEGMENT_MAGIC, &h) == Some(seg))
            };
            let mut pending = match header_ok {
                Some(true) => None,
                None => Some((0, Stop::Incomplete)),
                Some(false) => Some((0, Stop::Bad(Corruption::SegmentHeader))),
            };
            loop {
                let (at, stop) = match pending.take() {
                    Some(p) => p,
                    None => {
                        let at = scanner.pos;
                        match scanner.next().map_err(read_err())? {
                            Ok(None) => break,
                            Ok(Some(entry)) => {
                                scan.apply(seg, at, entry, &mut removed);
                                continue;
                            }
                            Err(stop) => (at, stop),
                        }
                    }
                };
                // A torn tail: in the last segment, an entry cut short by
                // the end of the file, or a bad one followed by nothing
                // but zeros (what a crash leaves when the file grew before
                // its data was written). Cutting it off loses only that
                // entry.
                let torn = last
                    && match &stop {
                        Stop::Incomplete => true,
                        Stop::Bad(_) | Stop::BadBody { .. } => {
                            scanner.rest_is_zero().map_err(read_err())?
                        }
                    };
                if torn {
                    end = at;
                    break;
                }
                // Damage: skip to the next entry that passes every check.
                let (reason, resume) = match stop {
                    Stop::Incomplete => (Corruption::Truncated, at + 1),
                    Stop::Bad(c) => (
                        c,
                        if at == 0 {
                            // A bad header: the entries start after it.
                            SEGMENT_HEADER_LEN.min(file_len)
                        } else {
                            at + 1
                        },
                    ),
                    Stop::BadBody { reason, frame, len } => {
                        scan.damaged(seg, at, frame);
                        (reason, at + len)
                    }
                };
                let found = scanner
                    .resync(resume, &mut |p, r| scan.damaged(seg, p, r))
                    .map_err(read_err())?;
                let next_at = found.as_ref().map_or(file_len, |(p, _)| *p);
                damage.push(DamagedRange {
                    offset: at,
                    len: next_at - at,
                    reason,
                });
                match found {
                    Some((p, entry)) => scan.apply(seg, p, entry, &mut removed),
                    None => break,
                }
            }
            // `end == 0`: the last segment holds not even a whole header,
            // an empty file included (a crash between creating a segment
            // and writing its header): its header is written afresh, or
            // the next append would land where the header belongs.
            if end < file_len || end == 0 {
                report.torn_bytes += file_len - end;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error("open", &path))?;
                if end == 0 {
                    // Not even a whole header: write it afresh.
                    f.set_len(0).map_err(io_error("truncate", &path))?;
                    (&f).write_all(&versioned_record(SEGMENT_MAGIC, seg))
                        .map_err(io_error("write", &path))?;
                    end = SEGMENT_HEADER_LEN;
                } else {
                    f.set_len(end).map_err(io_error("truncate", &path))?;
                }
                f.sync_data().map_err(io_error("sync", &path))?;
            }
            sizes.insert(seg, end);
            if !damage.is_empty() {
                damaged.push(Damaged {
                    seg,
                    damage,
                    removed,
                });
            }
        }
        let Scan {
            index,
            order,
            damaged_frames,
            marked_after,
            ..
        } = scan;
        for mut f in damaged_frames {
            f.lost = !marked_after.contains(&f.batch_id) && !index.contains_key(&f.batch_id);
            report.damaged_frames.push(f);
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
            held_bytes += loc.held();
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
            #[cfg(test)]
            last_copied: 0,
            disk_bytes: 0,
            held_bytes,
            live_entry_bytes,
            reader: None,
            pass: None,
            compacting: None,
            protection: None,
            _lock: lock,
        };
        spool.seek_tail()?;
        spool.disk_bytes = spool.segs.values().map(|s| s.size).sum();
        let new_keys = opened.as_ref().is_some_and(|o| o.new);
        if let Some(o) = opened {
            let mut p = o.protected;
            for loc in spool.index.values() {
                p.count(loc.kek, true);
            }
            spool.protection = Some(p);
        }

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
                    spool.append(&marker_pair(id))?;
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
            let bytes_lost: u64 = d.damage.iter().map(|r| r.len).sum();
            report.bytes_skipped += bytes_lost;
            report.moved_aside.push(MovedAside {
                path: to,
                // A segment is only listed as damaged with a range.
                offset: d.damage.first().map_or(0, |r| r.offset),
                bytes_lost,
                frames_kept: live.len(),
                damage: d.damage,
            });
        }
        let first_live = *spool.segs.keys().next().unwrap_or(&spool.tail_seg);
        spool.write_checkpoint(first_live)?;
        spool.start_protection(new_keys)?;
        spool.remove_unopenable(&mut report)?;
        // Recovery reads every segment anyway: compaction is not limited.
        spool.maintain(u64::MAX)?;

        report.frames = spool.index.len();
        report.held_bytes = spool.held_bytes;
        report.disk_bytes = spool.disk_bytes;
        Ok((spool, report))
    }
}
