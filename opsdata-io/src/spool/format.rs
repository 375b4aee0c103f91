//! The on-disk records of the spool: magics, lengths, names, CRCs
//! (`docs/SPOOL.md`).

use super::*;

/// Magic of a segment file's header: `89 4F 50 47` (`\x89OPG`).
pub const SEGMENT_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'G'];
/// Magic of a removal marker: `89 4F 50 52` (`\x89OPR`).
pub const MARKER_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'R'];
/// Magic of a move record: `89 4F 50 4D` (`\x89OPM`).
pub const MOVE_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'M'];
/// Magic of the checkpoint file: `89 4F 50 4B` (`\x89OPK`).
pub const CHECKPOINT_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'K'];
/// Length of a segment header: magic, version, 3 reserved, segment number,
/// CRC-32.
pub const SEGMENT_HEADER_LEN: u64 = 20;
/// Length of a removal marker: magic, batch id, CRC-32.
pub const MARKER_LEN: u64 = 24;
/// Length of a move record: magic, original segment, original offset,
/// CRC-32.
pub const MOVE_LEN: u64 = 24;
/// Length of the checkpoint file: magic, version, 3 reserved, first
/// segment, CRC-32.
pub const CHECKPOINT_LEN: u64 = 20;

pub(super) const FORMAT_VERSION: u8 = 1;
pub(super) const CHECKPOINT_NAME: &str = "CHECKPOINT";
pub(super) const CHECKPOINT_TMP: &str = "CHECKPOINT.tmp";
pub(super) const LOCK_NAME: &str = "LOCK";
pub(super) const CORRUPT_SUFFIX: &str = ".corrupt";
/// Bytes a removal appends: its marker, twice.
pub(super) const REMOVAL_LEN: u64 = 2 * MARKER_LEN;
/// Room kept for each live frame's eventual removal (two markers), and the
/// segment header of a roll it might cause.
pub(super) const MARKER_RESERVE: u64 = REMOVAL_LEN + SEGMENT_HEADER_LEN;
/// A persist of `len` bytes may copy `COMPACTION_FACTOR · (len + 88)` bytes
/// of entries to compact (`docs/SPOOL.md`).
pub(super) const COMPACTION_FACTOR: u64 = 4;

pub(super) fn segment_name(seg: u64) -> String {
    format!("seg-{seg:016x}.log")
}

/// The segment number of a segment file's name: `seg-`, 16 lower-case hex
/// digits, `.log`. Any other name (upper-case digits included) is not a
/// segment, and is ignored as the format says.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(super) fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// Magic, version, three reserved bytes, a u64, CRC: the layout of segment
/// headers and checkpoints.
pub(super) fn versioned_record(magic: [u8; 4], value: u64) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&magic);
    b[4] = FORMAT_VERSION;
    b[8..16].copy_from_slice(&value.to_be_bytes());
    let c = crc(&b[..16]);
    b[16..].copy_from_slice(&c.to_be_bytes());
    b
}

pub(super) fn parse_versioned_record(magic: [u8; 4], b: &[u8; 20]) -> Option<u64> {
    (b[..4] == magic
        && b[4] == FORMAT_VERSION
        && b[5..8] == [0, 0, 0]
        && u32_at(b, 16) == crc(&b[..16]))
    .then(|| u64_at(b, 8))
}

pub(super) fn marker_record(batch_id: BatchId) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&MARKER_MAGIC);
    b[4..20].copy_from_slice(batch_id.as_bytes());
    let c = crc(&b[..20]);
    b[20..].copy_from_slice(&c.to_be_bytes());
    b
}

/// A removal as written: the marker twice, back to back, so that damage
/// confined to one copy leaves the other (`docs/SPOOL.md`).
pub(super) fn marker_pair(batch_id: BatchId) -> [u8; 48] {
    let m = marker_record(batch_id);
    let mut b = [0u8; 48];
    b[..24].copy_from_slice(&m);
    b[24..].copy_from_slice(&m);
    b
}

pub(super) fn move_record(key: (u64, u64)) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&MOVE_MAGIC);
    b[4..12].copy_from_slice(&key.0.to_be_bytes());
    b[12..20].copy_from_slice(&key.1.to_be_bytes());
    let c = crc(&b[..20]);
    b[20..].copy_from_slice(&c.to_be_bytes());
    b
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> Result<(), SpoolError> {
    // Directories cannot be opened for syncing here; renames and creations
    // are made durable by the file system's own journal, if any.
    Ok(())
}
