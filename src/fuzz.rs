//! Fuzz target logic, compiled into the crate so that normal builds check it
//! and `tests/fuzz_corpus.rs` can replay the committed seed corpus on stable.
//! The cargo-fuzz targets under `fuzz/` are one-line wrappers around these
//! functions. Each function panics only when it finds a bug.

use crate::record::{DataType, Record, RecordLimits};

/// Record parsing: the first byte picks the data type, the rest is parsed as
/// that type's JSON. The borrowed parser must agree with the owned one
/// ([`record_differential`]), and a record that parses and validates must
/// serialize and parse back to itself.
pub fn record_json(data: &[u8]) {
    record_differential(data);
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

/// Borrowed against owned record parsing, on the same bytes: the first byte
/// picks the data type (as in [`record_json`]), the rest is the JSON text.
/// Checks that [`RecordRef::from_json`] and [`Record::from_json`] agree: the
/// same record (the borrowed one's [`RecordRef::to_owned`] equal to the
/// owned one, and equal in its `Debug` text, so that `-0.0` and `0.0` stay
/// apart) or the same error, to the message; and that validation of the two
/// gives the same result, under the default limits and under small ones.
///
/// [`RecordRef::from_json`]: crate::record::RecordRef::from_json
/// [`RecordRef::to_owned`]: crate::record::RecordRef::to_owned
pub fn record_differential(data: &[u8]) {
    use crate::record::RecordRef;

    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let data_type = DataType::ALL[usize::from(selector) % DataType::ALL.len()];
    let owned = Record::from_json(data_type, json);
    let borrowed = RecordRef::from_json(data_type, json);
    let (owned, borrowed) = match (owned, borrowed) {
        (Ok(o), Ok(b)) => (o, b),
        (Err(o), Err(b)) => {
            assert_eq!(o.to_string(), b.to_string(), "the parsers fail differently");
            return;
        }
        (o, b) => panic!("only one parser accepts the input: owned {o:?}, borrowed {b:?}"),
    };
    assert_eq!(borrowed.data_type(), data_type);
    let back = borrowed.to_owned();
    assert_eq!(back, owned, "the parsers read different records");
    assert_eq!(format!("{back:?}"), format!("{owned:?}"));
    let small = RecordLimits::default()
        .with_max_field_bytes(16)
        .and_then(|l| l.with_max_event_fields(crate::record::Event::FIXED_FIELDS.len() + 1))
        .expect("limits in range");
    for limits in [RecordLimits::default(), small] {
        let (o, b) = (owned.validate(&limits), borrowed.validate(&limits));
        assert_eq!(
            o.map_err(|e| e.to_string()),
            b.map_err(|e| e.to_string()),
            "validation differs"
        );
    }
}

/// The frame decoder on arbitrary bytes in arbitrary chunking, with small
/// limits. The first two bytes choose the chunk sizes (and, by the low bit
/// of the first, whether the harness repairs the CRCs of the frames it finds,
/// so that mutations reach inflation and record parsing instead of stopping
/// at a CRC); the rest is the input.
/// Checks: no panic; every frame yielded re-reads identically on its own and
/// lies within the input; the decoder's buffer stays within one frame plus
/// one chunk; records decode (or fail) without exceeding the limits; the
/// borrowed reader ([`PayloadReader::visit_records`]) visits the records
/// the owned one returns, or fails with the same error.
///
/// [`PayloadReader::visit_records`]: crate::frame::PayloadReader::visit_records
pub fn frame_decoder(data: &[u8]) {
    use crate::frame::{Decoded, Frame, FrameDecoder, PayloadReader};

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
    let limits = small_limits();
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
                    let owned = reader.records(&frame);
                    if let Ok(records) = &owned {
                        assert_eq!(records.len(), frame.header().record_count as usize);
                        assert!(records.iter().all(|r| r.data_type() == frame.data_type()));
                    }
                    // The borrowed reader agrees: the same records, or the
                    // same error after the same records.
                    let mut visited = Vec::new();
                    let borrowed = reader.visit_records(&frame, |index, record| {
                        assert_eq!(index, visited.len(), "records visited out of order");
                        visited.push(record.to_owned());
                    });
                    match (owned, borrowed) {
                        (Ok(records), Ok(count)) => {
                            assert_eq!(count as usize, records.len());
                            assert_eq!(visited, records, "the readers read different records");
                        }
                        (Err(a), Err(b)) => {
                            assert_eq!(
                                a.to_string(),
                                b.to_string(),
                                "the readers fail differently"
                            );
                        }
                        (a, b) => panic!("only one reader accepts the frame: {a:?} / {b:?}"),
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
/// Small frame limits, so the fuzzer reaches them: body 64 KiB, content
/// 256 KiB, 512 records, 16 KiB a record.
fn small_limits() -> crate::frame::FrameLimits {
    crate::frame::FrameLimits::default()
        .with_max_body(64 << 10)
        .and_then(|l| l.with_max_content(256 << 10))
        .and_then(|l| l.with_max_records(512))
        .and_then(|l| l.with_max_record_bytes(16 << 10))
        .expect("nonzero limits")
}

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

/// Opening arbitrary bytes as a sealed frame with a fixed ring: the tenant
/// of the sealed vectors in `tests/data/frames/sealed/`, with their keys 1
/// and 2. The first byte is the harness's: its low bit says whether to
/// repair the CRCs of the frame (as in [`frame_decoder`], so that mutations
/// reach the cryptography instead of stopping at a CRC), the next bit makes
/// key 2 the primary (key 1 then `DecryptOnly`) instead of key 1 (key 2
/// then `Pending`). The rest goes to [`Frame::decode`](crate::Frame::decode)
/// with small limits; a frame that comes out is peeked, opened and
/// rewrapped.
/// Checks: no panic; `peek` agrees with the decoded header (and fails only
/// for a key id of 0); an opened frame is unsealed, has the same header but
/// for the seal flag and a body 16 bytes shorter, and re-reads alone; a
/// rewrapped frame keeps every byte from offset 136 on, re-reads alone,
/// names the primary, and opens exactly as the input does.
pub fn sealed_open(data: &[u8]) {
    use bytes::Bytes;
    use chrono::DateTime;

    use crate::frame::{FIXED_HEADER_LEN, Frame};
    use crate::keys::{DeterministicEntropy, KeyId, KeyMaterial, KeyRing, RotationPolicy};
    use crate::keys::{open, peek, rewrap};
    use crate::tenant::TenantId;

    /// Fixed header, seal section and header CRC of a sealed frame.
    const SEALED_PREFIX: usize = 136;
    /// The vectors' tenant, 0f8fad5b-d9cb-469f-a165-70867728950e.
    const TENANT: u128 = 0x0f8f_ad5b_d9cb_469f_a165_7086_7728_950e;
    /// Keys 1 and 2 of `tests/data/frames/sealed/vectors.json`.
    const KEY_1: [u8; 32] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f,
    ];
    const KEY_2: [u8; 32] = [
        0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce,
        0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd,
        0xde, 0xdf,
    ];

    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let mut bytes = input.to_vec();
    if mode & 1 == 1 {
        repair_crcs(&mut bytes);
    }
    let limits = small_limits();
    let Ok(frame) = Frame::decode(Bytes::from(bytes), &limits) else {
        return;
    };
    let h = *frame.header();

    // The key-free read agrees with the full one.
    let raw_kek_id = h.sealed.then(|| {
        let b = &frame.as_bytes()[FIXED_HEADER_LEN + 4..FIXED_HEADER_LEN + 8];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    });
    match peek(frame.as_bytes()) {
        Ok(p) => {
            assert_eq!(p.tenant, h.tenant);
            assert_eq!(p.data_type, h.data_type);
            assert_eq!(p.batch_id, h.batch_id);
            assert_eq!(p.created, h.created);
            assert_eq!(p.frame_len, frame.len());
            assert_eq!(
                p.kek_id.map(KeyId::get),
                raw_kek_id,
                "peek read another key id"
            );
        }
        Err(e) => assert_eq!(raw_kek_id, Some(0), "peek refused a decoded frame: {e}"),
    }

    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("in range");
    let tenant = TenantId::new(uuid::Uuid::from_u128(TENANT)).expect("not nil");
    let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
    let (k1, k2) = (KeyId::new(1).expect("1"), KeyId::new(2).expect("2"));
    ring.import(k1, KeyMaterial::from_bytes(KEY_1), now)
        .expect("a fresh ring imports");
    ring.import(k2, KeyMaterial::from_bytes(KEY_2), now)
        .expect("ids increase");
    ring.promote(k1, now).expect("a pending key promotes");
    let primary = if mode & 2 == 2 {
        ring.promote(k2, now).expect("a pending key promotes");
        k2
    } else {
        k1
    };

    let opened = open(&frame, &ring);
    if let Ok(o) = &opened {
        assert!(h.sealed, "an unsealed frame opened");
        let oh = *o.header();
        assert!(!oh.sealed, "an opened frame is still sealed");
        assert_eq!(
            oh.body_len + 16,
            h.body_len,
            "the body is not 16 bytes shorter"
        );
        assert_eq!(
            oh,
            crate::frame::FrameHeader {
                sealed: false,
                body_len: oh.body_len,
                ..h
            },
            "opening changed the header"
        );
        assert_eq!(
            (o.tenant(), o.batch_id(), o.data_type()),
            (frame.tenant(), frame.batch_id(), frame.data_type())
        );
        let alone =
            Frame::decode(o.as_bytes().clone(), &limits).expect("an opened frame re-reads alone");
        assert_eq!(&alone, o);
    }

    let mut entropy = DeterministicEntropy::from_u64(data.len() as u64);
    if let Ok(moved) = rewrap(&frame, &mut ring, &mut entropy, now) {
        let (a, b) = (moved.as_bytes(), frame.as_bytes());
        assert_eq!(a.len(), b.len(), "rewrap changed the length");
        assert_eq!(
            a[SEALED_PREFIX..],
            b[SEALED_PREFIX..],
            "rewrap changed the body"
        );
        assert_eq!(moved.header(), frame.header(), "rewrap changed the header");
        let alone = Frame::decode(a.clone(), &limits).expect("a rewrapped frame re-reads alone");
        assert_eq!(alone, moved);
        assert_eq!(peek(a).ok().and_then(|p| p.kek_id), Some(primary));
        match (open(&moved, &ring), &opened) {
            (Ok(x), Ok(y)) => assert_eq!(&x, y, "the rewrapped frame opens to another frame"),
            (Err(x), Err(y)) => assert_eq!(x.to_string(), y.to_string()),
            (x, y) => panic!("rewrap changed whether the frame opens: {x:?} / {y:?}"),
        }
    }
}

/// The outbox driven by an arbitrary sequence of operations and time steps,
/// with small limits, and now and then a crash.
///
/// Input: byte 0 seeds the jitter (and sets `jitter_percent` to it mod
/// 101); byte 1 sets `limit_bytes` (bits 0–1: 1 500 + 500 × n),
/// `limit_batches` (bits 2–4: none for 0, else n + 1) and the per-tenant
/// share (bits 5–7: none for 0, else 400 × n bytes); byte 2 sets
/// `expire_after` (bit 0 off: none; else for the data type `(b >> 1) % 6`,
/// `1 + (b >> 4) × 10` minutes). The rest is operations, two bytes each:
/// push (a frame of tenant `arg % 3`, type `(arg / 3) % 6` and 0–3
/// records, `(arg / 18) % 4`, so frames come in a few sizes), transmit,
/// outcome, clock forwards, clock backwards, and crash: the outbox is thrown
/// away, in-flight sends with it, and rebuilt with [`Outbox::recover`] from
/// a simulated spool to which every storage operation was applied.
///
/// Checks after every step: every batch pushed is delivered, dropped or
/// held, exactly one of them, and never twice terminal, across restarts;
/// the spool holds exactly the batches held; held bytes and batches stay
/// within the limits; outcomes for batches not in flight are refused and
/// change nothing. At most 400 operations and 16 crashes.
///
/// [`Outbox::recover`]: crate::delivery::Outbox::recover
pub fn outbox_ops(data: &[u8]) {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use chrono::{DateTime, Duration};

    use crate::delivery::{DeliveryEvent, DeliveryPolicy, Outbox, Outcome, StorageOp};
    use crate::frame::{BatchId, FIXED_HEADER_LEN, Frame, FrameHeader, FrameLimits};

    let Some((&[seed, limits, expire], ops)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limit_batches = match (limits >> 2) & 7 {
        0 => None,
        n => Some(u64::from(n) + 1),
    };
    let share = match limits >> 5 {
        0 => None,
        n => Some(400 * u64::from(n)),
    };
    let mut policy = DeliveryPolicy::default()
        .with_limit_bytes(1_500 + 500 * u64::from(limits & 3))
        .and_then(|p| p.with_limit_batches(limit_batches))
        .and_then(|p| p.with_tenant_limit_bytes(share))
        .and_then(|p| p.with_max_in_flight(2))
        .and_then(|p| p.with_jitter_percent(seed % 101))
        .expect("valid settings");
    if expire & 1 == 1 {
        let data_type = DataType::ALL[usize::from(expire >> 1) % 6];
        let minutes = 1 + i64::from(expire >> 4) * 10;
        policy = policy
            .with_expire_after(data_type, Some(Duration::minutes(minutes)))
            .expect("a valid expiry");
    }
    let (limit, limit_batches) = (policy.limit_bytes(), policy.limit_batches());
    let frame_limits = FrameLimits::default();
    let mut outbox = Outbox::new(policy.clone(), u64::from(seed));
    let mut now = DateTime::from_timestamp(1_800_000_000, 0).expect("in range");
    let mut next_id = 0u128;
    // Batch ids are 1, 2, … in push order: per id (index id - 1), whether
    // it finished (a terminal event) and where the spool holds it (0: not
    // held). Plain vectors, not maps: the harness's bookkeeping stays out
    // of the way of the outbox's own work.
    let mut finished: Vec<bool> = Vec::new();
    let mut finished_count = 0usize;
    let mut spooled: Vec<u64> = Vec::new();
    let mut spooled_count = 0usize;
    let index = |id: BatchId, pushed: u128| -> usize {
        let n = id.as_uuid().as_u128();
        assert!((1..=pushed).contains(&n), "a batch never pushed");
        usize::try_from(n - 1).expect("at most 400 pushes")
    };
    let mut in_flight: Vec<BatchId> = Vec::new();
    // The spool: frames by persist order, and each id's place in it.
    let mut spool: BTreeMap<u64, (BatchId, Bytes)> = BTreeMap::new();
    let mut spool_seq = 0u64;
    let mut crashes = 0;
    for chunk in ops.chunks(2).take(400) {
        let (op, arg) = (chunk[0], chunk.get(1).copied().unwrap_or(0));
        match op % 7 {
            0 => {
                let (template_header, template) =
                    outbox_template(arg % 3, arg / 3 % 6, (arg / 18) % 4);
                next_id += 1;
                let id = BatchId::new(uuid::Uuid::from_u128(next_id)).expect("not nil");
                // The template with this push's id and time, and so its
                // header CRC: a valid frame (every recovery decodes the
                // spooled ones again, with all their checks).
                let header = FrameHeader {
                    batch_id: id,
                    created: now,
                    ..*template_header
                };
                let mut bytes = template.to_vec();
                bytes[..FIXED_HEADER_LEN].copy_from_slice(&header.encode());
                let crc = crc32fast::hash(&bytes[..FIXED_HEADER_LEN]);
                bytes[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4].copy_from_slice(&crc.to_be_bytes());
                let frame = Frame::from_checked(header, Bytes::from(bytes));
                outbox.push(now, frame).expect("ids are unique");
                finished.push(false);
                spooled.push(0);
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
            6 if crashes < 16 => {
                // The process dies: sends in flight never report back, and
                // only the spool survives.
                crashes += 1;
                in_flight.clear();
                let frames: Vec<Bytes> = spool.values().map(|(_, b)| b.clone()).collect();
                let (recovered, report) =
                    Outbox::recover(policy.clone(), u64::from(seed), now, frames, &frame_limits);
                assert!(
                    report.skipped.is_empty(),
                    "a spooled frame failed its checks"
                );
                assert_eq!(report.duplicates, 0);
                outbox = recovered;
            }
            _ => {
                // A clock stepping back: taken as the latest seen.
                outbox.handle_timeout(now - Duration::seconds(i64::from(arg)));
            }
        }
        while let Some(op) = outbox.poll_storage() {
            match op {
                StorageOp::Persist { batch_id, frame } => {
                    spool_seq += 1;
                    let i = index(batch_id, next_id);
                    assert_eq!(spooled[i], 0, "persisted twice");
                    spooled[i] = spool_seq;
                    spooled_count += 1;
                    spool.insert(spool_seq, (batch_id, frame.into_bytes()));
                }
                StorageOp::Remove { batch_id } => {
                    let i = index(batch_id, next_id);
                    let seq = std::mem::take(&mut spooled[i]);
                    assert_ne!(seq, 0, "removed what is not stored");
                    spooled_count -= 1;
                    spool.remove(&seq);
                }
            }
        }
        while let Some(event) = outbox.poll_event() {
            let id = match event {
                DeliveryEvent::Delivered { batch_id, .. }
                | DeliveryEvent::Dropped { batch_id, .. } => batch_id,
                _ => continue,
            };
            let i = index(id, next_id);
            assert!(!finished[i], "two terminal events for one batch");
            finished[i] = true;
            finished_count += 1;
            in_flight.retain(|&b| b != id);
        }
        assert!(outbox.held_bytes() <= limit, "held bytes past the limit");
        let held = outbox.held_batches();
        assert!(
            limit_batches.is_none_or(|n| held as u64 <= n),
            "held batches past the limit"
        );
        // Every batch pushed is either held or finished (one terminal
        // event), never both or neither, and the spool holds exactly the
        // batches held. Checked over the live set, O(held) per operation:
        // the spooled ids are held, pushed (`index` checks) and not
        // finished, and as many as the outbox holds, so they are the held
        // set; with the counts, pushed = finished + held, disjoint.
        let pushed = finished.len();
        assert_eq!(pushed, finished_count + held, "a batch disappeared");
        assert_eq!(spooled_count, held, "the spool and the outbox disagree");
        for (id, _) in spool.values() {
            assert!(outbox.phase(*id).is_some(), "spooled but not held");
            assert!(
                !finished[index(*id, next_id)],
                "a batch both held and finished"
            );
        }
    }
}

/// The frame `outbox_ops` pushes for tenant `tenant` (0–2), data type
/// `data_type` (an index into [`DataType::ALL`]) and `records` records
/// (0–3), with a placeholder batch id: encoded once a process (a pure
/// function of its arguments), so that a push costs the outbox's work
/// rather than JSON and CRCs. Uncompressed, so that a frame's size follows
/// its record count.
fn outbox_template(
    tenant: u8,
    data_type: u8,
    records: u8,
) -> &'static (crate::frame::FrameHeader, bytes::Bytes) {
    use std::sync::OnceLock;

    use bytes::Bytes;

    use crate::frame::{BatchId, Codec, FrameEncoder, FrameHeader};
    use crate::tenant::{Tagged, TenantBatch, TenantId};

    static TEMPLATES: OnceLock<Vec<(FrameHeader, Bytes)>> = OnceLock::new();
    let all = TEMPLATES.get_or_init(|| {
        let mut encoder = FrameEncoder::new().with_codec(Codec::None);
        let epoch = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("in range");
        let id = BatchId::new(uuid::Uuid::from_u128(u128::MAX)).expect("not nil");
        let mut all = Vec::with_capacity(3 * 6 * 4);
        for tenant in 0..3u8 {
            let t = TenantId::new(uuid::Uuid::from_u128(u128::from(tenant) + 1)).expect("not nil");
            for data_type in DataType::ALL {
                for n in 0..4 {
                    let records = (0..n)
                        .filter_map(|i| sample_record(data_type, epoch, i))
                        .map(|r| Tagged::new(t, r));
                    let batch = TenantBatch::from_records(t, data_type, records)
                        .expect("records of the batch's tenant and type");
                    let frame = encoder
                        .encode_frame(&batch, id, epoch)
                        .expect("a small batch encodes");
                    all.push((*frame.header(), frame.into_bytes()));
                }
            }
        }
        all
    });
    &all[(usize::from(tenant) * 6 + usize::from(data_type)) * 4 + usize::from(records)]
}

/// A valid record of `data_type` (Performance, Metadata, Configuration: the
/// first three of the default drop order; `None`
/// for the others, whose frames stay empty), different for each `i` so that
/// frames grow with their record count.
fn sample_record(data_type: DataType, now: chrono::DateTime<chrono::Utc>, i: u8) -> Option<Record> {
    use crate::record::{Configuration, Metadata, Performance};
    let id = uuid::Uuid::from_u128(u128::from(i) + 1);
    match data_type {
        DataType::Performance => Some(Record::from(Performance {
            object_name: "Processor".into(),
            counter_name: "% Processor Time".into(),
            perfmon_instance_name: format!("cpu{i}"),
            performance_data_id: id,
            performance_source_internal_id: i32::from(i),
            sample_value: f64::from(i) * 12.5,
            time_sampled: now,
            time_added: now,
        })),
        DataType::Configuration => Some(Record::from(Configuration {
            customer_id: id,
            agent_id: id,
            entity_id: id,
            managed_type_id: id,
            managed_type_property_id: id,
            current_value: format!("value {i}"),
            change_date: now,
        })),
        DataType::Metadata => Some(Record::from(Metadata {
            base_managed_entity_id: id,
            dns_name: Some(format!("host{i}.contoso.com")),
            ..Metadata::default()
        })),
        _ => None,
    }
}

/// Request-signature headers: the input is split at its first three `0xFF`
/// bytes into `Authorization`, the date, the content hash and the body
/// (missing parts are empty). Both schemes are verified against fixed keys.
/// Checks: no panic; whatever verifies names the keys' workspace and a date
/// within the skew window; a request signed here with the same parts always
/// verifies, and stops verifying when its body changes.
pub fn auth_headers(data: &[u8]) {
    use chrono::{DateTime, Duration};

    use crate::auth::{
        AuthPolicy, EnrollmentKey, WorkspaceKeys, sign_agent_service, sign_data_collector,
        verify_agent_service, verify_data_collector,
    };
    use crate::tenant::TenantId;

    let mut parts = data.splitn(4, |&b| b == 0xFF);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (authorization, date, hash) = (next(), next(), next());
    let body = data.splitn(4, |&b| b == 0xFF).nth(3).unwrap_or_default();
    let workspace = TenantId::new(uuid::Uuid::from_u128(
        0x0f8f_ad5b_d9cb_469f_a165_7086_7728_950e,
    ))
    .expect("not nil");
    // "c2VjcmV0..." is Base64 of a fixed 48-byte test key.
    let key_text = "c2VjcmV0LXdvcmtzcGFjZS1rZXktMDEyMzQ1Njc4OWFiY2RlZi1maXh0dXJlLTAwMQ==";
    let key = || EnrollmentKey::from_base64(key_text).expect("a valid key");
    let keys = WorkspaceKeys::new(workspace, key());
    let policy = AuthPolicy::default();
    let now = DateTime::from_timestamp(1_795_437_296, 0).expect("in range");
    let verified = [
        verify_data_collector(&keys, &authorization, &date, body, &policy, now),
        verify_agent_service(&keys, &authorization, &date, &hash, body, &policy, now),
    ];
    for v in verified.into_iter().flatten() {
        assert_eq!(v.workspace, workspace, "verified for another workspace");
        let skew = if v.date > now {
            v.date - now
        } else {
            now - v.date
        };
        assert!(skew <= Duration::minutes(15), "verified outside the window");
    }
    // Signed here: verifies; with the body changed: does not.
    let signed = sign_data_collector(workspace, &key(), now, body);
    assert!(
        verify_data_collector(
            &keys,
            &signed.authorization,
            &signed.x_ms_date,
            body,
            &policy,
            now
        )
        .is_ok(),
        "a fresh Data Collector signature failed"
    );
    let mut longer = body.to_vec();
    longer.push(b'x');
    assert!(
        verify_data_collector(
            &keys,
            &signed.authorization,
            &signed.x_ms_date,
            &longer,
            &policy,
            now
        )
        .is_err()
    );
    let date = "2026-11-23T12:34:56.5-07:00";
    let signed = sign_agent_service(workspace, &key(), date, body);
    let at = DateTime::parse_from_rfc3339(date).expect("valid").to_utc();
    assert!(
        verify_agent_service(
            &keys,
            &signed.authorization,
            date,
            &signed.content_hash,
            body,
            &policy,
            at
        )
        .is_ok(),
        "a fresh agent-service signature failed"
    );
    assert!(
        verify_agent_service(
            &keys,
            &signed.authorization,
            date,
            &signed.content_hash,
            &longer,
            &policy,
            at
        )
        .is_err()
    );
}

/// Ingest fed arbitrary bytes from a principal of a fixed tenant, with
/// small limits. The first byte's low bit asks the harness to repair the
/// CRCs of the frames it finds, so mutations reach record parsing and
/// sealing. Checks: no panic; every storage operation is a sealed frame of
/// the principal's tenant that opens to a frame of the same batch; only
/// frames answered `Delivered` (and not duplicates) are stored.
pub fn ingest_bytes(data: &[u8]) {
    use chrono::DateTime;

    use crate::auth::{KeySlot, Principal};
    use crate::delivery::Outcome;
    use crate::ingest::{Ingest, IngestConfig, StoreOp};
    use crate::keys::{DeterministicEntropy, KeyRing, RotationPolicy, open};
    use crate::tenant::TenantId;

    const WINDOW: usize = 64;
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let mut bytes = input.to_vec();
    if mode & 1 == 1 {
        repair_crcs(&mut bytes);
    }
    let tenant = TenantId::new(uuid::Uuid::from_u128(
        0x0f8f_ad5b_d9cb_469f_a165_7086_7728_950e,
    ))
    .expect("not nil");
    let limits = small_limits();
    let config = IngestConfig::default()
        .with_limits(limits)
        .with_dedupe_window(WINDOW)
        .expect("positive");
    let mut ingest = Ingest::new(config);
    let now = DateTime::from_timestamp(1_795_437_296, 0).expect("in range");
    let mut entropy = DeterministicEntropy::from_u64(u64::from(mode));
    let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
    let id = ring.generate(&mut entropy, now).expect("fresh ring");
    ring.promote(id, now).expect("pending key");
    let principal = Principal::Workspace {
        tenant,
        key: KeySlot::Primary,
    };
    // Twice: the second time every stored batch is a duplicate (while they
    // fit the de-duplication window).
    let mut first_round = 0;
    for round in 0..2 {
        let report = ingest
            .handle_request(now, &principal, &mut ring, &mut entropy, &bytes)
            .expect("the principal's own ring");
        let stored_now = report
            .answers
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered && !a.duplicate)
            .count();
        let mut ops = 0;
        while let Some(op) = ingest.poll_store() {
            let StoreOp::Put {
                tenant: t,
                object,
                frame,
            } = op;
            assert_eq!(t, tenant, "stored under another tenant");
            assert_eq!(frame.tenant(), tenant);
            assert!(frame.header().sealed, "stored unsealed");
            let opened = open(&frame, &ring).expect("what ingest sealed opens");
            assert_eq!(opened.batch_id(), object.batch_id());
            ops += 1;
        }
        assert_eq!(
            ops, stored_now,
            "stored frames and Delivered answers differ"
        );
        if round == 0 {
            first_round = ops;
        } else if first_round <= WINDOW {
            assert_eq!(ops, 0, "a batch was stored twice");
        }
    }
}

/// The fixed setting of [`paging_token`]: the key, tenant, query and time
/// of the test vector in `docs/EXPORT.md`, a page size of 4 and ten
/// Performance rows of that tenant.
mod paging {
    use chrono::{DateTime, Utc};

    use crate::export::{Pager, PagingKey};
    use crate::record::{Performance, Record};
    use crate::tenant::{Tagged, TenantId};

    pub(super) const PAGE_SIZE: usize = 4;
    pub(super) const ROWS: usize = 10;
    pub(super) const QUERY: &str = "Performance | where CounterName == '% Processor Time'";
    /// 2026-11-23T12:00:00Z.
    pub(super) const NOW: i64 = 1_795_435_200;

    pub(super) fn key() -> PagingKey {
        let mut bytes = [0u8; 32];
        for (i, b) in (0u8..).zip(bytes.iter_mut()) {
            *b = i;
        }
        PagingKey::from_bytes(bytes)
    }

    pub(super) fn tenant() -> TenantId {
        TenantId::new(uuid::Uuid::from_u128(
            0x0f8f_ad5b_d9cb_469f_a165_7086_7728_950e,
        ))
        .expect("not nil")
    }

    pub(super) fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).expect("in range")
    }

    pub(super) fn pager() -> Pager {
        Pager::new(key())
            .with_page_size(PAGE_SIZE)
            .expect("a valid page size")
    }

    pub(super) fn rows() -> Vec<Tagged<Record>> {
        (0..ROWS)
            .map(|i| {
                Tagged::new(
                    tenant(),
                    Record::from(Performance {
                        object_name: "Processor".into(),
                        counter_name: "% Processor Time".into(),
                        perfmon_instance_name: "_Total".into(),
                        performance_data_id: uuid::Uuid::from_u128(i as u128 + 1),
                        performance_source_internal_id: 7,
                        sample_value: i as f64,
                        time_sampled: now(),
                        time_added: now(),
                    }),
                )
            })
            .collect()
    }
}

