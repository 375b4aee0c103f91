//! The planner lease (`docs/SCALE.md`, "The planner lease") as a model:
//! three nodes poll one lease object in an in-memory object store at
//! arbitrary times, each with its own clock off by up to a second (less
//! than the margin), stalling and restarting. At every step, at most one
//! node may act (`holds` on its own clock), terms only grow, and a lease
//! whose holder stopped polling is taken over once it has lapsed.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use object_store::ObjectStore;
use opsdata_io::{Lease, LeaseState};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Time passes, in milliseconds.
    Wait(i64),
    /// Node polls.
    Poll(usize),
    /// Node releases.
    Release(usize),
    /// Node restarts: a new node id, nothing held.
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..20_000).prop_map(Step::Wait),
        6 => (0..3usize).prop_map(Step::Poll),
        1 => (0..3usize).prop_map(Step::Release),
        1 => (0..3usize).prop_map(Step::Restart),
    ]
}

fn lease(store: &Arc<dyn ObjectStore>, id: u128) -> Lease {
    Lease::new(store.clone(), "leases/planner", Uuid::from_u128(id))
        .unwrap()
        .with_ttl(Duration::seconds(30), Duration::seconds(5))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn at_most_one_node_acts_at_any_time(
        steps in prop::collection::vec(step(), 1..200),
        skews in prop::array::uniform3(-1000i64..=1000),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let mut next_id = 3u128;
        let mut nodes: Vec<Lease> = (0..3).map(|i| lease(&store, i)).collect();
        let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let mut now = start;
        let clock = |i: usize, now: DateTime<Utc>| now + Duration::milliseconds(skews[i]);
        let mut last_term = 0u64;
        for s in steps {
            match s {
                Step::Wait(ms) => now += Duration::milliseconds(ms),
                Step::Poll(i) => {
                    let t = clock(i, now);
                    let state = rt.block_on(nodes[i].poll(t)).unwrap();
                    if let LeaseState::Held { term, .. } = state {
                        prop_assert!(term >= last_term, "the term went back");
                        last_term = term;
                    }
                }
                Step::Release(i) => {
                    rt.block_on(nodes[i].release(clock(i, now))).unwrap();
                }
                Step::Restart(i) => {
                    next_id += 1;
                    nodes[i] = lease(&store, next_id);
                }
            }
            let acting = (0..3).filter(|&i| nodes[i].holds(clock(i, now))).count();
            prop_assert!(acting <= 1, "{} nodes act at once", acting);
        }
        // Whoever held it stops; after the ttl and the margin (and the
        // skews, up to 2 s apart), any node takes it over.
        now += Duration::seconds(37);
        let t = clock(0, now);
        let state = rt.block_on(nodes[0].poll(t)).unwrap();
        let held = matches!(state, LeaseState::Held { .. });
        prop_assert!(held, "a lapsed lease was not taken over: {:?}", state);
    }
}
