//! [`LocalDirBlobs`]: a durable local-directory blob store.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;
use opsdata::{Frame, FrameLimits, ObjectKey, TenantId};

use super::{
    AsyncBlobStore, BlobError, BlobOp, PutOutcome, canonical_batch, check_put, check_stored,
    max_frame_len,
};

/// An [`AsyncBlobStore`] in a local directory, durable: `put` writes the
/// frame to a temporary file in the tenant's directory, syncs it, links it
/// to its name with `link(2)` (which fails if the name exists: create if
/// absent, atomic, never replacing), removes the temporary name, and syncs
/// the directory (and, the first time a tenant's directory is made, its
/// parent) before returning. A crash leaves either no object or the whole
/// one, never a torn one; temporary files left by a crash start with `.`
/// and are never listed.
///
/// If the name exists (another process on the same directory, or an
/// earlier try, stored it), `put` answers [`PutOutcome::AlreadyExists`]
/// after syncing the directory, so the existing object is durable before
/// the batch is acknowledged. The file system must support hard links
/// (every local Linux one does; some network or FAT file systems do not).
///
/// Concurrent puts into one tenant's directory share directory syncs: a
/// put returns once a sync of the directory that started after its link
/// has succeeded (group commit), so many small frames do not cost one
/// directory sync each.
///
/// Layout (as [`ObjectStoreBlobs`](crate::ObjectStoreBlobs) on a local
/// filesystem): `<dir>/<tenant>/<batch>`, canonical UUID texts.
///
/// The file system calls run on tokio's blocking pool
/// (`spawn_blocking`), so many puts proceed at once without blocking the
/// async workers.
#[derive(Debug, Clone)]
pub struct LocalDirBlobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    limits: FrameLimits,
    /// Tenants whose directory is known to exist durably.
    made: Mutex<HashSet<TenantId>>,
    /// One directory sync per tenant directory serves every rename made
    /// before it started (group commit).
    dir_syncs: Mutex<HashMap<TenantId, Arc<DirSync>>>,
}

/// Coalesces directory syncs: a put whose rename happened before a sync
/// started is covered by that sync; puts arriving while one runs share the
/// next one.
#[derive(Debug, Default)]
struct DirSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Renames done (each put takes the next number after its rename).
    requested: u64,
    /// Every rename numbered up to this is durable.
    completed: u64,
    /// A sync is running.
    syncing: bool,
}

impl DirSync {
    /// Returns once a sync of `dir` that started after this call's rename
    /// (made before the call) has succeeded.
    fn sync_after_rename(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.requested += 1;
        let mine = st.requested;
        loop {
            if st.completed >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Every rename numbered up to `target` happened before this
            // sync starts, so it covers them.
            let target = st.requested;
            st.syncing = true;
            drop(st);
            let r = sync_dir(dir);
            st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.syncing = false;
            if r.is_ok() {
                st.completed = st.completed.max(target);
            }
            self.done.notify_all();
            // A failed sync fails the put that ran it; the others waiting
            // try again themselves.
            r?;
        }
    }
}

/// Makes temporary names unique within the process, across every store
/// (two stores on one directory in one process must not share a name).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

fn io_err(op: BlobOp) -> impl FnOnce(io::Error) -> BlobError {
    move |source| BlobError::Io { op, source }
}

