//! One holder at a time among many nodes: a lease object in a shared
//! object store, taken with a conditional create, renewed and taken over
//! with conditional updates (`docs/SCALE.md`, "The planner lease").
//!
//! Work that must run on one node at a time (retention and purge planning)
//! runs only while [`Lease::holds`] is true. A lease lasts `ttl` from its
//! last write; its holder stops acting `margin` before it ends and another
//! node takes it over only `margin` after it ends, so two nodes whose
//! clocks differ by less than `margin` never both act. Whatever a holder
//! did is safe to do again (deleting what is gone, shredding what is
//! shredded), so a holder that stalls past its lease and acts late repeats
//! work, never breaks it.
//!
//! # Format
//!
//! The lease object holds four lines of UTF-8 text:
//!
//! ```text
//! opsdata-lease 1
//! holder <node id: a UUID, lowercase hyphenated>
//! term <decimal u64: 1 at creation, +1 at each take-over>
//! expires <milliseconds since the Unix epoch, decimal i64>
//! ```
//!
//! Anything else (or over 1 KiB) is refused with
//! [`LeaseError::Format`] and never overwritten: an operator looks first.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use uuid::Uuid;

use crate::blobs::BlobOp;

/// The largest lease object read.
const MAX_LEASE_LEN: u64 = 1024;

/// Why a lease call failed. The lease is not held after any error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The object store failed.
    #[error("object store {op}: {source}")]
    Store {
        /// What was being done.
        op: BlobOp,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The store cannot write conditionally (the local filesystem cannot
    /// update conditionally): it cannot hold a lease among nodes.
    #[error("the object store cannot write conditionally: no lease among nodes on it")]
    Unsupported,
    /// The lease object is not in the lease format; it is left alone.
    #[error("the lease object is not a lease: {reason}")]
    Format {
        /// What is wrong.
        reason: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid lease setting: {0}")]
    Config(&'static str),
}

/// What the lease object says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The node holding it.
    pub holder: Uuid,
    /// 1 when created, one more at each take-over.
    pub term: u64,
    /// When it ends unless renewed.
    pub expires: DateTime<Utc>,
}

impl LeaseRecord {
    /// The record in the lease format (module docs).
    #[must_use]
    pub fn encode(&self) -> String {
        format!(
            "opsdata-lease 1\nholder {}\nterm {}\nexpires {}\n",
            self.holder.hyphenated(),
            self.term,
            self.expires.timestamp_millis()
        )
    }

    /// Reads a record in the lease format.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Format`] for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, LeaseError> {
        let bad = |reason| LeaseError::Format { reason };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.split('\n');
        if lines.next() != Some("opsdata-lease 1") {
            return Err(bad("not an opsdata-lease 1 object"));
        }
        let mut field = |name: &str| -> Result<&str, LeaseError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .ok_or(bad("a field is missing or out of order"))
        };
        let holder = field("holder")?;
        let term = field("term")?;
        let expires = field("expires")?;
        let holder_text = holder;
        let holder = Uuid::try_parse(holder).map_err(|_| bad("the holder is not a UUID"))?;
        if holder.hyphenated().to_string() != holder_text {
            return Err(bad("the holder is not in canonical form"));
        }
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(term) || !(digits(expires) || expires.strip_prefix('-').is_some_and(digits)) {
            return Err(bad("term and expires are decimal numbers"));
        }
        let term: u64 = term.parse().map_err(|_| bad("the term is out of range"))?;
        let expires: i64 = expires
            .parse()
            .map_err(|_| bad("the expiry is out of range"))?;
        let expires =
            DateTime::from_timestamp_millis(expires).ok_or(bad("the expiry is out of range"))?;
        if lines.next() != Some("") || lines.next().is_some() {
            return Err(bad("trailing bytes after the expiry line"));
        }
        if term == 0 {
            return Err(bad("term 0"));
        }
        Ok(LeaseRecord {
            holder,
            term,
            expires,
        })
    }
}

