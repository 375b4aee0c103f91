//! Sealed frames: envelope encryption of a frame's body (`docs/FRAME.md`,
//! "The seal").

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use super::{Entropy, KeyError, KeyId, KeyMaterial, KeyRing, SealPart};
use crate::frame::{
    BatchId, Codec, FIXED_HEADER_LEN, Frame, FrameError, FrameHeader, SEAL_SECTION_LEN, peek_header,
};
use crate::record::DataType;
use crate::tenant::TenantId;

/// Cipher suite 1: AES-256-GCM for both the wrapped data key and the body.
pub const SUITE_AES_256_GCM: u8 = 1;

const TAG_LEN: usize = 16;
const DEK_LEN: usize = 32;
const WRAPPED_LEN: usize = DEK_LEN + TAG_LEN;
/// Fixed header and seal section: what the header CRC covers.
const SEALED_HEADER_LEN: usize = FIXED_HEADER_LEN + SEAL_SECTION_LEN;

fn aead_key(key: &[u8]) -> LessSafeKey {
    // Invariant: every key passed is 32 bytes, the length AES-256 takes.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// The additional data the wrapped key is bound to: the fixed header and
/// the first 8 bytes of the seal section (suite, reserved, key id).
fn wrap_aad(fixed: &[u8], section: &[u8]) -> [u8; FIXED_HEADER_LEN + 8] {
    let mut aad = [0u8; FIXED_HEADER_LEN + 8];
    aad[..FIXED_HEADER_LEN].copy_from_slice(&fixed[..FIXED_HEADER_LEN]);
    aad[FIXED_HEADER_LEN..].copy_from_slice(&section[..8]);
    aad
}

/// The parsed seal section of a sealed frame.
struct Section<'a> {
    kek_id: KeyId,
    nonce: [u8; NONCE_LEN],
    wrapped: &'a [u8],
    raw: &'a [u8],
}

fn section(frame: &Frame) -> Result<Section<'_>, KeyError> {
    let bytes = frame.as_bytes();
    if !frame.header().sealed {
        return Err(KeyError::NotSealed);
    }
    let raw = &bytes[FIXED_HEADER_LEN..SEALED_HEADER_LEN];
    if raw[0] != SUITE_AES_256_GCM {
        return Err(KeyError::UnsupportedSuite { suite: raw[0] });
    }
    if raw[1..4] != [0, 0, 0] {
        return Err(KeyError::MalformedSeal {
            reason: "reserved bytes are not zero",
        });
    }
    let kek_id =
        KeyId::new(u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]])).map_err(|_| {
            KeyError::MalformedSeal {
                reason: "key id is 0",
            }
        })?;
    if (frame.header().body_len as usize) < TAG_LEN {
        return Err(KeyError::MalformedSeal {
            reason: "body shorter than its tag",
        });
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[8..20]);
    Ok(Section {
        kek_id,
        nonce,
        wrapped: &raw[20..SEAL_SECTION_LEN],
        raw,
    })
}

fn check_tenant(frame: &Frame, ring: &KeyRing) -> Result<(), KeyError> {
    if frame.tenant() == ring.tenant() {
        Ok(())
    } else {
        Err(KeyError::TenantMismatch {
            expected: ring.tenant(),
            found: frame.tenant(),
        })
    }
}

/// Unwraps the data key of a sealed frame with `kek`.
fn unwrap_dek(
    fixed: &[u8],
    s: &Section<'_>,
    kek: &KeyMaterial,
) -> Result<Zeroizing<[u8; WRAPPED_LEN]>, KeyError> {
    let mut buf = Zeroizing::new([0u8; WRAPPED_LEN]);
    buf.copy_from_slice(s.wrapped);
    aead_key(kek.expose())
        .open_in_place(
            Nonce::assume_unique_for_key(s.nonce),
            Aad::from(wrap_aad(fixed, s.raw)),
            &mut buf[..],
        )
        .map_err(|_| KeyError::Tampered {
            part: SealPart::WrappedKey,
        })?;
    // The first 32 bytes are now the data key.
    Ok(buf)
}

