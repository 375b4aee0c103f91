//! Authentication: workspace (enrollment) keys and the two request-signing
//! schemes real agents use, with verification that is constant-time,
//! recomputes the body hash from the body received, bounds clock skew and
//! accepts the primary or the secondary key.
//!
//! - *Data Collector*: string to sign `POST\n{body length in bytes}\n
//!   application/json\nx-ms-date:{RFC 1123 date}\n/api/logs`, header
//!   `Authorization: SharedKey {workspace id}:{Base64 HMAC-SHA256}`.
//! - *Agent service* (agent registration): `x-ms-SHA256_Content` = Base64
//!   SHA-256 of the body, string to sign `{x-ms-Date}\n{content hash}\n`,
//!   header `Authorization: {workspace id}; {Base64 HMAC-SHA256}`.
//!
//! Errors keep the detailed reason for the service's logs;
//! [`AuthError::peer_reply`] is all a peer should be told.

mod identity;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Duration, Utc};
use ring::{digest, hmac};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::tenant::TenantId;

pub use identity::{AGENT_OU, AgentIdentity, EnrollmentCa, Principal, subject_ids};

/// The longest header value read: longer ones are refused unread.
const MAX_HEADER: usize = 1024;
/// The longest workspace key accepted, in bytes after Base64 decoding.
const MAX_KEY: usize = 1024;

/// A workspace's shared key (the enrollment key agents register with),
/// parsed from Base64. Zeroized on drop; `Debug` prints
/// `EnrollmentKey(..)`.
pub struct EnrollmentKey(Zeroizing<Vec<u8>>);

