//! Fuzz target logic, compiled into the crate so that normal builds check it
//! and `tests/fuzz_corpus.rs` can replay the committed seed corpus on stable.
//! The cargo-fuzz targets under `fuzz/` are one-line wrappers around these
//! functions. Each function panics only when it finds a bug.

use crate::record::{DataType, Record, RecordLimits};

/// Record parsing: the first byte picks the data type, the rest is parsed as
/// that type's JSON. A record that parses and validates must serialize and
/// parse back to itself.
pub fn record_json(data: &[u8]) {
    let Some((&selector, json)) = data.split_first() else {
        return;
    };
    let data_type = DataType::ALL[usize::from(selector) % DataType::ALL.len()];
    let Ok(record) = Record::from_json(data_type, json) else {
        return;
    };
    if record.validate(&RecordLimits::default()).is_err() {
        return;
    }
    let mut out = Vec::new();
    record.write_json(&mut out);
    match Record::from_json(data_type, &out) {
        Ok(back) => assert_eq!(back, record, "a valid record changed on a round trip"),
        Err(e) => panic!("a valid record failed to parse back: {e}"),
    }
}
