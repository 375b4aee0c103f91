//! Keys: sealing and opening across rotations, rewrap, every tamper, the
//! rotation policy under an injected clock, compromise, shredding, the
//! stored ring, and AES-256-GCM known answers.

#![allow(clippy::disallowed_methods)] // tests read vector files

mod common;

use std::path::PathBuf;

use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    Applied, BatchId, Codec, DataType, Decoded, DeterministicEntropy, Entropy, EntropyUnavailable,
    Frame, FrameDecoder, FrameEncoder, FrameError, FrameLimits, KeyAction, KeyCensus, KeyError,
    KeyId, KeyMaterial, KeyRing, KeyStatus, MemoryKeyStore, PayloadReader, RotationPolicy,
    RotationReason, SealPart, Tagged, TenantBatch, TenantId, WrappingKey, load_ring, open, peek,
    rewrap, save_ring, seal,
};
use proptest::prelude::*;
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn tenant() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}
fn other_tenant() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}
fn id(n: u32) -> KeyId {
    KeyId::new(n).unwrap()
}

fn frame_for(t: TenantId, data_type: DataType, codec: Codec, n: u128) -> Frame {
    let batch = TenantBatch::from_records(
        t,
        data_type,
        (0..3).map(|_| Tagged::new(t, common::sample(data_type))),
    )
    .unwrap();
    FrameEncoder::new()
        .with_codec(codec)
        .encode_frame(&batch, BatchId::new(Uuid::from_u128(n)).unwrap(), t0())
        .unwrap()
}

fn frame(n: u128) -> Frame {
    frame_for(tenant(), DataType::Event, Codec::Deflate, n)
}

/// A ring with one primary key, made from `seed`.
fn ring_with_primary(seed: u64) -> (KeyRing, DeterministicEntropy) {
    let mut e = DeterministicEntropy::from_u64(seed);
    let mut ring = KeyRing::new(tenant(), &RotationPolicy::default());
    let k = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k, t0()).unwrap();
    (ring, e)
}

/// Recomputes both CRCs of a sealed frame after an edit, so the edit
/// reaches the cryptography instead of stopping at a checksum.
fn recrc(bytes: &mut [u8]) {
    let crc = common::crc32(&bytes[..132]);
    bytes[132..136].copy_from_slice(&crc.to_be_bytes());
    let body_len = u32::from_be_bytes(bytes[60..64].try_into().unwrap()) as usize;
    let crc = common::crc32(&bytes[136..136 + body_len]);
    bytes[136 + body_len..140 + body_len].copy_from_slice(&crc.to_be_bytes());
}

fn decode(bytes: Vec<u8>) -> Frame {
    Frame::decode(bytes.into(), &FrameLimits::default()).unwrap()
}

#[test]
fn seal_then_open_gives_back_the_frame_for_every_type_and_codec() {
    let (mut ring, mut e) = ring_with_primary(1);
    let mut reader = PayloadReader::new(FrameLimits::default());
    for (n, data_type) in DataType::ALL.into_iter().enumerate() {
        for codec in [Codec::None, Codec::Deflate] {
            let f = frame_for(tenant(), data_type, codec, n as u128 + 1);
            let sealed = seal(&f, &mut ring, &mut e, t0()).unwrap();
            assert!(sealed.header().sealed);
            assert_eq!(sealed.len(), f.len() + 68 + 16);
            assert_eq!(sealed.header().body_len, f.header().body_len + 16);
            // It travels as any frame does.
            let again = decode(sealed.as_bytes().to_vec());
            assert_eq!(again, sealed);
            let opened = open(&again, &ring).unwrap();
            assert_eq!(opened, f, "{data_type:?} {codec:?}");
            assert_eq!(opened.as_bytes(), f.as_bytes());
            assert_eq!(reader.records(&opened).unwrap().len(), 3);
        }
    }
    assert_eq!(ring.primary().unwrap().usage, 12);
}

#[test]
fn sealing_twice_gives_different_bytes_that_open_the_same() {
    let (mut ring, mut e) = ring_with_primary(2);
    let f = frame(1);
    let a = seal(&f, &mut ring, &mut e, t0()).unwrap();
    let b = seal(&f, &mut ring, &mut e, t0()).unwrap();
    assert_ne!(
        a.as_bytes(),
        b.as_bytes(),
        "fresh data key and nonce each time"
    );
    assert_eq!(open(&a, &ring).unwrap(), open(&b, &ring).unwrap());
}

#[test]
fn seal_refuses_misuse_and_changes_nothing() {
    let (mut ring, mut e) = ring_with_primary(3);
    let theirs = frame_for(other_tenant(), DataType::Alert, Codec::None, 1);
    assert!(matches!(
        seal(&theirs, &mut ring, &mut e, t0()),
        Err(KeyError::TenantMismatch { expected, found }) if expected == tenant() && found == other_tenant()
    ));
    let sealed = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    assert!(matches!(
        seal(&sealed, &mut ring, &mut e, t0()),
        Err(KeyError::AlreadySealed)
    ));
    assert!(matches!(open(&frame(1), &ring), Err(KeyError::NotSealed)));
    assert_eq!(ring.primary().unwrap().usage, 1);
    let mut empty = KeyRing::new(tenant(), &RotationPolicy::default());
    assert!(matches!(
        seal(&frame(1), &mut empty, &mut e, t0()),
        Err(KeyError::NoPrimaryKey { .. })
    ));
    struct Broken;
    impl Entropy for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyUnavailable> {
            Err(EntropyUnavailable)
        }
    }
    assert!(matches!(
        seal(&frame(1), &mut ring, &mut Broken, t0()),
        Err(KeyError::Entropy(_))
    ));
    assert_eq!(ring.primary().unwrap().usage, 1);
}

