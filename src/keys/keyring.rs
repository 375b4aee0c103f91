//! One tenant's key ring: versions, their lifecycle, closing and shredding.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use zeroize::Zeroizing;

use super::{Entropy, KeyError, KeyId, KeyMaterial, KeyStatus, RotationPolicy};
use crate::tenant::TenantId;

/// What a ring knows about one key version: everything but the material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The version's id.
    pub id: KeyId,
    /// Where it is in its life.
    pub status: KeyStatus,
    /// When it was created (or imported).
    pub created: DateTime<Utc>,
    /// When it last became primary.
    pub promoted: Option<DateTime<Utc>>,
    /// When it last stopped being primary. Everything it sealed was sealed
    /// before this.
    pub demoted: Option<DateTime<Utc>>,
    /// When it was disabled.
    pub disabled: Option<DateTime<Utc>>,
    /// When it was destroyed.
    pub destroyed: Option<DateTime<Utc>>,
    /// Data keys wrapped under it (seals and rewraps): the count AES-GCM's
    /// random-nonce bound is about.
    pub usage: u64,
    /// Whether it was reported compromised: never primary again, and its
    /// data is to be rewrapped.
    pub compromised: bool,
    /// Whether the notice of its coming rotation was given.
    pub notified: bool,
}

struct Version {
    info: KeyInfo,
    /// `None` once destroyed.
    material: Option<KeyMaterial>,
    /// Data keys reserved under this version: the usage the stored ring
    /// records (never below `info.usage`; see [`KeyRing::reserve_uses`]).
    reserved: u64,
}

/// A block of seals reserved under the primary by
/// [`KeyRing::reserve_uses`]: save the ring, then seal up to
/// `reserved` in all; if the save fails, hand it back to
/// [`KeyRing::cancel_reservation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Reservation {
    /// The version reserved under (the primary).
    pub id: KeyId,
    /// Its reserved count before this reservation.
    pub previous: u64,
    /// Its reserved count now: the usage the stored ring records.
    pub reserved: u64,
    /// Its usage when reserved.
    usage: u64,
    /// Whether the ring was reserving before.
    was_reserving: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closing {
    pub(crate) closed_at: DateTime<Utc>,
    pub(crate) shred_at: DateTime<Utc>,
}

/// Proof that a tenant's keys were destroyed: which versions, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct ShredReceipt {
    /// The tenant.
    pub tenant: TenantId,
    /// Every version the ring held, now destroyed.
    pub key_ids: Vec<KeyId>,
    /// When the workspace was closed.
    pub closed_at: DateTime<Utc>,
    /// When the keys were destroyed.
    pub at: DateTime<Utc>,
}

/// One tenant's key versions: at most one `Primary` that seals, any number
/// that still open, and the history of those retired.
///
/// Lifecycle of a version (each step a method, each misuse a
/// [`KeyError::InvalidTransition`]):
///
/// ```text
/// generate/import -> Pending --promote--> Primary --promote another--> DecryptOnly
///                                            ^                            |   ^
///                                            +---------promote------------+   | enable
///                                                                  disable v   |
///                                                                       Disabled --destroy--> Destroyed
/// ```
///
/// Ids increase per tenant. Key material is random (never derived from a
/// shared master), so destroying it really destroys what it sealed. The
/// [`RotationPolicy`] says which step is due; the ring carries them out.
/// A `now` earlier than one already seen is taken as the latest seen.
///
/// ```
/// # use chrono::{Duration, TimeZone, Utc};
/// # use opsdata::*;
/// let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let policy = RotationPolicy::default();
/// let mut entropy = DeterministicEntropy::from_u64(1);
/// let mut ring = KeyRing::new(tenant, &policy);
/// let first = ring.generate(&mut entropy, now)?;
/// ring.promote(first, now)?;
/// let later = now + Duration::days(90);
/// let second = ring.generate(&mut entropy, later)?;
/// ring.promote(second, later + Duration::hours(24))?;
/// assert_eq!(ring.get(first).unwrap().status, KeyStatus::DecryptOnly);
/// assert_eq!(ring.primary().unwrap().id, second);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyRing {
    tenant: TenantId,
    hard_limit: u64,
    versions: BTreeMap<KeyId, Version>,
    primary: Option<KeyId>,
    closing: Option<Closing>,
    shredded: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    /// Whether seals stop at each version's reserved count (set by the
    /// first [`KeyRing::reserve_uses`]).
    reserving: bool,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Metadata only: the material never appears.
        f.debug_struct("KeyRing")
            .field("tenant", &self.tenant)
            .field("primary", &self.primary)
            .field(
                "versions",
                &self.versions.values().map(|v| &v.info).collect::<Vec<_>>(),
            )
            .field("closing", &self.closing)
            .field("shredded", &self.shredded)
            .finish()
    }
}

