use flate2::{Decompress, FlushDecompress, Status};

use super::{Codec, Frame, FrameError, FrameLimits};
use crate::record::Record;

/// Inflates and parses frames' payloads, reusing its inflater and buffer
/// across frames.
///
/// Inflation writes into a buffer reserved for the frame's declared
/// `content_len` (already checked against [`FrameLimits::max_content`]) and
/// fails the moment the stream would produce more: a decompression bomb costs
/// no more memory than the declared, limited size.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// let batch = TenantBatch::new(tenant, DataType::State);
/// let frame = FrameEncoder::new().encode_frame(&batch, BatchId::from_random_bytes([1; 16]), now)?;
/// let mut reader = PayloadReader::new(FrameLimits::default());
/// assert!(reader.records(&frame)?.is_empty());
/// # Ok::<(), FrameError>(())
/// ```
pub struct PayloadReader {
    limits: FrameLimits,
    inflater: Decompress,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PayloadReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadReader")
            .field("limits", &self.limits)
            .field("buffer_capacity", &self.buf.capacity())
            .finish_non_exhaustive()
    }
}

impl PayloadReader {
    /// A reader applying `limits`.
    #[must_use]
    pub fn new(limits: FrameLimits) -> Self {
        PayloadReader {
            limits,
            inflater: Decompress::new(false),
            buf: Vec::new(),
        }
    }

    /// The frame's payload (JSON Lines), inflated if need be.
    ///
    /// # Errors
    ///
    /// [`FrameError::Sealed`] for a sealed frame; [`FrameError::ContentTooLarge`]
    /// if `content_len` is over this reader's limit; and, for DEFLATE,
    /// [`FrameError::InflateOverflow`], [`FrameError::InflateShort`],
    /// [`FrameError::TrailingData`], [`FrameError::InflateStalled`] or
    /// [`FrameError::Corrupt`].
    pub fn payload<'a>(&'a mut self, frame: &'a Frame) -> Result<&'a [u8], FrameError> {
        let h = frame.header();
        if h.sealed {
            return Err(FrameError::Sealed);
        }
        if h.content_len > self.limits.max_content() {
            return Err(FrameError::ContentTooLarge {
                content_len: h.content_len.into(),
                max: self.limits.max_content(),
            });
        }
        match h.codec {
            // A decoded frame with codec none has body_len == content_len.
            Codec::None => Ok(frame.body()),
            Codec::Deflate => {
                inflate(
                    &mut self.inflater,
                    frame.body(),
                    h.content_len,
                    &mut self.buf,
                )?;
                Ok(&self.buf)
            }
        }
    }

    /// The frame's records, parsed as its data type.
    ///
    /// Records are parsed, not validated: call
    /// [`Record::validate`] on each where the source is not trusted.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooManyRecords`] if `record_count` is over this reader's
    /// limit; any error of [`PayloadReader::payload`]; then
    /// [`FrameError::RecordCount`] if the payload does not hold exactly
    /// `record_count` lines, [`FrameError::RecordTooLarge`] for a line over
    /// the per-record limit, [`FrameError::Record`] for a line that is not a
    /// record of the frame's data type.
    pub fn records(&mut self, frame: &Frame) -> Result<Vec<Record>, FrameError> {
        let limits = self.limits;
        let header = *frame.header();
        if header.record_count > limits.max_records() {
            return Err(FrameError::TooManyRecords {
                count: header.record_count.into(),
                max: limits.max_records(),
            });
        }
        if header.sealed {
            return Err(FrameError::Sealed);
        }
        if header.content_len > limits.max_content() {
            return Err(FrameError::ContentTooLarge {
                content_len: header.content_len.into(),
                max: limits.max_content(),
            });
        }
        let mut lines = Lines::new(header.record_count, header.data_type, &limits);
        match header.codec {
            Codec::None => {
                lines.feed(frame.body())?;
            }
            Codec::Deflate => self.inflate_lines(frame.body(), header.content_len, &mut lines)?,
        }
        lines.finish()
    }

