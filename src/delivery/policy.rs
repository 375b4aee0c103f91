use chrono::Duration;

use crate::record::DataType;

/// The outbox's settings, each validated when set.
///
/// Defaults, from the behaviour the service documents: retry every
/// 8 minutes for 2 hours (the cache window), then queue, retrying with
/// exponential backoff up to 1 hour, up to 20 % shaved off each wait at
/// random; hold at most 100 MiB (the Windows agent's default queue size);
/// when full, drop Performance first. Each getter documents its setting.
///
/// ```
/// use chrono::Duration;
/// use opsdata::DeliveryPolicy;
/// let policy = DeliveryPolicy::default()
///     .with_limit_bytes(10 << 20)?
///     .with_retry_interval(Duration::minutes(1))?;
/// assert_eq!(policy.cache_window(), Duration::hours(2));
/// assert!(DeliveryPolicy::default().with_retry_interval(Duration::zero()).is_err());
/// # Ok::<(), opsdata::PolicyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    retry_interval: Duration,
    cache_window: Duration,
    queue_retry_max: Duration,
    jitter_percent: u8,
    limit_bytes: u64,
    limit_batches: Option<u64>,
    tenant_limit_bytes: Option<u64>,
    drop_order: [DataType; 6],
    max_in_flight: u32,
    max_retry_after: Duration,
    expire_after: [Option<Duration>; 6],
}

/// A [`DeliveryPolicy`] setting that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A duration that must be positive is not, or is beyond its ceiling.
    #[error("{setting} must be positive and at most {max_days} days")]
    Duration {
        /// The setting.
        setting: &'static str,
        /// The ceiling in days.
        max_days: i64,
    },
    /// A count or size that must be positive is zero.
    #[error("{setting} must be positive")]
    Zero {
        /// The setting.
        setting: &'static str,
    },
    /// Jitter over 100 %.
    #[error("jitter_percent {0} is over 100")]
    Jitter(u8),
    /// A drop order that does not name each data type exactly once.
    #[error("drop_order must name each of the six data types exactly once")]
    DropOrder,
    /// The queue's retry ceiling is shorter than the retry interval.
    #[error("queue_retry_max must be at least retry_interval")]
    QueueRetryMax,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retry_interval: Duration::minutes(8),
            cache_window: Duration::hours(2),
            queue_retry_max: Duration::hours(1),
            jitter_percent: 20,
            limit_bytes: 100 << 20,
            limit_batches: None,
            tenant_limit_bytes: None,
            drop_order: [
                DataType::Performance,
                DataType::Metadata,
                DataType::Configuration,
                DataType::State,
                DataType::Event,
                DataType::Alert,
            ],
            max_in_flight: 4,
            max_retry_after: Duration::hours(1),
            expire_after: [None; 6],
        }
    }
}

const MAX_DAYS: i64 = 365;

fn positive(setting: &'static str, d: Duration) -> Result<Duration, PolicyError> {
    if d <= Duration::zero() || d > Duration::days(MAX_DAYS) {
        Err(PolicyError::Duration {
            setting,
            max_days: MAX_DAYS,
        })
    } else {
        Ok(d)
    }
}

fn nonzero(setting: &'static str, n: u64) -> Result<u64, PolicyError> {
    if n == 0 {
        Err(PolicyError::Zero { setting })
    } else {
        Ok(n)
    }
}

