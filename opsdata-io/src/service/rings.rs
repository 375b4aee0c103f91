//! Tenants' key rings in a key store that several service nodes may share
//! (`docs/SCALE.md`, `docs/KEYS.md` of the core, "Shared key rings").
//!
//! Every change to a stored ring is a read, a change to the copy read, and
//! a write that happens only if the stored ring is still the version read
//! (the store's compare-and-swap): provisioning (create if absent), a
//! block of seals reserved, a rotation step. A conflict means another node
//! changed the ring meanwhile: read it again and redo the change, at most
//! [`MAX_ATTEMPTS`] times. A node seals only inside blocks the store
//! records as its own, and re-reads each ring it uses at least every
//! [`REFRESH`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use opsdata::{
    CasError, Entropy, KeyAction, KeyCensus, KeyRing, KeyStore, RingVersion, RotationPolicy,
    TenantId, WrappingKey,
};

use super::tenants::{RingError, RingNeed, TenantSlot, lock};
use crate::ringstore::AsyncKeyStore;

/// How often a node re-reads a ring it uses, and checks it against the
/// rotation policy. A key is promoted no sooner than the policy's
/// propagation delay (24 h by default) after it was generated, so every
/// node has read it, and can open what any node seals under it, long
/// before any node seals under it.
pub(crate) const REFRESH: chrono::Duration = chrono::Duration::minutes(1);

/// How many conflicting writes in a row a ring change tolerates before the
/// frame waiting for it is answered transient. Each conflict means another
/// node's change went through, so the system as a whole progresses.
pub(crate) const MAX_ATTEMPTS: usize = 8;

/// A stored ring and its version (`None` from a store without versions).
pub(crate) type Stored = (Vec<u8>, Option<RingVersion>);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// What the service needs of a key store, async and object safe.
pub(crate) trait RingStore: Send + Sync {
    /// The stored ring and its version (`None` for a store without
    /// versions: one writer only).
    fn read(&self, tenant: TenantId) -> BoxFuture<'_, Result<Option<Stored>, KeyStoreError>>;

    /// Writes `sealed` if the stored version is still `expected` (`None`:
    /// if none is stored); with `versioned` false (a store without
    /// versions), a plain write.
    fn write(
        &self,
        tenant: TenantId,
        sealed: Vec<u8>,
        expected: Option<RingVersion>,
        versioned: bool,
    ) -> BoxFuture<'_, Result<Option<RingVersion>, CasError<KeyStoreError>>>;
}

/// A core [`KeyStore`] (synchronous: each call runs on the blocking pool).
pub(crate) struct SyncRingStore<S>(pub(crate) Arc<Mutex<S>>);

impl<S: KeyStore + Send + 'static> RingStore for SyncRingStore<S> {
    fn read(&self, tenant: TenantId) -> BoxFuture<'_, Result<Option<Stored>, KeyStoreError>> {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            blocking(move || {
                let s = lock(&store);
                match s.get_versioned(tenant) {
                    Ok(r) => Ok(r.map(|(b, v)| (b, Some(v)))),
                    Err(CasError::Unsupported) => s
                        .get(tenant)
                        .map(|r| r.map(|b| (b, None)))
                        .map_err(|e| KeyStoreError(Box::new(e))),
                    Err(e) => Err(match erase_cas(e) {
                        CasError::Store(e) => e,
                        other => KeyStoreError(other.to_string().into()),
                    }),
                }
            })
            .await?
        })
    }

    fn write(
        &self,
        tenant: TenantId,
        sealed: Vec<u8>,
        expected: Option<RingVersion>,
        versioned: bool,
    ) -> BoxFuture<'_, Result<Option<RingVersion>, CasError<KeyStoreError>>> {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            blocking(move || {
                let mut s = lock(&store);
                if !versioned {
                    return s
                        .put(tenant, &sealed)
                        .map(|()| None)
                        .map_err(|e| CasError::Store(KeyStoreError(Box::new(e))));
                }
                match s.put_if(tenant, &sealed, expected.as_ref()) {
                    Ok(v) => Ok(Some(v)),
                    // A store that gives versions for a ring it has but
                    // cannot create one conditionally: one writer only.
                    Err(CasError::Unsupported) if expected.is_none() => s
                        .put(tenant, &sealed)
                        .map(|()| None)
                        .map_err(|e| CasError::Store(KeyStoreError(Box::new(e)))),
                    Err(e) => Err(erase_cas(e)),
                }
            })
            .await
            .map_err(CasError::Store)?
        })
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, KeyStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KeyStoreError(format!("the key store call failed: {e}").into()))
}