/// `now` to the millisecond: the resolution a stored ring keeps.
pub(crate) fn to_ms(now: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl KeyRing {
    /// An empty ring for `tenant`, refusing to seal past the policy's hard
    /// usage limit.
    #[must_use]
    pub fn new(tenant: TenantId, policy: &RotationPolicy) -> Self {
        KeyRing {
            tenant,
            hard_limit: policy.hard_usage_limit(),
            versions: BTreeMap::new(),
            primary: None,
            closing: None,
            shredded: None,
            latest: None,
            reserving: false,
        }
    }

    fn observe(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = to_ms(self.latest.map_or(now, |l| l.max(now)));
        self.latest = Some(now);
        now
    }

    /// The tenant whose keys these are.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The number of data keys a version may wrap before sealing is refused.
    #[must_use]
    pub fn hard_usage_limit(&self) -> u64 {
        self.hard_limit
    }

    /// The version that seals, if any.
    #[must_use]
    pub fn primary(&self) -> Option<&KeyInfo> {
        self.primary.and_then(|id| self.get(id))
    }

    /// The newest `Pending` version, if any.
    #[must_use]
    pub fn pending(&self) -> Option<&KeyInfo> {
        self.versions
            .values()
            .rev()
            .map(|v| &v.info)
            .find(|i| i.status == KeyStatus::Pending)
    }

    /// One version's metadata.
    #[must_use]
    pub fn get(&self, id: KeyId) -> Option<&KeyInfo> {
        self.versions.get(&id).map(|v| &v.info)
    }

    /// Every version's metadata, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &KeyInfo> {
        self.versions.values().map(|v| &v.info)
    }

    /// When the workspace was closed and when its keys may be shredded, if
    /// it is closing.
    #[must_use]
    pub fn closing(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.closing.map(|c| (c.closed_at, c.shred_at))
    }

    /// When the tenant's keys were shredded, if they were.
    #[must_use]
    pub fn shredded(&self) -> Option<DateTime<Utc>> {
        self.shredded
    }

    fn check_live(&self) -> Result<(), KeyError> {
        match self.shredded {
            Some(at) => Err(KeyError::Shredded {
                tenant: self.tenant,
                at,
            }),
            None => Ok(()),
        }
    }

    fn next_id(&self) -> Result<KeyId, KeyError> {
        let last = self.versions.keys().next_back().map_or(0, |id| id.get());
        let next = last
            .checked_add(1)
            .ok_or(KeyError::Policy("no key ids left"))?;
        KeyId::new(next)
    }

    fn add(&mut self, id: KeyId, material: KeyMaterial, now: DateTime<Utc>) {
        let info = KeyInfo {
            id,
            status: KeyStatus::Pending,
            created: now,
            promoted: None,
            demoted: None,
            disabled: None,
            destroyed: None,
            usage: 0,
            compromised: false,
            notified: false,
        };
        self.versions.insert(
            id,
            Version {
                info,
                material: Some(material),
                reserved: 0,
            },
        );
    }

    /// Adds a fresh random version, `Pending`, with the next id.
    ///
    /// # Errors
    ///
    /// [`KeyError::Shredded`] after shredding; [`KeyError::Entropy`] if the
    /// entropy source fails. Nothing changes on error.
    pub fn generate(
        &mut self,
        entropy: &mut (impl Entropy + ?Sized),
        now: DateTime<Utc>,
    ) -> Result<KeyId, KeyError> {
        self.check_live()?;
        let id = self.next_id()?;
        let material = KeyMaterial::generate(entropy)?;
        let now = self.observe(now);
        self.add(id, material, now);
        Ok(id)
    }

    /// Adds a version with material from elsewhere (a key the customer
    /// brings, a migration, a test vector), `Pending`, under `id`, which
    /// must be greater than every id the ring has.
    ///
    /// # Errors
    ///
    /// [`KeyError::Shredded`] after shredding;
    /// [`KeyError::InvalidTransition`] if `id` is not greater than every id
    /// held. Nothing changes on error.
    pub fn import(
        &mut self,
        id: KeyId,
        material: KeyMaterial,
        now: DateTime<Utc>,
    ) -> Result<(), KeyError> {
        self.check_live()?;
        if let Some(last) = self.versions.keys().next_back()
            && id <= *last
        {
            let status = self.versions[last].info.status;
            return Err(KeyError::InvalidTransition {
                id,
                status,
                action: "import under an id not above every existing id:",
            });
        }
        let now = self.observe(now);
        self.add(id, material, now);
        Ok(())
    }

    fn version_mut(&mut self, id: KeyId) -> Result<&mut Version, KeyError> {
        let tenant = self.tenant;
        self.versions
            .get_mut(&id)
            .ok_or(KeyError::UnknownKey { tenant, id })
    }

    fn invalid(&self, id: KeyId, action: &'static str) -> KeyError {
        KeyError::InvalidTransition {
            id,
            status: self.versions[&id].info.status,
            action,
        }
    }

    /// Makes `id` the primary; the previous primary, and any version still
    /// `Pending` that is older than `id`, become `DecryptOnly`.
    /// A `Pending` or `DecryptOnly` version may be promoted, unless it was
    /// reported compromised or has used up its hard limit.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`], [`KeyError::InvalidTransition`],
    /// [`KeyError::UsageExhausted`], [`KeyError::Shredded`]. Nothing changes
    /// on error.
    pub fn promote(&mut self, id: KeyId, now: DateTime<Utc>) -> Result<(), KeyError> {
        self.check_live()?;
        let info = &self.version_mut(id)?.info;
        if info.compromised {
            return Err(self.invalid(id, "promote (it is compromised)"));
        }
        match info.status {
            KeyStatus::Pending | KeyStatus::DecryptOnly => {}
            KeyStatus::Primary => return Ok(()),
            _ => return Err(self.invalid(id, "promote")),
        }
        if info.usage >= self.hard_limit {
            return Err(KeyError::UsageExhausted {
                tenant: self.tenant,
                id,
                limit: self.hard_limit,
            });
        }
        let now = self.observe(now);
        if let Some(old) = self.primary.and_then(|p| self.versions.get_mut(&p)) {
            old.info.status = KeyStatus::DecryptOnly;
            old.info.demoted = Some(now);
        }
        // A version still pending but older than the new primary is
        // superseded: promoting it later would demote a newer key (after a
        // compromise, the fresh replacement). Another node may already have
        // sealed under it, so it keeps opening, as any demoted version.
        for v in self.versions.range_mut(..id).map(|(_, v)| v) {
            if v.info.status == KeyStatus::Pending {
                v.info.status = KeyStatus::DecryptOnly;
                v.info.demoted = Some(now);
            }
        }
        let v = self.version_mut(id)?;
        v.info.status = KeyStatus::Primary;
        v.info.promoted = Some(now);
        self.primary = Some(id);
        Ok(())
    }

    /// Rotates `id` away: a `DecryptOnly` or `Pending` version stops
    /// opening. Its material is kept, so [`enable`](KeyRing::enable) undoes
    /// this. The primary cannot be disabled: promote another first.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`], [`KeyError::InvalidTransition`]. Nothing
    /// changes on error.
    pub fn disable(&mut self, id: KeyId, now: DateTime<Utc>) -> Result<(), KeyError> {
        match self.version_mut(id)?.info.status {
            KeyStatus::DecryptOnly | KeyStatus::Pending => {}
            KeyStatus::Disabled => return Ok(()),
            _ => return Err(self.invalid(id, "disable")),
        }
        let now = self.observe(now);
        let v = self.version_mut(id)?;
        v.info.status = KeyStatus::Disabled;
        v.info.disabled = Some(now);
        Ok(())
    }

    /// Undoes [`disable`](KeyRing::disable): the version opens again
    /// (`DecryptOnly`).
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`], [`KeyError::InvalidTransition`] for a
    /// version not `Disabled`. Nothing changes on error.
    pub fn enable(&mut self, id: KeyId) -> Result<(), KeyError> {
        let v = self.version_mut(id)?;
        if v.info.status != KeyStatus::Disabled {
            return Err(self.invalid(id, "enable"));
        }
        v.info.status = KeyStatus::DecryptOnly;
        v.info.disabled = None;
        Ok(())
    }

    /// Destroys a `Disabled` version's material (zeroized). Irreversible:
    /// what it sealed can never be opened again. Its metadata is kept.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`], [`KeyError::InvalidTransition`] for a
    /// version not `Disabled` (disable first: destruction is never one step
    /// from a key in use). Nothing changes on error.
    pub fn destroy(&mut self, id: KeyId, now: DateTime<Utc>) -> Result<(), KeyError> {
        match self.version_mut(id)?.info.status {
            KeyStatus::Disabled => {}
            KeyStatus::Destroyed => return Ok(()),
            _ => return Err(self.invalid(id, "destroy")),
        }
        let now = self.observe(now);
        let v = self.version_mut(id)?;
        v.info.status = KeyStatus::Destroyed;
        v.info.destroyed = Some(now);
        // Dropping the material zeroizes it.
        v.material = None;
        Ok(())
    }

    /// Reports `id` compromised. If it is the primary, a fresh version is
    /// generated and promoted at once (no propagation delay: continuing to
    /// seal under a compromised key is worse than a node briefly lacking the
    /// new one) and its id returned. A compromised `Pending` version is
    /// disabled. In every case the version is marked, is never promoted
    /// again, and [`RotationPolicy::evaluate`] asks for everything under it
    /// to be rewrapped, then for it to be disabled.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`], [`KeyError::Shredded`],
    /// [`KeyError::Entropy`]. Nothing changes on error.
    pub fn compromise(
        &mut self,
        id: KeyId,
        entropy: &mut (impl Entropy + ?Sized),
        now: DateTime<Utc>,
    ) -> Result<Option<KeyId>, KeyError> {
        self.check_live()?;
        let status = self.version_mut(id)?.info.status;
        let replacement = if status == KeyStatus::Primary {
            // Generate first, so an entropy failure changes nothing.
            let new = self.next_id()?;
            let material = KeyMaterial::generate(entropy)?;
            let now = self.observe(now);
            self.add(new, material, now);
            self.version_mut(id)?.info.compromised = true;
            self.promote(new, now)?;
            Some(new)
        } else {
            self.version_mut(id)?.info.compromised = true;
            if status == KeyStatus::Pending {
                self.disable(id, now)?;
            }
            None
        };
        Ok(replacement)
    }

    /// Records that the notice of `id`'s coming rotation was given, so
    /// [`RotationPolicy::evaluate`] stops asking for it.
    ///
    /// # Errors
    ///
    /// [`KeyError::UnknownKey`].
    pub fn mark_notified(&mut self, id: KeyId) -> Result<(), KeyError> {
        self.version_mut(id)?.info.notified = true;
        Ok(())
    }

    /// Closes the workspace: its keys may be shredded `grace` after `now`
    /// (the policy's `shred_after_close`, 30 days by default). Until then
    /// everything works as before and [`cancel_close`](KeyRing::cancel_close)
    /// undoes it. Closing an already closing ring keeps the first date.
    ///
    /// # Errors
    ///
    /// [`KeyError::Shredded`].
    pub fn close(&mut self, policy: &RotationPolicy, now: DateTime<Utc>) -> Result<(), KeyError> {
        self.check_live()?;
        let now = self.observe(now);
        if self.closing.is_none() {
            self.closing = Some(Closing {
                closed_at: now,
                shred_at: later(now, policy.shred_after_close()),
            });
        }
        Ok(())
    }

    /// Reopens a closing workspace before its keys are shredded.
    ///
    /// # Errors
    ///
    /// [`KeyError::Shredded`] if it is too late; [`KeyError::NotClosing`]
    /// if it was not closing.
    pub fn cancel_close(&mut self) -> Result<(), KeyError> {
        self.check_live()?;
        match self.closing.take() {
            Some(_) => Ok(()),
            None => Err(KeyError::NotClosing {
                tenant: self.tenant,
            }),
        }
    }

    /// Crypto-shreds a closed workspace once its grace period is over:
    /// every version's material is destroyed (zeroized), every version
    /// becomes `Destroyed`, and the ring keeps only metadata. Every frame
    /// sealed for the tenant then fails to open with
    /// [`KeyError::KeyDestroyed`]. Persist the ring afterwards so the store
    /// forgets the material too.
    ///
    /// # Errors
    ///
    /// [`KeyError::NotClosing`], [`KeyError::GracePeriod`] before the grace
    /// period ends, [`KeyError::Shredded`] if already done. Nothing changes
    /// on error.
    pub fn shred(&mut self, now: DateTime<Utc>) -> Result<ShredReceipt, KeyError> {
        self.check_live()?;
        let closing = self.closing.ok_or(KeyError::NotClosing {
            tenant: self.tenant,
        })?;
        let now = to_ms(self.latest.map_or(now, |l| l.max(now)));
        if now < closing.shred_at {
            return Err(KeyError::GracePeriod {
                tenant: self.tenant,
                at: closing.shred_at,
            });
        }
        let now = self.observe(now);
        for v in self.versions.values_mut() {
            if v.info.status != KeyStatus::Destroyed {
                v.info.status = KeyStatus::Destroyed;
                v.info.destroyed = Some(now);
            }
            v.material = None;
        }
        self.primary = None;
        self.shredded = Some(now);
        Ok(ShredReceipt {
            tenant: self.tenant,
            key_ids: self.versions.keys().copied().collect(),
            closed_at: closing.closed_at,
            at: now,
        })
    }

    /// The primary's id and material, if it may seal one more data key.
    pub(crate) fn seal_key(&self) -> Result<(KeyId, &KeyMaterial), KeyError> {
        self.check_live()?;
        let id = self.primary.ok_or(KeyError::NoPrimaryKey {
            tenant: self.tenant,
        })?;
        let v = &self.versions[&id];
        if v.info.usage >= self.hard_limit {
            return Err(KeyError::UsageExhausted {
                tenant: self.tenant,
                id,
                limit: self.hard_limit,
            });
        }
        if self.reserving && v.info.usage >= v.reserved {
            return Err(KeyError::UsageNotReserved {
                tenant: self.tenant,
                id,
            });
        }
        // Invariant: the primary is never destroyed (destroy needs Disabled,
        // and shredding clears `primary`).
        let material = v.material.as_ref().expect("the primary has material");
        Ok((id, material))
    }

    /// Reserves up to `block` more seals under the primary, so the ring
    /// need not be saved after every seal (`docs/KEYS.md`, "Usage in
    /// blocks"). The new reserved count is `min(max(reserved, usage) +
    /// block, hard limit)`; it never decreases. From the first reservation
    /// on, sealing under a version stops at its reserved count
    /// ([`KeyError::UsageNotReserved`]) until the next reservation.
    ///
    /// The host saves the ring (whose stored usage is the reserved count)
    /// **before** sealing under the reservation, and gives the reservation
    /// back with [`cancel_reservation`](KeyRing::cancel_reservation) if the
    /// save fails. So the stored usage is never below the real usage, a
    /// crash loses at most the unused rest of a block (a loaded ring's
    /// usage is the stored, reserved count), and the hard limit is never
    /// passed.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] for a block of 0; [`KeyError::Shredded`],
    /// [`KeyError::NoPrimaryKey`], [`KeyError::UsageExhausted`] when the
    /// primary has reached the hard limit. Nothing changes on error.
    pub fn reserve_uses(&mut self, block: u64) -> Result<Reservation, KeyError> {
        if block == 0 {
            return Err(KeyError::Policy("a reservation of zero seals"));
        }
        self.check_live()?;
        let id = self.primary.ok_or(KeyError::NoPrimaryKey {
            tenant: self.tenant,
        })?;
        let hard = self.hard_limit;
        let tenant = self.tenant;
        let v = self.version_mut(id)?;
        if v.info.usage >= hard {
            return Err(KeyError::UsageExhausted {
                tenant,
                id,
                limit: hard,
            });
        }
        let previous = v.reserved;
        let usage = v.info.usage;
        let reserved = previous
            .max(v.info.usage)
            .saturating_add(block)
            .min(hard)
            .max(previous);
        v.reserved = reserved;
        let was_reserving = self.reserving;
        self.reserving = true;
        Ok(Reservation {
            id,
            previous,
            reserved,
            usage,
            was_reserving,
        })
    }

    /// Gives back a reservation whose ring could not be saved: the
    /// ring is as before it (reserved count, and whether seals are bounded
    /// by reservations), unless seals or another reservation happened since
    /// (then nothing changes: the host must not seal between reserving and
    /// saving).
    pub fn cancel_reservation(&mut self, reservation: Reservation) {
        if let Some(v) = self.versions.get_mut(&reservation.id)
            && v.reserved == reservation.reserved
            && v.info.usage == reservation.usage
        {
            v.reserved = reservation.previous;
            self.reserving = reservation.was_reserving;
        }
    }

    /// How many more seals the primary may make before a new reservation
    /// is needed: its reserved count minus its usage (0 with no primary,
    /// and 0 for a ring new or just loaded, which has reserved nothing
    /// beyond its recorded usage). A host that reserves whenever this is 0
    /// never seals an unrecorded use. (Until the first reservation, seals
    /// are not bounded by reservations, for hosts that save the ring after
    /// every seal instead.)
    #[must_use]
    pub fn reserved_left(&self) -> u64 {
        let Some(v) = self.primary.and_then(|p| self.versions.get(&p)) else {
            return 0;
        };
        v.reserved.min(self.hard_limit).saturating_sub(v.info.usage)
    }

    /// Carries the unused rest of `older`'s reservation into this ring, a
    /// newer copy of the same tenant's ring read back from a store that
    /// several nodes share (`docs/KEYS.md`, "Shared key rings").
    ///
    /// A node that re-reads the shared ring while it still holds seals it
    /// reserved (a range `[usage, reserved)` of the primary's uses that the
    /// store already records as taken) keeps sealing in that range: the
    /// newer copy's recorded usage for the primary is the whole store's
    /// reserved count, at or past the end of the range. Nothing is carried
    /// (and `false` is answered) unless the primary is the same key in both,
    /// `older` has seals left, and this copy records the range as reserved
    /// (its usage is at least `older`'s reserved count): the rest of an
    /// older primary's block is abandoned, as a crash would abandon it.
    ///
    /// The ring then records only the range's end as the primary's usage
    /// (what [`to_sealed`](KeyRing::to_sealed) would write): seal from it,
    /// but write the shared ring only from a fresh read (read, change,
    /// conditional write), never from this copy.
    pub fn keep_reservation(&mut self, older: &KeyRing) -> bool {
        if self.tenant != older.tenant || !older.reserving {
            return false;
        }
        let (Some(id), Some(old_id)) = (self.primary, older.primary) else {
            return false;
        };
        if id != old_id {
            return false;
        }
        let (Some(old), Some(v)) = (older.versions.get(&id), self.versions.get_mut(&id)) else {
            return false;
        };
        let (usage, reserved) = (old.info.usage, old.reserved.min(self.hard_limit));
        if usage >= reserved || v.info.usage.max(v.reserved) < reserved {
            return false;
        }
        v.info.usage = usage;
        v.reserved = reserved;
        self.reserving = true;
        true
    }

    /// The reserved count of `id` (the usage a saved ring records for it).
    #[must_use]
    pub fn reserved(&self, id: KeyId) -> Option<u64> {
        self.versions.get(&id).map(|v| v.reserved.max(v.info.usage))
    }

    /// Counts one data key wrapped under `id`.
    pub(crate) fn record_use(&mut self, id: KeyId, now: DateTime<Utc>) {
        self.observe(now);
        if let Some(v) = self.versions.get_mut(&id) {
            v.info.usage = v.info.usage.saturating_add(1);
        }
    }

    /// The material to open what `id` sealed.
    pub(crate) fn open_key(&self, id: KeyId) -> Result<&KeyMaterial, KeyError> {
        let tenant = self.tenant;
        if let Some(at) = self.shredded {
            let destroyed_at = self
                .versions
                .get(&id)
                .and_then(|v| v.info.destroyed)
                .unwrap_or(at);
            return Err(KeyError::KeyDestroyed {
                tenant,
                id,
                destroyed_at,
            });
        }
        let v = self
            .versions
            .get(&id)
            .ok_or(KeyError::UnknownKey { tenant, id })?;
        match (v.info.status, &v.material) {
            (KeyStatus::Pending | KeyStatus::Primary | KeyStatus::DecryptOnly, Some(m)) => Ok(m),
            (KeyStatus::Disabled, _) => Err(KeyError::KeyDisabled {
                tenant,
                id,
                disabled_at: v.info.disabled.unwrap_or(v.info.created),
            }),
            _ => Err(KeyError::KeyDestroyed {
                tenant,
                id,
                destroyed_at: v.info.destroyed.unwrap_or(v.info.created),
            }),
        }
    }
}

