//! Per-tenant state, each behind its own lock: tenants never wait for each
//! other. The map of tenants is sharded, and a shard's lock is only held to
//! find or insert a tenant's `Arc`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use opsdata::{
    BatchId, CasError, Entropy, Ingest, IngestConfig, KeyAction, KeyCensus, KeyRing, KeyStore,
    RingVersion, RotationPolicy, TenantId, VersionedRing, WrappingKey, load_ring, save_ring,
};

/// How often a tenant's ring is checked against the rotation policy.
const ROTATION_CHECK: chrono::Duration = chrono::Duration::minutes(1);
const SHARDS: usize = 32;

/// Locks `m`; a panic while it was held leaves the state as consistent as
/// the operation that panicked left it (each step below is a whole
/// in-memory update), so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key store's error, its type erased so the service is not generic over
/// the store.
#[derive(Debug)]
pub(crate) struct KeyStoreError(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for KeyStoreError {}

/// A [`KeyStore`] with its error erased.
pub(crate) struct Erased<S>(pub(crate) S);

impl<S: KeyStore> KeyStore for Erased<S> {
    type Error = KeyStoreError;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), KeyStoreError> {
        self.0
            .put(tenant, sealed)
            .map_err(|e| KeyStoreError(Box::new(e)))
    }

    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, KeyStoreError> {
        self.0.get(tenant).map_err(|e| KeyStoreError(Box::new(e)))
    }

    fn get_versioned(
        &self,
        tenant: TenantId,
    ) -> Result<Option<VersionedRing>, CasError<KeyStoreError>> {
        self.0.get_versioned(tenant).map_err(erase_cas)
    }

    fn put_if(
        &mut self,
        tenant: TenantId,
        sealed: &[u8],
        expected: Option<&RingVersion>,
    ) -> Result<RingVersion, CasError<KeyStoreError>> {
        self.0.put_if(tenant, sealed, expected).map_err(erase_cas)
    }
}

fn erase_cas<E: std::error::Error + Send + Sync + 'static>(
    e: CasError<E>,
) -> CasError<KeyStoreError> {
    match e {
        CasError::Store(e) => CasError::Store(KeyStoreError(Box::new(e))),
        CasError::Conflict => CasError::Conflict,
        // `Unsupported`, and whatever a later core adds.
        _ => CasError::Unsupported,
    }
}

pub(crate) type DynKeyStore = Box<dyn KeyStore<Error = KeyStoreError> + Send>;

/// The key store and the wrapping key its rings are sealed under. The
/// store's own lock is held only for one `get` or `put` (a ring load, or a
/// write once per reserved block), never across an await.
pub(crate) struct KeyVault {
    pub(crate) store: Mutex<DynKeyStore>,
    pub(crate) wrapping: WrappingKey,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // WrappingKey's Debug shows its id only.
        f.debug_struct("KeyVault")
            .field("wrapping", &self.wrapping)
            .finish_non_exhaustive()
    }
}

/// Makes the entropy a tenant's seals draw from.
pub(crate) type EntropySource = Arc<dyn Fn() -> Box<dyn Entropy + Send> + Send + Sync>;

/// One tenant's state.
pub(crate) struct TenantState {
    pub(crate) ingest: Ingest,
    pub(crate) ring: Option<KeyRing>,
    rotation_checked: Option<DateTime<Utc>>,
    /// Batches sealed and being stored: a copy of one arriving meanwhile is
    /// answered transient, not as a duplicate of data not yet stored.
    pub(crate) in_flight: HashSet<BatchId>,
    pub(crate) entropy: Box<dyn Entropy + Send>,
}

impl fmt::Debug for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantState")
            .field("ring", &self.ring)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Why a tenant's ring is not ready to seal.
#[derive(Debug)]
pub(crate) enum RingError {
    /// No ring, and provisioning is off.
    NoRing,
    /// The key store failed, or a ring could not be read or built.
    Keys(String),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::NoRing => f.write_str("no key ring for the tenant"),
            RingError::Keys(e) => f.write_str(e),
        }
    }
}

/// What [`TenantState::ready`] wrote to the key store.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RingWrites(pub(crate) u64);

impl TenantState {
    fn new(config: &IngestConfig, entropy: Box<dyn Entropy + Send>) -> Self {
        TenantState {
            ingest: Ingest::new(config.clone()),
            ring: None,
            rotation_checked: None,
            in_flight: HashSet::new(),
            entropy,
        }
    }

