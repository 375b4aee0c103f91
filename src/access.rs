//! Workspace access: users and workspaces many-to-many with a [`Role`] per
//! pair ([`AccessControl`], [`AccessControl::authorize`]), each workspace in
//! one [`Region`]; and portal sessions ([`SessionStore`]) with random
//! [`SessionId`]s, an idle timeout and strict cookie attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{Entropy, EntropyUnavailable};
use crate::record::truncate_for_error;
use crate::tenant::TenantId;

/// A portal user: a non-nil UUID (a directory object id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(Uuid);

impl UserId {
    /// The user with id `id`.
    ///
    /// # Errors
    ///
    /// [`AccessError::NilUser`] for the nil UUID.
    pub fn new(id: Uuid) -> Result<Self, AccessError> {
        if id.is_nil() {
            Err(AccessError::NilUser)
        } else {
            Ok(UserId(id))
        }
    }

    /// The id.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0.hyphenated())
    }
}

/// The region a workspace's data lives in, such as `eastus` or
/// `westeurope`: 1 to 32 lowercase ASCII letters and digits, starting with
/// a letter.
///
/// ```
/// use opsdata::Region;
/// let r: Region = "eastus2".parse()?;
/// assert_eq!(r.as_str(), "eastus2");
/// assert!("East US".parse::<Region>().is_err());
/// assert!("2east".parse::<Region>().is_err());
/// # Ok::<(), opsdata::AccessError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Region(String);

impl Region {
    /// The longest region name, in bytes.
    pub const MAX_LEN: usize = 32;

    /// The region named `name`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Region`] unless `name` is 1 to 32 lowercase ASCII
    /// letters and digits starting with a letter.
    pub fn new(name: &str) -> Result<Self, AccessError> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= Self::MAX_LEN
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(Region(name.to_owned()))
        } else {
            Err(AccessError::Region {
                input: truncate_for_error(name),
            })
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Region {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, AccessError> {
        Region::new(s)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.0)
    }
}

/// A user's role in one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Everything, including importing solutions, keys and users.
    Administrator,
    /// Reads and exports data.
    Contributor,
    /// Reads data.
    Reader,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Administrator, Role::Contributor, Role::Reader];

    /// Whether the role may take `action`: the whole access table.
    ///
    /// | action | Administrator | Contributor | Reader |
    /// |---|---|---|---|
    /// | [`ReadData`](Action::ReadData) | yes | yes | yes |
    /// | [`Export`](Action::Export) | yes | yes | no |
    /// | [`ImportSolution`](Action::ImportSolution) | yes | no | no |
    /// | [`ManageKeys`](Action::ManageKeys) | yes | no | no |
    /// | [`ManageUsers`](Action::ManageUsers) | yes | no | no |
    ///
    /// Export is bulk extraction, so a reader, who may look at data, may
    /// not take it out wholesale. Importing a solution changes what every
    /// agent of the workspace collects, keys guard all of its data, and
    /// users decide who sees it: administrators only. An action added later
    /// is granted to no role until this table says so.
    #[must_use]
    pub const fn permits(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Role::Administrator, _)
                | (Role::Contributor, Action::ReadData | Action::Export)
                | (Role::Reader, Action::ReadData)
        )
    }
}

/// Something a user asks to do in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Search and read the workspace's records.
    ReadData,
    /// Export records (CSV, search API paging).
    Export,
    /// Import a solution into the workspace.
    ImportSolution,
    /// Rotate, shred or otherwise manage the workspace's keys.
    ManageKeys,
    /// Grant, change or revoke users' roles.
    ManageUsers,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 5] = [
        Action::ReadData,
        Action::Export,
        Action::ImportSolution,
        Action::ManageKeys,
        Action::ManageUsers,
    ];
}

