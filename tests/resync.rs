//! Resynchronising after damage (docs/FRAME.md, "Resynchronising"): a byte
//! flipped anywhere in concatenated frames loses exactly the frame it hit;
//! every intact frame after it is recovered, no byte failing a check is
//! taken, and the damage is reported (bytes skipped, and the lost batch's
//! header when it could still be read). Then the outbox: a frame lost to
//! damage is a `Dropped { reason: Corrupt }`, which the loss ledger
//! notifies like any other loss.

mod common;

use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    BatchId, DataType, Decoded, DeliveryEvent, DeliveryPolicy, DropReason, Frame, FrameDecoder,
    FrameEncoder, FrameLimits, LedgerPolicy, LossLedger, LossReason, MemorySpool, Outbox,
    StorageOp, Tagged, TenantBatch, TenantId, scan_frames,
};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn tenant() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}

/// Five small frames of different types and sizes, one of them sealed-size
/// free: what a spool segment holds.
fn frames() -> Vec<Frame> {
    let types = [
        DataType::Alert,
        DataType::Performance,
        DataType::Event,
        DataType::State,
        DataType::Configuration,
    ];
    types
        .iter()
        .enumerate()
        .map(|(i, &ty)| {
            let batch = TenantBatch::from_records(
                tenant(),
                ty,
                (0..=i).map(|_| Tagged::new(tenant(), common::sample(ty))),
            )
            .unwrap();
            let id = BatchId::new(Uuid::from_u128(i as u128 + 1)).unwrap();
            FrameEncoder::new().encode_frame(&batch, id, t0()).unwrap()
        })
        .collect()
}

fn concat(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| f.as_bytes().iter().copied())
        .collect()
}

/// The start offset of each frame, and the total length.
fn offsets(frames: &[Frame]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    for f in frames {
        out.push(at);
        at += f.len();
    }
    out.push(at);
    out
}

/// Reads `bytes` with a streaming decoder in chunks of `chunk`, resyncing
/// after every error; returns the frames and the bytes skipped.
fn stream(bytes: &[u8], chunk: usize) -> (Vec<Frame>, usize, Vec<Option<BatchId>>) {
    let mut d = FrameDecoder::new(FrameLimits::default()).with_resync();
    let mut got = Vec::new();
    let mut skipped = 0;
    let mut headers = Vec::new();
    for part in bytes.chunks(chunk) {
        d.push(part);
        loop {
            match d.poll_frame() {
                Ok(Decoded::Frame(f)) => got.push(f),
                Ok(Decoded::NeedMore(_)) => break,
                Err(_) => {
                    let r = d.resync();
                    assert!(r.skipped > 0, "a resync after an error skips something");
                    skipped += r.skipped;
                    headers.push(r.header.map(|h| h.batch_id));
                }
            }
        }
    }
    // At the end, what is left is a truncated frame (or nothing).
    if d.finish().is_err() {
        skipped += d.buffered();
    }
    (got, skipped, headers)
}

#[test]
fn intact_frames_scan_and_stream_with_no_damage() {
    let frames = frames();
    let bytes = concat(&frames);
    let scan = scan_frames(Bytes::from(bytes.clone()), &FrameLimits::default());
    assert!(scan.damage.is_empty());
    let got: Vec<Frame> = scan.frames.into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, frames);
    let (streamed, skipped, _) = stream(&bytes, 7);
    assert_eq!((streamed, skipped), (frames, 0));
}

/// The acceptance test of issue 16 item 1: for a byte flipped at every
/// position (two different flips each), exactly the frame hit is lost; it
/// is reported with the right offset and length, and with its header when
/// the flip left the header intact.
#[test]
fn a_byte_flipped_anywhere_loses_exactly_the_frame_it_hit() {
    let frames = frames();
    let bytes = concat(&frames);
    let at = offsets(&frames);
    let limits = FrameLimits::default();
    for pos in 0..bytes.len() {
        let hit = at.iter().rposition(|&o| o <= pos).unwrap();
        let in_body = pos - at[hit] >= frames[hit].header().prefix_len();
        for flip in [0x01u8, 0xff] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= flip;
            let scan = scan_frames(Bytes::from(damaged.clone()), &limits);
            let got: Vec<Frame> = scan.frames.iter().map(|(_, f)| f.clone()).collect();
            let mut want = frames.clone();
            want.remove(hit);
            assert_eq!(got, want, "byte {pos} ^ {flip:#x}");
            // Each frame taken is byte for byte one written, at its offset.
            for (offset, f) in &scan.frames {
                assert_eq!(&damaged[*offset..*offset + f.len()], &f.as_bytes()[..]);
                assert!(Frame::decode(f.as_bytes().clone(), &limits).is_ok());
            }
            assert_eq!(scan.damage.len(), 1, "byte {pos} ^ {flip:#x}");
            let d = &scan.damage[0];
            assert_eq!(
                (d.offset, d.len),
                (at[hit], frames[hit].len()),
                "byte {pos} ^ {flip:#x}"
            );
            if in_body {
                assert_eq!(d.header.as_ref(), Some(frames[hit].header()));
                assert_eq!(d.check, "BodyCrc");
            } else {
                assert_eq!(d.header, None, "byte {pos} ^ {flip:#x}");
            }
            // The streaming decoder, with explicit resyncs, agrees.
            for chunk in [1, 13, damaged.len()] {
                let (streamed, skipped, headers) = stream(&damaged, chunk);
                assert_eq!(streamed, want, "byte {pos} ^ {flip:#x}, chunks of {chunk}");
                assert_eq!(skipped, frames[hit].len(), "byte {pos}, chunks of {chunk}");
                if in_body {
                    assert_eq!(headers, [Some(frames[hit].batch_id())]);
                }
            }
        }
    }
}

