//! Fuzz target logic, compiled into the crate so that normal builds check it
//! and `tests/fuzz_corpus.rs` can replay the committed seed corpus on stable.
//! The cargo-fuzz targets under `fuzz/` are one-line wrappers around these
//! functions. Each function panics only when it finds a bug.

use crate::record::{DataType, Record, RecordLimits};

/// Record parsing: the first byte picks the data type, the rest is parsed as
/// that type's JSON. A record that parses and validates must serialize and
/// parse back to itself.
pub fn record_json(data: &[u8]) {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let data_type = DataType::ALL[usize::from(selector) % DataType::ALL.len()];
    let Ok(record) = Record::from_json(data_type, json) else {
        return;
    };
    if record.validate(&RecordLimits::default()).is_err() {
        return;
    }
    let mut out = Vec::new();
    record.write_json(&mut out);
    match Record::from_json(data_type, &out) {
        Ok(back) => assert_eq!(back, record, "a valid record changed on a round trip"),
        Err(e) => panic!("a valid record failed to parse back: {e}"),
    }
}

/// The frame decoder on arbitrary bytes in arbitrary chunking, with small
/// limits. The first two bytes choose the chunk sizes (and, by the low bit
/// of the first, whether the harness repairs the CRCs of the frames it finds,
/// so that mutations reach inflation and record parsing instead of stopping
/// at a CRC); the rest is the input.
/// Checks: no panic; every frame yielded re-reads identically on its own and
/// lies within the input; the decoder's buffer stays within one frame plus
/// one chunk; records decode (or fail) without exceeding the limits.
pub fn frame_decoder(data: &[u8]) {
    use crate::frame::{Decoded, Frame, FrameDecoder, FrameLimits, PayloadReader};

    let Some((&[a, b], input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk_sizes = [usize::from(a >> 1) + 1, usize::from(b) * 16 + 1];
    let mut repaired;
    let input = if a & 1 == 1 {
        repaired = input.to_vec();
        repair_crcs(&mut repaired);
        &repaired[..]
    } else {
        input
    };
    let limits = FrameLimits::default()
        .with_max_body(64 << 10)
        .and_then(|l| l.with_max_content(256 << 10))
        .and_then(|l| l.with_max_records(512))
        .and_then(|l| l.with_max_record_bytes(16 << 10))
        .expect("nonzero limits");
    let max_frame = limits.max_body() as usize + 140;
    let mut decoder = FrameDecoder::new(limits);
    let mut reader = PayloadReader::new(limits);
    let mut rest = input;
    let mut taken = 0usize;
    let mut sizes = chunk_sizes.iter().cycle();
    'outer: while !rest.is_empty() {
        let n = (*sizes.next().expect("cycle")).min(rest.len());
        decoder.push(&rest[..n]);
        rest = &rest[n..];
        assert!(
            decoder.buffered() <= max_frame + n,
            "decoder buffered past a frame"
        );
        loop {
            match decoder.poll_frame() {
                Ok(Decoded::Frame(frame)) => {
                    taken += frame.len();
                    assert!(taken <= input.len() - rest.len(), "frame beyond the input");
                    let alone = Frame::decode(frame.as_bytes().clone(), &limits)
                        .expect("a frame the decoder yields re-reads alone");
                    assert_eq!(alone, frame);
                    if let Ok(records) = reader.records(&frame) {
                        assert_eq!(records.len(), frame.header().record_count as usize);
                        assert!(records.iter().all(|r| r.data_type() == frame.data_type()));
                    }
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n >= 1);
                    break;
                }
                Err(_) => break 'outer,
            }
        }
    }
    let _ = decoder.finish();
}

