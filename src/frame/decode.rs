use bytes::BytesMut;

use super::header::{array, check_magic, check_version, header_len};
use super::resync::{Candidate, Resynced, next_candidate};
use super::{Codec, FIXED_HEADER_LEN, Frame, FrameError, FrameHeader, FrameLimits, SEAL_TAG_LEN};
use crate::tenant::TenantId;

/// What [`scan`] found at the start of a buffer.
pub(crate) enum Scan {
    /// The bytes so far are a valid prefix; at least this many more are needed.
    NeedMore(usize),
    /// A whole, checked frame of `header.frame_len()` bytes.
    Frame(FrameHeader),
}

/// Checks the header of the frame at the start of `buf`, in the order of
/// `docs/FRAME.md`, as far as the bytes present allow.
pub(super) fn scan_header(
    buf: &[u8],
    limits: &FrameLimits,
    expect: Option<TenantId>,
) -> Result<Result<FrameHeader, usize>, FrameError> {
    // 1. magic, byte by byte as it arrives.
    check_magic(&buf[..buf.len().min(4)])?;
    // 2. version.
    if let Some(&version) = buf.get(4) {
        check_version(version)?;
    }
    // 3. header CRC; the SEALED bit (checked by the CRC) says where it is.
    let Some(&flags) = buf.get(5) else {
        return Ok(Err(FIXED_HEADER_LEN + 4 - buf.len()));
    };
    let hlen = header_len(flags & 0x01 != 0);
    if buf.len() < hlen + 4 {
        return Ok(Err(hlen + 4 - buf.len()));
    }
    let computed = crc32fast::hash(&buf[..hlen]);
    let stored = u32::from_be_bytes(array(&buf[hlen..hlen + 4]));
    if computed != stored {
        return Err(FrameError::HeaderCrc { computed, stored });
    }
    // 4. the fields.
    let header = FrameHeader::parse(&array(&buf[..FIXED_HEADER_LEN]))?;
    // 5. the tenant.
    if let Some(expected) = expect.filter(|&t| t != header.tenant) {
        return Err(FrameError::TenantMismatch {
            expected,
            found: header.tenant,
        });
    }
    // 6. limits, before any of the body is buffered. A sealed body carries
    // a 16-byte tag on top of what the limit allows, so that sealing a frame
    // at the limit gives a frame the same readers still take.
    let max_body = if header.sealed {
        limits.max_body().saturating_add(SEAL_TAG_LEN)
    } else {
        limits.max_body()
    };
    if header.body_len > max_body {
        return Err(FrameError::BodyTooLarge {
            body_len: header.body_len.into(),
            max: max_body,
        });
    }
    if header.content_len > limits.max_content() {
        return Err(FrameError::ContentTooLarge {
            content_len: header.content_len.into(),
            max: limits.max_content(),
        });
    }
    if header.record_count > limits.max_records() {
        return Err(FrameError::TooManyRecords {
            count: header.record_count.into(),
            max: limits.max_records(),
        });
    }
    if !header.sealed && header.codec == Codec::None && header.body_len != header.content_len {
        return Err(FrameError::LengthMismatch {
            body_len: header.body_len,
            content_len: header.content_len,
        });
    }
    Ok(Ok(header))
}

/// Reads and checks the header at the start of `buf` (magic, version, header
/// CRC, fields), without limits and without the body: enough to learn a
/// frame's tenant, type, ids and seal section cheaply.
pub(crate) fn peek_header(buf: &[u8]) -> Result<FrameHeader, FrameError> {
    let unlimited = FrameLimits {
        max_body: u32::MAX,
        max_content: u32::MAX,
        max_records: u32::MAX,
        max_record_bytes: u32::MAX,
    };
    match scan_header(buf, &unlimited, None)? {
        Ok(header) => Ok(header),
        Err(at_least) => Err(FrameError::Truncated {
            buffered: buf.len(),
            at_least,
        }),
    }
}

/// Checks the body CRC of a frame whose header passed, if the body is there.
pub(super) fn scan_body(buf: &[u8], header: &FrameHeader) -> Result<Scan, FrameError> {
    let total = header.frame_len();
    if buf.len() < total {
        return Ok(Scan::NeedMore(total - buf.len()));
    }
    // 7. body CRC.
    let body = &buf[header.prefix_len()..total - 4];
    let computed = crc32fast::hash(body);
    let stored = u32::from_be_bytes(array(&buf[total - 4..total]));
    if computed != stored {
        return Err(FrameError::BodyCrc { computed, stored });
    }
    Ok(Scan::Frame(*header))
}

/// Checks the frame at the start of `buf` as far as its bytes allow.
pub(crate) fn scan(
    buf: &[u8],
    limits: &FrameLimits,
    expect: Option<TenantId>,
) -> Result<Scan, FrameError> {
    match scan_header(buf, limits, expect)? {
        Err(at_least) => Ok(Scan::NeedMore(at_least)),
        Ok(header) => scan_body(buf, &header),
    }
}

