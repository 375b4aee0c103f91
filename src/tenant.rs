//! Tenant tagging: every record belongs to exactly one workspace.
//!
//! A [`TenantId`] is a workspace's UUID; [`Tagged`] pairs an item with its
//! tenant so that the tag travels with the data; a [`TenantBatch`] holds the
//! records of one tenant and one data type, the unit every later layer (frame,
//! delivery, keys, ingest, store) works on. Each of those layers checks the
//! tag again at its own boundary instead of trusting an earlier one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::record::{DataType, Record, truncate_for_error};

/// A tenant: the id of the workspace that owns a piece of data.
///
/// Never nil. Parsed from text only in the canonical hyphenated form
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, either case); written in lower
/// case. Serializes as that string.
///
/// ```
/// use opsdata::TenantId;
/// let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// assert_eq!(t.to_string(), "0f8fad5b-d9cb-469f-a165-70867728950e");
/// assert!("0f8fad5bd9cb469fa16570867728950e".parse::<TenantId>().is_err());
/// assert!("00000000-0000-0000-0000-000000000000".parse::<TenantId>().is_err());
/// # Ok::<(), opsdata::TenantError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantId(Uuid);

// The UUID's byte order, compared as one big-endian integer rather than a
// byte slice: the same order (the `Uuid` one), without a `memcmp` call per
// comparison in the ordered maps that key on it.
impl Ord for TenantId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for TenantId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TenantId {
    /// The tenant with workspace id `id`.
    ///
    /// # Errors
    ///
    /// [`TenantError::Nil`] for the nil UUID, which names no workspace.
    pub fn new(id: Uuid) -> Result<Self, TenantError> {
        if id.is_nil() {
            Err(TenantError::Nil)
        } else {
            Ok(TenantId(id))
        }
    }

    /// The tenant whose id has these 16 bytes in RFC 9562 order (as in a
    /// frame header).
    ///
    /// # Errors
    ///
    /// [`TenantError::Nil`] for sixteen zero bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, TenantError> {
        Self::new(Uuid::from_bytes(bytes))
    }

    /// The workspace id.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id's 16 bytes in RFC 9562 order.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0.hyphenated())
    }
}

impl FromStr for TenantId {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let canonical = b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        if !canonical {
            return Err(TenantError::Malformed {
                input: truncate_for_error(s),
            });
        }
        // The shape check above admits only what the UUID parser accepts.
        let id = Uuid::try_parse(s).map_err(|_| TenantError::Malformed {
            input: truncate_for_error(s),
        })?;
        TenantId::new(id)
    }
}

impl From<TenantId> for Uuid {
    fn from(t: TenantId) -> Uuid {
        t.0
    }
}

impl TryFrom<Uuid> for TenantId {
    type Error = TenantError;
    fn try_from(id: Uuid) -> Result<Self, TenantError> {
        TenantId::new(id)
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An item and the tenant it belongs to.
///
/// The tag is set once, at construction, and cannot be changed in place:
/// re-tagging means taking the item out with [`Tagged::into_parts`] and
/// building a new `Tagged`, which is visible in code review.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged<T> {
    tenant: TenantId,
    item: T,
}

impl<T> Tagged<T> {
    /// Tags `item` as belonging to `tenant`.
    #[must_use]
    pub fn new(tenant: TenantId, item: T) -> Self {
        Tagged { tenant, item }
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The item.
    #[must_use]
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The item, mutably; the tag stays as it is.
    pub fn item_mut(&mut self) -> &mut T {
        &mut self.item
    }

    /// The tenant and the item.
    #[must_use]
    pub fn into_parts(self) -> (TenantId, T) {
        (self.tenant, self.item)
    }

    /// The item, dropping the tag.
    #[must_use]
    pub fn into_item(self) -> T {
        self.item
    }

    /// Applies `f` to the item, keeping the tag.
    #[must_use]
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Tagged<U> {
        Tagged {
            tenant: self.tenant,
            item: f(self.item),
        }
    }
}

impl Tagged<Record> {
    /// The record's data type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.item.data_type()
    }
}

/// Errors of tenant tagging.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// The nil UUID names no workspace.
    #[error("the nil UUID is not a tenant id")]
    Nil,
    /// The text is not a canonical hyphenated UUID.
    #[error("{input:?} is not a canonical hyphenated UUID")]
    Malformed {
        /// The input, cut to 64 characters.
        input: String,
    },
    /// An item of one tenant offered where another tenant's is expected.
    #[error("tenant mismatch: expected {expected}, found {found}")]
    TenantMismatch {
        /// The tenant this place holds.
        expected: TenantId,
        /// The tenant of the item offered.
        found: TenantId,
    },
    /// A record of one data type offered where another type's is expected.
    #[error("data type mismatch: expected {expected}, found {found}")]
    DataTypeMismatch {
        /// The data type this place holds.
        expected: DataType,
        /// The data type of the record offered.
        found: DataType,
    },
}

/// A record a [`TenantBatch`] refused, handed back with the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct BatchRejection {
    /// Why the record was refused.
    pub error: TenantError,
    /// The record, unchanged.
    pub record: Tagged<Record>,
}