    /// Inflates `body` a step at a time into a window and parses each
    /// complete line as it appears, so the payload is read while it is still
    /// in cache and is never held whole: the window holds one step plus at
    /// most one record line.
    fn inflate_lines(
        &mut self,
        body: &[u8],
        content_len: u32,
        lines: &mut Lines<'_>,
    ) -> Result<(), FrameError> {
        const STEP: usize = 64 << 10;
        let max_line = self.limits.max_record_bytes() as usize + 1;
        let inflater = &mut self.inflater;
        inflater.reset(false);
        let window = &mut self.buf;
        window.clear();
        window.resize(STEP + max_line, 0);
        let mut filled = 0;
        let mut produced: u64 = 0;
        loop {
            let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
            let consumed = usize::try_from(in_before)
                .unwrap_or(usize::MAX)
                .min(body.len());
            let end = (filled + STEP).min(window.len());
            let status = inflater
                .decompress(
                    &body[consumed..],
                    &mut window[filled..end],
                    FlushDecompress::Finish,
                )
                .map_err(|e| FrameError::Corrupt {
                    message: e.to_string(),
                })?;
            let made = usize::try_from(inflater.total_out() - out_before).unwrap_or(usize::MAX);
            produced += made as u64;
            if produced > u64::from(content_len) {
                return Err(FrameError::InflateOverflow { content_len });
            }
            // Parse the complete lines; keep the partial last one at the front.
            let used = lines.feed(&window[..filled + made])?;
            window.copy_within(used..filled + made, 0);
            filled = filled + made - used;
            let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
            match status {
                Status::StreamEnd => {
                    if consumed < body.len() {
                        return Err(FrameError::TrailingData {
                            extra: body.len() - consumed,
                        });
                    }
                    if produced < u64::from(content_len) {
                        return Err(FrameError::InflateShort {
                            produced: usize::try_from(produced).unwrap_or(usize::MAX),
                            content_len,
                        });
                    }
                    // An unterminated last line is left in the window.
                    lines.unterminated(filled);
                    return Ok(());
                }
                Status::Ok | Status::BufError => {
                    if made == 0 && inflater.total_in() == in_before {
                        return Err(FrameError::InflateStalled {
                            consumed,
                            body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
                        });
                    }
                }
            }
        }
    }
}

/// Inflates one raw DEFLATE stream of exactly `content_len` bytes into `out`.
pub(crate) fn inflate(
    inflater: &mut Decompress,
    body: &[u8],
    content_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let want = content_len as usize;
    inflater.reset(false);
    out.clear();
    // One byte past the declared length, so that a stream producing more is
    // seen at once; `decompress_vec` never grows the vector.
    out.reserve_exact(want + 1);
    loop {
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let consumed = usize::try_from(in_before)
            .unwrap_or(usize::MAX)
            .min(body.len());
        let status = inflater
            .decompress_vec(&body[consumed..], out, FlushDecompress::Finish)
            .map_err(|e| FrameError::Corrupt {
                message: e.to_string(),
            })?;
        if out.len() > want {
            return Err(FrameError::InflateOverflow { content_len });
        }
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX);
        match status {
            Status::StreamEnd => {
                if consumed < body.len() {
                    return Err(FrameError::TrailingData {
                        extra: body.len() - consumed,
                    });
                }
                if out.len() < want {
                    return Err(FrameError::InflateShort {
                        produced: out.len(),
                        content_len,
                    });
                }
                return Ok(());
            }
            Status::Ok | Status::BufError => {
                if inflater.total_in() == in_before && inflater.total_out() == out_before {
                    // No progress: the input is used up before the end of
                    // the stream, or the inflater cannot move.
                    return Err(FrameError::InflateStalled {
                        consumed,
                        body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
                    });
                }
            }
        }
    }
}

/// The position of the first `\n`. Testing 32 bytes at a time without an
/// early exit lets the compiler vectorise the test: measured here at about
/// 7 GB/s against 2 GB/s for `iter().position()`, whose 0.5 ms per MiB was
/// a sixth of the cost of decoding a frame.
fn find_newline(s: &[u8]) -> Option<usize> {
    let mut offset = 0;
    for chunk in s.chunks(32) {
        if chunk.iter().fold(false, |found, &b| found | (b == b'\n')) {
            return chunk.iter().position(|&b| b == b'\n').map(|p| offset + p);
        }
        offset += chunk.len();
    }
    None
}

/// Parses JSON Lines into records of one data type as the bytes arrive,
/// counting lines against the header's `record_count`.
struct Lines<'a> {
    declared: u32,
    data_type: crate::record::DataType,
    limits: &'a FrameLimits,
    records: Vec<Record>,
    /// Bytes of an unterminated last line, known at the end of the payload.
    trailing: usize,
}

impl<'a> Lines<'a> {
    fn new(declared: u32, data_type: crate::record::DataType, limits: &'a FrameLimits) -> Self {
        Lines {
            declared,
            data_type,
            limits,
            // record_count is within the limit, checked by the caller.
            records: Vec::with_capacity(declared as usize),
            trailing: 0,
        }
    }

    /// Parses every complete line in `bytes`; returns how many bytes that
    /// used. The rest is a partial line, which must still fit the limit.
    fn feed(&mut self, bytes: &[u8]) -> Result<usize, FrameError> {
        let max = self.limits.max_record_bytes();
        let mut used = 0;
        while let Some(len) = find_newline(&bytes[used..]) {
            let index = self.records.len();
            if index == self.declared as usize {
                return Err(FrameError::RecordCount {
                    declared: self.declared,
                    found: u64::from(self.declared) + 1,
                });
            }
            let line = &bytes[used..used + len];
            if line.len() > max as usize {
                return Err(FrameError::RecordTooLarge {
                    index,
                    bytes: line.len(),
                    max,
                });
            }
            let record = Record::from_json(self.data_type, line)
                .map_err(|source| FrameError::Record { index, source })?;
            self.records.push(record);
            used += len + 1;
        }
        let partial = bytes.len() - used;
        if partial > max as usize {
            return Err(FrameError::RecordTooLarge {
                index: self.records.len(),
                bytes: partial,
                max,
            });
        }
        self.trailing = partial;
        Ok(used)
    }

