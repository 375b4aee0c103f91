//! Resynchronising after damage (`docs/FRAME.md`, "Resynchronising"):
//! finding the next frame whose checks all pass, and reporting the bytes
//! skipped on the way. Never silent: [`scan_frames`] lists every stretch it
//! skipped, and [`FrameDecoder::resync`](crate::FrameDecoder::resync) is
//! only ever called by its user.

use bytes::Bytes;

use super::decode::{scan_body, scan_header};
use super::{FRAME_MAGIC, Frame, FrameHeader, FrameLimits};
use crate::tenant::TenantId;

/// Where the next candidate frame starts, at or after an offset.
pub(crate) enum Candidate {
    /// A header that passes every header check (magic, version, header
    /// CRC, fields, expected tenant, limits) starts here.
    Header(usize),
    /// The bytes from here to the end are a valid beginning of a header:
    /// more input may make it pass, or fail.
    Partial(usize),
    /// No byte from the offset on can start a frame.
    None,
}

/// The first offset at or after `from` where a frame header passes all its
/// checks, or where the input ends inside a header that may still pass.
///
/// Work: one comparison per byte, and at most one header CRC (at most 136
/// bytes) per offset holding the first magic byte: linear in the input.
pub(crate) fn next_candidate(
    buf: &[u8],
    from: usize,
    limits: &FrameLimits,
    expect: Option<TenantId>,
) -> Candidate {
    let mut at = from;
    while at < buf.len() {
        let Some(step) = buf[at..].iter().position(|&b| b == FRAME_MAGIC[0]) else {
            return Candidate::None;
        };
        at += step;
        match scan_header(&buf[at..], limits, expect) {
            Ok(Ok(_)) => return Candidate::Header(at),
            Ok(Err(_)) => return Candidate::Partial(at),
            Err(_) => at += 1,
        }
    }
    Candidate::None
}

/// A stretch of bytes a resynchronising scan skipped: a damaged frame, or
/// bytes that are no frame at all.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The offset of its first byte in the input scanned.
    pub offset: usize,
    /// How many bytes were skipped.
    pub len: usize,
    /// The header at `offset` when it passed all its checks (magic, version,
    /// header CRC, fields, limits) and only the body failed (its CRC, or the
    /// input ended inside it): the batch id, tenant and data type of the
    /// frame lost are then known. `None`: the header itself was damaged, or
    /// the bytes were not a frame.
    pub header: Option<FrameHeader>,
    /// The first check that failed at `offset`, as
    /// [`FrameError::check_name`](crate::FrameError::check_name) names it
    /// (`"Truncated"` when the input ends inside a frame).
    pub check: &'static str,
}

/// What [`scan_frames`] found.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct FrameScan {
    /// Every frame that passed all its checks, with its offset, in order.
    pub frames: Vec<(usize, Frame)>,
    /// Every stretch skipped, in order. Frames and stretches together
    /// cover the input exactly, without overlap.
    pub damage: Vec<Damage>,
}

impl FrameScan {
    /// Bytes skipped in all.
    #[must_use]
    pub fn skipped_bytes(&self) -> usize {
        self.damage.iter().map(|d| d.len).sum()
    }
}

/// Reads every frame that passes all its checks from concatenated frames
/// with damage in them (a spool segment, a recovered blob), skipping what
/// fails and reporting it.
///
/// At each offset the frame there is checked as
/// [`FrameDecoder`](crate::FrameDecoder) checks it. When a check fails, the
/// scan moves on to the next offset where a header passes every header
/// check (magic, version, header CRC, fields, limits); that frame is taken
/// only if its body CRC passes too. So no byte failing a check is ever
/// taken, and a frame damaged anywhere costs only itself: every intact
/// frame after it is found, whatever was flipped. A header that passes
/// with a body that fails starts a [`Damage`] with its header, so the
/// batch lost is known.
///
/// Work is linear in the input's length for the header search; checking
/// bodies costs each candidate's body length, and candidates whose bodies
/// fail are checked only while the bytes so checked stay under the input's
/// length; past that budget such a candidate's whole declared frame is
/// skipped (nothing failing a check is taken either way; only input
/// crafted to hold many overlapping valid headers reaches the budget).
#[must_use]
pub fn scan_frames(bytes: Bytes, limits: &FrameLimits) -> FrameScan {
    let buf: &[u8] = &bytes;
    let mut scan = FrameScan::default();
    let mut budget = buf.len();
    let mut at = 0;
    // The start of the stretch being skipped, with its header and check.
    let mut skipping: Option<(usize, Option<FrameHeader>, &'static str)> = None;
    let close = |scan: &mut FrameScan, skipping: &mut Option<_>, end: usize| {
        if let Some((offset, header, check)) = skipping.take() {
            scan.damage.push(Damage {
                offset,
                len: end - offset,
                header,
                check,
            });
        }
    };
    while at < buf.len() {
        // The frame at `at`, if it is whole and passes.
        let failed = match scan_header(&buf[at..], limits, None) {
            Ok(Ok(header)) => match scan_body(&buf[at..], &header) {
                Ok(super::decode::Scan::Frame(h)) => {
                    close(&mut scan, &mut skipping, at);
                    let len = h.frame_len();
                    let frame = Frame::from_checked(h, bytes.slice(at..at + len));
                    scan.frames.push((at, frame));
                    at += len;
                    continue;
                }
                Ok(super::decode::Scan::NeedMore(_)) => (Some(header), "Truncated"),
                Err(e) => {
                    let len = header.frame_len().min(buf.len() - at);
                    budget = budget.saturating_sub(len);
                    (Some(header), e.check_name())
                }
            },
            Ok(Err(_)) => (None, "Truncated"),
            Err(e) => (None, e.check_name()),
        };
        // A header that passed starts a stretch of its own (its frame is
        // known); other failures extend the stretch under way.
        if failed.0.is_some() || skipping.is_none() {
            close(&mut scan, &mut skipping, at);
            skipping = Some((at, failed.0, failed.1));
        }
        let from = match failed.0 {
            // Over budget: skip the declared frame whole.
            Some(h) if budget == 0 => at.saturating_add(h.frame_len()).min(buf.len()),
            _ => at + 1,
        };
        at = match next_candidate(buf, from, limits, None) {
            Candidate::Header(next) | Candidate::Partial(next) => next,
            Candidate::None => buf.len(),
        };
    }
    close(&mut scan, &mut skipping, buf.len());
    scan
}

/// What [`FrameDecoder::resync`](crate::FrameDecoder::resync) skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[must_use]
pub struct Resynced {
    /// Bytes dropped: those skipped in the buffer, and those pushed while
    /// the decoder was failed.
    pub skipped: usize,
    /// The header of the frame that failed, if it had passed every header
    /// check (its body CRC failed): the batch lost is known.
    pub header: Option<FrameHeader>,
}
