//! Key rings shared by every node, in an object store: [`AsyncKeyStore`],
//! the async mirror of the core's [`KeyStore`](opsdata::KeyStore)
//! compare-and-swap, and [`ObjectStoreKeyStore`], which implements it with
//! `object_store`'s conditional writes (`docs/KEYS.md`, "Shared key
//! rings").
//!
//! # Layout
//!
//! Tenant `T`'s sealed ring (the stored-ring format of `docs/KEYS.md`) is
//! one object named
//!
//! ```text
//! [<root>/]<T>
//! ```
//!
//! where `<T>` is the canonical (lowercase, hyphenated) UUID text of the
//! tenant id and `<root>` the root prefix, `keyrings` unless configured.
//!
//! # Versions
//!
//! A ring's [`RingVersion`] is the object's `ETag` and version as the store
//! reports them. `put_if` with `None` writes with `PutMode::Create` (create
//! if absent); with a version, `PutMode::Update` (only if the object's
//! `ETag`/version still match). A store that reports neither, or does not
//! implement the mode (the local filesystem has no `PutMode::Update`),
//! answers [`CasError::Unsupported`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use opsdata::{CasError, RingVersion, TenantId, VersionedRing};

use crate::blobs::BlobOp;

/// The largest stored ring read: the core's 16 MiB ciphertext limit and
/// the 44-byte prefix.
const MAX_RING_LEN: u64 = (16 << 20) + 44;
/// Where a stored ring names its tenant (`docs/KEYS.md`).
const TENANT_AT: std::ops::Range<usize> = 12..28;

/// The secret store that keeps key rings, shared by every node, async:
/// the compare-and-swap pair of the core's
/// [`KeyStore`](opsdata::KeyStore). Methods take `&self` and may run
/// concurrently.
pub trait AsyncKeyStore: Send + Sync + 'static {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The tenant's sealed ring and its version, if stored.
    ///
    /// # Errors
    ///
    /// [`CasError::Unsupported`] if the store gives no version;
    /// [`CasError::Store`] with the store's own.
    fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Option<VersionedRing>, CasError<Self::Error>>> + Send;

    /// Stores the tenant's sealed ring only if the stored one is still
    /// version `expected` (with `None`: only if none is stored); the new
    /// version. Of two writers expecting one version, one wins, the other
    /// gets [`CasError::Conflict`] and nothing is written.
    ///
    /// # Errors
    ///
    /// [`CasError::Conflict`], [`CasError::Unsupported`],
    /// [`CasError::Store`] with the store's own.
    fn put_if(
        &self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> impl Future<Output = Result<RingVersion, CasError<Self::Error>>> + Send;
}

/// Why an [`ObjectStoreKeyStore`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RingStoreError {
    /// The underlying object store failed.
    #[error("object store {op}: {source}")]
    Store {
        /// What was being done.
        op: BlobOp,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The root prefix is not a valid object path.
    #[error("invalid root prefix: {source}")]
    InvalidRoot {
        /// Why.
        #[source]
        source: object_store::path::Error,
    },
    /// A stored ring is larger than any ring; it was not read.
    #[error("stored key ring of tenant {tenant} is {size} bytes, over the {max} a ring may have")]
    TooLarge {
        /// The tenant.
        tenant: TenantId,
        /// Its size.
        size: u64,
        /// The largest ring.
        max: u64,
    },
    /// Bytes to store, or stored under the tenant's name, that are not a
    /// sealed ring of that tenant (checked on the prefix only: opening it
    /// needs the wrapping key).
    #[error("not a sealed key ring of tenant {tenant}")]
    WrongTenant {
        /// The tenant named.
        tenant: TenantId,
    },
    /// A version token this store did not give.
    #[error("not a version of this key store")]
    BadVersion,
}

/// An [`AsyncKeyStore`] over an [`object_store::ObjectStore`] (Azure Blob,
/// S3, GCS, `InMemory`): see the module docs for the layout and versions.
pub struct ObjectStoreKeyStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl fmt::Debug for ObjectStoreKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's Display, never its Debug (which may hold
        // credentials).
        f.debug_struct("ObjectStoreKeyStore")
            .field("store", &format_args!("{}", self.store))
            .field("root", &self.root.as_ref())
            .finish()
    }
}

impl ObjectStoreKeyStore {
    /// Rings in `store` under the root prefix `keyrings`.
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreKeyStore {
            store,
            root: Path::from("keyrings"),
        }
    }

    /// Rings in an Azure Blob Storage container (or Azurite).
    ///
    /// # Errors
    ///
    /// [`RingStoreError::Store`] if the configuration is refused.
    #[cfg(feature = "azure")]
    pub fn azure(config: &crate::AzureBlobConfig) -> Result<Self, RingStoreError> {
        let store = config.build().map_err(|source| RingStoreError::Store {
            op: BlobOp::Connect,
            source,
        })?;
        Ok(Self::new(store))
    }

    /// Puts every ring under `root` (a `/`-separated object path; empty for
    /// none).
    ///
    /// # Errors
    ///
    /// [`RingStoreError::InvalidRoot`] if `root` is not a valid object
    /// path.
    pub fn with_root(mut self, root: &str) -> Result<Self, RingStoreError> {
        self.root = Path::parse(root).map_err(|source| RingStoreError::InvalidRoot { source })?;
        Ok(self)
    }

    /// The name `tenant`'s ring is stored under: `[<root>/]<tenant>`.
    #[must_use]
    pub fn ring_path(&self, tenant: TenantId) -> Path {
        self.root
            .clone()
            .join(tenant.as_uuid().hyphenated().to_string())
    }
}

