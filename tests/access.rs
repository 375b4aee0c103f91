//! Workspace access and portal sessions: the role → action table, default
//! deny over random user / workspace graphs checked against a reference
//! map, the last-administrator rule, regions, and sessions' ids, cookies,
//! cap and idle expiry at the exact boundary.
//!
//! `PROPTEST_CASES` overrides the number of cases.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    AccessControl, AccessError, Action, Denied, DeterministicEntropy, Entropy, EntropyUnavailable,
    Region, Role, SessionId, SessionPolicy, SessionStore, TenantId, UserId,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn user(n: u128) -> UserId {
    UserId::new(Uuid::from_u128(n)).unwrap()
}

fn ws(n: u128) -> TenantId {
    TenantId::new(Uuid::from_u128(0x1000 + n)).unwrap()
}

fn region(s: &str) -> Region {
    s.parse().unwrap()
}

/// The table, written out independently of `Role::permits`.
fn table(role: Role, action: Action) -> bool {
    const T: [(Role, [bool; 5]); 3] = [
        // ReadData, Export, ImportSolution, ManageKeys, ManageUsers
        (Role::Administrator, [true, true, true, true, true]),
        (Role::Contributor, [true, true, false, false, false]),
        (Role::Reader, [true, false, false, false, false]),
    ];
    let a = Action::ALL.iter().position(|&x| x == action).unwrap();
    T.iter().find(|(r, _)| *r == role).unwrap().1[a]
}

// ------------------------------------------------------------ the table

#[test]
fn role_action_table_is_exactly_as_documented() {
    let mut granted = 0;
    for role in Role::ALL {
        for action in Action::ALL {
            assert_eq!(
                role.permits(action),
                table(role, action),
                "{role:?} {action:?}"
            );
            granted += usize::from(role.permits(action));
        }
    }
    assert_eq!(granted, 5 + 2 + 1);
    // Only administrators import solutions.
    for role in Role::ALL {
        assert_eq!(
            role.permits(Action::ImportSolution),
            role == Role::Administrator
        );
    }
}

#[test]
fn every_role_action_pair_through_authorize() {
    let admin = user(1);
    let mut acl = AccessControl::new();
    acl.add_workspace(ws(1), region("eastus"), admin).unwrap();
    acl.grant(user(2), ws(1), Role::Contributor).unwrap();
    acl.grant(user(3), ws(1), Role::Reader).unwrap();
    let stranger = user(4);
    for (u, role) in [
        (admin, Some(Role::Administrator)),
        (user(2), Some(Role::Contributor)),
        (user(3), Some(Role::Reader)),
        (stranger, None),
    ] {
        for action in Action::ALL {
            let got = acl.authorize(u, ws(1), action);
            if role.is_some_and(|r| table(r, action)) {
                assert_eq!(got, Ok(()));
            } else {
                let d = got.unwrap_err();
                assert_eq!(
                    (d.user, d.workspace, d.action, d.role),
                    (u, ws(1), action, role)
                );
                let e: AccessError = d.clone().into();
                assert_eq!(e, AccessError::Denied(d));
            }
        }
    }
}

#[test]
fn a_role_in_one_workspace_grants_nothing_in_another() {
    let mut acl = AccessControl::new();
    acl.add_workspace(ws(1), region("eastus"), user(1)).unwrap();
    acl.add_workspace(ws(2), region("eastus"), user(2)).unwrap();
    for action in Action::ALL {
        assert!(acl.authorize(user(1), ws(2), action).is_err());
        assert!(acl.authorize(user(2), ws(1), action).is_err());
        // An unknown workspace: denied, no role.
        let d = acl.authorize(user(1), ws(9), action).unwrap_err();
        assert_eq!(d.role, None);
    }
    let msg = acl
        .authorize(user(1), ws(2), Action::Export)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Export") && msg.contains("no role there"),
        "{msg}"
    );
}

// --------------------------------------------------- membership, regions

