use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::{Compress, Compression, FlushCompress, Status};

use super::header::{array, header_len};
use super::{
    BatchId, ClosedBatch, Codec, FIXED_HEADER_LEN, FrameError, FrameHeader, FrameLimits,
    PayloadReader, SealSection, deflate_bound,
};
use crate::record::{DataType, Record, RecordLimits};
use crate::tenant::{TenantBatch, TenantId};

/// A whole, checked frame: its parsed header and its bytes on the wire.
///
/// Cloning is cheap (the bytes are reference-counted), so a frame can sit in
/// a spool, an outbox and a transmit at once. Frames come from
/// [`FrameEncoder`], [`FrameDecoder`](crate::FrameDecoder) or
/// [`Frame::decode`], which all check the header CRC, the body CRC and the
/// limits.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    header: FrameHeader,
    bytes: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl Frame {
    /// A frame from bytes already checked by the decoder or written by the
    /// encoder.
    pub(crate) fn from_checked(header: FrameHeader, bytes: Bytes) -> Frame {
        debug_assert_eq!(header.frame_len(), bytes.len());
        Frame { header, bytes }
    }

    /// Reads exactly one frame from `bytes`, without copying its body.
    ///
    /// # Errors
    ///
    /// Any check of [`FrameDecoder`](crate::FrameDecoder) that fails;
    /// [`FrameError::Truncated`] if `bytes` ends inside the frame;
    /// [`FrameError::ExtraBytes`] if anything follows it.
    pub fn decode(bytes: Bytes, limits: &FrameLimits) -> Result<Frame, FrameError> {
        match super::decode::scan(&bytes, limits, None)? {
            super::decode::Scan::NeedMore(at_least) => Err(FrameError::Truncated {
                buffered: bytes.len(),
                at_least,
            }),
            super::decode::Scan::Frame(header) => {
                let len = header.frame_len();
                if bytes.len() > len {
                    return Err(FrameError::ExtraBytes {
                        extra: bytes.len() - len,
                    });
                }
                Ok(Frame::from_checked(header, bytes))
            }
        }
    }

    /// The parsed header.
    #[must_use]
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// The tenant the frame belongs to.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.header.tenant
    }

    /// The frame's data type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.header.data_type
    }

    /// The batch id.
    #[must_use]
    pub fn batch_id(&self) -> BatchId {
        self.header.batch_id
    }

    /// The whole frame as it goes on the wire or into a spool.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole frame's bytes.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The frame's length on the wire.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a frame has at least its header. Here for API symmetry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The body: the payload after the codec (and encryption, when sealed).
    #[must_use]
    pub fn body(&self) -> &[u8] {
        let start = self.header.prefix_len();
        &self.bytes[start..start + self.header.body_len as usize]
    }

    /// The seal section of a sealed frame.
    #[must_use]
    pub fn seal(&self) -> Option<SealSection> {
        self.header
            .sealed
            .then(|| SealSection(array(&self.bytes[FIXED_HEADER_LEN..header_len(true)])))
    }

    /// The frame's records; see [`PayloadReader::records`], which reuses its
    /// buffers across frames.
    ///
    /// # Errors
    ///
    /// As [`PayloadReader::records`].
    pub fn records(&self, limits: &FrameLimits) -> Result<Vec<Record>, FrameError> {
        PayloadReader::new(*limits).records(self)
    }
}

/// Writes frames, reusing its compressor and payload buffer across frames.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// let mut encoder = FrameEncoder::new().with_level(1)?;
/// let batch = TenantBatch::new(tenant, DataType::Event);
/// let mut out = Vec::new();
/// let header = encoder.encode(&batch, BatchId::from_random_bytes([9; 16]), now, &mut out)?;
/// assert_eq!(out.len(), header.frame_len());
/// assert_eq!(header.tenant, tenant);
/// # Ok::<(), FrameError>(())
/// ```
pub struct FrameEncoder {
    codec: Codec,
    level: u32,
    /// Made on the first DEFLATE frame (its state is a few hundred KiB):
    /// an encoder writing only `Codec::None` never allocates it.
    compressor: Option<Compress>,
    payload: Vec<u8>,
    record_limits: RecordLimits,
    limits: FrameLimits,
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameEncoder")
            .field("codec", &self.codec)
            .field("level", &self.level)
            .field("limits", &self.limits)
            .field("record_limits", &self.record_limits)
            .finish_non_exhaustive()
    }
}