#[test]
fn opening_across_rotations_and_the_errors_that_tell_why_not() {
    let (mut ring, mut e) = ring_with_primary(4);
    let old = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    let k2 = ring.generate(&mut e, t0()).unwrap();
    // A pending key does not seal, but what it sealed elsewhere opens.
    let still_k1 = seal(&frame(2), &mut ring, &mut e, t0()).unwrap();
    assert_eq!(peek(still_k1.as_bytes()).unwrap().kek_id, Some(id(1)));
    ring.promote(k2, t0() + Duration::days(1)).unwrap();
    let new = seal(&frame(3), &mut ring, &mut e, t0()).unwrap();
    assert_eq!(peek(new.as_bytes()).unwrap().kek_id, Some(k2));
    assert_eq!(ring.get(id(1)).unwrap().status, KeyStatus::DecryptOnly);
    open(&old, &ring).unwrap();
    open(&new, &ring).unwrap();

    // Rotated away: disabled, and back.
    ring.disable(id(1), t0() + Duration::days(2)).unwrap();
    match open(&old, &ring) {
        Err(KeyError::KeyDisabled { id: k, .. }) => assert_eq!(k, id(1)),
        other => panic!("{other:?}"),
    }
    ring.enable(id(1)).unwrap();
    open(&old, &ring).unwrap();
    // Destroyed: gone for good.
    ring.disable(id(1), t0() + Duration::days(3)).unwrap();
    ring.destroy(id(1), t0() + Duration::days(4)).unwrap();
    assert!(matches!(open(&old, &ring), Err(KeyError::KeyDestroyed { id: k, .. }) if k == id(1)));
    assert!(matches!(
        ring.enable(id(1)),
        Err(KeyError::InvalidTransition { .. })
    ));
    // Unknown: a key this ring never had.
    let mut other = KeyRing::new(tenant(), &RotationPolicy::default());
    assert!(matches!(open(&old, &other), Err(KeyError::UnknownKey { id: k, .. }) if k == id(1)));
    // Another tenant's ring refuses before any cryptography.
    let theirs = KeyRing::new(other_tenant(), &RotationPolicy::default());
    assert!(matches!(
        open(&new, &theirs),
        Err(KeyError::TenantMismatch { .. })
    ));
    // Same id, other material: that is tampering as far as anyone can tell.
    let k = other.generate(&mut e, t0()).unwrap();
    other.promote(k, t0()).unwrap();
    assert!(matches!(
        open(&old, &other),
        Err(KeyError::Tampered {
            part: SealPart::WrappedKey
        })
    ));
}

#[test]
fn lifecycle_misuse_is_a_typed_error_that_changes_nothing() {
    let (mut ring, mut e) = ring_with_primary(5);
    assert!(matches!(
        ring.disable(id(1), t0()),
        Err(KeyError::InvalidTransition {
            status: KeyStatus::Primary,
            ..
        })
    ));
    assert!(matches!(
        ring.destroy(id(1), t0()),
        Err(KeyError::InvalidTransition { .. })
    ));
    assert!(matches!(
        ring.promote(id(9), t0()),
        Err(KeyError::UnknownKey { .. })
    ));
    let k2 = ring.generate(&mut e, t0()).unwrap();
    assert!(matches!(
        ring.destroy(k2, t0()),
        Err(KeyError::InvalidTransition { .. })
    ));
    assert!(matches!(
        ring.import(id(2), KeyMaterial::from_bytes([1; 32]), t0()),
        Err(KeyError::InvalidTransition { .. })
    ));
    assert_eq!(ring.primary().unwrap().id, id(1));
    assert_eq!(ring.get(k2).unwrap().status, KeyStatus::Pending);
    assert!(KeyId::new(0).is_err());
}

#[test]
fn rewrap_changes_only_the_seal_section_and_header_crc() {
    let (mut ring, mut e) = ring_with_primary(6);
    let f = frame(1);
    let old = seal(&f, &mut ring, &mut e, t0()).unwrap();
    // Already under the primary: nothing to do.
    assert_eq!(rewrap(&old, &mut ring, &mut e, t0()).unwrap(), old);
    let k2 = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k2, t0()).unwrap();
    let new = rewrap(&old, &mut ring, &mut e, t0()).unwrap();
    let (a, b) = (old.as_bytes(), new.as_bytes());
    assert_eq!(a.len(), b.len());
    assert_eq!(a[..64], b[..64], "fixed header");
    assert_ne!(a[64..132], b[64..132], "seal section");
    assert_eq!(a[136..], b[136..], "body and body CRC byte-identical");
    assert_eq!(peek(b).unwrap().kek_id, Some(k2));
    assert_eq!(ring.get(k2).unwrap().usage, 1);
    // The old key can go: the rewrapped frame no longer needs it.
    ring.disable(id(1), t0()).unwrap();
    assert_eq!(open(&new, &ring).unwrap(), f);
    assert!(matches!(
        rewrap(&old, &mut ring, &mut e, t0()),
        Err(KeyError::KeyDisabled { .. })
    ));
}