/// An [`AsyncKeyStore`], shared by every node.
pub(crate) struct SharedRingStore<S>(pub(crate) Arc<S>);

impl<S: AsyncKeyStore> RingStore for SharedRingStore<S> {
    fn read(&self, tenant: TenantId) -> BoxFuture<'_, Result<Option<Stored>, KeyStoreError>> {
        Box::pin(async move {
            match self.0.get_versioned(tenant).await {
                Ok(r) => Ok(r.map(|(b, v)| (b, Some(v)))),
                Err(e) => Err(match erase_cas(e) {
                    CasError::Store(e) => e,
                    other => KeyStoreError(other.to_string().into()),
                }),
            }
        })
    }

    fn write(
        &self,
        tenant: TenantId,
        sealed: Vec<u8>,
        expected: Option<RingVersion>,
        _versioned: bool,
    ) -> BoxFuture<'_, Result<Option<RingVersion>, CasError<KeyStoreError>>> {
        Box::pin(async move {
            self.0
                .put_if(tenant, &sealed, expected.as_ref())
                .await
                .map(Some)
                .map_err(erase_cas)
        })
    }
}

/// The key store and the wrapping key its rings are sealed under.
pub(crate) struct KeyVault {
    pub(crate) store: Box<dyn RingStore>,
    pub(crate) wrapping: WrappingKey,
    /// Whether the store was given as shared ([`AsyncKeyStore`]).
    pub(crate) shared: bool,
}

impl fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // WrappingKey's Debug shows its id only.
        f.debug_struct("KeyVault")
            .field("wrapping", &self.wrapping)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// What one [`ring_ready`] call did, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RingWork {
    /// Rings read from the store.
    pub(crate) reads: u64,
    /// Rings written (provisioned, a block reserved, rotated).
    pub(crate) writes: u64,
    /// Writes refused because another node changed the ring first.
    pub(crate) conflicts: u64,
}

/// Makes `tenant`'s ring ready to seal (`to_seal`): loaded (or
/// provisioned), re-read if older than [`REFRESH`] (or whatever its age,
/// with `reread`), rotated when the policy says so, and with a block of
/// seals reserved in the store when none is left; or, to open, loaded (and
/// re-read with `reread`). The caller
/// holds the tenant's ring lock (`slot.ring_io`), so one change per tenant
/// per node is under way at a time; the tenant's state lock is held only
/// between awaits.
///
/// # Errors
///
/// [`RingError`] (with the work done before) when the store fails, a
/// stored ring cannot be read, or the ring changed under every one of
/// [`MAX_ATTEMPTS`] writes.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ring_ready(
    slot: &TenantSlot,
    tenant: TenantId,
    vault: &KeyVault,
    provision: Option<&RotationPolicy>,
    block: u64,
    to_seal: bool,
    reread: bool,
    now: DateTime<Utc>,
) -> Result<RingWork, (RingWork, RingError)> {
    let mut work = RingWork::default();
    let keys = |what: &str, e: &dyn fmt::Display| RingError::Keys(format!("{what}: {e}"));
    let mut reread = reread;
    for _ in 0..MAX_ATTEMPTS {
        if lock(&slot.state).ring_needs_work(now, reread, to_seal) == RingNeed::Nothing {
            return Ok(work);
        }
        work.reads += 1;
        let stored = match vault.store.read(tenant).await {
            Ok(s) => s,
            Err(e) => return Err((work, keys("reading the key ring", &e))),
        };
        // The change, made on a copy of what is stored (or, with nothing
        // stored, a ring made here), with the entropy of the tenant's
        // state: computed under the state lock, written without it.
        let planned = {
            let mut st = lock(&slot.state);
            let block = to_seal.then_some(block);
            match st.plan_ring_change(tenant, stored, vault, provision, block, now) {
                Ok(p) => p,
                Err(e) => return Err((work, e)),
            }
        };
        let Planned {
            ring,
            write,
            expected,
            versioned,
            reserved,
        } = planned;
        let version = match write {
            None => expected,
            Some(sealed) => {
                match vault
                    .store
                    .write(tenant, sealed, expected.clone(), versioned)
                    .await
                {
                    Ok(v) => {
                        work.writes += 1;
                        v
                    }
                    Err(CasError::Conflict) => {
                        work.conflicts += 1;
                        // Read again: the ring changed (or was made) meanwhile.
                        reread = true;
                        continue;
                    }
                    Err(e) => return Err((work, keys("writing the key ring", &e))),
                }
            }
        };
        lock(&slot.state).adopt_ring(ring, version, reserved, now);
        reread = false;
    }
    Err((
        work,
        RingError::Keys(format!(
            "the key ring changed under each of {MAX_ATTEMPTS} writes"
        )),
    ))
}

