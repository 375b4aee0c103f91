//! Ingest: authenticated bytes to sealed, stored frames, with the tenant
//! checked at every layer. The isolation tests of issue 6 live here (those
//! about signatures are in tests/auth.rs).

mod common;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    AuthPolicy, BatchId, BlobStore, Codec, DataType, DeliveryPolicy, DeterministicEntropy,
    EnrollmentKey, Frame, FrameEncoder, FrameLimits, Ingest, IngestConfig, IngestError, KeyError,
    KeyRing, MemoryBlobStore, ObjectKey, Outbox, Outcome, Principal, RateLimit, RotationPolicy,
    StoreOp, Tagged, TenantBatch, TenantId, WorkspaceKeys, apply_store_op, open, read_back,
    sign_data_collector, verify_data_collector,
};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}
fn b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}
fn principal(t: TenantId) -> Principal {
    let key =
        EnrollmentKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 64]))
            .unwrap();
    let s = sign_data_collector(t, &key, t0(), b"x");
    let v = verify_data_collector(
        &WorkspaceKeys::new(t, key),
        &s.authorization,
        &s.x_ms_date,
        b"x",
        &AuthPolicy::default(),
        t0(),
    )
    .unwrap();
    Principal::from_signature(&v)
}
fn ring(t: TenantId, seed: u64) -> KeyRing {
    let mut e = DeterministicEntropy::from_u64(seed);
    let mut r = KeyRing::new(t, &RotationPolicy::default());
    let k = r.generate(&mut e, t0()).unwrap();
    r.promote(k, t0()).unwrap();
    r
}
fn frame(t: TenantId, data_type: DataType, n: u128) -> Frame {
    let batch = TenantBatch::from_records(
        t,
        data_type,
        (0..3).map(|_| Tagged::new(t, common::sample(data_type))),
    )
    .unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, BatchId::new(Uuid::from_u128(n)).unwrap(), t0())
        .unwrap()
}
fn stored(ingest: &mut Ingest, store: &mut MemoryBlobStore) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    while let Some(op) = ingest.poll_store() {
        let StoreOp::Put { object, .. } = &op else {
            unreachable!()
        };
        keys.push(*object);
        apply_store_op(store, &op).unwrap();
    }
    keys
}

#[test]
fn frames_are_checked_sealed_stored_and_read_back() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut store = MemoryBlobStore::new();
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let mut bytes = Vec::new();
    for (n, t) in DataType::ALL.into_iter().enumerate() {
        bytes.extend_from_slice(frame(a(), t, n as u128 + 1).as_bytes());
    }
    let report = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, &bytes)
        .unwrap();
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert_eq!(report.answers.len(), 6);
    assert!(
        report
            .answers
            .iter()
            .all(|x| x.outcome == Outcome::Delivered && x.error.is_none())
    );
    let keys = stored(&mut ingest, &mut store);
    assert_eq!(keys.len(), 6);
    for (n, t) in DataType::ALL.into_iter().enumerate() {
        let object = ObjectKey::for_batch(BatchId::new(Uuid::from_u128(n as u128 + 1)).unwrap());
        let raw = store.get(a(), object).unwrap().unwrap();
        assert_eq!(raw[5] & 1, 1, "stored sealed");
        let back = read_back(&store, a(), object, &ring_a, &FrameLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(back, frame(a(), t, n as u128 + 1));
    }
    let stats = ingest.stats(a());
    assert_eq!((stats.frames, stats.records), (6, 18));
    assert_eq!(stats.records_by_type[&DataType::Alert], 3);
    assert_eq!(ring_a.primary().unwrap().usage, 6);
}

