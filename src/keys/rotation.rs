//! When to rotate, retire and destroy key versions.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::{Entropy, KeyError, KeyId, KeyRing, KeyStatus, ShredReceipt};

/// Why a new key version is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RotationReason {
    /// The ring has no key yet.
    Initial,
    /// The primary will reach `max_age` once the new key has propagated.
    Age,
    /// The primary has wrapped `soft_usage_limit` data keys.
    Usage,
}

/// A step [`RotationPolicy::evaluate`] finds due. Each names the
/// [`KeyRing`] method that carries it out; [`KeyRing::apply`] calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum KeyAction {
    /// Add a version: [`KeyRing::generate`].
    GenerateKey {
        /// Why.
        reason: RotationReason,
    },
    /// Make a pending version primary: [`KeyRing::promote`].
    Promote {
        /// The version.
        id: KeyId,
    },
    /// Tell whoever must know (the tenant, operators) that the primary
    /// rotates soon; then [`KeyRing::mark_notified`].
    Notify {
        /// The primary.
        id: KeyId,
        /// When it is expected to stop sealing.
        rotates_at: DateTime<Utc>,
    },
    /// Rewrap the frames still sealed under `from` (the caller holds them:
    /// [`rewrap`](crate::rewrap) each), so it can be retired.
    RewrapFrames {
        /// The version to move away from.
        from: KeyId,
        /// Frames the census counted under it.
        count: u64,
    },
    /// Retire a version nothing needs: [`KeyRing::disable`].
    Disable {
        /// The version.
        id: KeyId,
    },
    /// Destroy a disabled version nothing needs: [`KeyRing::destroy`].
    Destroy {
        /// The version.
        id: KeyId,
    },
    /// The closed workspace's grace period is over: [`KeyRing::shred`].
    Shred,
}

/// What the caller counted of the frames it stores for one tenant: how many
/// are sealed under each key version. Count them with [`peek`](crate::peek),
/// which reads the key id without any key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCensus {
    frames: BTreeMap<KeyId, u64>,
}

impl KeyCensus {
    /// An empty census: no frames under any key.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the count for `id`.
    #[must_use]
    pub fn with(mut self, id: KeyId, frames: u64) -> Self {
        self.set(id, frames);
        self
    }

    /// Sets the count for `id`.
    pub fn set(&mut self, id: KeyId, frames: u64) {
        self.frames.insert(id, frames);
    }

    /// Adds one frame under `id`.
    pub fn add(&mut self, id: KeyId) {
        *self.frames.entry(id).or_insert(0) += 1;
    }

    /// Frames counted under `id`.
    #[must_use]
    pub fn frames(&self, id: KeyId) -> u64 {
        self.frames.get(&id).copied().unwrap_or(0)
    }
}

/// When key versions are made, promoted, retired and destroyed.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `max_age` | 90 days | a primary seals for this long, then its successor takes over |
/// | `propagation_delay` | 24 h | a new version is `Pending` this long before it is promoted, so every node has it first |
/// | `soft_usage_limit` | 2^31 | data keys wrapped under the primary before a rotation is due |
/// | `hard_usage_limit` | 3 865 470 566 | data keys after which sealing is refused (≈ 0.9 · 2^32, the AES-GCM random-nonce bound) |
/// | `notify_before` | 14 days | notice before a rotation by age |
/// | `retire_after` | 90 days | how long a demoted version keeps opening before its data is rewrapped and it is disabled |
/// | `destroy_after` | 30 days | how long a disabled version is kept before it is destroyed |
/// | `retention` | none | how long the tenant's data is kept; data older than this no longer holds a key back |
/// | `shred_after_close` | 30 days | grace period between closing a workspace and shredding its keys |
///
/// ```
/// use chrono::Duration;
/// use opsdata::RotationPolicy;
/// let p = RotationPolicy::default().with_max_age(Duration::days(30))?;
/// assert_eq!(p.propagation_delay(), Duration::hours(24));
/// assert!(RotationPolicy::default().with_max_age(Duration::zero()).is_err());
/// # Ok::<(), opsdata::KeyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    max_age: Duration,
    propagation_delay: Duration,
    soft_usage_limit: u64,
    hard_usage_limit: u64,
    notify_before: Duration,
    retire_after: Duration,
    destroy_after: Duration,
    retention: Option<Duration>,
    shred_after_close: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            max_age: Duration::days(90),
            propagation_delay: Duration::hours(24),
            soft_usage_limit: 1 << 31,
            hard_usage_limit: Self::MAX_HARD_USAGE_LIMIT,
            notify_before: Duration::days(14),
            retire_after: Duration::days(90),
            destroy_after: Duration::days(30),
            retention: None,
            shred_after_close: Duration::days(30),
        }
    }
}