/// What [`Lease::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseState {
    /// This node holds the lease: act until `until` (the lease's end less
    /// the margin), and poll again before then to renew it.
    Held {
        /// The term this node holds.
        term: u64,
        /// Act only before this.
        until: DateTime<Utc>,
    },
    /// Another node holds it; poll again after `retry_at`.
    HeldBy {
        /// The holder (nil when another node created the lease between
        /// this node's read and its write).
        holder: Uuid,
        /// The earliest time it may be taken over.
        retry_at: DateTime<Utc>,
    },
}

/// A lease held among nodes in an object store: see the module docs.
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: Path,
    node: Uuid,
    ttl: Duration,
    margin: Duration,
    held: Option<(LeaseRecord, UpdateVersion)>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's Display, never its Debug (which may hold
        // credentials).
        f.debug_struct("Lease")
            .field("store", &format_args!("{}", self.store))
            .field("path", &self.path.as_ref())
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .field("held", &self.held.as_ref().map(|(r, _)| r))
            .finish()
    }
}

impl Lease {
    /// The lease object `name` (a `/`-separated object path, e.g.
    /// `leases/planner`) in `store`, contended for as node `node` (a
    /// random id per process: a restarted node is a new node). The lease
    /// lasts 60 s from each renewal, with a 10 s margin.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Config`] if `name` is not a valid object path.
    pub fn new(store: Arc<dyn ObjectStore>, name: &str, node: Uuid) -> Result<Self, LeaseError> {
        let path = Path::parse(name).map_err(|_| LeaseError::Config("not an object path"))?;
        if path.as_ref().is_empty() {
            return Err(LeaseError::Config("an empty lease name"));
        }
        Ok(Lease {
            store,
            path,
            node,
            ttl: Duration::seconds(60),
            margin: Duration::seconds(10),
            held: None,
        })
    }

    /// How long the lease lasts from each write, and the margin: the holder
    /// stops acting `margin` before the end, others take over `margin`
    /// after it (so clocks may differ by up to `margin`). Renew (poll)
    /// more often than every `ttl - 2 × margin`.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Config`] unless `0 < 2 × margin < ttl ≤ 1 day`.
    pub fn with_ttl(mut self, ttl: Duration, margin: Duration) -> Result<Self, LeaseError> {
        if margin <= Duration::zero() || margin * 2 >= ttl || ttl > Duration::days(1) {
            return Err(LeaseError::Config("needs 0 < 2 x margin < ttl <= 1 day"));
        }
        self.ttl = ttl;
        self.margin = margin;
        Ok(self)
    }

    /// This node's id.
    #[must_use]
    pub fn node(&self) -> Uuid {
        self.node
    }

