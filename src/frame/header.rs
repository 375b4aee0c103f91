use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    BatchId, Codec, FIXED_HEADER_LEN, FRAME_MAGIC, FRAME_VERSION, FrameError, SCHEMA_VERSION,
    SEAL_SECTION_LEN, data_type_from_u8,
};
use crate::record::DataType;
use crate::tenant::TenantId;

const FLAG_SEALED: u8 = 0x01;

/// The frame's fixed 64-byte header, with typed fields.
///
/// Every value of this type can be written: the ids are non-nil, the enums
/// are known, and `created` is kept to the millisecond on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether a seal section follows and the body is encrypted.
    pub sealed: bool,
    /// How the payload is encoded into the body.
    pub codec: Codec,
    /// The records' data type.
    pub data_type: DataType,
    /// The number of records.
    pub record_count: u32,
    /// The tenant the records belong to.
    pub tenant: TenantId,
    /// The batch's idempotency key.
    pub batch_id: BatchId,
    /// When the batch was closed; written as milliseconds since the epoch
    /// (finer precision is dropped).
    pub created: DateTime<Utc>,
    /// The payload's length before the codec.
    pub content_len: u32,
    /// The body's length.
    pub body_len: u32,
}

impl FrameHeader {
    /// The header's 64 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; FIXED_HEADER_LEN] {
        let mut b = [0u8; FIXED_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4] = FRAME_VERSION;
        b[5] = if self.sealed { FLAG_SEALED } else { 0 };
        b[6] = self.codec.as_u8();
        b[7] = self.data_type.as_u8();
        b[8..10].copy_from_slice(&SCHEMA_VERSION.to_be_bytes());
        // b[10..12] reserved, zero.
        b[12..16].copy_from_slice(&self.record_count.to_be_bytes());
        b[16..32].copy_from_slice(self.tenant.as_bytes());
        b[32..48].copy_from_slice(self.batch_id.as_bytes());
        b[48..56].copy_from_slice(&self.created.timestamp_millis().to_be_bytes());
        b[56..60].copy_from_slice(&self.content_len.to_be_bytes());
        b[60..64].copy_from_slice(&self.body_len.to_be_bytes());
        b
    }

    /// Parses and checks the 64 header bytes: magic, version, flags, codec,
    /// data type, schema version, reserved bytes, ids and `created_ms`.
    ///
    /// This does not check the header CRC, which follows the header (and
    /// the seal section); [`FrameDecoder`](crate::FrameDecoder) and
    /// [`Frame::decode`](crate::Frame::decode) check it before calling this.
    ///
    /// # Errors
    ///
    /// The first failed check, in the order of `docs/FRAME.md`:
    /// [`FrameError::BadMagic`], [`FrameError::UnsupportedVersion`],
    /// [`FrameError::ReservedFlags`], [`FrameError::UnknownCodec`],
    /// [`FrameError::UnknownDataType`], [`FrameError::UnsupportedSchemaVersion`],
    /// [`FrameError::ReservedNotZero`], [`FrameError::NilId`],
    /// [`FrameError::CreatedOutOfRange`].
    pub fn parse(b: &[u8; FIXED_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        check_magic(b)?;
        check_version(b[4])?;
        let flags = b[5];
        if flags & !FLAG_SEALED != 0 {
            return Err(FrameError::ReservedFlags { flags });
        }
        let codec = Codec::from_u8(b[6]).ok_or(FrameError::UnknownCodec { codec: b[6] })?;
        let data_type = data_type_from_u8(b[7])?;
        let schema = u16::from_be_bytes([b[8], b[9]]);
        if schema != SCHEMA_VERSION {
            return Err(FrameError::UnsupportedSchemaVersion { version: schema });
        }
        let reserved = u16::from_be_bytes([b[10], b[11]]);
        if reserved != 0 {
            return Err(FrameError::ReservedNotZero { value: reserved });
        }
        let tenant = TenantId::from_bytes(array(&b[16..32]))
            .map_err(|_| FrameError::NilId { field: "tenant_id" })?;
        let batch_id = BatchId::new(Uuid::from_bytes(array(&b[32..48])))?;
        let created_ms = i64::from_be_bytes(array(&b[48..56]));
        let created = DateTime::from_timestamp_millis(created_ms)
            .ok_or(FrameError::CreatedOutOfRange { created_ms })?;
        Ok(FrameHeader {
            sealed: flags & FLAG_SEALED != 0,
            codec,
            data_type,
            record_count: u32::from_be_bytes(array(&b[12..16])),
            tenant,
            batch_id,
            created,
            content_len: u32::from_be_bytes(array(&b[56..60])),
            body_len: u32::from_be_bytes(array(&b[60..64])),
        })
    }

    /// The length of everything before the body: header, seal section if
    /// sealed, and the header CRC.
    #[must_use]
    pub fn prefix_len(&self) -> usize {
        header_len(self.sealed) + 4
    }

    /// The whole frame's length on the wire.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        // Saturating: on a 32-bit target a declared body near 4 GiB must not
        // overflow (the limits refuse such a frame before it is buffered).
        self.prefix_len()
            .saturating_add(self.body_len as usize)
            .saturating_add(4)
    }
}

