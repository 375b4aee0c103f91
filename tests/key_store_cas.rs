//! The key store's compare-and-swap (`docs/KEYS.md`, "Shared key rings"):
//! `MemoryKeyStore` against a model, a ring read, changed and written back
//! through it, and a store without it.

use std::collections::BTreeMap;

use opsdata::{
    CasError, KeyMaterial, KeyRing, KeyStore, MemoryKeyStore, RingVersion, RotationPolicy,
    TenantId, WrappingKey,
};
use proptest::prelude::*;

fn tenant(n: u8) -> TenantId {
    TenantId::from_bytes([n.max(1); 16]).unwrap()
}

#[test]
fn create_if_absent_then_update_only_from_the_current_version() {
    let mut s = MemoryKeyStore::new();
    let t = tenant(1);
    assert_eq!(s.get_versioned(t).unwrap(), None);
    // Create if absent.
    let v1 = s.put_if(t, b"one", None).unwrap();
    assert!(matches!(
        s.put_if(t, b"again", None),
        Err(CasError::Conflict)
    ));
    assert_eq!(
        s.get_versioned(t).unwrap(),
        Some((b"one".to_vec(), v1.clone()))
    );
    // Update from the version read.
    let v2 = s.put_if(t, b"two", Some(&v1)).unwrap();
    assert_ne!(v1, v2);
    // A writer still holding v1 loses, and changes nothing.
    assert!(matches!(
        s.put_if(t, b"stale", Some(&v1)),
        Err(CasError::Conflict)
    ));
    assert_eq!(s.get(t).unwrap(), Some(b"two".to_vec()));
    // An unconditional put is a new version too: v2 is stale after it.
    s.put(t, b"three").unwrap();
    assert!(matches!(
        s.put_if(t, b"stale", Some(&v2)),
        Err(CasError::Conflict)
    ));
    let (bytes, v3) = s.get_versioned(t).unwrap().unwrap();
    assert_eq!(bytes, b"three");
    assert_ne!(v3, v2);
    // Expecting a version for a tenant with nothing stored: a conflict.
    assert!(matches!(
        s.put_if(tenant(2), b"x", Some(&v3)),
        Err(CasError::Conflict)
    ));
    assert_eq!(s.get(tenant(2)).unwrap(), None);
    // A token the store never gave: a conflict, nothing written.
    assert!(matches!(
        s.put_if(t, b"x", Some(&RingVersion::new("not a version"))),
        Err(CasError::Conflict)
    ));
    assert_eq!(s.get(t).unwrap(), Some(b"three".to_vec()));
}

/// Two nodes provisioning one tenant's ring at once through the store:
/// one creates it, the other gets a conflict, reloads, and ends with the
/// winner's ring.
#[test]
fn two_writers_of_one_new_ring_end_with_one() {
    let wrapping = WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]));
    let t = tenant(3);
    let mut s = MemoryKeyStore::new();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let mut e1 = opsdata::DeterministicEntropy::from_u64(1);
    let mut e2 = opsdata::DeterministicEntropy::from_u64(2);
    let make = |e: &mut opsdata::DeterministicEntropy| {
        let mut r = KeyRing::new(t, &RotationPolicy::default());
        let k = r.generate(e, now).unwrap();
        r.promote(k, now).unwrap();
        r
    };
    let (r1, r2) = (make(&mut e1), make(&mut e2));
    // Both saw no ring.
    assert_eq!(s.get_versioned(t).unwrap(), None);
    let sealed1 = r1.to_sealed(&wrapping, &mut e1).unwrap();
    let sealed2 = r2.to_sealed(&wrapping, &mut e2).unwrap();
    s.put_if(t, &sealed1, None).unwrap();
    assert!(matches!(
        s.put_if(t, &sealed2, None),
        Err(CasError::Conflict)
    ));
    // The loser reloads: the winner's ring.
    let (bytes, _) = s.get_versioned(t).unwrap().unwrap();
    assert_eq!(bytes, sealed1);
    let loaded = KeyRing::from_sealed(&bytes, t, &wrapping).unwrap();
    assert_eq!(loaded.tenant(), t);
    assert!(loaded.primary().is_some());
}