#[test]
fn a_truncated_last_frame_is_reported_with_its_header() {
    let frames = frames();
    let mut bytes = concat(&frames);
    let cut = frames[4].len() / 2;
    bytes.truncate(bytes.len() - cut);
    let scan = scan_frames(Bytes::from(bytes), &FrameLimits::default());
    assert_eq!(scan.frames.len(), 4);
    assert_eq!(scan.damage.len(), 1);
    assert_eq!(scan.damage[0].header.as_ref(), Some(frames[4].header()));
    assert_eq!(scan.damage[0].check, "Truncated");
    assert_eq!(scan.skipped_bytes(), frames[4].len() - cut);
}

#[test]
fn without_with_resync_a_failure_frees_the_buffer_and_resync_skips_it() {
    let frames = frames();
    let mut bytes = concat(&frames[..2]);
    bytes[3] ^= 1; // the first frame's magic
    let mut d = FrameDecoder::new(FrameLimits::default());
    d.push(&bytes);
    assert!(d.poll_frame().is_err());
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.resync().skipped, bytes.len());
    d.push(frames[2].as_bytes());
    assert!(matches!(d.poll_frame(), Ok(Decoded::Frame(f)) if f == frames[2]));
}

#[test]
fn resync_does_nothing_unless_failed() {
    let mut d = FrameDecoder::new(FrameLimits::default());
    d.push(frames()[0].as_bytes());
    assert_eq!(d.resync().skipped, 0);
    assert!(matches!(d.poll_frame(), Ok(Decoded::Frame(_))));
}

#[test]
fn bytes_pushed_while_failed_count_as_skipped() {
    let frames = frames();
    let mut d = FrameDecoder::new(FrameLimits::default()).with_resync();
    d.push(b"garbage");
    assert!(d.poll_frame().is_err());
    d.push(frames[0].as_bytes()); // dropped: the decoder has failed
    let r = d.resync();
    assert_eq!(r.skipped, 7 + frames[0].len());
    d.push(frames[1].as_bytes());
    assert!(matches!(d.poll_frame(), Ok(Decoded::Frame(f)) if f == frames[1]));
}

proptest! {
    /// Garbage between, before and after frames: every frame is found, the
    /// frames and the damage cover the input exactly, and nothing taken
    /// fails a check.
    #[test]
    fn garbage_between_frames_is_skipped(
        gaps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 6),
    ) {
        let frames = frames();
        let mut bytes = Vec::new();
        for (i, gap) in gaps.iter().enumerate() {
            bytes.extend_from_slice(gap);
            if let Some(f) = frames.get(i) {
                bytes.extend_from_slice(f.as_bytes());
            }
        }
        let limits = FrameLimits::default();
        let scan = scan_frames(Bytes::from(bytes.clone()), &limits);
        let got: Vec<Frame> = scan.frames.iter().map(|(_, f)| f.clone()).collect();
        prop_assert_eq!(&got, &frames);
        let covered: usize = scan.frames.iter().map(|(_, f)| f.len()).sum::<usize>()
            + scan.skipped_bytes();
        prop_assert_eq!(covered, bytes.len());
        prop_assert_eq!(scan.skipped_bytes(), gaps.iter().map(Vec::len).sum::<usize>());
    }

    /// Arbitrary bytes: no panic, exact cover, every frame taken checks.
    #[test]
    fn arbitrary_bytes_scan_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let limits = FrameLimits::default();
        let scan = scan_frames(Bytes::from(bytes.clone()), &limits);
        let mut at = 0;
        let mut spans: Vec<(usize, usize)> = scan.frames.iter().map(|(o, f)| (*o, f.len())).collect();
        spans.extend(scan.damage.iter().map(|d| (d.offset, d.len)));
        spans.sort_unstable();
        for (offset, len) in spans {
            prop_assert_eq!(offset, at);
            at += len;
        }
        prop_assert_eq!(at, bytes.len());
        for (_, f) in &scan.frames {
            prop_assert!(Frame::decode(f.as_bytes().clone(), &limits).is_ok());
        }
    }
}