#[test]
fn a_frame_naming_tenant_b_sent_by_a_principal_of_a_is_refused_and_counted() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let mut bytes = frame(a(), DataType::Event, 1).as_bytes().to_vec();
    bytes.extend_from_slice(frame(b(), DataType::Event, 2).as_bytes());
    bytes.extend_from_slice(frame(a(), DataType::Event, 3).as_bytes());
    let report = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, &bytes)
        .unwrap();
    // The first frame is stored; B's stops the request; nothing after it
    // is read (the decoder never resynchronises).
    assert_eq!(report.answers.len(), 1);
    assert!(matches!(
        report.stopped,
        Some(IngestError::TenantMismatch { principal, found }) if principal == a() && found == b()
    ));
    assert_eq!(ingest.stats(a()).tenant_mismatches, 1);
    assert_eq!(ingest.tenant_mismatches(&principal(a())), 1);
    assert_eq!(ingest.tenant_mismatches(&principal(b())), 0);
    assert_eq!(ingest.stats(b()), Default::default());
    let mut store = MemoryBlobStore::new();
    assert_eq!(stored(&mut ingest, &mut store).len(), 1);
    assert!(store.list(b()).unwrap().is_empty());
    // A ring of another tenant is misuse, refused before reading.
    let mut ring_b = ring(b(), 3);
    assert!(matches!(
        ingest.handle_request(t0(), &principal(a()), &mut ring_b, &mut e, &bytes),
        Err(IngestError::WrongRing { .. })
    ));
}

#[test]
fn a_sealed_frame_of_a_does_not_open_with_bs_ring_even_relabelled_as_b() {
    let mut ring_a = ring(a(), 1);
    // B's ring holds a key with the same id (1), different material.
    let ring_b = ring(b(), 5);
    let mut e = DeterministicEntropy::from_u64(2);
    let sealed = opsdata::seal(&frame(a(), DataType::Alert, 1), &mut ring_a, &mut e, t0()).unwrap();
    assert!(matches!(
        open(&sealed, &ring_b),
        Err(KeyError::TenantMismatch { .. })
    ));
    // Rewrite the header to say B and repair the CRCs.
    let mut bytes = sealed.as_bytes().to_vec();
    bytes[16..32].copy_from_slice(b().as_bytes());
    let crc = common::crc32(&bytes[..132]);
    bytes[132..136].copy_from_slice(&crc.to_be_bytes());
    let relabelled = Frame::decode(Bytes::from(bytes), &FrameLimits::default()).unwrap();
    assert_eq!(relabelled.tenant(), b());
    assert!(matches!(
        open(&relabelled, &ring_b),
        Err(KeyError::Tampered { .. })
    ));
}

#[test]
fn a_store_read_with_bs_id_never_returns_as_object() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut store = MemoryBlobStore::new();
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let f = frame(a(), DataType::State, 7);
    let _ = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, f.as_bytes())
        .unwrap();
    let keys = stored(&mut ingest, &mut store);
    let object = keys[0];
    assert!(store.get(a(), object).unwrap().is_some());
    assert_eq!(store.get(b(), object).unwrap(), None);
    assert!(store.list(b()).unwrap().is_empty());
    let ring_b = ring(b(), 5);
    assert!(
        read_back(&store, b(), object, &ring_b, &FrameLimits::default())
            .unwrap()
            .is_none()
    );
    // The store refuses to file A's frame under B.
    let sealed = opsdata::seal(&f, &mut ring_a, &mut e, t0()).unwrap();
    assert!(store.put(b(), object, &sealed).is_err());
    assert!(store.list(b()).unwrap().is_empty());
}

#[test]
fn a_duplicate_batch_is_answered_delivered_and_stored_once() {
    let config = IngestConfig::default().with_dedupe_window(2).unwrap();
    let mut ingest = Ingest::new(config);
    let mut store = MemoryBlobStore::new();
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let p = principal(a());
    let f1 = frame(a(), DataType::Event, 1);
    for _ in 0..3 {
        let r = ingest
            .handle_request(t0(), &p, &mut ring_a, &mut e, f1.as_bytes())
            .unwrap();
        assert_eq!(r.answers[0].outcome, Outcome::Delivered);
    }
    assert_eq!(stored(&mut ingest, &mut store).len(), 1);
    assert_eq!(ingest.stats(a()).duplicates, 2);
    // The window is bounded: after two newer batches, the first is
    // forgotten and would be stored again.
    for n in [2, 3] {
        let f = frame(a(), DataType::Event, n);
        let _ = ingest
            .handle_request(t0(), &p, &mut ring_a, &mut e, f.as_bytes())
            .unwrap();
    }
    let r = ingest
        .handle_request(t0(), &p, &mut ring_a, &mut e, f1.as_bytes())
        .unwrap();
    assert!(!r.answers[0].duplicate);
    // The same batch id under another tenant is not a duplicate.
    let mut ring_b = ring(b(), 3);
    let fb = frame(b(), DataType::Event, 1);
    let r = ingest
        .handle_request(t0(), &principal(b()), &mut ring_b, &mut e, fb.as_bytes())
        .unwrap();
    assert!(!r.answers[0].duplicate);
}