impl Default for FrameEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameEncoder {
    /// The default DEFLATE level: 1. Measured on 1 MiB of Performance
    /// records (`cargo bench --bench frame`), level 1 compresses at
    /// 871 MiB/s to 6.9 : 1, level 3 at 357 MiB/s to 10.0 : 1, level 6 at
    /// 211 MiB/s to 11.8 : 1: an agent's CPU is the scarcer resource.
    pub const DEFAULT_LEVEL: u32 = 1;

    /// An encoder writing DEFLATE at [`FrameEncoder::DEFAULT_LEVEL`], with
    /// default record and frame limits.
    #[must_use]
    pub fn new() -> Self {
        FrameEncoder {
            codec: Codec::Deflate,
            level: Self::DEFAULT_LEVEL,
            compressor: None,
            payload: Vec::new(),
            record_limits: RecordLimits::default(),
            limits: FrameLimits::default(),
        }
    }

    /// Sets the codec.
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the DEFLATE level, 0 (stored) to 9 (smallest).
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for a level over 9.
    pub fn with_level(mut self, level: u32) -> Result<Self, FrameError> {
        if level > 9 {
            return Err(FrameError::InvalidLimit {
                setting: "level",
                value: level,
            });
        }
        self.level = level;
        self.compressor = None;
        Ok(self)
    }

    /// Sets the limits frames must fit (body, content, records, record size);
    /// a frame that would break one is refused, so that any reader with the
    /// same limits accepts every frame written.
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the limits records are validated against.
    #[must_use]
    pub fn with_record_limits(mut self, limits: RecordLimits) -> Self {
        self.record_limits = limits;
        self
    }

