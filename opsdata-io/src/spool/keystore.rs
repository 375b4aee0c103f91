//! Where the spool key lives: [`SpoolKeyStore`] and its implementations
//! (a 0600 key file, the platform credential stores through the `keyring`
//! crate), and [`SpoolProtection`], the host's explicit choice of one.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use opsdata::RotationPolicy;
use zeroize::Zeroizing;

use crate::clock::Clock;

/// The length of a spool key: 32 bytes (AES-256).
pub const SPOOL_KEY_LEN: usize = 32;

/// A spool key's bytes, wiped when dropped.
pub type SpoolKeyBytes = Zeroizing<[u8; SPOOL_KEY_LEN]>;

/// An error of a [`SpoolKeyStore`]. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolKeyError {
    /// A file operation failed.
    #[error("key file {}: {op}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by others than its owner (its mode is not
    /// 0600 or stricter): it is refused, not used.
    #[error("key file {} has mode {mode:o}: only its owner may read it (0600)", path.display())]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// What the store holds is not a spool key (not 64 hex digits in a
    /// key file, not 32 bytes in a credential store).
    #[error("{store}: does not hold a spool key ({reason})")]
    Malformed {
        /// The store.
        store: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The platform credential store failed.
    #[error("{store}: {message}")]
    Platform {
        /// The store.
        store: String,
        /// The platform's message.
        message: String,
    },
}

/// Where a spool's key lives. The host picks one explicitly
/// ([`SpoolProtection::new`]); nothing is chosen for it.
///
/// | store | survives a reboot |
/// |---|---|
/// | [`KeyFileStore`] (0600 file) | yes |
/// | [`OsKeyStore::kernel_keyring`] (Linux keyutils) | **no** (and the persistent keyring expires after days unused) |
/// | [`OsKeyStore`] Secret Service / Keychain / Credential Manager | yes |
pub trait SpoolKeyStore: fmt::Debug + Send {
    /// The stored key, if there is one.
    ///
    /// # Errors
    ///
    /// The store's own ([`SpoolKeyError`]).
    fn load(&self) -> Result<Option<SpoolKeyBytes>, SpoolKeyError>;

    /// Stores a newly made key. Called only when [`load`](Self::load)
    /// found none.
    ///
    /// # Errors
    ///
    /// The store's own; nothing is stored then.
    fn store(&mut self, key: &[u8; SPOOL_KEY_LEN]) -> Result<(), SpoolKeyError>;

    /// Whether the key is still there after the machine restarts.
    fn survives_reboot(&self) -> bool;

    /// Where the key is, for errors and logs (never the key).
    fn describe(&self) -> String;
}

/// A spool key in a file of its own: 64 lower-case hex digits and a line
/// feed, mode 0600, created with the key and never rewritten. Keep it
/// outside the spool directory (on another volume, or in a directory only
/// the agent's user can read), so that a copy of the spool directory alone
/// does not carry it. Survives a reboot.
#[derive(Debug, Clone)]
pub struct KeyFileStore {
    path: PathBuf,
}

impl KeyFileStore {
    /// The key file at `path` (need not exist yet).
    #[must_use]
    pub fn new(path: impl AsRef<Path>) -> Self {
        KeyFileStore {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SpoolKeyError + '_ {
        move |source| SpoolKeyError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl SpoolKeyStore for KeyFileStore {
    fn load(&self) -> Result<Option<SpoolKeyBytes>, SpoolKeyError> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err("open")(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = f.metadata().map_err(self.err("stat"))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SpoolKeyError::Insecure {
                    path: self.path.clone(),
                    mode,
                });
            }
        }
        let mut text = Zeroizing::new(Vec::with_capacity(66));
        (&mut f)
            .take(66)
            .read_to_end(&mut text)
            .map_err(self.err("read"))?;
        let malformed = |reason| SpoolKeyError::Malformed {
            store: self.describe(),
            reason,
        };
        let digits = text.strip_suffix(b"\n").unwrap_or(&text);
        if digits.len() != 2 * SPOOL_KEY_LEN {
            return Err(malformed("not 64 hex digits"));
        }
        let mut key = Zeroizing::new([0u8; SPOOL_KEY_LEN]);
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            match (hex_digit(pair[0]), hex_digit(pair[1])) {
                (Some(h), Some(l)) => key[i] = h << 4 | l,
                _ => return Err(malformed("not lower-case hex digits")),
            }
        }
        Ok(Some(key))
    }

    fn store(&mut self, key: &[u8; SPOOL_KEY_LEN]) -> Result<(), SpoolKeyError> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = Zeroizing::new(Vec::with_capacity(65));
        for b in key {
            text.push(HEX[usize::from(b >> 4)]);
            text.push(HEX[usize::from(b & 0xf)]);
        }
        text.push(b'\n');
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&self.path).map_err(self.err("create"))?;
        let written = f.write_all(&text).and_then(|()| f.sync_all());
        if let Err(e) = written {
            drop(f);
            let _ = fs::remove_file(&self.path);
            return Err(self.err("write")(e));
        }
        #[cfg(unix)]
        if let Some(parent) = self.path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(self.err("sync directory of"))?;
        }
        Ok(())
    }

    fn survives_reboot(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }
}

