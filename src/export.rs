//! Export of a tenant's records, sans I/O: CSV files of one data type cut at
//! a row cap with a continuation, and the search API's pages with an opaque,
//! tamper-evident continuation token bound to its tenant, query and data
//! type. `docs/EXPORT.md` specifies the CSV rules and the token format.
//!
//! Both take records tagged with their tenant and check every tag again
//! here, at this layer's boundary: a record of another tenant or of another
//! data type is a typed error, never a row.

use std::borrow::Borrow;
use std::fmt;
use std::fmt::Write as _;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::{DateTime, Duration, Utc};
use ring::{digest, hmac};
use serde_json::Value;

use crate::keys::{Entropy, EntropyUnavailable, KeyMaterial};
use crate::record::{CustomFields, DataType, Event, Record};
use crate::tenant::{Tagged, TenantId};

mod paging_keys;
use paging_keys::Retired;
pub use paging_keys::SavedPagingKeys;

/// The name of the Event CSV column that holds an event's custom fields, as
/// one compact JSON object (`{}` when there are none).
pub const CUSTOM_FIELDS_COLUMN: &str = "CustomFields";

const ALERT_COLUMNS: [&str; 21] = [
    "AlertName",
    "AlertDescription",
    "BaseManagedEntityId",
    "ProblemID",
    "IsMonitorAlert",
    "RuleId",
    "ResolutionState",
    "Priority",
    "Severity",
    "Category",
    "Owner",
    "ResolvedBy",
    "TimeRaised",
    "TimeAdded",
    "LastModified",
    "LastModifiedBy",
    "LastModifiedExceptRepeatCount",
    "TimeResolved",
    "TimeResolutionStateLastModified",
    "TimeResolutionStateLastModifiedInDB",
    "RepeatCount",
];

const CONFIGURATION_COLUMNS: [&str; 7] = [
    "CustomerID",
    "AgentID",
    "EntityID",
    "ManagedTypeID",
    "ManagedTypePropertyID",
    "CurrentValue",
    "ChangeDate",
];

/// [`Event::FIXED_FIELDS`] and then [`CUSTOM_FIELDS_COLUMN`].
const EVENT_COLUMNS: [&str; Event::FIXED_FIELDS.len() + 1] = {
    let mut columns = [CUSTOM_FIELDS_COLUMN; Event::FIXED_FIELDS.len() + 1];
    let mut i = 0;
    while i < Event::FIXED_FIELDS.len() {
        columns[i] = Event::FIXED_FIELDS[i];
        i += 1;
    }
    columns
};

const METADATA_COLUMNS: [&str; 21] = [
    "BaseManagedEntityId",
    "ObjectStatus",
    "OrganizationalUnit",
    "ActiveDirectoryObjectSid",
    "PhysicalProcessors",
    "NetworkName",
    "IPAddress",
    "ForestDNSName",
    "NetbiosComputerName",
    "VirtualMachineName",
    "LastInventoryDate",
    "HostServerName",
    "IsVirtualMachine",
    "NetbiosDomainName",
    "LogicalProcessors",
    "DNSName",
    "DisplayName",
    "DomainDnsName",
    "ActiveDirectorySite",
    "PrincipalName",
    "OffsetInMinuteFromGreenwichTime",
];

const PERFORMANCE_COLUMNS: [&str; 8] = [
    "ObjectName",
    "CounterName",
    "PerfmonInstanceName",
    "PerformanceDataId",
    "PerformanceSourceInternalID",
    "SampleValue",
    "TimeSampled",
    "TimeAdded",
];

const STATE_COLUMNS: [&str; 14] = [
    "StateChangeEventId",
    "StateId",
    "NewHealthState",
    "OldHealthState",
    "Context",
    "TimeGenerated",
    "TimeAdded",
    "StateId2",
    "BaseManagedEntityId",
    "MonitorId",
    "HealthState",
    "LastModified",
    "LastGreenAlertGenerated",
    "DatabaseTimeModified",
];

/// The CSV header of `data_type`: the schema's JSON field names in the order
/// of `docs/RECORDS.md`, and for [`DataType::Event`] one more column,
/// [`CUSTOM_FIELDS_COLUMN`], so that every row of a type has the same
/// columns.
///
/// ```
/// use opsdata::{DataType, csv_header};
/// assert_eq!(csv_header(DataType::Performance)[..2], ["ObjectName", "CounterName"]);
/// assert_eq!(csv_header(DataType::Event).last(), Some(&"CustomFields"));
/// ```
#[must_use]
pub fn csv_header(data_type: DataType) -> &'static [&'static str] {
    match data_type {
        DataType::Alert => &ALERT_COLUMNS,
        DataType::Configuration => &CONFIGURATION_COLUMNS,
        DataType::Event => &EVENT_COLUMNS,
        DataType::Metadata => &METADATA_COLUMNS,
        DataType::Performance => &PERFORMANCE_COLUMNS,
        DataType::State => &STATE_COLUMNS,
    }
}

