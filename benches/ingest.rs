//! Service-side ingest throughput for 1 MiB batches of Performance records
//! (level-1 frames, built as in `benches/frame.rs`), side by side with the
//! decode-only path of the framing bench on the same frame, all in MB/s of
//! the uncompressed JSON Lines payload.
//!
//! - `ingest_1MiB`:
//!   - `frame_decode`: [`FrameDecoder`] push + poll, then
//!     [`PayloadReader::records`], exactly as `frame_decode` in
//!     `benches/frame.rs`.
//!   - `frame_decode_borrowed_validate`: the same decode through
//!     [`PayloadReader::visit_records`], validating each borrowed record:
//!     the decoding part of ingest.
//!   - `ingest`: [`Ingest::handle_request`] for a workspace principal (decode,
//!     tenant check, parse and validate through the borrowed records,
//!     de-duplicate, seal under the tenant's primary with [`SystemEntropy`]),
//!     then the [`StoreOp::Put`] applied to a [`MemoryBlobStore`].
//!   - `verify_and_ingest`: the same after [`verify_agent_service`] of the
//!     request body (SHA-256 of the body, HMAC-SHA256 of the string to sign).
//! - Then, under `cargo bench` only, the owned `frame_decode`,
//!   `frame_decode_borrowed_validate` and `ingest` alternated call by call
//!   for 300 rounds; their medians and ratios are printed to stderr.
//! - `ingest_parts_1MiB`: the steps ingest adds to decoding, each alone on
//!   the same frame: `validate` (of every record), `seal` (of the decoded
//!   frame, whose body is the ~150 KB compressed one), `verify_agent_service`
//!   (of the request body), `store_put_delete`.
//!
//! Every ingest request carries a frame with a batch id never sent before:
//! a duplicate would be answered `Delivered` without parsing, sealing or
//! storing. Each request is made outside the timing by copying the frame and
//! rewriting its batch id and header CRC (and, for `verify_and_ingest`,
//! signing it, since the signature covers the whole body); every timed call
//! asserts that its frame was accepted, not taken for a duplicate. The
//! stored object is deleted again in the timed call, so memory stays flat.
//!
//! The goals: verifying, sealing and storing cost at most 15 % on top of
//! decoding; ingest is at least 1.3 times as fast as the owned
//! `frame_decode` in the same run.
//!
//! `cargo bench --bench ingest`

use std::hint::black_box;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use opsdata::{
    AgentServiceSignature, AuthPolicy, BatchId, BlobStore, Decoded, EnrollmentKey, Frame,
    FrameDecoder, FrameEncoder, FrameLimits, Ingest, IngestConfig, IngestReport, KeyRing,
    MemoryBlobStore, ObjectKey, Outcome, PayloadReader, Principal, RecordLimits, RotationPolicy,
    StoreOp, SystemEntropy, WorkspaceKeys, apply_store_op, seal, sign_agent_service,
    verify_agent_service,
};
mod common;
use common::{configure, performance_batch, performance_records};

/// An unsealed frame's fixed header; its CRC follows it.
const HEADER_LEN: usize = 64;
/// Where the batch id sits in the fixed header (docs/FRAME.md).
const BATCH_ID_AT: usize = 32;

/// Copies of one unsealed frame, each with a batch id of its own.
struct Requests {
    frame: Vec<u8>,
    next: u64,
}

impl Requests {
    fn new(frame: Vec<u8>) -> Self {
        assert_eq!(frame[5] & 1, 0, "the frame must be unsealed");
        Requests { frame, next: 0 }
    }

    /// The frame with the next batch id, and that id.
    fn next(&mut self) -> (Vec<u8>, BatchId) {
        self.next += 1;
        // The counter goes in bytes 0-5: the UUID version and variant bits
        // (bytes 6 and 8) would overwrite part of it, and ids 4 096 requests
        // apart would be taken for duplicates.
        let mut random = [0xa5; 16];
        random[..6].copy_from_slice(&self.next.to_be_bytes()[2..]);
        let id = BatchId::from_random_bytes(random);
        let mut bytes = self.frame.clone();
        bytes[BATCH_ID_AT..BATCH_ID_AT + 16].copy_from_slice(id.as_bytes());
        let crc = crc32fast::hash(&bytes[..HEADER_LEN]);
        bytes[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&crc.to_be_bytes());
        (bytes, id)
    }
}

/// The wall clock, for the interleaved measurement (a bench measures wall
/// time; the library itself never reads a clock).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// What ingest needs besides the bytes.
struct Service {
    ingest: Ingest,
    store: MemoryBlobStore,
    ring: KeyRing,
    entropy: SystemEntropy,
    now: DateTime<Utc>,
}