/// Longest any duration setting may be: 100 years.
const MAX_DAYS: i64 = 36_525;

fn positive(d: Duration, what: &'static str) -> Result<Duration, KeyError> {
    if d <= Duration::zero() || d > Duration::days(MAX_DAYS) {
        Err(KeyError::Policy(what))
    } else {
        Ok(d)
    }
}

fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn earlier(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl RotationPolicy {
    /// The highest hard usage limit allowed: 3 865 470 566 data keys per
    /// version (≈ 0.9 · 2^32, where NIST SP 800-38D's bound for random
    /// 96-bit nonces is 2^32).
    pub const MAX_HARD_USAGE_LIMIT: u64 = 3_865_470_566;

    /// Sets `max_age`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless it is positive, at most 100 years, and
    /// longer than `propagation_delay` and `notify_before`.
    pub fn with_max_age(mut self, d: Duration) -> Result<Self, KeyError> {
        self.max_age = positive(d, "max_age must be positive and at most 100 years")?;
        self.check()
    }

    /// Sets `propagation_delay` (zero allowed: promote at once).
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] if negative or not shorter than `max_age`.
    pub fn with_propagation_delay(mut self, d: Duration) -> Result<Self, KeyError> {
        if d < Duration::zero() {
            return Err(KeyError::Policy("propagation_delay must not be negative"));
        }
        self.propagation_delay = d;
        self.check()
    }

    /// Sets the soft and hard usage limits.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless 1 ≤ soft ≤ hard ≤
    /// [`MAX_HARD_USAGE_LIMIT`](Self::MAX_HARD_USAGE_LIMIT).
    pub fn with_usage_limits(mut self, soft: u64, hard: u64) -> Result<Self, KeyError> {
        if soft == 0 || soft > hard || hard > Self::MAX_HARD_USAGE_LIMIT {
            return Err(KeyError::Policy(
                "usage limits must satisfy 1 <= soft <= hard <= 3865470566",
            ));
        }
        self.soft_usage_limit = soft;
        self.hard_usage_limit = hard;
        Ok(self)
    }

    /// Sets `notify_before` (zero: no notices).
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] if negative or not shorter than `max_age`.
    pub fn with_notify_before(mut self, d: Duration) -> Result<Self, KeyError> {
        if d < Duration::zero() {
            return Err(KeyError::Policy("notify_before must not be negative"));
        }
        self.notify_before = d;
        self.check()
    }

    /// Sets `retire_after`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless positive and at most 100 years.
    pub fn with_retire_after(mut self, d: Duration) -> Result<Self, KeyError> {
        self.retire_after = positive(d, "retire_after must be positive and at most 100 years")?;
        Ok(self)
    }

    /// Sets `destroy_after`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless positive and at most 100 years.
    pub fn with_destroy_after(mut self, d: Duration) -> Result<Self, KeyError> {
        self.destroy_after = positive(d, "destroy_after must be positive and at most 100 years")?;
        Ok(self)
    }

    /// Sets the tenant's data retention (`None`: kept until deleted).
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless positive and at most 100 years.
    pub fn with_retention(mut self, d: Option<Duration>) -> Result<Self, KeyError> {
        self.retention = d
            .map(|d| positive(d, "retention must be positive and at most 100 years"))
            .transpose()?;
        Ok(self)
    }

    /// Sets `shred_after_close`.
    ///
    /// # Errors
    ///
    /// [`KeyError::Policy`] unless positive and at most 100 years.
    pub fn with_shred_after_close(mut self, d: Duration) -> Result<Self, KeyError> {
        self.shred_after_close = positive(
            d,
            "shred_after_close must be positive and at most 100 years",
        )?;
        Ok(self)
    }

    fn check(self) -> Result<Self, KeyError> {
        if self.propagation_delay >= self.max_age {
            return Err(KeyError::Policy(
                "propagation_delay must be shorter than max_age",
            ));
        }
        if self.notify_before >= self.max_age {
            return Err(KeyError::Policy(
                "notify_before must be shorter than max_age",
            ));
        }
        Ok(self)
    }

    /// How long a primary seals.
    #[must_use]
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
    /// How long a new version waits before promotion.
    #[must_use]
    pub fn propagation_delay(&self) -> Duration {
        self.propagation_delay
    }
    /// Wraps before a rotation is due.
    #[must_use]
    pub fn soft_usage_limit(&self) -> u64 {
        self.soft_usage_limit
    }
    /// Wraps after which sealing is refused.
    #[must_use]
    pub fn hard_usage_limit(&self) -> u64 {
        self.hard_usage_limit
    }
    /// Notice before a rotation by age.
    #[must_use]
    pub fn notify_before(&self) -> Duration {
        self.notify_before
    }
    /// How long a demoted version keeps opening before it is retired.
    #[must_use]
    pub fn retire_after(&self) -> Duration {
        self.retire_after
    }
    /// How long a disabled version is kept before destruction.
    #[must_use]
    pub fn destroy_after(&self) -> Duration {
        self.destroy_after
    }
    /// The tenant's data retention.
    #[must_use]
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }
    /// Grace period between closing and shredding.
    #[must_use]
    pub fn shred_after_close(&self) -> Duration {
        self.shred_after_close
    }

    /// When the current primary stops sealing, by age: `max_age` after its
    /// promotion.
    fn rotates_at(&self, ring: &KeyRing) -> Option<DateTime<Utc>> {
        ring.primary()
            .and_then(|p| p.promoted)
            .map(|at| later(at, self.max_age))
    }

    /// Whether everything sealed under a version demoted at `demoted` is
    /// past retention (everything it sealed was sealed before `demoted`).
    fn past_retention(&self, demoted: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match (self.retention, demoted) {
            (Some(r), Some(d)) => later(d, r) <= now,
            _ => false,
        }
    }

    /// What is due for `ring` at `now`, given how many stored frames depend
    /// on each version. Pure: call it as often as you like (on a timer, or
    /// after each seal), carry out the actions (for example with
    /// [`KeyRing::apply`]) and call it again; an action stays due until it
    /// is carried out.
    ///
    /// - No primary: generate one ([`RotationReason::Initial`]); a pending
    ///   version is promoted at once, as nothing needs to stay compatible.
    /// - A primary: a successor is generated `propagation_delay` before the
    ///   primary reaches `max_age` (so it is promoted when it does), or as
    ///   soon as the primary has wrapped `soft_usage_limit` data keys; it is
    ///   promoted `propagation_delay` after its creation. A notice is due
    ///   `notify_before` the rotation.
    /// - A version demoted more than `retire_after` ago, or compromised:
    ///   while the census counts frames under it (and they are not past
    ///   retention), rewrap them; then disable it. Never disabled while data
    ///   still needs it.
    /// - A disabled version, `destroy_after` after it was disabled and with
    ///   nothing counted under it (or all past retention): destroy it.
    /// - A closed workspace past its grace period: shred, and nothing else.
    #[must_use]
    pub fn evaluate(
        &self,
        ring: &KeyRing,
        census: &KeyCensus,
        now: DateTime<Utc>,
    ) -> Vec<KeyAction> {
        let mut actions = Vec::new();
        if ring.shredded().is_some() {
            return actions;
        }
        if let Some((_, shred_at)) = ring.closing()
            && shred_at <= now
        {
            // Nothing else matters once the keys are due to go, and nothing
            // else could be carried out after.
            actions.push(KeyAction::Shred);
            return actions;
        }
        let pending = ring.pending();
        match (ring.primary(), pending) {
            (None, None) => actions.push(KeyAction::GenerateKey {
                reason: RotationReason::Initial,
            }),
            (None, Some(q)) => actions.push(KeyAction::Promote { id: q.id }),
            (Some(p), None) => {
                let rotates_at = self.rotates_at(ring).unwrap_or(now);
                let generate_at = earlier(rotates_at, self.propagation_delay);
                if now >= generate_at {
                    actions.push(KeyAction::GenerateKey {
                        reason: RotationReason::Age,
                    });
                } else if p.usage >= self.soft_usage_limit {
                    actions.push(KeyAction::GenerateKey {
                        reason: RotationReason::Usage,
                    });
                } else if !p.notified
                    && self.notify_before > Duration::zero()
                    && now >= earlier(rotates_at, self.notify_before)
                {
                    actions.push(KeyAction::Notify {
                        id: p.id,
                        rotates_at,
                    });
                }
            }
            (Some(p), Some(q)) => {
                let promote_at = later(q.created, self.propagation_delay);
                if now >= promote_at {
                    actions.push(KeyAction::Promote { id: q.id });
                } else if !p.notified && self.notify_before > Duration::zero() {
                    actions.push(KeyAction::Notify {
                        id: p.id,
                        rotates_at: promote_at,
                    });
                }
            }
        }
        for v in ring.versions() {
            let count = census.frames(v.id);
            let past = self.past_retention(v.demoted, now);
            let free = count == 0 || past;
            match v.status {
                KeyStatus::DecryptOnly => {
                    let retire = v.compromised
                        || v.demoted
                            .is_some_and(|d| later(d, self.retire_after) <= now);
                    if retire {
                        actions.push(if free {
                            KeyAction::Disable { id: v.id }
                        } else {
                            KeyAction::RewrapFrames { from: v.id, count }
                        });
                    }
                }
                KeyStatus::Disabled => {
                    let since = v.disabled.unwrap_or(v.created);
                    if free && later(since, self.destroy_after) <= now {
                        actions.push(KeyAction::Destroy { id: v.id });
                    }
                }
                _ => {}
            }
        }
        actions
    }
}

