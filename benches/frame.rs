//! Frame encode and decode throughput for 1 MiB batches of Performance
//! records, side by side with the raw parts on the same bytes, all in MB/s
//! of the uncompressed JSON Lines payload.
//!
//! - `frame_encode_1MiB`: `serialize` (records to JSON Lines), `compress_l1`
//!   (raw DEFLATE level 1 of that payload) and `frame_encode`
//!   ([`FrameEncoder::encode`]: validate, serialize, compress, header, CRCs).
//! - `frame_decode_1MiB`: the raw parts `inflate` (raw inflate of the
//!   level-1 body), `parse` (`Record::from_json` of each line, collected
//!   into a `Vec`), `parse_borrowed` (`RecordRef::from_json` of each line)
//!   and `parse_borrowed_validate` (the same, each record validated); then
//!   the framed paths, each from [`FrameDecoder`] push + poll:
//!   `frame_decode` ([`PayloadReader::records`], owned),
//!   `frame_decode_validate` (the same, then each record validated),
//!   `frame_decode_borrowed` ([`PayloadReader::visit_records`]) and
//!   `frame_decode_borrowed_validate` (validating each record as it is
//!   visited: what [`opsdata::Ingest`] does).
//! - Then, under `cargo bench` only: serialize, compress, encode, inflate,
//!   parse, owned decode and borrowed decode + validate alternated call by
//!   call for 300 rounds; medians and ratios printed to stderr.
//! - `deflate_levels_1MiB`: raw DEFLATE alone at levels 1, 3, 6 and 9; the
//!   compressed size and ratio of each level are printed once to stderr.
//!
//! The goals: framing adds at most 10 % to serialize + compress (encode) and
//! to inflate + parse (decode); borrowed decode + validate is at least 1.4
//! times as fast as owned `frame_decode` in the same run.
//!
//! `cargo bench --bench frame`

use std::hint::black_box;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use opsdata::{
    BatchId, DataType, Decoded, Frame, FrameDecoder, FrameEncoder, FrameLimits, PayloadReader,
    Record, RecordLimits, RecordRef,
};
mod common;
use common::{configure, performance_batch, performance_records};

/// The frame out of a fresh decoder, as a service reads it.
fn decode(bytes: &[u8]) -> Frame {
    let mut decoder = FrameDecoder::new(FrameLimits::default());
    decoder.push(black_box(bytes));
    let Decoded::Frame(frame) = decoder.poll_frame().unwrap() else {
        panic!("whole frame pushed");
    };
    frame
}

/// The wall clock, for the interleaved measurement (a bench measures wall
/// time; the library itself never reads a clock).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Raw DEFLATE of `data` into `out` (cleared first), reusing `c`.
fn deflate_into(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    c.reset();
    out.clear();
    out.reserve(data.len() + data.len() / 1000 + 64);
    loop {
        let done = usize::try_from(c.total_in()).unwrap();
        let status = c
            .compress_vec(&data[done..], out, FlushCompress::Finish)
            .unwrap();
        if status == Status::StreamEnd {
            return;
        }
        out.reserve(4096);
    }
}

/// Raw inflate of `body` into `out` (cleared first), reusing `d`; `len` is
/// the size of the inflated data.
fn inflate_into(d: &mut Decompress, body: &[u8], len: usize, out: &mut Vec<u8>) {
    d.reset(false);
    out.clear();
    out.reserve(len + 1);
    let status = d
        .decompress_vec(body, out, FlushDecompress::Finish)
        .unwrap();
    assert_eq!(status, Status::StreamEnd);
    assert_eq!(out.len(), len);
}