/// Why an export, a page or a continuation token was refused.
///
/// The token errors say exactly what is wrong, for the service's logs; a
/// peer presenting a bad token needs to hear no more than "invalid token".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Text given to [`Pager::with_saved_keys`] that is not saved paging
    /// keys or breaks one of their rules (`docs/STATE.md`).
    #[error("not valid saved paging keys: {reason}")]
    State {
        /// The rule broken.
        reason: &'static str,
    },
    /// A record of another tenant was offered. Nothing of it was written.
    #[error("row {row}: record of tenant {found}, exporting tenant {expected}")]
    TenantMismatch {
        /// The tenant being exported or paged.
        expected: TenantId,
        /// The tenant of the record offered.
        found: TenantId,
        /// Its row number in the source (0-based).
        row: u64,
    },
    /// A record of another data type was offered. Nothing of it was written.
    #[error("row {row}: {found} record, exporting {expected} records")]
    DataTypeMismatch {
        /// The data type being exported or paged.
        expected: DataType,
        /// The data type of the record offered.
        found: DataType,
        /// Its row number in the source (0-based).
        row: u64,
    },
    /// An [`ExportContinuation`] of another tenant or data type.
    #[error(
        "continuation of {found_tenant} {found_data_type} records given to an export of {expected_tenant} {expected_data_type} records"
    )]
    ContinuationMismatch {
        /// The export's tenant.
        expected_tenant: TenantId,
        /// The export's data type.
        expected_data_type: DataType,
        /// The continuation's tenant.
        found_tenant: TenantId,
        /// The continuation's data type.
        found_data_type: DataType,
    },
    /// A setting outside its allowed range.
    #[error("export setting {setting} = {value} is outside its allowed range")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// The value refused (seconds, for a duration).
        value: i64,
    },
    /// The caller's writer failed (never for a `Vec<u8>`).
    #[error("writing the export failed: {0}")]
    Write(#[source] std::io::Error),
    /// The token is not a token: wrong length, or not canonical unpadded
    /// URL-safe Base64, or (under a valid tag) a field no writer writes.
    #[error("malformed continuation token: {reason}")]
    TokenMalformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// The token's tag does not verify: it was edited, or made under
    /// another key.
    #[error("continuation token does not verify (edited, or made under another key)")]
    TokenTampered,
    /// The token verifies but has a format version this code does not read.
    #[error("continuation token version {version} is not supported")]
    TokenVersion {
        /// The version found.
        version: u8,
    },
    /// The token was issued for another tenant's search.
    #[error("continuation token of tenant {found} presented for tenant {expected}")]
    TokenTenantMismatch {
        /// The tenant of the request.
        expected: TenantId,
        /// The tenant the token was issued for.
        found: TenantId,
    },
    /// The token was issued for a search of another data type.
    #[error("continuation token for {found} records presented for {expected} records")]
    TokenDataTypeMismatch {
        /// The data type of the request.
        expected: DataType,
        /// The data type the token was issued for.
        found: DataType,
    },
    /// The token was issued for another query text.
    #[error("continuation token was issued for another query")]
    TokenQueryMismatch,
    /// The token is older than the pager's maximum token age, or was issued
    /// more than [`Pager::MAX_FUTURE_SKEW`] after `now`.
    #[error(
        "continuation token issued at {issued_at} is not valid at {now} (maximum age {max_age})"
    )]
    TokenExpired {
        /// When the token was issued.
        issued_at: DateTime<Utc>,
        /// The time of the request.
        now: DateTime<Utc>,
        /// The pager's maximum token age.
        max_age: Duration,
    },
}

/// Where a cut CSV export resumes: the tenant, the data type and the row
/// number (0-based, in the source's order) of the first row not yet
/// exported.
///
/// Not a secret and not tamper-evident: it stays inside the service. Give
/// users a search [`Page`] token instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct ExportContinuation {
    tenant: TenantId,
    data_type: DataType,
    next_row: u64,
}

impl ExportContinuation {
    /// Resume `tenant`'s export of `data_type` records at row `next_row`
    /// (for a continuation the service stored as its three parts).
    pub fn new(tenant: TenantId, data_type: DataType, next_row: u64) -> Self {
        ExportContinuation {
            tenant,
            data_type,
            next_row,
        }
    }

