//! The OPSF v1 frame: one batch of one tenant's records of one data type,
//! compressed and checksummed, specified in `docs/FRAME.md`.
//!
//! - [`FrameHeader`]: the typed 64-byte fixed header.
//! - [`FrameEncoder`]: a [`TenantBatch`](crate::TenantBatch) or a
//!   [`ClosedBatch`] to frame bytes, reusing its buffers.
//! - [`Batcher`]: gathers tagged records per (tenant, data type) into batches
//!   that fit a frame.
//! - [`FrameDecoder`]: incremental, sans-I/O reader of concatenated frames,
//!   safe on hostile input.
//! - [`Frame`]: a checked frame, cheap to clone; [`PayloadReader`] inflates
//!   and parses its records.

mod batcher;
mod decode;
mod encode;
mod header;
mod payload;
mod resync;

use std::fmt;

use uuid::Uuid;

use crate::record::{DataType, RecordError};
use crate::tenant::TenantId;

pub use batcher::{Batcher, BatcherConfig, BatcherRejection, ClosedBatch};
pub(crate) use decode::peek_header;
pub use decode::{Decoded, FrameDecoder};
pub use encode::{Frame, FrameEncoder};
pub use header::{FrameHeader, SealSection};
pub use payload::PayloadReader;
pub use resync::{Damage, FrameScan, Resynced, scan_frames};

/// The four bytes every frame starts with: `\x89OPS`.
pub const FRAME_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'S'];
/// The frame format version this crate reads and writes.
pub const FRAME_VERSION: u8 = 1;
/// The record schema version frames carry (the schemas of `docs/RECORDS.md`).
pub const SCHEMA_VERSION: u16 = 1;
/// The length of the fixed header.
pub const FIXED_HEADER_LEN: usize = 64;
/// The length of the seal section a sealed frame carries after the fixed header.
pub const SEAL_SECTION_LEN: usize = 68;
/// The length of the AES-GCM tag a sealed body ends with. A reader allows a
/// sealed body this much over [`FrameLimits::max_body`].
pub(crate) const SEAL_TAG_LEN: u32 = 16;
/// Bytes an unsealed frame adds to its body: header, header CRC and body CRC.
pub const UNSEALED_OVERHEAD: usize = FIXED_HEADER_LEN + 4 + 4;

/// How the payload is encoded into the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Codec 0: the body is the payload.
    None,
    /// Codec 1: the body is the payload as one raw DEFLATE stream (RFC 1951).
    Deflate,
}

impl Codec {
    /// The codec's number in the frame header.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Deflate => 1,
        }
    }

    /// The codec with header number `n`.
    #[must_use]
    pub const fn from_u8(n: u8) -> Option<Codec> {
        match n {
            0 => Some(Codec::None),
            1 => Some(Codec::Deflate),
            _ => None,
        }
    }

    /// `"none"` or `"deflate"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Deflate => "deflate",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A batch's id: the idempotency key that stays the same across every retry
/// of the batch, so the service can drop a duplicate. Never nil.
///
/// The library draws no randomness: build one from the caller's random bytes
/// ([`BatchId::from_random_bytes`], UUID version 4) or from the caller's time
/// and random bytes ([`BatchId::from_time_and_random`], version 7, which sorts
/// by creation time).
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// use opsdata::BatchId;
/// let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let id = BatchId::from_time_and_random(now, [7; 10]);
/// assert_eq!(id.as_uuid().get_version_num(), 7);
/// assert!(BatchId::new(uuid::Uuid::nil()).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(Uuid);

// The UUID's byte order, compared as one big-endian integer rather than a
// byte slice: the same order (the `Uuid` one), without a `memcmp` call per
// comparison in the ordered maps that key on it.
impl Ord for BatchId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for BatchId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl BatchId {
    /// The batch id `id`.
    ///
    /// # Errors
    ///
    /// [`FrameError::NilId`] for the nil UUID.
    pub fn new(id: Uuid) -> Result<Self, FrameError> {
        if id.is_nil() {
            Err(FrameError::NilId { field: "batch_id" })
        } else {
            Ok(BatchId(id))
        }
    }

    /// A version 4 (random) id from 16 random bytes the caller drew.
    #[must_use]
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        // Setting the version and variant bits makes the id non-nil.
        BatchId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// A version 7 id: `now` to the millisecond, then 10 random bytes the
    /// caller drew. Ids made later sort later.
    #[must_use]
    pub fn from_time_and_random(now: chrono::DateTime<chrono::Utc>, random: [u8; 10]) -> Self {
        // Times before 1970 cannot be written in a v7 id; clamp to the epoch.
        let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        // The version bits make the id non-nil.
        BatchId(uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
    }

    /// The id as a UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id's 16 bytes in RFC 9562 order.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({})", self.0.hyphenated())
    }
}