#[test]
fn bad_records_are_rejected_and_a_missing_key_is_transient() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut e = DeterministicEntropy::from_u64(2);
    // A record that parses but fails validation (a negative RepeatCount),
    // in a frame built by hand: the encoder would refuse to write it.
    let mut json = Vec::new();
    common::sample(DataType::Alert).write_json(&mut json);
    let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    value["RepeatCount"] = serde_json::json!(-1);
    let mut payload = serde_json::to_vec(&value).unwrap();
    payload.push(b'\n');
    let header = opsdata::FrameHeader {
        sealed: false,
        codec: Codec::None,
        data_type: DataType::Alert,
        record_count: 1,
        tenant: a(),
        batch_id: BatchId::new(Uuid::from_u128(1)).unwrap(),
        created: t0(),
        content_len: payload.len() as u32,
        body_len: payload.len() as u32,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(&common::crc32(&bytes).to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(&common::crc32(&payload).to_be_bytes());
    let mut ring_a = ring(a(), 1);
    let r = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, &bytes)
        .unwrap();
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].outcome, Outcome::Rejected);
    assert!(
        matches!(
            r.answers[0].error,
            Some(IngestError::Record { index: 0, .. })
        ),
        "{:?}",
        r.answers[0].error
    );
    assert_eq!(ingest.stats(a()).rejected, 1);
    // No key yet: the data is fine, the agent should retry.
    let mut empty = KeyRing::new(a(), &RotationPolicy::default());
    let f = frame(a(), DataType::Event, 9);
    let r = ingest
        .handle_request(t0(), &principal(a()), &mut empty, &mut e, f.as_bytes())
        .unwrap();
    assert_eq!(r.answers[0].outcome, Outcome::Transient);
    assert!(ingest.poll_store().is_none());
}

/// A purged workspace's ring is shredded: its frames can never be stored,
/// so they are rejected (the agent drops them and reports the loss)
/// instead of answered transient and retried forever.
#[test]
fn regression_a_frame_for_a_shredded_ring_is_rejected_not_retried() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut e = DeterministicEntropy::from_u64(4);
    let policy = RotationPolicy::default();
    let mut shredded = ring(a(), 3);
    shredded.close(&policy, t0()).unwrap();
    let _receipt = shredded.shred(t0() + policy.shred_after_close()).unwrap();
    let f = frame(a(), DataType::Event, 11);
    let r = ingest
        .handle_request(t0(), &principal(a()), &mut shredded, &mut e, f.as_bytes())
        .unwrap();
    assert_eq!(r.answers[0].outcome, Outcome::Rejected);
    assert!(
        matches!(
            r.answers[0].error,
            Some(IngestError::Key(opsdata::KeyError::Shredded { .. }))
        ),
        "{:?}",
        r.answers[0].error
    );
    assert_eq!(ingest.stats(a()).rejected, 1);
    assert!(ingest.poll_store().is_none());
}

