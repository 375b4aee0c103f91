//! Tenant blob storage for the async service: the [`AsyncBlobStore`]
//! trait and its backends (`docs/BLOBS.md`).
//!
//! - [`ObjectStoreBlobs`]: any `object_store` backend (Azure Blob, S3, GCS,
//!   the local filesystem); durable when the store's PUT has returned.
//! - [`LocalDirBlobs`]: a local directory, durable: each object is written
//!   to a temporary file, synced, renamed into place, and its directory
//!   synced before `put` returns.
//! - [`MemoryBlobs`]: in memory, for tests.
//!
//! Every method takes the tenant; names are built only from a typed
//! [`TenantId`] and [`ObjectKey`]. `put` re-checks the frame's tenant and
//! batch at the store's own boundary, and `get` returns bytes only if they
//! are exactly one frame of the tenant and batch asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use opsdata::{
    BatchId, FIXED_HEADER_LEN, Frame, FrameError, FrameLimits, ObjectKey, SEAL_SECTION_LEN,
    TenantId,
};

mod local;
mod object;

pub use local::LocalDirBlobs;
#[cfg(feature = "azure")]
pub use object::AzureBlobConfig;
pub use object::ObjectStoreBlobs;

/// What a [`AsyncBlobStore::put`] did: stored the frame, or found the
/// object already stored (by another node sharing the store, or by an
/// earlier try whose answer was lost) and left it as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum PutOutcome {
    /// The object did not exist; the frame is now stored under its name.
    Created,
    /// An object of that name was already stored; it was not replaced.
    /// It is durable too (the store synced it, or made it visible only
    /// once committed), so the batch is delivered: a duplicate.
    AlreadyExists,
}

/// Tenant storage the async service stores sealed frames in. Methods take
/// `&self` and may run concurrently (the service stores many frames at
/// once). Every method takes the tenant: no call can name another tenant's
/// object.
///
/// **Durability**: when `put` returns `Ok`, the object must survive a
/// crash or power cut (the service then answers the agent delivered and
/// the agent deletes its copy).
///
/// **Create if absent**: `put` never replaces a stored object. Of several
/// puts of one name, from one node or from several sharing the store,
/// exactly one answers [`PutOutcome::Created`]; the others answer
/// [`PutOutcome::AlreadyExists`] and the service answers them delivered,
/// as duplicates (`docs/BLOBS.md`).
pub trait AsyncBlobStore: Send + Sync + 'static {
    /// The store's own error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Stores `frame` as `object` of `tenant`, durably, if no object of
    /// that name is stored; otherwise leaves the stored one and answers
    /// [`PutOutcome::AlreadyExists`] (once that one is durable).
    /// Implementations refuse a frame of another tenant or batch.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn put(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> impl Future<Output = Result<PutOutcome, Self::Error>> + Send;

    /// The bytes of `object` of `tenant`, if stored.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn get(
        &self,
        tenant: TenantId,
        object: ObjectKey,
    ) -> impl Future<Output = Result<Option<Bytes>, Self::Error>> + Send;

    /// The objects of `tenant`, sorted.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn list(
        &self,
        tenant: TenantId,
    ) -> impl Future<Output = Result<Vec<ObjectKey>, Self::Error>> + Send;

    /// Removes `object` of `tenant`; removing what is not there is fine.
    ///
    /// # Errors
    ///
    /// The store's own.
    fn delete(
        &self,
        tenant: TenantId,
        object: ObjectKey,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// What the store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobOp {
    /// Building the store.
    Connect,
    /// Storing an object.
    Put,
    /// Reading an object.
    Get,
    /// Listing a tenant's objects.
    List,
    /// Removing an object.
    Delete,
}

impl fmt::Display for BlobOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlobOp::Connect => "connect",
            BlobOp::Put => "put",
            BlobOp::Get => "get",
            BlobOp::List => "list",
            BlobOp::Delete => "delete",
        })
    }
}

/// Why an [`ObjectStoreBlobs`] call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The underlying object store failed.
    #[error("object store {op}: {source}")]
    Store {
        /// What was being done.
        op: BlobOp,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// A local directory or file could not be created, written, synced or
    /// read.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: BlobOp,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The root prefix is not a valid object path.
    #[error("invalid root prefix: {source}")]
    InvalidRoot {
        /// Why.
        #[source]
        source: object_store::path::Error,
    },
    /// `put` of a frame whose header names another tenant than the one
    /// named.
    #[error("frame of tenant {found} put under tenant {tenant}")]
    WrongTenant {
        /// The tenant named.
        tenant: TenantId,
        /// The frame's.
        found: TenantId,
    },
    /// `put` of a frame whose header names another batch than the object's
    /// key.
    #[error("frame of batch {found} put as object {object:?}")]
    WrongObject {
        /// The object named.
        object: ObjectKey,
        /// The frame's batch.
        found: BatchId,
    },
    /// A stored object is larger than any frame the limits allow; it was not
    /// read.
    #[error(
        "stored object {object:?} of tenant {tenant} is {size} bytes, over the {max} a frame may have"
    )]
    TooLarge {
        /// The tenant asked for.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
        /// Its size.
        size: u64,
        /// The largest frame the limits allow.
        max: u64,
    },
    /// A stored object is not exactly one valid frame.
    #[error("stored object {object:?} of tenant {tenant} is not a frame: {source}")]
    NotAFrame {
        /// The tenant asked for.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
        /// The failed check.
        #[source]
        source: FrameError,
    },
    /// A frame to store is outside the store's frame limits
    /// ([`ObjectStoreBlobs::with_limits`]): stored, it could not be read
    /// back, so it is refused before anything is written.
    #[error(
        "frame {object:?} of tenant {tenant} would not read back under the store's limits: {source}"
    )]
    Unreadable {
        /// The tenant.
        tenant: TenantId,
        /// The object.
        object: ObjectKey,
        /// The failed check.
        #[source]
        source: FrameError,
    },
    /// A stored object is a frame of another tenant or batch than the name
    /// it is stored under.
    #[error(
        "stored object {object:?} of tenant {tenant} holds batch {found_batch} of tenant {found_tenant}"
    )]
    Misfiled {
        /// The tenant asked for.
        tenant: TenantId,
        /// The object asked for.
        object: ObjectKey,
        /// The frame's tenant.
        found_tenant: TenantId,
        /// The frame's batch.
        found_batch: BatchId,
    },
}