/// An action refused by [`AccessControl::authorize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{user} may not {action:?} in workspace {workspace} ({})", role_text(*.role))]
#[non_exhaustive]
pub struct Denied {
    /// Who asked.
    pub user: UserId,
    /// Where.
    pub workspace: TenantId,
    /// What.
    pub action: Action,
    /// The user's role in the workspace, or `None` if the user has none
    /// there (or the workspace is unknown).
    pub role: Option<Role>,
}

fn role_text(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Administrator) => "an administrator there",
        Some(Role::Contributor) => "a contributor there",
        Some(Role::Reader) => "a reader there",
        None => "no role there",
    }
}

/// Misuse of the access API, a refused action or session, or a nonsense
/// setting: a typed error that changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// An action the user's role does not grant.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The nil UUID names no user.
    #[error("the nil UUID is not a user id")]
    NilUser,
    /// A region name that is not 1 to 32 lowercase ASCII letters and digits
    /// starting with a letter.
    #[error("malformed region {input:?}")]
    Region {
        /// The input, cut to a readable size.
        input: String,
    },
    /// No such workspace.
    #[error("unknown workspace {workspace}")]
    UnknownWorkspace {
        /// The workspace.
        workspace: TenantId,
    },
    /// The workspace exists already (a workspace stays in its region).
    #[error("workspace {workspace} exists already, in region {region}")]
    WorkspaceExists {
        /// The workspace.
        workspace: TenantId,
        /// Its region.
        region: Region,
    },
    /// Revoking a role the user does not have.
    #[error("{user} has no role in workspace {workspace}")]
    NoGrant {
        /// The user.
        user: UserId,
        /// The workspace.
        workspace: TenantId,
    },
    /// Revoking or demoting the workspace's last administrator.
    #[error("{user} is the last administrator of workspace {workspace}")]
    LastAdministrator {
        /// The user.
        user: UserId,
        /// The workspace.
        workspace: TenantId,
    },
    /// A [`SessionPolicy`] setting out of range.
    #[error("{setting} must be {requirement}")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The entropy source failed; no session was created.
    #[error(transparent)]
    Entropy(#[from] EntropyUnavailable),
    /// A session cookie value that is not a session id (the value is not
    /// repeated here: it may be someone's secret).
    #[error("malformed session id")]
    MalformedSession,
    /// No live session has this id (never had, ended, or evicted).
    #[error("unknown session")]
    UnknownSession,
    /// The session was idle for the whole idle timeout; it is ended.
    #[error("session idle since {last_active}, expired at {expired_at}")]
    SessionExpired {
        /// Its last activity.
        last_active: DateTime<Utc>,
        /// When it expired.
        expired_at: DateTime<Utc>,
    },
    /// The store holds its maximum of live sessions.
    #[error("too many sessions (at most {max})")]
    TooManySessions {
        /// The cap.
        max: usize,
    },
}

#[derive(Debug, Clone)]
struct Workspace {
    region: Region,
    members: BTreeMap<UserId, Role>,
    administrators: usize,
}

/// Who may do what in which workspace: users and workspaces many-to-many,
/// one [`Role`] per (user, workspace) pair, each workspace in one
/// [`Region`].
///
/// Every workspace has at least one administrator from its creation on:
/// [`add_workspace`](Self::add_workspace) names the first, and revoking or
/// demoting the last one is [`AccessError::LastAdministrator`].
/// [`authorize`](Self::authorize) denies by default: a user with no role in
/// the workspace may do nothing there, whatever they may do elsewhere.
///
/// ```
/// use opsdata::*;
/// use uuid::Uuid;
///
/// let prod: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let test: TenantId = "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?;
/// let alice = UserId::new(Uuid::from_u128(1))?;
/// let bob = UserId::new(Uuid::from_u128(2))?;
///
/// let mut acl = AccessControl::new();
/// acl.add_workspace(prod, "eastus".parse()?, alice)?;
/// acl.add_workspace(test, "westeurope".parse()?, bob)?;
/// acl.grant(bob, prod, Role::Reader)?; // bob: reader in prod, admin in test
///
/// assert!(acl.authorize(bob, prod, Action::ReadData).is_ok());
/// assert!(acl.authorize(bob, prod, Action::ImportSolution).is_err());
/// assert!(acl.authorize(bob, test, Action::ImportSolution).is_ok());
/// assert!(acl.authorize(alice, test, Action::ReadData).is_err()); // no role there
/// assert!(matches!(acl.revoke(alice, prod), Err(AccessError::LastAdministrator { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    workspaces: BTreeMap<TenantId, Workspace>,
    /// Each user's workspaces (the reverse of `members`).
    users: BTreeMap<UserId, BTreeSet<TenantId>>,
}