impl std::str::FromStr for BatchId {
    type Err = FrameError;

    /// Parses any UUID text form the `uuid` crate accepts.
    fn from_str(s: &str) -> Result<Self, FrameError> {
        let id = Uuid::try_parse(s).map_err(|_| FrameError::MalformedId {
            input: crate::record::truncate_for_error(s),
        })?;
        BatchId::new(id)
    }
}

/// Limits a reader applies to frames before trusting them.
///
/// Defaults: body ≤ 4 MiB, content ≤ 64 MiB, records ≤ 65 536, one record
/// ≤ 256 KiB. Memory a frame can make a reader allocate is bounded by these:
/// the body is never buffered beyond `max_body`, and inflation never beyond
/// the declared `content_len` ≤ `max_content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    max_body: u32,
    max_content: u32,
    max_records: u32,
    max_record_bytes: u32,
}

impl FrameLimits {
    /// Default body limit: 4 MiB.
    pub const DEFAULT_MAX_BODY: u32 = 4 << 20;
    /// Default content (uncompressed payload) limit: 64 MiB.
    pub const DEFAULT_MAX_CONTENT: u32 = 64 << 20;
    /// Default limit on records per frame: 65 536.
    pub const DEFAULT_MAX_RECORDS: u32 = 65_536;
    /// Default limit on one record's JSON line: 256 KiB.
    pub const DEFAULT_MAX_RECORD_BYTES: u32 = 256 << 10;