    /// Whether this node holds the lease at `now` and may act: it took or
    /// renewed it, and `now` is before its end less the margin.
    #[must_use]
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        self.held
            .as_ref()
            .is_some_and(|(r, _)| now < r.expires - self.margin)
    }

    /// Takes the lease if nobody holds it or its holder let it lapse
    /// (`margin` past its end), renews it if this node holds it, or says
    /// who holds it. One read and at most one conditional write.
    ///
    /// # Errors
    ///
    /// [`LeaseError`]; the lease is then not held by this node.
    pub async fn poll(&mut self, now: DateTime<Utc>) -> Result<LeaseState, LeaseError> {
        let result = self.poll_inner(now).await;
        if !matches!(result, Ok(LeaseState::Held { .. })) {
            self.held = None;
        }
        result
    }

    async fn poll_inner(&mut self, now: DateTime<Utc>) -> Result<LeaseState, LeaseError> {
        let mine = |term| LeaseRecord {
            holder: self.node,
            term,
            expires: now + self.ttl,
        };
        let Some((record, version)) = self.read().await? else {
            let record = mine(1);
            return match self.write(&record, PutMode::Create).await? {
                Some(v) => Ok(self.took(record, v)),
                // Another node created it first.
                None => Ok(LeaseState::HeldBy {
                    holder: Uuid::nil(),
                    retry_at: now,
                }),
            };
        };
        let ours = record.holder == self.node
            && self
                .held
                .as_ref()
                .is_some_and(|(h, _)| h.term == record.term);
        let lapsed = now >= record.expires + self.margin;
        if !ours && !lapsed {
            return Ok(LeaseState::HeldBy {
                holder: record.holder,
                retry_at: record.expires + self.margin,
            });
        }
        let next = if ours {
            mine(record.term)
        } else {
            mine(record.term.saturating_add(1))
        };
        match self.write(&next, PutMode::Update(version)).await? {
            Some(v) => Ok(self.took(next, v)),
            // Another node renewed or took it meanwhile.
            None => Ok(LeaseState::HeldBy {
                holder: record.holder,
                retry_at: now,
            }),
        }
    }

    fn took(&mut self, record: LeaseRecord, version: UpdateVersion) -> LeaseState {
        self.held = Some((record, version));
        LeaseState::Held {
            term: record.term,
            until: record.expires - self.margin,
        }
    }

    /// Gives the lease up if this node holds it (it expires at once, so
    /// another node may take it without waiting).
    ///
    /// # Errors
    ///
    /// [`LeaseError`]; the lease then lapses on its own.
    pub async fn release(&mut self, now: DateTime<Utc>) -> Result<(), LeaseError> {
        let Some((held, version)) = self.held.take() else {
            return Ok(());
        };
        // Ended `margin` ago: free for others at once.
        let record = LeaseRecord {
            expires: now - self.margin,
            ..held
        };
        let _ = self.write(&record, PutMode::Update(version)).await?;
        Ok(())
    }

    /// The stored record and its version, if any.
    async fn read(&self) -> Result<Option<(LeaseRecord, UpdateVersion)>, LeaseError> {
        let store = |source| LeaseError::Store {
            op: BlobOp::Get,
            source,
        };
        let result = match self.store.get(&self.path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store(e)),
        };
        if result.meta.size > MAX_LEASE_LEN {
            return Err(LeaseError::Format {
                reason: "over 1 KiB",
            });
        }
        let version = UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        };
        if version.e_tag.is_none() && version.version.is_none() {
            return Err(LeaseError::Unsupported);
        }
        let bytes = result.bytes().await.map_err(store)?;
        Ok(Some((LeaseRecord::decode(&bytes)?, version)))
    }

    /// Writes `record` with `mode`; `None` if the condition failed.
    async fn write(
        &self,
        record: &LeaseRecord,
        mode: PutMode,
    ) -> Result<Option<UpdateVersion>, LeaseError> {
        let payload = PutPayload::from(record.encode().into_bytes());
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.store.put_opts(&self.path, payload, opts).await {
            Ok(r) => Ok(Some(UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => Err(LeaseError::Unsupported),
            Err(source) => Err(LeaseError::Store {
                op: BlobOp::Put,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_anything_else_is_refused() {
        let r = LeaseRecord {
            holder: Uuid::from_u128(0x1234),
            term: 7,
            expires: DateTime::from_timestamp_millis(1_800_000_000_123).unwrap(),
        };
        assert_eq!(LeaseRecord::decode(r.encode().as_bytes()).unwrap(), r);
        let good = r.encode();
        for bad in [
            String::new(),
            good.replace("opsdata-lease 1", "opsdata-lease 2"),
            good.replace("term 7", "term 0"),
            good.replace("term 7", "term -7"),
            good.replace("term 7", "term +7"),
            good.replace("term 7", "term 99999999999999999999"),
            good.replace("expires ", "expires  "),
            good.to_uppercase(),
            good.trim_end().to_owned(),
            format!("{good}x"),
            format!("{good}\n"),
            good.replace("holder", "term"),
        ] {
            assert!(LeaseRecord::decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(LeaseRecord::decode(&[0xff, 0xfe]).is_err());
    }
}
