//! Key material: 32 secret bytes, zeroized on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

use super::{Entropy, EntropyUnavailable};

/// A 256-bit secret key: a tenant's key-encryption key or a wrapping key.
///
/// Zeroized when dropped; `Debug` prints `KeyMaterial(..)`; the bytes are
/// never handed back out of the crate. Build one from the caller's entropy
/// ([`KeyMaterial::generate`]) or import one ([`KeyMaterial::from_bytes`],
/// for keys the customer brings or a test vector).
pub struct KeyMaterial(Zeroizing<[u8; 32]>);

impl KeyMaterial {
    /// Takes 32 bytes as a key. The array passed in is moved into a
    /// zeroizing buffer; zeroize the caller's own copies.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes);
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        KeyMaterial(key)
    }

    /// Draws a fresh key from `entropy`.
    ///
    /// # Errors
    ///
    /// [`EntropyUnavailable`] if the source fails.
    pub fn generate(entropy: &mut (impl Entropy + ?Sized)) -> Result<Self, EntropyUnavailable> {
        let mut key = Zeroizing::new([0u8; 32]);
        entropy.fill(&mut key[..])?;
        Ok(KeyMaterial(key))
    }

    /// The secret bytes, for the crate's own cipher calls only.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let k = KeyMaterial::from_bytes([0xAB; 32]);
        let s = format!("{k:?} {k:#?}");
        assert_eq!(format!("{k:?}"), "KeyMaterial(..)");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(!s.contains("171"), "{s}");
    }
}