/// Syncs a directory, so a rename or a new entry in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LocalDirBlobs {
    /// A store in `dir`, created (and synced into its parent) if missing;
    /// frames checked against the default [`FrameLimits`].
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`] if the directory cannot be created or synced.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, BlobError> {
        let dir = dir.as_ref().to_path_buf();
        let connect = io_err(BlobOp::Connect);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(connect)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(io_err(BlobOp::Connect))?;
            }
        }
        Ok(LocalDirBlobs {
            inner: Arc::new(Inner {
                dir,
                limits: FrameLimits::default(),
                made: Mutex::new(HashSet::new()),
                dir_syncs: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Checks frames against `limits` (use the ingest pipeline's).
    #[must_use]
    pub fn with_limits(self, limits: FrameLimits) -> Self {
        let inner = Inner {
            dir: self.inner.dir.clone(),
            limits,
            made: Mutex::new(HashSet::new()),
            dir_syncs: Mutex::new(HashMap::new()),
        };
        LocalDirBlobs {
            inner: Arc::new(inner),
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file `object` of `tenant` is stored in.
    #[must_use]
    pub fn object_path(&self, tenant: TenantId, object: ObjectKey) -> PathBuf {
        self.tenant_dir(tenant)
            .join(object.batch_id().as_uuid().hyphenated().to_string())
    }

    fn tenant_dir(&self, tenant: TenantId) -> PathBuf {
        self.inner
            .dir
            .join(tenant.as_uuid().hyphenated().to_string())
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: BlobOp,
        f: impl FnOnce(&LocalDirBlobs) -> Result<T, BlobError> + Send + 'static,
    ) -> Result<T, BlobError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| BlobError::Io {
                op,
                source: io::Error::other(e.to_string()),
            })?
    }

    fn put_sync(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        bytes: &[u8],
    ) -> Result<PutOutcome, BlobError> {
        let err = io_err(BlobOp::Put);
        let dir = self.tenant_dir(tenant);
        let known = self
            .inner
            .made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&tenant);
        if !known {
            fs::create_dir_all(&dir).map_err(err)?;
            // The tenant directory's entry in the store's directory must be
            // durable too, or a synced object could vanish with it.
            sync_dir(&self.inner.dir).map_err(io_err(BlobOp::Put))?;
            self.inner
                .made
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant);
        }
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let name = object.batch_id().as_uuid().hyphenated().to_string();
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let syncer = Arc::clone(
            self.inner
                .dir_syncs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(tenant)
                .or_default(),
        );
        let write = || -> io::Result<PutOutcome> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            // The data and the length (fdatasync covers the size of a
            // file written for the first time).
            f.sync_data()?;
            drop(f);
            // Create if absent: `link` fails with `AlreadyExists` if the
            // name is taken, and never replaces it.
            let outcome = match fs::hard_link(&tmp, dir.join(&name)) {
                Ok(()) => PutOutcome::Created,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => PutOutcome::AlreadyExists,
                Err(e) => return Err(e),
            };
            fs::remove_file(&tmp)?;
            // Our link, or the other writer's, is made durable before the
            // answer (the other may not have synced it yet).
            syncer.sync_after_rename(&dir)?;
            Ok(outcome)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            BlobError::Io {
                op: BlobOp::Put,
                source: e,
            }
        })
    }

    fn get_sync(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        let err = io_err(BlobOp::Get);
        let path = self.object_path(tenant, object);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let max = max_frame_len(&self.inner.limits);
        let size = f.metadata().map_err(io_err(BlobOp::Get))?.len();
        if size > max {
            return Err(BlobError::TooLarge {
                tenant,
                object,
                size,
                max,
            });
        }
        // Read at most one byte past the largest frame: a file that grew
        // since the size was taken is still bounded.
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        Read::by_ref(&mut f)
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(io_err(BlobOp::Get))?;
        check_stored(tenant, object, Bytes::from(buf), &self.inner.limits).map(Some)
    }

    fn list_sync(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        let entries = match fs::read_dir(self.tenant_dir(tenant)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(BlobOp::List)(e)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(BlobOp::List))?;
            if !entry.file_type().map_err(io_err(BlobOp::List))?.is_file() {
                continue;
            }
            if let Some(key) = entry.file_name().to_str().and_then(canonical_batch) {
                keys.push(key);
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    fn delete_sync(&self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        match fs::remove_file(self.object_path(tenant, object)) {
            Ok(()) => sync_dir(&self.tenant_dir(tenant)).map_err(io_err(BlobOp::Delete)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(BlobOp::Delete)(e)),
        }
    }
}

impl AsyncBlobStore for LocalDirBlobs {
    type Error = BlobError;

    /// Stores `frame` durably if no object of its name is stored (see the
    /// type's docs).
    ///
    /// # Errors
    ///
    /// [`BlobError::WrongTenant`], [`BlobError::WrongObject`],
    /// [`BlobError::Unreadable`] before anything is written;
    /// [`BlobError::Io`].
    async fn put(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<PutOutcome, BlobError> {
        check_put(tenant, object, frame, &self.inner.limits)?;
        let bytes = frame.as_bytes().clone();
        self.blocking(BlobOp::Put, move |s| s.put_sync(tenant, object, &bytes))
            .await
    }

    /// The bytes of `object` of `tenant`, if stored; only if they are
    /// exactly one whole frame of that tenant and batch.
    ///
    /// # Errors
    ///
    /// [`BlobError::TooLarge`] (not read), [`BlobError::NotAFrame`],
    /// [`BlobError::Misfiled`], [`BlobError::Io`].
    async fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        self.blocking(BlobOp::Get, move |s| s.get_sync(tenant, object))
            .await
    }

    /// The files in the tenant's directory named by a canonical batch id,
    /// sorted; anything else is skipped.
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`].
    async fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        self.blocking(BlobOp::List, move |s| s.list_sync(tenant))
            .await
    }

    /// Removes the object and syncs its directory.
    ///
    /// # Errors
    ///
    /// [`BlobError::Io`].
    async fn delete(&self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        self.blocking(BlobOp::Delete, move |s| s.delete_sync(tenant, object))
            .await
    }
}