impl AccessControl {
    /// No workspaces, no users.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a workspace in `region` with `administrator` as its first
    /// administrator.
    ///
    /// # Errors
    ///
    /// [`AccessError::WorkspaceExists`] if it exists (its region does not
    /// change).
    pub fn add_workspace(
        &mut self,
        workspace: TenantId,
        region: Region,
        administrator: UserId,
    ) -> Result<(), AccessError> {
        if let Some(w) = self.workspaces.get(&workspace) {
            return Err(AccessError::WorkspaceExists {
                workspace,
                region: w.region.clone(),
            });
        }
        let mut members = BTreeMap::new();
        members.insert(administrator, Role::Administrator);
        self.workspaces.insert(
            workspace,
            Workspace {
                region,
                members,
                administrators: 1,
            },
        );
        self.users
            .entry(administrator)
            .or_default()
            .insert(workspace);
        Ok(())
    }

    /// Removes a workspace and every role in it (closing it). Returns its
    /// region.
    ///
    /// # Errors
    ///
    /// [`AccessError::UnknownWorkspace`].
    pub fn remove_workspace(&mut self, workspace: TenantId) -> Result<Region, AccessError> {
        let w = self
            .workspaces
            .remove(&workspace)
            .ok_or(AccessError::UnknownWorkspace { workspace })?;
        for user in w.members.keys() {
            if let Some(set) = self.users.get_mut(user) {
                set.remove(&workspace);
                if set.is_empty() {
                    self.users.remove(user);
                }
            }
        }
        Ok(w.region)
    }

    /// Gives `user` the role `role` in `workspace`, replacing any role they
    /// had there. Returns the role replaced.
    ///
    /// # Errors
    ///
    /// [`AccessError::UnknownWorkspace`]; [`AccessError::LastAdministrator`]
    /// when this would demote the workspace's last administrator.
    pub fn grant(
        &mut self,
        user: UserId,
        workspace: TenantId,
        role: Role,
    ) -> Result<Option<Role>, AccessError> {
        let w = self
            .workspaces
            .get_mut(&workspace)
            .ok_or(AccessError::UnknownWorkspace { workspace })?;
        let previous = w.members.get(&user).copied();
        if previous == Some(Role::Administrator)
            && role != Role::Administrator
            && w.administrators == 1
        {
            return Err(AccessError::LastAdministrator { user, workspace });
        }
        w.members.insert(user, role);
        if previous == Some(Role::Administrator) {
            w.administrators -= 1;
        }
        if role == Role::Administrator {
            w.administrators += 1;
        }
        self.users.entry(user).or_default().insert(workspace);
        Ok(previous)
    }

    /// Takes `user`'s role in `workspace` away. Returns it.
    ///
    /// # Errors
    ///
    /// [`AccessError::UnknownWorkspace`]; [`AccessError::NoGrant`] if the
    /// user has no role there; [`AccessError::LastAdministrator`] if they
    /// are its last administrator.
    pub fn revoke(&mut self, user: UserId, workspace: TenantId) -> Result<Role, AccessError> {
        let w = self
            .workspaces
            .get_mut(&workspace)
            .ok_or(AccessError::UnknownWorkspace { workspace })?;
        let role = *w
            .members
            .get(&user)
            .ok_or(AccessError::NoGrant { user, workspace })?;
        if role == Role::Administrator {
            if w.administrators == 1 {
                return Err(AccessError::LastAdministrator { user, workspace });
            }
            w.administrators -= 1;
        }
        w.members.remove(&user);
        if let Some(set) = self.users.get_mut(&user) {
            set.remove(&workspace);
            if set.is_empty() {
                self.users.remove(&user);
            }
        }
        Ok(role)
    }

