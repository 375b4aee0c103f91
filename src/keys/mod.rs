//! Keys: each tenant's [`KeyRing`], the [`RotationPolicy`] that says when to
//! rotate, retire and destroy its versions, sealing frames under them
//! (envelope encryption, `docs/FRAME.md`), the [`KeyStore`] a ring is kept
//! in (sealed by a wrapping key, `docs/KEYS.md`), crypto-shredding of a
//! closed workspace, and agents' credential renewal.
//!
//! Randomness comes from the caller through [`Entropy`]; time comes in as
//! `now`. Key material is zeroized when dropped, never printed by `Debug`,
//! and never handed out in the clear.

mod credential;
mod entropy;
mod keyring;
mod material;
mod rotation;
mod seal;
mod store;

use std::fmt;

use chrono::{DateTime, Utc};

use crate::frame::FrameError;
use crate::tenant::TenantId;

pub use credential::{
    AgentCredentials, AgentKey, CertificateInfo, Credential, CredentialError, CredentialPhase,
    CredentialPolicy, RenewalWindow, RetiredCredential,
};

pub use entropy::{DeterministicEntropy, Entropy, EntropyUnavailable, SystemEntropy};
pub use keyring::{KeyInfo, KeyRing, Reservation, ShredReceipt};
pub use material::KeyMaterial;
pub use rotation::{Applied, KeyAction, KeyCensus, RotationPolicy, RotationReason};
pub use seal::{FramePeek, SUITE_AES_256_GCM, open, peek, rewrap, seal};
pub use store::{
    CasError, KeyStore, MemoryKeyStore, RingVersion, VersionedRing, WrappingKey, load_ring,
    save_ring,
};

/// A key version's number within its tenant's ring: 1, 2, 3, ... in order
/// of creation. Never 0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(u32);

impl KeyId {
    /// Key id `n`.
    ///
    /// # Errors
    ///
    /// [`KeyError::ZeroKeyId`] for 0.
    pub const fn new(n: u32) -> Result<KeyId, KeyError> {
        if n == 0 {
            Err(KeyError::ZeroKeyId)
        } else {
            Ok(KeyId(n))
        }
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where a key version is in its life: `Pending` → `Primary` →
/// `DecryptOnly` → `Disabled` → `Destroyed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Created, not yet used to seal: waiting for every node to have it.
    /// Opens what it sealed elsewhere (a node whose clock is behind).
    Pending,
    /// The one version that seals. Opens too.
    Primary,
    /// Opens what it sealed; seals nothing new.
    DecryptOnly,
    /// Rotated away: opens nothing until enabled again. Its material is kept.
    Disabled,
    /// Its material is gone for good; only its metadata is kept.
    Destroyed,
}

impl KeyStatus {
    pub(crate) const fn as_u8(self) -> u8 {
        match self {
            KeyStatus::Pending => 1,
            KeyStatus::Primary => 2,
            KeyStatus::DecryptOnly => 3,
            KeyStatus::Disabled => 4,
            KeyStatus::Destroyed => 5,
        }
    }

    pub(crate) const fn from_u8(n: u8) -> Option<KeyStatus> {
        Some(match n {
            1 => KeyStatus::Pending,
            2 => KeyStatus::Primary,
            3 => KeyStatus::DecryptOnly,
            4 => KeyStatus::Disabled,
            5 => KeyStatus::Destroyed,
            _ => return None,
        })
    }
}

/// Which part of a sealed frame failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealPart {
    /// The wrapped data key (or the header and seal fields it binds).
    WrappedKey,
    /// The body (or the header it binds).
    Body,
    /// A stored key ring's ciphertext.
    StoredRing,
}

impl fmt::Display for SealPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealPart::WrappedKey => "the wrapped data key",
            SealPart::Body => "the body",
            SealPart::StoredRing => "the stored key ring",
        })
    }
}

