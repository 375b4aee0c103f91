//! Per-tenant state, each behind its own lock: tenants never wait for each
//! other. The map of tenants is sharded, and a shard's lock is only held to
//! find or insert a tenant's slot.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use opsdata::{
    BatchId, Entropy, Ingest, IngestConfig, KeyRing, RingVersion, RotationPolicy, TenantId,
};

use super::rings::{KeyVault, Planned, REFRESH, Stored, due_rotation, provision_ring};

const SHARDS: usize = 32;

/// Locks `m`; a panic while it was held leaves the state as consistent as
/// the operation that panicked left it (each step below is a whole
/// in-memory update), so keep serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes the entropy a tenant's seals draw from.
pub(crate) type EntropySource = Arc<dyn Fn() -> Box<dyn Entropy + Send> + Send + Sync>;

/// One tenant's state.
pub(crate) struct TenantState {
    pub(crate) ingest: Ingest,
    /// The ring it seals from (with a key store: a copy of the stored
    /// one, read at `version`, with this node's reserved block).
    pub(crate) ring: Option<KeyRing>,
    version: Option<RingVersion>,
    /// When the ring was last read from the key store.
    refreshed: Option<DateTime<Utc>>,
    /// Whether the last fresh read could not reserve seals (no primary, a
    /// used-up key): then sealing reports why until the next re-read.
    reserve_refused: bool,
    /// Batches sealed and being stored: a copy of one arriving meanwhile is
    /// answered transient, not as a duplicate of data not yet stored.
    pub(crate) in_flight: HashSet<BatchId>,
    pub(crate) entropy: Box<dyn Entropy + Send>,
}

impl fmt::Debug for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantState")
            .field("ring", &self.ring)
            .field("version", &self.version)
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

impl TenantState {
    fn new(config: &IngestConfig, entropy: Box<dyn Entropy + Send>) -> Self {
        TenantState {
            ingest: Ingest::new(config.clone()),
            ring: None,
            version: None,
            refreshed: None,
            reserve_refused: false,
            in_flight: HashSet::new(),
            entropy,
        }
    }

    /// Whether [`ring_ready`](super::rings::ring_ready) has work:
    /// [`RingNeed::Urgent`] with no ring yet, a re-read asked for, or (to
    /// seal) no seal left reserved (unless the last fresh read could not
    /// reserve: then sealing reports why, until the next re-read);
    /// [`RingNeed::Stale`] when only the periodic re-read is due.
    pub(crate) fn ring_needs_work(
        &self,
        now: DateTime<Utc>,
        reread: bool,
        to_seal: bool,
    ) -> RingNeed {
        let Some(ring) = &self.ring else {
            return RingNeed::Urgent;
        };
        if reread {
            return RingNeed::Urgent;
        }
        if !to_seal {
            return RingNeed::Nothing;
        }
        if ring.reserved_left() == 0 && !self.reserve_refused {
            return RingNeed::Urgent;
        }
        let stale = self.refreshed.is_none_or(|t| (now - t).abs() >= REFRESH);
        if stale {
            RingNeed::Stale
        } else {
            RingNeed::Nothing
        }
    }

