//! Frames for the spool and crash tests: one Performance record whose
//! counter name carries a sequence number, codec none so sizes are exact.
#![allow(dead_code)]

#[path = "../pki_support/mod.rs"]
pub mod pki_support;
#[allow(unused_imports)]
pub use pki_support::pki;
pub mod server;

use chrono::{DateTime, TimeZone, Utc};
use opsdata::{
    BatchId, Codec, DataType, Frame, FrameEncoder, Performance, Record, Tagged, TenantBatch,
    TenantId,
};
use uuid::Uuid;

pub const TENANT: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

pub fn tenant() -> TenantId {
    TENANT.parse().unwrap()
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

/// The batch id of sequence number `seq` (never nil).
pub fn batch_id(seq: u64) -> BatchId {
    BatchId::new(Uuid::from_u128(u128::from(seq) + 1)).unwrap()
}

/// A frame for `seq` with `records` records, each padded by `pad` bytes
/// (at most 200).
pub fn frame(seq: u64, records: usize, pad: usize) -> Frame {
    let t = tenant();
    let recs = (0..records).map(|i| {
        Tagged::new(
            t,
            Record::Performance(Performance {
                object_name: "x".repeat(pad.min(200)),
                counter_name: format!("seq-{seq}"),
                perfmon_instance_name: format!("{i}"),
                performance_data_id: Uuid::from_u128(u128::from(seq) + 1),
                performance_source_internal_id: 1,
                sample_value: seq as f64,
                time_sampled: t0(),
                time_added: t0(),
            }),
        )
    });
    let batch = TenantBatch::from_records(t, DataType::Performance, recs).unwrap();
    FrameEncoder::new()
        .with_codec(Codec::None)
        .encode_frame(&batch, batch_id(seq), t0())
        .unwrap()
}

/// The sequence numbers in a frame's records (its counter names).
pub fn seqs_of(frame: &Frame) -> Vec<u64> {
    frame
        .records(&opsdata::FrameLimits::default())
        .unwrap()
        .into_iter()
        .map(|r| match r {
            Record::Performance(p) => p.counter_name["seq-".len()..].parse().unwrap(),
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

/// An empty Alert frame of `tenant`, batch id from `seq`.
pub fn frame_of(tenant: TenantId, seq: u64) -> Frame {
    FrameEncoder::new()
        .encode_frame(
            &TenantBatch::new(tenant, DataType::Alert),
            batch_id(seq),
            t0(),
        )
        .unwrap()
}
