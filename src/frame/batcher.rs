use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Duration, Utc};

use super::{FrameError, FrameLimits, deflate_bound};
use crate::record::{DataType, Record, RecordLimits};
use crate::tenant::{Tagged, TenantId};

/// When a batch opened at `opened` must close: saturating at the end of
/// time, so a `now` near `DateTime::MAX_UTC` cannot make the batcher panic.
fn deadline(opened: DateTime<Utc>, max_age: Duration) -> DateTime<Utc> {
    opened
        .checked_add_signed(max_age)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When the [`Batcher`] closes a batch.
///
/// Defaults: 65 536 records, 1 MiB of payload (JSON Lines), 10 seconds
/// after the batch's first record, records validated with
/// [`RecordLimits::default`], one record at most 256 KiB of JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatcherConfig {
    max_records: u32,
    max_payload: u32,
    max_age: Duration,
    max_record_bytes: u32,
    record_limits: RecordLimits,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_records: FrameLimits::DEFAULT_MAX_RECORDS,
            max_payload: 1 << 20,
            max_age: Duration::seconds(10),
            max_record_bytes: FrameLimits::DEFAULT_MAX_RECORD_BYTES,
            record_limits: RecordLimits::default(),
        }
    }
}

impl BatcherConfig {
    /// The longest `max_age` accepted: one day.
    pub const MAX_AGE_CEILING: Duration = Duration::days(1);

    /// Closes a batch when it holds this many records.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0.
    pub fn with_max_records(mut self, records: u32) -> Result<Self, FrameError> {
        if records == 0 {
            return Err(FrameError::InvalidLimit {
                setting: "max_records",
                value: records,
            });
        }
        self.max_records = records;
        Ok(self)
    }

    /// Closes a batch before its payload would pass this many bytes.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] unless it leaves room for one record of
    /// the largest size allowed (`max_record_bytes` + 1).
    pub fn with_max_payload(mut self, bytes: u32) -> Result<Self, FrameError> {
        if u64::from(bytes) < u64::from(self.max_record_bytes) + 1 {
            return Err(FrameError::InvalidLimit {
                setting: "max_payload",
                value: bytes,
            });
        }
        self.max_payload = bytes;
        Ok(self)
    }

    /// Closes a batch this long after its first record arrived.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidDuration`] unless 0 < `age` ≤ one day.
    pub fn with_max_age(mut self, age: Duration) -> Result<Self, FrameError> {
        if age <= Duration::zero() || age > Self::MAX_AGE_CEILING {
            return Err(FrameError::InvalidDuration {
                setting: "max_age",
                millis: age.num_milliseconds(),
            });
        }
        self.max_age = age;
        Ok(self)
    }

    /// Refuses a record whose JSON is longer than this.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] for 0, or if a record of this size would
    /// not fit `max_payload`.
    pub fn with_max_record_bytes(mut self, bytes: u32) -> Result<Self, FrameError> {
        if bytes == 0 || u64::from(bytes) + 1 > u64::from(self.max_payload) {
            return Err(FrameError::InvalidLimit {
                setting: "max_record_bytes",
                value: bytes,
            });
        }
        self.max_record_bytes = bytes;
        Ok(self)
    }

    /// Validates records against these limits.
    #[must_use]
    pub fn with_record_limits(mut self, limits: RecordLimits) -> Self {
        self.record_limits = limits;
        self
    }

    /// The largest payload a batch is closed at, in bytes.
    #[must_use]
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// The largest number of records in a batch.
    #[must_use]
    pub fn max_records(&self) -> u32 {
        self.max_records
    }

    /// How long a batch stays open.
    #[must_use]
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

/// A record the [`Batcher`] refused, handed back with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct BatcherRejection {
    /// Why: [`FrameError::Record`] for a record that does not validate,
    /// [`FrameError::RecordTooLarge`] for one whose JSON is over the limit.
    pub error: FrameError,
    /// The record, unchanged.
    pub record: Tagged<Record>,
}

/// A batch the [`Batcher`] closed: one tenant's records of one data type,
/// validated and serialized as JSON Lines, ready for
/// [`FrameEncoder::encode_closed`](crate::FrameEncoder::encode_closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedBatch {
    tenant: TenantId,
    data_type: DataType,
    record_count: u32,
    payload: Vec<u8>,
    largest: Largest,
    opened_at: DateTime<Utc>,
    closed_at: DateTime<Utc>,
}

/// The longest record line of a batch (without its `\n`) and its index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Largest {
    bytes: usize,
    index: usize,
}

impl Largest {
    fn with(self, index: usize, bytes: usize) -> Largest {
        if bytes > self.bytes {
            Largest { bytes, index }
        } else {
            self
        }
    }
}

