//! Unit tests of the spool that need its internals (test hooks, the
//! index, `maintain` and `relocate` directly).

use super::*;

fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("spool-unit-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn frame(n: u8) -> Frame {
    use opsdata::{DataType, FrameEncoder, TenantBatch, TenantId};
    let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let batch = TenantBatch::from_records(t, DataType::Event, std::iter::empty()).unwrap();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, BatchId::from_random_bytes([n.max(1); 16]), now)
        .unwrap()
}

/// Small segments: a few empty frames fill one.
fn config() -> SpoolConfig {
    let limits = FrameLimits::default().with_max_body(1 << 10).unwrap();
    SpoolConfig::new(1 << 30)
        .unwrap()
        .with_frame_limits(limits)
        .unwrap()
        .with_segment_bytes(2 << 10)
        .unwrap()
}

#[test]
fn regression_copies_are_synced_before_their_originals_are_deleted() {
    let d = test_dir("copies");
    let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
    let mut ids = Vec::new();
    let mut n = 1u8;
    while spool.segments() < 3 {
        let f = frame(n);
        spool.persist(f.batch_id(), &f).unwrap();
        ids.push(f.batch_id());
        n += 1;
    }
    let head = *spool.segs.keys().next().unwrap();
    let in_head: Vec<BatchId> = ids
        .iter()
        .copied()
        .filter(|id| spool.index[id].seg == head)
        .collect();
    assert!(in_head.len() >= 3);
    // A compaction that copied two frames and then failed: the copies
    // are in the index but not synced.
    spool.relocate(in_head[0]).unwrap();
    spool.relocate(in_head[1]).unwrap();
    assert!(spool.tail_unsynced);
    // The head's other frames are removed (markers not synced either).
    for id in &in_head[2..] {
        spool.remove(*id).unwrap();
    }
    assert_eq!(spool.segs[&head].live_frames, 0);
    let syncs = spool.tail_syncs;
    spool.maintain(u64::MAX).unwrap();
    assert!(!spool.segs.contains_key(&head), "the head was dropped");
    assert!(spool.tail_syncs > syncs, "the copies were synced first");
    assert!(!spool.tail_unsynced);
    drop(spool);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn regression_one_persist_compacts_a_bounded_number_of_bytes() {
    // One small frame pinned in each of many segments of large frames;
    // then the large ones are removed, so the files are far past the
    // threshold and a pass must move every pinned frame. Before the
    // budget, the next persist moved them all; now each persist
    // copies at most its budget plus one entry, and the pass goes on
    // over the next calls.
    let d = test_dir("budget");
    let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
    let perf = |n: u64, records: usize| {
        use opsdata::{Codec, DataType, FrameEncoder, Record, TenantBatch, TenantId};
        let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let recs = (0..records).map(|i| {
            opsdata::Tagged::new(
                t,
                Record::Performance(opsdata::Performance {
                    object_name: "x".repeat(200),
                    counter_name: format!("{n}-{i}"),
                    perfmon_instance_name: String::new(),
                    performance_data_id: uuid::Uuid::from_u128(u128::from(n) + 1),
                    performance_source_internal_id: 1,
                    sample_value: 0.0,
                    time_sampled: at,
                    time_added: at,
                }),
            )
        });
        let batch = TenantBatch::from_records(t, DataType::Performance, recs).unwrap();
        FrameEncoder::new()
            .with_codec(Codec::None)
            .encode_frame(
                &batch,
                BatchId::new(uuid::Uuid::from_u128(1 + u128::from(n))).unwrap(),
                at,
            )
            .unwrap()
    };
    let mut big = Vec::new();
    for n in 0..120u64 {
        let f = perf(2 * n, 0);
        spool.persist(f.batch_id(), &f).unwrap();
        let f = perf(2 * n + 1, 2);
        spool.persist(f.batch_id(), &f).unwrap();
        big.push(f.batch_id());
    }
    for id in big {
        spool.remove(id).unwrap();
    }
    let pinned: u64 = spool.index.values().map(|l| l.frame_len + MOVE_LEN).sum();
    let mut max_copied = 0;
    let mut moved = 0;
    for n in 1_000..1_200u64 {
        let f = perf(n, 0);
        let len = f.len() as u64;
        spool.persist(f.batch_id(), &f).unwrap();
        let bound = FileSpool::budget(len) + spool.config.max_entry_len();
        assert!(
            spool.last_copied <= bound,
            "{} > {bound}",
            spool.last_copied
        );
        max_copied = max_copied.max(spool.last_copied);
        moved += spool.last_copied;
        spool.remove(f.batch_id()).unwrap();
    }
    assert!(moved >= pinned / 2, "compaction ran: {moved} of {pinned}");
    assert!(max_copied * 4 < pinned, "{max_copied} of {pinned}");
    // The files came back near the live entries.
    assert!(spool.disk_bytes <= 2 * spool.live_entry_bytes + 3 * spool.config.segment_bytes);
    drop(spool);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn regression_the_last_segment_number_is_a_typed_error_not_an_overflow() {
    // A valid last segment numbered u64::MAX: opens, but cannot roll.
    let d = test_dir("max-seg");
    fs::create_dir_all(&d).unwrap();
    let path = d.join(segment_name(u64::MAX));
    fs::write(&path, versioned_record(SEGMENT_MAGIC, u64::MAX)).unwrap();
    let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
    let mut result = Ok(());
    for n in 1..=u8::MAX {
        let f = frame(n);
        result = spool.persist(f.batch_id(), &f);
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(
            result,
            Err(SpoolError::SegmentNumbersExhausted { last: u64::MAX, .. })
        ),
        "{result:?}"
    );
    drop(spool);
    // A damaged last segment numbered u64::MAX: nowhere to re-append.
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x55; 40]);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        FileSpool::open(&d, config()),
        Err(SpoolError::SegmentNumbersExhausted { last: u64::MAX, .. })
    ));
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn regression_a_failed_sync_poisons_the_spool_until_reopened() {
    let d = test_dir("poison");
    let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
    let a = frame(1);
    spool.persist(a.batch_id(), &a).unwrap();
    spool.fail_syncs = true;
    let b = frame(2);
    assert!(matches!(
        spool.persist(b.batch_id(), &b),
        Err(SpoolError::Io { .. })
    ));
    // The cause is gone, but memory can no longer be trusted.
    spool.fail_syncs = false;
    assert!(matches!(
        spool.persist(b.batch_id(), &b),
        Err(SpoolError::Poisoned)
    ));
    assert!(matches!(
        spool.remove(a.batch_id()),
        Err(SpoolError::Poisoned)
    ));
    assert!(matches!(spool.load(&mut |_| {}), Err(SpoolError::Poisoned)));
    drop(spool);
    let (mut spool, rec) = FileSpool::open(&d, config()).unwrap();
    assert_eq!(rec.frames, 1);
    spool.persist(b.batch_id(), &b).unwrap();
    drop(spool);
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn records_round_trip_and_refuse_damage() {
    let h = versioned_record(SEGMENT_MAGIC, 42);
    assert_eq!(parse_versioned_record(SEGMENT_MAGIC, &h), Some(42));
    assert_eq!(parse_versioned_record(CHECKPOINT_MAGIC, &h), None);
    for i in 0..h.len() {
        let mut bad = h;
        bad[i] ^= 1;
        assert_eq!(
            parse_versioned_record(SEGMENT_MAGIC, &bad),
            None,
            "byte {i}"
        );
    }
    let id = BatchId::from_random_bytes([3; 16]);
    let m = marker_record(id);
    assert_eq!(m.len() as u64, MARKER_LEN);
    assert_eq!(u32_at(&m, 20), crc(&m[..20]));
    let mv = move_record((7, 9));
    assert_eq!((u64_at(&mv, 4), u64_at(&mv, 12)), (7, 9));
}

#[test]
fn segment_names_parse_strictly() {
    assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
    assert_eq!(parse_segment_name("seg-0000000000000abc.log.corrupt"), None);
    assert_eq!(parse_segment_name("seg-abc.log"), None);
    assert_eq!(parse_segment_name("seg-000000000000zabc.log"), None);
    assert_eq!(parse_segment_name("CHECKPOINT"), None);
    assert_eq!(parse_segment_name("seg-0000000000000ABC.log"), None);
    assert_eq!(parse_segment_name("seg-+000000000000abc.log"), None);
}

#[test]
fn settings_are_validated() {
    let c = SpoolConfig::new(1 << 30).unwrap();
    assert!(matches!(
        c.with_segment_bytes(1 << 20),
        Err(SpoolConfigError::SegmentTooSmall { .. })
    ));
    assert!(matches!(
        SpoolConfig::new(60 << 20),
        Err(SpoolConfigError::DiskTooSmall { .. })
    ));
    // The outbox limit leaves the documented overhead and a quarter.
    let expect = ((1u64 << 30) - 3 * c.segment_bytes() - 2 * c.max_frame_len() - 244) / 5;
    assert_eq!(c.outbox_limit_bytes(), expect);
    assert!(c.outbox_limit_bytes() >= c.max_frame_len());
}

#[test]
fn resync_reads_each_byte_a_bounded_number_of_times() {
    // Frames whose body is damaged (header intact), magic-looking junk,
    // then one good frame: the search reads at most the magic and a
    // prefix (≤ 140 bytes) at each position, and each body once.
    use opsdata::{Codec, DataType, FrameEncoder, Record, TenantBatch, TenantId};
    let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let big = |n: u128| {
        let recs = (0..8).map(|i| {
            opsdata::Tagged::new(
                t,
                Record::Performance(opsdata::Performance {
                    object_name: "y".repeat(200),
                    counter_name: format!("{n}-{i}"),
                    perfmon_instance_name: String::new(),
                    performance_data_id: uuid::Uuid::from_u128(n + 1),
                    performance_source_internal_id: 1,
                    sample_value: 0.0,
                    time_sampled: at,
                    time_added: at,
                }),
            )
        });
        let batch = TenantBatch::from_records(t, DataType::Performance, recs).unwrap();
        FrameEncoder::new()
            .with_codec(Codec::None)
            .encode_frame(
                &batch,
                BatchId::new(uuid::Uuid::from_u128(n + 1)).unwrap(),
                at,
            )
            .unwrap()
    };
    let mut bytes = vec![0u8; 20];
    for n in 0..40 {
        let f = big(n);
        let start = bytes.len();
        bytes.extend_from_slice(f.as_bytes());
        bytes[start + 200] ^= 1;
    }
    let junk_start = bytes.len();
    for i in 0..2_000u32 {
        bytes.extend_from_slice(&FRAME_MAGIC);
        bytes.extend_from_slice(&i.to_be_bytes());
    }
    let junk = (bytes.len() - junk_start) as u64;
    let good = big(99);
    let good_at = bytes.len() as u64;
    bytes.extend_from_slice(good.as_bytes());
    let d = test_dir("resync-work");
    fs::create_dir_all(&d).unwrap();
    let path = d.join("seg");
    fs::write(&path, &bytes).unwrap();
    let file = File::open(&path).unwrap();
    let mut scanner = Scanner {
        reader: BufReader::with_capacity(64 << 10, file),
        pos: 0,
        file_len: bytes.len() as u64,
        max_frame_len: SpoolConfig::new(1 << 30).unwrap().max_frame_len(),
        limits: FrameLimits::default(),
        bytes_read: 0,
    };
    let mut damaged = 0;
    let found = scanner.resync(20, &mut |_, _| damaged += 1).unwrap();
    assert!(matches!(found, Some((p, Entry::Frame { .. })) if p == good_at));
    assert_eq!(damaged, 40, "every damaged frame named");
    let len = bytes.len() as u64;
    // The damaged frames' bytes are read about once (their bodies once,
    // skipped after), the junk at most 141 bytes a position.
    let bound = 2 * (len - junk) + 141 * junk;
    assert!(
        scanner.bytes_read <= bound,
        "{} bytes read for {len} ({junk} of junk), bound {bound}",
        scanner.bytes_read
    );
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn regression_the_markers_of_frames_that_do_not_open_are_synced_before_they_are_reported() {
    // Removal markers are not synced by default (`sync_removals`): a
    // marker lost to a power failure only brings a frame back. For a
    // frame recovery reports lost because it does not open, it would
    // also be reported lost a second time, so recovery syncs them.
    let base = test_dir("unopenable-sync");
    fs::create_dir_all(&base).unwrap();
    let (d, other, key) = (
        base.join("spool"),
        base.join("other"),
        base.join("spool.key"),
    );
    let clock: crate::Clock =
        std::sync::Arc::new(|| chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap());
    let protection = || SpoolProtection::new(KeyFileStore::new(&key), clock.clone());
    let sealed = config().with_sealed_at_rest(true).unwrap();
    assert!(!sealed.sync_removals(), "the default this test is about");
    {
        let (mut spool, _) = FileSpool::open_protected(&d, sealed, protection()).unwrap();
        for n in 1..=3 {
            let f = frame(n);
            spool.persist(f.batch_id(), &f).unwrap();
        }
        let (mut spool2, _) = FileSpool::open_protected(&other, sealed, protection()).unwrap();
        let f = frame(9);
        spool2.persist(f.batch_id(), &f).unwrap();
    }
    // Another history's SPOOLKEY under the same store key: the rings
    // open, the frames sealed under this spool's rings do not.
    fs::copy(other.join("SPOOLKEY"), d.join("SPOOLKEY")).unwrap();
    let (spool, rec) = FileSpool::open_protected(&d, sealed, protection()).unwrap();
    assert_eq!(rec.losses().count(), 3, "{rec:?}");
    assert_eq!(spool.index.len(), 0);
    assert!(
        !spool.tail_unsynced,
        "the markers are synced before the losses are reported"
    );
    drop(spool);
    let _ = fs::remove_dir_all(&base);
}