impl EnrollmentKey {
    /// Parses the key as the portal shows it: standard Base64 (surrounding
    /// whitespace ignored).
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidKey`] for text that is not Base64, or decodes to
    /// fewer than 16 or more than 1 024 bytes.
    pub fn from_base64(text: &str) -> Result<Self, AuthError> {
        let text = text.trim();
        if text.len() > MAX_KEY * 4 / 3 + 4 {
            return Err(AuthError::InvalidKey {
                reason: "longer than 1 024 bytes",
            });
        }
        let bytes = Zeroizing::new(B64.decode(text).map_err(|_| AuthError::InvalidKey {
            reason: "not standard Base64",
        })?);
        if bytes.len() < 16 {
            return Err(AuthError::InvalidKey {
                reason: "shorter than 16 bytes",
            });
        }
        Ok(EnrollmentKey(bytes))
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    fn sign(&self, message: &[u8]) -> String {
        B64.encode(hmac::sign(&self.hmac_key(), message).as_ref())
    }
}

impl fmt::Debug for EnrollmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnrollmentKey(..)")
    }
}

/// Which of a workspace's two keys verified a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeySlot {
    /// The primary key.
    Primary,
    /// The secondary key (the one kept while the primary is regenerated).
    Secondary,
}

/// A workspace's keys: the primary and, while one is being regenerated,
/// a secondary; a signature under either verifies.
#[derive(Debug)]
pub struct WorkspaceKeys {
    workspace: TenantId,
    primary: EnrollmentKey,
    secondary: Option<EnrollmentKey>,
}

impl WorkspaceKeys {
    /// The workspace's keys, primary only.
    #[must_use]
    pub fn new(workspace: TenantId, primary: EnrollmentKey) -> Self {
        WorkspaceKeys {
            workspace,
            primary,
            secondary: None,
        }
    }

    /// Adds (or replaces) the secondary key.
    #[must_use]
    pub fn with_secondary(mut self, secondary: EnrollmentKey) -> Self {
        self.secondary = Some(secondary);
        self
    }

    /// The workspace.
    #[must_use]
    pub fn workspace(&self) -> TenantId {
        self.workspace
    }

    /// Verifies `tag` over `message` under the primary, then the secondary,
    /// in constant time for each.
    fn verify(&self, message: &[u8], tag: &[u8]) -> Result<KeySlot, AuthError> {
        if hmac::verify(&self.primary.hmac_key(), message, tag).is_ok() {
            return Ok(KeySlot::Primary);
        }
        if let Some(s) = &self.secondary
            && hmac::verify(&s.hmac_key(), message, tag).is_ok()
        {
            return Ok(KeySlot::Secondary);
        }
        Err(AuthError::BadSignature)
    }
}

/// How verification treats time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    max_skew: Duration,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            max_skew: Duration::minutes(15),
        }
    }
}

impl AuthPolicy {
    /// Sets the clock-skew window: a request dated more than this before or
    /// after `now` is refused (default 15 minutes).
    ///
    /// # Errors
    ///
    /// [`AuthError::Policy`] unless positive and at most one day.
    pub fn with_max_skew(mut self, max_skew: Duration) -> Result<Self, AuthError> {
        if max_skew <= Duration::zero() || max_skew > Duration::days(1) {
            return Err(AuthError::Policy(
                "max_skew must be positive and at most a day",
            ));
        }
        self.max_skew = max_skew;
        Ok(self)
    }

    /// The clock-skew window.
    #[must_use]
    pub fn max_skew(&self) -> Duration {
        self.max_skew
    }

    fn check_time(&self, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), AuthError> {
        let skew = if date > now { date - now } else { now - date };
        if skew > self.max_skew {
            return Err(AuthError::ClockSkew {
                date,
                now,
                max_skew: self.max_skew,
            });
        }
        Ok(())
    }
}

/// A request that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct Verified {
    /// The workspace the request is for (and whose key signed it).
    pub workspace: TenantId,
    /// Which key signed it.
    pub key: KeySlot,
    /// The request's date.
    pub date: DateTime<Utc>,
}

/// What a refused request's sender should be told: deliberately little.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerReply {
    /// The request could not be read (HTTP 400).
    BadRequest,
    /// The request did not authenticate (HTTP 401).
    Unauthorized,
}

impl PeerReply {
    /// The HTTP status to answer with.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            PeerReply::BadRequest => 400,
            PeerReply::Unauthorized => 401,
        }
    }

    /// The only text to send back.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            PeerReply::BadRequest => "bad request",
            PeerReply::Unauthorized => "unauthorized",
        }
    }
}

/// Why a key, a header or a request was refused. The detail is for the
/// service's own logs; tell the peer only [`AuthError::peer_reply`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A workspace key that cannot be used.
    #[error("invalid workspace key: {reason}")]
    InvalidKey {
        /// Why.
        reason: &'static str,
    },
    /// A header that does not parse.
    #[error("malformed {header} header: {reason}")]
    MalformedHeader {
        /// Which header.
        header: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request names another workspace than the keys given.
    #[error("request for workspace {found}, verified against workspace {expected}")]
    WorkspaceMismatch {
        /// The workspace of the keys.
        expected: TenantId,
        /// The workspace the request names.
        found: TenantId,
    },
    /// The request's date is too far from `now` (a replay, or a bad clock).
    #[error("request dated {date}, {max_skew} or more from now ({now})")]
    ClockSkew {
        /// The request's date.
        date: DateTime<Utc>,
        /// The verifier's time.
        now: DateTime<Utc>,
        /// The window.
        max_skew: Duration,
    },
    /// The content hash header does not match the body received.
    #[error("the body does not match its content hash")]
    ContentHashMismatch,
    /// No key of the workspace produced the signature.
    #[error("bad signature")]
    BadSignature,
    /// A setting that makes no sense.
    #[error("auth policy: {0}")]
    Policy(&'static str),
    /// A client certificate (chain) that does not validate against the
    /// enrollment CA, or whose subject does not name a workspace and agent.
    #[error("client certificate: {0}")]
    Certificate(String),
}

impl AuthError {
    /// What the peer may be told: `BadRequest` for a request that cannot be
    /// read, `Unauthorized` for every other refusal (which key, which check
    /// or which clock failed is not the peer's business).
    #[must_use]
    pub fn peer_reply(&self) -> PeerReply {
        match self {
            AuthError::MalformedHeader { .. } => PeerReply::BadRequest,
            _ => PeerReply::Unauthorized,
        }
    }
}

fn header<'a>(name: &'static str, value: &'a str) -> Result<&'a str, AuthError> {
    if value.len() > MAX_HEADER {
        return Err(AuthError::MalformedHeader {
            header: name,
            reason: "longer than 1 024 bytes",
        });
    }
    if !value.is_ascii() || value.bytes().any(|b| b.is_ascii_control()) {
        return Err(AuthError::MalformedHeader {
            header: name,
            reason: "not printable ASCII",
        });
    }
    Ok(value)
}

fn workspace_id(text: &str) -> Result<TenantId, AuthError> {
    let bad = AuthError::MalformedHeader {
        header: "Authorization",
        reason: "the workspace id is not a hyphenated UUID",
    };
    if text.len() != 36 {
        return Err(bad);
    }
    let id = Uuid::try_parse(text).map_err(|_| bad.clone())?;
    TenantId::new(id).map_err(|_| bad)
}

fn signature_bytes(text: &str) -> Result<[u8; 32], AuthError> {
    let bad = AuthError::MalformedHeader {
        header: "Authorization",
        reason: "the signature is not Base64 of 32 bytes",
    };
    if text.len() != 44 {
        return Err(bad);
    }
    let bytes = B64.decode(text).map_err(|_| bad.clone())?;
    bytes.try_into().map_err(|_| bad)
}

fn hash_bytes(text: &str) -> Result<[u8; 32], AuthError> {
    let bad = AuthError::MalformedHeader {
        header: "x-ms-SHA256_Content",
        reason: "not Base64 of 32 bytes",
    };
    if text.len() != 44 {
        return Err(bad);
    }
    let bytes = B64.decode(text).map_err(|_| bad.clone())?;
    bytes.try_into().map_err(|_| bad)
}

/// The workspace a request's `Authorization` header claims, in either
/// scheme (`SharedKey {id}:{signature}` or `{id}; {signature}`), so a
/// service can look up which [`WorkspaceKeys`] to verify it with.
///
/// Nothing is verified: the id is only a claim until
/// [`verify_data_collector`] or [`verify_agent_service`] accepts the
/// request with that workspace's keys.
///
/// ```
/// # use opsdata::*;
/// let id = claimed_workspace("SharedKey 0f8fad5b-d9cb-469f-a165-70867728950e:c2lnbmF0dXJl")?;
/// assert_eq!(id.to_string(), "0f8fad5b-d9cb-469f-a165-70867728950e");
/// # Ok::<(), AuthError>(())
/// ```
///
/// # Errors
///
/// [`AuthError::MalformedHeader`] if the header is not printable ASCII of
/// at most 1 024 bytes, follows neither scheme, or its id is not a
/// hyphenated, non-nil UUID.
pub fn claimed_workspace(authorization: &str) -> Result<TenantId, AuthError> {
    let authorization = header("Authorization", authorization)?;
    let id = match authorization.strip_prefix("SharedKey ") {
        Some(rest) => rest.split_once(':').map(|(id, _)| id),
        None => authorization.split_once("; ").map(|(id, _)| id),
    }
    .ok_or(AuthError::MalformedHeader {
        header: "Authorization",
        reason: "neither 'SharedKey {id}:{signature}' nor '{id}; {signature}'",
    })?;
    workspace_id(id)
}

fn check_workspace(keys: &WorkspaceKeys, found: TenantId) -> Result<(), AuthError> {
    if found == keys.workspace {
        Ok(())
    } else {
        Err(AuthError::WorkspaceMismatch {
            expected: keys.workspace,
            found,
        })
    }
}

/// The headers of a Data Collector request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct DataCollectorSignature {
    /// `Authorization: SharedKey {workspace id}:{signature}`.
    pub authorization: String,
    /// `x-ms-date`, RFC 1123 (`Mon, 04 Apr 2016 08:00:00 GMT`).
    pub x_ms_date: String,
}

