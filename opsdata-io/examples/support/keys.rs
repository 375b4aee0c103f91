//! A file-backed `KeyStore` for the example service: one sealed ring per
//! tenant in `<dir>/keys/<tenant>.ring`, and the wrapping key in
//! `<dir>/wrapping.key` (32 random bytes, created 0600 if missing).
//!
//! Each ring is written atomically: a temporary file, fsync, rename over
//! the old one, fsync of the directory. A real service keeps its rings in
//! a vault and its wrapping key in an HSM or KMS.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use opsdata::{Entropy, KeyMaterial, KeyStore, TenantId, WrappingKey};

/// Sealed key rings, one file per tenant. It has no compare-and-swap, so
/// it is for one service node: it holds an exclusive lock on
/// `<dir>/.lock` while open, and a second node on the same directory
/// refuses to start (`docs/SCALE.md`).
#[derive(Debug)]
pub struct FileKeyStore {
    dir: PathBuf,
    _lock: File,
}

impl FileKeyStore {
    /// Keeps rings in `dir`, created if missing.
    ///
    /// # Errors
    ///
    /// `io::ErrorKind::WouldBlock` if another process has it open.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        // Tried for 50 ms, as the spool does: a closed file's lock lasts
        // while another process reads our /proc/<pid>/fd, so a node
        // restarted right after its predecessor exited could be refused.
        let mut tries = 1;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) if tries < 11 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "{} is used by another service node: this file key store has no \
                             compare-and-swap, so it serves one node (run several over Azure \
                             with --shared-keys; docs/SCALE.md)",
                            dir.display()
                        ),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(FileKeyStore {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn path(&self, tenant: TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.ring"))
    }
}

impl KeyStore for FileKeyStore {
    type Error = io::Error;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> io::Result<()> {
        let path = self.path(tenant);
        let tmp = self.dir.join(format!("{tenant}.ring.tmp"));
        {
            let mut f = create_private(&tmp)?;
            f.write_all(sealed)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)
    }

    fn get(&self, tenant: TenantId) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(tenant)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The wrapping key in `path`, generated (and written 0600) if missing.
pub fn wrapping_key(path: &Path, entropy: &mut dyn Entropy) -> io::Result<WrappingKey> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    match File::open(path) {
        Ok(mut f) => {
            let mut all = Vec::new();
            f.read_to_end(&mut all)?;
            if all.len() != 32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a wrapping key is 32 bytes", path.display()),
                ));
            }
            bytes.copy_from_slice(&all);
            zeroize::Zeroize::zeroize(&mut all);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            entropy.fill(&mut bytes[..]).map_err(io::Error::other)?;
            let tmp = path.with_extension("key.tmp");
            {
                let mut f = create_private(&tmp)?;
                f.write_all(&bytes[..])?;
                f.sync_all()?;
            }
            fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            println!("generated a wrapping key in {}", path.display());
        }
        Err(e) => return Err(e),
    }
    Ok(WrappingKey::new(1, KeyMaterial::from_bytes(*bytes)))
}

/// Creates (truncating) a file only its owner can read.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be
/// opened for syncing).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