// The stored form of a ring's contents (the plaintext of docs/KEYS.md).

const NONE_MS: i64 = i64::MIN;
const ENTRY_LEN: usize = 4 + 1 + 1 + 5 * 8 + 8;
const FLAG_COMPROMISED: u8 = 1;
const FLAG_NOTIFIED: u8 = 2;
const FLAG_MATERIAL: u8 = 4;

fn put_time(out: &mut Vec<u8>, t: Option<DateTime<Utc>>) {
    out.extend_from_slice(&t.map_or(NONE_MS, |t| t.timestamp_millis()).to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], KeyError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(KeyError::StoreFormat {
                reason: "truncated",
            })?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, KeyError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, KeyError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, KeyError> {
        Ok(u64::from_be_bytes(self.take()?))
    }
    fn time(&mut self) -> Result<Option<DateTime<Utc>>, KeyError> {
        let ms = i64::from_be_bytes(self.take()?);
        if ms == NONE_MS {
            return Ok(None);
        }
        DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or(KeyError::StoreFormat {
                reason: "time out of range",
            })
    }
    fn required_time(&mut self) -> Result<DateTime<Utc>, KeyError> {
        self.time()?.ok_or(KeyError::StoreFormat {
            reason: "missing time",
        })
    }
}

impl KeyRing {
    /// The ring's contents in the stored form (`docs/KEYS.md`), in a buffer
    /// that is zeroized when dropped.
    pub(crate) fn encode_plain(&self) -> Zeroizing<Vec<u8>> {
        let len = 16 + 8 + 1 + 3 * 8 + 4 + self.versions.len() * (ENTRY_LEN + 32);
        // Reserved up front: a growing Vec would leave copies of keys behind.
        let mut out = Zeroizing::new(Vec::with_capacity(len));
        out.extend_from_slice(self.tenant.as_bytes());
        out.extend_from_slice(&self.hard_limit.to_be_bytes());
        let flags = u8::from(self.closing.is_some()) | (u8::from(self.shredded.is_some()) << 1);
        out.push(flags);
        put_time(&mut out, self.closing.map(|c| c.closed_at));
        put_time(&mut out, self.closing.map(|c| c.shred_at));
        put_time(&mut out, self.shredded);
        // Invariant: a ring holds far fewer than 2^32 versions (ids are u32).
        out.extend_from_slice(&(self.versions.len() as u32).to_be_bytes());
        for v in self.versions.values() {
            let i = &v.info;
            out.extend_from_slice(&i.id.get().to_be_bytes());
            out.push(i.status.as_u8());
            let flags = if i.compromised { FLAG_COMPROMISED } else { 0 }
                | if i.notified { FLAG_NOTIFIED } else { 0 }
                | if v.material.is_some() {
                    FLAG_MATERIAL
                } else {
                    0
                };
            out.push(flags);
            put_time(&mut out, Some(i.created));
            put_time(&mut out, i.promoted);
            put_time(&mut out, i.demoted);
            put_time(&mut out, i.disabled);
            put_time(&mut out, i.destroyed);
            // The reserved count: never below the real usage.
            out.extend_from_slice(&i.usage.max(v.reserved).to_be_bytes());
            if let Some(m) = &v.material {
                out.extend_from_slice(m.expose());
            }
        }
        debug_assert!(out.len() <= len);
        out
    }

