//! The pager's keys across rotations and restarts (`docs/STATE.md`,
//! "Paging keys"): a new key signs from now on, and earlier keys keep
//! verifying the tokens they signed until those tokens have expired.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

use super::{ExportError, Pager, PagingKey, TokenFields, decode_token};

/// The `format` field of saved paging keys.
const FORMAT: &str = "opsdata.paging_keys";
/// The version written and read.
const VERSION: u32 = 1;

/// How many retired keys a pager keeps at most: a key rotated away is kept
/// for at most the token age ceiling (7 days) plus the future skew, so only
/// rotations faster than that could reach this, and then the oldest goes.
pub(super) const MAX_RETIRED_KEYS: usize = 16;

/// A key rotated away, kept to verify the tokens it signed until they
/// expire.
#[derive(Debug)]
pub(super) struct Retired {
    pub(super) key: PagingKey,
    pub(super) retired_at: DateTime<Utc>,
}

/// The pager's keys as saved by [`Pager::save_keys`]: JSON holding key
/// material, zeroized on drop, `Debug` redacted. Protecting it at rest
/// (encrypted storage, a secret store) is the host's job: anyone who reads
/// it can forge continuation tokens.
pub struct SavedPagingKeys(Zeroizing<String>);

impl SavedPagingKeys {
    /// Wraps text read back from the host's secret storage.
    #[must_use]
    pub fn new(text: String) -> Self {
        SavedPagingKeys(Zeroizing::new(text))
    }

    /// The JSON text, to write to the host's secret storage.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SavedPagingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SavedPagingKeys(..)")
    }
}

/// Saved keys as written: the key texts live in zeroizing buffers.
#[derive(Serialize)]
struct SavedOut<'a> {
    format: &'static str,
    version: u32,
    current: &'a str,
    retired: Vec<RetiredOut<'a>>,
}

#[derive(Serialize)]
struct RetiredOut<'a> {
    key: &'a str,
    retired_at: DateTime<Utc>,
}

/// Saved keys as read: borrowed from the zeroizing input, never copied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedIn<'a> {
    #[serde(borrow)]
    format: &'a str,
    version: u32,
    #[serde(borrow)]
    current: &'a str,
    #[serde(borrow)]
    retired: Vec<RetiredIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredIn<'a> {
    #[serde(borrow)]
    key: &'a str,
    retired_at: DateTime<Utc>,
}

fn bad(reason: &'static str) -> ExportError {
    ExportError::State { reason }
}

fn key_text(key: &PagingKey) -> Zeroizing<String> {
    Zeroizing::new(B64.encode(key.0.expose()))
}

fn key_from_text(text: &str) -> Result<PagingKey, ExportError> {
    let mut raw = Zeroizing::new([0u8; 33]);
    match B64.decode_slice(text, &mut raw[..]) {
        Ok(32) => {}
        _ => return Err(bad("a key is not 32 bytes of standard Base64")),
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[..32]);
    let paging_key = PagingKey::from_bytes(key);
    key.zeroize();
    Ok(paging_key)
}

impl Pager {
    /// Makes `key` the signing key from now on. The key it replaces is kept
    /// to verify the tokens it signed until they have expired: until
    /// `now` plus the maximum token age plus
    /// [`MAX_FUTURE_SKEW`](Pager::MAX_FUTURE_SKEW). Keys past that are
    /// forgotten, as is the oldest beyond 16 retired keys. Every node
    /// answering the same search API rotates to the same key.
    pub fn rotate(&mut self, key: PagingKey, now: DateTime<Utc>) {
        let old = std::mem::replace(&mut self.key, key);
        self.retired.push(Retired {
            key: old,
            retired_at: now,
        });
        let keep = self.retired_for();
        self.retired.retain(|r| {
            r.retired_at
                .checked_add_signed(keep)
                .is_none_or(|end| now <= end)
        });
        if self.retired.len() > MAX_RETIRED_KEYS {
            let excess = self.retired.len() - MAX_RETIRED_KEYS;
            self.retired.drain(..excess);
        }
    }

    /// How long a retired key keeps verifying.
    fn retired_for(&self) -> Duration {
        self.max_token_age + Pager::MAX_FUTURE_SKEW
    }

    /// Retired keys kept.
    #[must_use]
    pub fn retired_keys(&self) -> usize {
        self.retired.len()
    }

    /// Reads a token under the signing key, then under each retired key
    /// still within its time at `now` (each tag compared in constant time).
    pub(super) fn decode_any(
        &self,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenFields, ExportError> {
        let first = decode_token(&self.key, text);
        if !matches!(first, Err(ExportError::TokenTampered)) {
            return first;
        }
        let keep = self.retired_for();
        for r in self.retired.iter().rev() {
            let live = r
                .retired_at
                .checked_add_signed(keep)
                .is_none_or(|end| now <= end);
            if live && let Ok(fields) = decode_token(&r.key, text) {
                return Ok(fields);
            }
        }
        first
    }

    /// The signing key and the retired keys still kept, as JSON
    /// (`docs/STATE.md`, "Paging keys"), for the host to store in its
    /// secret storage and give to [`with_saved_keys`](Pager::with_saved_keys)
    /// after a restart, so tokens issued before it keep paging after it.
    /// This is key material: see [`SavedPagingKeys`].
    #[must_use]
    pub fn save_keys(&self) -> SavedPagingKeys {
        let current = key_text(&self.key);
        let retired: Vec<(Zeroizing<String>, DateTime<Utc>)> = self
            .retired
            .iter()
            .map(|r| (key_text(&r.key), r.retired_at))
            .collect();
        let saved = SavedOut {
            format: FORMAT,
            version: VERSION,
            current: &current,
            retired: retired
                .iter()
                .map(|(key, retired_at)| RetiredOut {
                    key,
                    retired_at: *retired_at,
                })
                .collect(),
        };
        // Plain data with string keys: serializing cannot fail.
        let text = serde_json::to_string(&saved).expect("the saved keys serialize");
        SavedPagingKeys::new(text)
    }

    /// Replaces this pager's keys with saved ones (the page size and token
    /// age stay as set on this pager).
    ///
    /// # Errors
    ///
    /// [`ExportError::State`] for text that is not saved paging keys of
    /// version 1, a key that is not 32 bytes of standard Base64, or more
    /// than 16 retired keys.
    pub fn with_saved_keys(mut self, saved: &SavedPagingKeys) -> Result<Pager, ExportError> {
        let parsed: SavedIn<'_> =
            serde_json::from_str(saved.expose()).map_err(|_| bad("not saved paging keys"))?;
        if parsed.format != FORMAT {
            return Err(bad("not saved paging keys (format)"));
        }
        if parsed.version != VERSION {
            return Err(bad("unsupported version"));
        }
        if parsed.retired.len() > MAX_RETIRED_KEYS {
            return Err(bad("more than 16 retired keys"));
        }
        let key = key_from_text(parsed.current)?;
        let retired = parsed
            .retired
            .iter()
            .map(|r| {
                Ok(Retired {
                    key: key_from_text(r.key)?,
                    retired_at: r.retired_at,
                })
            })
            .collect::<Result<Vec<_>, ExportError>>()?;
        self.key = key;
        self.retired = retired;
        Ok(self)
    }
}