/// What [`FrameDecoder::poll_frame`] has to give.
#[derive(Debug)]
#[must_use]
pub enum Decoded {
    /// A whole, checked frame.
    Frame(Frame),
    /// No whole frame yet: push at least this many more bytes (always ≥ 1).
    NeedMore(usize),
}

/// An incremental, sans-I/O reader of concatenated frames.
///
/// The caller pushes bytes as they arrive, in chunks of any size, and polls
/// for whole frames. Each frame is checked in the order of `docs/FRAME.md`:
/// magic (failing on the first wrong byte), version, header CRC, header
/// fields, the expected tenant, the limits (before any of the body is
/// buffered), then the body CRC. Records are decoded on request, with
/// [`PayloadReader`](crate::PayloadReader).
///
/// **Drain contract**: after every [`push`](FrameDecoder::push), call
/// [`poll_frame`](FrameDecoder::poll_frame) until it returns
/// [`Decoded::NeedMore`] or an error. The decoder then holds less than one
/// frame, so its buffer never grows past one frame (at most the body limit
/// plus 140 bytes) plus the last chunk pushed. At the end of the input, call
/// [`finish`](FrameDecoder::finish) to learn whether it ended inside a frame.
///
/// After an error the decoder stays failed (every call returns
/// [`FrameError::Failed`], and bytes pushed are dropped and counted) until
/// [`reset`](FrameDecoder::reset), or until its user asks it to skip the
/// damage with [`resync`](FrameDecoder::resync): it never skips ahead by
/// itself.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// # let batch = TenantBatch::new(tenant, DataType::Alert);
/// let frame = FrameEncoder::new().encode_frame(&batch, BatchId::from_random_bytes([3; 16]), now)?;
/// let mut decoder = FrameDecoder::new(FrameLimits::default()).expect_tenant(tenant);
/// let mut frames = Vec::new();
/// for byte in frame.as_bytes().iter() {
///     decoder.push(&[*byte]);
///     while let Decoded::Frame(f) = decoder.poll_frame()? {
///         frames.push(f);
///     }
/// }
/// decoder.finish()?;
/// assert_eq!(frames, [frame]);
/// # Ok::<(), FrameError>(())
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    limits: FrameLimits,
    expect: Option<TenantId>,
    buf: BytesMut,
    /// The header of the frame being buffered, once it has passed its checks.
    pending: Option<FrameHeader>,
    failed: bool,
    /// The header of the frame that failed, when only its body did.
    failed_header: Option<FrameHeader>,
    /// Bytes pushed while failed, and dropped.
    dropped: usize,
    /// Whether a failure keeps the buffer, for `resync` to search.
    keep_on_failure: bool,
}

impl FrameDecoder {
    /// A decoder applying `limits`, accepting frames of any tenant.
    #[must_use]
    pub fn new(limits: FrameLimits) -> Self {
        FrameDecoder {
            limits,
            expect: None,
            buf: BytesMut::new(),
            pending: None,
            failed: false,
            failed_header: None,
            dropped: 0,
            keep_on_failure: false,
        }
    }

    /// Makes the decoder keep its buffer after a failure (at most one frame
    /// and the last chunk pushed, the bound that holds anyway), so that
    /// [`resync`](FrameDecoder::resync) can find the next intact frame in
    /// the bytes already pushed. Without it a failure frees the buffer at
    /// once, and a resync can only skip what was freed.
    #[must_use]
    pub fn with_resync(mut self) -> Self {
        self.keep_on_failure = true;
        self
    }

    /// Makes the decoder refuse, with [`FrameError::TenantMismatch`], any
    /// frame not of `tenant`, before reading its body.
    #[must_use]
    pub fn expect_tenant(mut self, tenant: TenantId) -> Self {
        self.expect = Some(tenant);
        self
    }