/// The one date form the Data Collector scheme uses.
const RFC1123: &str = "%a, %d %b %Y %H:%M:%S GMT";

fn rfc1123(date: DateTime<Utc>) -> String {
    date.format(RFC1123).to_string()
}

/// Reads `Mon, 04 Apr 2016 08:00:00 GMT` and nothing looser: no other zone
/// or offset, and the weekday must match the date.
fn parse_rfc1123(text: &str) -> Result<DateTime<Utc>, AuthError> {
    chrono::NaiveDateTime::parse_from_str(text, RFC1123)
        .map(|t| t.and_utc())
        .map_err(|_| AuthError::MalformedHeader {
            header: "x-ms-date",
            reason: "not an RFC 1123 date in GMT",
        })
}

fn data_collector_string(body_len: usize, x_ms_date: &str) -> String {
    format!("POST\n{body_len}\napplication/json\nx-ms-date:{x_ms_date}\n/api/logs")
}

/// Signs a Data Collector request (`POST /api/logs`, `application/json`)
/// dated `date`. The length signed is the body's length in bytes.
///
/// ```
/// # use chrono::{TimeZone, Utc};
/// # use opsdata::*;
/// let workspace: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let key = EnrollmentKey::from_base64("c2VjcmV0LXdvcmtzcGFjZS1rZXktMDEyMzQ1Njc4OWFiY2RlZg==")?;
/// let now = Utc.with_ymd_and_hms(2016, 4, 4, 8, 0, 0).unwrap();
/// let body = br#"[{"a":1}]"#;
/// let signed = sign_data_collector(workspace, &key, now, body);
/// assert_eq!(signed.x_ms_date, "Mon, 04 Apr 2016 08:00:00 GMT");
/// let keys = WorkspaceKeys::new(workspace, key);
/// let ok = verify_data_collector(&keys, &signed.authorization, &signed.x_ms_date, body, &AuthPolicy::default(), now)?;
/// assert_eq!(ok.key, KeySlot::Primary);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sign_data_collector(
    workspace: TenantId,
    key: &EnrollmentKey,
    date: DateTime<Utc>,
    body: &[u8],
) -> DataCollectorSignature {
    let x_ms_date = rfc1123(date);
    let signature = key.sign(data_collector_string(body.len(), &x_ms_date).as_bytes());
    DataCollectorSignature {
        authorization: format!("SharedKey {workspace}:{signature}"),
        x_ms_date,
    }
}

