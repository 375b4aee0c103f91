//! Keeping key rings in a secret store, sealed by a wrapping key
//! (`docs/KEYS.md`).

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{Entropy, KeyError, KeyMaterial, KeyRing, SealPart};
use crate::tenant::TenantId;

/// The first four bytes of a stored ring: `\x89OPK`.
const MAGIC: [u8; 4] = [0x89, b'O', b'P', b'K'];
const VERSION: u8 = 1;
const SUITE: u8 = 1;
const PREFIX_LEN: usize = 44;
const TAG_LEN: usize = 16;
/// The largest stored ring read: 16 MiB (about 190 000 versions).
const MAX_CIPHERTEXT: usize = 16 << 20;

/// The key that seals key rings for the secret store: a key-encryption key
/// for key-encryption keys, with an id so it can itself be rotated.
///
/// Zeroized on drop; `Debug` shows the id only.
pub struct WrappingKey {
    id: u32,
    material: KeyMaterial,
}

impl WrappingKey {
    /// Wrapping key `id` with the given material.
    #[must_use]
    pub fn new(id: u32, material: KeyMaterial) -> Self {
        WrappingKey { id, material }
    }

    /// The key's id, written into every ring it seals.
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappingKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn aead(key: &KeyMaterial) -> LessSafeKey {
    // Invariant: key material is always 32 bytes.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose()).expect("a 32-byte key"))
}

impl KeyRing {
    /// The ring, key material included, sealed under `wrapping` in the
    /// stored-ring format of `docs/KEYS.md`: the only form in which key
    /// material leaves the crate.
    ///
    /// # Errors
    ///
    /// [`KeyError::Entropy`] if the nonce cannot be drawn.
    pub fn to_sealed(
        &self,
        wrapping: &WrappingKey,
        entropy: &mut (impl Entropy + ?Sized),
    ) -> Result<Vec<u8>, KeyError> {
        let plain = self.encode_plain();
        let mut nonce = [0u8; NONCE_LEN];
        entropy.fill(&mut nonce)?;
        let ct_len = plain.len() + TAG_LEN;
        let mut out = Vec::with_capacity(PREFIX_LEN + ct_len);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(SUITE);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&wrapping.id.to_be_bytes());
        out.extend_from_slice(self.tenant().as_bytes());
        out.extend_from_slice(&nonce);
        // Invariant: a ring's plaintext is far below 4 GiB.
        out.extend_from_slice(&(ct_len as u32).to_be_bytes());
        let mut aad = [0u8; PREFIX_LEN];
        aad.copy_from_slice(&out);
        out.extend_from_slice(&plain);
        let tag = aead(&wrapping.material)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[PREFIX_LEN..],
            )
            // ring fails only for inputs over ~64 GiB.
            .expect("a stored ring seals");
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Reads a ring sealed by [`to_sealed`](KeyRing::to_sealed), checking
    /// that it belongs to `tenant` before decrypting it and that it is
    /// well-formed after.
    ///
    /// # Errors
    ///
    /// [`KeyError::StoreFormat`] for bytes not in the format (or over
    /// 16 MiB), [`KeyError::WrongWrappingKey`] if another wrapping key
    /// sealed it, [`KeyError::TenantMismatch`] if it is another tenant's
    /// ring, [`KeyError::Tampered`] if it fails authentication.
    pub fn from_sealed(
        bytes: &[u8],
        tenant: TenantId,
        wrapping: &WrappingKey,
    ) -> Result<KeyRing, KeyError> {
        let bad = |reason| KeyError::StoreFormat { reason };
        let Some((prefix, ct)) = bytes.split_first_chunk::<PREFIX_LEN>() else {
            return Err(bad("shorter than its prefix"));
        };
        if prefix[..4] != MAGIC {
            return Err(bad("bad magic"));
        }
        if prefix[4] != VERSION {
            return Err(bad("unsupported version"));
        }
        if prefix[5] != SUITE {
            return Err(KeyError::UnsupportedSuite { suite: prefix[5] });
        }
        if prefix[6..8] != [0, 0] {
            return Err(bad("reserved bytes are not zero"));
        }
        let found = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if found != wrapping.id {
            return Err(KeyError::WrongWrappingKey {
                expected: wrapping.id,
                found,
            });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&prefix[12..28]);
        let stored_tenant = TenantId::from_bytes(id).map_err(|_| bad("nil tenant"))?;
        if stored_tenant != tenant {
            return Err(KeyError::TenantMismatch {
                expected: tenant,
                found: stored_tenant,
            });
        }
        let ct_len = u32::from_be_bytes([prefix[40], prefix[41], prefix[42], prefix[43]]) as usize;
        if ct_len != ct.len() {
            return Err(bad("ciphertext length does not match"));
        }
        if !(TAG_LEN..=MAX_CIPHERTEXT).contains(&ct_len) {
            return Err(bad("ciphertext length out of range"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&prefix[28..40]);
        let mut buf = Zeroizing::new(ct.to_vec());
        let plain = aead(&wrapping.material)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&prefix[..]),
                &mut buf[..],
            )
            .map_err(|_| KeyError::Tampered {
                part: SealPart::StoredRing,
            })?;
        let ring = KeyRing::decode_plain(plain)?;
        if ring.tenant() != tenant {
            return Err(bad("inner tenant differs from the prefix"));
        }
        Ok(ring)
    }
}

