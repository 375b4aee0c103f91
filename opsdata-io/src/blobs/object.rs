//! [`ObjectStoreBlobs`]: an [`opsdata::BlobStore`] over any
//! [`object_store::ObjectStore`] (Azure Blob, S3, GCS, the local
//! filesystem), each tenant under its own prefix (`docs/BLOBS.md`).
//!
//! # Layout
//!
//! The object of batch `B` of tenant `T` is named
//!
//! ```text
//! [<root>/]<T>/<B>
//! ```
//!
//! where `<T>` and `<B>` are the canonical (lowercase, hyphenated) UUID
//! texts of the tenant id and the batch id, and `<root>` is the optional
//! root prefix the store was configured with. Names are built only from a
//! typed [`TenantId`] and [`ObjectKey`], never from caller text, so no call
//! can name another tenant's object. Listing a tenant returns only the
//! names directly under its prefix that are a canonical batch id; anything
//! else found there is skipped.
//!
//! # The tenant rule
//!
//! The store checks the tenant tag at its own boundary: `put` refuses a
//! frame whose header names another tenant or another batch than the
//! object's; `get` returns bytes only if they are exactly one whole frame
//! (header and body CRCs checked) of the tenant and batch asked for.
//!
//! # Threads and async
//!
//! [`BlobStore`] is synchronous and `object_store` is async: the store owns
//! a tokio current-thread runtime and blocks on it. Call it from a plain
//! thread. Called from a thread that is inside a tokio runtime (an async
//! task, or a `spawn_blocking` thread), every method returns
//! [`BlobError::InsideAsyncRuntime`] instead of blocking or panicking.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use opsdata::{
    BatchId, BlobStore, FIXED_HEADER_LEN, Frame, FrameError, FrameLimits, ObjectKey,
    SEAL_SECTION_LEN, TenantId,
};

/// What the store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobOp {
    /// Building the store or its runtime.
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
    /// The tokio runtime could not be built, or the local directory could
    /// not be created.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: BlobOp,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The method was called from inside a tokio runtime, where blocking on
    /// the store's own runtime would panic. Call it from a plain thread.
    #[error("blob store {op} called from inside an async runtime; call it from a plain thread")]
    InsideAsyncRuntime {
        /// The method called.
        op: BlobOp,
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

/// An [`opsdata::BlobStore`] over an [`object_store::ObjectStore`], each
/// tenant under its own prefix. See the module docs for the layout, the
/// checks and the threading rules.
///
/// ```
/// use opsdata::{BlobStore, ObjectKey, BatchId, TenantId};
/// use opsdata_io::ObjectStoreBlobs;
///
/// let dir = std::env::temp_dir().join(format!("opsdata-blobs-doc-{}", std::process::id()));
/// let store = ObjectStoreBlobs::local(&dir)?.with_root("frames")?;
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let key = ObjectKey::for_batch("7c9e6679-7425-40de-944b-e07fc1f90ae7".parse::<BatchId>()?);
/// assert_eq!(
///     store.object_path(tenant, key).as_ref(),
///     "frames/0f8fad5b-d9cb-469f-a165-70867728950e/7c9e6679-7425-40de-944b-e07fc1f90ae7"
/// );
/// assert!(store.get(tenant, key)?.is_none());
/// assert!(store.list(tenant)?.is_empty());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    root: Path,
    limits: FrameLimits,
    /// Always `Some` until `drop`, which takes it to shut it down without
    /// blocking when dropped inside an async runtime.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for ObjectStoreBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's Display (its kind, account and container or root
        // directory), never its Debug, which may hold credentials.
        f.debug_struct("ObjectStoreBlobs")
            .field("store", &format_args!("{}", self.store))
            .field("root", &self.root.as_ref())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Drop for ObjectStoreBlobs {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            // Dropping a runtime inside another one panics; this does not.
            runtime.shutdown_background();
        }
    }
}

