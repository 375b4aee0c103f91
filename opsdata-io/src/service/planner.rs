//! Retention and purge, run by one node at a time under a [`Lease`]
//! (`docs/SCALE.md`, "The planner lease"): the stored objects of the
//! workspaces given are listed, the core's [`RetentionPolicy::plan`] decides,
//! and each action is carried out only while the lease is held. Every
//! action is safe to repeat: deleting an object already gone, shredding a
//! ring already shredded (the receipt of the first shredding), marking a
//! workspace purged again. A node that loses the lease stops; the next
//! holder plans again from what is stored.

use std::fmt;

use opsdata::{
    FIXED_HEADER_LEN, FrameHeader, KeyRing, ObjectKind, RetentionAction, RetentionError,
    RetentionPolicy, RotationPolicy, StoredObject, TenantId, Workspace, peek, shred_keys,
};

use super::IngestService;
use super::rings::update_stored_ring;
use super::tenants::{RingError, lock};
use crate::blobs::AsyncBlobStore;
use crate::lease::{Lease, LeaseError};

/// What one [`IngestService::run_retention`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionRun {
    /// Whether this node held the lease and ran the plan.
    pub ran: bool,
    /// Objects looked at.
    pub objects: u64,
    /// Objects deleted (or found already gone).
    pub deleted: u64,
    /// Tenants whose keys were shredded (or found shredded).
    pub shredded: u64,
    /// Workspaces marked purged.
    pub purged: u64,
    /// Whether the lease was lost before the plan was carried out whole
    /// (the next holder plans the rest again).
    pub stopped: bool,
}

/// Why [`IngestService::run_retention`] or
/// [`IngestService::close_key_ring`] failed. Actions already carried out
/// stay done; each is safe to repeat.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlannerError {
    /// The lease could not be read or written.
    #[error("planner lease: {0}")]
    Lease(#[from] LeaseError),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Store(String),
    /// The retention plan was refused (two workspaces of one tenant, …).
    #[error("retention: {0}")]
    Retention(#[from] RetentionError),
    /// A tenant's key ring could not be read, changed or written.
    #[error("key ring of tenant {tenant}: {reason}")]
    KeyRing {
        /// The tenant.
        tenant: TenantId,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for RetentionRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ran {}: {} objects, {} deleted, {} shredded, {} purged{}",
            self.ran,
            self.objects,
            self.deleted,
            self.shredded,
            self.purged,
            if self.stopped { ", stopped" } else { "" }
        )
    }
}