#[test]
fn every_tamper_is_detected() {
    let (mut ring, mut e) = ring_with_primary(7);
    let sealed = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    let good = sealed.as_bytes().to_vec();
    let body_len = sealed.header().body_len as usize;
    let tag_at = 136 + body_len - 16;
    // (what, byte offset, expected outcome)
    let cases: &[(&str, usize)] = &[
        ("batch id", 40),
        ("created", 50),
        ("record count", 15),
        ("content len", 59),
        ("nonce", 64 + 10),
        ("wrapped key", 64 + 30),
        ("wrapped key tag", 64 + 60),
        ("body", 140),
        ("tag", tag_at + 3),
    ];
    for &(what, at) in cases {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        recrc(&mut bytes);
        let f = decode(bytes);
        match open(&f, &ring) {
            Err(KeyError::Tampered { .. }) => {}
            other => panic!("{what} at {at}: {other:?}"),
        }
    }
    // The tenant: refused by tenant before any cryptography; relabelled to a
    // tenant whose ring holds the same material, still refused.
    let mut bytes = good.clone();
    bytes[16..32].copy_from_slice(other_tenant().as_bytes());
    recrc(&mut bytes);
    let f = decode(bytes);
    assert!(matches!(
        open(&f, &ring),
        Err(KeyError::TenantMismatch { .. })
    ));
    let mut e2 = DeterministicEntropy::from_u64(7);
    let mut twin = KeyRing::new(other_tenant(), &RotationPolicy::default());
    let k = twin.generate(&mut e2, t0()).unwrap();
    twin.promote(k, t0()).unwrap();
    assert!(matches!(open(&f, &twin), Err(KeyError::Tampered { .. })));
    // The key id: a key the ring lacks, or another of its keys.
    let mut bytes = good.clone();
    bytes[64 + 7] = 2;
    recrc(&mut bytes);
    let f = decode(bytes);
    assert!(matches!(open(&f, &ring), Err(KeyError::UnknownKey { .. })));
    let k2 = ring.generate(&mut e, t0()).unwrap();
    assert_eq!(k2, id(2));
    assert!(matches!(
        open(&f, &ring),
        Err(KeyError::Tampered {
            part: SealPart::WrappedKey
        })
    ));
    // Suite and reserved bytes.
    let mut bytes = good.clone();
    bytes[64] = 2;
    recrc(&mut bytes);
    assert!(matches!(
        open(&decode(bytes), &ring),
        Err(KeyError::UnsupportedSuite { suite: 2 })
    ));
    let mut bytes = good.clone();
    bytes[66] = 1;
    recrc(&mut bytes);
    assert!(matches!(
        open(&decode(bytes), &ring),
        Err(KeyError::MalformedSeal { .. })
    ));
    // Without repairing the CRC, the frame layer catches any flip first.
    let mut bytes = good;
    bytes[140] ^= 1;
    assert!(Frame::decode(bytes.into(), &FrameLimits::default()).is_err());
}

#[test]
fn peek_reads_the_census_fields_without_a_key() {
    let (mut ring, mut e) = ring_with_primary(8);
    let f = frame(42);
    let sealed = seal(&f, &mut ring, &mut e, t0()).unwrap();
    let p = peek(&sealed.as_bytes()[..136]).unwrap();
    assert_eq!(p.tenant, tenant());
    assert_eq!(p.data_type, DataType::Event);
    assert_eq!(p.batch_id, f.batch_id());
    assert_eq!(p.kek_id, Some(id(1)));
    assert_eq!(p.frame_len, sealed.len());
    assert_eq!(peek(f.as_bytes()).unwrap().kek_id, None);
    assert!(matches!(
        peek(&sealed.as_bytes()[..100]),
        Err(KeyError::Frame(_))
    ));
    let mut bad = sealed.as_bytes().to_vec();
    bad[20] ^= 1;
    assert!(matches!(peek(&bad), Err(KeyError::Frame(_))));
}

#[test]
fn the_hard_usage_limit_refuses_sealing_and_the_soft_one_asks_for_rotation() {
    let policy = RotationPolicy::default().with_usage_limits(2, 3).unwrap();
    let mut e = DeterministicEntropy::from_u64(9);
    let mut ring = KeyRing::new(tenant(), &policy);
    let k = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k, t0()).unwrap();
    seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    assert!(policy.evaluate(&ring, &KeyCensus::new(), t0()).is_empty());
    seal(&frame(2), &mut ring, &mut e, t0()).unwrap();
    assert_eq!(
        policy.evaluate(&ring, &KeyCensus::new(), t0()),
        vec![KeyAction::GenerateKey {
            reason: RotationReason::Usage
        }]
    );
    seal(&frame(3), &mut ring, &mut e, t0()).unwrap();
    assert!(matches!(
        seal(&frame(4), &mut ring, &mut e, t0()),
        Err(KeyError::UsageExhausted { limit: 3, .. })
    ));
    assert_eq!(ring.primary().unwrap().usage, 3);
    // A rewrap needs a fresh wrap too, so it is refused as well.
    let k2 = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k2, t0()).unwrap();
    seal(&frame(4), &mut ring, &mut e, t0()).unwrap();
    assert!(matches!(
        ring.promote(k, t0()),
        Err(KeyError::UsageExhausted { .. })
    ));
    assert!(
        RotationPolicy::default()
            .with_usage_limits(1, RotationPolicy::MAX_HARD_USAGE_LIMIT + 1)
            .is_err()
    );
}

#[test]
fn policy_settings_are_validated() {
    let p = RotationPolicy::default();
    assert_eq!(p.max_age(), Duration::days(90));
    assert_eq!(p.propagation_delay(), Duration::hours(24));
    assert_eq!(p.soft_usage_limit(), 1 << 31);
    assert_eq!(p.hard_usage_limit(), 3_865_470_566);
    assert_eq!(p.notify_before(), Duration::days(14));
    assert_eq!(p.shred_after_close(), Duration::days(30));
    assert!(p.clone().with_max_age(Duration::zero()).is_err());
    assert!(
        p.clone().with_max_age(Duration::hours(12)).is_err(),
        "shorter than the delay"
    );
    assert!(
        p.clone()
            .with_propagation_delay(Duration::seconds(-1))
            .is_err()
    );
    assert!(p.clone().with_notify_before(Duration::days(90)).is_err());
    assert!(p.clone().with_retire_after(Duration::zero()).is_err());
    assert!(
        p.clone()
            .with_destroy_after(Duration::days(40_000))
            .is_err()
    );
    assert!(p.clone().with_retention(Some(Duration::zero())).is_err());
    assert!(p.clone().with_shred_after_close(Duration::zero()).is_err());
    assert!(p.clone().with_usage_limits(0, 1).is_err());
    assert!(p.clone().with_usage_limits(5, 4).is_err());
}