    /// Makes the tenant's ring ready to seal one frame: loaded (or
    /// provisioned and saved), rotated when due, and with a seal reserved
    /// and recorded in the key store. Without a key store the ring lives in
    /// memory (added with `IngestService::add_ring`) and nothing is
    /// reserved.
    pub(crate) fn ready(
        &mut self,
        tenant: TenantId,
        vault: Option<&KeyVault>,
        provision: Option<&RotationPolicy>,
        block: u64,
        now: DateTime<Utc>,
    ) -> Result<RingWrites, RingError> {
        let mut writes = RingWrites::default();
        let keys = |e: String| RingError::Keys(e);
        if self.ring.is_none()
            && let Some(vault) = vault
        {
            // A ring that cannot be read is not replaced: what it sealed
            // would be lost for good.
            let loaded = load_ring(&**lock(&vault.store), tenant, &vault.wrapping)
                .map_err(|e| keys(format!("loading the key ring: {e}")))?;
            self.ring = loaded;
        }
        if self.ring.is_none() {
            let (Some(policy), Some(vault)) = (provision, vault) else {
                return Err(RingError::NoRing);
            };
            let ring = provision_ring(tenant, policy, &mut *self.entropy, now)?;
            let sealed = ring
                .to_sealed(&vault.wrapping, &mut *self.entropy)
                .map_err(|e| keys(format!("sealing the new key ring: {e}")))?;
            // Create if absent: of nodes provisioning one tenant at once,
            // one creates the ring and the others take it (docs/KEYS.md,
            // "Shared key rings"). A store without compare-and-swap is for
            // one node: a plain put.
            let created = lock(&vault.store).put_if(tenant, &sealed, None);
            match created {
                Ok(_) => {
                    writes.0 += 1;
                    self.ring = Some(ring);
                }
                Err(CasError::Conflict) => {
                    let winner = load_ring(&**lock(&vault.store), tenant, &vault.wrapping)
                        .map_err(|e| keys(format!("loading the key ring made meanwhile: {e}")))?
                        .ok_or_else(|| keys("the key ring made meanwhile is gone".to_owned()))?;
                    self.ring = Some(winner);
                }
                Err(CasError::Unsupported) => {
                    lock(&vault.store)
                        .put(tenant, &sealed)
                        .map_err(|e| keys(format!("saving the new key ring: {e}")))?;
                    writes.0 += 1;
                    self.ring = Some(ring);
                }
                Err(e) => return Err(keys(format!("saving the new key ring: {e}"))),
            }
            self.rotation_checked = Some(now);
        }
        if let (Some(policy), Some(vault)) = (provision, vault) {
            writes.0 += self.rotate(tenant, policy, vault, now)?;
        }
        let Some(vault) = vault else {
            return Ok(writes);
        };
        let Some(ring) = self.ring.as_mut() else {
            return Err(RingError::NoRing);
        };
        if ring.reserved_left() == 0 {
            // Reserve, save, then seal (docs/KEYS.md, "Usage in blocks").
            // No primary or a used-up key: let sealing report it.
            if let Ok(reservation) = ring.reserve_uses(block) {
                let saved = save_ring(
                    &mut **lock(&vault.store),
                    ring,
                    &vault.wrapping,
                    &mut *self.entropy,
                );
                if let Err(e) = saved {
                    ring.cancel_reservation(reservation);
                    return Err(keys(format!("saving the key ring: {e}")));
                }
                writes.0 += 1;
            }
        }
        Ok(writes)
    }

    /// Rotates the ring forward if the policy says so (checked at most once
    /// per [`ROTATION_CHECK`]): the actions are applied to a copy, which
    /// replaces the ring only once it is saved.
    fn rotate(
        &mut self,
        tenant: TenantId,
        policy: &RotationPolicy,
        vault: &KeyVault,
        now: DateTime<Utc>,
    ) -> Result<u64, RingError> {
        if self
            .rotation_checked
            .is_some_and(|t| now >= t && now - t < ROTATION_CHECK)
        {
            return Ok(0);
        }
        let Some(ring) = &self.ring else {
            return Ok(0);
        };
        let due: Vec<KeyAction> = policy
            .evaluate(ring, &KeyCensus::new(), now)
            .into_iter()
            .filter(|a| matches!(a, KeyAction::GenerateKey { .. } | KeyAction::Promote { .. }))
            .collect();
        self.rotation_checked = Some(now);
        if due.is_empty() {
            return Ok(0);
        }
        let err = |e: opsdata::KeyError| RingError::Keys(format!("rotating the key ring: {e}"));
        let entropy = &mut *self.entropy;
        // The copy's usage is the stored (reserved) count: never below the
        // real one.
        let mut copy = ring
            .to_sealed(&vault.wrapping, entropy)
            .and_then(|b| KeyRing::from_sealed(&b, tenant, &vault.wrapping))
            .map_err(err)?;
        for action in &due {
            let _applied = copy.apply(action, entropy, now).map_err(err)?;
        }
        save_ring(&mut **lock(&vault.store), &copy, &vault.wrapping, entropy)
            .map_err(|e| RingError::Keys(format!("saving the rotated key ring: {e}")))?;
        self.ring = Some(copy);
        Ok(1)
    }
}

fn provision_ring(
    tenant: TenantId,
    policy: &RotationPolicy,
    entropy: &mut (dyn Entropy + Send),
    now: DateTime<Utc>,
) -> Result<KeyRing, RingError> {
    let mut ring = KeyRing::new(tenant, policy);
    // A new tenant needs a key generated, then promoted: two rounds.
    for _ in 0..2 {
        for action in policy.evaluate(&ring, &KeyCensus::new(), now) {
            let _applied = ring
                .apply(&action, entropy, now)
                .map_err(|e| RingError::Keys(format!("provisioning a key ring: {e}")))?;
        }
    }
    Ok(ring)
}

/// The tenants, sharded by tenant id.
pub(crate) struct Tenants {
    shards: Vec<Mutex<HashMap<TenantId, Arc<Mutex<TenantState>>>>>,
    config: IngestConfig,
    entropy: EntropySource,
}

impl fmt::Debug for Tenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: usize = self.shards.iter().map(|s| lock(s).len()).sum();
        f.debug_struct("Tenants").field("tenants", &n).finish()
    }
}

impl Tenants {
    pub(crate) fn new(config: IngestConfig, entropy: EntropySource) -> Self {
        Tenants {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            config,
            entropy,
        }
    }

    /// The tenant's state, made on first sight.
    pub(crate) fn get(&self, tenant: TenantId) -> Arc<Mutex<TenantState>> {
        let b = tenant.as_bytes();
        let shard = usize::from(b[15]) % SHARDS;
        let mut map = lock(&self.shards[shard]);
        Arc::clone(map.entry(tenant).or_insert_with(|| {
            Arc::new(Mutex::new(TenantState::new(&self.config, (self.entropy)())))
        }))
    }
}