impl DeliveryPolicy {
    /// The time between attempts while a tenant is offline within the cache
    /// window. Default 8 minutes.
    #[must_use]
    pub fn retry_interval(&self) -> Duration {
        self.retry_interval
    }
    /// How long after a tenant's first failure its batches are retried every
    /// `retry_interval` before they are queued. Default 2 hours.
    #[must_use]
    pub fn cache_window(&self) -> Duration {
        self.cache_window
    }
    /// The longest wait between attempts once queued. Default 1 hour.
    #[must_use]
    pub fn queue_retry_max(&self) -> Duration {
        self.queue_retry_max
    }
    /// How much of a queued wait may be shaved off at random, in percent of
    /// the wait (so waits never pass `queue_retry_max`), but never below
    /// `retry_interval`: even at 100 % no queued wait is shorter than the
    /// waits within the cache window, and none is zero. Default 20.
    #[must_use]
    pub fn jitter_percent(&self) -> u8 {
        self.jitter_percent
    }
    /// The bytes of frames held, in flight included. Default 100 MiB.
    #[must_use]
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }
    /// The number of batches held, if limited. Default none.
    #[must_use]
    pub fn limit_batches(&self) -> Option<u64> {
        self.limit_batches
    }
    /// The bytes one tenant may hold, if limited. When set, a tenant's new
    /// frame only ever evicts that tenant's own batches: one tenant's
    /// backlog cannot push out another's data. Default none.
    ///
    /// `limit_bytes` still applies over all tenants, and a frame that does
    /// not fit under it is refused even if its tenant is within its share.
    /// So the shares protect each tenant fully only when they add up to no
    /// more than the whole: share × tenants ≤ `limit_bytes`. With more
    /// tenants than that, the first to fill the outbox can leave the others
    /// less than their share.
    #[must_use]
    pub fn tenant_limit_bytes(&self) -> Option<u64> {
        self.tenant_limit_bytes
    }
    /// The order in which data types are dropped when a limit is reached.
    /// Default Performance, Metadata, Configuration, State, Event, Alert.
    #[must_use]
    pub fn drop_order(&self) -> [DataType; 6] {
        self.drop_order
    }
    /// Batches in flight at once per online tenant. Default 4.
    #[must_use]
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }
    /// The longest `Retry-After` honoured. Default 1 hour.
    #[must_use]
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }
    /// How old a batch of `data_type` may get before it is dropped as
    /// expired, counted from its frame header's `created` time (when the
    /// batch was closed), saturating at the end of time: neither a late push
    /// nor a restart gives it more time, and a frame already that old when
    /// pushed or recovered is dropped at once. A batch in flight at its
    /// expiry is dropped when it comes back undelivered. `None` (the
    /// default) keeps it until delivered or evicted.
    #[must_use]
    pub fn expire_after(&self, data_type: DataType) -> Option<Duration> {
        self.expire_after[usize::from(data_type.as_u8() - 1)]
    }

    /// Sets `retry_interval`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Duration`] unless positive and at most a year;
    /// [`PolicyError::QueueRetryMax`] if longer than `queue_retry_max`.
    pub fn with_retry_interval(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.retry_interval = positive("retry_interval", d)?;
        if self.queue_retry_max < d {
            return Err(PolicyError::QueueRetryMax);
        }
        Ok(self)
    }
    /// Sets `cache_window`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Duration`] unless positive and at most a year.
    pub fn with_cache_window(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.cache_window = positive("cache_window", d)?;
        Ok(self)
    }
    /// Sets `queue_retry_max`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Duration`] unless positive and at most a year;
    /// [`PolicyError::QueueRetryMax`] if shorter than `retry_interval`.
    pub fn with_queue_retry_max(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.queue_retry_max = positive("queue_retry_max", d)?;
        if d < self.retry_interval {
            return Err(PolicyError::QueueRetryMax);
        }
        Ok(self)
    }
    /// Sets `jitter_percent`; 0 makes queued retries exactly periodic.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Jitter`] over 100.
    pub fn with_jitter_percent(mut self, percent: u8) -> Result<Self, PolicyError> {
        if percent > 100 {
            return Err(PolicyError::Jitter(percent));
        }
        self.jitter_percent = percent;
        Ok(self)
    }
    /// Sets `limit_bytes`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Zero`] for 0.
    pub fn with_limit_bytes(mut self, bytes: u64) -> Result<Self, PolicyError> {
        self.limit_bytes = nonzero("limit_bytes", bytes)?;
        Ok(self)
    }
    /// Sets `limit_batches`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Zero`] for `Some(0)`.
    pub fn with_limit_batches(mut self, batches: Option<u64>) -> Result<Self, PolicyError> {
        self.limit_batches = batches.map(|n| nonzero("limit_batches", n)).transpose()?;
        Ok(self)
    }
    /// Sets `tenant_limit_bytes`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Zero`] for `Some(0)`.
    pub fn with_tenant_limit_bytes(mut self, bytes: Option<u64>) -> Result<Self, PolicyError> {
        self.tenant_limit_bytes = bytes
            .map(|n| nonzero("tenant_limit_bytes", n))
            .transpose()?;
        Ok(self)
    }
    /// Sets `drop_order`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::DropOrder`] unless it names each data type once.
    pub fn with_drop_order(mut self, order: [DataType; 6]) -> Result<Self, PolicyError> {
        if !DataType::ALL.iter().all(|t| order.contains(t)) {
            return Err(PolicyError::DropOrder);
        }
        self.drop_order = order;
        Ok(self)
    }
    /// Sets `max_in_flight`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Zero`] for 0.
    pub fn with_max_in_flight(mut self, n: u32) -> Result<Self, PolicyError> {
        self.max_in_flight = u32::try_from(nonzero("max_in_flight", n.into())?).unwrap_or(n);
        Ok(self)
    }
    /// Sets `max_retry_after`.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Duration`] unless positive and at most a year.
    pub fn with_max_retry_after(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.max_retry_after = positive("max_retry_after", d)?;
        Ok(self)
    }
    /// Sets `expire_after` for one data type (`None`: never expire).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Duration`] unless positive and at most a year.
    pub fn with_expire_after(
        mut self,
        data_type: DataType,
        d: Option<Duration>,
    ) -> Result<Self, PolicyError> {
        self.expire_after[usize::from(data_type.as_u8() - 1)] =
            d.map(|d| positive("expire_after", d)).transpose()?;
        Ok(self)
    }

    /// The data type's place in the drop order: 0 is dropped first.
    pub(crate) fn drop_rank(&self, data_type: DataType) -> u8 {
        // drop_order names every type (checked when set), so the search finds it.
        self.drop_order
            .iter()
            .position(|&t| t == data_type)
            .map_or(0, |p| p as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_behaviour() {
        let p = DeliveryPolicy::default();
        assert_eq!(p.retry_interval(), Duration::minutes(8));
        assert_eq!(p.cache_window(), Duration::hours(2));
        assert_eq!(p.queue_retry_max(), Duration::hours(1));
        assert_eq!(p.limit_bytes(), 100 * 1024 * 1024);
        assert_eq!(p.max_in_flight(), 4);
        assert_eq!(p.drop_order()[0], DataType::Performance);
        assert_eq!(p.drop_rank(DataType::Performance), 0);
        assert_eq!(p.drop_rank(DataType::Alert), 5);
        assert_eq!(p.expire_after(DataType::Event), None);
    }

    #[test]
    fn nonsense_is_refused() {
        let p = DeliveryPolicy::default();
        assert!(p.clone().with_retry_interval(Duration::zero()).is_err());
        assert!(p.clone().with_retry_interval(Duration::hours(2)).is_err()); // > queue max
        assert!(p.clone().with_cache_window(Duration::seconds(-1)).is_err());
        assert!(
            p.clone()
                .with_queue_retry_max(Duration::minutes(1))
                .is_err()
        );
        assert!(p.clone().with_jitter_percent(101).is_err());
        assert!(p.clone().with_limit_bytes(0).is_err());
        assert!(p.clone().with_limit_batches(Some(0)).is_err());
        assert!(p.clone().with_max_in_flight(0).is_err());
        let mut order = p.drop_order();
        order[1] = order[0];
        assert_eq!(
            p.clone().with_drop_order(order),
            Err(PolicyError::DropOrder)
        );
        assert!(
            p.with_expire_after(DataType::Performance, Some(Duration::days(400)))
                .is_err()
        );
    }
}