/// Writes a seal section for `kek_id` wrapping `dek` under `kek`, with a
/// fresh nonce from `entropy`.
fn wrap_dek(
    fixed: &[u8],
    kek_id: KeyId,
    kek: &KeyMaterial,
    dek: &[u8],
    entropy: &mut (impl Entropy + ?Sized),
) -> Result<[u8; SEAL_SECTION_LEN], KeyError> {
    let mut section = [0u8; SEAL_SECTION_LEN];
    section[0] = SUITE_AES_256_GCM;
    section[4..8].copy_from_slice(&kek_id.get().to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    entropy.fill(&mut nonce)?;
    section[8..20].copy_from_slice(&nonce);
    let aad = wrap_aad(fixed, &section);
    let wrapped = &mut section[20..];
    wrapped[..DEK_LEN].copy_from_slice(&dek[..DEK_LEN]);
    let tag = aead_key(kek.expose())
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut wrapped[..DEK_LEN],
        )
        // ring fails only for inputs over ~64 GiB; 32 bytes never are.
        .expect("sealing 32 bytes cannot fail");
    wrapped[DEK_LEN..].copy_from_slice(tag.as_ref());
    Ok(section)
}

/// Seals an unsealed frame for its tenant under the ring's primary key.
///
/// A fresh data key and wrap nonce are drawn from `entropy`; the body is
/// encrypted with AES-256-GCM under the data key (bound to the fixed
/// header), and the data key is wrapped under the primary (bound to the
/// fixed header and the key id). The result is 84 bytes longer: the 68-byte
/// seal section and the 16-byte tag. The primary's usage count goes up by
/// one.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// # let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// # let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let mut entropy = DeterministicEntropy::from_u64(7);
/// let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
/// let id = ring.generate(&mut entropy, now)?;
/// ring.promote(id, now)?;
/// let frame = FrameEncoder::new()
///     .encode_frame(&TenantBatch::new(tenant, DataType::Alert), BatchId::from_random_bytes([1; 16]), now)?;
/// let sealed = seal(&frame, &mut ring, &mut entropy, now)?;
/// assert_eq!(peek(sealed.as_bytes())?.kek_id, Some(id));
/// assert_eq!(open(&sealed, &ring)?, frame);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`KeyError::TenantMismatch`] for a frame of another tenant,
/// [`KeyError::AlreadySealed`], [`KeyError::NoPrimaryKey`],
/// [`KeyError::UsageExhausted`] once the primary reached its hard limit,
/// [`KeyError::Shredded`], [`KeyError::BodyTooLarge`],
/// [`KeyError::Entropy`]. The ring is unchanged on error.
pub fn seal(
    frame: &Frame,
    ring: &mut KeyRing,
    entropy: &mut (impl Entropy + ?Sized),
    now: DateTime<Utc>,
) -> Result<Frame, KeyError> {
    check_tenant(frame, ring)?;
    let h = frame.header();
    if h.sealed {
        return Err(KeyError::AlreadySealed);
    }
    let body_len = h
        .body_len
        .checked_add(TAG_LEN as u32)
        .ok_or(KeyError::BodyTooLarge {
            body_len: h.body_len,
        })?;
    let (kek_id, kek) = ring.seal_key()?;
    let header = FrameHeader {
        sealed: true,
        body_len,
        ..*h
    };
    let fixed = header.encode();
    let mut dek = Zeroizing::new([0u8; DEK_LEN]);
    entropy.fill(&mut dek[..])?;
    let section = wrap_dek(&fixed, kek_id, kek, &dek[..], entropy)?;

    let mut out = Vec::with_capacity(header.frame_len());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&section);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(frame.body());
    let tag = aead_key(&dek[..])
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(&fixed[..]),
            &mut out[start..],
        )
        // ring refuses only inputs over ~64 GiB; a body is at most 4 GiB.
        .expect("a body under 4 GiB seals");
    out.extend_from_slice(tag.as_ref());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    ring.record_use(kek_id, now);
    Ok(Frame::from_checked(header, Bytes::from(out)))
}