/// Whether `bytes` name `tenant` where a sealed ring names its tenant.
fn names_tenant(bytes: &[u8], tenant: TenantId) -> bool {
    bytes.get(TENANT_AT) == Some(&tenant.as_bytes()[..])
}

/// The token of an object's `ETag` and version; `None` if it has neither.
fn encode(e_tag: Option<String>, version: Option<String>) -> Option<RingVersion> {
    if e_tag.is_none() && version.is_none() {
        return None;
    }
    // `ETag`s and version ids are header values: no line breaks.
    let part = |p: Option<String>| p.map_or_else(String::new, |s| format!("+{s}"));
    Some(RingVersion::new(format!(
        "{}\n{}",
        part(e_tag),
        part(version)
    )))
}

/// The `ETag` and version of a token made by [`encode`].
fn decode(v: &RingVersion) -> Option<UpdateVersion> {
    let (e_tag, version) = v.as_str().split_once('\n')?;
    let part = |p: &str| -> Option<Option<String>> {
        if p.is_empty() {
            Some(None)
        } else {
            p.strip_prefix('+').map(|s| Some(s.to_owned()))
        }
    };
    let v = UpdateVersion {
        e_tag: part(e_tag)?,
        version: part(version)?,
    };
    (v.e_tag.is_some() || v.version.is_some()).then_some(v)
}

impl AsyncKeyStore for ObjectStoreKeyStore {
    type Error = RingStoreError;

    /// The ring object and its `ETag`/version, if stored; refused unread if
    /// over 16 MiB, refused if it does not name the tenant.
    ///
    /// # Errors
    ///
    /// [`CasError::Unsupported`] if the store reports neither an `ETag`
    /// nor a version; [`CasError::Store`] with
    /// [`RingStoreError::TooLarge`], [`RingStoreError::WrongTenant`] or
    /// [`RingStoreError::Store`].
    async fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> Result<Option<VersionedRing>, CasError<RingStoreError>> {
        let store = |source| {
            CasError::Store(RingStoreError::Store {
                op: BlobOp::Get,
                source,
            })
        };
        let result = match self.store.get(&self.ring_path(tenant)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store(e)),
        };
        if result.meta.size > MAX_RING_LEN {
            return Err(CasError::Store(RingStoreError::TooLarge {
                tenant,
                size: result.meta.size,
                max: MAX_RING_LEN,
            }));
        }
        let version = encode(result.meta.e_tag.clone(), result.meta.version.clone())
            .ok_or(CasError::Unsupported)?;
        let bytes = result.bytes().await.map_err(store)?;
        if !names_tenant(&bytes, tenant) {
            return Err(CasError::Store(RingStoreError::WrongTenant { tenant }));
        }
        Ok(Some((bytes.to_vec(), version)))
    }

    /// Writes the ring object with `PutMode::Create` (no `expected`) or
    /// `PutMode::Update` (the expected `ETag`/version).
    ///
    /// # Errors
    ///
    /// [`CasError::Conflict`] if the object exists (create), or changed or
    /// went away (update); [`CasError::Unsupported`] if the store does not
    /// implement the mode or reports no version; [`CasError::Store`] with
    /// [`RingStoreError::WrongTenant`] (bytes that do not name the tenant,
    /// refused before writing), [`RingStoreError::BadVersion`] or
    /// [`RingStoreError::Store`].
    async fn put_if(
        &self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> Result<RingVersion, CasError<RingStoreError>> {
        if !names_tenant(sealed, tenant) {
            return Err(CasError::Store(RingStoreError::WrongTenant { tenant }));
        }
        let mode = match expected {
            None => PutMode::Create,
            Some(v) => {
                PutMode::Update(decode(v).ok_or(CasError::Store(RingStoreError::BadVersion))?)
            }
        };
        let payload = PutPayload::from(sealed.to_vec());
        match self
            .store
            .put_opts(&self.ring_path(tenant), payload, PutOptions::from(mode))
            .await
        {
            Ok(r) => encode(r.e_tag, r.version).ok_or(CasError::Unsupported),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Err(CasError::Conflict),
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => Err(CasError::Unsupported),
            Err(source) => Err(CasError::Store(RingStoreError::Store {
                op: BlobOp::Put,
                source,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tokens_round_trip_and_strangers_are_refused() {
        for (e, v) in [
            (Some("\"0x8D\"".to_owned()), None),
            (None, Some("v1".to_owned())),
            (Some(String::new()), Some("+x".to_owned())),
        ] {
            let token = encode(e.clone(), v.clone()).unwrap();
            let back = decode(&token).unwrap();
            assert_eq!((back.e_tag, back.version), (e, v));
        }
        assert!(encode(None, None).is_none());
        for stranger in ["", "\n", "1", "x\ny", "+a"] {
            assert!(
                decode(&RingVersion::new(stranger)).is_none(),
                "{stranger:?}"
            );
        }
    }
}
