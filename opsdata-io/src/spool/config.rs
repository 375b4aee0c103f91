//! [`SpoolConfig`]: the spool's settings and the disk bound they imply.

use super::*;

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
    pub(super) max_disk_bytes: u64,
    pub(super) segment_bytes: u64,
    pub(super) limits: FrameLimits,
    pub(super) sync_removals: bool,
    pub(super) sealed: bool,
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
    /// five largest frames (about 76 MiB with the defaults).
    pub fn new(max_disk_bytes: u64) -> Result<Self, SpoolConfigError> {
        SpoolConfig {
            max_disk_bytes,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            limits: FrameLimits::default(),
            sync_removals: false,
            sealed: false,
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
    /// [`SpoolConfigError::DiskTooSmall`] if it leaves no room for five
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

    /// Whether frames are sealed at rest (required by
    /// [`FileSpool::open_protected`](super::FileSpool::open_protected)):
    /// sealing makes each frame 84 bytes longer on disk than the outbox
    /// counts it, so [`outbox_limit_bytes`](Self::outbox_limit_bytes) keeps
    /// more room (`/ 8` instead of `/ 5`).
    ///
    /// # Errors
    ///
    /// [`SpoolConfigError::DiskTooSmall`] if the disk bound no longer
    /// fits.
    pub fn with_sealed_at_rest(mut self, sealed: bool) -> Result<Self, SpoolConfigError> {
        self.sealed = sealed;
        self.validated()
    }

    /// Whether frames are sealed at rest.
    #[must_use]
    pub fn sealed_at_rest(&self) -> bool {
        self.sealed
    }

    /// The divisor of [`outbox_limit_bytes`](Self::outbox_limit_bytes): 5,
    /// or 8 when sealed at rest (`docs/SPOOL.md`, *The disk bound*).
    fn divisor(&self) -> u64 {
        if self.sealed { 8 } else { 5 }
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
    /// `3·segment_bytes + 2·max_frame_len + 244` (see
    /// [`outbox_limit_bytes`](Self::outbox_limit_bytes)).
    fn fixed_overhead(&self) -> u64 {
        3 * self.segment_bytes + 2 * self.max_frame_len() + 244
    }

    /// The [`opsdata::DeliveryPolicy::limit_bytes`] to configure the outbox
    /// with, so that the spool never reaches its bound in steady state:
    /// `(max_disk_bytes − 3·segment_bytes − 2·max_frame_len − 244) / 5`.
    ///
    /// Why (the proof is in `docs/SPOOL.md`, *The disk bound*): with at
    /// most `Λ` (this limit) bytes of frames held, a frame is at least 72
    /// bytes, so the live entries take at most `4Λ/3` (a move record is 24
    /// bytes) and the removal reserve (68 bytes a frame: two markers and a
    /// segment header) at most `17Λ/18 + 68`. Outside a compaction pass the
    /// files hold at most twice the live entries plus two segments; a
    /// persist adds at most a frame, a segment header and its reserve
    /// (`max_frame_len + 88`); a remove adds nothing its reserve did not
    /// count; a pass moves each frame at most once (44 bytes more each, one
    /// segment's copies in flight), while the persists during it add at
    /// most a quarter of what it copies (its budget: a persist of `ℓ`
    /// bytes copies `4·(ℓ + 88)`). So the files and reserve never pass
    /// `41Λ/9 + 3·segment_bytes + 2·max_frame_len + 244`, within
    /// `max_disk_bytes` (`41/9 < 5`). Sealed at rest, each frame takes 84
    /// bytes more on disk than the outbox counts, and the same steps give
    /// `517Λ/72` (`< 8`): the divisor is 8.
    #[must_use]
    pub fn outbox_limit_bytes(&self) -> u64 {
        self.max_disk_bytes.saturating_sub(self.fixed_overhead()) / self.divisor()
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
        let min_disk = self.fixed_overhead() + self.divisor() * self.max_frame_len();
        if self.max_disk_bytes < min_disk {
            return Err(SpoolConfigError::DiskTooSmall {
                max_disk_bytes: self.max_disk_bytes,
                min: min_disk,
            });
        }
        Ok(self)
    }
}