/// Opens a sealed frame: the same frame unsealed (its body the payload
/// after the codec again, CRCs recomputed), ready for
/// [`PayloadReader`](crate::PayloadReader).
///
/// The frame's tenant is checked against the ring's before any
/// cryptography. Any `Pending`, `Primary` or `DecryptOnly` version opens.
///
/// # Errors
///
/// [`KeyError::TenantMismatch`], [`KeyError::NotSealed`],
/// [`KeyError::UnsupportedSuite`], [`KeyError::MalformedSeal`],
/// [`KeyError::UnknownKey`] (no such version), [`KeyError::KeyDisabled`]
/// (rotated away), [`KeyError::KeyDestroyed`] (destroyed or shredded),
/// [`KeyError::Tampered`] (authentication failed: which part says where),
/// or [`KeyError::Frame`] if what was sealed is not a well-formed body.
pub fn open(frame: &Frame, ring: &KeyRing) -> Result<Frame, KeyError> {
    check_tenant(frame, ring)?;
    let s = section(frame)?;
    let kek = ring.open_key(s.kek_id)?;
    let bytes = frame.as_bytes();
    let fixed = &bytes[..FIXED_HEADER_LEN];
    let dek = unwrap_dek(fixed, &s, kek)?;

    let h = frame.header();
    let plain_len = h.body_len - TAG_LEN as u32;
    let header = FrameHeader {
        sealed: false,
        body_len: plain_len,
        ..*h
    };
    // Room for the sealed body, tag included, which is decrypted in place
    // and then truncated: with only `frame_len()` the buffer would outgrow
    // itself and be copied once more.
    let mut out = Vec::with_capacity(header.frame_len() + TAG_LEN);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(frame.body());
    let opened = aead_key(&dek[..DEK_LEN]).open_in_place(
        Nonce::assume_unique_for_key([0; NONCE_LEN]),
        Aad::from(fixed),
        &mut out[start..],
    );
    if opened.is_err() {
        // Whatever ring left in the buffer is not to be kept.
        out.zeroize();
        return Err(KeyError::Tampered {
            part: SealPart::Body,
        });
    }
    out.truncate(start + plain_len as usize);
    if header.codec == Codec::None && header.body_len != header.content_len {
        return Err(KeyError::Frame(FrameError::LengthMismatch {
            body_len: header.body_len,
            content_len: header.content_len,
        }));
    }
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    Ok(Frame::from_checked(header, Bytes::from(out)))
}

/// Rewraps a sealed frame's data key under the ring's primary, without
/// decrypting the body: only the seal section and the header CRC change;
/// the body and its CRC stay byte-identical. A frame already under the
/// primary is returned as it is. The primary's usage count goes up by one.
///
/// # Errors
///
/// As [`open`] for the old key (the frame's tenant first), and as [`seal`]
/// for the primary. The ring is unchanged on error.
pub fn rewrap(
    frame: &Frame,
    ring: &mut KeyRing,
    entropy: &mut (impl Entropy + ?Sized),
    now: DateTime<Utc>,
) -> Result<Frame, KeyError> {
    check_tenant(frame, ring)?;
    let s = section(frame)?;
    let (new_id, new_kek) = ring.seal_key()?;
    if new_id == s.kek_id {
        return Ok(frame.clone());
    }
    let old_kek = ring.open_key(s.kek_id)?;
    let bytes = frame.as_bytes();
    let fixed = &bytes[..FIXED_HEADER_LEN];
    let dek = unwrap_dek(fixed, &s, old_kek)?;
    let section = wrap_dek(fixed, new_id, new_kek, &dek[..DEK_LEN], entropy)?;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(fixed);
    out.extend_from_slice(&section);
    out.extend_from_slice(&crc32fast::hash(&out).to_be_bytes());
    out.extend_from_slice(&bytes[SEALED_HEADER_LEN + 4..]);
    ring.record_use(new_id, now);
    Ok(Frame::from_checked(*frame.header(), Bytes::from(out)))
}

/// What [`peek`] reads from a frame's header without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FramePeek {
    /// The tenant.
    pub tenant: TenantId,
    /// The data type.
    pub data_type: DataType,
    /// The batch id.
    pub batch_id: BatchId,
    /// When the batch was closed.
    pub created: DateTime<Utc>,
    /// The key version a sealed frame's data key is wrapped under; `None`
    /// for an unsealed frame.
    pub kek_id: Option<KeyId>,
    /// The whole frame's length.
    pub frame_len: usize,
}

/// Reads a frame's tenant, data type, batch id and key id from the start
/// of `bytes` (136 bytes of a sealed frame suffice), checking the magic,
/// version and header CRC, without any key and without reading the body:
/// the cheap census of which frames depend on which key.
///
/// # Errors
///
/// [`KeyError::Frame`] if the header fails its checks or `bytes` ends
/// inside it; [`KeyError::MalformedSeal`] for a key id of 0.
pub fn peek(bytes: &[u8]) -> Result<FramePeek, KeyError> {
    let h = peek_header(bytes)?;
    let kek_id = if h.sealed {
        let raw = &bytes[FIXED_HEADER_LEN + 4..FIXED_HEADER_LEN + 8];
        Some(
            KeyId::new(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])).map_err(|_| {
                KeyError::MalformedSeal {
                    reason: "key id is 0",
                }
            })?,
        )
    } else {
        None
    };
    Ok(FramePeek {
        tenant: h.tenant,
        data_type: h.data_type,
        batch_id: h.batch_id,
        created: h.created,
        kek_id,
        frame_len: h.frame_len(),
    })
}
