//! Sealing at rest: the `SPOOLKEY` file (the key rings, sealed under the
//! spool key), sealing frames on persist and opening them on load with the
//! core's seal format, the census of frames per key, and rotation by the
//! core's `RotationPolicy` (`docs/SPOOL.md`, *Protection at rest*).

use std::collections::BTreeMap;
use std::fmt;

use opsdata::{
    Applied, KeyAction, KeyCensus, KeyError, KeyId, KeyMaterial, KeyRing, RotationPolicy,
    SystemEntropy, TenantId, WrappingKey,
};

use super::keystore::SPOOL_KEY_LEN;
use super::*;
use crate::clock::Clock;

/// Magic of the `SPOOLKEY` file: `89 4F 50 59` (`\x89OPY`).
pub const SPOOLKEY_MAGIC: [u8; 4] = [0x89, b'O', b'P', b'Y'];
pub(super) const SPOOLKEY_NAME: &str = "SPOOLKEY";
const SPOOLKEY_TMP: &str = "SPOOLKEY.tmp";
const SPOOLKEY_VERSION: u8 = 1;
/// The largest `SPOOLKEY` read: 64 MiB.
const SPOOLKEY_MAX: u64 = 64 << 20;
/// The wrapping key id the spool key has in stored rings.
const SPOOL_WRAPPING_ID: u32 = 1;
/// The tenant of the check ring: an empty ring sealed under the spool key,
/// which tells a wrong key at open even when no frame is held.
const CHECK_TENANT: [u8; 16] = *b"opsdata-spoolkey";
/// Seals after which a ring's usage is written down again (usage counted
/// since is lost in a crash: at most this many per key).
const USAGE_SAVE_EVERY: u64 = 1 << 16;

/// Key id 1, the lowest.
fn first_key_id() -> KeyId {
    // Invariant: only 0 is refused.
    KeyId::new(1).expect("1 is a key id")
}

fn check_tenant() -> TenantId {
    // Invariant: the constant is not the nil id.
    TenantId::from_bytes(CHECK_TENANT).expect("a non-nil tenant id")
}

fn keys_error(reason: &'static str) -> SpoolError {
    SpoolError::KeysFile { reason }
}

/// What `SPOOLKEY` holds once opened.
pub(super) struct Keys {
    /// The first segment whose sealed frames the spool sealed: frames first
    /// written before it (their order key's segment) are as they were
    /// persisted, sealed or not.
    pub(super) since: u64,
    pub(super) rings: BTreeMap<TenantId, KeyRing>,
}