    fn unterminated(&mut self, bytes: usize) {
        self.trailing = bytes;
    }

    fn finish(self) -> Result<Vec<Record>, FrameError> {
        let found = self.records.len() as u64 + u64::from(self.trailing > 0);
        if self.trailing > 0 || found != u64::from(self.declared) {
            return Err(FrameError::RecordCount {
                declared: self.declared,
                found,
            });
        }
        Ok(self.records)
    }
}

/// Parses a whole JSON Lines payload (tests and callers holding one).
#[cfg(test)]
fn parse_records(
    payload: &[u8],
    record_count: u32,
    data_type: crate::record::DataType,
    limits: &FrameLimits,
) -> Result<Vec<Record>, FrameError> {
    let mut lines = Lines::new(record_count, data_type, limits);
    lines.feed(payload)?;
    lines.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::new(6), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        let status = c
            .compress_vec(data, &mut out, FlushCompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        out
    }

    fn run(body: &[u8], content_len: u32) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        inflate(&mut Decompress::new(false), body, content_len, &mut out).map(|()| out)
    }

    #[test]
    fn exact_length_inflates() {
        let data = b"hello hello hello hello\n".repeat(100);
        assert_eq!(run(&deflate(&data), data.len() as u32).unwrap(), data);
        assert_eq!(run(&deflate(b""), 0).unwrap(), b"");
    }

    #[test]
    fn a_bomb_costs_no_more_than_the_declared_length() {
        // 64 MiB of zeros compress to ~64 KiB; declare 1 KiB.
        let bomb = deflate(&vec![0u8; 64 << 20]);
        let mut out = Vec::new();
        let err = inflate(&mut Decompress::new(false), &bomb, 1024, &mut out).unwrap_err();
        assert!(matches!(
            err,
            FrameError::InflateOverflow { content_len: 1024 }
        ));
        assert!(out.capacity() < 4096, "capacity {}", out.capacity());
    }

    #[test]
    fn short_trailing_stalled_and_corrupt_streams_fail() {
        let data = b"some payload\n".repeat(50);
        let body = deflate(&data);
        let n = data.len() as u32;
        assert!(matches!(
            run(&body, n + 1),
            Err(FrameError::InflateShort { .. })
        ));
        let mut trailing = body.clone();
        trailing.extend_from_slice(b"xyz");
        assert!(matches!(
            run(&trailing, n),
            Err(FrameError::TrailingData { extra: 3 })
        ));
        assert!(matches!(
            run(&body[..body.len() / 2], n),
            Err(FrameError::InflateStalled { .. })
        ));
        assert!(matches!(
            run(&[0xff; 16], n),
            Err(FrameError::Corrupt { .. })
        ));
        assert!(matches!(
            run(&[], 5),
            Err(FrameError::InflateStalled { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn find_newline_finds_the_first(
            s in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::Just(b'\n'), proptest::prelude::any::<u8>()],
                0..300,
            ),
        ) {
            proptest::prop_assert_eq!(find_newline(&s), s.iter().position(|&b| b == b'\n'));
        }
    }

    #[test]
    fn line_count_must_match() {
        let limits = FrameLimits::default();
        let dt = crate::record::DataType::Performance;
        assert!(parse_records(b"", 0, dt, &limits).unwrap().is_empty());
        assert!(matches!(
            parse_records(b"", 1, dt, &limits),
            Err(FrameError::RecordCount {
                declared: 1,
                found: 0
            })
        ));
        assert!(matches!(
            parse_records(b"{}", 1, dt, &limits),
            Err(FrameError::RecordCount {
                declared: 1,
                found: 1
            })
        ));
        // Lines are counted as they are parsed: an extra valid line fails
        // the count as soon as it is seen.
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let mut two = Vec::new();
        for _ in 0..2 {
            Record::from(crate::record::Performance {
                object_name: "o".into(),
                counter_name: "c".into(),
                perfmon_instance_name: String::new(),
                performance_data_id: uuid::Uuid::from_u128(1),
                performance_source_internal_id: 1,
                sample_value: 1.0,
                time_sampled: t,
                time_added: t,
            })
            .write_json(&mut two);
            two.push(b'\n');
        }
        assert_eq!(parse_records(&two, 2, dt, &limits).unwrap().len(), 2);
        assert!(matches!(
            parse_records(&two, 1, dt, &limits),
            Err(FrameError::RecordCount {
                declared: 1,
                found: 2
            })
        ));
        assert!(matches!(
            parse_records(&two, 3, dt, &limits),
            Err(FrameError::RecordCount {
                declared: 3,
                found: 2
            })
        ));
        assert!(matches!(
            parse_records(b"{}\n", 1, dt, &limits),
            Err(FrameError::Record { index: 0, .. })
        ));
        let small = limits.with_max_record_bytes(1).unwrap();
        assert!(matches!(
            parse_records(b"{}\n", 1, dt, &small),
            Err(FrameError::RecordTooLarge {
                index: 0,
                bytes: 2,
                max: 1
            })
        ));
    }
}