/// Rewrites the header and body CRCs of each frame laid end to end in `buf`,
/// as far as the bytes go.
fn repair_crcs(buf: &mut [u8]) {
    let mut at = 0;
    while buf.len() - at >= 6 {
        let header_len = if buf[at + 5] & 1 == 1 { 132 } else { 64 };
        let crc_at = at + header_len;
        if buf.len() < crc_at + 4 {
            return;
        }
        let crc = crc32fast::hash(&buf[at..crc_at]);
        buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
        let body_len = u32::from_be_bytes([buf[at + 60], buf[at + 61], buf[at + 62], buf[at + 63]]);
        let body_at = crc_at + 4;
        let Some(end) = body_at.checked_add(body_len as usize) else {
            return;
        };
        if buf.len() < end.saturating_add(4) {
            return;
        }
        let crc = crc32fast::hash(&buf[body_at..end]);
        buf[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

/// The outbox driven by an arbitrary sequence of operations and time steps,
/// with a small limit. Checks after every step: every batch pushed is
/// delivered, dropped or held, exactly one of them, and never twice
/// terminal; held bytes stay within the limit; outcomes for batches not in
/// flight are refused and change nothing.
pub fn outbox_ops(data: &[u8]) {
    use std::collections::{BTreeMap, BTreeSet};

    use chrono::{DateTime, Duration};

    use crate::delivery::{DeliveryEvent, DeliveryPolicy, Outbox, Outcome};
    use crate::frame::{BatchId, FrameEncoder};
    use crate::record::DataType;
    use crate::tenant::{TenantBatch, TenantId};

    let Some((&seed, ops)) = data.split_first() else {
        return;
    };
    let policy = DeliveryPolicy::default()
        .with_limit_bytes(2_000)
        .and_then(|p| p.with_max_in_flight(2))
        .and_then(|p| p.with_jitter_percent(seed % 101))
        .expect("valid settings");
    let limit = policy.limit_bytes();
    let mut outbox = Outbox::new(policy, u64::from(seed));
    let mut encoder = FrameEncoder::new();
    let mut now = DateTime::from_timestamp(1_800_000_000, 0).expect("in range");
    let mut next_id = 0u128;
    let mut pushed = BTreeSet::new();
    let mut terminal: BTreeMap<BatchId, &'static str> = BTreeMap::new();
    let mut in_flight: Vec<BatchId> = Vec::new();
    for chunk in ops.chunks(2).take(400) {
        let (op, arg) = (chunk[0], chunk.get(1).copied().unwrap_or(0));
        match op % 6 {
            0 => {
                let tenant =
                    TenantId::new(uuid::Uuid::from_u128(u128::from(arg % 3) + 1)).expect("not nil");
                let data_type = DataType::ALL[usize::from(arg / 3) % 6];
                next_id += 1;
                let id = BatchId::new(uuid::Uuid::from_u128(next_id)).expect("not nil");
                let frame = encoder
                    .encode_frame(&TenantBatch::new(tenant, data_type), id, now)
                    .expect("an empty batch encodes");
                outbox.push(now, frame).expect("ids are unique");
                pushed.insert(id);
            }
            1 => {
                if let Some(tx) = outbox.poll_transmit(now) {
                    in_flight.push(tx.batch_id);
                }
            }
            2 | 3 if !in_flight.is_empty() => {
                let id = in_flight.remove(usize::from(arg) % in_flight.len());
                let outcome = match arg % 4 {
                    0 => Outcome::Delivered,
                    1 => Outcome::Transient,
                    2 => Outcome::Throttled {
                        retry_after: Duration::seconds(i64::from(arg) * 97),
                    },
                    _ => Outcome::Rejected,
                };
                outbox
                    .handle_outcome(now, id, outcome)
                    .expect("the batch is in flight");
                // A second outcome for the same batch is refused.
                assert!(outbox.handle_outcome(now, id, Outcome::Delivered).is_err());
            }
            4 => {
                now += Duration::seconds(i64::from(arg) * 37);
                outbox.handle_timeout(now);
            }
            _ => {
                // A clock stepping back: taken as the latest seen.
                outbox.handle_timeout(now - Duration::seconds(i64::from(arg)));
            }
        }
        while outbox.poll_storage().is_some() {}
        while let Some(event) = outbox.poll_event() {
            let (id, what) = match event {
                DeliveryEvent::Delivered { batch_id, .. } => (batch_id, "delivered"),
                DeliveryEvent::Dropped { batch_id, .. } => (batch_id, "dropped"),
                _ => continue,
            };
            assert!(pushed.contains(&id), "an event for a batch never pushed");
            assert!(
                terminal.insert(id, what).is_none(),
                "two terminal events for one batch"
            );
            in_flight.retain(|&b| b != id);
        }
        assert!(outbox.held_bytes() <= limit, "held bytes past the limit");
        let held = outbox.held_batches();
        assert_eq!(pushed.len(), terminal.len() + held, "a batch disappeared");
        for id in &pushed {
            assert_eq!(
                terminal.contains_key(id),
                outbox.phase(*id).is_none(),
                "a batch both held and finished, or neither"
            );
        }
    }
}