/// Which platform credential store an [`OsKeyStore`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OsStore {
    /// The Linux kernel keyring (keyutils: the session keyring, linked to
    /// the user's persistent keyring). Does **not** survive a reboot.
    /// Feature `keyutils` (on by default; no system library needed).
    KernelKeyring,
    /// The freedesktop Secret Service (GNOME Keyring, KWallet) over D-Bus.
    /// Survives a reboot. Feature `secret-service` (needs libdbus).
    SecretService,
    /// The macOS Keychain. Survives a reboot. Feature `apple-keychain`.
    Keychain,
    /// The Windows Credential Manager. Survives a reboot. Feature
    /// `windows-credential-manager`.
    CredentialManager,
}

impl OsStore {
    fn name(self) -> &'static str {
        match self {
            OsStore::KernelKeyring => "kernel keyring",
            OsStore::SecretService => "Secret Service",
            OsStore::Keychain => "macOS Keychain",
            OsStore::CredentialManager => "Windows Credential Manager",
        }
    }
}

/// A spool key in a platform credential store, through the `keyring`
/// crate: service `opsdata-spool`, user the name the host gives (one per
/// spool). Which store is named explicitly; one not compiled in (its
/// cargo feature off, or another platform) fails at [`load`] with
/// [`SpoolKeyError::Platform`].
///
/// [`load`]: SpoolKeyStore::load
#[derive(Debug, Clone)]
pub struct OsKeyStore {
    store: OsStore,
    name: String,
}

/// The `keyring` service name of spool keys.
pub const OS_KEY_SERVICE: &str = "opsdata-spool";

impl OsKeyStore {
    /// The key named `name` in `store`.
    #[must_use]
    pub fn new(store: OsStore, name: impl Into<String>) -> Self {
        OsKeyStore {
            store,
            name: name.into(),
        }
    }

    /// The key named `name` in the Linux kernel keyring (lost at reboot).
    #[must_use]
    pub fn kernel_keyring(name: impl Into<String>) -> Self {
        Self::new(OsStore::KernelKeyring, name)
    }

    /// Which store.
    #[must_use]
    pub fn kind(&self) -> OsStore {
        self.store
    }

    fn platform(&self, message: impl fmt::Display) -> SpoolKeyError {
        SpoolKeyError::Platform {
            store: self.describe(),
            message: message.to_string(),
        }
    }

    // With no store compiled in, every arm returns an error.
    #[cfg(feature = "keyring")]
    #[allow(unreachable_code, unused_variables)]
    fn entry(&self) -> Result<keyring::Entry, SpoolKeyError> {
        let credential: Box<keyring::credential::Credential> = match self.store {
            #[cfg(all(target_os = "linux", feature = "keyutils"))]
            OsStore::KernelKeyring => Box::new(
                keyring::keyutils::KeyutilsCredential::new_with_target(
                    None,
                    OS_KEY_SERVICE,
                    &self.name,
                )
                .map_err(|e| self.platform(e))?,
            ),
            #[cfg(all(
                any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"),
                feature = "secret-service"
            ))]
            OsStore::SecretService => Box::new(
                keyring::secret_service::SsCredential::new_with_target(
                    None,
                    OS_KEY_SERVICE,
                    &self.name,
                )
                .map_err(|e| self.platform(e))?,
            ),
            #[cfg(all(target_os = "macos", feature = "apple-keychain"))]
            OsStore::Keychain => Box::new(
                keyring::macos::MacCredential::new_with_target(None, OS_KEY_SERVICE, &self.name)
                    .map_err(|e| self.platform(e))?,
            ),
            #[cfg(all(target_os = "windows", feature = "windows-credential-manager"))]
            OsStore::CredentialManager => Box::new(
                keyring::windows::WinCredential::new_with_target(None, OS_KEY_SERVICE, &self.name)
                    .map_err(|e| self.platform(e))?,
            ),
            #[allow(unreachable_patterns)]
            _ => return Err(self.platform("not compiled in (cargo feature or platform)")),
        };
        Ok(keyring::Entry::new_with_credential(credential))
    }

    /// Deletes the key from the store (for tests and decommissioning):
    /// every spool sealed under it becomes unreadable.
    ///
    /// # Errors
    ///
    /// [`SpoolKeyError::Platform`].
    pub fn delete(&self) -> Result<(), SpoolKeyError> {
        #[cfg(feature = "keyring")]
        {
            match self.entry()?.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(self.platform(e)),
            }
        }
        #[cfg(not(feature = "keyring"))]
        Err(self.platform("not compiled in (cargo feature keyring)"))
    }
}

