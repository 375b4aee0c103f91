//! Retention: the plan against a reference model, its boundaries (retention
//! expiry and the purge, to the nanosecond), reopening, the census rotation
//! takes, overrides, aggregated metrics, validation, and shredding through
//! the key ring.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    BatchId, DataType, DeleteReason, DeterministicEntropy, KeyAction, KeyCensus, KeyError, KeyId,
    KeyRing, ObjectKey, ObjectKind, Plan, RetentionAction, RetentionError, RetentionPlan,
    RetentionPlanner, RetentionPolicy, RotationPolicy, StoredObject, TenantId, Workspace,
    WorkspaceState, shred_keys,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use uuid::Uuid;

const DAY_MS: i64 = 86_400_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn tenant(n: u8) -> TenantId {
    TenantId::new(Uuid::from_u128(0x1000 + u128::from(n))).unwrap()
}
fn key(n: u32) -> ObjectKey {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[15] = 1;
    ObjectKey::for_batch(BatchId::from_random_bytes(b))
}
fn kek(n: u32) -> KeyId {
    KeyId::new(n).unwrap()
}
fn raw(t: DataType) -> ObjectKind {
    ObjectKind::Raw(t)
}
fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}
fn object(
    t: TenantId,
    n: u32,
    kind: ObjectKind,
    newest: DateTime<Utc>,
    kek_id: Option<KeyId>,
) -> StoredObject {
    StoredObject::new(t, key(n), kind, newest, newest, kek_id).unwrap()
}
fn deletes(plan: &RetentionPlan) -> Vec<(TenantId, ObjectKey, DeleteReason)> {
    plan.actions()
        .iter()
        .filter_map(|a| match a {
            RetentionAction::DeleteObject {
                tenant,
                object,
                reason,
            } => Some((*tenant, *object, *reason)),
            _ => None,
        })
        .collect()
}
fn purge_actions(plan: &RetentionPlan, t: TenantId) -> usize {
    plan.actions()
        .iter()
        .filter(|a| match a {
            RetentionAction::ShredKeys { tenant } | RetentionAction::MarkPurged { tenant, .. } => {
                *tenant == t
            }
            _ => false,
        })
        .count()
}

// ---------------------------------------------------------------------------
// The reference model: the documented rules, written out plainly over whole
// collections, from plain settings rather than the library's getters.

#[derive(Debug, Clone)]
struct PolicySpec {
    plans: [i64; 4],
    types: BTreeMap<DataType, i64>,
    aggregated: i64,
    purge: i64,
}

impl PolicySpec {
    fn build(&self) -> RetentionPolicy {
        let mut p = RetentionPolicy::default()
            .with_aggregated_metrics(ms(self.aggregated))
            .unwrap()
            .with_purge_after_close(ms(self.purge))
            .unwrap();
        for (plan, d) in Plan::ALL.into_iter().zip(self.plans) {
            p = p.with_plan_retention(plan, ms(d)).unwrap();
        }
        for (t, d) in &self.types {
            p = p.with_type_retention(*t, Some(ms(*d))).unwrap();
        }
        p
    }
}

#[derive(Debug, Clone, Copy)]
enum StateSpec {
    Active,
    /// Closed at now + offset (ms).
    Closed(i64),
    /// Closed at now - purge - offset, marked purged at the purge time.
    Purged(i64),
}

#[derive(Debug, Clone)]
struct WsSpec {
    plan: usize,
    retention: Option<i64>,
    types: BTreeMap<DataType, i64>,
    state: StateSpec,
}

impl WsSpec {
    fn build(&self, t: TenantId, policy: &RetentionPolicy, p: &PolicySpec) -> Workspace {
        let mut w = Workspace::new(t, Plan::ALL[self.plan])
            .with_retention(self.retention.map(ms))
            .unwrap();
        for (dt, d) in &self.types {
            w = w.with_type_retention(*dt, Some(ms(*d))).unwrap();
        }
        match self.state {
            StateSpec::Active => {}
            StateSpec::Closed(off) => w.close(policy, t0() + ms(off)).unwrap(),
            StateSpec::Purged(off) => {
                let closed = t0() - ms(p.purge) - ms(off);
                w.close(policy, closed).unwrap();
                w.mark_purged(closed + ms(p.purge)).unwrap();
            }
        }
        w
    }