impl ClosedBatch {
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
    /// The number of records.
    #[must_use]
    pub fn record_count(&self) -> u32 {
        self.record_count
    }
    /// The length in bytes of the longest record's JSON (without its `\n`).
    #[must_use]
    pub fn largest_record_bytes(&self) -> usize {
        self.largest.bytes
    }
    /// The index of the longest record, as [`ClosedBatch::largest_record_bytes`].
    pub(crate) fn largest_record_index(&self) -> usize {
        self.largest.index
    }
    /// The records as JSON Lines.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// When the first record arrived.
    #[must_use]
    pub fn opened_at(&self) -> DateTime<Utc> {
        self.opened_at
    }
    /// When the batch was closed.
    #[must_use]
    pub fn closed_at(&self) -> DateTime<Utc> {
        self.closed_at
    }
    /// The payload buffer, to reuse.
    #[must_use]
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

#[derive(Debug)]
struct OpenBatch {
    payload: Vec<u8>,
    count: u32,
    largest: Largest,
    opened_at: DateTime<Utc>,
}

type Key = (TenantId, DataType);

/// Gathers tagged records, in any tenant and type order, into batches of one
/// tenant and one data type, closing each when it reaches the record count,
/// the payload size or the age limit.
///
/// Each record is validated and serialized once, as it arrives, so sizes
/// are exact; the payload limit is set so that even DEFLATE's worst-case
/// expansion fits the frame body limit given to [`Batcher::new`]: no closed
/// batch makes a frame a reader with those limits would refuse.
///
/// **Drain contract**: after [`push`](Batcher::push),
/// [`handle_timeout`](Batcher::handle_timeout) or
/// [`flush`](Batcher::flush), call [`poll_batch`](Batcher::poll_batch) until
/// it returns `None`; then arm a timer for
/// [`poll_timeout`](Batcher::poll_timeout) (`None`: no batch is open). An
/// early or repeated `handle_timeout` does nothing; a `now` earlier than one
/// already seen counts as the latest seen.
///
/// ```
/// # use chrono::{Duration, TimeZone, Utc};
/// # use opsdata::*;
/// # use uuid::Uuid;
/// let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
/// let mut batcher = Batcher::new(BatcherConfig::default(), &FrameLimits::default())?;
/// let sample = Performance {
///     object_name: "Memory".into(),
///     counter_name: "Available MBytes".into(),
///     perfmon_instance_name: String::new(),
///     performance_data_id: Uuid::from_u128(5),
///     performance_source_internal_id: 1,
///     sample_value: 2048.0,
///     time_sampled: t0,
///     time_added: t0,
/// };
/// batcher.push(t0, Tagged::new(tenant, Record::from(sample))).unwrap();
/// assert!(batcher.poll_batch().is_none()); // still open
/// let due = batcher.poll_timeout().unwrap();
/// assert_eq!(due, t0 + Duration::seconds(10));
/// batcher.handle_timeout(due);
/// let batch = batcher.poll_batch().unwrap();
/// assert_eq!((batch.tenant(), batch.record_count()), (tenant, 1));
/// let frame = FrameEncoder::new().encode_closed_frame(&batch, BatchId::from_random_bytes([1; 16]))?;
/// assert_eq!(frame.records(&FrameLimits::default())?.len(), 1);
/// # Ok::<(), FrameError>(())
/// ```
#[derive(Debug)]
pub struct Batcher {
    config: BatcherConfig,
    open: BTreeMap<Key, OpenBatch>,
    deadlines: BTreeSet<(DateTime<Utc>, Key)>,
    ready: VecDeque<ClosedBatch>,
    latest: Option<DateTime<Utc>>,
    open_bytes: usize,
}

impl Batcher {
    /// A batcher whose batches fit frames under `limits`.
    ///
    /// # Errors
    ///
    /// [`FrameError::InvalidLimit`] if a batch of the configured size could
    /// make a frame over `limits`: more records than `max_records`, a
    /// payload over `max_content`, a worst-case DEFLATE body over
    /// `max_body`, or records larger than `max_record_bytes`.
    pub fn new(config: BatcherConfig, limits: &FrameLimits) -> Result<Self, FrameError> {
        let payload = config.max_payload as usize;
        if config.max_records > limits.max_records() {
            return Err(FrameError::InvalidLimit {
                setting: "max_records",
                value: config.max_records,
            });
        }
        if config.max_payload > limits.max_content()
            || deflate_bound(payload) > limits.max_body() as usize
        {
            return Err(FrameError::InvalidLimit {
                setting: "max_payload",
                value: config.max_payload,
            });
        }
        if config.max_record_bytes > limits.max_record_bytes() {
            return Err(FrameError::InvalidLimit {
                setting: "max_record_bytes",
                value: config.max_record_bytes,
            });
        }
        Ok(Batcher {
            config,
            open: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            latest: None,
            open_bytes: 0,
        })
    }