/// Applies `change` to `tenant`'s stored ring: read, change the copy
/// (`change` answers whether it changed anything), write only if the
/// stored version is still the one read; a conflict reads again and redoes
/// the change, at most [`MAX_ATTEMPTS`] times. The caller holds the
/// tenant's ring lock.
pub(crate) async fn update_stored_ring(
    slot: &TenantSlot,
    tenant: TenantId,
    vault: &KeyVault,
    mut change: impl FnMut(&mut KeyRing) -> Result<bool, String>,
) -> Result<(), RingError> {
    let keys = |what: &str, e: &dyn fmt::Display| RingError::Keys(format!("{what}: {e}"));
    for _ in 0..MAX_ATTEMPTS {
        let Some((bytes, version)) = vault
            .store
            .read(tenant)
            .await
            .map_err(|e| keys("reading the key ring", &e))?
        else {
            return Err(RingError::NoRing);
        };
        let mut ring = KeyRing::from_sealed(&bytes, tenant, &vault.wrapping)
            .map_err(|e| keys("loading the key ring", &e))?;
        if !change(&mut ring).map_err(RingError::Keys)? {
            return Ok(());
        }
        let sealed = {
            let mut st = lock(&slot.state);
            ring.to_sealed(&vault.wrapping, &mut *st.entropy)
                .map_err(|e| keys("sealing the key ring", &e))?
        };
        let versioned = version.is_some();
        match vault.store.write(tenant, sealed, version, versioned).await {
            Ok(_) => return Ok(()),
            Err(CasError::Conflict) => {}
            Err(e) => return Err(keys("writing the key ring", &e)),
        }
    }
    Err(RingError::Keys(format!(
        "the key ring changed under each of {MAX_ATTEMPTS} writes"
    )))
}

/// A ring change to write, computed from what the store holds.
pub(crate) struct Planned {
    /// The ring to seal from once the write (if any) succeeded.
    pub(crate) ring: KeyRing,
    /// The sealed ring to write, if anything changed.
    pub(crate) write: Option<Vec<u8>>,
    /// The version read (the one the write expects).
    pub(crate) expected: Option<RingVersion>,
    /// Whether the store gave a version (else a plain write: one node).
    pub(crate) versioned: bool,
    /// Whether `ring` holds a block reserved by this change (else the
    /// node's own unused block, if any, is carried into it).
    pub(crate) reserved: bool,
}

impl fmt::Debug for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planned")
            .field("ring", &self.ring)
            .field("write", &self.write.as_ref().map(Vec::len))
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

/// The rotation actions due on `ring` (generating and promoting keys: the
/// ones a node applies on its own; disabling and destroying are the
/// retention planner's).
pub(crate) fn due_rotation(
    ring: &KeyRing,
    policy: &RotationPolicy,
    now: DateTime<Utc>,
) -> Vec<KeyAction> {
    policy
        .evaluate(ring, &KeyCensus::new(), now)
        .into_iter()
        .filter(|a| matches!(a, KeyAction::GenerateKey { .. } | KeyAction::Promote { .. }))
        .collect()
}

/// A new tenant's ring: a first key generated and promoted under `policy`.
pub(crate) fn provision_ring(
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