    /// Whether its purge is due or done at t0.
    fn purging(&self, p: &PolicySpec) -> bool {
        match self.state {
            StateSpec::Active => false,
            StateSpec::Closed(off) => off + p.purge <= 0,
            StateSpec::Purged(_) => true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ObjSpec {
    tenant: u8,
    kind: Option<DataType>, // None: aggregated metrics
    newest: i64,            // ms from t0
    span: i64,              // ms between oldest and newest
    kek: Option<u32>,
}

impl ObjSpec {
    fn build(&self, n: u32) -> StoredObject {
        let kind = self
            .kind
            .map_or(ObjectKind::AggregatedMetrics, ObjectKind::Raw);
        let newest = t0() + ms(self.newest);
        StoredObject::new(
            tenant(self.tenant),
            key(n),
            kind,
            newest - ms(self.span),
            newest,
            self.kek.map(kek),
        )
        .unwrap()
    }
}

fn model_retention(p: &PolicySpec, w: &WsSpec, kind: Option<DataType>) -> i64 {
    let Some(t) = kind else { return p.aggregated };
    if let Some(d) = w.types.get(&t) {
        return *d;
    }
    if let Some(d) = w.retention {
        return d;
    }
    if let Some(d) = p.types.get(&t) {
        return *d;
    }
    p.plans[w.plan]
}

struct Expected {
    actions: Vec<RetentionAction>,
    census: BTreeMap<(TenantId, KeyId), u64>,
    unknown: BTreeMap<TenantId, u64>,
}

fn reference(p: &PolicySpec, ws: &BTreeMap<u8, WsSpec>, objs: &[ObjSpec]) -> Expected {
    let mut actions = Vec::new();
    let mut census = BTreeMap::new();
    let mut unknown = BTreeMap::new();
    for (i, o) in objs.iter().enumerate() {
        let t = tenant(o.tenant);
        let reason = match ws.get(&o.tenant) {
            None => {
                *unknown.entry(t).or_insert(0) += 1;
                None
            }
            Some(w) if w.purging(p) => Some(DeleteReason::WorkspacePurge),
            Some(w) if o.newest + model_retention(p, w, o.kind) <= 0 => Some(DeleteReason::Expired),
            Some(_) => None,
        };
        match reason {
            Some(reason) => actions.push(RetentionAction::DeleteObject {
                tenant: t,
                object: key(i as u32),
                reason,
            }),
            None => {
                if let Some(k) = o.kek {
                    *census.entry((t, kek(k))).or_insert(0) += 1;
                }
            }
        }
    }
    let mut purging: Vec<TenantId> = ws
        .iter()
        .filter(|(_, w)| matches!(w.state, StateSpec::Closed(_)) && w.purging(p))
        .map(|(n, _)| tenant(*n))
        .collect();
    purging.sort();
    for t in purging {
        actions.push(RetentionAction::ShredKeys { tenant: t });
        actions.push(RetentionAction::MarkPurged {
            tenant: t,
            at: t0(),
        });
    }
    Expected {
        actions,
        census,
        unknown,
    }
}

// ---------------------------------------------------------------------------
// Strategies.

fn period_ms() -> impl Strategy<Value = i64> {
    prop_oneof![
        (1i64..=400).prop_map(|d| d * DAY_MS),
        1i64..=400 * DAY_MS,
        1i64..=10_000,
    ]
}

fn data_type() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (
        [period_ms(), period_ms(), period_ms(), period_ms()],
        btree_map(data_type(), period_ms(), 0..3),
        period_ms(),
        (1i64..=60).prop_map(|d| d * DAY_MS),
    )
        .prop_map(|(plans, types, aggregated, purge)| PolicySpec {
            plans,
            types,
            aggregated,
            purge,
        })
}

fn state_spec() -> impl Strategy<Value = StateSpec> {
    prop_oneof![
        2 => Just(StateSpec::Active),
        2 => (-90 * DAY_MS..=10 * DAY_MS).prop_map(StateSpec::Closed),
        1 => (0..=30 * DAY_MS).prop_map(StateSpec::Purged),
    ]
}

fn ws_spec() -> impl Strategy<Value = WsSpec> {
    (
        0usize..4,
        prop::option::weighted(0.3, period_ms()),
        btree_map(data_type(), period_ms(), 0..3),
        state_spec(),
    )
        .prop_map(|(plan, retention, types, state)| WsSpec {
            plan,
            retention,
            types,
            state,
        })
}

fn obj_spec() -> impl Strategy<Value = ObjSpec> {
    (
        1u8..=6, // tenants 5 and 6 never have a workspace
        prop::option::weighted(0.85, data_type()),
        -800 * DAY_MS..=2 * DAY_MS,
        prop_oneof![Just(0i64), 0..=100 * DAY_MS],
        prop::option::weighted(0.9, 1u32..=3),
    )
        .prop_map(|(tenant, kind, newest, span, kek)| ObjSpec {
            tenant,
            kind,
            newest,
            span,
            kek,
        })
}

fn scenario() -> impl Strategy<Value = (PolicySpec, BTreeMap<u8, WsSpec>, Vec<ObjSpec>)> {
    (
        policy_spec(),
        btree_map(1u8..=4, ws_spec(), 0..=4),
        vec(obj_spec(), 0..60),
    )
}

struct Built {
    policy: RetentionPolicy,
    workspaces: Vec<Workspace>,
    objects: Vec<StoredObject>,
}

fn build(p: &PolicySpec, ws: &BTreeMap<u8, WsSpec>, objs: &[ObjSpec]) -> Built {
    let policy = p.build();
    let workspaces = ws
        .iter()
        .map(|(n, w)| w.build(tenant(*n), &policy, p))
        .collect();
    let objects = objs
        .iter()
        .enumerate()
        .map(|(i, o)| o.build(i as u32))
        .collect();
    Built {
        policy,
        workspaces,
        objects,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The plan is exactly the reference model's: the same actions in the
    /// same order, the same census, the same unknown tenants.
    #[test]
    fn plan_matches_the_reference_model((p, ws, objs) in scenario()) {
        let b = build(&p, &ws, &objs);
        let plan = b.policy.plan(t0(), &b.workspaces, b.objects.iter().copied()).unwrap();
        let expected = reference(&p, &ws, &objs);
        prop_assert_eq!(plan.actions(), &expected.actions[..]);
        let mut census = BTreeMap::new();
        for (t, _) in plan.censuses() {
            for k in 1..=3 {
                let n = plan.census(t).frames(kek(k));
                if n > 0 {
                    census.insert((t, kek(k)), n);
                }
            }
        }
        prop_assert_eq!(census, expected.census);
        prop_assert_eq!(plan.unknown_tenants().collect::<BTreeMap<_, _>>(), expected.unknown);
        let s = plan.stats();
        prop_assert_eq!(s.objects, objs.len() as u64);
        prop_assert_eq!(s.expired + s.purged + s.kept, s.objects);
    }

    /// Pushing objects one by one and finishing gives the same plan.
    #[test]
    fn the_streaming_planner_agrees_with_plan((p, ws, objs) in scenario()) {
        let b = build(&p, &ws, &objs);
        let plan = b.policy.plan(t0(), &b.workspaces, b.objects.iter().copied()).unwrap();
        let mut planner = RetentionPlanner::new(&b.policy, t0(), &b.workspaces).unwrap();
        let mut actions: Vec<_> = b.objects.iter().filter_map(|o| planner.push(*o)).collect();
        let finished = planner.finish();
        actions.extend(finished.actions().iter().cloned());
        prop_assert_eq!(&actions[..], plan.actions());
        prop_assert_eq!(finished.stats(), plan.stats());
        prop_assert_eq!(finished.next_due(), plan.next_due());
        prop_assert!(finished.censuses().eq(plan.censuses()));
    }

    /// No object of a workspace that is not being purged is deleted while
    /// its newest record is inside retention; every one deleted is past it.
    #[test]
    fn never_deletes_an_object_with_a_record_inside_retention((p, ws, objs) in scenario()) {
        let b = build(&p, &ws, &objs);
        let plan = b.policy.plan(t0(), &b.workspaces, b.objects.iter().copied()).unwrap();
        let deleted: BTreeMap<_, _> =
            deletes(&plan).into_iter().map(|(t, k, r)| ((t, k), r)).collect();
        for (i, o) in objs.iter().enumerate() {
            let Some(w) = ws.get(&o.tenant) else {
                prop_assert!(!deleted.contains_key(&(tenant(o.tenant), key(i as u32))));
                continue;
            };
            if w.purging(&p) {
                continue;
            }
            let r = model_retention(&p, w, o.kind);
            let inside = t0() < t0() + ms(o.newest) + ms(r);
            prop_assert_eq!(deleted.contains_key(&(tenant(o.tenant), key(i as u32))), !inside);
        }
        // And a deletion for age names a record past retention by the
        // library's own reckoning.
        for (t, k, reason) in deletes(&plan) {
            if reason == DeleteReason::Expired {
                let o = b.objects.iter().find(|o| o.tenant() == t && o.object() == k).unwrap();
                let w = b.workspaces.iter().find(|w| w.tenant() == t).unwrap();
                prop_assert!(o.newest() + b.policy.retention_for(w, o.kind()) <= t0());
            }
        }
    }

    /// A workspace closed at any instant is purged at exactly the purge
    /// time: not a nanosecond, a millisecond or a day earlier; at it and
    /// after, every object goes, its keys are shredded and it is marked
    /// purged. Until then, reopening is allowed; from then on, refused.
    #[test]
    fn purges_a_closed_workspace_at_exactly_the_purge_time(
        closed_ns in -1_000_000_000_000_000i64..=1_000_000_000_000_000,
        purge_days in 1i64..=60,
        early in prop_oneof![Just(1i64), Just(1_000_000), 1..=86_400_000_000_000i64],
        late in prop_oneof![Just(0i64), 0..=86_400_000_000_000i64],
        newest in vec(-10 * DAY_MS..=10 * DAY_MS, 1..20),
        plan in 0usize..4,
    ) {
        let policy = RetentionPolicy::default()
            .with_purge_after_close(Duration::days(purge_days)).unwrap()
            .with_plan_retention(Plan::ALL[plan], Duration::days(3_000)).unwrap();
        let closed = t0() + Duration::nanoseconds(closed_ns);
        let t = tenant(1);
        let mut w = Workspace::new(t, Plan::ALL[plan]);
        w.close(&policy, closed).unwrap();
        let purge_at = closed + Duration::days(purge_days);
        prop_assert_eq!(w.purge_at(), Some(purge_at));
        let objects: Vec<_> = newest.iter().enumerate()
            .map(|(i, n)| object(t, i as u32, raw(DataType::Event), closed + ms(*n), Some(kek(1))))
            .collect();

        let before = purge_at - Duration::nanoseconds(early);
        let plan_before = policy.plan(before, [&w], objects.iter().copied()).unwrap();
        prop_assert!(plan_before.actions().is_empty(), "{:?}", plan_before.actions());
        prop_assert_eq!(plan_before.census(t).frames(kek(1)), objects.len() as u64);
        prop_assert_eq!(plan_before.next_due(), Some(purge_at));
        prop_assert!(w.clone().reopen(before).is_ok());

        let at = purge_at + Duration::nanoseconds(late);
        let plan_at = policy.plan(at, [&w], objects.iter().copied()).unwrap();
        let mut expected: Vec<_> = objects.iter().map(|o| RetentionAction::DeleteObject {
            tenant: t, object: o.object(), reason: DeleteReason::WorkspacePurge,
        }).collect();
        expected.push(RetentionAction::ShredKeys { tenant: t });
        expected.push(RetentionAction::MarkPurged { tenant: t, at });
        prop_assert_eq!(plan_at.actions(), &expected[..]);
        prop_assert_eq!(plan_at.census(t), KeyCensus::new());
        let refused = matches!(
            w.clone().reopen(at),
            Err(RetentionError::PurgeDue { purge_at: p, .. }) if p == purge_at
        );
        prop_assert!(refused);
        prop_assert!(w.clone().mark_purged(before).is_err());
        w.mark_purged(at).unwrap();
        prop_assert_eq!(w.state(), WorkspaceState::Purged { at });
    }

    /// Reopening before the purge cancels it: no plan at or after the old
    /// purge time purges the workspace, and its data is kept by retention
    /// alone.
    #[test]
    fn reopen_before_the_purge_cancels_it(
        reopen_after in 0i64..30 * DAY_MS,
        later_ms in 0i64..=400 * DAY_MS,
        newest in vec(-40 * DAY_MS..=0, 1..20),
    ) {
        let policy = RetentionPolicy::default();
        let t = tenant(1);
        let mut w = Workspace::new(t, Plan::Premium);
        w.close(&policy, t0()).unwrap();
        w.reopen(t0() + ms(reopen_after)).unwrap();
        prop_assert_eq!(w.state(), WorkspaceState::Active);
        prop_assert_eq!(w.purge_at(), None);
        let now = t0() + Duration::days(30) + ms(later_ms);
        let objects: Vec<_> = newest.iter().enumerate()
            .map(|(i, n)| object(t, i as u32, raw(DataType::Alert), now + ms(*n), None))
            .collect();
        let plan = policy.plan(now, [&w], objects.iter().copied()).unwrap();
        prop_assert_eq!(purge_actions(&plan, t), 0);
        prop_assert!(plan.actions().is_empty()); // 40 days < Premium's 365
        prop_assert_eq!(plan.stats().kept, objects.len() as u64);
    }

    /// The census counts, per tenant and key id, exactly the objects the
    /// plan did not delete (unknown tenants' included, unsealed ones not).
    #[test]
    fn census_counts_exactly_the_surviving_objects((p, ws, objs) in scenario()) {
        let b = build(&p, &ws, &objs);
        let plan = b.policy.plan(t0(), &b.workspaces, b.objects.iter().copied()).unwrap();
        let deleted: Vec<_> = deletes(&plan).into_iter().map(|(t, k, _)| (t, k)).collect();
        for t in (1..=6).map(tenant) {
            let census = plan.census(t);
            for k in 1..=4 {
                let surviving = b.objects.iter()
                    .filter(|o| o.tenant() == t && o.kek_id() == Some(kek(k)))
                    .filter(|o| !deleted.contains(&(o.tenant(), o.object())))
                    .count() as u64;
                prop_assert_eq!(census.frames(kek(k)), surviving, "tenant {} key {}", t, k);
            }
        }
    }

    /// The most specific setting decides: workspace per type, then
    /// workspace, then policy per type, then plan; and the object goes at
    /// exactly newest + that period, not a nanosecond earlier.
    #[test]
    fn per_type_and_per_workspace_overrides_take_precedence(
        plan_d in 1i64..=400, policy_type in prop::option::of(1i64..=400),
        ws_all in prop::option::of(1i64..=400), ws_type in prop::option::of(1i64..=400),
        t in data_type(), other in data_type(), plan in 0usize..4,
    ) {
        let days = Duration::days;
        let policy = RetentionPolicy::default()
            .with_plan_retention(Plan::ALL[plan], days(plan_d)).unwrap()
            .with_type_retention(t, policy_type.map(days)).unwrap();
        let w = Workspace::new(tenant(1), Plan::ALL[plan])
            .with_retention(ws_all.map(days)).unwrap()
            .with_type_retention(t, ws_type.map(days)).unwrap();
        let expected = days(ws_type.or(ws_all).or(policy_type).unwrap_or(plan_d));
        prop_assert_eq!(policy.retention_for(&w, raw(t)), expected);
        // Another type's overrides do not leak: it gets the workspace's
        // period, else the plan's (the policy's override is for `t`).
        if other != t {
            prop_assert_eq!(policy.retention_for(&w, raw(other)), days(ws_all.unwrap_or(plan_d)));
        }
        let now = t0();
        let at_edge = object(tenant(1), 1, raw(t), now - expected, Some(kek(1)));
        let inside = object(tenant(1), 2, raw(t), now - expected + Duration::nanoseconds(1), Some(kek(1)));
        let result = policy.plan(now, [&w], [at_edge, inside]).unwrap();
        prop_assert_eq!(deletes(&result), vec![(tenant(1), key(1), DeleteReason::Expired)]);
        prop_assert_eq!(result.census(tenant(1)).frames(kek(1)), 1);
        prop_assert_eq!(result.next_due(), Some(inside.newest() + expected));
    }

    /// Aggregated metrics are kept 390 days by default (or as set),
    /// whatever the plan and every raw-data override.
    #[test]
    fn aggregated_metrics_are_kept_390_days(
        ws in ws_spec().prop_filter("not purging", |w| matches!(w.state, StateSpec::Active)),
        types in btree_map(data_type(), period_ms(), 0..6),
        delta_ns in prop_oneof![Just(0i64), Just(1), Just(-1), -DAY_MS * 1_000_000..=DAY_MS * 1_000_000],
        set in prop::option::of(1i64..=3_653),
    ) {
        let mut policy = RetentionPolicy::default();
        for (t, d) in &types {
            policy = policy.with_type_retention(*t, Some(ms(*d))).unwrap();
        }
        let keep = set.map_or(Duration::days(390), Duration::days);
        if let Some(d) = set {
            policy = policy.with_aggregated_metrics(Duration::days(d)).unwrap();
        }
        let spec = PolicySpec { plans: [1; 4], types: BTreeMap::new(), aggregated: 1, purge: DAY_MS };
        let w = ws.build(tenant(1), &policy, &spec);
        prop_assert_eq!(policy.retention_for(&w, ObjectKind::AggregatedMetrics), keep);
        let now = t0();
        let newest = now - keep + Duration::nanoseconds(delta_ns);
        let o = StoredObject::new(tenant(1), key(1), ObjectKind::AggregatedMetrics, newest, newest, None).unwrap();
        let plan = policy.plan(now, [&w], [o]).unwrap();
        prop_assert_eq!(!deletes(&plan).is_empty(), delta_ns <= 0);
    }
}

// ---------------------------------------------------------------------------
// Unit tests.

#[test]
fn the_default_plan_table() {
    let p = RetentionPolicy::default();
    assert_eq!(p.plan_retention(Plan::Free), Duration::days(7));
    assert_eq!(p.plan_retention(Plan::Standard), Duration::days(30));
    assert_eq!(p.plan_retention(Plan::Premium), Duration::days(365));
    assert_eq!(p.plan_retention(Plan::PerGb), Duration::days(31));
    for plan in Plan::ALL {
        assert_eq!(
            p.plan_retention(plan),
            RetentionPolicy::default_plan_retention(plan)
        );
    }
    assert_eq!(p.aggregated_metrics(), Duration::days(390));
    assert_eq!(p.purge_after_close(), Duration::days(30));
    assert!(DataType::ALL.iter().all(|t| p.type_retention(*t).is_none()));
    assert_eq!(RetentionPolicy::MAX_PERIOD, Duration::days(3_653));
}

/// Every setter refuses zero, negative and longer-than-ten-year periods
/// with a typed error naming the setting and the period, and accepts the
/// bounds themselves.
#[test]
fn validation_refuses_zero_negative_and_absurd_periods() {
    type Setter = Box<dyn Fn(Duration) -> Result<(), RetentionError>>;
    let p = RetentionPolicy::default;
    let w = || Workspace::new(tenant(1), Plan::Free);
    let setters: Vec<(&str, Setter)> = vec![
        (
            "plan retention",
            Box::new(move |d| p().with_plan_retention(Plan::Standard, d).map(drop)),
        ),
        (
            "data type retention",
            Box::new(move |d| p().with_type_retention(DataType::Event, Some(d)).map(drop)),
        ),
        (
            "aggregated metrics retention",
            Box::new(move |d| p().with_aggregated_metrics(d).map(drop)),
        ),
        (
            "purge_after_close",
            Box::new(move |d| p().with_purge_after_close(d).map(drop)),
        ),
        (
            "workspace retention",
            Box::new(move |d| w().with_retention(Some(d)).map(drop)),
        ),
        (
            "workspace data type retention",
            Box::new(move |d| w().with_type_retention(DataType::State, Some(d)).map(drop)),
        ),
    ];
    let max = RetentionPolicy::MAX_PERIOD;
    for (name, set) in &setters {
        for bad in [
            Duration::zero(),
            -Duration::nanoseconds(1),
            -Duration::days(30),
        ] {
            match set(bad) {
                Err(RetentionError::NotPositive { setting, period }) => {
                    assert_eq!((setting, period), (*name, bad));
                }
                other => panic!("{name} {bad}: {other:?}"),
            }
        }
        for bad in [
            max + Duration::nanoseconds(1),
            Duration::days(36_525),
            Duration::MAX,
        ] {
            match set(bad) {
                Err(RetentionError::TooLong {
                    setting,
                    period,
                    max: m,
                }) => {
                    assert_eq!((setting, period, m), (*name, bad, max));
                }
                other => panic!("{name} {bad}: {other:?}"),
            }
        }
        for good in [Duration::nanoseconds(1), Duration::days(1), max] {
            set(good).unwrap_or_else(|e| panic!("{name} {good}: {e}"));
        }
    }
    // Clearing an override is always fine, and clears it.
    let policy = RetentionPolicy::default()
        .with_type_retention(DataType::Alert, Some(Duration::days(9)))
        .unwrap()
        .with_type_retention(DataType::Alert, None)
        .unwrap();
    assert_eq!(policy.type_retention(DataType::Alert), None);
    let ws = Workspace::new(tenant(1), Plan::Free)
        .with_retention(Some(Duration::days(2)))
        .unwrap()
        .with_retention(None)
        .unwrap();
    assert_eq!(ws.retention(), None);
    // The message names the setting.
    let e = RetentionPolicy::default()
        .with_purge_after_close(Duration::zero())
        .unwrap_err();
    assert!(e.to_string().contains("purge_after_close"), "{e}");
}

#[test]
fn an_inventory_item_with_newest_before_oldest_is_refused() {
    let e = StoredObject::new(
        tenant(1),
        key(1),
        raw(DataType::Event),
        t0(),
        t0() - Duration::nanoseconds(1),
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RetentionError::RecordTimes { tenant: t, .. } if t == tenant(1)));
    let same = StoredObject::new(tenant(1), key(1), raw(DataType::Event), t0(), t0(), None);
    assert!(same.is_ok());
}

#[test]
fn two_workspaces_of_one_tenant_are_refused() {
    let a = Workspace::new(tenant(1), Plan::Free);
    let b = Workspace::new(tenant(1), Plan::Premium);
    let policy = RetentionPolicy::default();
    let e = policy.plan(t0(), [&a, &b], []).unwrap_err();
    assert!(matches!(e, RetentionError::DuplicateWorkspace { tenant: t } if t == tenant(1)));
    assert!(RetentionPlanner::new(&policy, t0(), [&a, &b]).is_err());
}

/// An object of a tenant without a workspace, however old, is kept,
/// counted in its tenant's census and reported.
#[test]
fn an_unknown_tenants_objects_are_kept_and_reported() {
    let policy = RetentionPolicy::default();
    let known = Workspace::new(tenant(1), Plan::Free);
    let ancient = t0() - Duration::days(3_000);
    let plan = policy
        .plan(
            t0(),
            [&known],
            [
                object(tenant(9), 1, raw(DataType::Event), ancient, Some(kek(2))),
                object(tenant(9), 2, ObjectKind::AggregatedMetrics, ancient, None),
                object(tenant(1), 3, raw(DataType::Event), ancient, Some(kek(2))),
            ],
        )
        .unwrap();
    assert_eq!(
        deletes(&plan),
        vec![(tenant(1), key(3), DeleteReason::Expired)]
    );
    assert_eq!(plan.unknown_tenants().collect::<Vec<_>>(), [(tenant(9), 2)]);
    assert_eq!(plan.census(tenant(9)).frames(kek(2)), 1);
    assert_eq!(plan.census(tenant(1)).frames(kek(2)), 0);
    assert_eq!(plan.stats().unknown_tenant, 2);
    assert_eq!(plan.stats().kept, 2);
    assert_eq!(plan.next_due(), None); // unknown tenants' objects never come due
}

/// The retention boundary, to the nanosecond: inside retention while
/// `now < newest + r`; deleted at `newest + r` exactly. An object whose
/// oldest record is long past retention is kept for its newest.
#[test]
fn the_retention_boundary_is_exact() {
    let policy = RetentionPolicy::default(); // Standard: 30 days
    let w = Workspace::new(tenant(1), Plan::Standard);
    let r = Duration::days(30);
    let newest = t0() - r;
    let o = object(tenant(1), 1, raw(DataType::Performance), newest, None);
    let straddling = StoredObject::new(
        tenant(1),
        key(2),
        raw(DataType::Performance),
        t0() - Duration::days(300),
        t0() - r + Duration::nanoseconds(1),
        Some(kek(1)),
    )
    .unwrap();

    let before = policy
        .plan(t0() - Duration::nanoseconds(1), [&w], [o])
        .unwrap();
    assert!(before.actions().is_empty());
    assert_eq!(before.next_due(), Some(t0()));

    let at = policy.plan(t0(), [&w], [o, straddling]).unwrap();
    assert_eq!(
        at.into_actions(),
        [RetentionAction::DeleteObject {
            tenant: tenant(1),
            object: key(1),
            reason: DeleteReason::Expired,
        }]
    );
    let at = policy.plan(t0(), [&w], [straddling]).unwrap();
    assert_eq!(at.stats().kept_partly_expired, 1);
    assert_eq!(at.census(tenant(1)).frames(kek(1)), 1);
    // A record time so far in the past or future that adding retention
    // overflows never panics: the far future is simply never due.
    let far = object(
        tenant(1),
        3,
        raw(DataType::Event),
        DateTime::<Utc>::MAX_UTC,
        None,
    );
    let plan = policy.plan(DateTime::<Utc>::MAX_UTC, [&w], [far]).unwrap();
    assert!(plan.actions().is_empty());
}

#[test]
fn the_workspace_lifecycle_refuses_what_does_not_apply() {
    let policy = RetentionPolicy::default();
    let t = tenant(1);
    let mut w = Workspace::new(t, Plan::Standard);
    assert_eq!(w.state(), WorkspaceState::Active);
    assert!(matches!(
        w.reopen(t0()),
        Err(RetentionError::NotClosed { .. })
    ));
    assert!(matches!(
        w.mark_purged(t0()),
        Err(RetentionError::NotClosed { .. })
    ));

    w.close(&policy, t0()).unwrap();
    let purge_at = t0() + Duration::days(30);
    assert_eq!(w.state(), WorkspaceState::Closed { at: t0(), purge_at });
    // Closing again keeps the first date.
    w.close(&policy, t0() + Duration::days(5)).unwrap();
    assert_eq!(w.purge_at(), Some(purge_at));
    // A later policy change does not move a closed workspace's purge.
    let shorter = policy
        .clone()
        .with_purge_after_close(Duration::days(1))
        .unwrap();
    w.close(&shorter, t0() + Duration::days(6)).unwrap();
    assert_eq!(w.purge_at(), Some(purge_at));
    let plan = shorter.plan(t0() + Duration::days(2), [&w], []).unwrap();
    assert!(plan.actions().is_empty());

    let e = w
        .mark_purged(purge_at - Duration::nanoseconds(1))
        .unwrap_err();
    assert!(matches!(e, RetentionError::PurgeNotDue { purge_at: p, .. } if p == purge_at));
    let e = w.reopen(purge_at).unwrap_err();
    assert!(matches!(e, RetentionError::PurgeDue { .. }));
    assert!(w.state() != WorkspaceState::Active); // nothing changed on error

    w.mark_purged(purge_at).unwrap();
    w.mark_purged(purge_at + Duration::days(1)).unwrap(); // again: no change
    assert_eq!(w.state(), WorkspaceState::Purged { at: purge_at });
    assert!(matches!(
        w.reopen(purge_at),
        Err(RetentionError::Purged { at, .. }) if at == purge_at
    ));
    assert!(matches!(
        w.close(&policy, purge_at),
        Err(RetentionError::Purged { .. })
    ));
}

/// A host restores a persisted workspace's state as it was, its purge time
/// included; a closed state with a nonsense purge time is refused.
#[test]
fn a_workspace_state_is_restored_as_persisted() {
    let closed = WorkspaceState::Closed {
        at: t0(),
        purge_at: t0() + Duration::days(14),
    };
    let w = Workspace::new(tenant(1), Plan::Free)
        .with_state(closed)
        .unwrap();
    assert_eq!(w.state(), closed);
    assert_eq!(w.purge_at(), Some(t0() + Duration::days(14)));
    let purged = WorkspaceState::Purged { at: t0() };
    let w = Workspace::new(tenant(1), Plan::Free)
        .with_state(purged)
        .unwrap();
    assert_eq!(w.state(), purged);
    for purge_at in [t0(), t0() - Duration::days(1), t0() + Duration::days(4_000)] {
        let bad = WorkspaceState::Closed { at: t0(), purge_at };
        let e = Workspace::new(tenant(1), Plan::Free)
            .with_state(bad)
            .unwrap_err();
        assert!(
            matches!(
                e,
                RetentionError::NotPositive { .. } | RetentionError::TooLong { .. }
            ),
            "{e}"
        );
    }
}

/// Objects left behind by a purge (a store that listed them late) are
/// deleted by later plans, without shredding or marking again.
#[test]
fn a_purged_workspaces_leftovers_are_deleted_without_a_second_shred() {
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(tenant(1), Plan::Premium);
    w.close(&policy, t0()).unwrap();
    w.mark_purged(t0() + Duration::days(30)).unwrap();
    let now = t0() + Duration::days(31);
    let left = object(tenant(1), 1, raw(DataType::Alert), now, Some(kek(1)));
    let plan = policy.plan(now, [&w], [left]).unwrap();
    assert_eq!(
        plan.into_actions(),
        [RetentionAction::DeleteObject {
            tenant: tenant(1),
            object: key(1),
            reason: DeleteReason::WorkspacePurge,
        }]
    );
}

/// A closed workspace whose purge is not yet due keeps applying retention,
/// and its purge time is when to plan next if nothing expires sooner.
#[test]
fn a_closed_workspace_keeps_retention_until_its_purge() {
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(tenant(1), Plan::Free); // 7 days
    w.close(&policy, t0()).unwrap();
    let now = t0() + Duration::days(10);
    let old = object(tenant(1), 1, raw(DataType::Event), t0(), None);
    let fresh = object(tenant(1), 2, raw(DataType::Event), now, None);
    let plan = policy.plan(now, [&w], [old, fresh]).unwrap();
    assert_eq!(deletes(&plan), [(tenant(1), key(1), DeleteReason::Expired)]);
    assert_eq!(plan.next_due(), Some(t0() + Duration::days(17))); // fresh expires before the purge
    let plan = policy.plan(now, [&w], [old]).unwrap();
    assert_eq!(plan.next_due(), Some(t0() + Duration::days(30)));
}

/// The plan reads an inventory of any size once, as an iterator, and holds
/// nothing per object: here half a million objects that survive, generated
/// on the fly, give no actions and a census of two entries.
#[test]
fn a_large_inventory_streams_through() {
    const N: u32 = 500_000;
    let policy = RetentionPolicy::default();
    let w = Workspace::new(tenant(1), Plan::Premium);
    let inventory = (0..N).map(|i| {
        let k = Some(kek(1 + i % 2));
        object(tenant(1), i, raw(DataType::Performance), t0(), k)
    });
    let plan = policy.plan(t0(), [&w], inventory).unwrap();
    assert!(plan.actions().is_empty());
    assert_eq!(plan.censuses().count(), 1);
    let census = plan.census(tenant(1));
    assert_eq!(census.frames(kek(1)) + census.frames(kek(2)), u64::from(N));
    assert_eq!(plan.stats().objects, u64::from(N));
}

// ---------------------------------------------------------------------------
// Keys: the census feeds rotation; ShredKeys goes through the key ring.

fn ring_with_two_keys(t: TenantId) -> (KeyRing, DeterministicEntropy) {
    let mut entropy = DeterministicEntropy::from_u64(7);
    let mut ring = KeyRing::new(t, &RotationPolicy::default());
    let first = ring.generate(&mut entropy, t0()).unwrap();
    ring.promote(first, t0()).unwrap();
    let second = ring
        .generate(&mut entropy, t0() + Duration::days(1))
        .unwrap();
    ring.promote(second, t0() + Duration::days(1)).unwrap();
    (ring, entropy)
}

/// The plan's census is what rotation needs: a retired key still under a
/// surviving object must be rewrapped; once retention has deleted those
/// objects, it may be disabled.
#[test]
fn the_census_drives_rotation() {
    let t = tenant(1);
    let (ring, _) = ring_with_two_keys(t);
    let rotation = RotationPolicy::default();
    let policy = RetentionPolicy::default(); // Standard: 30 days
    let w = Workspace::new(t, Plan::Standard);
    let now = t0() + Duration::days(120); // key 1 demoted at day 1, retire after 90
    let old = object(
        t,
        1,
        raw(DataType::Event),
        now - Duration::days(31),
        Some(kek(1)),
    );
    let recent = object(
        t,
        2,
        raw(DataType::Event),
        now - Duration::days(29),
        Some(kek(1)),
    );

    let plan = policy.plan(now, [&w], [old, recent]).unwrap();
    let actions = rotation.evaluate(&ring, &plan.census(t), now);
    assert!(
        actions.contains(&KeyAction::RewrapFrames {
            from: kek(1),
            count: 1
        }),
        "{actions:?}"
    );
    let plan = policy
        .plan(now + Duration::days(2), [&w], [old, recent])
        .unwrap();
    assert_eq!(plan.stats().expired, 2);
    let actions = rotation.evaluate(&ring, &plan.census(t), now + Duration::days(2));
    assert!(
        actions.contains(&KeyAction::Disable { id: kek(1) }),
        "{actions:?}"
    );
}

/// The whole purge with keys: the workspace and its ring closed together;
/// before the purge nothing can be shredded; at it, the plan says
/// ShredKeys and `shred_keys` carries it out through the ring.
#[test]
fn shred_keys_carries_out_the_purge_through_the_key_ring() {
    let t = tenant(1);
    let (mut ring, _) = ring_with_two_keys(t);
    let rotation = RotationPolicy::default();
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(t, Plan::Standard);
    let closed = t0() + Duration::days(2);
    w.close(&policy, closed).unwrap();
    ring.close(&rotation, closed).unwrap();

    let early = closed + Duration::days(30) - Duration::milliseconds(1);
    let e = shred_keys(t, &mut ring, early).unwrap_err();
    assert!(
        matches!(e, RetentionError::Key(KeyError::GracePeriod { .. })),
        "{e}"
    );
    assert!(ring.shredded().is_none());

    let at = closed + Duration::days(30);
    let plan = policy
        .plan(
            at,
            [&w],
            [object(t, 1, raw(DataType::Event), at, Some(kek(2)))],
        )
        .unwrap();
    let mut receipt = None;
    for action in plan.actions() {
        match action {
            RetentionAction::DeleteObject { .. } => {}
            RetentionAction::ShredKeys { tenant } => {
                receipt = Some(shred_keys(*tenant, &mut ring, at).unwrap());
            }
            RetentionAction::MarkPurged { at, .. } => w.mark_purged(*at).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    let receipt = receipt.expect("ShredKeys was planned");
    assert_eq!(receipt.tenant, t);
    assert_eq!(receipt.key_ids, [kek(1), kek(2)]);
    assert_eq!(receipt.closed_at, closed);
    assert_eq!(receipt.at, at);
    assert_eq!(ring.shredded(), Some(at));
    assert!(matches!(w.state(), WorkspaceState::Purged { .. }));

    // A host that stopped before MarkPurged and planned again gets the
    // same receipt.
    let again = shred_keys(t, &mut ring, at + Duration::hours(1)).unwrap();
    assert_eq!(again, receipt);
}

/// Tenant rule: `shred_keys` refuses another tenant's ring before touching
/// it, even once its grace period is over.
#[test]
fn shred_keys_refuses_another_tenants_ring() {
    let (mut ring, _) = ring_with_two_keys(tenant(2));
    ring.close(&RotationPolicy::default(), t0()).unwrap();
    let late = t0() + Duration::days(60);
    let e = shred_keys(tenant(1), &mut ring, late).unwrap_err();
    assert!(matches!(
        e,
        RetentionError::WrongRing { expected, found } if expected == tenant(1) && found == tenant(2)
    ));
    assert!(ring.shredded().is_none());
}

#[test]
fn shred_keys_needs_a_closed_ring() {
    let (mut ring, _) = ring_with_two_keys(tenant(1));
    let e = shred_keys(tenant(1), &mut ring, t0() + Duration::days(60)).unwrap_err();
    assert!(matches!(
        e,
        RetentionError::Key(KeyError::NotClosing { .. })
    ));
    assert!(ring.shredded().is_none());
}

/// Bug: `Workspace` ignored the rule that an earlier `now` counts as the
/// latest seen. After a plan at the purge time, a reopen stamped 1 ms
/// earlier (a lagging clock) brought back a workspace whose objects were
/// being deleted and whose keys were being shredded.
#[test]
fn regression_a_reopen_from_a_lagging_clock_after_the_purge_began_is_refused() {
    let policy = RetentionPolicy::default();
    let mut w = Workspace::new(tenant(1), Plan::Standard);
    w.close(&policy, t0()).unwrap();
    let purge_at = t0() + Duration::days(30);
    // Not before the purge time.
    assert!(matches!(
        w.clone().begin_purge(purge_at - ms(1)),
        Err(RetentionError::PurgeNotDue { .. })
    ));
    let plan = policy
        .plan(
            purge_at,
            [&w],
            [object(tenant(1), 1, raw(DataType::Alert), t0(), None)],
        )
        .unwrap();
    assert!(purge_actions(&plan, tenant(1)) > 0);
    w.begin_purge(purge_at).unwrap();
    assert_eq!(w.latest_seen(), Some(purge_at));
    assert!(matches!(
        w.reopen(purge_at - ms(1)),
        Err(RetentionError::PurgeDue { .. })
    ));
    assert!(matches!(w.state(), WorkspaceState::Closed { .. }));
    // A restored workspace keeps the rule.
    let restored = Workspace::new(tenant(1), Plan::Standard)
        .with_state(w.state())
        .unwrap()
        .with_latest_seen(w.latest_seen());
    assert!(restored.clone().reopen(t0() + Duration::days(1)).is_err());
    // Marking purged with a lagging clock still works: it counts as the latest.
    w.mark_purged(purge_at - Duration::days(1)).unwrap();
    assert_eq!(w.state(), WorkspaceState::Purged { at: purge_at });
}

#[test]
fn closing_near_the_end_of_time_is_refused_not_shortened() {
    let policy = RetentionPolicy::default();
    for at in [
        DateTime::<Utc>::MAX_UTC,
        DateTime::<Utc>::MAX_UTC - Duration::days(1),
    ] {
        let mut w = Workspace::new(tenant(1), Plan::Free);
        assert!(matches!(
            w.close(&policy, at),
            Err(RetentionError::PurgeTimeOverflow { .. })
        ));
        assert_eq!(w.state(), WorkspaceState::Active);
    }
    let mut w = Workspace::new(tenant(1), Plan::Free);
    let at = DateTime::<Utc>::MAX_UTC - Duration::days(30);
    w.close(&policy, at).unwrap();
    assert_eq!(w.purge_at(), Some(DateTime::<Utc>::MAX_UTC));
}