    /// Parses the stored form, checking that it describes a ring this crate
    /// could have built.
    pub(crate) fn decode_plain(bytes: &[u8]) -> Result<KeyRing, KeyError> {
        let bad = |reason| KeyError::StoreFormat { reason };
        let mut r = Reader(bytes);
        let tenant = TenantId::from_bytes(r.take()?).map_err(|_| bad("nil tenant"))?;
        let hard_limit = r.u64()?;
        if hard_limit == 0 || hard_limit > RotationPolicy::MAX_HARD_USAGE_LIMIT {
            return Err(bad("hard usage limit out of range"));
        }
        let flags = r.u8()?;
        if flags & !3 != 0 {
            return Err(bad("unknown ring flags"));
        }
        let closed_at = r.time()?;
        let shred_at = r.time()?;
        let shredded = r.time()?;
        let closing = match (flags & 1 != 0, closed_at, shred_at) {
            (true, Some(closed_at), Some(shred_at)) => Some(Closing {
                closed_at,
                shred_at,
            }),
            (false, None, None) => None,
            _ => return Err(bad("inconsistent closing times")),
        };
        if (flags & 2 != 0) != shredded.is_some() {
            return Err(bad("inconsistent shredding time"));
        }
        let count = r.u32()? as usize;
        // Each entry takes at least ENTRY_LEN bytes: refuse a count the
        // input cannot hold before allocating anything for it.
        if count > r.0.len() / ENTRY_LEN {
            return Err(bad("more versions than bytes"));
        }
        let mut ring = KeyRing {
            tenant,
            hard_limit,
            versions: BTreeMap::new(),
            primary: None,
            closing,
            shredded,
            latest: None,
            reserving: false,
        };
        for _ in 0..count {
            let id = KeyId::new(r.u32()?).map_err(|_| bad("key id 0"))?;
            if ring
                .versions
                .keys()
                .next_back()
                .is_some_and(|&last| id <= last)
            {
                return Err(bad("key ids not increasing"));
            }
            let status = KeyStatus::from_u8(r.u8()?).ok_or(bad("unknown key status"))?;
            let vflags = r.u8()?;
            if vflags & !(FLAG_COMPROMISED | FLAG_NOTIFIED | FLAG_MATERIAL) != 0 {
                return Err(bad("unknown key flags"));
            }
            let info = KeyInfo {
                id,
                status,
                created: r.required_time()?,
                promoted: r.time()?,
                demoted: r.time()?,
                disabled: r.time()?,
                destroyed: r.time()?,
                usage: r.u64()?,
                compromised: vflags & FLAG_COMPROMISED != 0,
                notified: vflags & FLAG_NOTIFIED != 0,
            };
            let has_material = vflags & FLAG_MATERIAL != 0;
            if has_material == (status == KeyStatus::Destroyed) {
                return Err(bad("key material present if and only if not destroyed"));
            }
            if shredded.is_some() && status != KeyStatus::Destroyed {
                return Err(bad("a shredded ring with a live key"));
            }
            let material = if has_material {
                let mut key = Zeroizing::new(r.take::<32>()?);
                let m = KeyMaterial::from_bytes(*key);
                zeroize::Zeroize::zeroize(&mut *key);
                Some(m)
            } else {
                None
            };
            if status == KeyStatus::Primary {
                if ring.primary.is_some() {
                    return Err(bad("two primary keys"));
                }
                ring.primary = Some(id);
            }
            let reserved = info.usage;
            ring.versions.insert(
                id,
                Version {
                    info,
                    material,
                    reserved,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(ring)
    }
}
