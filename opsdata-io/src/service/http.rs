//! The HTTP face: the router, the frames handler and the health, readiness
//! and metrics endpoints.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opsdata::{AuthError, CertificateInfo, EnrollmentCa, Principal};
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;
use tracing::{Instrument, debug, info, info_span};

use super::IngestService;
use super::ingest::ReplyKind;
use crate::blobs::AsyncBlobStore;
use crate::wire::{ACK_LEN, ACKS_CONTENT_TYPE, FRAMES_CONTENT_TYPE, FRAMES_PATH};

/// The client's certificate chain (end-entity first), as a server inserts
/// it into each request's extensions. [`serve`](super::serve) inserts a
/// [`ClientAuth`] instead (the chain checked once per connection); a host
/// serving the router itself inserts either, and for this one sets
/// [`ServiceBuilder::enrollment_ca`](super::ServiceBuilder::enrollment_ca).
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// An authenticated connection: the principal the enrollment CA derived
/// from its client certificate, and when the certificate expires (checked
/// again on every request, on the service's clock).
#[derive(Clone)]
pub struct ClientAuth {
    principal: Principal,
    not_after: DateTime<Utc>,
    close: Arc<Notify>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("tenant", &self.principal.tenant())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl ClientAuth {
    /// Checks `chain` with the core's [`EnrollmentCa::authenticate`] at
    /// `now`.
    ///
    /// # Errors
    ///
    /// The [`AuthError`] of the check.
    pub fn authenticate(
        ca: &EnrollmentCa,
        chain: &[CertificateDer<'static>],
        now: DateTime<Utc>,
    ) -> Result<Self, AuthError> {
        let principal = ca.authenticate(chain, now)?;
        // `authenticate` parsed the end-entity certificate, so this parses;
        // if it did not, the earliest time refuses every request.
        let not_after = chain
            .first()
            .and_then(|c| CertificateInfo::parse(c).ok())
            .map_or(DateTime::<Utc>::MIN_UTC, |i| i.not_after());
        Ok(ClientAuth {
            principal,
            not_after,
            close: Arc::new(Notify::new()),
        })
    }

    /// The principal.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// When the certificate expires.
    #[must_use]
    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// Resolves when a request asked for the connection to be closed
    /// (an expired certificate, a body too slow).
    pub(crate) fn close_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.close)
    }
}

fn status_only(status: StatusCode, close: bool, version: Version) -> Response {
    let mut r = status.into_response();
    if close && version <= Version::HTTP_11 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn retry_after(mut r: Response, d: std::time::Duration) -> Response {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

impl<B: AsyncBlobStore> IngestService<B> {
    /// The router: `POST /v1/frames`, `GET /healthz`, `GET /readyz`,
    /// `GET /metrics`. Mount it in an axum app (`Router::merge`) or serve
    /// it with [`serve`](super::serve). Each frames request needs a
    /// [`ClientAuth`] or [`PeerCertificates`] extension (else `401`).
    pub fn router(&self) -> Router {
        Router::new()
            .route(FRAMES_PATH, post(frames::<B>))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz::<B>))
            .route("/metrics", get(metrics::<B>))
            .with_state(self.clone())
    }

    fn count(&self, status: StatusCode) {
        self.inner
            .metrics
            .requests
            .get_or_create(&[("status", status.as_str_static())])
            .inc();
    }
}

/// `StatusCode::as_str` borrows; labels need `'static`.
trait StaticStatus {
    fn as_str_static(&self) -> &'static str;
}

impl StaticStatus for StatusCode {
    fn as_str_static(&self) -> &'static str {
        match self.as_u16() {
            200 => "200",
            400 => "400",
            401 => "401",
            408 => "408",
            413 => "413",
            415 => "415",
            429 => "429",
            503 => "503",
            _ => "other",
        }
    }
}