/// Runs `evaluate` and applies every action until nothing more is due.
fn settle(
    policy: &RotationPolicy,
    ring: &mut KeyRing,
    census: &KeyCensus,
    e: &mut DeterministicEntropy,
    now: DateTime<Utc>,
) -> Vec<KeyAction> {
    let mut done = Vec::new();
    for _ in 0..10 {
        let actions: Vec<KeyAction> = policy
            .evaluate(ring, census, now)
            .into_iter()
            .filter(|a| !matches!(a, KeyAction::RewrapFrames { .. }))
            .collect();
        if actions.is_empty() {
            break;
        }
        for a in actions {
            let _ = ring.apply(&a, e, now).unwrap();
            done.push(a);
        }
    }
    done
}

#[test]
fn a_year_of_rotation_by_age_on_a_fake_clock() {
    let policy = RotationPolicy::default();
    let mut e = DeterministicEntropy::from_u64(10);
    let mut ring = KeyRing::new(tenant(), &policy);
    let census = KeyCensus::new();
    let done = settle(&policy, &mut ring, &census, &mut e, t0());
    assert_eq!(
        done,
        vec![
            KeyAction::GenerateKey {
                reason: RotationReason::Initial
            },
            KeyAction::Promote { id: id(1) }
        ]
    );
    let day = |d: i64| t0() + Duration::days(d);
    // Day 76: notice, 14 days ahead.
    assert!(settle(&policy, &mut ring, &census, &mut e, day(75)).is_empty());
    assert_eq!(
        settle(&policy, &mut ring, &census, &mut e, day(76)),
        vec![KeyAction::Notify {
            id: id(1),
            rotates_at: day(90)
        }]
    );
    // Day 89: the successor is made, a day ahead.
    assert_eq!(
        settle(&policy, &mut ring, &census, &mut e, day(89)),
        vec![KeyAction::GenerateKey {
            reason: RotationReason::Age
        }]
    );
    assert!(
        settle(
            &policy,
            &mut ring,
            &census,
            &mut e,
            day(90) - Duration::seconds(1)
        )
        .is_empty()
    );
    // Day 90: promoted exactly when the old primary reaches max_age.
    assert_eq!(
        settle(&policy, &mut ring, &census, &mut e, day(90)),
        vec![KeyAction::Promote { id: id(2) }]
    );
    assert_eq!(ring.primary().unwrap().promoted, Some(day(90)));
    // Then day by day: key 2's successor a day before its 90 days are up;
    // key 1, demoted on day 90 and with nothing under it, disabled 90 days
    // later and destroyed 30 days after that.
    let mut log = Vec::new();
    for d in 91..=215 {
        for a in settle(&policy, &mut ring, &census, &mut e, day(d)) {
            log.push((d, a));
        }
    }
    let when = |a: &KeyAction| log.iter().find(|(_, b)| b == a).map(|(d, _)| *d);
    assert_eq!(
        when(&KeyAction::Notify {
            id: id(2),
            rotates_at: day(180)
        }),
        Some(166)
    );
    assert_eq!(
        when(&KeyAction::GenerateKey {
            reason: RotationReason::Age
        }),
        Some(179)
    );
    assert_eq!(when(&KeyAction::Promote { id: id(3) }), Some(180));
    assert_eq!(when(&KeyAction::Disable { id: id(1) }), Some(180));
    assert_eq!(when(&KeyAction::Destroy { id: id(1) }), Some(210));
    assert_eq!(ring.get(id(1)).unwrap().status, KeyStatus::Destroyed);
    assert_eq!(ring.get(id(2)).unwrap().status, KeyStatus::DecryptOnly);
    assert_eq!(ring.primary().unwrap().id, id(3));
}

#[test]
fn an_old_key_with_data_asks_for_rewrap_and_is_never_disabled_until_free() {
    let policy = RotationPolicy::default();
    let (mut ring, mut e) = ring_with_primary(11);
    let sealed: Vec<Frame> = (1..=3)
        .map(|n| seal(&frame(n), &mut ring, &mut e, t0()).unwrap())
        .collect();
    let k2 = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k2, t0() + Duration::days(1)).unwrap();
    let later = t0() + Duration::days(200);
    let mut census = KeyCensus::new();
    for f in &sealed {
        census.add(peek(f.as_bytes()).unwrap().kek_id.unwrap());
    }
    let actions = policy.evaluate(&ring, &census, later);
    assert!(actions.contains(&KeyAction::RewrapFrames {
        from: id(1),
        count: 3
    }));
    assert!(!actions.contains(&KeyAction::Disable { id: id(1) }));
    let rewrap_action = KeyAction::RewrapFrames {
        from: id(1),
        count: 3,
    };
    assert_eq!(
        ring.apply(&rewrap_action, &mut e, later).unwrap(),
        Applied::RewrapNeeded {
            from: id(1),
            count: 3
        }
    );
    // Rewrap them all, count again: now it may go.
    let mut census = KeyCensus::new();
    for f in &sealed {
        let f = rewrap(f, &mut ring, &mut e, later).unwrap();
        census.add(peek(f.as_bytes()).unwrap().kek_id.unwrap());
    }
    assert_eq!(census.frames(id(1)), 0);
    assert!(
        policy
            .evaluate(&ring, &census, later)
            .contains(&KeyAction::Disable { id: id(1) })
    );
    // With retention, data past it no longer holds the key back.
    let short = RotationPolicy::default()
        .with_retention(Some(Duration::days(30)))
        .unwrap();
    let census = KeyCensus::new().with(id(1), 3);
    assert!(
        short
            .evaluate(&ring, &census, later)
            .contains(&KeyAction::Disable { id: id(1) })
    );
}