#[test]
fn users_and_workspaces_are_many_to_many() {
    let mut acl = AccessControl::new();
    acl.add_workspace(ws(1), region("eastus"), user(1)).unwrap();
    acl.add_workspace(ws(2), region("westeurope"), user(1))
        .unwrap();
    acl.grant(user(2), ws(1), Role::Reader).unwrap();
    acl.grant(user(2), ws(2), Role::Contributor).unwrap();
    assert_eq!(
        acl.workspaces_of(user(2)).collect::<Vec<_>>(),
        [(ws(1), Role::Reader), (ws(2), Role::Contributor)]
    );
    assert_eq!(
        acl.members(ws(1)).collect::<Vec<_>>(),
        [(user(1), Role::Administrator), (user(2), Role::Reader)]
    );
    assert_eq!(acl.region(ws(2)), Some(&region("westeurope")));
    // A workspace stays in its region.
    assert_eq!(
        acl.add_workspace(ws(2), region("eastus"), user(3)),
        Err(AccessError::WorkspaceExists {
            workspace: ws(2),
            region: region("westeurope")
        })
    );
    assert_eq!(
        acl.grant(user(2), ws(1), Role::Contributor),
        Ok(Some(Role::Reader))
    );
    assert_eq!(acl.revoke(user(2), ws(1)), Ok(Role::Contributor));
    assert_eq!(
        acl.revoke(user(2), ws(1)),
        Err(AccessError::NoGrant {
            user: user(2),
            workspace: ws(1)
        })
    );
    assert_eq!(acl.remove_workspace(ws(2)), Ok(region("westeurope")));
    assert_eq!(acl.workspaces_of(user(2)).count(), 0);
    assert!(acl.authorize(user(1), ws(2), Action::ReadData).is_err());
    assert_eq!(
        acl.grant(user(2), ws(2), Role::Reader),
        Err(AccessError::UnknownWorkspace { workspace: ws(2) })
    );
}

#[test]
fn last_administrator_cannot_be_removed_or_demoted() {
    let mut acl = AccessControl::new();
    acl.add_workspace(ws(1), region("eastus"), user(1)).unwrap();
    let last = AccessError::LastAdministrator {
        user: user(1),
        workspace: ws(1),
    };
    assert_eq!(acl.revoke(user(1), ws(1)), Err(last.clone()));
    assert_eq!(acl.grant(user(1), ws(1), Role::Reader), Err(last.clone()));
    assert_eq!(acl.role(user(1), ws(1)), Some(Role::Administrator));
    // With a second administrator, the first may go.
    acl.grant(user(2), ws(1), Role::Administrator).unwrap();
    assert_eq!(
        acl.grant(user(1), ws(1), Role::Reader),
        Ok(Some(Role::Administrator))
    );
    assert_eq!(
        acl.revoke(user(2), ws(1)),
        Err(AccessError::LastAdministrator {
            user: user(2),
            workspace: ws(1)
        })
    );
    // Re-granting administrator to an administrator changes nothing.
    assert_eq!(
        acl.grant(user(2), ws(1), Role::Administrator),
        Ok(Some(Role::Administrator))
    );
    assert!(acl.revoke(user(2), ws(1)).is_err());
}