impl<B: AsyncBlobStore> IngestService<B> {
    /// Runs retention and purge for `workspaces` under `policy`, if this
    /// node holds `lease` (polled first: taken if free or lapsed, renewed if
    /// held): lists each workspace's stored objects, plans with
    /// [`RetentionPolicy::plan`], and carries the actions out while the
    /// lease is held, on the service's clock: objects deleted, keys
    /// shredded through the key store's compare-and-swap, workspaces marked
    /// purged (persist `workspaces` afterwards). Call it periodically on
    /// every node; one runs it at a time.
    ///
    /// # Errors
    ///
    /// [`PlannerError`]; what was done stays done and is safe to repeat.
    pub async fn run_retention(
        &self,
        lease: &mut Lease,
        policy: &RetentionPolicy,
        workspaces: &mut [Workspace],
    ) -> Result<RetentionRun, PlannerError> {
        let mut run = RetentionRun::default();
        let now = self.now();
        let _state = lease.poll(now).await?;
        if !lease.holds(now) {
            return Ok(run);
        }
        run.ran = true;
        let store = &self.inner.store;
        let mut inventory = Vec::new();
        for w in workspaces.iter() {
            let tenant = w.tenant();
            let objects = store
                .list(tenant)
                .await
                .map_err(|e| PlannerError::Store(e.to_string()))?;
            for object in objects {
                let Some(bytes) = store
                    .get(tenant, object)
                    .await
                    .map_err(|e| PlannerError::Store(e.to_string()))?
                else {
                    continue;
                };
                // The frame's header gives its type and time; an object
                // that is not a frame is left for an operator.
                let Some(header) = bytes
                    .get(..FIXED_HEADER_LEN)
                    .and_then(|h| <&[u8; FIXED_HEADER_LEN]>::try_from(h).ok())
                    .and_then(|h| FrameHeader::parse(h).ok())
                else {
                    continue;
                };
                let kek = peek(&bytes).ok().and_then(|p| p.kek_id);
                run.objects += 1;
                inventory.push(StoredObject::new(
                    tenant,
                    object,
                    ObjectKind::Raw(header.data_type),
                    header.created,
                    header.created,
                    kek,
                )?);
            }
        }
        let plan = policy.plan(now, workspaces.iter(), inventory)?;
        for action in plan.into_actions() {
            if !lease.holds(self.now()) {
                run.stopped = true;
                break;
            }
            match action {
                RetentionAction::DeleteObject { tenant, object, .. } => {
                    store
                        .delete(tenant, object)
                        .await
                        .map_err(|e| PlannerError::Store(e.to_string()))?;
                    run.deleted += 1;
                }
                RetentionAction::ShredKeys { tenant } => {
                    self.change_ring(tenant, |ring| {
                        let done = ring.shredded().is_some();
                        let _receipt = shred_keys(tenant, ring, now).map_err(|e| e.to_string())?;
                        Ok(!done)
                    })
                    .await?;
                    run.shredded += 1;
                }
                RetentionAction::MarkPurged { tenant, at } => {
                    if let Some(w) = workspaces.iter_mut().find(|w| w.tenant() == tenant) {
                        w.mark_purged(at)?;
                        run.purged += 1;
                    }
                }
                // Whatever a later core adds: left for the next run.
                _ => {}
            }
        }
        Ok(run)
    }

    /// Closes `tenant`'s key ring as its workspace closes
    /// ([`KeyRing::close`]: its keys are shredded `shred_after_close` of
    /// `policy` later, by [`run_retention`](IngestService::run_retention)),
    /// through the key store's compare-and-swap. Closing a closing ring
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// [`PlannerError::KeyRing`] if the ring cannot be read, is shredded,
    /// or cannot be written.
    pub async fn close_key_ring(
        &self,
        tenant: TenantId,
        policy: &RotationPolicy,
    ) -> Result<(), PlannerError> {
        let now = self.now();
        self.change_ring(tenant, |ring| {
            let closing = ring.closing().is_some();
            ring.close(policy, now).map_err(|e| e.to_string())?;
            Ok(!closing)
        })
        .await
    }

    /// Applies `change` to `tenant`'s stored ring (read, change, write if
    /// unchanged meanwhile; `change` says whether it changed anything) and
    /// makes this node read the ring again before it next seals.
    async fn change_ring(
        &self,
        tenant: TenantId,
        change: impl FnMut(&mut KeyRing) -> Result<bool, String>,
    ) -> Result<(), PlannerError> {
        let keys = |reason: String| PlannerError::KeyRing { tenant, reason };
        let slot = self.inner.tenants.get(tenant);
        let Some(vault) = &self.inner.vault else {
            // Rings in memory only (`add_ring`): change this node's copy.
            let mut st = lock(&slot.state);
            let ring = st.ring.as_mut().ok_or_else(|| keys("no key ring".into()))?;
            let mut change = change;
            return change(ring).map(|_| ()).map_err(keys);
        };
        let _io = slot.ring_io.lock().await;
        update_stored_ring(&slot, tenant, vault, change)
            .await
            .map_err(|e| match e {
                RingError::NoRing => keys("no key ring stored".into()),
                RingError::Keys(reason) => keys(reason),
            })?;
        lock(&slot.state).forget_ring();
        Ok(())
    }
}