/// A store that implements only `put` and `get`: the defaults say it
/// cannot compare-and-swap, and write nothing.
#[derive(Default)]
struct PlainStore(BTreeMap<TenantId, Vec<u8>>);

impl KeyStore for PlainStore {
    type Error = std::convert::Infallible;
    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), Self::Error> {
        self.0.insert(tenant, sealed.to_vec());
        Ok(())
    }
    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0.get(&tenant).cloned())
    }
}

#[test]
fn a_store_without_compare_and_swap_says_so() {
    let mut s = PlainStore::default();
    assert!(matches!(
        s.put_if(tenant(1), b"x", None),
        Err(CasError::Unsupported)
    ));
    assert!(s.0.is_empty());
    assert!(matches!(
        s.get_versioned(tenant(1)),
        Err(CasError::Unsupported)
    ));
}

#[derive(Debug, Clone)]
enum Op {
    /// Unconditional put.
    Put(u8, u8),
    /// Conditional put expecting: 0 = nothing stored, 1 = the current
    /// version, 2 = an older version the test was given, if any.
    PutIf(u8, u8, u8),
    Get(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, any::<u8>()).prop_map(|(t, b)| Op::Put(t, b)),
        (0u8..3, any::<u8>(), 0u8..3).prop_map(|(t, b, e)| Op::PutIf(t, b, e)),
        (0u8..3).prop_map(Op::Get),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// `MemoryKeyStore` against a model: per tenant the stored bytes and
    /// how many writes it had. `put_if` succeeds exactly when the expected
    /// version is the stored one (or nothing, for `None` and nothing
    /// stored); a refused one changes nothing; every write gives a version
    /// never given before.
    #[test]
    fn memory_key_store_is_a_compare_and_swap_register(ops in proptest::collection::vec(op(), 1..80)) {
        let mut s = MemoryKeyStore::new();
        // tenant -> (bytes, current version)
        let mut model: BTreeMap<u8, (Vec<u8>, RingVersion)> = BTreeMap::new();
        // every version handed out, per tenant, oldest first
        let mut seen: BTreeMap<u8, Vec<RingVersion>> = BTreeMap::new();
        let mut all: Vec<RingVersion> = Vec::new();
        for op in ops {
            match op {
                Op::Put(t, b) => {
                    s.put(tenant(t + 1), &[b]).unwrap();
                    let (_, v) = s.get_versioned(tenant(t + 1)).unwrap().unwrap();
                    prop_assert!(!all.contains(&v));
                    all.push(v.clone());
                    seen.entry(t).or_default().push(v.clone());
                    model.insert(t, (vec![b], v));
                }
                Op::PutIf(t, b, e) => {
                    let expected = match e {
                        0 => None,
                        1 => model.get(&t).map(|(_, v)| v.clone()),
                        _ => seen.get(&t).and_then(|vs| vs.first().cloned()),
                    };
                    let current = model.get(&t).map(|(_, v)| v.clone());
                    let r = s.put_if(tenant(t + 1), &[b], expected.as_ref());
                    if expected == current {
                        let v = r.unwrap();
                        prop_assert!(!all.contains(&v));
                        all.push(v.clone());
                        seen.entry(t).or_default().push(v.clone());
                        model.insert(t, (vec![b], v));
                    } else {
                        prop_assert!(matches!(r, Err(CasError::Conflict)));
                    }
                }
                Op::Get(t) => {
                    let got = s.get_versioned(tenant(t + 1)).unwrap();
                    prop_assert_eq!(got, model.get(&t).cloned());
                    prop_assert_eq!(
                        s.get(tenant(t + 1)).unwrap(),
                        model.get(&t).map(|(b, _)| b.clone())
                    );
                }
            }
        }
    }
}