/// The version of a tenant's stored ring, as its store names it (a
/// counter, an `ETag`, an object version): an opaque token, only compared
/// for equality and handed back to the store that gave it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RingVersion(String);

impl RingVersion {
    /// The token `token` (for store implementations).
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        RingVersion(token.into())
    }

    /// The token's text (for store implementations).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RingVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RingVersion").field(&self.0).finish()
    }
}

/// A sealed ring as stored and its version.
pub type VersionedRing = (Vec<u8>, RingVersion);

/// Why a conditional write of a ring ([`KeyStore::put_if`]) did not
/// happen. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CasError<E> {
    /// The stored ring is not the version expected: another writer changed
    /// it (or created it, when none was expected; or removed it). Reload,
    /// re-apply the change, try again.
    #[error("the stored key ring changed since it was read")]
    Conflict,
    /// The store cannot write conditionally.
    #[error("the key store does not support conditional writes")]
    Unsupported,
    /// The store failed.
    #[error("key store: {0}")]
    Store(#[source] E),
}

/// The secret store that keeps key rings, one sealed blob per tenant. The
/// host implements it over its vault; [`MemoryKeyStore`] is for tests.
///
/// Stores shared by several nodes implement the compare-and-swap pair
/// [`get_versioned`](KeyStore::get_versioned) and
/// [`put_if`](KeyStore::put_if) (`docs/KEYS.md`): a write names the
/// version it was derived from and happens only if that is still the
/// stored one. Their defaults answer that the store cannot.
pub trait KeyStore {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores the tenant's sealed ring, replacing the previous one,
    /// whatever its version (last write wins: for one writer only).
    ///
    /// # Errors
    ///
    /// The store's own.
    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), Self::Error>;

    /// The tenant's sealed ring, if stored.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, Self::Error>;

    /// The tenant's sealed ring and its version, if stored.
    ///
    /// # Errors
    ///
    /// [`CasError::Unsupported`] (the default), or the store's own.
    fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> Result<Option<VersionedRing>, CasError<Self::Error>> {
        let _ = tenant;
        Err(CasError::Unsupported)
    }

    /// Stores the tenant's sealed ring only if the stored one is still
    /// version `expected`, or, with `None`, only if none is stored (create
    /// if absent); the new version. Atomic: of two writers expecting the
    /// same version, one wins and the other gets [`CasError::Conflict`].
    ///
    /// # Errors
    ///
    /// [`CasError::Conflict`] (nothing written), [`CasError::Unsupported`]
    /// (the default), or the store's own.
    fn put_if(
        &mut self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> Result<RingVersion, CasError<Self::Error>> {
        let _ = (tenant, sealed, expected);
        Err(CasError::Unsupported)
    }
}

/// A [`KeyStore`] in memory, for tests, with compare-and-swap: versions are
/// a counter over the whole store, so a version is never given twice.
#[derive(Debug, Default, Clone)]
pub struct MemoryKeyStore {
    blobs: std::collections::BTreeMap<TenantId, (Vec<u8>, u64)>,
    writes: u64,
}

impl MemoryKeyStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&mut self, tenant: TenantId, sealed: &[u8]) -> RingVersion {
        self.writes += 1;
        self.blobs.insert(tenant, (sealed.to_vec(), self.writes));
        RingVersion(self.writes.to_string())
    }
}

impl KeyStore for MemoryKeyStore {
    type Error = std::convert::Infallible;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), Self::Error> {
        let _ = self.write(tenant, sealed);
        Ok(())
    }

    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.blobs.get(&tenant).map(|(b, _)| b.clone()))
    }

    fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> Result<Option<VersionedRing>, CasError<Self::Error>> {
        Ok(self
            .blobs
            .get(&tenant)
            .map(|(b, v)| (b.clone(), RingVersion(v.to_string()))))
    }

    fn put_if(
        &mut self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> Result<RingVersion, CasError<Self::Error>> {
        let current = self.blobs.get(&tenant).map(|(_, v)| v.to_string());
        if current.as_deref() != expected.map(RingVersion::as_str) {
            return Err(CasError::Conflict);
        }
        Ok(self.write(tenant, sealed))
    }
}

/// Seals `ring` under `wrapping` and puts it in `store`.
///
/// # Errors
///
/// [`KeyError::Entropy`], or [`KeyError::Store`] with the store's error.
pub fn save_ring<S: KeyStore + ?Sized>(
    store: &mut S,
    ring: &KeyRing,
    wrapping: &WrappingKey,
    entropy: &mut (impl Entropy + ?Sized),
) -> Result<(), KeyError> {
    let sealed = ring.to_sealed(wrapping, entropy)?;
    store
        .put(ring.tenant(), &sealed)
        .map_err(|e| KeyError::Store(Box::new(e)))
}

/// Loads `tenant`'s ring from `store`, if there is one.
///
/// # Errors
///
/// [`KeyError::Store`] with the store's error, or any error of
/// [`KeyRing::from_sealed`].
pub fn load_ring<S: KeyStore + ?Sized>(
    store: &S,
    tenant: TenantId,
    wrapping: &WrappingKey,
) -> Result<Option<KeyRing>, KeyError> {
    match store
        .get(tenant)
        .map_err(|e| KeyError::Store(Box::new(e)))?
    {
        None => Ok(None),
        Some(bytes) => KeyRing::from_sealed(&bytes, tenant, wrapping).map(Some),
    }
}