    /// The tenant of the export.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The data type of the export.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The row number (0-based) the next export starts at: the number of
    /// rows exported so far.
    #[must_use]
    pub fn next_row(&self) -> u64 {
        self.next_row
    }
}

/// What one CSV export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct ExportSummary {
    /// The source row number (0-based) of the first row written.
    pub first_row: u64,
    /// The number of rows written, header not counted; at most the cap.
    pub rows: usize,
    /// `Some` when the export was cut at its cap with rows left over: pass
    /// it to [`CsvExport::resume`] for the next part. `None` when the export
    /// reached the end of the source.
    pub continuation: Option<ExportContinuation>,
}

impl ExportSummary {
    /// Whether the export was cut at its cap, with rows left to export.
    #[must_use]
    pub fn is_cut(&self) -> bool {
        self.continuation.is_some()
    }
}

/// A CSV export of one tenant's records of one data type, at most
/// [`max_rows`](CsvExport::max_rows) rows a part (50 000 by default).
///
/// Each part is a complete CSV file (RFC 4180: a header row, `,`, `"`
/// quoting where needed, CRLF line ends; `docs/EXPORT.md` gives the cell
/// rules). The source is the same ordered sequence of records each time;
/// a part skips the rows before its start (in constant time for a slice's
/// iterator).
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use opsdata::{CsvExport, DataType, Performance, Record, Tagged, TenantId};
/// use uuid::Uuid;
///
/// let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let rows: Vec<Tagged<Record>> = (0..5u32)
///     .map(|i| {
///         Tagged::new(tenant, Record::from(Performance {
///             object_name: "Processor".into(),
///             counter_name: "% Processor Time".into(),
///             perfmon_instance_name: "_Total, \"all\"".into(),
///             performance_data_id: Uuid::from_u128(u128::from(i) + 1),
///             performance_source_internal_id: 7,
///             sample_value: f64::from(i) / 2.0,
///             time_sampled: now,
///             time_added: now,
///         }))
///     })
///     .collect();
///
/// let export = CsvExport::new(tenant, DataType::Performance).with_max_rows(3)?;
/// let mut first = Vec::new();
/// let summary = export.write(&rows, &mut first)?;
/// assert_eq!(summary.rows, 3);
/// let next = summary.continuation.expect("cut at 3 rows");
///
/// let mut second = Vec::new();
/// let summary = export.resume(&next)?.write(&rows, &mut second)?;
/// assert_eq!((summary.first_row, summary.rows, summary.is_cut()), (3, 2, false));
/// let text = String::from_utf8(second)?;
/// assert!(text.starts_with("ObjectName,CounterName,PerfmonInstanceName,"));
/// assert!(text.contains("Processor,% Processor Time,\"_Total, \"\"all\"\"\",\
///                        00000000-0000-0000-0000-000000000004,7,1.5,2026-11-23T12:00:00Z,"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvExport {
    tenant: TenantId,
    data_type: DataType,
    max_rows: usize,
    start: u64,
}

impl CsvExport {
    /// The default cap, rows a part: 50 000, the service's export limit.
    pub const DEFAULT_MAX_ROWS: usize = 50_000;
    /// The largest cap accepted: the service's export limit, which a
    /// setting may lower but not raise.
    pub const MAX_ROWS_CEILING: usize = 50_000;

    /// The first part of `tenant`'s export of `data_type` records, with the
    /// default cap.
    #[must_use]
    pub fn new(tenant: TenantId, data_type: DataType) -> Self {
        CsvExport {
            tenant,
            data_type,
            max_rows: Self::DEFAULT_MAX_ROWS,
            start: 0,
        }
    }