    /// Whether `user` may take `action` in `workspace`: only if they have a
    /// role there that [`Role::permits`] it.
    ///
    /// # Errors
    ///
    /// [`Denied`] otherwise, with the user's role there if any.
    pub fn authorize(
        &self,
        user: UserId,
        workspace: TenantId,
        action: Action,
    ) -> Result<(), Denied> {
        let role = self.role(user, workspace);
        match role {
            Some(r) if r.permits(action) => Ok(()),
            _ => Err(Denied {
                user,
                workspace,
                action,
                role,
            }),
        }
    }

    /// `user`'s role in `workspace`, if any.
    #[must_use]
    pub fn role(&self, user: UserId, workspace: TenantId) -> Option<Role> {
        self.workspaces
            .get(&workspace)
            .and_then(|w| w.members.get(&user).copied())
    }

    /// The workspace's region, or `None` for an unknown workspace.
    #[must_use]
    pub fn region(&self, workspace: TenantId) -> Option<&Region> {
        self.workspaces.get(&workspace).map(|w| &w.region)
    }

    /// The workspaces `user` has a role in, with the role, in id order.
    pub fn workspaces_of(&self, user: UserId) -> impl Iterator<Item = (TenantId, Role)> + '_ {
        self.users
            .get(&user)
            .into_iter()
            .flatten()
            .filter_map(move |&ws| self.role(user, ws).map(|r| (ws, r)))
    }

    /// The users with a role in `workspace`, with the role, in id order.
    pub fn members(&self, workspace: TenantId) -> impl Iterator<Item = (UserId, Role)> + '_ {
        self.workspaces
            .get(&workspace)
            .into_iter()
            .flat_map(|w| w.members.iter().map(|(&u, &r)| (u, r)))
    }

    /// Every workspace with its region, in id order.
    pub fn workspaces(&self) -> impl Iterator<Item = (TenantId, &Region)> {
        self.workspaces.iter().map(|(&id, w)| (id, &w.region))
    }
}

/// Compares two 16-byte values in time that does not depend on where they
/// differ.
fn ct_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// A portal session's id: 128 random bits from the caller's [`Entropy`],
/// written in cookies as 22 characters of unpadded base64url.
///
/// It is a bearer secret: `Debug` prints `SessionId(..)`, and equality is
/// compared in constant time; its bytes are wiped on drop. The value
/// leaves the type only through
/// [`set_cookie`](Self::set_cookie) and [`cookie_value`](Self::cookie_value).
///
/// The cookie is `__Host-opsdata-session=<id>; Path=/; Secure; HttpOnly;
/// SameSite=Strict`: no `Domain` and the `__Host-` prefix keep it to the
/// portal's own host; `Secure` sends it over TLS only; `HttpOnly` hides it
/// from scripts; `SameSite=Strict` keeps other sites' requests from
/// carrying it; no `Max-Age`, so it ends with the browser session, and the
/// [`SessionStore`] ends it after the idle timeout whatever the browser
/// keeps.
///
/// ```
/// use opsdata::{DeterministicEntropy, SessionId};
/// let id = SessionId::generate(&mut DeterministicEntropy::from_u64(1))?;
/// assert_eq!(format!("{id:?}"), "SessionId(..)");
/// let header = id.set_cookie();
/// assert!(header.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"));
/// let back = SessionId::from_cookie_header(&format!("theme=dark; {}", &header[..45]))?;
/// assert_eq!(back, Some(id));
/// # Ok::<(), opsdata::AccessError>(())
/// ```
#[derive(Clone)]
pub struct SessionId(Zeroizing<[u8; 16]>);

