//! Key rings shared by several nodes through a key store's compare-and-swap
//! (`docs/KEYS.md`, "Shared key rings"): a model of nodes that read the
//! stored ring, change their copy (reserve a block of uses, rotate, or just
//! refresh), and write it back only if the stored version is still the one
//! they read, interleaved arbitrarily, with crashes.
//!
//! Checked after every step: no two seals anywhere use one (key, use)
//! pair; every frame sealed by any node opens with the stored ring (so no
//! two nodes ever made two keys of one version); the stored usage of each
//! key is at least the seals made under it, and never past the hard limit;
//! the stored ring has at most one primary.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    BatchId, CasError, DataType, DeterministicEntropy, Frame, FrameEncoder, KeyId, KeyMaterial,
    KeyRing, KeyStatus, KeyStore, MemoryKeyStore, RingVersion, RotationPolicy, TenantBatch,
    TenantId, WrappingKey, open, seal,
};
use proptest::prelude::*;
use uuid::Uuid;

const HARD: u64 = 40;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn tenant() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}
fn wrapping() -> WrappingKey {
    WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]))
}
fn policy() -> RotationPolicy {
    RotationPolicy::default()
        .with_usage_limits(1, HARD)
        .unwrap()
}
fn frame(n: u128) -> Frame {
    FrameEncoder::new()
        .encode_frame(
            &TenantBatch::new(tenant(), DataType::Alert),
            BatchId::new(Uuid::from_u128(n + 1)).unwrap(),
            t0(),
        )
        .unwrap()
}
fn read(store: &MemoryKeyStore) -> (KeyRing, RingVersion) {
    let (bytes, version) = store.get_versioned(tenant()).unwrap().unwrap();
    (
        KeyRing::from_sealed(&bytes, tenant(), &wrapping()).unwrap(),
        version,
    )
}

/// What a node changes in the copy it read.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Reserve a block of this many uses.
    Reserve(u64),
    /// Generate a pending key, or promote the pending one.
    Rotate,
    /// Nothing: re-read only.
    Refresh,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Node reads the stored ring and changes its copy.
    Read(usize, Change),
    /// Node writes its changed copy, if the stored version is still the
    /// one it read.
    Write(usize),
    /// Node seals a frame, if it has a reserved use left.
    Seal(usize),
    /// Node dies: its copy and its reservation are gone.
    Crash(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let change = prop_oneof![
        3 => (1u64..8).prop_map(Change::Reserve),
        1 => Just(Change::Rotate),
        1 => Just(Change::Refresh),
    ];
    prop_oneof![
        3 => (0..3usize, change).prop_map(|(n, c)| Step::Read(n, c)),
        3 => (0..3usize).prop_map(Step::Write),
        6 => (0..3usize).prop_map(Step::Seal),
        1 => (0..3usize).prop_map(Step::Crash),
    ]
}

#[derive(Default)]
struct Node {
    /// The copy it seals from.
    ring: Option<KeyRing>,
    /// A changed copy waiting to be written, and the version it was read
    /// at (`None` for a plain refresh, adopted at once).
    pending: Option<(KeyRing, RingVersion)>,
}