    /// The change to write for what the store holds (`stored`): with
    /// nothing stored, this node's ring (added in memory) or a new one
    /// (provisioning); otherwise the stored ring, rotated forward if the
    /// policy says so, with a block of seals reserved unless this node
    /// still has seals left under the same primary.
    pub(crate) fn plan_ring_change(
        &mut self,
        tenant: TenantId,
        stored: Option<Stored>,
        vault: &KeyVault,
        provision: Option<&RotationPolicy>,
        block: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<Planned, RingError> {
        let keys = |what: &str, e: opsdata::KeyError| RingError::Keys(format!("{what}: {e}"));
        let entropy = &mut *self.entropy;
        let Some((bytes, version)) = stored else {
            let ring = match (&self.ring, provision) {
                (Some(mine), _) => mine
                    .to_sealed(&vault.wrapping, entropy)
                    .and_then(|b| KeyRing::from_sealed(&b, tenant, &vault.wrapping))
                    .map_err(|e| keys("copying the key ring", e))?,
                (None, Some(policy)) if block.is_some() => {
                    provision_ring(tenant, policy, entropy, now)?
                }
                (None, _) => return Err(RingError::NoRing),
            };
            let sealed = ring
                .to_sealed(&vault.wrapping, entropy)
                .map_err(|e| keys("sealing the new key ring", e))?;
            // Create if absent: of nodes provisioning one tenant at once,
            // one creates the ring, the others meet a conflict and read it.
            return Ok(Planned {
                ring,
                write: Some(sealed),
                expected: None,
                versioned: true,
                reserved: false,
            });
        };
        // A ring that cannot be read is not replaced: what it sealed would
        // be lost for good.
        let mut ring = KeyRing::from_sealed(&bytes, tenant, &vault.wrapping)
            .map_err(|e| keys("loading the key ring", e))?;
        let mut changed = false;
        if let Some(policy) = provision {
            for action in due_rotation(&ring, policy, now) {
                let _applied = ring
                    .apply(&action, entropy, now)
                    .map_err(|e| keys("rotating the key ring", e))?;
                changed = true;
            }
        }
        let primary = ring.primary().map(|p| p.id);
        let carried = self
            .ring
            .as_ref()
            .is_some_and(|old| old.reserved_left() > 0 && old.primary().map(|p| p.id) == primary);
        let mut reserved = false;
        if let Some(block) = block.filter(|_| !carried) {
            self.reserve_refused = false;
            // No primary, or a used-up key: sealing reports it.
            match ring.reserve_uses(block) {
                Ok(_) => {
                    changed = true;
                    reserved = true;
                }
                Err(_) => self.reserve_refused = true,
            }
        }
        let write = if changed {
            Some(
                ring.to_sealed(&vault.wrapping, entropy)
                    .map_err(|e| keys("sealing the key ring", e))?,
            )
        } else {
            None
        };
        Ok(Planned {
            ring,
            write,
            versioned: version.is_some(),
            expected: version,
            reserved,
        })
    }

    /// Drops this node's copy of the ring (and the rest of its block): the
    /// next frame reads the stored one.
    pub(crate) fn forget_ring(&mut self) {
        self.ring = None;
        self.version = None;
        self.refreshed = None;
        self.reserve_refused = false;
    }

    /// Takes `ring`, now stored at `version` (or read at it), as the ring
    /// to seal from, keeping this node's unused block unless `ring` holds
    /// a new one.
    pub(crate) fn adopt_ring(
        &mut self,
        mut ring: KeyRing,
        version: Option<RingVersion>,
        reserved: bool,
        now: DateTime<Utc>,
    ) {
        if !reserved && let Some(old) = &self.ring {
            let _kept = ring.keep_reservation(old);
        }
        self.ring = Some(ring);
        self.version = version;
        self.refreshed = Some(now);
    }
}

/// What a tenant's ring needs before a frame is sealed (or opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingNeed {
    /// Nothing.
    Nothing,
    /// The periodic re-read is due; sealing may go on meanwhile.
    Stale,
    /// Nothing can be sealed (or opened) before the store is read.
    Urgent,
}

/// One tenant: its state, and the lock under which its ring is read and
/// written (held across the key store's awaits, so one ring change per
/// tenant per node is under way at a time; the state lock is never held
/// across an await).
#[derive(Debug)]
pub(crate) struct TenantSlot {
    pub(crate) state: Mutex<TenantState>,
    pub(crate) ring_io: tokio::sync::Mutex<()>,
}

/// The tenants, sharded by tenant id.
pub(crate) struct Tenants {
    shards: Vec<Mutex<HashMap<TenantId, Arc<TenantSlot>>>>,
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

    /// The tenant's slot, made on first sight.
    pub(crate) fn get(&self, tenant: TenantId) -> Arc<TenantSlot> {
        let b = tenant.as_bytes();
        let shard = usize::from(b[15]) % SHARDS;
        let mut map = lock(&self.shards[shard]);
        Arc::clone(map.entry(tenant).or_insert_with(|| {
            Arc::new(TenantSlot {
                state: Mutex::new(TenantState::new(&self.config, (self.entropy)())),
                ring_io: tokio::sync::Mutex::new(()),
            })
        }))
    }
}