fn bench_frame(c: &mut Criterion) {
    let (records, payload) = performance_records();
    let (_tenant, batch) = performance_batch(&records);
    let batch_id = BatchId::from_random_bytes([0x5a; 16]);
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 15, 0).unwrap();
    let n = records.len();
    let avg = payload.len() / n;
    eprintln!(
        "frame bench: {n} Performance records, {} payload bytes ({avg} bytes per line)",
        payload.len()
    );

    // The level-1 body and a level-1 frame of the same batch, made once.
    let mut body_l1 = Vec::new();
    deflate_into(
        &mut Compress::new(Compression::new(1), false),
        &payload,
        &mut body_l1,
    );
    let mut frame_bytes = Vec::new();
    let mut encoder = FrameEncoder::new().with_level(1).unwrap();
    let header = encoder
        .encode(&batch, batch_id, now, &mut frame_bytes)
        .unwrap();
    assert_eq!(header.content_len as usize, payload.len());
    assert_eq!(header.record_count as usize, n);
    eprintln!(
        "frame bench: level-1 frame {} bytes (raw level-1 body {} bytes)",
        frame_bytes.len(),
        body_l1.len()
    );

    // Encode.
    {
        let mut g = c.benchmark_group("frame_encode_1MiB");
        configure(&mut g, payload.len());
        let mut out = Vec::with_capacity(payload.len());
        g.bench_function("serialize", |b| {
            b.iter(|| {
                out.clear();
                for r in &records {
                    r.write_json(&mut out);
                    out.push(b'\n');
                }
                black_box(out.len())
            })
        });
        // Empty when a filter skipped the benchmark.
        assert!(
            out.is_empty() || out == payload,
            "serialize wrote other bytes than the payload"
        );
        let mut comp = Compress::new(Compression::new(1), false);
        let mut out = Vec::new();
        g.bench_function("compress_l1", |b| {
            b.iter(|| {
                deflate_into(&mut comp, black_box(&payload), &mut out);
                black_box(out.len())
            })
        });
        let mut out = Vec::new();
        g.bench_function("frame_encode", |b| {
            b.iter(|| {
                out.clear();
                let h = encoder
                    .encode(black_box(&batch), batch_id, now, &mut out)
                    .unwrap();
                black_box(h.body_len)
            })
        });
        g.finish();
    }

    // Decode.
    {
        let limits = RecordLimits::default();
        let mut reader = PayloadReader::new(FrameLimits::default());
        let mut visited = Vec::new();
        reader
            .visit_records(&decode(&frame_bytes), |_, r| visited.push(r.to_owned()))
            .unwrap();
        assert_eq!(visited, records, "the borrowed reader read other records");
        let mut g = c.benchmark_group("frame_decode_1MiB");
        configure(&mut g, payload.len());
        let mut inflater = Decompress::new(false);
        let mut out = Vec::new();
        g.bench_function("inflate", |b| {
            b.iter(|| {
                inflate_into(&mut inflater, black_box(&body_l1), payload.len(), &mut out);
                black_box(out.len())
            })
        });
        g.bench_function("parse", |b| {
            b.iter(|| {
                let mut parsed = Vec::with_capacity(n);
                for line in black_box(&payload[..payload.len() - 1]).split(|&b| b == b'\n') {
                    parsed.push(Record::from_json(DataType::Performance, line).unwrap());
                }
                black_box(parsed)
            })
        });
        g.bench_function("parse_borrowed", |b| {
            b.iter(|| {
                for line in black_box(&payload[..payload.len() - 1]).split(|&b| b == b'\n') {
                    black_box(RecordRef::from_json(DataType::Performance, line).unwrap());
                }
            })
        });
        g.bench_function("parse_borrowed_validate", |b| {
            b.iter(|| {
                for line in black_box(&payload[..payload.len() - 1]).split(|&b| b == b'\n') {
                    let r = RecordRef::from_json(DataType::Performance, line).unwrap();
                    r.validate(&limits).unwrap();
                    black_box(r);
                }
            })
        });
        g.bench_function("frame_decode", |b| {
            b.iter(|| black_box(reader.records(&decode(&frame_bytes)).unwrap()))
        });
        g.bench_function("frame_decode_validate", |b| {
            b.iter(|| {
                let records = reader.records(&decode(&frame_bytes)).unwrap();
                for r in &records {
                    r.validate(&limits).unwrap();
                }
                black_box(records)
            })
        });
        g.bench_function("frame_decode_borrowed", |b| {
            b.iter(|| {
                let frame = decode(&frame_bytes);
                let n = reader
                    .visit_records(&frame, |_, r| {
                        black_box(r);
                    })
                    .unwrap();
                black_box(n)
            })
        });
        g.bench_function("frame_decode_borrowed_validate", |b| {
            b.iter(|| {
                let frame = decode(&frame_bytes);
                let mut ok = true;
                let n = reader
                    .visit_records(&frame, |_, r| ok &= r.validate(&limits).is_ok())
                    .unwrap();
                assert!(ok);
                black_box(n)
            })
        });
        g.finish();
    }

    // The main cases alternated call by call, so that each sees the same
    // machine: on a shared machine the ratios of these medians are steadier
    // than those of criterion's cases, run one after the other. Only under
    // `cargo bench` (criterion passes `--bench`), not in test mode.
    if std::env::args().any(|a| a == "--bench") {
        let rounds = 300;
        let limits = RecordLimits::default();
        let mut comp = Compress::new(Compression::new(1), false);
        let mut inflater = Decompress::new(false);
        let mut reader = PayloadReader::new(FrameLimits::default());
        let (mut ser, mut body, mut framed, mut inflated) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut times: [Vec<f64>; 7] = Default::default();
        let mut time = |i: usize, f: &mut dyn FnMut()| {
            let t = wall_clock();
            f();
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
        };
        for _ in 0..rounds {
            time(0, &mut || {
                ser.clear();
                for r in &records {
                    r.write_json(&mut ser);
                    ser.push(b'\n');
                }
            });
            time(1, &mut || {
                deflate_into(&mut comp, black_box(&payload), &mut body)
            });
            time(2, &mut || {
                framed.clear();
                black_box(encoder.encode(&batch, batch_id, now, &mut framed).unwrap());
            });
            time(3, &mut || {
                inflate_into(
                    &mut inflater,
                    black_box(&body_l1),
                    payload.len(),
                    &mut inflated,
                )
            });
            time(4, &mut || {
                let mut parsed = Vec::with_capacity(n);
                for line in black_box(&payload[..payload.len() - 1]).split(|&b| b == b'\n') {
                    parsed.push(Record::from_json(DataType::Performance, line).unwrap());
                }
                black_box(parsed);
            });
            time(5, &mut || {
                black_box(reader.records(&decode(&frame_bytes)).unwrap());
            });
            time(6, &mut || {
                let mut ok = true;
                let frame = decode(&frame_bytes);
                black_box(
                    reader
                        .visit_records(&frame, |_, r| ok &= r.validate(&limits).is_ok())
                        .unwrap(),
                );
                assert!(ok);
            });
        }
        assert_eq!(ser, payload);
        let [ser, comp, enc, inf, parse, dec, borrowed] = times.map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        });
        eprintln!(
            "interleaved, {rounds} rounds, medians in ms: serialize {ser:.3}, compress_l1 {comp:.3}, \
             frame_encode {enc:.3} (serialize + compress / encode = {:.2}); inflate {inf:.3}, \
             parse {parse:.3}, frame_decode {dec:.3} (inflate + parse / decode = {:.2}), \
             frame_decode_borrowed_validate {borrowed:.3} ({:.2}x frame_decode)",
            (ser + comp) / enc,
            (inf + parse) / dec,
            dec / borrowed
        );
    }

    // DEFLATE levels.
    {
        let mut g = c.benchmark_group("deflate_levels_1MiB");
        configure(&mut g, payload.len());
        let mut out = Vec::new();
        for level in [1, 3, 6, 9] {
            let mut comp = Compress::new(Compression::new(level), false);
            deflate_into(&mut comp, &payload, &mut out);
            eprintln!(
                "deflate level {level}: {} -> {} bytes, ratio {:.2}:1 ({:.1} % of the payload)",
                payload.len(),
                out.len(),
                payload.len() as f64 / out.len() as f64,
                100.0 * out.len() as f64 / payload.len() as f64
            );
            g.bench_function(format!("level_{level}"), |b| {
                b.iter(|| {
                    deflate_into(&mut comp, black_box(&payload), &mut out);
                    black_box(out.len())
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_frame);
criterion_main!(benches);