impl SessionId {
    /// The cookie's name.
    pub const COOKIE_NAME: &'static str = "__Host-opsdata-session";
    /// The cookie's attributes, after its value.
    pub const COOKIE_ATTRIBUTES: &'static str = "Path=/; Secure; HttpOnly; SameSite=Strict";

    /// A new id of 128 bits from `entropy`.
    ///
    /// # Errors
    ///
    /// [`AccessError::Entropy`] if the source fails.
    pub fn generate(entropy: &mut (impl Entropy + ?Sized)) -> Result<Self, AccessError> {
        // Wiped on drop, as the id it becomes.
        let mut b = Zeroizing::new([0u8; 16]);
        entropy.fill(&mut b[..])?;
        Ok(SessionId(b))
    }

    /// The id as written in the cookie: 22 characters of unpadded base64url.
    #[must_use]
    pub fn cookie_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0[..])
    }

    /// The `Set-Cookie` header value that gives the browser this session.
    #[must_use]
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; {}",
            Self::COOKIE_NAME,
            self.cookie_value(),
            Self::COOKIE_ATTRIBUTES
        )
    }

    /// The `Set-Cookie` header value that removes the session cookie (on
    /// sign-out).
    #[must_use]
    pub fn clear_cookie() -> String {
        format!(
            "{}=; Max-Age=0; {}",
            Self::COOKIE_NAME,
            Self::COOKIE_ATTRIBUTES
        )
    }

    /// The id written as `value` (as [`cookie_value`](Self::cookie_value)
    /// writes it).
    ///
    /// # Errors
    ///
    /// [`AccessError::MalformedSession`] unless `value` is exactly the 22
    /// characters of unpadded base64url of 16 bytes.
    pub fn from_cookie_value(value: &str) -> Result<Self, AccessError> {
        if value.len() != 22 {
            return Err(AccessError::MalformedSession);
        }
        let mut b = Zeroizing::new([0u8; 16]);
        match URL_SAFE_NO_PAD.decode_slice(value, &mut b[..]) {
            Ok(16) => Ok(SessionId(b)),
            _ => Err(AccessError::MalformedSession),
        }
    }

    /// The session id in a request's `Cookie` header (`name=value` pairs
    /// separated by `;`), or `None` if it has no session cookie.
    ///
    /// # Errors
    ///
    /// [`AccessError::MalformedSession`] if the session cookie's value is
    /// malformed or the cookie appears more than once.
    pub fn from_cookie_header(header: &str) -> Result<Option<Self>, AccessError> {
        let mut found = None;
        for pair in header.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() == Self::COOKIE_NAME {
                if found.is_some() {
                    return Err(AccessError::MalformedSession);
                }
                found = Some(Self::from_cookie_value(value.trim())?);
            }
        }
        Ok(found)
    }

    /// Constant-time equality.
    #[must_use]
    pub fn ct_eq(&self, other: &SessionId) -> bool {
        ct_eq(&self.0, &other.0)
    }

    /// SHA-256 of the id, split into the store's lookup key and the
    /// verifier compared in constant time.
    fn digest(&self) -> ([u8; 16], [u8; 16]) {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0[..]);
        let mut lookup = [0u8; 16];
        let mut verifier = [0u8; 16];
        lookup.copy_from_slice(&d.as_ref()[..16]);
        verifier.copy_from_slice(&d.as_ref()[16..]);
        (lookup, verifier)
    }
}

/// Constant time, through [`SessionId::ct_eq`].
impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(..)")
    }
}

/// The [`SessionStore`]'s settings, each validated when set.
///
/// Defaults: a session ends after 30 minutes without activity; at most
/// 100 000 live sessions are held.
///
/// ```
/// use chrono::Duration;
/// use opsdata::SessionPolicy;
/// let p = SessionPolicy::default().with_idle_timeout(Duration::minutes(15))?;
/// assert_eq!(p.idle_timeout(), Duration::minutes(15));
/// assert!(SessionPolicy::default().with_idle_timeout(Duration::zero()).is_err());
/// # Ok::<(), opsdata::AccessError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    idle_timeout: Duration,
    max_sessions: usize,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: Duration::minutes(30),
            max_sessions: 100_000,
        }
    }
}