impl ObjectStoreBlobs {
    /// Blob storage over `store`, with no root prefix and the default
    /// [`FrameLimits`].
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`] if the runtime cannot be built.
    pub fn new(store: Arc<dyn ObjectStore>) -> Result<Self, BlobError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| BlobError::Io {
                op: BlobOp::Connect,
                source,
            })?;
        Ok(ObjectStoreBlobs {
            store,
            root: Path::default(),
            limits: FrameLimits::default(),
            runtime: Some(runtime),
        })
    }

    /// Blob storage in the local directory `dir`, created if missing.
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`] if the directory cannot be created or the runtime
    /// built, [`BlobError::Store`] if the directory cannot be opened.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir.as_ref()).map_err(|source| BlobError::Io {
            op: BlobOp::Connect,
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|source| {
            BlobError::Store {
                op: BlobOp::Connect,
                source,
            }
        })?;
        Self::new(Arc::new(fs))
    }

    /// Blob storage in an Azure Blob Storage container (or Azurite, the
    /// emulator), authenticated with the account key. For other
    /// credentials (managed identity, SAS, Entra ID), build a
    /// `MicrosoftAzure` with `object_store::azure::MicrosoftAzureBuilder`
    /// and pass it to [`ObjectStoreBlobs::new`].
    ///
    /// The container must exist: `object_store` does not create containers.
    ///
    /// # Errors
    ///
    /// [`BlobError::Store`] if the configuration is refused (a malformed
    /// key or endpoint), [`BlobError::Io`] if the runtime cannot be built.
    #[cfg(feature = "azure")]
    pub fn azure(config: &AzureBlobConfig) -> Result<Self, BlobError> {
        let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(&config.account)
            .with_container_name(&config.container)
            .with_access_key(&config.access_key)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let azure = builder.build().map_err(|source| BlobError::Store {
            op: BlobOp::Connect,
            source,
        })?;
        Self::new(Arc::new(azure))
    }

    /// Puts every tenant under `root` (a `/`-separated object path such as
    /// `"opsdata/frames"`; empty for none).
    ///
    /// # Errors
    ///
    /// [`BlobError::InvalidRoot`] if `root` is not a valid object path
    /// (empty segments, `.` or `..`, control characters; see
    /// `object_store::path::Path::parse`).
    pub fn with_root(mut self, root: &str) -> Result<Self, BlobError> {
        self.root = Path::parse(root).map_err(|source| BlobError::InvalidRoot { source })?;
        Ok(self)
    }

    /// The frame limits objects read back are checked against (default
    /// [`FrameLimits::default`]): use the ingest pipeline's.
    #[must_use]
    pub fn with_limits(mut self, limits: FrameLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The root prefix (empty for none).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The prefix all of `tenant`'s objects are under: `[<root>/]<tenant>`.
    #[must_use]
    pub fn tenant_prefix(&self, tenant: TenantId) -> Path {
        self.root
            .clone()
            .join(tenant.as_uuid().hyphenated().to_string())
    }

    /// The name `object` of `tenant` is stored under:
    /// `[<root>/]<tenant>/<batch id>`.
    #[must_use]
    pub fn object_path(&self, tenant: TenantId, object: ObjectKey) -> Path {
        self.tenant_prefix(tenant)
            .join(object.batch_id().as_uuid().hyphenated().to_string())
    }

    /// The largest object a frame within the limits can be: a sealed
    /// frame's prefix, the body limit plus the AES-GCM tag, the body CRC.
    fn max_frame_len(&self) -> u64 {
        (FIXED_HEADER_LEN + SEAL_SECTION_LEN + 4) as u64
            + u64::from(self.limits.max_body())
            + 16
            + 4
    }

    /// Runs `fut` to completion on the store's runtime.
    fn block_on<T>(
        &self,
        op: BlobOp,
        fut: impl Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, BlobError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BlobError::InsideAsyncRuntime { op });
        }
        let Some(runtime) = &self.runtime else {
            // Invariant: `runtime` is set by the constructor and only taken
            // in `drop`, after which no method can run.
            unreachable!("the runtime is only taken in drop");
        };
        runtime
            .block_on(fut)
            .map_err(|source| BlobError::Store { op, source })
    }
}

/// The object name `part`, if it is a batch id in canonical form (the form
/// [`ObjectStoreBlobs::object_path`] writes; `BatchId`'s parser also takes
/// others, which are not ours).
fn canonical_batch(part: &PathPart<'_>) -> Option<ObjectKey> {
    let text = part.as_ref();
    let id: BatchId = text.parse().ok()?;
    (id.as_uuid().hyphenated().to_string() == text).then(|| ObjectKey::for_batch(id))
}

impl BlobStore for ObjectStoreBlobs {
    type Error = BlobError;

    /// Stores `frame` as `object` of `tenant` (replacing what was there:
    /// a rewrapped frame replaces its older seal).
    ///
    /// # Errors
    ///
    /// [`BlobError::WrongTenant`] if the frame's header names another
    /// tenant, [`BlobError::WrongObject`] if it names another batch than
    /// `object`, [`BlobError::Unreadable`] if [`get`](BlobStore::get) could
    /// not read it back under the store's limits, all before anything is
    /// written; [`BlobError::InsideAsyncRuntime`], [`BlobError::Store`].
    fn put(&mut self, tenant: TenantId, object: ObjectKey, frame: &Frame) -> Result<(), BlobError> {
        // The store checks the tag too, at its own boundary.
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
        // What `get` would refuse is refused now, so the host answers the
        // agent Transient instead of Delivered for data it cannot read back
        // (a service whose frame limits are larger than the store's).
        Frame::decode(frame.as_bytes().clone(), &self.limits).map_err(|source| {
            BlobError::Unreadable {
                tenant,
                object,
                source,
            }
        })?;
        let path = self.object_path(tenant, object);
        let payload = PutPayload::from(frame.as_bytes().clone());
        self.block_on(BlobOp::Put, async {
            self.store.put(&path, payload).await.map(|_| ())
        })
    }

