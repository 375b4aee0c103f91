//! FileSpool recovery after damage: a byte flipped at every position of a
//! segment of frames, removal markers and move records loses exactly the
//! frame it hit (nothing for a marker, a move record or the segment
//! header), never accepts bytes that fail a check, and reports it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{batch_id, frame, t0, tenant};
use opsdata::{BatchId, DataType, Frame, FrameEncoder, FrameLimits, Spool, TenantBatch};
use opsdata_io::{FileSpool, MARKER_MAGIC, MOVE_MAGIC, SpoolConfig};

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("spool-damage-{name}"));
    let _ = fs::remove_dir_all(&d);
    d
}

/// Small segments: 1 KiB bodies, 1.5 KiB segments.
fn config() -> SpoolConfig {
    let limits = FrameLimits::default().with_max_body(1 << 10).unwrap();
    SpoolConfig::new(1 << 30)
        .unwrap()
        .with_frame_limits(limits)
        .unwrap()
        .with_segment_bytes(1536)
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn segments(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// What an entry of the subject segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    Marker,
    Move(u64),
    Frame(u64),
}

/// The layout of a segment: `(start, end, part)` for every entry, found
/// by walking it with the frames it is known to hold.
fn layout(bytes: &[u8], frames: &BTreeMap<u64, Frame>) -> Vec<(usize, usize, Part)> {
    let mut out = vec![(0, 20, Part::Header)];
    let mut at = 20;
    let frame_at = |at: usize| {
        frames
            .iter()
            .find(|(_, f)| bytes[at..].starts_with(f.as_bytes()))
            .map(|(s, f)| (*s, f.len()))
            .expect("a known frame")
    };
    while at < bytes.len() {
        let magic = &bytes[at..at + 4];
        if magic == MARKER_MAGIC {
            out.push((at, at + 24, Part::Marker));
            at += 24;
        } else if magic == MOVE_MAGIC {
            let (seq, len) = frame_at(at + 24);
            out.push((at, at + 24, Part::Move(seq)));
            out.push((at + 24, at + 24 + len, Part::Frame(seq)));
            at += 24 + len;
        } else {
            let (seq, len) = frame_at(at);
            out.push((at, at + len, Part::Frame(seq)));
            at += len;
        }
    }
    out
}

/// A small frame (no records) numbered `n` by its batch id.
fn tiny(n: u64) -> Frame {
    let batch = TenantBatch::from_records(tenant(), DataType::Event, std::iter::empty()).unwrap();
    FrameEncoder::new()
        .encode_frame(&batch, batch_id(n), t0())
        .unwrap()
}

/// Every frame the spool loads, with its number, checked to be byte for
/// byte one of `frames`.
fn loaded(spool: &mut FileSpool, frames: &BTreeMap<u64, Frame>) -> Vec<u64> {
    let mut out = Vec::new();
    spool
        .load(&mut |b| {
            let f = Frame::decode(b.clone(), &FrameLimits::default()).unwrap();
            let (seq, want) = frames
                .iter()
                .find(|(_, w)| w.batch_id() == f.batch_id())
                .expect("a known batch id");
            assert_eq!(want.as_bytes(), &b, "frame {seq} loaded altered");
            out.push(*seq);
        })
        .unwrap();
    out
}

/// A spool whose first segment holds plain frames, frames behind move
/// records, removal markers (live frames, dead frames), and is followed
/// by another segment. Returns the directory, the frames, and the live
/// sequence numbers in order.
fn build(d: &Path) -> (BTreeMap<u64, Frame>, Vec<u64>) {
    let frames: BTreeMap<u64, Frame> = (0..100).map(|n| (n, tiny(n))).collect();
    let id = |n: u64| frames[&n].batch_id();
    // Frames 0..6 in a first segment, 2 removed; then a byte of frame 5
    // damaged: recovery moves the live ones (0, 1, 3, 4, 6) behind move
    // records into a new segment, with frame 2's marker.
    {
        let (mut spool, _) = FileSpool::open(d, config()).unwrap();
        for n in 0..7 {
            spool.persist(id(n), &frames[&n]).unwrap();
        }
        spool.remove(id(2)).unwrap();
    }
    let seg = segments(d).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes
        .windows(frames[&5].len())
        .position(|w| w == frames[&5].as_bytes().as_ref())
        .unwrap();
    bytes[at + 40] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let (mut spool, rec) = FileSpool::open(d, config()).unwrap();
    assert_eq!(rec.moved_aside.len(), 1);
    for p in fs::read_dir(d).unwrap() {
        let p = p.unwrap().path();
        if p.to_string_lossy().ends_with(".corrupt") {
            fs::remove_file(p).unwrap();
        }
    }
    // More frames and removals in the same (new) segment: a removed moved
    // frame (1) and a removed plain one (8).
    for n in 7..10 {
        spool.persist(id(n), &frames[&n]).unwrap();
    }
    spool.remove(id(1)).unwrap();
    spool.remove(id(8)).unwrap();
    let first = spool.segments();
    let mut n = 10;
    while spool.segments() == first {
        spool.persist(id(n), &frames[&n]).unwrap();
        n += 1;
    }
    let live = loaded(&mut spool, &frames);
    (frames, live)
}

#[test]
fn flipped_byte_mid_segment_loses_only_the_frame_it_hit() {
    let src = dir("flip-src");
    let (frames, live) = build(&src);
    let subject = segments(&src)[0].clone();
    let name = subject.file_name().unwrap().to_owned();
    let pristine = fs::read(&subject).unwrap();
    let parts = layout(&pristine, &frames);
    let kinds: Vec<Part> = parts.iter().map(|p| p.2).collect();
    assert!(
        kinds.iter().any(|k| matches!(k, Part::Move(_))),
        "{kinds:?}"
    );
    assert!(kinds.iter().filter(|k| **k == Part::Marker).count() >= 6);
    let work = dir("flip");
    let mut checked = 0;
    for pos in 0..pristine.len() {
        copy_dir(&src, &work);
        let mut bytes = pristine.clone();
        bytes[pos] ^= 0x10;
        fs::write(work.join(&name), &bytes).unwrap();
        let (start, end, part) = *parts
            .iter()
            .find(|(s, e, _)| (*s..*e).contains(&pos))
            .unwrap();
        let (mut spool, rec) = FileSpool::open(&work, config()).unwrap();
        let got = loaded(&mut spool, &frames);
        let lost: Vec<u64> = live.iter().copied().filter(|s| !got.contains(s)).collect();
        let extra: Vec<u64> = got.iter().copied().filter(|s| !live.contains(s)).collect();
        let ctx = format!("byte {pos} in {part:?} at {start}..{end}");
        assert!(extra.is_empty(), "{ctx}: came back: {extra:?}");
        assert_eq!(rec.torn_bytes, 0, "{ctx}");
        assert_eq!(rec.moved_aside.len(), 1, "{ctx}: reported");
        assert!(rec.bytes_skipped > 0, "{ctx}");
        match part {
            Part::Frame(seq) if live.contains(&seq) => {
                assert_eq!(lost, vec![seq], "{ctx}");
                // A frame behind a move record is skipped with it.
                let moved = parts.iter().any(|p| p.1 == start && p.2 == Part::Move(seq));
                let entry = end - start + if moved { 24 } else { 0 };
                assert_eq!(rec.bytes_skipped, entry as u64, "{ctx}");
                // Damage after the header CRC: the header names the frame.
                if pos >= start + 68 {
                    let f = &frames[&seq];
                    let named: Vec<&opsdata_io::DamagedFrame> = rec
                        .damaged_frames
                        .iter()
                        .filter(|d| d.batch_id == f.batch_id())
                        .collect();
                    assert_eq!(named.len(), 1, "{ctx}");
                    assert!(named[0].lost, "{ctx}");
                    assert_eq!(
                        (named[0].tenant, named[0].data_type),
                        (f.tenant(), f.data_type()),
                        "{ctx}"
                    );
                }
            }
            Part::Frame(seq) => {
                // A removed frame: nothing lost, and reported not lost.
                assert!(lost.is_empty(), "{ctx}: {lost:?}");
                assert!(
                    rec.damaged_frames.iter().all(|d| !d.lost),
                    "{ctx}: {seq} was removed"
                );
            }
            Part::Move(_) | Part::Marker | Part::Header => {
                assert!(lost.is_empty(), "{ctx}: {lost:?}");
            }
        }
        checked += 1;
        drop(spool);
        if pos % 4 != 0 {
            continue;
        }
        // The repaired spool opens clean and holds the same.
        let (mut spool, rec) = FileSpool::open(&work, config()).unwrap();
        assert!(rec.moved_aside.is_empty(), "{ctx}");
        let again = loaded(&mut spool, &frames);
        let mut a = again.clone();
        let mut g = got.clone();
        a.sort_unstable();
        g.sort_unstable();
        assert_eq!(a, g, "{ctx}");
    }
    assert_eq!(checked, pristine.len());
}

#[test]
fn a_removal_is_written_twice_so_one_damaged_copy_removes_still() {
    let d = dir("twice");
    let f = frame(1, 1, 0);
    let g = frame(2, 1, 0);
    {
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        spool.persist(f.batch_id(), &f).unwrap();
        spool.remove(f.batch_id()).unwrap();
        spool.persist(g.batch_id(), &g).unwrap();
    }
    let seg = segments(&d).pop().unwrap();
    let bytes = fs::read(&seg).unwrap();
    let marker: Vec<usize> = bytes
        .windows(20)
        .enumerate()
        .filter(|(_, w)| w[..4] == MARKER_MAGIC && w[4..] == *f.batch_id().as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(marker.len(), 2, "two copies");
    assert_eq!(marker[1], marker[0] + 24, "back to back");
    for copy in marker {
        let work = dir("twice-work");
        copy_dir(&d, &work);
        let mut damaged = bytes.clone();
        damaged[copy + 10] ^= 0xff;
        fs::write(work.join(seg.file_name().unwrap()), &damaged).unwrap();
        let (mut spool, rec) = FileSpool::open(&work, config()).unwrap();
        assert_eq!(rec.bytes_skipped, 24);
        let mut got = Vec::new();
        spool.load(&mut |b| got.push(b)).unwrap();
        assert_eq!(got, vec![g.as_bytes().clone()], "f stays removed");
    }
}

#[test]
fn garbage_between_entries_is_skipped_and_what_follows_is_kept() {
    // Bytes that look like entries but fail their checks: frame and marker
    // magics with garbage after them, every few bytes.
    let d = dir("garbage");
    let frames: Vec<Frame> = (0..3).map(|n| frame(n, 1, 10)).collect();
    let ids: Vec<BatchId> = frames.iter().map(|f| f.batch_id()).collect();
    {
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        spool.persist(ids[0], &frames[0]).unwrap();
    }
    let seg = segments(&d).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let mut junk = Vec::new();
    for i in 0..500u32 {
        junk.extend_from_slice(&[0x89, b'O', b'P', if i % 2 == 0 { b'S' } else { b'R' }]);
        junk.extend_from_slice(&i.to_be_bytes());
    }
    bytes.extend_from_slice(&junk);
    bytes.extend_from_slice(frames[1].as_bytes());
    bytes.extend_from_slice(frames[2].as_bytes());
    fs::write(&seg, &bytes).unwrap();
    let (mut spool, rec) = FileSpool::open(&d, config()).unwrap();
    assert_eq!(rec.bytes_skipped, junk.len() as u64);
    assert_eq!(rec.moved_aside.len(), 1);
    let mut got = Vec::new();
    spool.load(&mut |b| got.push(b)).unwrap();
    let want: Vec<_> = frames.iter().map(|f| f.as_bytes().clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn damage_in_several_segments_loses_only_the_frames_hit() {
    let d = dir("several");
    let frames: BTreeMap<u64, Frame> = (0..60).map(|n| (n, tiny(n))).collect();
    {
        let (mut spool, _) = FileSpool::open(&d, config()).unwrap();
        for f in frames.values() {
            spool.persist(f.batch_id(), f).unwrap();
        }
        assert!(spool.segments() >= 3);
    }
    let segs = segments(&d);
    // One frame hit in the middle of each of the first three segments.
    let mut hit = Vec::new();
    for seg in &segs[..3] {
        let mut bytes = fs::read(seg).unwrap();
        let parts = layout(&bytes, &frames);
        let (start, _, part) = parts[parts.len() / 2];
        let Part::Frame(seq) = part else {
            panic!("{part:?}")
        };
        bytes[start + 70] ^= 0x08;
        fs::write(seg, &bytes).unwrap();
        hit.push(seq);
    }
    let (mut spool, rec) = FileSpool::open(&d, config()).unwrap();
    assert_eq!(rec.moved_aside.len(), 3);
    let mut named: Vec<u64> = rec
        .damaged_frames
        .iter()
        .map(|f| {
            assert!(f.lost);
            *frames
                .iter()
                .find(|(_, w)| w.batch_id() == f.batch_id)
                .unwrap()
                .0
        })
        .collect();
    named.sort_unstable();
    let mut want_hit = hit.clone();
    want_hit.sort_unstable();
    assert_eq!(named, want_hit);
    let got = loaded(&mut spool, &frames);
    let want: Vec<u64> = (0..60).filter(|n| !hit.contains(n)).collect();
    assert_eq!(got, want, "every other frame, in order");
}

/// Found by the `spool_recovery` fuzz target: an empty last segment (a
/// crash between creating a segment file and writing its header) was kept
/// at length 0, so the next frame was appended where the header belongs,
/// and the reopen after it took the frame for a bad header and lost it.
#[test]
fn empty_last_segment_loses_next_frame() {
    let d = dir("empty-last-segment");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join("seg-0000000000000000.log"), b"").unwrap();
    let (mut spool, found) = FileSpool::open(&d, config()).unwrap();
    assert_eq!((found.frames, found.torn_bytes), (0, 0));
    let f = tiny(1);
    spool.persist(f.batch_id(), &f).unwrap();
    drop(spool);
    let (mut spool, found) = FileSpool::open(&d, config()).unwrap();
    assert!(found.moved_aside.is_empty(), "{found:?}");
    assert_eq!((found.frames, found.bytes_skipped), (1, 0));
    let mut loaded = Vec::new();
    spool.load(&mut |b| loaded.push(b)).unwrap();
    assert_eq!(loaded, vec![f.as_bytes().clone()]);
}