    /// Sets the cap: the most rows one part holds.
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidSetting`] unless `1 <= max_rows <=`
    /// [`MAX_ROWS_CEILING`](Self::MAX_ROWS_CEILING).
    pub fn with_max_rows(mut self, max_rows: usize) -> Result<Self, ExportError> {
        if max_rows == 0 || max_rows > Self::MAX_ROWS_CEILING {
            return Err(ExportError::InvalidSetting {
                setting: "max_rows",
                value: i64::try_from(max_rows).unwrap_or(i64::MAX),
            });
        }
        self.max_rows = max_rows;
        Ok(self)
    }

    /// The same export, starting where `continuation` says.
    ///
    /// # Errors
    ///
    /// [`ExportError::ContinuationMismatch`] if the continuation is of
    /// another tenant or data type.
    pub fn resume(mut self, continuation: &ExportContinuation) -> Result<Self, ExportError> {
        if continuation.tenant != self.tenant || continuation.data_type != self.data_type {
            return Err(ExportError::ContinuationMismatch {
                expected_tenant: self.tenant,
                expected_data_type: self.data_type,
                found_tenant: continuation.tenant,
                found_data_type: continuation.data_type,
            });
        }
        self.start = continuation.next_row;
        Ok(self)
    }

    /// The tenant exported.
    #[must_use]
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The data type exported.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The cap: the most rows one part holds.
    #[must_use]
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// The source row number this part starts at.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Writes this part to `out`: the header row, then at most `max_rows`
    /// rows from the source's row [`start`](Self::start) on. Reads one
    /// record past the cap to learn whether the export is cut.
    ///
    /// Pass the whole source each time (`&records` for a slice or `Vec`,
    /// any iterator of `Tagged<Record>` or `&Tagged<Record>`). A start past
    /// the end of the source writes the header alone.
    ///
    /// # Errors
    ///
    /// - [`ExportError::TenantMismatch`] or [`ExportError::DataTypeMismatch`]
    ///   for a record in the part that is of another tenant or type. The
    ///   record is checked before its row is written, so none of it reaches
    ///   `out`; the rows before it may have: discard a failed part.
    /// - [`ExportError::Write`] if `out` fails.
    pub fn write<I, W>(&self, records: I, out: W) -> Result<ExportSummary, ExportError>
    where
        I: IntoIterator,
        I::Item: Borrow<Tagged<Record>>,
        W: Write,
    {
        let mut source = records.into_iter();
        let header = csv_header(self.data_type);
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        writer.write_record(header).map_err(csv_error)?;
        // Skip to the start (nth is O(1) on slice iterators). A start that
        // does not fit a usize lies past the end of any in-memory source.
        let skipped = match usize::try_from(self.start) {
            Ok(0) => true,
            Ok(n) => source.nth(n - 1).is_some(),
            Err(_) => false,
        };
        let mut rows = 0usize;
        let mut cut = false;
        if skipped {
            let mut scratch = String::new();
            for item in source.by_ref() {
                let tagged = item.borrow();
                let row = self.start.saturating_add(rows as u64);
                check_row(self.tenant, self.data_type, tagged, row)?;
                write_row(&mut writer, header, tagged.item(), &mut scratch).map_err(csv_error)?;
                rows += 1;
                if rows == self.max_rows {
                    break;
                }
            }
            cut = rows == self.max_rows && source.next().is_some();
        }
        writer.flush().map_err(ExportError::Write)?;
        Ok(ExportSummary {
            first_row: self.start,
            rows,
            continuation: cut.then(|| ExportContinuation {
                tenant: self.tenant,
                data_type: self.data_type,
                next_row: self.start.saturating_add(rows as u64),
            }),
        })
    }
}

/// The tenant rule at this layer: a record must be of the tenant and the
/// data type being exported.
fn check_row(
    tenant: TenantId,
    data_type: DataType,
    tagged: &Tagged<Record>,
    row: u64,
) -> Result<(), ExportError> {
    if tagged.tenant() != tenant {
        return Err(ExportError::TenantMismatch {
            expected: tenant,
            found: tagged.tenant(),
            row,
        });
    }
    if tagged.data_type() != data_type {
        return Err(ExportError::DataTypeMismatch {
            expected: data_type,
            found: tagged.data_type(),
            row,
        });
    }
    Ok(())
}

fn csv_error(e: csv::Error) -> ExportError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => ExportError::Write(e),
        // We write byte fields of equal count per row, so the csv crate's
        // other errors (UTF-8, unequal lengths, serde) cannot arise; keep
        // any that does as a write failure rather than panic.
        other => ExportError::Write(std::io::Error::other(format!("{other:?}"))),
    }
}

/// Writes one record as a row of `header`'s columns: its JSON object's
/// values, looked up by name (see `docs/EXPORT.md` for the cell rules).
fn write_row<W: Write>(
    writer: &mut csv::Writer<W>,
    header: &[&str],
    record: &Record,
    scratch: &mut String,
) -> Result<(), csv::Error> {
    let (value, custom) = match record {
        Record::Event(event) => {
            // A custom field spelled exactly like a fixed one (which
            // validation refuses) would take the fixed field's place in the
            // JSON object; look the fixed fields up without the custom ones.
            let collides = event
                .custom
                .iter()
                .any(|(name, _)| Event::FIXED_FIELDS.contains(&name));
            let value = if collides {
                let mut fixed = (**event).clone();
                fixed.custom = CustomFields::new();
                to_value(&fixed)
            } else {
                to_value(record)
            };
            (value, Some(&event.custom))
        }
        _ => (to_value(record), None),
    };
    for &column in header {
        let cell = match custom {
            Some(custom) if column == CUSTOM_FIELDS_COLUMN => {
                // Serializing a map of JSON values cannot fail.
                let json = serde_json::to_string(custom).expect("JSON values serialize");
                writer.write_field(json)?;
                continue;
            }
            _ => value.get(column),
        };
        match cell {
            None | Some(Value::Null) => writer.write_field("")?,
            Some(Value::String(s)) => writer.write_field(s)?,
            Some(Value::Bool(b)) => writer.write_field(if *b { "true" } else { "false" })?,
            Some(Value::Number(n)) => {
                scratch.clear();
                // Writing into a String cannot fail.
                write!(scratch, "{n}").expect("writing into a String");
                writer.write_field(&*scratch)?;
            }
            Some(nested @ (Value::Array(_) | Value::Object(_))) => {
                let json = serde_json::to_string(nested).expect("JSON values serialize");
                writer.write_field(json)?;
            }
        }
    }
    writer.write_record(None::<&[u8]>)
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // Records serialize infallibly (as in `Record::write_json`): string keys
    // only, no failing Serialize impls.
    serde_json::to_value(value).expect("records serialize infallibly")
}

// ---------------------------------------------------------------------------
// Search-API paging
// ---------------------------------------------------------------------------

/// Token format version written and read.
const TOKEN_VERSION: u8 = 1;
/// version, data type, tenant, query hash, next offset, issued at.
const PAYLOAD_LEN: usize = 1 + 1 + 16 + 32 + 8 + 8;
const TAG_LEN: usize = 32;
const RAW_LEN: usize = PAYLOAD_LEN + TAG_LEN;

/// The length of a continuation token, in characters: unpadded URL-safe
/// Base64 of 98 bytes.
pub const PAGE_TOKEN_LEN: usize = (RAW_LEN * 4).div_ceil(3);

/// The service's key for continuation tokens (HMAC-SHA256), 32 bytes. Use
/// it for nothing else.
///
/// Zeroized on drop; `Debug` prints `PagingKey(..)`. Every node that
/// answers the same search API needs the same key; a new key makes every
/// outstanding token fail with [`ExportError::TokenTampered`].
pub struct PagingKey(KeyMaterial);

impl PagingKey {
    /// Takes 32 bytes as the key. The array passed in is moved into a
    /// zeroizing buffer; zeroize the caller's own copies.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PagingKey(KeyMaterial::from_bytes(bytes))
    }

    /// Draws a fresh key from `entropy`.
    ///
    /// # Errors
    ///
    /// [`EntropyUnavailable`] if the source fails.
    pub fn generate(entropy: &mut (impl Entropy + ?Sized)) -> Result<Self, EntropyUnavailable> {
        KeyMaterial::generate(entropy).map(PagingKey)
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.expose())
    }
}

impl fmt::Debug for PagingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PagingKey(..)")
    }
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct Page<T> {
    /// The rows, at most the pager's page size, in the source's order.
    pub rows: Vec<T>,
    /// The source row number (0-based) of the first row.
    pub offset: u64,
    /// The token for the next page, `None` when this page ends the results.
    pub next: Option<String>,
}

/// The fields of a continuation token (the payload under its tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenFields {
    pub(crate) version: u8,
    pub(crate) data_type: u8,
    pub(crate) tenant: [u8; 16],
    pub(crate) query_hash: [u8; 32],
    pub(crate) next_offset: u64,
    pub(crate) issued_at: i64,
}

impl TokenFields {
    pub(crate) fn to_payload(self) -> [u8; PAYLOAD_LEN] {
        let mut p = [0u8; PAYLOAD_LEN];
        p[0] = self.version;
        p[1] = self.data_type;
        p[2..18].copy_from_slice(&self.tenant);
        p[18..50].copy_from_slice(&self.query_hash);
        p[50..58].copy_from_slice(&self.next_offset.to_be_bytes());
        p[58..66].copy_from_slice(&self.issued_at.to_be_bytes());
        p
    }

    fn from_payload(p: &[u8; PAYLOAD_LEN]) -> Self {
        let mut tenant = [0u8; 16];
        tenant.copy_from_slice(&p[2..18]);
        let mut query_hash = [0u8; 32];
        query_hash.copy_from_slice(&p[18..50]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&p[50..58]);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&p[58..66]);
        TokenFields {
            version: p[0],
            data_type: p[1],
            tenant,
            query_hash,
            next_offset: u64::from_be_bytes(offset),
            issued_at: i64::from_be_bytes(issued),
        }
    }
}

/// SHA-256 of the query text's UTF-8 bytes, exactly as given.
fn query_hash(query: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, query.as_bytes()).as_ref());
    out
}

/// The token text for `payload`: URL-safe Base64, unpadded, of the payload
/// and its HMAC-SHA256 tag under `key`.
pub(crate) fn sign_payload(key: &PagingKey, payload: &[u8]) -> String {
    let tag = hmac::sign(&key.hmac_key(), payload);
    let mut raw = Vec::with_capacity(payload.len() + TAG_LEN);
    raw.extend_from_slice(payload);
    raw.extend_from_slice(tag.as_ref());
    B64URL.encode(raw)
}

/// Encodes a token.
pub(crate) fn encode_token(key: &PagingKey, fields: &TokenFields) -> String {
    sign_payload(key, &fields.to_payload())
}

/// Reads a token: length, then Base64 into a fixed buffer, then the tag in
/// constant time, and only then the fields. Never allocates.
pub(crate) fn decode_token(key: &PagingKey, text: &str) -> Result<TokenFields, ExportError> {
    if text.len() != PAGE_TOKEN_LEN {
        return Err(ExportError::TokenMalformed {
            reason: "wrong length",
        });
    }
    // One spare byte: the decoder wants room for its estimate.
    let mut raw = [0u8; RAW_LEN + 1];
    match B64URL.decode_slice(text, &mut raw) {
        Ok(RAW_LEN) => {}
        _ => {
            return Err(ExportError::TokenMalformed {
                reason: "not canonical unpadded URL-safe Base64",
            });
        }
    }
    let (payload, rest) = raw.split_at(PAYLOAD_LEN);
    let tag = &rest[..TAG_LEN];
    hmac::verify(&key.hmac_key(), payload, tag).map_err(|_| ExportError::TokenTampered)?;
    let mut fixed = [0u8; PAYLOAD_LEN];
    fixed.copy_from_slice(payload);
    Ok(TokenFields::from_payload(&fixed))
}

/// The search API's pager: pages of at most [`page_size`](Pager::page_size)
/// rows (5 000 by default), each with a continuation token bound to its
/// tenant, data type and query text and signed with the service's
/// [`PagingKey`], so that a token issued for tenant A cannot page tenant B's
/// data, cannot be moved to another query, and cannot be edited.
///
/// Paging is by offset into a source the caller gives in the same order on
/// every call (for example a query's results up to a fixed time); rows
/// added or removed before the offset between calls shift the pages.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use opsdata::{
///     DataType, DeterministicEntropy, ExportError, Pager, PagingKey, Performance, Record,
///     Tagged, TenantId,
/// };
/// use uuid::Uuid;
///
/// let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let a: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let b: TenantId = "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?;
/// let sample = |tenant, i: u32| Tagged::new(tenant, Record::from(Performance {
///     object_name: "Processor".into(),
///     counter_name: "% Processor Time".into(),
///     perfmon_instance_name: "_Total".into(),
///     performance_data_id: Uuid::from_u128(u128::from(i) + 1),
///     performance_source_internal_id: 7,
///     sample_value: f64::from(i),
///     time_sampled: now,
///     time_added: now,
/// }));
/// let rows_a: Vec<_> = (0..5).map(|i| sample(a, i)).collect();
/// let rows_b: Vec<_> = (0..5).map(|i| sample(b, i)).collect();
///
/// let key = PagingKey::generate(&mut DeterministicEntropy::from_u64(7))?; // SystemEntropy in production
/// let pager = Pager::new(key).with_page_size(2)?;
/// let query = "Performance | where CounterName == '% Processor Time'";
/// let first = pager.page(a, DataType::Performance, query, None, &rows_a, now)?;
/// assert_eq!(first.rows.len(), 2);
/// let token = first.next.expect("more rows");
///
/// let later = now + Duration::seconds(30);
/// let second = pager.page(a, DataType::Performance, query, Some(&token), &rows_a, later)?;
/// assert_eq!((second.offset, second.rows.len()), (2, 2));
///
/// // The same token for tenant B, or for another query: refused.
/// let err = pager.page(b, DataType::Performance, query, Some(&token), &rows_b, later);
/// assert!(matches!(err, Err(ExportError::TokenTenantMismatch { .. })));
/// let err = pager.page(a, DataType::Performance, "Performance", Some(&token), &rows_a, later);
/// assert!(matches!(err, Err(ExportError::TokenQueryMismatch)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Pager {
    key: PagingKey,
    /// Keys rotated away, oldest first, kept while tokens they signed may
    /// still be valid ([`Pager::rotate`]).
    retired: Vec<Retired>,
    page_size: usize,
    max_token_age: Duration,
}

impl Pager {
    /// The default page size: 5 000 rows, the search API's limit a call.
    pub const DEFAULT_PAGE_SIZE: usize = 5_000;
    /// The largest page size accepted: the search API's limit, which a
    /// setting may lower but not raise.
    pub const MAX_PAGE_SIZE: usize = 5_000;
    /// How long a token stays valid by default: one hour after it was issued.
    pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::hours(1);
    /// The longest maximum token age accepted: seven days.
    pub const MAX_TOKEN_AGE_CEILING: Duration = Duration::days(7);
    /// How far in the future a token's issue time may lie (another node's
    /// clock running ahead): five minutes.
    pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);

    /// A pager signing its tokens with `key`, with the default page size and
    /// token age.
    #[must_use]
    pub fn new(key: PagingKey) -> Self {
        Pager {
            key,
            retired: Vec::new(),
            page_size: Self::DEFAULT_PAGE_SIZE,
            max_token_age: Self::DEFAULT_MAX_TOKEN_AGE,
        }
    }

    /// Sets the page size.
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidSetting`] unless `1 <= page_size <=`
    /// [`MAX_PAGE_SIZE`](Self::MAX_PAGE_SIZE).
    pub fn with_page_size(mut self, page_size: usize) -> Result<Self, ExportError> {
        if page_size == 0 || page_size > Self::MAX_PAGE_SIZE {
            return Err(ExportError::InvalidSetting {
                setting: "page_size",
                value: i64::try_from(page_size).unwrap_or(i64::MAX),
            });
        }
        self.page_size = page_size;
        Ok(self)
    }

    /// Sets how long after its issue a token is accepted.
    ///
    /// # Errors
    ///
    /// [`ExportError::InvalidSetting`] (in seconds) unless at least one
    /// second and at most [`MAX_TOKEN_AGE_CEILING`](Self::MAX_TOKEN_AGE_CEILING).
    pub fn with_max_token_age(mut self, max_age: Duration) -> Result<Self, ExportError> {
        if max_age < Duration::seconds(1) || max_age > Self::MAX_TOKEN_AGE_CEILING {
            return Err(ExportError::InvalidSetting {
                setting: "max_token_age",
                value: max_age.num_seconds(),
            });
        }
        self.max_token_age = max_age;
        Ok(self)
    }

    /// The most rows a page holds.
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// How long after its issue a token is accepted.
    #[must_use]
    pub fn max_token_age(&self) -> Duration {
        self.max_token_age
    }

    /// One page of `tenant`'s `data_type` results for `query`: the first
    /// page when `token` is `None`, else the page the token points at.
    ///
    /// `rows` is the whole result, in the same order on every call (`&rows`
    /// for a slice or `Vec`, or any iterator of `Tagged<Record>` or
    /// `&Tagged<Record>`); the page skips to its offset (in constant time
    /// for a slice's iterator) and reads one row past the page to learn
    /// whether another page follows. The next token carries `now` as its
    /// issue time.
    ///
    /// A token is checked in this order, before any row is read: its length,
    /// its Base64, its tag (in constant time, before any field is trusted),
    /// its version and fields, then that it was issued for this tenant, data
    /// type and query, and then its age.
    ///
    /// # Errors
    ///
    /// - [`ExportError::TokenMalformed`], [`ExportError::TokenTampered`],
    ///   [`ExportError::TokenVersion`], [`ExportError::TokenTenantMismatch`],
    ///   [`ExportError::TokenDataTypeMismatch`],
    ///   [`ExportError::TokenQueryMismatch`] or [`ExportError::TokenExpired`]
    ///   for a token that does not verify or does not belong to this
    ///   request;
    /// - [`ExportError::TenantMismatch`] or [`ExportError::DataTypeMismatch`]
    ///   for a row of the page of another tenant or type.
    pub fn page<I>(
        &self,
        tenant: TenantId,
        data_type: DataType,
        query: &str,
        token: Option<&str>,
        rows: I,
        now: DateTime<Utc>,
    ) -> Result<Page<I::Item>, ExportError>
    where
        I: IntoIterator,
        I::Item: Borrow<Tagged<Record>>,
    {
        let hash = query_hash(query);
        let offset = match token {
            None => 0,
            Some(text) => self.verify(text, tenant, data_type, &hash, now)?,
        };
        let mut source = rows.into_iter();
        let skipped = match usize::try_from(offset) {
            Ok(0) => true,
            Ok(n) => source.nth(n - 1).is_some(),
            Err(_) => false,
        };
        let mut page = Vec::new();
        let mut more = false;
        if skipped {
            page.reserve(source.size_hint().0.min(self.page_size));
            for item in source.by_ref() {
                check_row(
                    tenant,
                    data_type,
                    item.borrow(),
                    offset.saturating_add(page.len() as u64),
                )?;
                page.push(item);
                if page.len() == self.page_size {
                    break;
                }
            }
            more = page.len() == self.page_size && source.next().is_some();
        }
        let next = more.then(|| {
            encode_token(
                &self.key,
                &TokenFields {
                    version: TOKEN_VERSION,
                    data_type: data_type.as_u8(),
                    tenant: *tenant.as_bytes(),
                    query_hash: hash,
                    next_offset: offset.saturating_add(page.len() as u64),
                    issued_at: now.timestamp(),
                },
            )
        });
        Ok(Page {
            rows: page,
            offset,
            next,
        })
    }

    /// Verifies a token for this request and returns its offset.
    fn verify(
        &self,
        text: &str,
        tenant: TenantId,
        data_type: DataType,
        hash: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Result<u64, ExportError> {
        let fields = self.decode_any(text, now)?;
        // The tag verified: from here on the fields are the service's own.
        if fields.version != TOKEN_VERSION {
            return Err(ExportError::TokenVersion {
                version: fields.version,
            });
        }
        let found_type =
            DataType::from_u8(fields.data_type).ok_or(ExportError::TokenMalformed {
                reason: "unknown data type",
            })?;
        let found_tenant =
            TenantId::from_bytes(fields.tenant).map_err(|_| ExportError::TokenMalformed {
                reason: "nil tenant",
            })?;
        let issued_at =
            DateTime::from_timestamp(fields.issued_at, 0).ok_or(ExportError::TokenMalformed {
                reason: "issue time out of range",
            })?;
        if found_tenant != tenant {
            return Err(ExportError::TokenTenantMismatch {
                expected: tenant,
                found: found_tenant,
            });
        }
        if found_type != data_type {
            return Err(ExportError::TokenDataTypeMismatch {
                expected: data_type,
                found: found_type,
            });
        }
        if fields.query_hash != *hash {
            return Err(ExportError::TokenQueryMismatch);
        }
        // Whole seconds: a token issued at 12:00:00.9 is as old at 12:00:01
        // as one issued at 12:00:00.
        let now_secs = now.timestamp();
        let age = now_secs.saturating_sub(fields.issued_at);
        if age > self.max_token_age.num_seconds() || -age > Self::MAX_FUTURE_SKEW.num_seconds() {
            return Err(ExportError::TokenExpired {
                issued_at,
                now,
                max_age: self.max_token_age,
            });
        }
        Ok(fields.next_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_columns_are_the_fixed_fields_then_custom() {
        assert_eq!(EVENT_COLUMNS[..15], Event::FIXED_FIELDS);
        assert_eq!(EVENT_COLUMNS[15], CUSTOM_FIELDS_COLUMN);
    }

    #[test]
    fn token_layout() {
        assert_eq!(PAYLOAD_LEN, 66);
        assert_eq!(RAW_LEN, 98);
        assert_eq!(PAGE_TOKEN_LEN, 131);
        let key = PagingKey::from_bytes([9; 32]);
        let fields = TokenFields {
            version: 1,
            data_type: 5,
            tenant: [1; 16],
            query_hash: [2; 32],
            next_offset: 0x0102_0304_0506_0708,
            issued_at: -5,
        };
        let text = encode_token(&key, &fields);
        assert_eq!(text.len(), PAGE_TOKEN_LEN);
        assert_eq!(decode_token(&key, &text).unwrap(), fields);
        assert!(matches!(
            decode_token(&PagingKey::from_bytes([8; 32]), &text),
            Err(ExportError::TokenTampered)
        ));
    }

    #[test]
    fn paging_key_debug_is_redacted() {
        let key = PagingKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "PagingKey(..)");
        let pager = Pager::new(key);
        let shown = format!("{pager:?}");
        assert!(shown.contains("PagingKey(..)"), "{shown}");
        assert!(!shown.contains("171") && !shown.to_lowercase().contains("ab, "));
    }
}
