//! Randomness comes from the caller, through [`Entropy`].

use std::fmt;

/// The entropy source failed to produce bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the entropy source failed")]
pub struct EntropyUnavailable;

/// A source of random bytes the library draws from (data keys, nonces,
/// jitter). The library has no randomness of its own: every call that needs
/// some takes an `&mut dyn Entropy` or `&mut impl Entropy`.
///
/// Use [`SystemEntropy`] in production and [`DeterministicEntropy`] in tests
/// and for reproducible vectors.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    ///
    /// # Errors
    ///
    /// [`EntropyUnavailable`] if the source cannot produce them; the caller's
    /// operation then fails without changing anything.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable>;
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
        (**self).fill(dest)
    }
}

impl<E: Entropy + ?Sized> Entropy for Box<E> {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
        (**self).fill(dest)
    }
}

/// The operating system's secure random number generator, through
/// `ring::rand::SystemRandom`. The production [`Entropy`].
#[derive(Clone)]
pub struct SystemEntropy(ring::rand::SystemRandom);

impl SystemEntropy {
    /// The system's generator.
    #[must_use]
    pub fn new() -> Self {
        SystemEntropy(ring::rand::SystemRandom::new())
    }

    /// The underlying `ring` generator, for `ring` calls that take a
    /// `&dyn SecureRandom` (key-pair generation).
    #[must_use]
    pub fn secure_random(&self) -> &ring::rand::SystemRandom {
        &self.0
    }
}

impl Default for SystemEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SystemEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemEntropy")
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
        ring::rand::SecureRandom::fill(&self.0, dest).map_err(|_| EntropyUnavailable)
    }
}

/// A reproducible byte stream from a seed, for tests and test vectors:
/// block `i` is SHA-256(seed ‖ i as u64 big-endian), and the stream is the
/// blocks in order.
///
/// **Predictable by design**: anyone who knows the seed knows every key it
/// produced. Never use it for data that matters.
#[derive(Clone)]
pub struct DeterministicEntropy {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl DeterministicEntropy {
    /// The stream for a 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeterministicEntropy {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    /// The stream for the seed that is `n` as 8 big-endian bytes followed by
    /// 24 zero bytes.
    #[must_use]
    pub fn from_u64(n: u64) -> Self {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&n.to_be_bytes());
        Self::from_seed(seed)
    }
}

impl fmt::Debug for DeterministicEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeterministicEntropy")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Entropy for DeterministicEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
        for byte in dest {
            if self.used == self.block.len() {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(&self.seed);
                ctx.update(&self.counter.to_be_bytes());
                self.block.copy_from_slice(ctx.finish().as_ref());
                self.counter = self.counter.wrapping_add(1);
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_stream_is_sha256_of_seed_and_counter() {
        let mut e = DeterministicEntropy::from_u64(7);
        let mut a = [0u8; 40];
        e.fill(&mut a).unwrap();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&7u64.to_be_bytes());
        let block = |i: u64| {
            let mut c = ring::digest::Context::new(&ring::digest::SHA256);
            c.update(&seed);
            c.update(&i.to_be_bytes());
            c.finish()
        };
        assert_eq!(&a[..32], block(0).as_ref());
        assert_eq!(&a[32..], &block(1).as_ref()[..8]);
        // Chunking does not change the stream.
        let mut e = DeterministicEntropy::from_u64(7);
        let mut b = [0u8; 40];
        for chunk in b.chunks_mut(3) {
            e.fill(chunk).unwrap();
        }
        assert_eq!(a, b);
    }

    #[test]
    fn system_entropy_fills() {
        let mut e = SystemEntropy::new();
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        e.fill(&mut a).unwrap();
        e.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