    /// The bytes of `object` of `tenant`, if stored; only if they are
    /// exactly one whole frame of that tenant and batch.
    ///
    /// # Errors
    ///
    /// [`BlobError::TooLarge`] (not read), [`BlobError::NotAFrame`],
    /// [`BlobError::Misfiled`] for an object that is not that tenant's
    /// frame of that batch; [`BlobError::InsideAsyncRuntime`],
    /// [`BlobError::Store`].
    fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        let path = self.object_path(tenant, object);
        let max = self.max_frame_len();
        let read = self.block_on(BlobOp::Get, async {
            let result = match self.store.get(&path).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if result.meta.size > max {
                return Ok(Some(Err(result.meta.size)));
            }
            result.bytes().await.map(|b| Some(Ok(b)))
        })?;
        let bytes = match read {
            None => return Ok(None),
            Some(Err(size)) => {
                return Err(BlobError::TooLarge {
                    tenant,
                    object,
                    size,
                    max,
                });
            }
            Some(Ok(bytes)) => bytes,
        };
        let frame = Frame::decode(bytes, &self.limits).map_err(|source| BlobError::NotAFrame {
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
        Ok(Some(frame.into_bytes()))
    }

    /// The objects of `tenant`, in name order: the names directly under its
    /// prefix that are a batch id in canonical form. Other names there
    /// (deeper paths, names that are not batch ids, names the backend
    /// cannot represent as object paths) are skipped, not errors.
    ///
    /// # Errors
    ///
    /// [`BlobError::InsideAsyncRuntime`], [`BlobError::Store`].
    fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        let prefix = self.tenant_prefix(tenant);
        let mut keys = self.block_on(BlobOp::List, async {
            let mut keys = Vec::new();
            let mut stream = self.store.list(Some(&prefix));
            while let Some(item) = stream.next().await {
                let meta = match item {
                    Ok(meta) => meta,
                    // A name under the prefix that is not a valid object
                    // path (the local filesystem reports these per entry)
                    // cannot be one of ours.
                    Err(object_store::Error::InvalidPath { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let Some(mut rest) = meta.location.prefix_match(&prefix) else {
                    continue;
                };
                if let (Some(name), None) = (rest.next(), rest.next())
                    && let Some(key) = canonical_batch(&name)
                {
                    keys.push(key);
                }
            }
            Ok(keys)
        })?;
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Removes `object` of `tenant`; removing what is not there is fine.
    ///
    /// # Errors
    ///
    /// [`BlobError::InsideAsyncRuntime`], [`BlobError::Store`].
    fn delete(&mut self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        let path = self.object_path(tenant, object);
        self.block_on(BlobOp::Delete, async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// The account key Azurite and the legacy storage emulator accept for
/// their well-known account `devstoreaccount1`. Public, not a secret:
/// <https://learn.microsoft.com/azure/storage/common/storage-use-azurite#well-known-storage-account-and-key>.
#[cfg(feature = "azure")]
const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where an Azure Blob Storage container is and how to authenticate to it,
/// for [`ObjectStoreBlobs::azure`]. Its `Debug` never shows the key.
#[cfg(feature = "azure")]
#[derive(Clone)]
pub struct AzureBlobConfig {
    account: String,
    container: String,
    access_key: String,
    endpoint: Option<String>,
    allow_http: bool,
}

#[cfg(feature = "azure")]
impl fmt::Debug for AzureBlobConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBlobConfig")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("access_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

#[cfg(feature = "azure")]
impl AzureBlobConfig {
    /// Container `container` of storage account `account`
    /// (`https://<account>.blob.core.windows.net`), authenticated with the
    /// account's base64 access key.
    #[must_use]
    pub fn new(
        account: impl Into<String>,
        container: impl Into<String>,
        access_key: impl Into<String>,
    ) -> Self {
        AzureBlobConfig {
            account: account.into(),
            container: container.into(),
            access_key: access_key.into(),
            endpoint: None,
            allow_http: false,
        }
    }

    /// Container `container` of Azurite's well-known account
    /// `devstoreaccount1`, served at `blob_endpoint` (such as
    /// `http://127.0.0.1:10000`; path-style URLs, plain HTTP allowed).
    #[must_use]
    pub fn emulator(blob_endpoint: &str, container: impl Into<String>) -> Self {
        let account = "devstoreaccount1";
        AzureBlobConfig {
            endpoint: Some(format!("{}/{account}", blob_endpoint.trim_end_matches('/'))),
            allow_http: true,
            ..AzureBlobConfig::new(account, container, EMULATOR_ACCOUNT_KEY)
        }
    }

    /// Serves the account at `endpoint` instead of
    /// `https://<account>.blob.core.windows.net` (a sovereign cloud, a
    /// private endpoint, an emulator: `http://host:port/<account>`).
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Allows plain HTTP endpoints (default: HTTPS only).
    #[must_use]
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// The storage account.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The container.
    #[must_use]
    pub fn container(&self) -> &str {
        &self.container
    }
}