/// What [`KeyRing::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub enum Applied {
    /// A version was generated.
    Generated(KeyId),
    /// The ring changed as the action said (promote, disable, destroy,
    /// notified).
    Done,
    /// The tenant's keys were shredded.
    Shredded(ShredReceipt),
    /// Nothing was done: the frames are the caller's to rewrap.
    RewrapNeeded {
        /// The version to move away from.
        from: KeyId,
        /// Frames counted under it.
        count: u64,
    },
}

impl KeyRing {
    /// Carries out one action [`RotationPolicy::evaluate`] returned.
    ///
    /// # Errors
    ///
    /// Those of the method the action names. Nothing changes on error.
    pub fn apply(
        &mut self,
        action: &KeyAction,
        entropy: &mut (impl Entropy + ?Sized),
        now: DateTime<Utc>,
    ) -> Result<Applied, KeyError> {
        Ok(match *action {
            KeyAction::GenerateKey { .. } => Applied::Generated(self.generate(entropy, now)?),
            KeyAction::Promote { id } => {
                self.promote(id, now)?;
                Applied::Done
            }
            KeyAction::Notify { id, .. } => {
                self.mark_notified(id)?;
                Applied::Done
            }
            KeyAction::RewrapFrames { from, count } => Applied::RewrapNeeded { from, count },
            KeyAction::Disable { id } => {
                self.disable(id, now)?;
                Applied::Done
            }
            KeyAction::Destroy { id } => {
                self.destroy(id, now)?;
                Applied::Done
            }
            KeyAction::Shred => Applied::Shredded(self.shred(now)?),
        })
    }
}