#[test]
fn region_names() {
    for ok in ["eastus", "westeurope", "eastus2", "a", &"a".repeat(32)] {
        assert_eq!(Region::new(ok).unwrap().as_str(), ok);
        assert_eq!(ok.parse::<Region>().unwrap().to_string(), ok);
    }
    for bad in [
        "",
        "EastUS",
        "east us",
        "east-us",
        "2east",
        "eastus\n",
        "éast",
        &"a".repeat(33),
    ] {
        assert!(
            matches!(Region::new(bad), Err(AccessError::Region { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(UserId::new(Uuid::nil()), Err(AccessError::NilUser));
}

// ------------------------------------------------------------- sessions

#[test]
fn session_ids_are_128_bits_from_the_callers_entropy() {
    let mut e = DeterministicEntropy::from_u64(3);
    let id = SessionId::generate(&mut e).unwrap();
    let mut expected = [0u8; 16];
    DeterministicEntropy::from_u64(3)
        .fill(&mut expected)
        .unwrap();
    let v = id.cookie_value();
    assert_eq!(v.len(), 22);
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &v).unwrap(),
        expected
    );
    let next = SessionId::generate(&mut e).unwrap();
    assert_ne!(id, next);
    // Redacted Debug: no byte of the value.
    assert_eq!(format!("{id:?}"), "SessionId(..)");
    assert!(!format!("{id:?} {:?}", Some(&id)).contains(&v[..8]));
}

#[test]
fn cookie_attributes() {
    let id = SessionId::generate(&mut DeterministicEntropy::from_u64(1)).unwrap();
    assert_eq!(
        id.set_cookie(),
        format!(
            "__Host-opsdata-session={}; Path=/; Secure; HttpOnly; SameSite=Strict",
            id.cookie_value()
        )
    );
    assert_eq!(
        SessionId::clear_cookie(),
        "__Host-opsdata-session=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"
    );
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(SessionId::COOKIE_ATTRIBUTES.split("; ").any(|a| a == attr));
    }
}

#[test]
fn cookie_header_parsing() {
    let id = SessionId::generate(&mut DeterministicEntropy::from_u64(1)).unwrap();
    let pair = format!("{}={}", SessionId::COOKIE_NAME, id.cookie_value());
    assert_eq!(SessionId::from_cookie_header(&pair), Ok(Some(id.clone())));
    assert_eq!(
        SessionId::from_cookie_header(&format!("a=b;  {pair} ; c=d")),
        Ok(Some(id.clone()))
    );
    assert_eq!(SessionId::from_cookie_header("a=b; c"), Ok(None));
    assert_eq!(SessionId::from_cookie_header(""), Ok(None));
    // Another cookie whose name only contains ours is not ours.
    assert_eq!(SessionId::from_cookie_header(&format!("x{pair}")), Ok(None));
    assert_eq!(
        SessionId::from_cookie_header(&format!("{pair}; {pair}")),
        Err(AccessError::MalformedSession)
    );
    for bad in [
        "",
        "abc",
        "AAAAAAAAAAAAAAAAAAAAAA==",
        "AAAAAAAAAAAAAAAAAAAA+/",
    ] {
        assert_eq!(
            SessionId::from_cookie_value(bad),
            Err(AccessError::MalformedSession),
            "{bad:?}"
        );
    }
    // The error never repeats the value.
    let e = SessionId::from_cookie_value("secret-secret-secret-s!").unwrap_err();
    assert!(!e.to_string().contains("secret"));
}

#[test]
fn a_near_miss_id_is_unknown() {
    let mut store = SessionStore::new(SessionPolicy::default());
    let id = store
        .create(t0(), user(1), &mut DeterministicEntropy::from_u64(5))
        .unwrap();
    let mut v = id.cookie_value().into_bytes();
    v[0] = if v[0] == b'A' { b'B' } else { b'A' };
    let near = SessionId::from_cookie_value(std::str::from_utf8(&v).unwrap()).unwrap();
    assert_eq!(store.touch(t0(), &near), Err(AccessError::UnknownSession));
    assert!(!store.end(&near));
    assert_eq!(store.touch(t0(), &id), Ok(user(1)));
    assert!(store.end(&id));
    assert_eq!(store.touch(t0(), &id), Err(AccessError::UnknownSession));
}

#[derive(Debug)]
struct Broken;
impl Entropy for Broken {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyUnavailable> {
        Err(EntropyUnavailable)
    }
}

/// Always the same bytes: a broken source.
#[derive(Debug)]
struct Stuck;
impl Entropy for Stuck {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyUnavailable> {
        dest.fill(7);
        Ok(())
    }
}

#[test]
fn failing_or_stuck_entropy_creates_nothing() {
    let mut store = SessionStore::new(SessionPolicy::default());
    assert_eq!(
        store.create(t0(), user(1), &mut Broken),
        Err(AccessError::Entropy(EntropyUnavailable))
    );
    assert!(store.is_empty());
    let first = store.create(t0(), user(1), &mut Stuck).unwrap();
    // The same id again would replace a live session: refused.
    assert!(store.create(t0(), user(2), &mut Stuck).is_err());
    assert_eq!(store.len(), 1);
    assert_eq!(store.check(t0(), &first), Ok(user(1)));
}

#[test]
fn session_policy_validation() {
    let p = SessionPolicy::default();
    assert_eq!(p.idle_timeout(), Duration::minutes(30));
    assert_eq!(p.max_sessions(), 100_000);
    for bad in [Duration::zero(), -Duration::minutes(1), Duration::hours(25)] {
        assert!(matches!(
            SessionPolicy::default().with_idle_timeout(bad),
            Err(AccessError::Setting {
                setting: "idle_timeout",
                ..
            })
        ));
    }
    assert!(SessionPolicy::default().with_max_sessions(0).is_err());
}

#[test]
fn the_cap_refuses_live_sessions_and_evicts_expired_ones() {
    let policy = SessionPolicy::default().with_max_sessions(2).unwrap();
    let mut store = SessionStore::new(policy);
    let mut e = DeterministicEntropy::from_u64(9);
    let a = store.create(t0(), user(1), &mut e).unwrap();
    let b = store
        .create(t0() + Duration::minutes(10), user(2), &mut e)
        .unwrap();
    assert_eq!(
        store.create(t0() + Duration::minutes(20), user(3), &mut e),
        Err(AccessError::TooManySessions { max: 2 })
    );
    // `a` expires at 30 minutes: then there is room.
    assert_eq!(store.poll_timeout(), Some(t0() + Duration::minutes(30)));
    let c = store
        .create(t0() + Duration::minutes(30), user(3), &mut e)
        .unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.touch(t0() + Duration::minutes(30), &a),
        Err(AccessError::UnknownSession)
    );
    assert_eq!(store.touch(t0() + Duration::minutes(31), &b), Ok(user(2)));
    assert_eq!(store.end_user(user(2)), 1);
    assert_eq!(
        store.check(t0() + Duration::minutes(31), &b),
        Err(AccessError::UnknownSession)
    );
    store.handle_timeout(t0() + Duration::hours(2));
    assert!(store.is_empty());
    assert_eq!(store.poll_timeout(), None);
    assert_eq!(
        store.check(t0() + Duration::hours(2), &c),
        Err(AccessError::UnknownSession)
    );
}

#[test]
fn check_does_not_extend_touch_does() {
    let mut store = SessionStore::new(SessionPolicy::default());
    let id = store
        .create(t0(), user(1), &mut DeterministicEntropy::from_u64(2))
        .unwrap();
    let m = |n| t0() + Duration::minutes(n);
    assert_eq!(store.check(m(29), &id), Ok(user(1)));
    assert!(matches!(
        store.check(m(30), &id),
        Err(AccessError::SessionExpired { .. })
    ));
    let id = store
        .create(m(30), user(1), &mut DeterministicEntropy::from_u64(3))
        .unwrap();
    assert_eq!(store.touch(m(59), &id), Ok(user(1)));
    assert_eq!(store.check(m(88), &id), Ok(user(1)));
    // An earlier `now` is the latest seen: still 88 minutes.
    assert_eq!(store.check(m(0), &id), Ok(user(1)));
    assert_eq!(
        store.check(m(89), &id),
        Err(AccessError::SessionExpired {
            last_active: m(59),
            expired_at: m(89)
        })
    );
}

// ------------------------------------------------------------ properties

fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES, when set, overrides the count (for longer runs).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A held session in the reference: last active, user.
type Held = (DateTime<Utc>, UserId);

const USERS: u128 = 6;
const WORKSPACES: u128 = 4;

#[derive(Debug, Clone)]
enum AclOp {
    Add { ws: u128, admin: u128 },
    Grant { user: u128, ws: u128, role: Role },
    Revoke { user: u128, ws: u128 },
    Remove { ws: u128 },
}

fn acl_op() -> impl Strategy<Value = AclOp> {
    let role = proptest::sample::select(Role::ALL.to_vec());
    prop_oneof![
        1 => (1..=WORKSPACES, 1..=USERS).prop_map(|(ws, admin)| AclOp::Add { ws, admin }),
        5 => (1..=USERS, 1..=WORKSPACES, role).prop_map(|(user, ws, role)| AclOp::Grant { user, ws, role }),
        3 => (1..=USERS, 1..=WORKSPACES).prop_map(|(user, ws)| AclOp::Revoke { user, ws }),
        1 => (1..=WORKSPACES).prop_map(|ws| AclOp::Remove { ws }),
    ]
}

/// The reference: workspace -> (user -> role).
type Graph = BTreeMap<u128, BTreeMap<u128, Role>>;

fn admins(g: &Graph, w: u128) -> usize {
    g[&w]
        .values()
        .filter(|&&r| r == Role::Administrator)
        .count()
}

fn apply(acl: &mut AccessControl, g: &mut Graph, op: &AclOp) -> Result<(), TestCaseError> {
    match *op {
        AclOp::Add { ws: w, admin } => {
            let got = acl.add_workspace(ws(w), region("eastus"), user(admin));
            prop_assert_eq!(got.is_ok(), !g.contains_key(&w));
            g.entry(w)
                .or_insert_with(|| BTreeMap::from([(admin, Role::Administrator)]));
        }
        AclOp::Grant {
            user: u,
            ws: w,
            role,
        } => {
            let got = acl.grant(user(u), ws(w), role);
            match g.get_mut(&w) {
                None => {
                    prop_assert_eq!(got, Err(AccessError::UnknownWorkspace { workspace: ws(w) }))
                }
                Some(m) => {
                    let before = m.get(&u).copied();
                    let demotes_last = before == Some(Role::Administrator)
                        && role != Role::Administrator
                        && m.values().filter(|&&r| r == Role::Administrator).count() == 1;
                    if demotes_last {
                        prop_assert_eq!(
                            got,
                            Err(AccessError::LastAdministrator {
                                user: user(u),
                                workspace: ws(w)
                            })
                        );
                    } else {
                        prop_assert_eq!(got, Ok(before));
                        m.insert(u, role);
                    }
                }
            }
        }
        AclOp::Revoke { user: u, ws: w } => {
            let got = acl.revoke(user(u), ws(w));
            match g.get_mut(&w) {
                None => {
                    prop_assert_eq!(got, Err(AccessError::UnknownWorkspace { workspace: ws(w) }))
                }
                Some(m) => match m.get(&u).copied() {
                    None => prop_assert_eq!(
                        got,
                        Err(AccessError::NoGrant {
                            user: user(u),
                            workspace: ws(w)
                        })
                    ),
                    Some(Role::Administrator)
                        if m.values().filter(|&&r| r == Role::Administrator).count() == 1 =>
                    {
                        prop_assert_eq!(
                            got,
                            Err(AccessError::LastAdministrator {
                                user: user(u),
                                workspace: ws(w)
                            })
                        );
                    }
                    Some(r) => {
                        prop_assert_eq!(got, Ok(r));
                        m.remove(&u);
                    }
                },
            }
        }
        AclOp::Remove { ws: w } => {
            let got = acl.remove_workspace(ws(w));
            prop_assert_eq!(got.is_ok(), g.remove(&w).is_some());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// Over random user / workspace graphs, `authorize` allows exactly the
    /// pairs the reference graph and the written-out table allow, for every
    /// user, workspace (known or not) and action; every refusal names the
    /// user's role there; every workspace keeps an administrator; and the
    /// many-to-many views agree with the graph.
    #[test]
    fn authorization_denies_every_action_not_granted(
        ops in proptest::collection::vec(acl_op(), 0..60),
    ) {
        let mut acl = AccessControl::new();
        let mut g = Graph::new();
        for op in &ops {
            apply(&mut acl, &mut g, op)?;
            for &w in g.keys() {
                prop_assert!(admins(&g, w) >= 1);
            }
        }
        for u in 1..=USERS + 1 {
            for w in 1..=WORKSPACES + 1 {
                let role = g.get(&w).and_then(|m| m.get(&u)).copied();
                prop_assert_eq!(acl.role(user(u), ws(w)), role);
                for action in Action::ALL {
                    let got = acl.authorize(user(u), ws(w), action);
                    if role.is_some_and(|r| table(r, action)) {
                        prop_assert_eq!(got, Ok(()));
                    } else {
                        let d: Denied = got.unwrap_err();
                        prop_assert_eq!((d.user, d.workspace, d.action, d.role), (user(u), ws(w), action, role));
                    }
                }
            }
            let mine: Vec<_> = acl.workspaces_of(user(u)).collect();
            let want: Vec<_> = g
                .iter()
                .filter_map(|(&w, m)| m.get(&u).map(|&r| (ws(w), r)))
                .collect();
            prop_assert_eq!(mine, want);
        }
        for (&w, m) in &g {
            let members: Vec<_> = acl.members(ws(w)).collect();
            let want: Vec<_> = m.iter().map(|(&u, &r)| (user(u), r)).collect();
            prop_assert_eq!(members, want);
        }
    }

    /// Regions: accepted exactly when 1–32 lowercase ASCII letters and
    /// digits starting with a letter.
    #[test]
    fn region_accepts_exactly_lowercase_ascii(s in "[a-z0-9A-Z _\\-é]{0,40}") {
        let b = s.as_bytes();
        let valid = (1..=32).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        prop_assert_eq!(Region::new(&s).is_ok(), valid);
    }

    /// Idle expiry at the exact boundary. A session last active at `a` is
    /// live at every `now < a + idle_timeout` (the boundary is exclusive
    /// for liveness) and expired at `a + idle_timeout` itself; each `touch`
    /// moves `a` to its `now`.
    #[test]
    fn session_idle_expiry_exactly_at_the_timeout(
        timeout_s in 1i64..=86_400,
        extra_ns in 0i64..1_000_000_000,
        touches in proptest::collection::vec(0i64..=1_000_000, 0..8),
        seed in any::<u64>(),
    ) {
        let timeout = Duration::seconds(timeout_s) + Duration::nanoseconds(extra_ns);
        prop_assume!(timeout <= Duration::hours(24));
        let policy = SessionPolicy::default().with_idle_timeout(timeout).unwrap();
        let mut store = SessionStore::new(policy);
        let id = store.create(t0(), user(1), &mut DeterministicEntropy::from_u64(seed)).unwrap();
        let mut last = t0();
        for gap_ms in touches {
            // A touch strictly inside the window: the session lives on.
            let gap = Duration::milliseconds(gap_ms).min(timeout - Duration::nanoseconds(1));
            let now = last + gap;
            prop_assert_eq!(store.touch(now, &id), Ok(user(1)));
            last = now;
        }
        let boundary = last + timeout;
        prop_assert_eq!(store.poll_timeout(), Some(boundary));
        prop_assert_eq!(store.check(boundary - Duration::nanoseconds(1), &id), Ok(user(1)));
        prop_assert_eq!(
            store.check(boundary, &id),
            Err(AccessError::SessionExpired { last_active: last, expired_at: boundary })
        );
        prop_assert_eq!(store.check(boundary, &id), Err(AccessError::UnknownSession));
        prop_assert!(store.is_empty());
    }

    /// The store against a reference: random creates, touches, checks,
    /// ends and clock moves; a session is live exactly when `now <
    /// last_active + idle_timeout`, expired ones answer `SessionExpired`
    /// once and then `UnknownSession`, and the store never holds more than
    /// its cap.
    #[test]
    fn session_store_matches_reference(
        cap in 1usize..6,
        ops in proptest::collection::vec((0u8..5, 0usize..8, 0i64..2_400), 1..80),
        seed in any::<u64>(),
    ) {
        let timeout = Duration::minutes(30);
        let policy = SessionPolicy::default().with_max_sessions(cap).unwrap();
        let mut store = SessionStore::new(policy);
        let mut e = DeterministicEntropy::from_u64(seed);
        let mut now = t0();
        // Every id ever issued, with the reference's state: Some(last
        // active, user) while held.
        let mut ids: Vec<(SessionId, Option<Held>)> = Vec::new();
        for (kind, pick, secs) in ops {
            match kind {
                0 => {
                    // Create evicts every expired session first.
                    for s in ids.iter_mut() {
                        if s.1.is_some_and(|(a, _)| now >= a + timeout) {
                            s.1 = None;
                        }
                    }
                    let held = ids.iter().filter(|s| s.1.is_some()).count();
                    let u = user(1 + (pick as u128 % 3));
                    match store.create(now, u, &mut e) {
                        Ok(id) => {
                            prop_assert!(held < cap);
                            ids.push((id, Some((now, u))));
                        }
                        Err(err) => {
                            prop_assert_eq!(held, cap);
                            prop_assert_eq!(err, AccessError::TooManySessions { max: cap });
                        }
                    }
                }
                1 | 2 if !ids.is_empty() => {
                    let i = pick % ids.len();
                    let got = if kind == 1 { store.touch(now, &ids[i].0) } else { store.check(now, &ids[i].0) };
                    match ids[i].1 {
                        None => prop_assert_eq!(got, Err(AccessError::UnknownSession)),
                        Some((a, u)) if now < a + timeout => {
                            prop_assert_eq!(got, Ok(u));
                            if kind == 1 {
                                ids[i].1 = Some((now, u));
                            }
                        }
                        Some((a, _)) => {
                            prop_assert_eq!(
                                got,
                                Err(AccessError::SessionExpired { last_active: a, expired_at: a + timeout })
                            );
                            ids[i].1 = None;
                        }
                    }
                }
                3 if !ids.is_empty() => {
                    let i = pick % ids.len();
                    prop_assert_eq!(store.end(&ids[i].0), ids[i].1.is_some());
                    ids[i].1 = None;
                }
                _ => now += Duration::seconds(secs),
            }
            let held = ids.iter().filter(|s| s.1.is_some()).count();
            prop_assert_eq!(store.len(), held);
            prop_assert!(store.len() <= cap);
            let next = ids.iter().filter_map(|s| s.1.map(|(a, _)| a + timeout)).min();
            prop_assert_eq!(store.poll_timeout(), next);
        }
    }
}
