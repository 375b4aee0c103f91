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
//! # Async
//!
//! [`ObjectStoreBlobs`] implements [`AsyncBlobStore`]: its methods are
//! `async` and run on whatever tokio runtime polls them (it has no runtime
//! of its own). A cloud store's `put` has returned only once the PUT has.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use opsdata::{Frame, FrameLimits, ObjectKey, TenantId};

use super::{
    AsyncBlobStore, BlobError, BlobOp, PutOutcome, canonical_batch, check_put, check_stored,
    max_frame_len,
};

/// An [`AsyncBlobStore`] over an [`object_store::ObjectStore`], each
/// tenant under its own prefix. See the module docs for the layout and the
/// checks.
///
/// ```
/// use opsdata::{ObjectKey, BatchId, TenantId};
/// use opsdata_io::{AsyncBlobStore, ObjectStoreBlobs};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("opsdata-blobs-doc-{}", std::process::id()));
/// let store = ObjectStoreBlobs::local(&dir)?.with_root("frames")?;
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let key = ObjectKey::for_batch("7c9e6679-7425-40de-944b-e07fc1f90ae7".parse::<BatchId>()?);
/// assert_eq!(
///     store.object_path(tenant, key).as_ref(),
///     "frames/0f8fad5b-d9cb-469f-a165-70867728950e/7c9e6679-7425-40de-944b-e07fc1f90ae7"
/// );
/// assert!(store.get(tenant, key).await?.is_none());
/// assert!(store.list(tenant).await?.is_empty());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    root: Path,
    limits: FrameLimits,
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

impl ObjectStoreBlobs {
    /// Blob storage over `store`, with no root prefix and the default
    /// [`FrameLimits`].
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        ObjectStoreBlobs {
            store,
            root: Path::default(),
            limits: FrameLimits::default(),
        }
    }

    /// Blob storage in the local directory `dir`, created if missing,
    /// through `object_store`'s `LocalFileSystem` with its fsync turned on
    /// (the file, then the directory after the rename). For the service's
    /// durable local store prefer [`LocalDirBlobs`](crate::LocalDirBlobs),
    /// which also syncs a new tenant directory's parent.
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`] if the directory cannot be created,
    /// [`BlobError::Store`] if it cannot be opened.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir.as_ref()).map_err(|source| BlobError::Io {
            op: BlobOp::Connect,
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map(|fs| fs.with_fsync(true))
            .map_err(|source| BlobError::Store {
                op: BlobOp::Connect,
                source,
            })?;
        Ok(Self::new(Arc::new(fs)))
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
    /// key or endpoint).
    #[cfg(feature = "azure")]
    pub fn azure(config: &AzureBlobConfig) -> Result<Self, BlobError> {
        let azure = config.build().map_err(|source| BlobError::Store {
            op: BlobOp::Connect,
            source,
        })?;
        Ok(Self::new(azure))
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
}

impl AsyncBlobStore for ObjectStoreBlobs {
    type Error = BlobError;

    /// Stores `frame` as `object` of `tenant` with a conditional write
    /// (`PutMode::Create`: create if absent); done when the store's PUT has
    /// returned. If the object exists (another node, or an earlier try,
    /// stored it), it is left as it is and the answer is
    /// [`PutOutcome::AlreadyExists`].
    ///
    /// # Errors
    ///
    /// [`BlobError::WrongTenant`], [`BlobError::WrongObject`],
    /// [`BlobError::Unreadable`] before anything is written;
    /// [`BlobError::Store`] (also for a store that does not implement
    /// conditional creation).
    async fn put(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<PutOutcome, BlobError> {
        check_put(tenant, object, frame, &self.limits)?;
        let path = self.object_path(tenant, object);
        let payload = PutPayload::from(frame.as_bytes().clone());
        match self
            .store
            .put_opts(&path, payload, PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(source) => Err(BlobError::Store {
                op: BlobOp::Put,
                source,
            }),
        }
    }

    /// The bytes of `object` of `tenant`, if stored; only if they are
    /// exactly one whole frame of that tenant and batch.
    ///
    /// # Errors
    ///
    /// [`BlobError::TooLarge`] (not read), [`BlobError::NotAFrame`],
    /// [`BlobError::Misfiled`]; [`BlobError::Store`].
    async fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        let path = self.object_path(tenant, object);
        let max = max_frame_len(&self.limits);
        let store = |source| BlobError::Store {
            op: BlobOp::Get,
            source,
        };
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store(e)),
        };
        if result.meta.size > max {
            return Err(BlobError::TooLarge {
                tenant,
                object,
                size: result.meta.size,
                max,
            });
        }
        let bytes = result.bytes().await.map_err(store)?;
        check_stored(tenant, object, bytes, &self.limits).map(Some)
    }

    /// The objects of `tenant`, in name order: the names directly under its
    /// prefix that are a batch id in canonical form. Other names there
    /// (deeper paths, names that are not batch ids, names the backend
    /// cannot represent as object paths) are skipped, not errors.
    ///
    /// # Errors
    ///
    /// [`BlobError::Store`].
    async fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        let prefix = self.tenant_prefix(tenant);
        let mut keys = Vec::new();
        let mut stream = self.store.list(Some(&prefix));
        while let Some(item) = stream.next().await {
            let meta = match item {
                Ok(meta) => meta,
                // A name under the prefix that is not a valid object
                // path (the local filesystem reports these per entry)
                // cannot be one of ours.
                Err(object_store::Error::InvalidPath { .. }) => continue,
                Err(source) => {
                    return Err(BlobError::Store {
                        op: BlobOp::List,
                        source,
                    });
                }
            };
            let Some(mut rest) = meta.location.prefix_match(&prefix) else {
                continue;
            };
            if let (Some(name), None) = (rest.next(), rest.next())
                && let Some(key) = canonical_batch(name.as_ref())
            {
                keys.push(key);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Removes `object` of `tenant`; removing what is not there is fine.
    ///
    /// # Errors
    ///
    /// [`BlobError::Store`].
    async fn delete(&self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        let path = self.object_path(tenant, object);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(BlobError::Store {
                op: BlobOp::Delete,
                source,
            }),
        }
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

    /// The store this configuration names.
    pub(crate) fn build(&self) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
        let mut builder = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_container_name(&self.container)
            .with_access_key(&self.access_key)
            .with_allow_http(self.allow_http);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        Ok(Arc::new(builder.build()?))
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
