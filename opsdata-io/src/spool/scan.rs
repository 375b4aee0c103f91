//! Reading a segment one entry at a time, and finding the next intact
//! entry after damage.

use super::*;

/// One entry read by the scanner.
pub(super) enum Entry {
    Frame {
        offset: u64,
        frame_len: u64,
        entry_len: u64,
        batch_id: BatchId,
        moved_from: Option<(u64, u64)>,
        /// The tenant, and the key id of a sealed frame.
        tenant: opsdata::TenantId,
        kek: Option<opsdata::KeyId>,
    },
    Marker {
        batch_id: BatchId,
    },
}

/// Why a scan stopped before the end of its file.
pub(super) enum Stop {
    /// The file ends inside the entry.
    Incomplete,
    /// The entry is whole but bad.
    Bad(Corruption),
    /// A frame whose header passed its CRC (so its fields and length can be
    /// trusted) but whose body failed: `len` is the whole entry's length
    /// (its move record included), read to its end.
    BadBody {
        reason: Corruption,
        frame: Readable,
        len: u64,
    },
}

/// What a damaged frame's intact header says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Readable {
    pub(super) batch_id: BatchId,
    pub(super) tenant: opsdata::TenantId,
    pub(super) data_type: opsdata::DataType,
    pub(super) records: u32,
    pub(super) frame_len: u64,
}

/// Reads a segment one entry at a time.
pub(super) struct Scanner {
    pub(super) reader: BufReader<File>,
    pub(super) pos: u64,
    pub(super) file_len: u64,
    pub(super) max_frame_len: u64,
    pub(super) limits: FrameLimits,
    /// Test hook: bytes read so far.
    #[cfg(test)]
    pub(super) bytes_read: u64,
}

impl Scanner {
    pub(super) fn remaining(&self) -> u64 {
        self.file_len - self.pos
    }

    pub(super) fn read(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_exact(buf)?;
        self.pos += buf.len() as u64;
        #[cfg(test)]
        {
            self.bytes_read += buf.len() as u64;
        }
        Ok(())
    }