proptest! {
    #[test]
    fn nodes_sharing_a_ring_never_reuse_a_seal_or_split_a_version(
        steps in prop::collection::vec(step(), 1..150),
    ) {
        let mut e = DeterministicEntropy::from_u64(11);
        let mut ring = KeyRing::new(tenant(), &policy());
        let k = ring.generate(&mut e, t0()).unwrap();
        ring.promote(k, t0()).unwrap();
        let mut store = MemoryKeyStore::new();
        store
            .put_if(tenant(), &ring.to_sealed(&wrapping(), &mut e).unwrap(), None)
            .unwrap();
        let mut nodes: Vec<Node> = (0..3).map(|_| Node::default()).collect();
        let mut used: HashSet<(KeyId, u64)> = HashSet::new();
        let mut seals: BTreeMap<KeyId, u64> = BTreeMap::new();
        let mut sealed: Vec<Frame> = Vec::new();
        let mut now = t0();
        let mut n = 0u128;
        for s in steps {
            now += Duration::seconds(1);
            match s {
                Step::Read(i, change) => {
                    let (mut copy, version) = read(&store);
                    match change {
                        Change::Reserve(b) => {
                            if copy.reserve_uses(b).is_err() {
                                continue;
                            }
                        }
                        Change::Rotate => {
                            let action = match copy.pending() {
                                Some(p) => copy.promote(p.id, now),
                                None => copy.generate(&mut e, now).map(|_| ()),
                            };
                            prop_assert!(action.is_ok());
                        }
                        Change::Refresh => {
                            if let Some(old) = &nodes[i].ring {
                                let _kept = copy.keep_reservation(old);
                            }
                            nodes[i].ring = Some(copy);
                            continue;
                        }
                    }
                    nodes[i].pending = Some((copy, version));
                }
                Step::Write(i) => {
                    let Some((mut copy, version)) = nodes[i].pending.take() else {
                        continue;
                    };
                    let bytes = copy.to_sealed(&wrapping(), &mut e).unwrap();
                    match store.put_if(tenant(), &bytes, Some(&version)) {
                        Ok(_) => {
                            // A reservation made on this copy is its own;
                            // otherwise keep the one the node held.
                            if copy.reserved_left() == 0
                                && let Some(old) = &nodes[i].ring
                            {
                                let _kept = copy.keep_reservation(old);
                            }
                            nodes[i].ring = Some(copy);
                        }
                        Err(CasError::Conflict) => {}
                        Err(err) => panic!("{err}"),
                    }
                }
                Step::Seal(i) => {
                    let Some(ring) = nodes[i].ring.as_mut() else { continue };
                    if ring.reserved_left() == 0 {
                        continue;
                    }
                    let p = ring.primary().unwrap();
                    let (id, before) = (p.id, p.usage);
                    n += 1;
                    let f = seal(&frame(n), ring, &mut e, now).unwrap();
                    prop_assert!(used.insert((id, before)), "use {} of key {} sealed twice", before, id);
                    *seals.entry(id).or_default() += 1;
                    sealed.push(f);
                }
                Step::Crash(i) => nodes[i] = Node::default(),
            }
            let (stored, _) = read(&store);
            for (id, count) in &seals {
                let recorded = stored.reserved(*id).unwrap();
                prop_assert!(recorded >= *count, "key {}: recorded {} < sealed {}", id, recorded, count);
                prop_assert!(recorded <= HARD);
            }
            let primaries = stored
                .versions()
                .filter(|v| v.status == KeyStatus::Primary)
                .count();
            prop_assert!(primaries <= 1);
            for f in &sealed {
                prop_assert!(open(f, &stored).is_ok(), "a sealed frame does not open with the stored ring");
            }
        }
    }
}

#[test]
fn a_refresh_keeps_the_rest_of_a_block_and_a_new_primary_drops_it() {
    let mut e = DeterministicEntropy::from_u64(5);
    let mut ring = KeyRing::new(tenant(), &policy());
    let k = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k, t0()).unwrap();
    let _r = ring.reserve_uses(10).unwrap();
    let mine = ring.to_sealed(&wrapping(), &mut e).unwrap();
    seal(&frame(0), &mut ring, &mut e, t0()).unwrap();
    // Another node reserved 10 more after this one: the store records 20.
    let mut other = KeyRing::from_sealed(&mine, tenant(), &wrapping()).unwrap();
    let _r = other.reserve_uses(10).unwrap();
    let theirs = other.to_sealed(&wrapping(), &mut e).unwrap();

    let mut fresh = KeyRing::from_sealed(&theirs, tenant(), &wrapping()).unwrap();
    assert_eq!(fresh.reserved_left(), 0);
    assert!(fresh.keep_reservation(&ring));
    assert_eq!(fresh.reserved_left(), 9, "the rest of this node's block");
    assert_eq!(fresh.primary().unwrap().usage, 1);

    // A copy that does not record the block (older than the reservation)
    // takes nothing.
    let mut stale = KeyRing::new(tenant(), &policy());
    let k2 = stale.generate(&mut e, t0()).unwrap();
    stale.promote(k2, t0()).unwrap();
    assert!(!stale.keep_reservation(&ring), "another primary");
    let mut before_block = KeyRing::from_sealed(&mine, tenant(), &wrapping()).unwrap();
    let _r = ring.reserve_uses(5).unwrap();
    assert!(
        !before_block.keep_reservation(&ring),
        "the copy records 10, the block ends at 15"
    );

    // After a rotation the old primary's block is abandoned.
    let mut rotated = KeyRing::from_sealed(&theirs, tenant(), &wrapping()).unwrap();
    let k3 = rotated.generate(&mut e, t0()).unwrap();
    rotated.promote(k3, t0() + Duration::hours(25)).unwrap();
    assert!(!rotated.keep_reservation(&ring));
    assert_eq!(rotated.reserved_left(), 0);
}
