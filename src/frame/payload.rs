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
        let payload = self.payload(frame)?;
        parse_records(payload, header.record_count, header.data_type, &limits)
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

/// Parses JSON Lines into records of `data_type`, checking the line count
/// first so no record is parsed from a frame whose count is wrong.
pub(crate) fn parse_records(
    payload: &[u8],
    record_count: u32,
    data_type: crate::record::DataType,
    limits: &FrameLimits,
) -> Result<Vec<Record>, FrameError> {
    let newlines = payload.iter().filter(|&&b| b == b'\n').count() as u64;
    let unterminated = u64::from(!payload.is_empty() && payload.last() != Some(&b'\n'));
    let found = newlines + unterminated;
    if found != u64::from(record_count) || unterminated == 1 {
        return Err(FrameError::RecordCount {
            declared: record_count,
            found,
        });
    }
    let mut records = Vec::with_capacity(record_count as usize);
    let max = limits.max_record_bytes();
    // Every line ends with '\n', so the last split is the empty remainder.
    for (index, line) in payload
        .split(|&b| b == b'\n')
        .take(record_count as usize)
        .enumerate()
    {
        if line.len() > max as usize {
            return Err(FrameError::RecordTooLarge {
                index,
                bytes: line.len(),
                max,
            });
        }
        let record = Record::from_json(data_type, line)
            .map_err(|source| FrameError::Record { index, source })?;
        records.push(record);
    }
    Ok(records)
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
        assert!(matches!(
            parse_records(b"{}\n{}\n", 1, dt, &limits),
            Err(FrameError::RecordCount {
                declared: 1,
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