#[test]
fn the_rate_limit_throttles_with_a_retry_after() {
    let content = u64::from(frame(a(), DataType::Performance, 1).header().content_len);
    let rate = RateLimit::new(content, 2 * content).unwrap();
    let mut ingest = Ingest::new(IngestConfig::default().with_rate_limit(Some(rate)));
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let p = principal(a());
    let mut outcomes = Vec::new();
    for n in 1..=3 {
        let f = frame(a(), DataType::Performance, n);
        let r = ingest
            .handle_request(t0(), &p, &mut ring_a, &mut e, f.as_bytes())
            .unwrap();
        outcomes.push(r.answers[0].outcome);
    }
    assert_eq!(outcomes[..2], [Outcome::Delivered, Outcome::Delivered]);
    let Outcome::Throttled { retry_after } = outcomes[2] else {
        panic!("{outcomes:?}")
    };
    assert!(retry_after > Duration::zero() && retry_after <= Duration::seconds(1));
    // Another tenant is not held back by A's rate.
    let mut ring_b = ring(b(), 3);
    let fb = frame(b(), DataType::Performance, 1);
    let r = ingest
        .handle_request(t0(), &principal(b()), &mut ring_b, &mut e, fb.as_bytes())
        .unwrap();
    assert_eq!(r.answers[0].outcome, Outcome::Delivered);
    // After the wait, A's batch goes through.
    let f = frame(a(), DataType::Performance, 3);
    let r = ingest
        .handle_request(t0() + retry_after, &p, &mut ring_a, &mut e, f.as_bytes())
        .unwrap();
    assert_eq!(r.answers[0].outcome, Outcome::Delivered);
    assert!(RateLimit::new(0, 1).is_err());
}

#[test]
fn the_agents_outbox_understands_ingests_answers() {
    let mut outbox = Outbox::new(DeliveryPolicy::default(), 1);
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut store = MemoryBlobStore::new();
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    for n in 1..=3 {
        outbox
            .push(t0(), frame(a(), DataType::Metadata, n))
            .unwrap();
    }
    while outbox.poll_storage().is_some() {}
    while let Some(tx) = outbox.poll_transmit(t0()) {
        let r = ingest
            .handle_request(
                t0(),
                &principal(tx.tenant),
                &mut ring_a,
                &mut e,
                tx.frame.as_bytes(),
            )
            .unwrap();
        stored(&mut ingest, &mut store);
        outbox
            .handle_outcome(t0(), tx.batch_id, r.answers[0].outcome)
            .unwrap();
    }
    assert_eq!(outbox.held_batches(), 0);
    assert_eq!(store.list(a()).unwrap().len(), 3);
}

/// Regression: a batch whose store failed was remembered as seen, so the
/// agent's retry was answered `Delivered` as a duplicate and never stored.
#[test]
fn regression_a_retry_after_a_failed_store_is_stored_not_taken_for_a_duplicate() {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut store = MemoryBlobStore::new();
    let mut ring_a = ring(a(), 1);
    let mut e = DeterministicEntropy::from_u64(2);
    let f = frame(a(), DataType::Event, 7);
    let first = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, f.as_bytes())
        .unwrap();
    assert_eq!(first.answers[0].outcome, Outcome::Delivered);
    // The store fails: the host hands the operation back.
    let op = ingest.poll_store().expect("a put");
    ingest.handle_store_failed(&op);
    assert!(ingest.poll_store().is_none());
    assert_eq!(ingest.stats(a()).store_failures, 1);
    // The agent retries (it was answered Transient): stored this time.
    let retry = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, f.as_bytes())
        .unwrap();
    assert_eq!(retry.answers[0].outcome, Outcome::Delivered);
    assert!(!retry.answers[0].duplicate, "a retry of an unstored batch");
    let keys = stored(&mut ingest, &mut store);
    assert_eq!(keys, vec![ObjectKey::for_batch(f.batch_id())]);
    // And from now on it is a duplicate.
    let again = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, f.as_bytes())
        .unwrap();
    assert!(again.answers[0].duplicate);
    assert!(ingest.poll_store().is_none());
}

#[test]
fn the_config_reads_back_what_was_set() {
    let limits = FrameLimits::default().with_max_records(10).unwrap();
    let rate = RateLimit::new(1000, 5000).unwrap();
    let config = IngestConfig::default()
        .with_limits(limits)
        .with_dedupe_window(7)
        .unwrap()
        .with_rate_limit(Some(rate));
    assert_eq!(config.limits(), limits);
    assert_eq!(config.dedupe_window(), 7);
    assert_eq!(config.rate_limit(), Some(rate));
    assert_eq!(IngestConfig::default().dedupe_window(), 100_000);
    assert_eq!(IngestConfig::default().rate_limit(), None);
}