impl SessionPolicy {
    /// How long a session lives without activity. A session last active
    /// at `a` is live while `now < a + idle_timeout` and has expired from
    /// `a + idle_timeout` on (the boundary itself is expired). Default
    /// 30 minutes.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The most live sessions held. Default 100 000.
    #[must_use]
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    ///
    /// # Errors
    ///
    /// [`AccessError::Setting`] unless `0 < timeout <= 24 h`.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Result<Self, AccessError> {
        if timeout <= Duration::zero() || timeout > Duration::hours(24) {
            return Err(AccessError::Setting {
                setting: "idle_timeout",
                requirement: "positive and at most 24 hours",
            });
        }
        self.idle_timeout = timeout;
        Ok(self)
    }

    /// Sets [`max_sessions`](Self::max_sessions).
    ///
    /// # Errors
    ///
    /// [`AccessError::Setting`] for zero.
    pub fn with_max_sessions(mut self, max: usize) -> Result<Self, AccessError> {
        if max == 0 {
            return Err(AccessError::Setting {
                setting: "max_sessions",
                requirement: "positive",
            });
        }
        self.max_sessions = max;
        Ok(self)
    }
}

#[derive(Debug, Clone)]
struct Session {
    user: UserId,
    verifier: [u8; 16],
    last_active: DateTime<Utc>,
}

/// Live portal sessions, each a user's, ended after the idle timeout.
///
/// Sessions are held by the SHA-256 of their id, never the id itself: the
/// first half of the digest is the lookup key, the second half is compared
/// in constant time. A lookup's timing can tell an attacker at most about
/// digests of ids they do not know, which does not help them guess one.
///
/// **Memory and work**: at most [`SessionPolicy::max_sessions`] sessions.
/// Every call evicts the expired sessions it meets: the one looked up, and
/// in [`create`](Self::create) all expired ones (each session is evicted
/// once, so the work is amortized O(log n) a call). At the cap with none
/// expired, `create` refuses ([`AccessError::TooManySessions`]) rather than
/// end a live session. Hosts may also arm a timer for
/// [`poll_timeout`](Self::poll_timeout) and call
/// [`handle_timeout`](Self::handle_timeout), which evicts what has
/// expired. A `now` earlier than one already seen is taken as the latest
/// seen.
///
/// ```
/// use chrono::{Duration, TimeZone, Utc};
/// use opsdata::*;
/// use uuid::Uuid;
///
/// let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
/// let alice = UserId::new(Uuid::from_u128(1))?;
/// let prod: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?;
/// let mut acl = AccessControl::new();
/// acl.add_workspace(prod, "eastus".parse()?, alice)?;
///
/// // On each request: the session, then the action.
/// fn allowed(
///     sessions: &mut SessionStore,
///     acl: &AccessControl,
///     now: chrono::DateTime<Utc>,
///     cookie_header: &str,
///     workspace: TenantId,
///     action: Action,
/// ) -> Result<UserId, AccessError> {
///     let id = SessionId::from_cookie_header(cookie_header)?.ok_or(AccessError::UnknownSession)?;
///     let user = sessions.touch(now, &id)?;
///     acl.authorize(user, workspace, action)?; // Denied converts into AccessError
///     Ok(user)
/// }
///
/// let mut sessions = SessionStore::new(SessionPolicy::default());
/// let id = sessions.create(t0, alice, &mut SystemEntropy::new())?;
/// let set_cookie = id.set_cookie(); // send as the Set-Cookie header
/// assert!(set_cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"));
/// let cookie = format!("{}={}", SessionId::COOKIE_NAME, id.cookie_value()); // what comes back
///
/// let t1 = t0 + Duration::minutes(29);
/// assert_eq!(allowed(&mut sessions, &acl, t1, &cookie, prod, Action::ImportSolution)?, alice);
///
/// // Idle for exactly the 30-minute timeout: expired, and ended.
/// let t2 = t1 + Duration::minutes(30);
/// let r = allowed(&mut sessions, &acl, t2, &cookie, prod, Action::ReadData);
/// assert!(matches!(r, Err(AccessError::SessionExpired { .. })));
/// let r = allowed(&mut sessions, &acl, t2, &cookie, prod, Action::ReadData);
/// assert!(matches!(r, Err(AccessError::UnknownSession)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SessionStore {
    policy: SessionPolicy,
    latest: Option<DateTime<Utc>>,
    sessions: BTreeMap<[u8; 16], Session>,
    /// The same sessions, least recently active first.
    by_activity: BTreeSet<(DateTime<Utc>, [u8; 16])>,
}

