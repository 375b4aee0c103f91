//! Sealing and opening throughput for a 1 MiB frame, side by side with bare
//! ring AES-256-GCM over the same bytes, all in MB/s of body bytes (the
//! payload after the codec, here codec None).
//!
//! - `seal_1MiB`: `aes_gcm` (`LessSafeKey::seal_in_place_separate_tag` on a
//!   body-sized buffer, in place), `copy_aes_gcm` (the same after copying
//!   the body into a fresh buffer, the least any seal that leaves its input
//!   alone must do) and `seal` ([`opsdata::seal`]: data key, wrap, header,
//!   copy, encrypt, CRCs).
//! - `open_1MiB`: `aes_gcm` (`open_in_place` on a fresh copy of the sealed
//!   body, the copy made outside the timing), `copy_aes_gcm` (the copy
//!   timed too) and `open` ([`opsdata::open`]: unwrap, copy, decrypt, CRCs).
//! - `crc32_1MiB`: `crc32fast::hash` of the body alone, the pass each of
//!   seal and open adds after the cipher.
//! - `keys_per_frame`: `rewrap` of the 1 MiB frame and of an empty frame
//!   (key 1 to key 2), and `peek` (the key-free header read).
//!
//! The goal: seal and open within 5 % of bare AES-256-GCM.
//!
//! `cargo bench --bench keys`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use opsdata::{
    BatchId, Codec, DataType, DeterministicEntropy, Frame, FrameEncoder, FrameLimits, KeyRing,
    Performance, Record, RotationPolicy, Tagged, TenantBatch, TenantId, open, peek, rewrap, seal,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use uuid::Uuid;

/// The body stays just below this many bytes.
const TARGET: usize = 1 << 20;
/// Fixed header (64), seal section (68) and header CRC (4).
const SEALED_PREFIX: usize = 136;

/// A batch of Performance records whose JSON Lines payload is just below
/// [`TARGET`].
fn performance_batch(tenant: TenantId) -> TenantBatch {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let counters = ["% Processor Time", "Available MBytes", "Disk Reads/sec"];
    let mut batch = TenantBatch::new(tenant, DataType::Performance);
    let mut len = 0;
    let mut line = Vec::new();
    for i in 0u32.. {
        let sampled = t0 + chrono::Duration::milliseconds(i64::from(i) * 250);
        let record = Record::from(Performance {
            object_name: "Processor".into(),
            counter_name: counters[i as usize % counters.len()].into(),
            perfmon_instance_name: format!("{}", i % 8),
            performance_data_id: Uuid::from_u128(
                0x0193_5a1e_7c00_7000_8000_0000_0000_0000 | u128::from(i),
            ),
            performance_source_internal_id: 1000 + (i % 37) as i32,
            sample_value: f64::from(i.wrapping_mul(2_654_435_761) % 100_000) / 977.0,
            time_sampled: sampled,
            time_added: sampled + chrono::Duration::milliseconds(1500),
        });
        line.clear();
        record.write_json(&mut line);
        if len + line.len() + 1 >= TARGET {
            break;
        }
        len += line.len() + 1;
        batch.push(Tagged::new(tenant, record)).unwrap();
    }
    batch
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: usize) {
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Bytes(bytes as u64));
}