async fn readyz<B: AsyncBlobStore>(State(svc): State<IngestService<B>>) -> Response {
    if svc.is_ready() {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics<B: AsyncBlobStore>(State(svc): State<IngestService<B>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        svc.metrics_text(),
    )
        .into_response()
}

async fn frames<B: AsyncBlobStore>(State(svc): State<IngestService<B>>, req: Request) -> Response {
    let version = req.version();
    let now = svc.now();
    let auth = if let Some(a) = req.extensions().get::<ClientAuth>() {
        Some(a.clone())
    } else if let (Some(certs), Some(ca)) =
        (req.extensions().get::<PeerCertificates>(), &svc.inner.ca)
    {
        ClientAuth::authenticate(ca, &certs.0, now).ok()
    } else {
        None
    };
    let Some(auth) = auth else {
        svc.count(StatusCode::UNAUTHORIZED);
        return status_only(StatusCode::UNAUTHORIZED, true, version);
    };
    if now > auth.not_after {
        // A kept connection never outlives its certificate.
        debug!(tenant = %auth.principal.tenant(), "client certificate expired on a kept connection");
        auth.close.notify_one();
        svc.count(StatusCode::UNAUTHORIZED);
        return status_only(StatusCode::UNAUTHORIZED, true, version);
    }
    let tenant = auth.principal.tenant();
    let span = info_span!("frames", %tenant);
    async move {
        let limits = svc.inner.limits;
        if !svc.is_ready() {
            svc.count(StatusCode::SERVICE_UNAVAILABLE);
            return retry_after(
                status_only(StatusCode::SERVICE_UNAVAILABLE, true, version),
                limits.retry_after,
            );
        }
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if ct.map(|c| c.split(';').next().unwrap_or("").trim()) != Some(FRAMES_CONTENT_TYPE) {
            svc.count(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            return status_only(StatusCode::UNSUPPORTED_MEDIA_TYPE, false, version);
        }
        let Ok(_permit) = Arc::clone(&svc.inner.permits).try_acquire_owned() else {
            svc.count(StatusCode::SERVICE_UNAVAILABLE);
            return retry_after(
                status_only(StatusCode::SERVICE_UNAVAILABLE, false, version),
                limits.retry_after,
            );
        };
        let too_large = || {
            let mut r = status_only(StatusCode::PAYLOAD_TOO_LARGE, true, version);
            r.headers_mut().insert(
                "x-opsdata-max-body-bytes",
                HeaderValue::from(limits.max_body_bytes),
            );
            r
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
            svc.count(StatusCode::PAYLOAD_TOO_LARGE);
            return too_large();
        }
        let m = &svc.inner.metrics;
        // Counted down however the request ends (a client that goes away
        // drops this future).
        m.requests_in_flight.inc();
        let _in_flight = InFlight(m.requests_in_flight.clone());
        let body = Limited::new(req.into_body(), limits.max_body_bytes);
        let read = tokio::time::timeout(limits.body_timeout, body.collect()).await;
        let body = match read {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    svc.count(StatusCode::PAYLOAD_TOO_LARGE);
                    return too_large();
                }
                // The client went away or broke the protocol mid-body.
                svc.count(StatusCode::BAD_REQUEST);
                auth.close.notify_one();
                return status_only(StatusCode::BAD_REQUEST, true, version);
            }
            Err(_) => {
                debug!("request body too slow");
                auth.close.notify_one();
                svc.count(StatusCode::REQUEST_TIMEOUT);
                return status_only(StatusCode::REQUEST_TIMEOUT, true, version);
            }
        };
        let reply = svc.ingest(auth.principal.clone(), body).await;
        let status = match reply.kind {
            ReplyKind::Ok => StatusCode::OK,
            ReplyKind::BadFrames => StatusCode::BAD_REQUEST,
            ReplyKind::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ReplyKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        svc.count(status);
        info!(
            status = status.as_u16(),
            acks = reply.acks.len(),
            "frames request answered"
        );
        let mut out = Vec::with_capacity(reply.acks.len() * ACK_LEN);
        for a in &reply.acks {
            out.extend_from_slice(&a.encode());
        }
        let mut r = (
            status,
            [(header::CONTENT_TYPE, ACKS_CONTENT_TYPE)],
            Body::from(out),
        )
            .into_response();
        match reply.kind {
            ReplyKind::Throttled(wait) => r = retry_after(r, wait),
            ReplyKind::Unavailable => r = retry_after(r, limits.retry_after),
            _ => {}
        }
        r
    }
    .instrument(span)
    .await
}

/// Counts a request in flight down when dropped.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