impl SessionStore {
    /// An empty store.
    #[must_use]
    pub fn new(policy: SessionPolicy) -> Self {
        SessionStore {
            policy,
            latest: None,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
        }
    }

    /// Its settings.
    #[must_use]
    pub fn policy(&self) -> &SessionPolicy {
        &self.policy
    }

    /// `now`, or the latest time seen if that is later; not recorded.
    fn seen(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.latest.map_or(now, |l| l.max(now))
    }

    /// [`seen`](Self::seen), recorded: only for a call that succeeds (a
    /// refused call records no time, ARCHITECTURE.md).
    fn clock(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = self.seen(now);
        self.latest = Some(now);
        now
    }

    fn expires(&self, last_active: DateTime<Utc>) -> DateTime<Utc> {
        last_active
            .checked_add_signed(self.policy.idle_timeout)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn remove(&mut self, lookup: &[u8; 16]) -> Option<Session> {
        let s = self.sessions.remove(lookup)?;
        self.by_activity.remove(&(s.last_active, *lookup));
        Some(s)
    }

    /// Starts a session for `user` at `now`, with an id from `entropy`.
    /// Evicts every expired session first.
    ///
    /// # Errors
    ///
    /// [`AccessError::Entropy`] if the source fails;
    /// [`AccessError::TooManySessions`] if the store is full of live
    /// sessions. Nothing changes on error: no session is evicted and `now`
    /// is not recorded as seen.
    pub fn create(
        &mut self,
        now: DateTime<Utc>,
        user: UserId,
        entropy: &mut (impl Entropy + ?Sized),
    ) -> Result<SessionId, AccessError> {
        // Every check before any change: a refused create evicts nothing
        // and records no time (ARCHITECTURE.md).
        let now = self.seen(now);
        let none_expired = self
            .by_activity
            .first()
            .is_none_or(|&(last_active, _)| now < self.expires(last_active));
        if self.sessions.len() >= self.policy.max_sessions && none_expired {
            return Err(AccessError::TooManySessions {
                max: self.policy.max_sessions,
            });
        }
        // A repeated 128-bit lookup key means a broken entropy source; draw
        // again a few times rather than replace a session held.
        for _ in 0..4 {
            let id = SessionId::generate(entropy)?;
            let (lookup, verifier) = id.digest();
            if self.sessions.contains_key(&lookup) {
                continue;
            }
            self.evict_expired(now);
            self.sessions.insert(
                lookup,
                Session {
                    user,
                    verifier,
                    last_active: now,
                },
            );
            self.by_activity.insert((now, lookup));
            return Ok(id);
        }
        Err(AccessError::Entropy(EntropyUnavailable))
    }

    /// The live session `id`'s lookup key and user, ending it if expired.
    fn live(
        &mut self,
        now: DateTime<Utc>,
        id: &SessionId,
    ) -> Result<([u8; 16], UserId), AccessError> {
        let (lookup, verifier) = id.digest();
        let s = match self.sessions.get(&lookup) {
            Some(s) if ct_eq(&s.verifier, &verifier) => s,
            _ => return Err(AccessError::UnknownSession),
        };
        let expired_at = self.expires(s.last_active);
        if now >= expired_at {
            let last_active = s.last_active;
            self.remove(&lookup);
            return Err(AccessError::SessionExpired {
                last_active,
                expired_at,
            });
        }
        Ok((lookup, s.user))
    }

    /// The user of live session `id` at `now`, marking it active at `now`
    /// (so it lives another idle timeout). Call it on each request.
    ///
    /// # Errors
    ///
    /// [`AccessError::UnknownSession`] if no session has this id;
    /// [`AccessError::SessionExpired`] if it has expired (it is ended, so a
    /// second call says `UnknownSession`: the one change an error makes).
    /// `now` is not recorded as seen on error.
    pub fn touch(&mut self, now: DateTime<Utc>, id: &SessionId) -> Result<UserId, AccessError> {
        let now = self.seen(now);
        let (lookup, user) = self.live(now, id)?;
        self.latest = Some(now);
        // `live` found it.
        let s = self.sessions.get_mut(&lookup).expect("live session");
        let before = s.last_active;
        s.last_active = now;
        self.by_activity.remove(&(before, lookup));
        self.by_activity.insert((now, lookup));
        Ok(user)
    }

    /// The user of live session `id` at `now`, without marking it active
    /// (for background requests that should not keep a session alive).
    ///
    /// # Errors
    ///
    /// As [`touch`](Self::touch).
    pub fn check(&mut self, now: DateTime<Utc>, id: &SessionId) -> Result<UserId, AccessError> {
        let now = self.seen(now);
        let (_, user) = self.live(now, id)?;
        self.latest = Some(now);
        Ok(user)
    }

    /// Ends session `id` (sign-out). Returns whether it was held.
    pub fn end(&mut self, id: &SessionId) -> bool {
        let (lookup, verifier) = id.digest();
        match self.sessions.get(&lookup) {
            Some(s) if ct_eq(&s.verifier, &verifier) => self.remove(&lookup).is_some(),
            _ => false,
        }
    }

    /// Ends every session of `user` (after revoking their roles, say).
    /// Returns how many. Work is linear in the sessions held.
    pub fn end_user(&mut self, user: UserId) -> usize {
        let gone: Vec<[u8; 16]> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.remove(k);
        }
        gone.len()
    }

