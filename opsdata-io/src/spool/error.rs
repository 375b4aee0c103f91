//! The spool's errors.

use super::*;

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
    /// The spool is protected (it has a `SPOOLKEY` file) but was opened
    /// with [`FileSpool::open`]: open it with
    /// [`FileSpool::open_protected`]. Nothing was changed.
    #[error("spool {} is sealed at rest: open it with its key", dir.display())]
    ProtectionRequired {
        /// The directory.
        dir: PathBuf,
    },
    /// The key store does not hold the spool's key (lost, or another
    /// store). Nothing was changed: put the key back and open again.
    #[error("the key of spool {} is not in {store}: nothing was changed; restore the key", dir.display())]
    KeyMissing {
        /// The directory.
        dir: PathBuf,
        /// Where the key was looked for.
        store: String,
    },
    /// The key store holds another key than the one the spool was sealed
    /// under (a spool directory copied to another agent, or a replaced
    /// key). Nothing was changed.
    #[error("spool {} was sealed under another key: nothing was changed", dir.display())]
    WrongKey {
        /// The directory.
        dir: PathBuf,
    },
    /// The key store forgets its keys at reboot (the kernel keyring) and
    /// the host did not allow that
    /// ([`SpoolProtection::allow_key_lost_at_reboot`]).
    #[error("{store} forgets the spool key at reboot; allow it explicitly or use another store")]
    KeyStoreForgets {
        /// The store.
        store: String,
    },
    /// [`FileSpool::open_protected`] needs a [`SpoolConfig`] with
    /// [`with_sealed_at_rest(true)`](SpoolConfig::with_sealed_at_rest), so
    /// that its outbox limit counts the sealing overhead.
    #[error("a protected spool needs SpoolConfig::with_sealed_at_rest(true)")]
    SealedConfigRequired,
    /// With protection on, a frame already sealed (by its producer) is
    /// refused: the spool seals frames itself.
    #[error("the frame is already sealed; a protected spool seals plain frames itself")]
    AlreadySealed,
    /// The `SPOOLKEY` file is malformed. Nothing was changed.
    #[error("SPOOLKEY: {reason}")]
    KeysFile {
        /// What is wrong.
        reason: &'static str,
    },
    /// The key store failed.
    #[error("spool key store: {0}")]
    KeyStore(#[source] SpoolKeyError),
    /// Sealing or opening a frame failed (a frame altered on disk fails
    /// here at load, [`opsdata::KeyError::Tampered`]).
    #[error("spool key: {0}")]
    Key(#[source] opsdata::KeyError),
    /// Another [`FileSpool`] (in this or another process) has the directory
    /// open.
    #[error("spool directory {} is in use", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
}

pub(super) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SpoolError + 'a {
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