/// Records of exactly one tenant and one data type: the unit a frame carries.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::{DataType, Performance, Record, Tagged, TenantBatch, TenantError, TenantId};
/// # use uuid::Uuid;
/// let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let a: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let b: TenantId = "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?;
/// let sample = Record::from(Performance {
///     object_name: "Processor".into(),
///     counter_name: "% Processor Time".into(),
///     perfmon_instance_name: "_Total".into(),
///     performance_data_id: Uuid::from_u128(1),
///     performance_source_internal_id: 7,
///     sample_value: 12.5,
///     time_sampled: now,
///     time_added: now,
/// });
///
/// let mut batch = TenantBatch::new(a, DataType::Performance);
/// batch.push(Tagged::new(a, sample.clone())).unwrap();
/// // Another tenant's record is handed back, not lost.
/// let refused = batch.push(Tagged::new(b, sample)).unwrap_err();
/// assert!(matches!(refused.error, TenantError::TenantMismatch { .. }));
/// assert_eq!(refused.record.tenant(), b);
/// assert_eq!(batch.len(), 1);
/// # Ok::<(), TenantError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TenantBatch {
    tenant: TenantId,
    data_type: DataType,
    records: Vec<Record>,
}

impl TenantBatch {
    /// An empty batch for `tenant`'s records of `data_type`.
    #[must_use]
    pub fn new(tenant: TenantId, data_type: DataType) -> Self {
        TenantBatch {
            tenant,
            data_type,
            records: Vec::new(),
        }
    }

    /// Builds a batch from tagged records, all of which must be of `tenant`
    /// and `data_type`.
    ///
    /// # Errors
    ///
    /// The first record refused, as in [`TenantBatch::push`]. The records
    /// after it are not taken: pass `iter.by_ref()` to keep them.
    #[allow(clippy::result_large_err)] // the error hands the record back by design
    pub fn from_records(
        tenant: TenantId,
        data_type: DataType,
        records: impl IntoIterator<Item = Tagged<Record>>,
    ) -> Result<Self, BatchRejection> {
        let mut batch = TenantBatch::new(tenant, data_type);
        for r in records {
            batch.push(r)?;
        }
        Ok(batch)
    }

    /// Adds a record.
    ///
    /// # Errors
    ///
    /// A [`BatchRejection`] that hands the record back:
    /// [`TenantError::TenantMismatch`] if it is tagged with another tenant,
    /// [`TenantError::DataTypeMismatch`] if it is of another data type. The
    /// batch is unchanged.
    #[allow(clippy::result_large_err)] // the error hands the record back by design; Ok is ()
    pub fn push(&mut self, record: Tagged<Record>) -> Result<(), BatchRejection> {
        if record.tenant() != self.tenant {
            return Err(BatchRejection {
                error: TenantError::TenantMismatch {
                    expected: self.tenant,
                    found: record.tenant(),
                },
                record,
            });
        }
        if record.data_type() != self.data_type {
            return Err(BatchRejection {
                error: TenantError::DataTypeMismatch {
                    expected: self.data_type,
                    found: record.data_type(),
                },
                record,
            });
        }
        self.records.push(record.into_item());
        Ok(())
    }

    /// The tenant.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The data type.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The records, in the order they were added.
    #[must_use]
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The number of records.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch has no records.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Takes the records out, each tagged with the batch's tenant.
    pub fn into_tagged(self) -> impl Iterator<Item = Tagged<Record>> {
        let tenant = self.tenant;
        self.records
            .into_iter()
            .map(move |r| Tagged::new(tenant, r))
    }

    /// Takes the records out, leaving the batch empty (its tenant and type
    /// stay), so its allocation can be reused.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Record> {
        self.records.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_canonical_hyphenated() {
        let canonical = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let t: TenantId = canonical.parse().unwrap();
        assert_eq!(t.to_string(), canonical);
        let upper: TenantId = canonical.to_uppercase().parse().unwrap();
        assert_eq!(upper, t);
        for bad in [
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165-70867728950e ",
            "0f8fad5b-d9cb-469fa-165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
            "",
        ] {
            assert!(
                matches!(bad.parse::<TenantId>(), Err(TenantError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            "00000000-0000-0000-0000-000000000000".parse::<TenantId>(),
            Err(TenantError::Nil)
        );
        assert_eq!(TenantId::new(Uuid::nil()), Err(TenantError::Nil));
        assert_eq!(TenantId::from_bytes([0; 16]), Err(TenantError::Nil));
    }

    #[test]
    fn bytes_are_rfc_9562_order() {
        let t: TenantId = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        assert_eq!(
            t.as_bytes(),
            &[
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(TenantId::from_bytes(*t.as_bytes()).unwrap(), t);
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let t: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"0f8fad5b-d9cb-469f-a165-70867728950e\"");
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
        assert!(serde_json::from_str::<TenantId>("\"0f8fad5bd9cb469fa16570867728950e\"").is_err());
        assert!(
            serde_json::from_str::<TenantId>("\"00000000-0000-0000-0000-000000000000\"").is_err()
        );
    }
}