    /// Evicts every session expired at `now`. Returns how many.
    pub fn evict_expired(&mut self, now: DateTime<Utc>) -> usize {
        let now = self.clock(now);
        let mut n = 0;
        while let Some(&(last_active, lookup)) = self.by_activity.first() {
            if now < self.expires(last_active) {
                break;
            }
            self.remove(&lookup);
            n += 1;
        }
        n
    }

    /// When the least recently active session expires, or `None` if none
    /// is held.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        self.by_activity
            .first()
            .map(|&(last_active, _)| self.expires(last_active))
    }

    /// Evicts what has expired at `now`; early or repeated calls do
    /// nothing more.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let _ = self.evict_expired(now);
    }

    /// Live (or expired but not yet evicted) sessions held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether none is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares_every_byte() {
        let a = [7u8; 16];
        for i in 0..16 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b));
        }
        assert!(ct_eq(&a, &a));
    }

    #[test]
    fn cookie_value_round_trips_and_is_strict() {
        let id = SessionId(Zeroizing::new([0xff; 16]));
        let v = id.cookie_value();
        assert_eq!(v.len(), 22);
        assert_eq!(SessionId::from_cookie_value(&v).unwrap(), id);
        // Non-canonical trailing bits, padding, standard alphabet: refused.
        let mut bad = v.clone();
        bad.replace_range(21.., "_");
        assert!(SessionId::from_cookie_value(&bad).is_err());
        assert!(SessionId::from_cookie_value(&format!("{v}==")).is_err());
        assert!(SessionId::from_cookie_value(&v.replace('_', "/")).is_err());
    }
}