    /// The codec.
    #[must_use]
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Validates and serializes `batch`, and appends its frame to `out`,
    /// with `now` as the time the batch was closed.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooManyRecords`], [`FrameError::Record`] for a record
    /// that does not validate, [`FrameError::RecordTooLarge`],
    /// [`FrameError::ContentTooLarge`] or [`FrameError::BodyTooLarge`]. On
    /// error `out` is as it was.
    pub fn encode(
        &mut self,
        batch: &TenantBatch,
        batch_id: BatchId,
        now: DateTime<Utc>,
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, FrameError> {
        let count = u32::try_from(batch.len())
            .ok()
            .filter(|&n| n <= self.limits.max_records())
            .ok_or(FrameError::TooManyRecords {
                count: batch.len() as u64,
                max: self.limits.max_records(),
            })?;
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let meta = Meta {
            tenant: batch.tenant(),
            data_type: batch.data_type(),
            record_count: count,
            batch_id,
            created: now,
        };
        let result = self
            .serialize(batch.records(), &mut payload)
            .and_then(|()| self.write(meta, &payload, out));
        self.payload = payload;
        result
    }

    fn serialize(&self, records: &[Record], payload: &mut Vec<u8>) -> Result<(), FrameError> {
        let max_record = self.limits.max_record_bytes() as usize;
        let max_content = self.limits.max_content();
        for (index, record) in records.iter().enumerate() {
            record
                .validate(&self.record_limits)
                .map_err(|source| FrameError::Record { index, source })?;
            let start = payload.len();
            record.write_json(payload);
            let bytes = payload.len() - start;
            if bytes > max_record {
                return Err(FrameError::RecordTooLarge {
                    index,
                    bytes,
                    max: self.limits.max_record_bytes(),
                });
            }
            payload.push(b'\n');
            if payload.len() > max_content as usize {
                return Err(FrameError::ContentTooLarge {
                    content_len: payload.len() as u64,
                    max: max_content,
                });
            }
        }
        Ok(())
    }

    /// Appends the frame of a batch the [`Batcher`](crate::Batcher) closed
    /// (its records are already validated and serialized), with the time
    /// it was closed as its creation time.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooManyRecords`], [`FrameError::ContentTooLarge`],
    /// [`FrameError::RecordTooLarge`] or [`FrameError::BodyTooLarge`] if the
    /// batch does not fit this encoder's limits. On error `out` is as it was.
    pub fn encode_closed(
        &mut self,
        batch: &ClosedBatch,
        batch_id: BatchId,
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, FrameError> {
        if batch.record_count() > self.limits.max_records() {
            return Err(FrameError::TooManyRecords {
                count: batch.record_count().into(),
                max: self.limits.max_records(),
            });
        }
        if batch.payload().len() > self.limits.max_content() as usize {
            return Err(FrameError::ContentTooLarge {
                content_len: batch.payload().len() as u64,
                max: self.limits.max_content(),
            });
        }
        // The batcher's record limit may be above this encoder's: a reader
        // with these limits would refuse the frame, so do not write it.
        if batch.largest_record_bytes() > self.limits.max_record_bytes() as usize {
            return Err(FrameError::RecordTooLarge {
                index: batch.largest_record_index(),
                bytes: batch.largest_record_bytes(),
                max: self.limits.max_record_bytes(),
            });
        }
        let meta = Meta {
            tenant: batch.tenant(),
            data_type: batch.data_type(),
            record_count: batch.record_count(),
            batch_id,
            created: batch.closed_at(),
        };
        self.write(meta, batch.payload(), out)
    }

    /// Like [`FrameEncoder::encode`], returning a [`Frame`] in a buffer of
    /// its own.
    ///
    /// # Errors
    ///
    /// As [`FrameEncoder::encode`].
    pub fn encode_frame(
        &mut self,
        batch: &TenantBatch,
        batch_id: BatchId,
        now: DateTime<Utc>,
    ) -> Result<Frame, FrameError> {
        let mut out = Vec::new();
        let header = self.encode(batch, batch_id, now, &mut out)?;
        Ok(Frame::from_checked(header, Bytes::from(out)))
    }

    /// Like [`FrameEncoder::encode_closed`], returning a [`Frame`].
    ///
    /// # Errors
    ///
    /// As [`FrameEncoder::encode_closed`].
    pub fn encode_closed_frame(
        &mut self,
        batch: &ClosedBatch,
        batch_id: BatchId,
    ) -> Result<Frame, FrameError> {
        let mut out = Vec::new();
        let header = self.encode_closed(batch, batch_id, &mut out)?;
        Ok(Frame::from_checked(header, Bytes::from(out)))
    }

    /// Appends the frame of `payload`; on error `out` is as it was.
    fn write(
        &mut self,
        meta: Meta,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, FrameError> {
        let start = out.len();
        let result = self.write_inner(meta, payload, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn write_inner(
        &mut self,
        meta: Meta,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<FrameHeader, FrameError> {
        let Meta {
            tenant,
            data_type,
            record_count,
            batch_id,
            created,
        } = meta;
        let max_body = self.limits.max_body();
        // The header keeps milliseconds: return the header as a reader sees it.
        let created =
            DateTime::from_timestamp_millis(created.timestamp_millis()).unwrap_or(created);
        // content_len fits: callers checked payload.len() <= max_content (a u32).
        let content_len =
            u32::try_from(payload.len()).map_err(|_| FrameError::ContentTooLarge {
                content_len: payload.len() as u64,
                max: self.limits.max_content(),
            })?;
        let start = out.len();
        let body_start = start + FIXED_HEADER_LEN + 4;
        out.resize(body_start, 0);
        match self.codec {
            Codec::None => out.extend_from_slice(payload),
            Codec::Deflate => self.compress(payload, out)?,
        }
        let body_len = out.len() - body_start;
        let body_len = u32::try_from(body_len)
            .ok()
            .filter(|&n| n <= max_body)
            .ok_or(FrameError::BodyTooLarge {
                body_len: body_len as u64,
                max: max_body,
            })?;
        let header = FrameHeader {
            sealed: false,
            codec: self.codec,
            data_type,
            record_count,
            tenant,
            batch_id,
            created,
            content_len,
            body_len,
        };
        let head = header.encode();
        out[start..start + FIXED_HEADER_LEN].copy_from_slice(&head);
        let header_crc = crc32fast::hash(&head);
        out[start + FIXED_HEADER_LEN..body_start].copy_from_slice(&header_crc.to_be_bytes());
        let body_crc = crc32fast::hash(&out[body_start..]);
        out.extend_from_slice(&body_crc.to_be_bytes());
        Ok(header)
    }

    fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let level = self.level;
        let compressor = self
            .compressor
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        compressor.reset();
        let limit = self.limits.max_body() as usize;
        let body_start = out.len();
        out.reserve(deflate_bound(payload.len()).min(limit + 64));
        loop {
            let consumed = usize::try_from(compressor.total_in()).unwrap_or(usize::MAX);
            let status = compressor
                .compress_vec(&payload[consumed..], out, FlushCompress::Finish)
                .map_err(|e| FrameError::Compress {
                    message: e.to_string(),
                })?;
            if status == Status::StreamEnd {
                return Ok(());
            }
            if out.len() - body_start > limit {
                // Already over the limit: stop compressing.
                return Err(FrameError::BodyTooLarge {
                    body_len: (out.len() - body_start) as u64,
                    max: self.limits.max_body(),
                });
            }
            out.reserve(4096);
        }
    }
}

/// The header fields a batch supplies.
#[derive(Clone, Copy)]
struct Meta {
    tenant: TenantId,
    data_type: DataType,
    record_count: u32,
    batch_id: BatchId,
    created: DateTime<Utc>,
}