    /// The body limit in bytes. A sealed frame's body may be 16 bytes
    /// longer (its AES-GCM tag), so sealing never makes a frame unreadable.
    #[must_use]
    pub fn max_body(&self) -> u32 {
        self.max_body
    }
    /// The content limit in bytes.
    #[must_use]
    pub fn max_content(&self) -> u32 {
        self.max_content
    }
    /// The limit on records per frame.
    #[must_use]
    pub fn max_records(&self) -> u32 {
        self.max_records
    }
    /// The limit on one record's JSON text, in bytes (without its newline).
    #[must_use]
    pub fn max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }

    fn nonzero(setting: &'static str, value: u32) -> Result<u32, FrameError> {
        if value == 0 {
            Err(FrameError::InvalidLimit { setting, value })
        } else {
            Ok(value)
        }
    }

    /// Sets the body limit.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0.
    pub fn with_max_body(mut self, bytes: u32) -> Result<Self, FrameError> {
        self.max_body = Self::nonzero("max_body", bytes)?;
        Ok(self)
    }
    /// Sets the content limit.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0.
    pub fn with_max_content(mut self, bytes: u32) -> Result<Self, FrameError> {
        self.max_content = Self::nonzero("max_content", bytes)?;
        Ok(self)
    }
    /// Sets the limit on records per frame.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0.
    pub fn with_max_records(mut self, records: u32) -> Result<Self, FrameError> {
        self.max_records = Self::nonzero("max_records", records)?;
        Ok(self)
    }
    /// Sets the limit on one record's JSON text.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0.
    pub fn with_max_record_bytes(mut self, bytes: u32) -> Result<Self, FrameError> {
        self.max_record_bytes = Self::nonzero("max_record_bytes", bytes)?;
        Ok(self)
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_body: Self::DEFAULT_MAX_BODY,
            max_content: Self::DEFAULT_MAX_CONTENT,
            max_records: Self::DEFAULT_MAX_RECORDS,
            max_record_bytes: Self::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Errors of the frame layer: reading, checking, inflating, encoding.
///
/// Variants follow the reader's order of checks in `docs/FRAME.md`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A byte of the magic is wrong.
    #[error("bad magic: byte {offset} is {found:#04x}")]
    BadMagic {
        /// Its offset (0–3).
        offset: usize,
        /// The byte found.
        found: u8,
    },
    /// The version byte is not 1.
    #[error("unsupported frame version {version}")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The header's CRC does not match.
    #[error("header CRC mismatch: computed {computed:#010x}, frame says {stored:#010x}")]
    HeaderCrc {
        /// CRC-32 of the header bytes received.
        computed: u32,
        /// The CRC the frame carries.
        stored: u32,
    },
    /// A reserved flag bit is set.
    #[error("reserved flag bits set: {flags:#04x}")]
    ReservedFlags {
        /// The flags byte.
        flags: u8,
    },
    /// The codec number is not 0 or 1.
    #[error("unknown codec {codec}")]
    UnknownCodec {
        /// The codec number found.
        codec: u8,
    },
    /// The data type number is not 1–6.
    #[error("unknown data type {data_type}")]
    UnknownDataType {
        /// The number found.
        data_type: u8,
    },
    /// The schema version is not 1.
    #[error("unsupported schema version {version}")]
    UnsupportedSchemaVersion {
        /// The version found.
        version: u16,
    },
    /// The reserved header bytes are not zero.
    #[error("reserved header bytes are {value:#06x}, not zero")]
    ReservedNotZero {
        /// Their value.
        value: u16,
    },
    /// A tenant or batch id is all zeros.
    #[error("{field} is nil")]
    NilId {
        /// `"tenant_id"` or `"batch_id"`.
        field: &'static str,
    },
    /// Text that is not a UUID where a batch id was expected.
    #[error("{input:?} is not a UUID")]
    MalformedId {
        /// The input, cut to 64 characters.
        input: String,
    },
    /// `created_ms` is outside the times this crate can represent.
    #[error("created_ms {created_ms} is out of range")]
    CreatedOutOfRange {
        /// The value found.
        created_ms: i64,
    },
    /// The frame belongs to another tenant than the reader serves.
    #[error("tenant mismatch: expected {expected}, frame is for {found}")]
    TenantMismatch {
        /// The tenant the reader serves.
        expected: TenantId,
        /// The tenant the frame names.
        found: TenantId,
    },
    /// `body_len` is over the limit.
    #[error("body of {body_len} bytes is over the limit of {max}")]
    BodyTooLarge {
        /// The body length (declared, or produced by the encoder).
        body_len: u64,
        /// The limit.
        max: u32,
    },
    /// `content_len` is over the limit.
    #[error("content of {content_len} bytes is over the limit of {max}")]
    ContentTooLarge {
        /// The content length.
        content_len: u64,
        /// The limit.
        max: u32,
    },
    /// `record_count` is over the limit.
    #[error("{count} records is over the limit of {max}")]
    TooManyRecords {
        /// The record count.
        count: u64,
        /// The limit.
        max: u32,
    },
    /// An unsealed frame with codec none whose body and content lengths differ.
    #[error("codec none but body_len {body_len} != content_len {content_len}")]
    LengthMismatch {
        /// The body length.
        body_len: u32,
        /// The content length.
        content_len: u32,
    },
    /// The body's CRC does not match.
    #[error("body CRC mismatch: computed {computed:#010x}, frame says {stored:#010x}")]
    BodyCrc {
        /// CRC-32 of the body bytes received.
        computed: u32,
        /// The CRC the frame carries.
        stored: u32,
    },
    /// The input ended inside a frame.
    #[error(
        "input ends inside a frame: {buffered} bytes buffered, at least {at_least} more needed"
    )]
    Truncated {
        /// Bytes of the incomplete frame received.
        buffered: usize,
        /// Bytes still missing, at least.
        at_least: usize,
    },
    /// Bytes follow a frame that was expected to be alone.
    #[error("{extra} bytes follow the frame")]
    ExtraBytes {
        /// How many.
        extra: usize,
    },
    /// The frame is sealed: its payload needs its keys.
    #[error("the frame is sealed; open it with its tenant's keys first")]
    Sealed,
    /// Inflation would produce more than `content_len` bytes.
    #[error("DEFLATE stream inflates past the declared content_len of {content_len}")]
    InflateOverflow {
        /// The declared length.
        content_len: u32,
    },
    /// The DEFLATE stream ends before `content_len` bytes.
    #[error("DEFLATE stream ends after {produced} of {content_len} bytes")]
    InflateShort {
        /// Bytes produced.
        produced: usize,
        /// The declared length.
        content_len: u32,
    },
    /// Body bytes follow the end of the DEFLATE stream.
    #[error("{extra} body bytes follow the end of the DEFLATE stream")]
    TrailingData {
        /// How many.
        extra: usize,
    },
    /// The DEFLATE stream is cut off or stops making progress.
    #[error("DEFLATE stream stalls after {consumed} of {body_len} body bytes")]
    InflateStalled {
        /// Body bytes consumed.
        consumed: usize,
        /// The body length.
        body_len: u32,
    },
    /// The DEFLATE stream is invalid.
    #[error("invalid DEFLATE stream: {message}")]
    Corrupt {
        /// The inflater's description.
        message: String,
    },
    /// The payload does not hold exactly `record_count` lines.
    #[error("payload holds {found} lines, header says {declared}")]
    RecordCount {
        /// `record_count` from the header.
        declared: u32,
        /// Lines found (an unterminated last line counts).
        found: u64,
    },
    /// One record's JSON line is over the limit.
    #[error("record {index} is {bytes} bytes, over the limit of {max}")]
    RecordTooLarge {
        /// The record's position in the batch.
        index: usize,
        /// Its JSON length.
        bytes: usize,
        /// The limit.
        max: u32,
    },
    /// A record does not parse or does not validate.
    #[error("record {index}: {source}")]
    Record {
        /// The record's position in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: RecordError,
    },
    /// The decoder failed earlier and must be reset.
    #[error("the decoder failed earlier; reset it before reading again")]
    Failed,
    /// A [`FrameLimits`] or encoder setting outside its allowed range.
    #[error("frame setting {setting} = {value} is outside its allowed range")]
    InvalidLimit {
        /// The setting's name.
        setting: &'static str,
        /// The value refused.
        value: u32,
    },
    /// A duration setting outside its allowed range (zero, negative, or
    /// above its ceiling).
    #[error("frame setting {setting} = {millis} ms is outside its allowed range")]
    InvalidDuration {
        /// The setting's name.
        setting: &'static str,
        /// The value refused, in milliseconds (saturated at the ends of `i64`).
        millis: i64,
    },
    /// The compressor failed (a broken internal invariant in the backend).
    #[error("compression failed: {message}")]
    Compress {
        /// The compressor's description.
        message: String,
    },
}

