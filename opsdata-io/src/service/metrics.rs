//! The service's Prometheus metrics (`prometheus-client`: a registry of
//! its own per service, no global recorder). No tenant ids, no record
//! content, no key material: labels are fixed reasons and outcomes.

use std::fmt;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label, a fixed name and a fixed value.
pub(crate) type Label = [(&'static str, &'static str); 1];

/// The metric families. Every name is prefixed `opsdata_` in the
/// exposition.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<Label, Counter>,
    pub(crate) frames_received: Counter,
    pub(crate) records_received: Counter,
    pub(crate) frames_stored: Counter,
    pub(crate) records_stored: Counter,
    pub(crate) payload_bytes_stored: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) rejected: Family<Label, Counter>,
    pub(crate) throttled: Counter,
    pub(crate) transient: Family<Label, Counter>,
    pub(crate) tenant_mismatches: Counter,
    pub(crate) store_failures: Counter,
    pub(crate) store_seconds: Histogram,
    pub(crate) seals: Counter,
    pub(crate) key_reservations: Counter,
    pub(crate) key_ring_reads: Counter,
    pub(crate) key_ring_conflicts: Counter,
    pub(crate) connections: Family<Label, Counter>,
    pub(crate) connections_open: Gauge,
    pub(crate) requests_in_flight: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("frames_received", &self.frames_received.get())
            .field("frames_stored", &self.frames_stored.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("opsdata");
        let m = Metrics {
            requests: Family::default(),
            frames_received: Counter::default(),
            records_received: Counter::default(),
            frames_stored: Counter::default(),
            records_stored: Counter::default(),
            payload_bytes_stored: Counter::default(),
            duplicates: Counter::default(),
            rejected: Family::default(),
            throttled: Counter::default(),
            transient: Family::default(),
            tenant_mismatches: Counter::default(),
            store_failures: Counter::default(),
            // 100 µs .. ~6.5 s.
            store_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            seals: Counter::default(),
            key_reservations: Counter::default(),
            key_ring_reads: Counter::default(),
            key_ring_conflicts: Counter::default(),
            connections: Family::default(),
            connections_open: Gauge::default(),
            requests_in_flight: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "HTTP requests to /v1/frames, by status",
            m.requests.clone(),
        );
        r.register(
            "frames_received",
            "Frames read from request bodies",
            m.frames_received.clone(),
        );
        r.register(
            "records_received",
            "Records in the frames read (as their headers declare)",
            m.records_received.clone(),
        );
        r.register(
            "frames_stored",
            "Frames sealed and stored durably",
            m.frames_stored.clone(),
        );
        r.register(
            "records_stored",
            "Records in the frames stored",
            m.records_stored.clone(),
        );
        r.register(
            "payload_bytes_stored",
            "Uncompressed payload bytes of the frames stored",
            m.payload_bytes_stored.clone(),
        );
        r.register(
            "frames_duplicate",
            "Frames answered delivered as duplicates of a stored batch",
            m.duplicates.clone(),
        );
        r.register(
            "frames_rejected",
            "Frames rejected, by reason",
            m.rejected.clone(),
        );
        r.register(
            "frames_throttled",
            "Frames throttled by the tenant's rate limit",
            m.throttled.clone(),
        );
        r.register(
            "frames_transient",
            "Frames answered transient, by reason",
            m.transient.clone(),
        );
        r.register(
            "tenant_mismatches",
            "Frames naming another workspace than the client certificate's",
            m.tenant_mismatches.clone(),
        );
        r.register(
            "store_failures",
            "Blob store puts that failed",
            m.store_failures.clone(),
        );
        r.register(
            "store_seconds",
            "Time of one blob store put, durable",
            m.store_seconds.clone(),
        );
        r.register("seals", "Frames sealed under a tenant key", m.seals.clone());
        r.register(
            "key_reservations",
            "Key-ring writes reserving a block of seals (or provisioning, rotating)",
            m.key_reservations.clone(),
        );
        r.register(
            "key_ring_reads",
            "Key rings read from the key store (loads, re-reads)",
            m.key_ring_reads.clone(),
        );
        r.register(
            "key_ring_conflicts",
            "Key-ring writes refused because another node changed the ring first",
            m.key_ring_conflicts.clone(),
        );
        r.register(
            "connections",
            "Connections accepted, by result",
            m.connections.clone(),
        );
        r.register(
            "connections_open",
            "Connections open now",
            m.connections_open.clone(),
        );
        r.register(
            "requests_in_flight",
            "Frame requests being processed now",
            m.requests_in_flight.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