#[test]
fn compromise_promotes_a_new_key_at_once_and_asks_for_rewrap() {
    let policy = RotationPolicy::default();
    let (mut ring, mut e) = ring_with_primary(12);
    let old = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    let new = ring.compromise(id(1), &mut e, t0()).unwrap().unwrap();
    assert_eq!(ring.primary().unwrap().id, new);
    assert_eq!(ring.primary().unwrap().promoted, Some(t0()));
    assert!(ring.get(id(1)).unwrap().compromised);
    assert!(matches!(
        ring.promote(id(1), t0()),
        Err(KeyError::InvalidTransition { .. })
    ));
    let census = KeyCensus::new().with(id(1), 1);
    // At once, not after retire_after.
    assert_eq!(
        policy.evaluate(&ring, &census, t0()),
        vec![KeyAction::RewrapFrames {
            from: id(1),
            count: 1
        }]
    );
    let moved = rewrap(&old, &mut ring, &mut e, t0()).unwrap();
    assert_eq!(peek(moved.as_bytes()).unwrap().kek_id, Some(new));
    assert_eq!(
        policy.evaluate(&ring, &KeyCensus::new(), t0()),
        vec![KeyAction::Disable { id: id(1) }]
    );
}

#[test]
fn shredding_waits_for_the_grace_period_and_destroys_every_key() {
    let policy = RotationPolicy::default();
    let (mut ring, mut e) = ring_with_primary(13);
    let sealed = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    assert!(matches!(ring.shred(t0()), Err(KeyError::NotClosing { .. })));
    ring.close(&policy, t0()).unwrap();
    assert_eq!(ring.closing(), Some((t0(), t0() + Duration::days(30))));
    ring.cancel_close().unwrap();
    assert!(matches!(
        ring.cancel_close(),
        Err(KeyError::NotClosing { .. })
    ));
    let closed = t0() + Duration::days(1);
    ring.close(&policy, closed).unwrap();
    let due = closed + Duration::days(30);
    assert!(matches!(
        ring.shred(due - Duration::seconds(1)),
        Err(KeyError::GracePeriod { at, .. }) if at == due
    ));
    assert!(
        !policy
            .evaluate(&ring, &KeyCensus::new(), due - Duration::seconds(1))
            .contains(&KeyAction::Shred)
    );
    assert!(
        policy
            .evaluate(&ring, &KeyCensus::new(), due)
            .contains(&KeyAction::Shred)
    );
    // When shredding is due nothing else is asked for, even a rotation
    // that is also due (it could not be carried out after the shredding).
    let much_later = due + Duration::days(100);
    assert_eq!(
        policy.evaluate(&ring, &KeyCensus::new(), much_later),
        vec![KeyAction::Shred]
    );
    open(&sealed, &ring).unwrap();
    let receipt = match ring.apply(&KeyAction::Shred, &mut e, due).unwrap() {
        Applied::Shredded(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(receipt.tenant, tenant());
    assert_eq!(receipt.key_ids, vec![id(1)]);
    assert_eq!(receipt.at, due);
    assert_eq!(receipt.closed_at, closed);
    assert!(matches!(
        open(&sealed, &ring),
        Err(KeyError::KeyDestroyed { .. })
    ));
    assert!(matches!(
        ring.generate(&mut e, due),
        Err(KeyError::Shredded { .. })
    ));
    assert!(matches!(
        seal(&frame(2), &mut ring, &mut e, due),
        Err(KeyError::Shredded { .. })
    ));
    assert!(ring.versions().all(|v| v.status == KeyStatus::Destroyed));
    assert!(policy.evaluate(&ring, &KeyCensus::new(), due).is_empty());
    // The stored ring keeps metadata only.
    let wrapping = WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]));
    let stored = ring.to_sealed(&wrapping, &mut e).unwrap();
    let back = KeyRing::from_sealed(&stored, tenant(), &wrapping).unwrap();
    assert_eq!(back.shredded(), Some(due));
    assert!(matches!(
        open(&sealed, &back),
        Err(KeyError::KeyDestroyed { .. })
    ));
}

#[test]
fn a_stored_ring_round_trips_and_refuses_the_wrong_key_tenant_or_bytes() {
    let (mut ring, mut e) = ring_with_primary(14);
    let sealed = seal(&frame(1), &mut ring, &mut e, t0()).unwrap();
    let k2 = ring.generate(&mut e, t0()).unwrap();
    ring.promote(k2, t0() + Duration::days(1)).unwrap();
    ring.mark_notified(k2).unwrap();
    let wrapping = WrappingKey::new(3, KeyMaterial::from_bytes([9; 32]));
    let mut store = MemoryKeyStore::new();
    save_ring(&mut store, &ring, &wrapping, &mut e).unwrap();
    let back = load_ring(&store, tenant(), &wrapping).unwrap().unwrap();
    assert_eq!(
        back.versions().collect::<Vec<_>>(),
        ring.versions().collect::<Vec<_>>()
    );
    assert_eq!(back.primary(), ring.primary());
    assert_eq!(open(&sealed, &back).unwrap(), frame(1));
    assert!(
        load_ring(&store, other_tenant(), &wrapping)
            .unwrap()
            .is_none()
    );

    let bytes = ring.to_sealed(&wrapping, &mut e).unwrap();
    let other_id = WrappingKey::new(4, KeyMaterial::from_bytes([9; 32]));
    assert!(matches!(
        KeyRing::from_sealed(&bytes, tenant(), &other_id),
        Err(KeyError::WrongWrappingKey {
            expected: 4,
            found: 3
        })
    ));
    let other_material = WrappingKey::new(3, KeyMaterial::from_bytes([8; 32]));
    assert!(matches!(
        KeyRing::from_sealed(&bytes, tenant(), &other_material),
        Err(KeyError::Tampered {
            part: SealPart::StoredRing
        })
    ));
    assert!(matches!(
        KeyRing::from_sealed(&bytes, other_tenant(), &wrapping),
        Err(KeyError::TenantMismatch { .. })
    ));
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(
            KeyRing::from_sealed(&b, tenant(), &wrapping).is_err(),
            "flip at {i}"
        );
    }
    for cut in 0..bytes.len() {
        assert!(KeyRing::from_sealed(&bytes[..cut], tenant(), &wrapping).is_err());
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let material = [0x5Au8; 32];
    let mut ring = KeyRing::new(tenant(), &RotationPolicy::default());
    ring.import(id(1), KeyMaterial::from_bytes(material), t0())
        .unwrap();
    let wrapping = WrappingKey::new(1, KeyMaterial::from_bytes(material));
    for text in [
        format!("{ring:?}"),
        format!("{ring:#?}"),
        format!("{wrapping:?}"),
        format!("{:?}", KeyMaterial::from_bytes(material)),
    ] {
        let lower = text.to_lowercase();
        assert!(!lower.contains("5a5a"), "{text}");
        assert!(!text.contains("90, 90"), "{text}");
    }
}

