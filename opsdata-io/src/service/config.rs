//! The service's limits and timeouts.

use std::time::Duration;

use crate::identity::{TlsError, timeout};

/// The service's limits: connections, requests, body size, and the
/// timeouts that stop slow clients from holding resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) key_reservation_block: u64,
    pub(crate) nodes: u32,
}

impl Default for ServiceLimits {
    /// 1024 connections, 256 frame requests at once, 32 MiB bodies, 10 s
    /// for the TLS handshake, 10 s for a request's head (and for an idle
    /// HTTP/1.1 connection's next one), 60 s for its body, 5 minutes for a
    /// connection (HTTP/2 included) with no bytes read and no request in
    /// flight, `Retry-After: 1`, key usage reserved 65 536 seals at a time,
    /// one node.
    fn default() -> Self {
        ServiceLimits {
            max_connections: 1024,
            max_concurrent_requests: 256,
            max_body_bytes: 32 << 20,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            key_reservation_block: 65_536,
            nodes: 1,
        }
    }
}

fn positive(setting: &'static str, n: usize) -> Result<usize, TlsError> {
    if n == 0 {
        Err(TlsError::Zero { setting })
    } else {
        Ok(n)
    }
}

impl ServiceLimits {
    /// Connections served at once (before or after the handshake); more
    /// are closed at once, before their handshake.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_max_connections(mut self, n: usize) -> Result<Self, TlsError> {
        self.max_connections = positive("max_connections", n)?;
        Ok(self)
    }

    /// Frame requests processed at once, over all connections; more are
    /// answered `503` with `Retry-After`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_max_concurrent_requests(mut self, n: usize) -> Result<Self, TlsError> {
        self.max_concurrent_requests = positive("max_concurrent_requests", n)?;
        Ok(self)
    }

    /// The largest request body; larger ones are answered `413`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_max_body_bytes(mut self, n: usize) -> Result<Self, TlsError> {
        self.max_body_bytes = positive("max_body_bytes", n)?;
        Ok(self)
    }

    /// How long the TLS handshake may take, from the accept.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_handshake_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.handshake_timeout = timeout("handshake timeout", d)?;
        Ok(self)
    }

    /// How long a request's head may take to arrive (HTTP/1.1: also how
    /// long a kept connection may idle before its next request).
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_header_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.header_timeout = timeout("header timeout", d)?;
        Ok(self)
    }

    /// How long a connection may go without reading a byte while no
    /// request is in flight before it is shut down gracefully (HTTP/2
    /// `GOAWAY`): kept connections of agents that went quiet, and clients
    /// that connect and send nothing, do not hold a slot for ever.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_idle_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.idle_timeout = timeout("idle timeout", d)?;
        Ok(self)
    }

    /// How long a request's whole body may take to arrive, from its head.
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_body_timeout(mut self, d: Duration) -> Result<Self, TlsError> {
        self.body_timeout = timeout("body timeout", d)?;
        Ok(self)
    }

    /// The `Retry-After` of a `503` (rounded up to whole seconds, at least
    /// 1).
    ///
    /// # Errors
    ///
    /// [`TlsError::Timeout`] if zero or over an hour.
    pub fn with_retry_after(mut self, d: Duration) -> Result<Self, TlsError> {
        self.retry_after = timeout("retry after", d)?;
        Ok(self)
    }

    /// How many seals one key-ring write reserves (`docs/KEYS.md`, "Usage
    /// in blocks"); 1 saves the ring before every seal.
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_key_reservation_block(mut self, n: u64) -> Result<Self, TlsError> {
        if n == 0 {
            return Err(TlsError::Zero {
                setting: "key_reservation_block",
            });
        }
        self.key_reservation_block = n;
        Ok(self)
    }

    /// How many service nodes share each tenant's traffic, spread evenly
    /// (a load balancer sending each connection to any node): each node
    /// applies its share of the ingest configuration's per-tenant rate
    /// limit ([`RateLimit::per_node`](opsdata::RateLimit::per_node)), so
    /// together they admit about the configured rate. Leave it at 1 when
    /// a tenant's traffic always reaches one node (routing by tenant).
    /// `docs/SCALE.md`, "Rate limits".
    ///
    /// # Errors
    ///
    /// [`TlsError::Zero`] for 0.
    pub fn with_nodes(mut self, n: u32) -> Result<Self, TlsError> {
        if n == 0 {
            return Err(TlsError::Zero { setting: "nodes" });
        }
        self.nodes = n;
        Ok(self)
    }

    /// How many nodes share each tenant's traffic.
    #[must_use]
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// The largest request body.
    #[must_use]
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The body timeout.
    #[must_use]
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout
    }
}