/// The largest object a frame within `limits` can be: a sealed frame's
/// prefix, the body limit plus the AES-GCM tag, the body CRC.
pub(crate) fn max_frame_len(limits: &FrameLimits) -> u64 {
    (FIXED_HEADER_LEN + SEAL_SECTION_LEN + 4) as u64 + u64::from(limits.max_body()) + 16 + 4
}

/// The checks before a put: the frame is `tenant`'s, of `object`'s batch,
/// and would read back under `limits` (what `get` would refuse is refused
/// now, so the service answers transient, not delivered, for data it could
/// not read back).
pub(crate) fn check_put(
    tenant: TenantId,
    object: ObjectKey,
    frame: &Frame,
    limits: &FrameLimits,
) -> Result<(), BlobError> {
    if frame.tenant() != tenant {
        return Err(BlobError::WrongTenant {
            tenant,
            found: frame.tenant(),
        });
    }
    if frame.batch_id() != object.batch_id() {
        return Err(BlobError::WrongObject {
            object,
            found: frame.batch_id(),
        });
    }
    Frame::decode(frame.as_bytes().clone(), limits).map_err(|source| BlobError::Unreadable {
        tenant,
        object,
        source,
    })?;
    Ok(())
}

/// The checks on stored bytes: exactly one frame, of `tenant` and
/// `object`'s batch.
pub(crate) fn check_stored(
    tenant: TenantId,
    object: ObjectKey,
    bytes: Bytes,
    limits: &FrameLimits,
) -> Result<Bytes, BlobError> {
    let frame = Frame::decode(bytes, limits).map_err(|source| BlobError::NotAFrame {
        tenant,
        object,
        source,
    })?;
    if frame.tenant() != tenant || frame.batch_id() != object.batch_id() {
        return Err(BlobError::Misfiled {
            tenant,
            object,
            found_tenant: frame.tenant(),
            found_batch: frame.batch_id(),
        });
    }
    Ok(frame.into_bytes())
}

/// The object name `text`, if it is a batch id in canonical form (the form
/// the stores write; `BatchId`'s parser also takes others, which are not
/// ours).
pub(crate) fn canonical_batch(text: &str) -> Option<ObjectKey> {
    let id: BatchId = text.parse().ok()?;
    (id.as_uuid().hyphenated().to_string() == text).then(|| ObjectKey::for_batch(id))
}

/// An [`AsyncBlobStore`] in memory, namespaced by tenant, for tests. Not
/// durable, obviously.
#[derive(Default)]
pub struct MemoryBlobs {
    tenants: Mutex<BTreeMap<TenantId, BTreeMap<ObjectKey, Bytes>>>,
    limits: FrameLimits,
}

impl fmt::Debug for MemoryBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = self.lock();
        f.debug_struct("MemoryBlobs")
            .field("tenants", &tenants.len())
            .field(
                "objects",
                &tenants.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}

impl MemoryBlobs {
    /// An empty store, checking frames against the default [`FrameLimits`].
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks frames against `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TenantId, BTreeMap<ObjectKey, Bytes>>> {
        // Each critical section leaves the map consistent.
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many objects `tenant` has.
    #[must_use]
    pub fn count(&self, tenant: TenantId) -> usize {
        self.lock().get(&tenant).map_or(0, BTreeMap::len)
    }
}

impl AsyncBlobStore for MemoryBlobs {
    type Error = BlobError;

    async fn put(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<PutOutcome, BlobError> {
        check_put(tenant, object, frame, &self.limits)?;
        let mut tenants = self.lock();
        match tenants.entry(tenant).or_default().entry(object) {
            std::collections::btree_map::Entry::Occupied(_) => Ok(PutOutcome::AlreadyExists),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(frame.as_bytes().clone());
                Ok(PutOutcome::Created)
            }
        }
    }

    async fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        let bytes = self
            .lock()
            .get(&tenant)
            .and_then(|t| t.get(&object))
            .cloned();
        bytes
            .map(|b| check_stored(tenant, object, b, &self.limits))
            .transpose()
    }

    async fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        Ok(self
            .lock()
            .get(&tenant)
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default())
    }

    async fn delete(&self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        if let Some(t) = self.lock().get_mut(&tenant) {
            t.remove(&object);
        }
        Ok(())
    }
}