    fn observe(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        now
    }

    /// Adds a record to its tenant's open batch of its type, opening one at
    /// `now` if there is none, and closing it if it is full.
    ///
    /// # Errors
    ///
    /// A [`BatcherRejection`] handing the record back:
    /// [`FrameError::Record`] if it does not validate (its `index` is the
    /// position it would have had), [`FrameError::RecordTooLarge`] if its
    /// JSON is over `max_record_bytes`. Nothing changes, `now` included (it
    /// is not recorded as seen).
    #[allow(clippy::result_large_err)] // the error hands the record back by design
    pub fn push(
        &mut self,
        now: DateTime<Utc>,
        record: Tagged<Record>,
    ) -> Result<(), BatcherRejection> {
        // Recorded only once the record is taken: a refused push leaves the
        // clock alone (ARCHITECTURE.md).
        let now = self.latest.map_or(now, |l| l.max(now));
        let key = (record.tenant(), record.data_type());
        let index = self.open.get(&key).map_or(0, |b| b.count as usize);
        if let Err(source) = record.item().validate(&self.config.record_limits) {
            return Err(BatcherRejection {
                error: FrameError::Record { index, source },
                record,
            });
        }
        let max_payload = self.config.max_payload as usize;
        let batch = self.open.entry(key).or_insert_with(|| OpenBatch {
            payload: Vec::new(),
            count: 0,
            largest: Largest::default(),
            opened_at: now,
        });
        let start = batch.payload.len();
        record.item().write_json(&mut batch.payload);
        let bytes = batch.payload.len() - start;
        if bytes > self.config.max_record_bytes as usize {
            batch.payload.truncate(start);
            if batch.count == 0 {
                self.open.remove(&key);
            }
            return Err(BatcherRejection {
                error: FrameError::RecordTooLarge {
                    index,
                    bytes,
                    max: self.config.max_record_bytes,
                },
                record,
            });
        }
        batch.payload.push(b'\n');
        if batch.count == 0 {
            self.deadlines
                .insert((deadline(now, self.config.max_age), key));
        }
        if batch.payload.len() > max_payload {
            // This record does not fit: close the batch without it and open
            // a new one with it. It fits a batch of its own, because
            // max_payload > max_record_bytes.
            let line = batch.payload[start..].to_vec();
            batch.payload.truncate(start);
            self.close(key, now);
            self.open.insert(
                key,
                OpenBatch {
                    payload: line,
                    count: 1,
                    largest: Largest { bytes, index: 0 },
                    opened_at: now,
                },
            );
            self.open_bytes += bytes + 1;
            self.deadlines
                .insert((deadline(now, self.config.max_age), key));
        } else {
            batch.largest = batch.largest.with(batch.count as usize, bytes);
            batch.count += 1;
            self.open_bytes += bytes + 1;
        }
        self.latest = Some(now);
        let batch = &self.open[&key];
        if batch.count >= self.config.max_records || batch.payload.len() == max_payload {
            self.close(key, now);
        }
        Ok(())
    }

    fn close(&mut self, key: Key, now: DateTime<Utc>) {
        if let Some(batch) = self.open.remove(&key) {
            self.deadlines
                .remove(&(deadline(batch.opened_at, self.config.max_age), key));
            self.open_bytes -= batch.payload.len();
            self.ready.push_back(ClosedBatch {
                tenant: key.0,
                data_type: key.1,
                record_count: batch.count,
                payload: batch.payload,
                largest: batch.largest,
                opened_at: batch.opened_at,
                closed_at: now,
            });
        }
    }

    /// Closes every batch whose age limit has passed at `now`.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let now = self.observe(now);
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.close(key, now);
        }
    }

    /// When the next open batch reaches its age limit; `None` if no batch is
    /// open.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// The next closed batch, oldest closed first.
    #[must_use]
    pub fn poll_batch(&mut self) -> Option<ClosedBatch> {
        self.ready.pop_front()
    }

    /// Closes every open batch now (for example at shutdown).
    pub fn flush(&mut self, now: DateTime<Utc>) {
        let now = self.observe(now);
        while let Some((&key, _)) = self.open.first_key_value() {
            self.close(key, now);
        }
    }

    /// The number of open batches.
    #[must_use]
    pub fn open_batches(&self) -> usize {
        self.open.len()
    }

    /// Payload bytes held in open batches.
    #[must_use]
    pub fn open_bytes(&self) -> usize {
        self.open_bytes
    }
}