impl FrameError {
    /// The name of the check that failed, as `docs/FRAME.md` names it
    /// (`"HeaderCrc"`, `"BodyTooLarge"`, ...).
    #[must_use]
    pub fn check_name(&self) -> &'static str {
        match self {
            FrameError::BadMagic { .. } => "BadMagic",
            FrameError::UnsupportedVersion { .. } => "UnsupportedVersion",
            FrameError::HeaderCrc { .. } => "HeaderCrc",
            FrameError::ReservedFlags { .. } => "ReservedFlags",
            FrameError::UnknownCodec { .. } => "UnknownCodec",
            FrameError::UnknownDataType { .. } => "UnknownDataType",
            FrameError::UnsupportedSchemaVersion { .. } => "UnsupportedSchemaVersion",
            FrameError::ReservedNotZero { .. } => "ReservedNotZero",
            FrameError::NilId { .. } => "NilId",
            FrameError::MalformedId { .. } => "MalformedId",
            FrameError::CreatedOutOfRange { .. } => "CreatedOutOfRange",
            FrameError::TenantMismatch { .. } => "TenantMismatch",
            FrameError::BodyTooLarge { .. } => "BodyTooLarge",
            FrameError::ContentTooLarge { .. } => "ContentTooLarge",
            FrameError::TooManyRecords { .. } => "TooManyRecords",
            FrameError::LengthMismatch { .. } => "LengthMismatch",
            FrameError::BodyCrc { .. } => "BodyCrc",
            FrameError::Truncated { .. } => "Truncated",
            FrameError::ExtraBytes { .. } => "ExtraBytes",
            FrameError::Sealed => "Sealed",
            FrameError::InflateOverflow { .. } => "InflateOverflow",
            FrameError::InflateShort { .. } => "InflateShort",
            FrameError::TrailingData { .. } => "TrailingData",
            FrameError::InflateStalled { .. } => "InflateStalled",
            FrameError::Corrupt { .. } => "Corrupt",
            FrameError::RecordCount { .. } => "RecordCount",
            FrameError::RecordTooLarge { .. } => "RecordTooLarge",
            FrameError::Record { .. } => "Record",
            FrameError::Failed => "Failed",
            FrameError::InvalidLimit { .. } => "InvalidLimit",
            FrameError::InvalidDuration { .. } => "InvalidDuration",
            FrameError::Compress { .. } => "Compress",
        }
    }
}

/// An upper bound on the raw DEFLATE size of `n` payload bytes (zlib's
/// `deflateBound` for a raw stream, which covers stored blocks).
pub(crate) fn deflate_bound(n: usize) -> usize {
    n + (n >> 12) + (n >> 14) + (n >> 25) + 13
}

/// The data type with wire number `n`, as a frame error.
pub(crate) fn data_type_from_u8(n: u8) -> Result<DataType, FrameError> {
    DataType::from_u8(n).ok_or(FrameError::UnknownDataType { data_type: n })
}