    /// Whether every byte from here to the end of the file is zero (what a
    /// crash leaves when the file grew before its data was written).
    pub(super) fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 8 << 10];
        while self.remaining() > 0 {
            let n = usize::try_from(self.remaining()).map_or(buf.len(), |r| r.min(buf.len()));
            self.read(&mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves to `pos` (within the file), keeping the read buffer when it
    /// can.
    pub(super) fn seek_to(&mut self, pos: u64) -> io::Result<()> {
        let delta = i64::try_from(pos).unwrap_or(i64::MAX) - i64::try_from(self.pos).unwrap_or(0);
        self.reader.seek_relative(delta)?;
        self.pos = pos;
        Ok(())
    }

    /// Finds the first position at or after `from` where a whole entry
    /// passes every check, and reads it: `Ok(None)` if there is none before
    /// the end of the file. Frames whose header passes its CRC but whose
    /// body fails are handed to `damaged` and skipped whole (their header
    /// CRC vouches for their length).
    ///
    /// Work: at each position at most the 4 magic bytes, and for a magic
    /// the record (24 bytes) or a frame's prefix (at most 136 + 4 bytes,
    /// and a frame's after a move record); a body is read only after its
    /// header CRC holds, and the search then goes on after that body,
    /// whatever it held. So the bytes read are at most about 170 times
    /// the bytes searched, never more: no position is searched twice.
    pub(super) fn resync(
        &mut self,
        from: u64,
        damaged: &mut dyn FnMut(u64, Readable),
    ) -> io::Result<Option<(u64, Entry)>> {
        let mut p = from;
        while p + 4 <= self.file_len {
            self.seek_to(p)?;
            let mut first = [0u8; 1];
            self.read(&mut first)?;
            if first[0] != 0x89 {
                p += 1;
                continue;
            }
            self.seek_to(p)?;
            match self.next()? {
                Ok(Some(entry)) => return Ok(Some((p, entry))),
                Ok(None) => return Ok(None),
                Err(Stop::BadBody { frame, len, .. }) => {
                    damaged(p, frame);
                    p += len;
                }
                Err(_) => p += 1,
            }
        }
        self.seek_to(self.file_len)?;
        Ok(None)
    }

    /// The next entry; `Ok(None)` at the end of the file. On a `Stop`, the
    /// entry started at the position before the call.
    pub(super) fn next(&mut self) -> io::Result<Result<Option<Entry>, Stop>> {
        if self.remaining() == 0 {
            return Ok(Ok(None));
        }
        if self.remaining() < 4 {
            return Ok(Err(Stop::Incomplete));
        }
        let mut magic = [0u8; 4];
        self.read(&mut magic)?;
        match magic {
            MARKER_MAGIC | MOVE_MAGIC => {
                if self.remaining() < 20 {
                    return Ok(Err(Stop::Incomplete));
                }
                let mut rec = [0u8; 24];
                rec[..4].copy_from_slice(&magic);
                self.read(&mut rec[4..])?;
                if u32_at(&rec, 20) != crc(&rec[..20]) {
                    return Ok(Err(Stop::Bad(Corruption::RecordCrc)));
                }
                if magic == MARKER_MAGIC {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&rec[4..20]);
                    return Ok(match BatchId::new(uuid::Uuid::from_bytes(id)) {
                        Ok(batch_id) => Ok(Some(Entry::Marker { batch_id })),
                        Err(_) => Err(Stop::Bad(Corruption::NilMarker)),
                    });
                }
                let key = (u64_at(&rec, 4), u64_at(&rec, 12));
                if self.remaining() < 4 {
                    return Ok(Err(Stop::Incomplete));
                }
                let mut fmagic = [0u8; 4];
                self.read(&mut fmagic)?;
                if fmagic != FRAME_MAGIC {
                    return Ok(Err(Stop::Bad(Corruption::MoveWithoutFrame)));
                }
                Ok(self.frame_after_magic(Some(key))?)
            }
            FRAME_MAGIC => Ok(self.frame_after_magic(None)?),
            other => Ok(Err(Stop::Bad(Corruption::UnknownEntry(other)))),
        }
    }

    pub(super) fn frame_after_magic(
        &mut self,
        moved_from: Option<(u64, u64)>,
    ) -> io::Result<Result<Option<Entry>, Stop>> {
        let offset = self.pos - 4;
        // The prefix: the fixed header, the seal section if SEALED, and the
        // header CRC, which covers the SEALED bit and body_len. Nothing in
        // the header is used before that CRC is checked: a length with a
        // flipped bit must not make a whole frame look cut short.
        let mut prefix = [0u8; FIXED_HEADER_LEN + SEAL_SECTION_LEN + 4];
        prefix[..4].copy_from_slice(&FRAME_MAGIC);
        if self.remaining() < 2 {
            return Ok(Err(Stop::Incomplete));
        }
        self.read(&mut prefix[4..6])?;
        let sealed = prefix[5] & 0x01 != 0;
        let hlen = FIXED_HEADER_LEN + if sealed { SEAL_SECTION_LEN } else { 0 };
        let prefix_len = hlen + 4;
        if self.remaining() < (prefix_len - 6) as u64 {
            return Ok(Err(Stop::Incomplete));
        }
        self.read(&mut prefix[6..prefix_len])?;
        let computed = crc(&prefix[..hlen]);
        let stored = u32_at(&prefix, hlen);
        if computed != stored {
            return Ok(Err(Stop::Bad(Corruption::Frame(FrameError::HeaderCrc {
                computed,
                stored,
            }))));
        }
        let mut head = [0u8; FIXED_HEADER_LEN];
        head.copy_from_slice(&prefix[..FIXED_HEADER_LEN]);
        let header = match FrameHeader::parse(&head) {
            Ok(h) => h,
            Err(e) => return Ok(Err(Stop::Bad(Corruption::Frame(e)))),
        };
        let frame_len = header.frame_len() as u64;
        let readable = Readable {
            batch_id: header.batch_id,
            tenant: header.tenant,
            data_type: header.data_type,
            records: header.record_count,
            frame_len,
        };
        if frame_len > self.max_frame_len {
            return Ok(Err(Stop::Bad(Corruption::FrameTooLarge {
                len: frame_len,
                max: self.max_frame_len,
            })));
        }
        let rest = frame_len - prefix_len as u64;
        if self.remaining() < rest {
            return Ok(Err(Stop::Incomplete));
        }
        // Bounded: frame_len ≤ max_frame_len, checked above.
        let mut bytes = vec![0u8; usize::try_from(frame_len).unwrap_or(usize::MAX)];
        bytes[..prefix_len].copy_from_slice(&prefix[..prefix_len]);
        self.read(&mut bytes[prefix_len..])?;
        let entry_len = frame_len + if moved_from.is_some() { MOVE_LEN } else { 0 };
        match Frame::decode(Bytes::from(bytes), &self.limits) {
            Ok(frame) => Ok(Ok(Some(Entry::Frame {
                offset,
                frame_len,
                entry_len,
                batch_id: frame.batch_id(),
                moved_from,
                tenant: header.tenant,
                kek: if sealed {
                    opsdata::KeyId::new(u32_at(&prefix, FIXED_HEADER_LEN + 4)).ok()
                } else {
                    None
                },
            }))),
            Err(e) => Ok(Err(Stop::BadBody {
                reason: Corruption::Frame(e),
                frame: readable,
                len: entry_len,
            })),
        }
    }
}
