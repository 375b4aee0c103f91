//! Keys: randomness from the caller ([`Entropy`]); key rings, seals and agent
//! credentials build on it.

mod credential;
mod entropy;
pub use credential::{
    AgentCredentials, AgentKey, CertificateInfo, Credential, CredentialError, CredentialPhase,
    CredentialPolicy, RenewalWindow, RetiredCredential,
};

pub use entropy::{DeterministicEntropy, Entropy, EntropyUnavailable, SystemEntropy};