impl Service {
    /// Ingests one request of one new frame and applies its `Put`; asserts
    /// that the frame was accepted (not a duplicate) and exactly one `Put`
    /// came out. Deletes the stored object again unless `keep`.
    fn ingest(&mut self, principal: &Principal, bytes: &[u8], keep: bool) -> IngestReport {
        let report = self
            .ingest
            .handle_request(
                self.now,
                principal,
                &mut self.ring,
                &mut self.entropy,
                bytes,
            )
            .unwrap();
        let [answer] = report.answers.as_slice() else {
            panic!("one frame sent, {} answered", report.answers.len());
        };
        assert!(
            answer.outcome == Outcome::Delivered && !answer.duplicate && answer.error.is_none(),
            "not a real accept: {answer:?}"
        );
        assert!(report.stopped.is_none());
        let op = self.ingest.poll_store().expect("one Put");
        apply_store_op(&mut self.store, &op).unwrap();
        assert!(self.ingest.poll_store().is_none(), "more than one Put");
        if !keep {
            self.store
                .delete(principal.tenant(), ObjectKey::for_batch(answer.batch_id))
                .unwrap();
        }
        report
    }
}

fn bench_ingest(c: &mut Criterion) {
    let (records, payload) = performance_records();
    let content_len = payload.len();
    let (tenant, batch) = performance_batch(&records);
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 15, 0).unwrap();
    let mut frame_bytes = Vec::new();
    let header = FrameEncoder::new()
        .with_level(1)
        .unwrap()
        .encode(
            &batch,
            BatchId::from_random_bytes([0x5a; 16]),
            now,
            &mut frame_bytes,
        )
        .unwrap();
    assert_eq!(header.content_len as usize, content_len);
    eprintln!(
        "ingest bench: {} Performance records, {content_len} payload bytes, level-1 frame {} bytes",
        records.len(),
        frame_bytes.len()
    );

    // The tenant's key ring, its key 1 primary.
    let mut entropy = SystemEntropy::new();
    let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
    let k1 = ring.generate(&mut entropy, now).unwrap();
    ring.promote(k1, now).unwrap();
    let mut service = Service {
        ingest: Ingest::new(IngestConfig::default()),
        store: MemoryBlobStore::new(),
        ring,
        entropy,
        now,
    };

    // The workspace key (64 bytes, as the portal issues them) and a date
    // as agents send it: local time with its offset, 100 ns digits.
    let key_b64 = base64::engine::general_purpose::STANDARD.encode([0x5c; 64]);
    let key = EnrollmentKey::from_base64(&key_b64).unwrap();
    let keys = WorkspaceKeys::new(tenant, EnrollmentKey::from_base64(&key_b64).unwrap());
    let policy = AuthPolicy::default();
    let date = "2026-11-23T04:14:59.123456700-08:00";
    let sign = |bytes: Vec<u8>| -> (Vec<u8>, AgentServiceSignature) {
        let signature = sign_agent_service(tenant, &key, date, &bytes);
        (bytes, signature)
    };
    let verify = |bytes: &[u8], s: &AgentServiceSignature| {
        let verified = verify_agent_service(
            &keys,
            &s.authorization,
            &s.x_ms_date,
            &s.content_hash,
            bytes,
            &policy,
            now,
        )
        .unwrap();
        Principal::from_signature(&verified)
    };

    // Once, untimed: a rewritten frame is read with its new id, accepted,
    // stored, and reads back as the original records.
    let mut requests = Requests::new(frame_bytes.clone());
    let (bytes, id) = requests.next();
    let (bytes, signature) = sign(bytes);
    let principal = verify(&bytes, &signature);
    assert_eq!(principal.tenant(), tenant);
    let decoded = Frame::decode(Bytes::from(bytes.clone()), &FrameLimits::default()).unwrap();
    assert_eq!(decoded.batch_id(), id);
    let report = service.ingest(&principal, &bytes, true);
    assert_eq!(report.answers[0].batch_id, id);
    let again = opsdata::read_back(
        &service.store,
        tenant,
        ObjectKey::for_batch(id),
        &service.ring,
        &FrameLimits::default(),
    )
    .unwrap()
    .expect("stored");
    let mut reader = PayloadReader::new(FrameLimits::default());
    assert_eq!(reader.records(&again).unwrap(), records);
    service
        .store
        .delete(tenant, ObjectKey::for_batch(id))
        .unwrap();
    // The same request again is a duplicate: the reason for fresh ids.
    let dup = service
        .ingest
        .handle_request(
            now,
            &principal,
            &mut service.ring,
            &mut service.entropy,
            &bytes,
        )
        .unwrap();
    assert!(dup.answers[0].duplicate);
    assert!(service.ingest.poll_store().is_none());

    {
        let record_limits = RecordLimits::default();
        let mut g = c.benchmark_group("ingest_1MiB");
        configure(&mut g, content_len);
        g.bench_function("frame_decode", |b| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new(FrameLimits::default());
                decoder.push(black_box(&frame_bytes));
                let Decoded::Frame(frame) = decoder.poll_frame().unwrap() else {
                    panic!("whole frame pushed");
                };
                black_box(reader.records(&frame).unwrap())
            })
        });
        g.bench_function("frame_decode_borrowed_validate", |b| {
            b.iter(|| {
                let mut decoder = FrameDecoder::new(FrameLimits::default());
                decoder.push(black_box(&frame_bytes));
                let Decoded::Frame(frame) = decoder.poll_frame().unwrap() else {
                    panic!("whole frame pushed");
                };
                let mut ok = true;
                let n = reader
                    .visit_records(&frame, |_, r| ok &= r.validate(&record_limits).is_ok())
                    .unwrap();
                assert!(ok);
                black_box(n)
            })
        });
        g.bench_function("ingest", |b| {
            b.iter_batched_ref(
                || requests.next().0,
                |bytes| service.ingest(&principal, black_box(bytes), false),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("verify_and_ingest", |b| {
            b.iter_batched_ref(
                || sign(requests.next().0),
                |(bytes, signature)| {
                    let principal = verify(black_box(bytes), signature);
                    service.ingest(&principal, bytes, false)
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }

    // The same three cases alternated call by call, so that each sees the
    // same machine: on a shared machine the ratios of these medians are
    // steadier than those of criterion's cases, run one after the other.
    // Only under `cargo bench` (criterion passes `--bench`), not in the
    // test-mode run of the benches.
    if std::env::args().any(|a| a == "--bench") {
        let rounds = 300;
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            let bytes = requests.next().0;
            let t = wall_clock();
            let mut decoder = FrameDecoder::new(FrameLimits::default());
            decoder.push(black_box(&frame_bytes));
            let Decoded::Frame(frame) = decoder.poll_frame().unwrap() else {
                panic!("whole frame pushed");
            };
            black_box(reader.records(&frame).unwrap());
            times[0].push(t.elapsed());
            let t = wall_clock();
            let mut decoder = FrameDecoder::new(FrameLimits::default());
            decoder.push(black_box(&frame_bytes));
            let Decoded::Frame(frame) = decoder.poll_frame().unwrap() else {
                panic!("whole frame pushed");
            };
            let mut ok = true;
            let limits = RecordLimits::default();
            black_box(
                reader
                    .visit_records(&frame, |_, r| ok &= r.validate(&limits).is_ok())
                    .unwrap(),
            );
            assert!(ok);
            times[1].push(t.elapsed());
            let t = wall_clock();
            let _report = black_box(service.ingest(&principal, black_box(&bytes), false));
            times[2].push(t.elapsed());
        }
        let median = |v: &mut Vec<std::time::Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1e3
        };
        let [owned, borrowed, ingest] = times.each_mut().map(median);
        eprintln!(
            "interleaved, {rounds} rounds, medians: frame_decode {owned:.3} ms, \
             frame_decode_borrowed_validate {borrowed:.3} ms ({:.2}x), ingest {ingest:.3} ms ({:.2}x)",
            owned / borrowed,
            owned / ingest
        );
    }

    // The steps ingest adds to decoding, each alone.
    {
        let mut g = c.benchmark_group("ingest_parts_1MiB");
        configure(&mut g, content_len);
        let limits = RecordLimits::default();
        g.bench_function("validate", |b| {
            b.iter(|| {
                for r in black_box(&records) {
                    r.validate(&limits).unwrap();
                }
            })
        });
        g.bench_function("seal", |b| {
            b.iter(|| {
                black_box(
                    seal(
                        black_box(&decoded),
                        &mut service.ring,
                        &mut service.entropy,
                        now,
                    )
                    .unwrap(),
                )
            })
        });
        g.bench_function("verify_agent_service", |b| {
            b.iter(|| black_box(verify(black_box(&bytes), &signature)))
        });
        let sealed = seal(&decoded, &mut service.ring, &mut service.entropy, now).unwrap();
        let op_frame = StoreOp::Put {
            tenant,
            object: ObjectKey::for_batch(id),
            frame: sealed,
        };
        g.bench_function("store_put_delete", |b| {
            b.iter(|| {
                apply_store_op(&mut service.store, black_box(&op_frame)).unwrap();
                service
                    .store
                    .delete(tenant, ObjectKey::for_batch(id))
                    .unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