/// The bytes the header CRC covers: 64, or 132 when sealed.
pub(crate) fn header_len(sealed: bool) -> usize {
    if sealed {
        FIXED_HEADER_LEN + SEAL_SECTION_LEN
    } else {
        FIXED_HEADER_LEN
    }
}

/// Checks the magic bytes present in `b` (up to four), failing on the first
/// wrong one.
pub(crate) fn check_magic(b: &[u8]) -> Result<(), FrameError> {
    for (offset, (&found, &want)) in b.iter().zip(FRAME_MAGIC.iter()).enumerate() {
        if found != want {
            return Err(FrameError::BadMagic { offset, found });
        }
    }
    Ok(())
}

pub(crate) fn check_version(version: u8) -> Result<(), FrameError> {
    if version == FRAME_VERSION {
        Ok(())
    } else {
        Err(FrameError::UnsupportedVersion { version })
    }
}

pub(crate) fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    // Callers pass ranges of fixed, matching length.
    s.try_into().expect("slice of the array's length")
}

/// A sealed frame's 68-byte seal section, carried unchanged by the frame
/// layer; its contents belong to the keys layer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealSection(pub [u8; SEAL_SECTION_LEN]);

impl fmt::Debug for SealSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The wrapped key is ciphertext, but there is nothing to learn from
        // printing it: show the suite and key id only.
        write!(
            f,
            "SealSection {{ suite: {}, kek_id: {}, .. }}",
            self.0[0],
            u32::from_be_bytes(array(&self.0[4..8]))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn header() -> FrameHeader {
        FrameHeader {
            sealed: false,
            codec: Codec::Deflate,
            data_type: DataType::Performance,
            record_count: 3,
            tenant: "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap(),
            batch_id: "0191a0d0-3a5b-7c8d-9e0f-112233445566".parse().unwrap(),
            created: Utc.with_ymd_and_hms(2026, 11, 23, 12, 34, 56).unwrap()
                + chrono::Duration::milliseconds(789),
            content_len: 0x0102_0304,
            body_len: 0x0506_0708,
        }
    }

    #[test]
    fn layout_matches_the_spec() {
        let b = header().encode();
        assert_eq!(&b[0..4], &[0x89, 0x4F, 0x50, 0x53]);
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 0);
        assert_eq!(b[6], 1);
        assert_eq!(b[7], 5);
        assert_eq!(&b[8..12], &[0, 1, 0, 0]);
        assert_eq!(&b[12..16], &[0, 0, 0, 3]);
        assert_eq!(
            &b[16..32],
            &[
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(&b[32..34], &[0x01, 0x91]);
        assert_eq!(&b[48..56], &1_795_437_296_789i64.to_be_bytes());
        assert_eq!(&b[56..64], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(FrameHeader::parse(&b).unwrap(), header());
    }

    #[test]
    fn each_field_check_fires() {
        let good = header().encode();
        let cases: [(usize, u8, &str); 9] = [
            (1, b'X', "BadMagic"),
            (4, 2, "UnsupportedVersion"),
            (5, 0x02, "ReservedFlags"),
            (6, 2, "UnknownCodec"),
            (7, 0, "UnknownDataType"),
            (7, 7, "UnknownDataType"),
            (9, 2, "UnsupportedSchemaVersion"),
            (11, 1, "ReservedNotZero"),
            (48, 0x7f, "CreatedOutOfRange"),
        ];
        for (at, value, name) in cases {
            let mut b = good;
            b[at] = value;
            let err = FrameHeader::parse(&b).unwrap_err();
            assert_eq!(err.check_name(), name, "byte {at} = {value}");
        }
        let mut b = good;
        b[16..32].fill(0);
        assert!(matches!(
            FrameHeader::parse(&b),
            Err(FrameError::NilId { field: "tenant_id" })
        ));
        let mut b = good;
        b[32..48].fill(0);
        assert!(matches!(
            FrameHeader::parse(&b),
            Err(FrameError::NilId { field: "batch_id" })
        ));
    }

    #[test]
    fn created_keeps_milliseconds_only() {
        let mut h = header();
        h.created += chrono::Duration::microseconds(999);
        let back = FrameHeader::parse(&h.encode()).unwrap();
        assert_eq!(back, header());
    }
}