// ------------------------------------------------------------ the outbox

#[test]
fn damage_is_a_loss_the_ledger_notifies() {
    let frames = frames();
    let mut bytes = concat(&frames);
    let at = offsets(&frames);
    // Damage frame 2's body: its header is still readable.
    bytes[at[2] + frames[2].header().prefix_len() + 1] ^= 0x40;
    let (mut outbox, report) = Outbox::recover_bytes(
        DeliveryPolicy::default(),
        1,
        t0(),
        Bytes::from(bytes),
        &FrameLimits::default(),
    );
    assert_eq!(report.recovered, 4);
    assert_eq!(report.corrupt, 1);
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].len, frames[2].len());
    let events: Vec<DeliveryEvent> = std::iter::from_fn(|| outbox.poll_event()).collect();
    assert_eq!(
        events,
        [DeliveryEvent::Dropped {
            tenant: tenant(),
            data_type: DataType::Event,
            batch_id: frames[2].batch_id(),
            records: frames[2].header().record_count,
            bytes: frames[2].len() as u64,
            reason: DropReason::Corrupt,
        }]
    );
    let ops: Vec<StorageOp> = std::iter::from_fn(|| outbox.poll_storage()).collect();
    assert!(
        matches!(ops[..], [StorageOp::Remove { batch_id }] if batch_id == frames[2].batch_id()),
        "{ops:?}"
    );
    // The ledger takes it as any other loss, with its own reason.
    let mut ledger = LossLedger::new(LedgerPolicy::default());
    let id = ledger.handle_dropped(t0(), &events[0]).expect("a loss");
    let notice = ledger
        .poll_notices(t0() + Duration::hours(24))
        .expect("notified within 24 hours");
    assert_eq!(notice.incident, id);
    assert_eq!(notice.reasons, [LossReason::Delivery(DropReason::Corrupt)]);
    assert!(!notice.overdue);
    assert_eq!(
        LossReason::Delivery(DropReason::Corrupt).to_string(),
        "damaged in the agent's spool"
    );
}

#[test]
fn a_damaged_entry_with_a_readable_header_is_dropped_as_corrupt() {
    let frames = frames();
    let mut entries: Vec<Bytes> = frames.iter().map(|f| f.as_bytes().clone()).collect();
    // Entry 1's body damaged (header readable), entry 3's header damaged.
    let mut e1 = entries[1].to_vec();
    let last = e1.len() - 1;
    e1[last] ^= 1;
    entries[1] = Bytes::from(e1);
    let mut e3 = entries[3].to_vec();
    e3[20] ^= 1;
    entries[3] = Bytes::from(e3);
    // And an intact copy of batch 0 after a damaged one: no loss for it.
    let mut e0 = frames[0].as_bytes().to_vec();
    let last = e0.len() - 1;
    e0[last] ^= 1;
    entries.insert(0, Bytes::from(e0));
    let (mut outbox, report) = Outbox::recover(
        DeliveryPolicy::default(),
        1,
        t0(),
        entries,
        &FrameLimits::default(),
    );
    assert_eq!(report.recovered, 3);
    assert_eq!(report.skipped.len(), 3);
    assert_eq!(report.corrupt, 1);
    let drops: Vec<(BatchId, DropReason)> = std::iter::from_fn(|| outbox.poll_event())
        .filter_map(|e| match e {
            DeliveryEvent::Dropped {
                batch_id, reason, ..
            } => Some((batch_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(drops, [(frames[1].batch_id(), DropReason::Corrupt)]);
}

#[test]
fn an_agent_recovering_a_damaged_spool_reports_the_loss() {
    use opsdata::{Agent, MemoryTransport, Spool};
    let frames = frames();
    let mut spool = MemorySpool::new();
    for f in &frames {
        spool.persist(f.batch_id(), f).unwrap();
    }
    let victim = frames[3].batch_id();
    let mut damaged = frames[3].as_bytes().to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    spool.insert_raw(victim, Bytes::from(damaged));
    let (mut agent, report) = Agent::recover(
        DeliveryPolicy::default(),
        1,
        t0(),
        MemoryTransport::new(),
        spool,
        &FrameLimits::default(),
    )
    .unwrap();
    assert_eq!(report.corrupt, 1);
    let dropped = std::iter::from_fn(|| agent.poll_event()).any(|e| {
        matches!(e, DeliveryEvent::Dropped { batch_id, reason: DropReason::Corrupt, .. } if batch_id == victim)
    });
    assert!(dropped);
    // The four others were delivered, and the spool let go of everything,
    // the damaged entry included.
    assert_eq!(agent.transport().delivered().len(), 4);
    assert!(
        agent
            .transport()
            .delivered()
            .iter()
            .all(|f| f.batch_id() != victim)
    );
    assert!(agent.spool().is_empty());
}
