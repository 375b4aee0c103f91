//! Keys: randomness from the caller ([`Entropy`]); key rings, seals and agent
//! credentials build on it.

mod entropy;
// credential: agent credentials (CredentialPolicy, AgentCredentials).

pub use entropy::{DeterministicEntropy, Entropy, EntropyUnavailable, SystemEntropy};