/// Verifies a Data Collector request against the body actually received.
///
/// # Errors
///
/// [`AuthError::MalformedHeader`] for headers that do not parse,
/// [`AuthError::WorkspaceMismatch`] for a request naming another
/// workspace, [`AuthError::ClockSkew`] outside the policy's window,
/// [`AuthError::BadSignature`] if neither key signed it.
pub fn verify_data_collector(
    keys: &WorkspaceKeys,
    authorization: &str,
    x_ms_date: &str,
    body: &[u8],
    policy: &AuthPolicy,
    now: DateTime<Utc>,
) -> Result<Verified, AuthError> {
    let authorization = header("Authorization", authorization)?;
    let x_ms_date = header("x-ms-date", x_ms_date)?;
    let rest = authorization
        .strip_prefix("SharedKey ")
        .ok_or(AuthError::MalformedHeader {
            header: "Authorization",
            reason: "not the SharedKey scheme",
        })?;
    let (id, signature) = rest.split_once(':').ok_or(AuthError::MalformedHeader {
        header: "Authorization",
        reason: "no ':' between workspace id and signature",
    })?;
    let workspace = workspace_id(id)?;
    let tag = signature_bytes(signature)?;
    let date = parse_rfc1123(x_ms_date)?;
    check_workspace(keys, workspace)?;
    policy.check_time(date, now)?;
    let key = keys.verify(
        data_collector_string(body.len(), x_ms_date).as_bytes(),
        &tag,
    )?;
    Ok(Verified {
        workspace,
        key,
        date,
    })
}

/// The headers of an agent-service request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct AgentServiceSignature {
    /// `Authorization: {workspace id}; {signature}`.
    pub authorization: String,
    /// `x-ms-Date`, as given to [`sign_agent_service`].
    pub x_ms_date: String,
    /// `x-ms-SHA256_Content`: Base64 SHA-256 of the body.
    pub content_hash: String,
}

/// The agent-service content hash: Base64 of the body's SHA-256.
#[must_use]
pub fn content_hash(body: &[u8]) -> String {
    B64.encode(digest::digest(&digest::SHA256, body).as_ref())
}

/// Signs an agent-service request. `x_ms_date` is signed exactly as given
/// (RFC 3339, any fraction and offset, as agents send it).
pub fn sign_agent_service(
    workspace: TenantId,
    key: &EnrollmentKey,
    x_ms_date: &str,
    body: &[u8],
) -> AgentServiceSignature {
    let hash = content_hash(body);
    let signature = key.sign(format!("{x_ms_date}\n{hash}\n").as_bytes());
    AgentServiceSignature {
        authorization: format!("{workspace}; {signature}"),
        x_ms_date: x_ms_date.to_owned(),
        content_hash: hash,
    }
}

/// Verifies an agent-service request. The content hash is recomputed from
/// the body received and must equal the header; the signature is checked
/// over the recomputed hash.
///
/// # Errors
///
/// [`AuthError::MalformedHeader`] for headers that do not parse (the
/// content hash must be Base64 of 32 bytes), [`AuthError::WorkspaceMismatch`],
/// [`AuthError::ContentHashMismatch`], [`AuthError::ClockSkew`],
/// [`AuthError::BadSignature`].
pub fn verify_agent_service(
    keys: &WorkspaceKeys,
    authorization: &str,
    x_ms_date: &str,
    content_hash_header: &str,
    body: &[u8],
    policy: &AuthPolicy,
    now: DateTime<Utc>,
) -> Result<Verified, AuthError> {
    let authorization = header("Authorization", authorization)?;
    let x_ms_date = header("x-ms-Date", x_ms_date)?;
    let claimed = hash_bytes(header("x-ms-SHA256_Content", content_hash_header)?)?;
    let (id, signature) = authorization
        .split_once("; ")
        .ok_or(AuthError::MalformedHeader {
            header: "Authorization",
            reason: "no '; ' between workspace id and signature",
        })?;
    let workspace = workspace_id(id)?;
    let tag = signature_bytes(signature)?;
    let date = DateTime::parse_from_rfc3339(x_ms_date)
        .map_err(|_| AuthError::MalformedHeader {
            header: "x-ms-Date",
            reason: "not an RFC 3339 date",
        })?
        .with_timezone(&Utc);
    check_workspace(keys, workspace)?;
    let digest = digest::digest(&digest::SHA256, body);
    // Not a secret: whoever sends a body knows its hash, so a plain
    // comparison leaks nothing worth timing.
    if claimed[..] != *digest.as_ref() {
        return Err(AuthError::ContentHashMismatch);
    }
    let hash = B64.encode(digest.as_ref());
    policy.check_time(date, now)?;
    let key = keys.verify(format!("{x_ms_date}\n{hash}\n").as_bytes(), &tag)?;
    Ok(Verified {
        workspace,
        key,
        date,
    })
}