/// Everything that can go wrong with keys, seals and key stores. Messages
/// never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Key id 0 was given; ids start at 1.
    #[error("key id 0 is not a key version (ids start at 1)")]
    ZeroKeyId,
    /// The ring has no version with this id: never created here (or the
    /// frame's key id was altered).
    #[error("tenant {tenant} has no key {id}")]
    UnknownKey {
        /// The tenant.
        tenant: TenantId,
        /// The id asked for.
        id: KeyId,
    },
    /// The version was rotated away (disabled); its material still exists,
    /// and enabling it again makes what it sealed readable.
    #[error("key {id} of tenant {tenant} was rotated away (disabled at {disabled_at})")]
    KeyDisabled {
        /// The tenant.
        tenant: TenantId,
        /// The version.
        id: KeyId,
        /// When it was disabled.
        disabled_at: DateTime<Utc>,
    },
    /// The version was destroyed: what it sealed is unrecoverable.
    #[error(
        "key {id} of tenant {tenant} was destroyed at {destroyed_at}: its data is unrecoverable"
    )]
    KeyDestroyed {
        /// The tenant.
        tenant: TenantId,
        /// The version.
        id: KeyId,
        /// When it was destroyed.
        destroyed_at: DateTime<Utc>,
    },
    /// The frame (or stored ring) belongs to another tenant; checked before
    /// any cryptography.
    #[error("frame of tenant {found} offered to the key ring of tenant {expected}")]
    TenantMismatch {
        /// The ring's tenant.
        expected: TenantId,
        /// The frame's tenant.
        found: TenantId,
    },
    /// Authentication failed: the bytes were altered, or sealed under other
    /// key material with the same id.
    #[error("{part} failed authentication: tampered, or sealed under other key material")]
    Tampered {
        /// Which part failed.
        part: SealPart,
    },
    /// The ring has no primary version to seal with.
    #[error("tenant {tenant} has no primary key")]
    NoPrimaryKey {
        /// The tenant.
        tenant: TenantId,
    },
    /// The primary has sealed as many data keys as AES-GCM with random
    /// nonces safely allows: sealing is refused until a new key is primary.
    #[error("key {id} of tenant {tenant} has reached its hard usage limit of {limit}")]
    UsageExhausted {
        /// The tenant.
        tenant: TenantId,
        /// The version.
        id: KeyId,
        /// The limit.
        limit: u64,
    },
    /// The primary has used every seal reserved under it
    /// ([`KeyRing::reserve_uses`]): reserve and save again before sealing.
    #[error(
        "key {id} of tenant {tenant} has used its reserved seals: reserve more and save the ring"
    )]
    UsageNotReserved {
        /// The tenant.
        tenant: TenantId,
        /// The version.
        id: KeyId,
    },
    /// A lifecycle step that does not apply to the version's status (for
    /// example disabling the primary, or destroying a version not disabled).
    #[error("key {id}: cannot {action} a {status:?} key")]
    InvalidTransition {
        /// The version.
        id: KeyId,
        /// Its status.
        status: KeyStatus,
        /// What was asked.
        action: &'static str,
    },
    /// The tenant's keys were shredded: nothing can be added or sealed.
    #[error("tenant {tenant}'s keys were shredded at {at}")]
    Shredded {
        /// The tenant.
        tenant: TenantId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Shredding was asked for a tenant that is not closing.
    #[error("tenant {tenant} is not closing")]
    NotClosing {
        /// The tenant.
        tenant: TenantId,
    },
    /// Shredding was asked before the grace period ended.
    #[error("tenant {tenant} may be shredded from {at}, not before")]
    GracePeriod {
        /// The tenant.
        tenant: TenantId,
        /// When the grace period ends.
        at: DateTime<Utc>,
    },
    /// A sealing operation was given a frame that is not sealed.
    #[error("the frame is not sealed")]
    NotSealed,
    /// `seal` was given a frame that is already sealed.
    #[error("the frame is already sealed")]
    AlreadySealed,
    /// The seal section names a cipher suite this crate does not know.
    #[error("unknown cipher suite {suite}")]
    UnsupportedSuite {
        /// The suite number.
        suite: u8,
    },
    /// The seal section's reserved bytes are not zero, or its key id is 0.
    #[error("malformed seal section: {reason}")]
    MalformedSeal {
        /// What is wrong.
        reason: &'static str,
    },
    /// Sealing would make the body longer than a frame can declare.
    #[error("the body of {body_len} bytes is too large to seal")]
    BodyTooLarge {
        /// The body's length before sealing.
        body_len: u32,
    },
    /// The frame itself failed its checks.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The caller's entropy source failed.
    #[error(transparent)]
    Entropy(#[from] EntropyUnavailable),
    /// A setting of [`RotationPolicy`] makes no sense.
    #[error("rotation policy: {0}")]
    Policy(&'static str),
    /// A stored key ring is malformed (after it authenticated, or before).
    #[error("stored key ring: {reason}")]
    StoreFormat {
        /// What is wrong.
        reason: &'static str,
    },
    /// A stored key ring was sealed under another wrapping key.
    #[error("stored key ring is sealed under wrapping key {found}, not {expected}")]
    WrongWrappingKey {
        /// The wrapping key given.
        expected: u32,
        /// The one the ring names.
        found: u32,
    },
    /// The key store failed.
    #[error("key store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}