/// Reads `SPOOLKEY`: `Ok(None)` if there is none.
pub(super) fn read_keys(dir: &Path, wrapping: &WrappingKey) -> Result<Option<Keys>, SpoolError> {
    let path = dir.join(SPOOLKEY_NAME);
    let bytes = match File::open(&path) {
        Ok(f) => {
            let mut b = Vec::new();
            f.take(SPOOLKEY_MAX + 1)
                .read_to_end(&mut b)
                .map_err(io_error("read", &path))?;
            b
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", &path)(e)),
    };
    if bytes.len() as u64 > SPOOLKEY_MAX {
        return Err(keys_error("longer than 64 MiB"));
    }
    let Some((body, stored)) = bytes.split_last_chunk::<4>() else {
        return Err(keys_error("shorter than its CRC"));
    };
    if crc(body) != u32::from_be_bytes(*stored) {
        return Err(keys_error("CRC fails"));
    }
    if body.len() < 24 || body[..4] != SPOOLKEY_MAGIC {
        return Err(keys_error("bad magic"));
    }
    if body[4] != SPOOLKEY_VERSION || body[5..8] != [0, 0, 0] {
        return Err(keys_error("unsupported version"));
    }
    let since = u64_at(body, 8);
    let count = u32_at(body, 16);
    let mut at = 20;
    let mut next = || -> Result<&[u8], SpoolError> {
        if body.len() < at + 4 {
            return Err(keys_error("ends inside a ring's length"));
        }
        let len = u32_at(body, at) as usize;
        at += 4;
        if body.len() < at + len {
            return Err(keys_error("ends inside a ring"));
        }
        let ring = &body[at..at + len];
        at += len;
        Ok(ring)
    };
    let check = next()?;
    KeyRing::from_sealed(check, check_tenant(), wrapping).map_err(|e| match e {
        KeyError::Tampered { .. } | KeyError::WrongWrappingKey { .. } => SpoolError::WrongKey {
            dir: dir.to_path_buf(),
        },
        _ => keys_error("bad check ring"),
    })?;
    let mut rings = BTreeMap::new();
    for _ in 0..count {
        let sealed = next()?;
        // The stored-ring format names its tenant at bytes 12..28
        // (docs/KEYS.md); from_sealed checks it again.
        let tenant = sealed
            .get(12..28)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .and_then(|b| TenantId::from_bytes(b).ok())
            .ok_or(keys_error("a ring without a tenant"))?;
        let ring = KeyRing::from_sealed(sealed, tenant, wrapping).map_err(|e| match e {
            KeyError::Tampered { .. } | KeyError::WrongWrappingKey { .. } => SpoolError::WrongKey {
                dir: dir.to_path_buf(),
            },
            _ => keys_error("a malformed ring"),
        })?;
        rings.insert(tenant, ring);
    }
    if at != body.len() {
        return Err(keys_error("bytes after the last ring"));
    }
    Ok(Some(Keys { since, rings }))
}

/// The spool's protection at run time.
pub(super) struct Protected {
    pub(super) since: u64,
    wrapping: WrappingKey,
    pub(super) rings: BTreeMap<TenantId, KeyRing>,
    policy: RotationPolicy,
    clock: Clock,
    entropy: SystemEntropy,
    /// Live spool-sealed frames per tenant and key.
    pub(super) census: BTreeMap<(TenantId, KeyId), u64>,
    /// Live frames first written before protection was turned on.
    pub(super) unsealed: u64,
    /// The rings changed since `SPOOLKEY` was last written (a failed write
    /// is retried before anything is sealed again).
    dirty: bool,
    store: String,
}

impl fmt::Debug for Protected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protected")
            .field("since", &self.since)
            .field("rings", &self.rings)
            .field("census", &self.census)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Where the key came from at open.
pub(super) struct Opened {
    pub(super) protected: Protected,
    /// `SPOOLKEY` is to be written (a spool protected for the first time).
    pub(super) new: bool,
}

impl Protected {
    /// Resolves the key for `dir` before anything in it is touched.
    pub(super) fn resolve(
        dir: &Path,
        config: &SpoolConfig,
        mut protection: SpoolProtection,
    ) -> Result<Opened, SpoolError> {
        let store = protection.store.describe();
        if !protection.store.survives_reboot() && !protection.allow_forgetting {
            return Err(SpoolError::KeyStoreForgets { store });
        }
        if !config.sealed_at_rest() {
            return Err(SpoolError::SealedConfigRequired);
        }
        let has_keys = dir.join(SPOOLKEY_NAME).exists();
        let key = protection.store.load().map_err(SpoolError::KeyStore)?;
        let mut entropy = SystemEntropy::new();
        let key = match key {
            Some(k) => k,
            None if has_keys => {
                return Err(SpoolError::KeyMissing {
                    dir: dir.to_path_buf(),
                    store,
                });
            }
            None => {
                let mut k = zeroize::Zeroizing::new([0u8; SPOOL_KEY_LEN]);
                opsdata::Entropy::fill(&mut entropy, &mut k[..])
                    .map_err(|e| SpoolError::Key(KeyError::Entropy(e)))?;
                protection.store.store(&k).map_err(SpoolError::KeyStore)?;
                k
            }
        };
        let wrapping = WrappingKey::new(SPOOL_WRAPPING_ID, KeyMaterial::from_bytes(*key));
        let (since, rings, new) = match read_keys(dir, &wrapping)? {
            Some(k) => (k.since, k.rings, false),
            None => (u64::MAX, BTreeMap::new(), true),
        };
        Ok(Opened {
            protected: Protected {
                since,
                wrapping,
                rings,
                policy: protection.policy,
                clock: protection.clock,
                entropy,
                census: BTreeMap::new(),
                unsealed: 0,
                dirty: false,
                store,
            },
            new,
        })
    }

    /// Writes `SPOOLKEY` (temporary file, synced, renamed, directory
    /// synced): the check ring and every tenant's ring, sealed under the
    /// spool key.
    pub(super) fn save(&mut self, dir: &Path) -> Result<(), SpoolError> {
        let check = KeyRing::new(check_tenant(), &self.policy);
        let mut body = Vec::new();
        body.extend_from_slice(&SPOOLKEY_MAGIC);
        body.push(SPOOLKEY_VERSION);
        body.extend_from_slice(&[0, 0, 0]);
        body.extend_from_slice(&self.since.to_be_bytes());
        let count = u32::try_from(self.rings.len()).map_err(|_| keys_error("too many rings"))?;
        body.extend_from_slice(&count.to_be_bytes());
        let mut push = |sealed: Vec<u8>| -> Result<(), SpoolError> {
            let len = u32::try_from(sealed.len()).map_err(|_| keys_error("a ring too large"))?;
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&sealed);
            Ok(())
        };
        push(
            check
                .to_sealed(&self.wrapping, &mut self.entropy)
                .map_err(SpoolError::Key)?,
        )?;
        for ring in self.rings.values() {
            push(
                ring.to_sealed(&self.wrapping, &mut self.entropy)
                    .map_err(SpoolError::Key)?,
            )?;
        }
        let c = crc(&body);
        body.extend_from_slice(&c.to_be_bytes());
        self.dirty = true;
        let tmp = dir.join(SPOOLKEY_TMP);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()
        };
        write().map_err(io_error("write", &tmp))?;
        let path = dir.join(SPOOLKEY_NAME);
        fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
        sync_dir(dir)?;
        self.dirty = false;
        Ok(())
    }

    fn census_of(&self, tenant: TenantId) -> KeyCensus {
        let mut c = KeyCensus::new();
        for (&(t, id), &n) in self.census.range((tenant, first_key_id())..) {
            if t != tenant {
                break;
            }
            c.set(id, n);
        }
        c
    }

    /// Carries out the rotation steps due for `tenant`'s ring (creating it
    /// if absent). Returns whether the ring changed.
    fn rotate(&mut self, tenant: TenantId) -> Result<bool, SpoolError> {
        let now = (self.clock)();
        let census = self.census_of(tenant);
        let policy = self.policy.clone();
        let ring = self
            .rings
            .entry(tenant)
            .or_insert_with(|| KeyRing::new(tenant, &policy));
        let mut changed = false;
        // generate → promote, then retirements: a few steps at most.
        for _ in 0..4 {
            let actions: Vec<KeyAction> = policy
                .evaluate(ring, &census, now)
                .into_iter()
                .filter(|a| !matches!(a, KeyAction::RewrapFrames { .. } | KeyAction::Shred))
                .collect();
            if actions.is_empty() {
                break;
            }
            for a in &actions {
                match ring
                    .apply(a, &mut self.entropy, now)
                    .map_err(SpoolError::Key)?
                {
                    Applied::Generated(_) | Applied::Done => changed = true,
                    _ => {}
                }
            }
        }
        Ok(changed)
    }

    /// Runs rotation for every tenant's ring; returns whether any changed.
    pub(super) fn rotate_all(&mut self) -> Result<bool, SpoolError> {
        let tenants: Vec<TenantId> = self.rings.keys().copied().collect();
        for t in tenants {
            if self.rotate(t)? {
                self.dirty = true;
            }
        }
        Ok(self.dirty)
    }

    /// Seals `frame` for the spool: its tenant's ring rotated first (and
    /// `SPOOLKEY` rewritten before anything is sealed under a new key).
    pub(super) fn seal(&mut self, dir: &Path, frame: &Frame) -> Result<(Frame, KeyId), SpoolError> {
        if frame.header().sealed {
            return Err(SpoolError::AlreadySealed);
        }
        let tenant = frame.tenant();
        if self.rotate(tenant)? {
            self.dirty = true;
        }
        // Nothing is sealed under a key not yet on disk.
        if self.dirty {
            self.save(dir)?;
        }
        let now = (self.clock)();
        // Invariant: rotate made the ring.
        let ring = self.rings.get_mut(&tenant).expect("the tenant's ring");
        let sealed = opsdata::seal(frame, ring, &mut self.entropy, now).map_err(SpoolError::Key)?;
        let id = opsdata::peek(sealed.as_bytes())
            .ok()
            .and_then(|p| p.kek_id)
            // Invariant: seal wrote a key id.
            .expect("a sealed frame names its key");
        if ring
            .get(id)
            .is_some_and(|i| i.usage % USAGE_SAVE_EVERY == 0)
        {
            self.save(dir)?;
        }
        Ok((sealed, id))
    }

    /// Opens a frame the spool sealed.
    pub(super) fn open(&self, bytes: Bytes, limits: &FrameLimits) -> Result<Bytes, SpoolError> {
        let frame =
            Frame::decode(bytes, limits).map_err(|e| SpoolError::Key(KeyError::Frame(e)))?;
        let tenant = frame.tenant();
        let ring = self.rings.get(&tenant).ok_or_else(|| {
            SpoolError::Key(KeyError::UnknownKey {
                tenant,
                id: opsdata::peek(frame.as_bytes())
                    .ok()
                    .and_then(|p| p.kek_id)
                    .unwrap_or_else(first_key_id),
            })
        })?;
        let plain = opsdata::open(&frame, ring).map_err(SpoolError::Key)?;
        Ok(plain.as_bytes().clone())
    }

    pub(super) fn count(&mut self, kek: Option<(TenantId, KeyId)>, up: bool) {
        match kek {
            Some(k) => {
                let n = self.census.entry(k).or_insert(0);
                if up {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.census.remove(&k);
                    }
                }
            }
            None => {
                if up {
                    self.unsealed += 1;
                } else {
                    self.unsealed = self.unsealed.saturating_sub(1);
                }
            }
        }
    }
}

/// What a protected spool's keys look like (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyReport {
    /// Where the spool key is.
    pub store: String,
    /// The first segment whose frames the spool sealed.
    pub protected_since: u64,
    /// Live frames first written before protection was turned on (kept
    /// as they were, not converted).
    pub unsealed_frames: u64,
    /// Per tenant, its key versions: id, status, live frames under it.
    pub keys: Vec<(TenantId, KeyId, opsdata::KeyStatus, u64)>,
}

impl Protected {
    pub(super) fn report(&self) -> KeyReport {
        let mut keys = Vec::new();
        for (t, ring) in &self.rings {
            for v in ring.versions() {
                let n = self.census.get(&(*t, v.id)).copied().unwrap_or(0);
                keys.push((*t, v.id, v.status, n));
            }
        }
        KeyReport {
            store: self.store.clone(),
            protected_since: self.since,
            unsealed_frames: self.unsealed,
            keys,
        }
    }
}