    /// Appends received bytes. Bytes pushed after a failure are dropped
    /// (and counted in the next [`resync`](FrameDecoder::resync)'s
    /// [`skipped`](Resynced::skipped)).
    pub fn push(&mut self, data: &[u8]) {
        if self.failed {
            self.dropped = self.dropped.saturating_add(data.len());
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet taken out as frames.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes out the next whole frame, or says how many more bytes it needs.
    ///
    /// # Errors
    ///
    /// The first failed check for the frame at the head of the buffer:
    /// [`FrameError::BadMagic`], [`FrameError::UnsupportedVersion`],
    /// [`FrameError::HeaderCrc`], a header field error (see
    /// [`FrameHeader::parse`]), [`FrameError::TenantMismatch`],
    /// [`FrameError::BodyTooLarge`], [`FrameError::ContentTooLarge`],
    /// [`FrameError::TooManyRecords`], [`FrameError::LengthMismatch`] or
    /// [`FrameError::BodyCrc`]; [`FrameError::Failed`] after a failure.
    pub fn poll_frame(&mut self) -> Result<Decoded, FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        let result = self.poll_inner();
        if result.is_err() {
            self.failed = true;
            self.failed_header = self.pending.take();
            if !self.keep_on_failure {
                // Freed at once; the bytes count as skipped if the user
                // resyncs all the same.
                self.dropped = self.dropped.saturating_add(self.buf.len());
                self.buf = BytesMut::new();
            }
            // Otherwise kept (at most one frame and the last chunk, the
            // bound that holds anyway) for `resync`; `reset` frees it.
        }
        result
    }

    /// Skips the damage after an error, explicitly (on a decoder made
    /// [`with_resync`](FrameDecoder::with_resync); on another, the buffer
    /// was freed at the failure and only that is skipped): drops the failed
    /// frame's first byte and every byte after it up to the next offset
    /// where a frame header passes all its checks (magic, version, header
    /// CRC, fields, the expected tenant, limits), or where the bytes
    /// buffered end inside a header that may still pass; then the decoder
    /// reads on from there. Bytes pushed while it was failed were dropped:
    /// they count as skipped too. A frame found this way is still taken
    /// only if its body CRC passes ([`poll_frame`](FrameDecoder::poll_frame)
    /// checks it as any other), so no byte failing a check is ever taken.
    ///
    /// Returns the bytes skipped and, if only the failed frame's body
    /// failed, its header (its batch id, tenant and data type). Does
    /// nothing, and returns zero, unless the decoder has failed. Work is
    /// linear in the bytes buffered.
    ///
    /// ```
    /// # use chrono::{TimeZone, Utc};
    /// # use opsdata::*;
    /// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    /// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    /// # let batch = TenantBatch::new(tenant, DataType::Alert);
    /// let mut encoder = FrameEncoder::new();
    /// let a = encoder.encode_frame(&batch, BatchId::from_random_bytes([1; 16]), now)?;
    /// let b = encoder.encode_frame(&batch, BatchId::from_random_bytes([2; 16]), now)?;
    /// let mut bytes = [a.as_bytes().as_ref(), b.as_bytes().as_ref()].concat();
    /// let last = a.len() - 1;
    /// bytes[last] ^= 1; // damage the first frame's body CRC
    /// let mut decoder = FrameDecoder::new(FrameLimits::default()).with_resync();
    /// decoder.push(&bytes);
    /// assert!(matches!(decoder.poll_frame(), Err(FrameError::BodyCrc { .. })));
    /// let skipped = decoder.resync();
    /// assert_eq!(skipped.skipped, a.len());
    /// assert_eq!(skipped.header.map(|h| h.batch_id), Some(a.batch_id()));
    /// assert!(matches!(decoder.poll_frame()?, Decoded::Frame(f) if f == b));
    /// # Ok::<(), FrameError>(())
    /// ```
    pub fn resync(&mut self) -> Resynced {
        if !self.failed {
            return Resynced::default();
        }
        let from = self.buf.len().min(1);
        let skip = match next_candidate(&self.buf, from, &self.limits, self.expect) {
            Candidate::Header(at) | Candidate::Partial(at) => at,
            Candidate::None => self.buf.len(),
        };
        let _ = self.buf.split_to(skip);
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.failed = false;
        self.pending = None;
        let resynced = Resynced {
            skipped: skip.saturating_add(self.dropped),
            header: self.failed_header.take(),
        };
        self.dropped = 0;
        resynced
    }

    fn poll_inner(&mut self) -> Result<Decoded, FrameError> {
        let header = match self.pending {
            Some(h) => h,
            None => match scan_header(&self.buf, &self.limits, self.expect)? {
                Err(at_least) => return Ok(Decoded::NeedMore(at_least)),
                Ok(h) => {
                    self.pending = Some(h);
                    // Room for the rest of this frame, at most the limits allow.
                    self.buf
                        .reserve(h.frame_len().saturating_sub(self.buf.len()));
                    h
                }
            },
        };
        match scan_body(&self.buf, &header)? {
            Scan::NeedMore(n) => Ok(Decoded::NeedMore(n)),
            Scan::Frame(h) => {
                self.pending = None;
                let bytes = self.buf.split_to(h.frame_len()).freeze();
                if self.buf.is_empty() {
                    // Let the next frame start in a fresh allocation rather
                    // than keep this frame's alive through the shared buffer.
                    self.buf = BytesMut::new();
                }
                Ok(Decoded::Frame(Frame::from_checked(h, bytes)))
            }
        }
    }

    /// Declares the end of the input.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`] if bytes of an incomplete frame are
    /// buffered; [`FrameError::Failed`] after a failure.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.failed {
            return Err(FrameError::Failed);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let at_least = match self.pending {
            // More than the frame may be buffered if poll_frame was not
            // called since: never underflow, and always ask for one more.
            Some(h) => h.frame_len().saturating_sub(self.buf.len()).max(1),
            None => match scan_header(&self.buf, &self.limits, self.expect) {
                Ok(Err(n)) => n,
                // poll_frame was not called after the last push: report the
                // bytes as truncated input all the same.
                Ok(Ok(h)) => h.frame_len().saturating_sub(self.buf.len()).max(1),
                Err(_) => 1,
            },
        };
        Err(FrameError::Truncated {
            buffered: self.buf.len(),
            at_least,
        })
    }

    /// Clears the buffer and any failure, to read a new stream.
    pub fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.pending = None;
        self.failed = false;
        self.failed_header = None;
        self.dropped = 0;
    }
}
