//! Key usage reserved in blocks (`docs/KEYS.md`, "Usage in blocks"): the
//! stored usage is never below the real usage, a crash loses at most the
//! unused rest of a block, the hard limit is never passed.

use chrono::{DateTime, TimeZone, Utc};
use opsdata::{
    BatchId, DataType, DeterministicEntropy, Frame, FrameEncoder, KeyError, KeyMaterial, KeyRing,
    RotationPolicy, TenantBatch, TenantId, WrappingKey, seal,
};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn tenant() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
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
fn wrapping() -> WrappingKey {
    WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]))
}
fn ring(hard: u64) -> (KeyRing, DeterministicEntropy) {
    let policy = RotationPolicy::default()
        .with_usage_limits(1, hard)
        .unwrap();
    let mut e = DeterministicEntropy::from_u64(3);
    let mut ring = KeyRing::new(tenant(), &policy);
    let k = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k, t0()).unwrap();
    (ring, e)
}
fn primary_usage(ring: &KeyRing) -> u64 {
    ring.primary().unwrap().usage
}

#[test]
fn seals_stop_at_the_reservation_and_a_reload_records_it() {
    let (mut ring, mut e) = ring(1000);
    // Nothing reserved yet.
    assert_eq!(ring.reserved_left(), 0);
    let r = ring.reserve_uses(3).unwrap();
    assert_eq!((r.previous, r.reserved), (0, 3));
    assert_eq!(ring.reserved_left(), 3);
    let saved = ring.to_sealed(&wrapping(), &mut e).unwrap();
    for n in 0..3 {
        seal(&frame(n), &mut ring, &mut e, t0()).unwrap();
    }
    assert_eq!(ring.reserved_left(), 0);
    let refused = seal(&frame(9), &mut ring, &mut e, t0());
    assert!(matches!(refused, Err(KeyError::UsageNotReserved { .. })));
    assert_eq!(primary_usage(&ring), 3, "a refused seal counts nothing");
    // The ring saved at the reservation records the whole block.
    let back = KeyRing::from_sealed(&saved, tenant(), &wrapping()).unwrap();
    assert_eq!(primary_usage(&back), 3);
    // After one seal of a new block, a crash loses the other 4 of it.
    let r = ring.reserve_uses(5).unwrap();
    assert_eq!((r.previous, r.reserved), (3, 8));
    let saved = ring.to_sealed(&wrapping(), &mut e).unwrap();
    seal(&frame(10), &mut ring, &mut e, t0()).unwrap();
    let mut back = KeyRing::from_sealed(&saved, tenant(), &wrapping()).unwrap();
    assert_eq!(primary_usage(&back), 8);
    // The reloaded ring has nothing reserved until it reserves again...
    let _ = back.reserve_uses(1).unwrap();
    assert_eq!(back.reserved(back.primary().unwrap().id), Some(9));
}

#[test]
fn the_hard_limit_caps_reservations_and_refusals_change_nothing() {
    let (mut ring, mut e) = ring(5);
    let r = ring.reserve_uses(100).unwrap();
    assert_eq!(r.reserved, 5);
    for n in 0..5 {
        seal(&frame(n), &mut ring, &mut e, t0()).unwrap();
    }
    assert!(matches!(
        ring.reserve_uses(1),
        Err(KeyError::UsageExhausted { .. })
    ));
    assert!(matches!(ring.reserve_uses(0), Err(KeyError::Policy(_))));
    assert!(matches!(
        seal(&frame(7), &mut ring, &mut e, t0()),
        Err(KeyError::UsageExhausted { .. })
    ));
    let empty = KeyRing::new(tenant(), &RotationPolicy::default());
    let mut empty2 = empty;
    assert!(matches!(
        empty2.reserve_uses(1),
        Err(KeyError::NoPrimaryKey { .. })
    ));
}

#[test]
fn a_cancelled_reservation_restores_the_ring() {
    let (mut ring, mut e) = ring(1000);
    seal(&frame(0), &mut ring, &mut e, t0()).unwrap();
    let r = ring.reserve_uses(10).unwrap();
    assert_eq!(r.reserved, 11);
    // The save failed: back to nothing reserved (and unbounded sealing, as
    // before the reservation).
    ring.cancel_reservation(r);
    assert_eq!(ring.reserved_left(), 0);
    seal(&frame(5), &mut ring, &mut e, t0()).unwrap();
    let r = ring.reserve_uses(10).unwrap();
    seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    // Too late to cancel once sealed under it: nothing changes.
    ring.cancel_reservation(r);
    assert_eq!(ring.reserved_left(), 9);
    assert_eq!(r.reserved, 12);
}

#[derive(Debug, Clone)]
enum Step {
    Seal,
    Reserve(u64),
    SaveFails(u64),
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Seal),
        2 => (1u64..20).prop_map(Step::Reserve),
        1 => (1u64..20).prop_map(Step::SaveFails),
        1 => Just(Step::Crash),
    ]
}

proptest! {
    /// A host following the protocol (reserve, save, then seal; reserve
    /// again when `reserved_left` is 0; cancel when a save fails) never
    /// has a stored usage below the seals really made, never seals past
    /// the hard limit, and loses at most one block per crash.
    #[test]
    fn stored_usage_never_below_real_usage(steps in prop::collection::vec(step(), 1..120), hard in 1u64..60) {
        let (mut ring, mut e) = ring(hard);
        let mut stored = ring.to_sealed(&wrapping(), &mut e).unwrap();
        let mut real = 0u64;
        let mut n = 0u128;
        for s in steps {
            match s {
                Step::Seal => {
                    n += 1;
                    if ring.reserved_left() == 0 {
                        // The protocol: reserve and save first.
                        match ring.reserve_uses(8) {
                            Ok(_) => stored = ring.to_sealed(&wrapping(), &mut e).unwrap(),
                            Err(KeyError::UsageExhausted { .. }) => {
                                prop_assert_eq!(real, hard);
                                continue;
                            }
                            Err(err) => panic!("{err}"),
                        }
                    }
                    let before = primary_usage(&ring);
                    match seal(&frame(n), &mut ring, &mut e, t0()) {
                        Ok(_) => real += 1,
                        Err(err) => {
                            prop_assert!(matches!(err, KeyError::UsageExhausted { .. }), "{}", err);
                            prop_assert_eq!(primary_usage(&ring), before);
                        }
                    }
                }
                // The protocol reserves only when the block is used up.
                Step::Reserve(b) => {
                    if ring.reserved_left() == 0 && ring.reserve_uses(b).is_ok() {
                        stored = ring.to_sealed(&wrapping(), &mut e).unwrap();
                    }
                }
                Step::SaveFails(b) => {
                    if let Ok(r) = ring.reserve_uses(b) {
                        ring.cancel_reservation(r);
                    }
                }
                Step::Crash => {
                    let back = KeyRing::from_sealed(&stored, tenant(), &wrapping()).unwrap();
                    // Lost at most the rest of one block (8, or a Reserve's
                    // up to 19).
                    prop_assert!(primary_usage(&back) - real < 20);
                    ring = back;
                    real = primary_usage(&ring);
                }
            }
            let recorded = KeyRing::from_sealed(&stored, tenant(), &wrapping()).unwrap();
            prop_assert!(primary_usage(&recorded) >= real, "stored {} < real {}", primary_usage(&recorded), real);
            prop_assert!(real <= hard);
        }
    }
}