#[test]
fn aes_256_gcm_known_answers() {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys/aes256gcm-kat.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let hex = |s: &str| -> Vec<u8> {
        if s == "-" {
            return Vec::new();
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut n = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<Vec<u8>> = line.split_whitespace().map(hex).collect();
        let (key, iv, aad, pt, ct, tag) = (&f[0], &f[1], &f[2], &f[3], &f[4], &f[5]);
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let mut buf = pt.clone();
        let t = k
            .seal_in_place_separate_tag(
                Nonce::try_assume_unique_for_key(iv).unwrap(),
                Aad::from(aad),
                &mut buf,
            )
            .unwrap();
        assert_eq!(&buf, ct);
        assert_eq!(t.as_ref(), &tag[..]);
        buf.extend_from_slice(tag);
        let opened = k
            .open_in_place(
                Nonce::try_assume_unique_for_key(iv).unwrap(),
                Aad::from(aad),
                &mut buf,
            )
            .unwrap();
        assert_eq!(opened, &pt[..]);
        n += 1;
    }
    assert_eq!(n, 4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random clock steps, seals and census counts, with every due action
    /// carried out after each step. Checked throughout: at most one primary;
    /// a primary is older than max_age only while its successor propagates;
    /// a pending key is promoted no earlier than its propagation delay;
    /// no key is disabled while the census counts frames under it; usage
    /// never passes the hard limit; every frame sealed opens until its key
    /// is disabled.
    #[test]
    fn rotation_keeps_its_promises(
        steps in proptest::collection::vec((0i64..(20 * 24), 0u32..4, any::<bool>()), 1..60),
        seed in any::<u64>(),
    ) {
        let policy = RotationPolicy::default().with_usage_limits(6, 8).unwrap();
        let mut e = DeterministicEntropy::from_u64(seed);
        let mut ring = KeyRing::new(tenant(), &policy);
        let mut now = t0();
        let mut sealed: Vec<Frame> = Vec::new();
        let mut n = 0u128;
        for (hours, seals, rewrap_old) in steps {
            now += Duration::hours(hours);
            let mut census = KeyCensus::new();
            for f in &sealed {
                census.add(peek(f.as_bytes()).unwrap().kek_id.unwrap());
            }
            // Carry out whatever is due until nothing more is (an initial
            // key is generated, then promoted, in two rounds).
            for _round in 0..5 {
            let actions = policy.evaluate(&ring, &census, now);
            if actions.iter().all(|a| matches!(a, KeyAction::RewrapFrames { .. })) && _round > 0 {
                break;
            }
            for a in &actions {
                if let KeyAction::Disable { id } = a {
                    prop_assert_eq!(census.frames(*id), 0, "disable of a key with data");
                }
                if let KeyAction::Promote { id } = a {
                    let created = ring.get(*id).unwrap().created;
                    if ring.primary().is_some() {
                        prop_assert!(now >= created + policy.propagation_delay());
                    }
                }
                match ring.apply(a, &mut e, now) {
                    Ok(Applied::RewrapNeeded { from, .. }) if rewrap_old => {
                        for f in sealed.iter_mut() {
                            if peek(f.as_bytes()).unwrap().kek_id == Some(from) {
                                match rewrap(f, &mut ring, &mut e, now) {
                                    Ok(g) => *f = g,
                                    Err(KeyError::UsageExhausted { .. }) => break,
                                    Err(err) => prop_assert!(false, "rewrap: {}", err),
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(err) => prop_assert!(false, "apply {:?}: {}", a, err),
                }
            }
            }
            prop_assert!(ring.versions().filter(|v| v.status == KeyStatus::Primary).count() <= 1);
            // A primary older than max_age only while its successor, made at
            // the first evaluation after it was due, is still propagating.
            if let Some(p) = ring.primary() {
                let age = now - p.promoted.unwrap();
                if age > policy.max_age() {
                    let propagating = ring
                        .pending()
                        .is_some_and(|q| now < q.created + policy.propagation_delay());
                    prop_assert!(propagating, "primary aged {} with no successor propagating", age);
                }
            }
            for _ in 0..seals {
                n += 1;
                match seal(&frame(n), &mut ring, &mut e, now) {
                    Ok(f) => sealed.push(f),
                    Err(KeyError::UsageExhausted { .. }) => {}
                    Err(err) => prop_assert!(false, "seal: {}", err),
                }
            }
            for v in ring.versions() {
                prop_assert!(v.usage <= policy.hard_usage_limit());
            }
            for f in &sealed {
                prop_assert!(open(f, &ring).is_ok(), "a frame whose key is live failed to open");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum LifeOp {
    Wait(i64),
    Seal,
    Compromise,
    Close,
    Cancel,
}

fn life_op() -> impl Strategy<Value = LifeOp> {
    prop_oneof![
        4 => (1i64..(40 * 24)).prop_map(LifeOp::Wait),
        4 => Just(LifeOp::Seal),
        1 => Just(LifeOp::Compromise),
        1 => Just(LifeOp::Close),
        1 => Just(LifeOp::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Compromise and shredding under random schedules, every due action
    /// carried out after each step (rewraps too). Checked: a compromise of
    /// the primary promotes a new key at that instant and the compromised
    /// key never seals again; nothing is shredded before the grace period
    /// after the (uncancelled) close; after shredding every frame fails
    /// with KeyDestroyed and the receipt names every version; before it,
    /// every frame sealed opens.
    #[test]
    fn compromise_and_shredding_keep_their_promises(
        ops in proptest::collection::vec(life_op(), 1..80),
        seed in any::<u64>(),
    ) {
        let policy = RotationPolicy::default();
        let mut e = DeterministicEntropy::from_u64(seed);
        let mut ring = KeyRing::new(tenant(), &policy);
        let mut now = t0();
        let mut sealed: Vec<Frame> = Vec::new();
        let mut compromised: Vec<KeyId> = Vec::new();
        let mut closed_at: Option<DateTime<Utc>> = None;
        let mut receipt = None;
        let mut n = 0u128;
        for op in ops {
            match op {
                LifeOp::Wait(h) => now += Duration::hours(h),
                LifeOp::Seal => {
                    n += 1;
                    match seal(&frame(n), &mut ring, &mut e, now) {
                        Ok(f) => {
                            let k = peek(f.as_bytes()).unwrap().kek_id.unwrap();
                            prop_assert!(!compromised.contains(&k), "sealed under compromised {:?}", k);
                            sealed.push(f);
                        }
                        Err(KeyError::NoPrimaryKey { .. }) => prop_assert!(ring.primary().is_none()),
                        Err(KeyError::Shredded { .. }) => prop_assert!(receipt.is_some()),
                        Err(err) => prop_assert!(false, "seal: {}", err),
                    }
                }
                LifeOp::Compromise => {
                    if let Some(p) = ring.primary().map(|p| p.id) {
                        let new = ring.compromise(p, &mut e, now).unwrap().unwrap();
                        prop_assert_eq!(ring.primary().unwrap().id, new);
                        prop_assert_eq!(ring.primary().unwrap().promoted, Some(now));
                        compromised.push(p);
                    }
                }
                LifeOp::Close => {
                    if receipt.is_none() {
                        ring.close(&policy, now).unwrap();
                        closed_at = closed_at.or(Some(now));
                    }
                }
                LifeOp::Cancel => {
                    if receipt.is_none() && closed_at.take().is_some() {
                        ring.cancel_close().unwrap();
                    }
                }
            }
            for _round in 0..6 {
                let mut census = KeyCensus::new();
                for f in &sealed {
                    census.add(peek(f.as_bytes()).unwrap().kek_id.unwrap());
                }
                let actions = policy.evaluate(&ring, &census, now);
                if actions.is_empty() {
                    break;
                }
                for a in &actions {
                    match ring.apply(a, &mut e, now).unwrap() {
                        Applied::RewrapNeeded { from, .. } => {
                            for f in sealed.iter_mut() {
                                if peek(f.as_bytes()).unwrap().kek_id == Some(from) {
                                    *f = rewrap(f, &mut ring, &mut e, now).unwrap();
                                }
                            }
                        }
                        Applied::Shredded(r) => {
                            let closed = closed_at.expect("shredded without a close");
                            prop_assert!(now >= closed + Duration::days(30));
                            prop_assert_eq!(r.closed_at, closed);
                            prop_assert_eq!(r.key_ids.clone(), ring.versions().map(|v| v.id).collect::<Vec<_>>());
                            receipt = Some(r);
                        }
                        _ => {}
                    }
                }
            }
            for c in &compromised {
                prop_assert!(ring.get(*c).unwrap().status != KeyStatus::Primary);
            }
            for f in &sealed {
                match (open(f, &ring), &receipt) {
                    (Ok(_), None) => {}
                    (Err(KeyError::KeyDestroyed { .. }), Some(_)) => {}
                    (other, r) => prop_assert!(false, "open gave {:?} with receipt {:?}", other.map(|_| ()), r),
                }
            }
        }
    }
}

/// The committed sealed vectors open to their unsealed frames, and sealing
/// (or rewrapping) again from the recorded seed gives the same bytes.
#[test]
fn sealed_vectors_open_and_reseal_byte_for_byte() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames/sealed");
    let desc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vectors.json")).unwrap()).unwrap();
    let key = |n: &str| -> [u8; 32] {
        let h = desc["keys"][n].as_str().unwrap();
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
        }
        k
    };
    let read = |name: &str| decode(std::fs::read(dir.join(name)).unwrap());
    let mut count = 0;
    for v in desc["vectors"].as_array().unwrap() {
        let sealed = read(v["sealed"].as_str().unwrap());
        let plain = read(v["opens_to"].as_str().unwrap());
        let kek_id = v["kek_id"].as_u64().unwrap() as u32;
        let seed = v["seed"].as_u64().unwrap();
        let mut ring = KeyRing::new(sealed.tenant(), &RotationPolicy::default());
        ring.import(id(1), KeyMaterial::from_bytes(key("1")), t0())
            .unwrap();
        ring.import(id(2), KeyMaterial::from_bytes(key("2")), t0())
            .unwrap();
        ring.promote(id(kek_id), t0()).unwrap();
        assert_eq!(peek(sealed.as_bytes()).unwrap().kek_id, Some(id(kek_id)));
        assert_eq!(open(&sealed, &ring).unwrap(), plain);
        let mut e = DeterministicEntropy::from_u64(seed);
        let again = if kek_id == 1 {
            seal(&plain, &mut ring, &mut e, t0()).unwrap()
        } else {
            let under_1 = read(&v["sealed"].as_str().unwrap().replace(".k2.", ".k1."));
            rewrap(&under_1, &mut ring, &mut e, t0()).unwrap()
        };
        assert_eq!(again.as_bytes(), sealed.as_bytes(), "{v}");
        count += 1;
    }
    assert_eq!(count, 4);
}

/// The stored ring's bytes are laid out as `docs/KEYS.md` says: decrypted
/// here by hand, field by field.
#[test]
fn the_stored_ring_follows_docs_keys_md() {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let mut e = DeterministicEntropy::from_u64(15);
    let mut ring = KeyRing::new(tenant(), &RotationPolicy::default());
    ring.import(id(3), KeyMaterial::from_bytes([0x33; 32]), t0())
        .unwrap();
    ring.promote(id(3), t0()).unwrap();
    let wrapping = WrappingKey::new(0x0102_0304, KeyMaterial::from_bytes([0x77; 32]));
    let b = ring.to_sealed(&wrapping, &mut e).unwrap();
    assert_eq!(&b[0..4], b"\x89OPK");
    assert_eq!(&b[4..8], &[1, 1, 0, 0]);
    assert_eq!(&b[8..12], &[1, 2, 3, 4]);
    assert_eq!(&b[12..28], tenant().as_bytes());
    let ct_len = u32::from_be_bytes(b[40..44].try_into().unwrap()) as usize;
    assert_eq!(ct_len, b.len() - 44);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x77; 32]).unwrap());
    let mut ct = b[44..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(&b[28..40]).unwrap(),
            Aad::from(&b[..44]),
            &mut ct,
        )
        .unwrap();
    assert_eq!(&plain[0..16], tenant().as_bytes());
    assert_eq!(
        u64::from_be_bytes(plain[16..24].try_into().unwrap()),
        3_865_470_566
    );
    assert_eq!(plain[24], 0, "neither closing nor shredded");
    let none = i64::MIN.to_be_bytes();
    assert_eq!(&plain[25..33], &none);
    assert_eq!(&plain[41..49], &none);
    assert_eq!(&plain[49..53], &[0, 0, 0, 1]);
    let v = &plain[53..];
    assert_eq!(&v[0..4], &[0, 0, 0, 3]);
    assert_eq!(v[4], 2, "Primary");
    assert_eq!(v[5], 4, "material present");
    assert_eq!(&v[6..14], &t0().timestamp_millis().to_be_bytes());
    assert_eq!(
        &v[14..22],
        &t0().timestamp_millis().to_be_bytes(),
        "promoted"
    );
    assert_eq!(&v[22..30], &none, "demoted");
    assert_eq!(&v[46..54], &0u64.to_be_bytes(), "usage");
    assert_eq!(&v[54..86], &[0x33; 32]);
    assert_eq!(v.len(), 86);
}

/// Bug: a primary compromised while its successor was still `Pending` got a
/// fresh replacement, but `evaluate` then promoted the older pending key
/// over it, demoting the replacement.
#[test]
fn regression_compromise_while_a_key_is_pending_keeps_the_fresh_primary() {
    let policy = RotationPolicy::default();
    let (mut ring, mut e) = ring_with_primary(21);
    let pending = ring.generate(&mut e, t0() + Duration::days(80)).unwrap();
    assert_eq!(pending, id(2));
    let fresh = ring
        .compromise(id(1), &mut e, t0() + Duration::days(80))
        .unwrap()
        .unwrap();
    assert_eq!(fresh, id(3));
    assert_eq!(ring.primary().unwrap().id, fresh);
    // The superseded pending key keeps opening (another node may have
    // sealed under it) but is no longer a candidate for promotion.
    assert_eq!(ring.get(pending).unwrap().status, KeyStatus::DecryptOnly);
    assert!(ring.pending().is_none());
    let census = KeyCensus::new();
    for days in [81, 82, 100] {
        let now = t0() + Duration::days(days);
        let actions = policy.evaluate(&ring, &census, now);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, KeyAction::Promote { .. })),
            "day {days}: {actions:?}"
        );
        settle(&policy, &mut ring, &census, &mut e, now);
        assert_eq!(ring.primary().unwrap().id, fresh, "day {days}");
    }
}

#[test]
fn promoting_a_newer_key_supersedes_every_older_pending_one() {
    let (mut ring, mut e) = ring_with_primary(22);
    let a = ring.generate(&mut e, t0()).unwrap();
    let b = ring.generate(&mut e, t0()).unwrap();
    let c = ring.generate(&mut e, t0()).unwrap();
    ring.promote(b, t0() + Duration::days(1)).unwrap();
    assert_eq!(ring.get(a).unwrap().status, KeyStatus::DecryptOnly);
    assert_eq!(ring.get(id(1)).unwrap().status, KeyStatus::DecryptOnly);
    // A newer pending key is left for its own promotion.
    assert_eq!(ring.get(c).unwrap().status, KeyStatus::Pending);
    assert_eq!(ring.pending().unwrap().id, c);
}

/// Bug: sealing a frame whose body was at the body limit added the 16-byte
/// tag and made a frame that readers with the same limits refused.
#[test]
fn regression_a_frame_at_the_body_limit_still_reads_once_sealed() {
    let (mut ring, mut e) = ring_with_primary(23);
    let plain = frame_for(tenant(), DataType::Performance, Codec::None, 77);
    let at_limit = FrameLimits::default()
        .with_max_body(plain.header().body_len)
        .unwrap();
    let sealed = seal(&plain, &mut ring, &mut e, t0()).unwrap();
    assert_eq!(sealed.header().body_len, plain.header().body_len + 16);
    let read = |limits: FrameLimits| {
        let mut d = FrameDecoder::new(limits);
        d.push(sealed.as_bytes());
        d.poll_frame()
    };
    let Ok(Decoded::Frame(f)) = read(at_limit) else {
        panic!("a sealed frame at the limit must read");
    };
    assert_eq!(open(&f, &ring).unwrap(), plain);
    // One byte less of limit, and the sealed body is over by one.
    let below = FrameLimits::default()
        .with_max_body(plain.header().body_len - 1)
        .unwrap();
    assert!(matches!(
        read(below),
        Err(FrameError::BodyTooLarge { body_len, max })
            if body_len == u64::from(sealed.header().body_len) && max == sealed.header().body_len - 1
    ));
    // An unsealed frame gets no such allowance.
    let mut d = FrameDecoder::new(below);
    d.push(plain.as_bytes());
    assert!(matches!(
        d.poll_frame(),
        Err(FrameError::BodyTooLarge { .. })
    ));
}
