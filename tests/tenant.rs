//! Tenant tagging: batches hold one tenant and one type, and hand back what
//! they refuse.

mod common;

use opsdata::{DataType, Record, Tagged, TenantBatch, TenantError, TenantId};
use proptest::prelude::*;
use uuid::Uuid;

fn tenant(n: u128) -> TenantId {
    TenantId::new(Uuid::from_u128(n)).unwrap()
}

#[test]
fn another_tenants_record_is_refused_and_returned() {
    let (a, b) = (tenant(1), tenant(2));
    let mut batch = TenantBatch::new(a, DataType::Alert);
    let record = common::sample(DataType::Alert);
    batch.push(Tagged::new(a, record.clone())).unwrap();
    let refused = batch.push(Tagged::new(b, record.clone())).unwrap_err();
    assert_eq!(
        refused.error,
        TenantError::TenantMismatch {
            expected: a,
            found: b
        }
    );
    assert_eq!(refused.record, Tagged::new(b, record.clone()));
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.records(), &[record]);
}

#[test]
fn another_types_record_is_refused_and_returned() {
    let a = tenant(1);
    let mut batch = TenantBatch::new(a, DataType::Performance);
    let state = common::sample(DataType::State);
    let refused = batch.push(Tagged::new(a, state.clone())).unwrap_err();
    assert_eq!(
        refused.error,
        TenantError::DataTypeMismatch {
            expected: DataType::Performance,
            found: DataType::State
        }
    );
    assert_eq!(refused.record.into_item(), state);
    assert!(batch.is_empty());
    // The tenant is checked first.
    let refused = batch.push(Tagged::new(tenant(9), state)).unwrap_err();
    assert!(matches!(refused.error, TenantError::TenantMismatch { .. }));
}

#[test]
fn from_records_stops_at_the_first_refusal() {
    let a = tenant(1);
    let perf = common::sample(DataType::Performance);
    let records = vec![
        Tagged::new(a, perf.clone()),
        Tagged::new(tenant(2), perf.clone()),
        Tagged::new(a, perf.clone()),
    ];
    let err = TenantBatch::from_records(a, DataType::Performance, records).unwrap_err();
    assert_eq!(err.record.tenant(), tenant(2));
    let ok = TenantBatch::from_records(
        a,
        DataType::Performance,
        vec![Tagged::new(a, perf.clone()); 3],
    )
    .unwrap();
    assert_eq!(ok.len(), 3);
    assert!(
        ok.into_tagged()
            .all(|t| t.tenant() == a && t.item() == &perf)
    );
}

#[test]
fn tagged_keeps_its_tenant_through_map_and_item_mut() {
    let a = tenant(7);
    let mut t = Tagged::new(a, 1u32);
    *t.item_mut() += 1;
    let t = t.map(|n| n * 10);
    assert_eq!(t.into_parts(), (a, 20));
}

proptest! {
    /// Whatever is offered, every record ends up either in the batch (same
    /// tenant and type, in order) or handed back with the right reason.
    #[test]
    fn nothing_is_lost_and_nothing_foreign_gets_in(
        offers in proptest::collection::vec((1u128..4, common::record()), 0..40),
        data_type in common::data_type(),
    ) {
        let home = tenant(1);
        let mut batch = TenantBatch::new(home, data_type);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for (n, record) in offers.iter().cloned() {
            let t = tenant(n);
            match batch.push(Tagged::new(t, record.clone())) {
                Ok(()) => {
                    prop_assert_eq!(t, home);
                    prop_assert_eq!(record.data_type(), data_type);
                    accepted.push(record);
                }
                Err(rejection) => {
                    refused += 1;
                    prop_assert_eq!(&rejection.record, &Tagged::new(t, record.clone()));
                    match rejection.error {
                        TenantError::TenantMismatch { expected, found } => {
                            prop_assert_eq!((expected, found), (home, t));
                            prop_assert_ne!(t, home);
                        }
                        TenantError::DataTypeMismatch { expected, found } => {
                            prop_assert_eq!(t, home);
                            prop_assert_eq!((expected, found), (data_type, record.data_type()));
                            prop_assert_ne!(found, expected);
                        }
                        other => prop_assert!(false, "unexpected {other:?}"),
                    }
                }
            }
        }
        prop_assert_eq!(batch.records(), accepted.as_slice());
        prop_assert_eq!(accepted.len() + refused, offers.len());
    }

    #[test]
    fn tenant_ids_round_trip_through_text_and_bytes(t in common::tenant()) {
        prop_assert_eq!(t.to_string().parse::<TenantId>().unwrap(), t);
        prop_assert_eq!(t.to_string().to_uppercase().parse::<TenantId>().unwrap(), t);
        prop_assert_eq!(TenantId::from_bytes(*t.as_bytes()).unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        prop_assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), t);
    }

    #[test]
    fn tenant_parsing_never_panics(s in "\\PC{0,50}") {
        let _ = s.parse::<TenantId>();
    }
}

#[test]
fn record_data_type_matches_its_variant() {
    for t in DataType::ALL {
        let r: Record = common::sample(t);
        assert_eq!(r.data_type(), t);
    }
}

/// `TenantId` and `BatchId` order as their UUIDs do (byte by byte), which
/// their `Ord` computes as one big-endian integer.
#[test]
fn ids_order_as_their_uuids() {
    use opsdata::BatchId;
    let values = [
        1u128,
        2,
        0xff,
        0x100,
        1 << 64,
        (1 << 64) + 1,
        u128::MAX >> 1,
        1 << 127,
        u128::MAX,
    ];
    for &a in &values {
        for &b in &values {
            let (ua, ub) = (uuid::Uuid::from_u128(a), uuid::Uuid::from_u128(b));
            let t = (TenantId::new(ua).unwrap(), TenantId::new(ub).unwrap());
            assert_eq!(t.0.cmp(&t.1), ua.cmp(&ub), "{a:x} {b:x}");
            let i = (BatchId::new(ua).unwrap(), BatchId::new(ub).unwrap());
            assert_eq!(i.0.cmp(&i.1), ua.cmp(&ub), "{a:x} {b:x}");
            assert_eq!(i.0.as_bytes().cmp(i.1.as_bytes()), ua.cmp(&ub));
        }
    }
}