impl SpoolKeyStore for OsKeyStore {
    fn load(&self) -> Result<Option<SpoolKeyBytes>, SpoolKeyError> {
        #[cfg(feature = "keyring")]
        {
            let secret = match self.entry()?.get_secret() {
                Ok(s) => Zeroizing::new(s),
                Err(keyring::Error::NoEntry) => return Ok(None),
                Err(e) => return Err(self.platform(e)),
            };
            let mut key = Zeroizing::new([0u8; SPOOL_KEY_LEN]);
            if secret.len() != SPOOL_KEY_LEN {
                return Err(SpoolKeyError::Malformed {
                    store: self.describe(),
                    reason: "not 32 bytes",
                });
            }
            key.copy_from_slice(&secret);
            Ok(Some(key))
        }
        #[cfg(not(feature = "keyring"))]
        Err(self.platform("not compiled in (cargo feature keyring)"))
    }

    fn store(&mut self, key: &[u8; SPOOL_KEY_LEN]) -> Result<(), SpoolKeyError> {
        #[cfg(feature = "keyring")]
        {
            self.entry()?.set_secret(key).map_err(|e| self.platform(e))
        }
        #[cfg(not(feature = "keyring"))]
        {
            let _ = key;
            Err(self.platform("not compiled in (cargo feature keyring)"))
        }
    }

    fn survives_reboot(&self) -> bool {
        self.store != OsStore::KernelKeyring
    }

    fn describe(&self) -> String {
        format!("{} entry {OS_KEY_SERVICE}/{}", self.store.name(), self.name)
    }
}

/// The host's choice to seal a spool at rest: where its key lives, the
/// rotation policy of the keys it wraps, and the clock rotation reads.
///
/// A spool is expected to outlive a reboot (that is what it is for), so a
/// store that forgets at reboot ([`SpoolKeyStore::survives_reboot`] false,
/// the kernel keyring) is refused at open with
/// [`SpoolError::KeyStoreForgets`](super::SpoolError::KeyStoreForgets)
/// unless the host says [`allow_key_lost_at_reboot`](Self::allow_key_lost_at_reboot).
pub struct SpoolProtection {
    pub(super) store: Box<dyn SpoolKeyStore>,
    pub(super) policy: RotationPolicy,
    pub(super) clock: Clock,
    pub(super) allow_forgetting: bool,
}

impl fmt::Debug for SpoolProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolProtection")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("allow_forgetting", &self.allow_forgetting)
            .finish_non_exhaustive()
    }
}

impl SpoolProtection {
    /// Seal the spool under a key kept in `store`, rotating on
    /// [`default_policy`](Self::default_policy), reading the time from
    /// `clock`.
    #[must_use]
    pub fn new(store: impl SpoolKeyStore + 'static, clock: Clock) -> Self {
        SpoolProtection {
            store: Box::new(store),
            policy: Self::default_policy(),
            clock,
            allow_forgetting: false,
        }
    }

    /// The spool's default key rotation: a key seals for 30 days, is
    /// promoted as soon as it is made (the spool is its only user), and is
    /// disabled, then destroyed, as soon as no frame it sealed is left.
    #[must_use]
    pub fn default_policy() -> RotationPolicy {
        let second = chrono::Duration::seconds(1);
        RotationPolicy::default()
            .with_notify_before(chrono::Duration::zero())
            .and_then(|p| p.with_max_age(chrono::Duration::days(30)))
            .and_then(|p| p.with_propagation_delay(chrono::Duration::zero()))
            .and_then(|p| p.with_retire_after(second))
            .and_then(|p| p.with_destroy_after(second))
            // Invariant: these settings are within every limit.
            .expect("the spool's default rotation policy is valid")
    }

    /// Another rotation policy (`RewrapFrames` and `Shred` steps are not
    /// taken: a spool's frames leave on their own, and it is never closed).
    #[must_use]
    pub fn with_rotation_policy(mut self, policy: RotationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Accept a store that forgets the key at reboot (the kernel keyring):
    /// after a reboot the spool does not open (its frames are kept, and
    /// open again if the key is put back).
    #[must_use]
    pub fn allow_key_lost_at_reboot(mut self) -> Self {
        self.allow_forgetting = true;
        self
    }
}