fn bench_keys(c: &mut Criterion) {
    let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 15, 0).unwrap();
    let mut encoder = FrameEncoder::new().with_codec(Codec::None);
    let frame = encoder
        .encode_frame(
            &performance_batch(tenant),
            BatchId::from_random_bytes([0x5a; 16]),
            now,
        )
        .unwrap();
    let empty = encoder
        .encode_frame(
            &TenantBatch::new(tenant, DataType::Alert),
            BatchId::from_random_bytes([0x5b; 16]),
            now,
        )
        .unwrap();
    let body = frame.body().to_vec();
    let n = body.len();
    eprintln!("keys bench: {n} body bytes, frame {} bytes", frame.len());

    // Keys 1 (primary) and 2 (pending) of the tenant.
    let mut entropy = DeterministicEntropy::from_u64(7);
    let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
    let k1 = ring.generate(&mut entropy, now).unwrap();
    let k2 = ring.generate(&mut entropy, now).unwrap();
    ring.promote(k1, now).unwrap();
    let sealed = seal(&frame, &mut ring, &mut entropy, now).unwrap();
    let sealed_empty = seal(&empty, &mut ring, &mut entropy, now).unwrap();
    assert_eq!(open(&sealed, &ring).unwrap(), frame);
    assert_eq!(sealed.body().len(), n + 16);

    // The bare cipher: a key of its own, the same bytes.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
    let aad = [0x17u8; 64];
    let nonce = || Nonce::assume_unique_for_key([0; NONCE_LEN]);
    let mut cipher = body.clone();
    let tag = key
        .seal_in_place_separate_tag(nonce(), Aad::from(&aad), &mut cipher)
        .unwrap();
    cipher.extend_from_slice(tag.as_ref());

    {
        let mut g = c.benchmark_group("seal_1MiB");
        configure(&mut g, n);
        let mut buf = body.clone();
        g.bench_function("aes_gcm", |b| {
            b.iter(|| {
                // Encrypts the previous ciphertext: the same work each time.
                let tag = key
                    .seal_in_place_separate_tag(nonce(), Aad::from(&aad), black_box(&mut buf))
                    .unwrap();
                black_box(tag)
            })
        });
        g.bench_function("copy_aes_gcm", |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(n + 16);
                out.extend_from_slice(black_box(&body));
                let tag = key
                    .seal_in_place_separate_tag(nonce(), Aad::from(&aad), &mut out)
                    .unwrap();
                out.extend_from_slice(tag.as_ref());
                black_box(out)
            })
        });
        g.bench_function("seal", |b| {
            b.iter(|| black_box(seal(black_box(&frame), &mut ring, &mut entropy, now).unwrap()))
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("open_1MiB");
        configure(&mut g, n);
        g.bench_function("aes_gcm", |b| {
            b.iter_batched_ref(
                || cipher.clone(),
                |buf| {
                    let plain = key
                        .open_in_place(nonce(), Aad::from(&aad), black_box(buf))
                        .unwrap();
                    black_box(plain.len())
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_function("copy_aes_gcm", |b| {
            b.iter(|| {
                let mut out = black_box(&cipher).clone();
                let plain = key
                    .open_in_place(nonce(), Aad::from(&aad), &mut out)
                    .unwrap();
                black_box(plain.len());
                black_box(out)
            })
        });
        g.bench_function("open", |b| {
            b.iter(|| black_box(open(black_box(&sealed), &ring).unwrap()))
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("crc32_1MiB");
        configure(&mut g, n);
        g.bench_function("crc32", |b| {
            b.iter(|| black_box(crc32fast::hash(black_box(&body))))
        });
        g.finish();
    }

    {
        let mut g = c.benchmark_group("keys_per_frame");
        g.sample_size(50);
        g.measurement_time(Duration::from_secs(2));
        g.warm_up_time(Duration::from_millis(500));
        // Key 2 becomes the primary, so each rewrap really rewraps 1 -> 2.
        ring.promote(k2, now).unwrap();
        for (name, f) in [("rewrap_1MiB", &sealed), ("rewrap_empty", &sealed_empty)] {
            let moved = rewrap(f, &mut ring, &mut entropy, now).unwrap();
            assert_eq!(
                moved.as_bytes()[SEALED_PREFIX..],
                f.as_bytes()[SEALED_PREFIX..]
            );
            g.bench_function(name, |b| {
                b.iter(|| black_box(rewrap(black_box(f), &mut ring, &mut entropy, now).unwrap()))
            });
        }
        let header = sealed.as_bytes().slice(..SEALED_PREFIX);
        assert_eq!(peek(&header).unwrap().kek_id, Some(k1));
        g.bench_function("peek", |b| {
            b.iter(|| black_box(peek(black_box(&header)).unwrap()))
        });
        g.finish();
    }

    // The sealed frame re-reads under the default limits.
    let again = Frame::decode(Bytes::clone(sealed.as_bytes()), &FrameLimits::default()).unwrap();
    assert_eq!(again, sealed);
}

criterion_group!(benches, bench_keys);
criterion_main!(benches);