/// Search-API continuation tokens under a fixed key (see `paging` above).
/// The first byte is the harness's: with its low bit clear, the rest is the
/// token text (lossily UTF-8); with it set, the rest (cut to 128 bytes) is a
/// payload the harness signs with the key, so that mutations get past the
/// tag and reach the field checks. The token asks for the next page of the
/// fixed tenant's Performance rows for the fixed query, at the fixed time.
/// Checks: no panic; an accepted token is exactly the canonical encoding of
/// the fields it decodes to; its page starts at the token's offset, holds
/// at most a page of the source's rows in order, and its next token (there
/// is one exactly when rows remain) verifies and points past the page; a
/// refusal is a token error, never a row error.
pub fn paging_token(data: &[u8]) {
    use crate::export::{ExportError, PAGE_TOKEN_LEN, decode_token, encode_token, sign_payload};
    use crate::record::DataType;

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = paging::key();
    let text = if mode & 1 == 1 {
        sign_payload(&key, &rest[..rest.len().min(128)])
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    let pager = paging::pager();
    let rows = paging::rows();
    let (tenant, now) = (paging::tenant(), paging::now());
    let page = pager.page(
        tenant,
        DataType::Performance,
        paging::QUERY,
        Some(&text),
        &rows,
        now,
    );
    let page = match page {
        Ok(page) => page,
        Err(ExportError::TenantMismatch { .. } | ExportError::DataTypeMismatch { .. }) => {
            panic!("a row of the fixed source was refused")
        }
        Err(_) => return,
    };
    assert_eq!(
        text.len(),
        PAGE_TOKEN_LEN,
        "accepted a token of another length"
    );
    let fields = decode_token(&key, &text).expect("an accepted token decodes");
    assert_eq!(
        encode_token(&key, &fields),
        text,
        "accepted a non-canonical token"
    );
    assert_eq!(page.offset, fields.next_offset);
    assert!(page.rows.len() <= paging::PAGE_SIZE, "page over its size");
    let start = usize::try_from(page.offset).unwrap_or(usize::MAX);
    for (i, row) in page.rows.iter().enumerate() {
        assert_eq!(*row, &rows[start + i], "page row out of order");
    }
    let end = start.saturating_add(page.rows.len());
    match &page.next {
        Some(next) => {
            assert!(end < rows.len(), "a next token after the last row");
            let after = pager
                .page(
                    tenant,
                    DataType::Performance,
                    paging::QUERY,
                    Some(next),
                    &rows,
                    now,
                )
                .expect("a token just issued verifies");
            assert_eq!(after.offset, end as u64);
        }
        None => assert!(end >= rows.len(), "no next token with rows left"),
    }
}

/// The seed corpus of [`paging_token`], by file name: tokens that page,
/// tokens refused for each reason, and payloads for the re-signing mode.
/// `tests/export.rs` keeps `fuzz/corpus/paging_token/` equal to this.
#[must_use]
pub fn paging_token_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::export::{TokenFields, encode_token};
    use crate::record::DataType;

    let key = paging::key();
    let hash = {
        let mut h = [0u8; 32];
        h.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, paging::QUERY.as_bytes()).as_ref(),
        );
        h
    };
    let base = TokenFields {
        version: 1,
        data_type: DataType::Performance.as_u8(),
        tenant: *paging::tenant().as_bytes(),
        query_hash: hash,
        next_offset: 3,
        issued_at: paging::NOW,
    };
    let token = |f: TokenFields| {
        let mut seed = vec![0u8];
        seed.extend_from_slice(encode_token(&key, &f).as_bytes());
        seed
    };
    let payload = |f: TokenFields| {
        let mut seed = vec![1u8];
        seed.extend_from_slice(&f.to_payload());
        seed
    };
    let edit = |f: TokenFields, at: usize| {
        let mut seed = token(f);
        seed[1 + at] = if seed[1 + at] == b'A' { b'B' } else { b'A' };
        seed
    };
    let mut other_tenant = base;
    other_tenant.tenant[15] ^= 1;
    let mut other_query = base;
    other_query.query_hash[0] ^= 1;
    let mut truncated = token(base);
    truncated.truncate(100);
    let mut padded = token(base);
    padded.push(b'=');
    vec![
        ("offset-3-vector", token(base)),
        (
            "offset-8-last-page",
            token(TokenFields {
                next_offset: 8,
                ..base
            }),
        ),
        (
            "offset-past-end",
            token(TokenFields {
                next_offset: 1_000,
                ..base
            }),
        ),
        ("other-tenant", token(other_tenant)),
        ("other-query", token(other_query)),
        (
            "other-data-type",
            token(TokenFields {
                data_type: DataType::Event.as_u8(),
                ..base
            }),
        ),
        (
            "expired",
            token(TokenFields {
                issued_at: paging::NOW - 2 * 3600,
                ..base
            }),
        ),
        (
            "from-the-future",
            token(TokenFields {
                issued_at: paging::NOW + 3600,
                ..base
            }),
        ),
        ("edited-first-char", edit(base, 0)),
        ("edited-last-char", edit(base, 130)),
        ("truncated", truncated),
        ("padded", padded),
        ("empty", vec![0]),
        ("garbage", b"\x00not a token \xff\xfe".to_vec()),
        ("resign-offset-3", payload(base)),
        (
            "resign-version-2",
            payload(TokenFields { version: 2, ..base }),
        ),
        (
            "resign-data-type-9",
            payload(TokenFields {
                data_type: 9,
                ..base
            }),
        ),
        (
            "resign-nil-tenant",
            payload(TokenFields {
                tenant: [0; 16],
                ..base
            }),
        ),
        (
            "resign-time-out-of-range",
            payload(TokenFields {
                issued_at: i64::MIN,
                ..base
            }),
        ),
        (
            "resign-offset-max",
            payload(TokenFields {
                next_offset: u64::MAX,
                ..base
            }),
        ),
    ]
}
