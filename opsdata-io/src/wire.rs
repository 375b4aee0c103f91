//! The wire protocol between an agent and the service (`docs/WIRE.md`):
//! the agent writes frames, exactly as encoded (a frame is self-delimiting),
//! and the service answers each with one fixed-size [`Ack`].

use std::io::Read;

use chrono::Duration;
use opsdata::{BatchId, Outcome};

/// The path an agent `POST`s its frames to (HTTPS wire, v2).
pub const FRAMES_PATH: &str = "/v1/frames";
/// The `Content-Type` of a request body: one or more OPSF frames,
/// concatenated, exactly as encoded.
pub const FRAMES_CONTENT_TYPE: &str = "application/vnd.opsdata.frames";
/// The `Content-Type` of a response body: one [`Ack`] per frame read, in
/// the order the frames were sent.
pub const ACKS_CONTENT_TYPE: &str = "application/vnd.opsdata.acks";

/// The first bytes of an acknowledgement.
pub const ACK_MAGIC: [u8; 4] = *b"OPSA";
/// The acknowledgement version this crate writes and reads.
const ACK_VERSION: u8 = 1;
/// Length of an encoded [`Ack`]: magic, version, code, batch id, wait.
pub const ACK_LEN: usize = 4 + 1 + 1 + 16 + 4;

const CODE_DELIVERED: u8 = 0;
const CODE_TRANSIENT: u8 = 1;
const CODE_THROTTLED: u8 = 2;
const CODE_REJECTED: u8 = 3;

/// The service's answer to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Ack {
    /// The batch answered; `None` when the frame could not be read far
    /// enough to know it (written as 16 zero bytes; the service then closes
    /// the connection).
    pub batch_id: Option<BatchId>,
    /// What the agent's outbox should do with it.
    pub outcome: Outcome,
}

/// A malformed acknowledgement.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The connection failed or closed before a whole acknowledgement.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes do not start with [`ACK_MAGIC`] and version 1.
    #[error("not an acknowledgement (magic or version)")]
    BadMagic,
    /// An outcome code this version does not know.
    #[error("unknown outcome code {0}")]
    UnknownCode(u8),
    /// The batch id bytes are not a valid batch id.
    #[error("invalid batch id in acknowledgement")]
    BadBatchId,
}

impl Ack {
    /// The acknowledgement's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; ACK_LEN] {
        let mut b = [0u8; ACK_LEN];
        b[..4].copy_from_slice(&ACK_MAGIC);
        b[4] = ACK_VERSION;
        let (code, wait_ms) = match self.outcome {
            Outcome::Delivered => (CODE_DELIVERED, 0),
            Outcome::Throttled { retry_after } => (
                CODE_THROTTLED,
                u32::try_from(retry_after.num_milliseconds().max(0)).unwrap_or(u32::MAX),
            ),
            Outcome::Rejected => (CODE_REJECTED, 0),
            // Transient, and any outcome a later core adds: retry.
            _ => (CODE_TRANSIENT, 0),
        };
        b[5] = code;
        if let Some(id) = self.batch_id {
            b[6..22].copy_from_slice(id.as_bytes());
        }
        b[22..26].copy_from_slice(&wait_ms.to_be_bytes());
        b
    }

    /// Reads an acknowledgement from its bytes.
    ///
    /// # Errors
    ///
    /// [`WireError::BadMagic`], [`WireError::UnknownCode`] or
    /// [`WireError::BadBatchId`].
    pub fn decode(b: &[u8; ACK_LEN]) -> Result<Ack, WireError> {
        if b[..4] != ACK_MAGIC || b[4] != ACK_VERSION {
            return Err(WireError::BadMagic);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[6..22]);
        let batch_id = if id == [0; 16] {
            None
        } else {
            Some(BatchId::new(uuid::Uuid::from_bytes(id)).map_err(|_| WireError::BadBatchId)?)
        };
        let wait_ms = u32::from_be_bytes([b[22], b[23], b[24], b[25]]);
        let outcome = match b[5] {
            CODE_DELIVERED => Outcome::Delivered,
            CODE_TRANSIENT => Outcome::Transient,
            CODE_THROTTLED => Outcome::Throttled {
                retry_after: Duration::milliseconds(i64::from(wait_ms)),
            },
            CODE_REJECTED => Outcome::Rejected,
            c => return Err(WireError::UnknownCode(c)),
        };
        Ok(Ack { batch_id, outcome })
    }

    /// Reads one acknowledgement from a stream.
    ///
    /// # Errors
    ///
    /// [`WireError::Io`] if the stream fails or ends first, else as
    /// [`Ack::decode`].
    pub fn read_from(r: &mut impl Read) -> Result<Ack, WireError> {
        let mut b = [0u8; ACK_LEN];
        r.read_exact(&mut b)?;
        Ack::decode(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BatchId {
        BatchId::from_random_bytes([n; 16])
    }

    #[test]
    fn every_outcome_round_trips() {
        for outcome in [
            Outcome::Delivered,
            Outcome::Transient,
            Outcome::Rejected,
            Outcome::Throttled {
                retry_after: Duration::milliseconds(1234),
            },
        ] {
            let ack = Ack {
                batch_id: Some(id(7)),
                outcome,
            };
            assert_eq!(Ack::decode(&ack.encode()).unwrap(), ack);
        }
        let unknown = Ack {
            batch_id: None,
            outcome: Outcome::Rejected,
        };
        assert_eq!(Ack::decode(&unknown.encode()).unwrap(), unknown);
    }

    #[test]
    fn bad_bytes_are_typed_errors() {
        let good = Ack {
            batch_id: Some(id(1)),
            outcome: Outcome::Delivered,
        }
        .encode();
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(Ack::decode(&b), Err(WireError::BadMagic)));
        let mut b = good;
        b[4] = 2;
        assert!(matches!(Ack::decode(&b), Err(WireError::BadMagic)));
        let mut b = good;
        b[5] = 9;
        assert!(matches!(Ack::decode(&b), Err(WireError::UnknownCode(9))));
        let short = &good[..10];
        assert!(matches!(
            Ack::read_from(&mut &short[..]),
            Err(WireError::Io(_))
        ));
    }

    #[test]
    fn a_wait_past_u32_millis_saturates() {
        let ack = Ack {
            batch_id: Some(id(2)),
            outcome: Outcome::Throttled {
                retry_after: Duration::days(100),
            },
        };
        let back = Ack::decode(&ack.encode()).unwrap();
        assert_eq!(
            back.outcome,
            Outcome::Throttled {
                retry_after: Duration::milliseconds(i64::from(u32::MAX))
            }
        );
    }
}
