//! Borrowed records (`RecordRef` and the `…Ref` types): they parse what the
//! owned types parse, into the same values, refuse what they refuse with the
//! same errors, validate the same way, and borrow their strings from the
//! text unless an escape had to be decoded. And the payload reader's
//! borrowed visitor reads what `records` reads.

#![allow(clippy::disallowed_methods)] // tests read golden files

mod common;

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use opsdata::{
    BatchId, Codec, DataType, FrameEncoder, FrameError, FrameLimits, PayloadReader, Record,
    RecordLimits, RecordRef, Tagged, TenantBatch, TenantId,
};
use proptest::prelude::*;

fn golden(t: DataType) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/records")
        .join(format!("{}.json", t.name().to_lowercase()));
    std::fs::read_to_string(path).unwrap()
}

/// Both parsers on `json`: the same record or the same error text, and the
/// same validation under `limits`. Returns the owned result.
fn agree(t: DataType, json: &[u8], limits: &RecordLimits) -> Result<Record, String> {
    let owned = Record::from_json(t, json);
    let borrowed = RecordRef::from_json(t, json);
    match (owned, borrowed) {
        (Ok(o), Ok(b)) => {
            assert_eq!(b.data_type(), t);
            assert_eq!(b.to_owned(), o, "{}", String::from_utf8_lossy(json));
            assert_eq!(format!("{:?}", b.to_owned()), format!("{o:?}"));
            assert_eq!(
                o.validate(limits).map_err(|e| e.to_string()),
                b.validate(limits).map_err(|e| e.to_string()),
            );
            Ok(o)
        }
        (Err(o), Err(b)) => {
            assert_eq!(o.to_string(), b.to_string());
            Err(o.to_string())
        }
        (o, b) => panic!(
            "{}: owned {o:?}, borrowed {b:?}",
            String::from_utf8_lossy(json)
        ),
    }
}

fn golden_value(t: DataType) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&golden(t)).unwrap()
}

/// The golden record of `t` with `field` set to the raw JSON `value`.
fn with_raw(t: DataType, field: &str, value: &str) -> String {
    let mut v = golden_value(t);
    v.insert(field.into(), "__RAW__".into());
    serde_json::to_string(&v)
        .unwrap()
        .replacen("\"__RAW__\"", value, 1)
}

#[test]
fn golden_records_read_the_same_borrowed() {
    for t in DataType::ALL {
        let text = golden(t);
        let record = agree(t, text.as_bytes(), &RecordLimits::default()).unwrap();
        assert_eq!(record, common::sample(t));
    }
}

#[test]
fn strings_are_borrowed_unless_escaped() {
    let plain = with_raw(DataType::Performance, "ObjectName", "\"Processor\"");
    let RecordRef::Performance(p) =
        RecordRef::from_json(DataType::Performance, plain.as_bytes()).unwrap()
    else {
        panic!("a Performance record")
    };
    assert!(matches!(p.object_name, Cow::Borrowed("Processor")));
    let escaped = with_raw(
        DataType::Performance,
        "ObjectName",
        r#""Proc\"essor\u00e9""#,
    );
    let RecordRef::Performance(p) =
        RecordRef::from_json(DataType::Performance, escaped.as_bytes()).unwrap()
    else {
        panic!("a Performance record")
    };
    assert!(matches!(&p.object_name, Cow::Owned(s) if s == "Proc\"essor\u{e9}"));

    // Optional strings and list elements borrow too.
    let alert = with_raw(DataType::Alert, "Owner", "\"ops\"");
    let RecordRef::Alert(a) = RecordRef::from_json(DataType::Alert, alert.as_bytes()).unwrap()
    else {
        panic!("an Alert")
    };
    assert!(matches!(a.owner, Some(Cow::Borrowed("ops"))));
    let event = with_raw(DataType::Event, "EventParameters", r#"["a","b\n"]"#);
    let RecordRef::Event(e) = RecordRef::from_json(DataType::Event, event.as_bytes()).unwrap()
    else {
        panic!("an Event")
    };
    assert!(matches!(e.event_parameters[0], Cow::Borrowed("a")));
    assert!(matches!(&e.event_parameters[1], Cow::Owned(s) if s == "b\n"));
}

#[test]
fn hostile_json_fails_the_same_way() {
    let limits = RecordLimits::default();
    let mut cases: Vec<(DataType, String)> = Vec::new();
    // Nesting: at the limit, over it, far over it; at the top and in a
    // custom field.
    for inner in [126, 127, 100_000] {
        let mut text = serde_json::to_string(&golden_value(DataType::Event)).unwrap();
        let deep = format!("{}{}", "[".repeat(inner), "]".repeat(inner));
        text.insert_str(text.len() - 1, &format!(",\"Deep\":{deep}"));
        cases.push((DataType::Event, text));
        cases.push((DataType::Alert, deep));
    }
    // Numbers: huge, out of range, fractions, exponents, -0.
    for (t, field, value) in [
        (DataType::Alert, "RepeatCount", "99999999999999999999"),
        (DataType::Alert, "RepeatCount", "-1"),
        (DataType::Alert, "ResolutionState", "256"),
        (DataType::Alert, "Priority", "-1"),
        (DataType::Alert, "Priority", "7"),
        (DataType::Event, "ChannelLevel", "1.5"),
        (DataType::Event, "ChannelLevel", "1e0"),
        (DataType::Performance, "SampleValue", "1e400"),
        (DataType::Performance, "SampleValue", "-0"),
        (DataType::Performance, "SampleValue", "-0.0"),
        (
            DataType::Performance,
            "SampleValue",
            "123456789012345678901234567890",
        ),
        (DataType::Performance, "SampleValue", "4.9e-324"),
        (DataType::Metadata, "PhysicalProcessors", "-2"),
        (DataType::Metadata, "OffsetInMinuteFromGreenwichTime", "841"),
        (DataType::Event, "FullNumber", "9223372036854775808"),
        (DataType::Event, "FullNumber", "-9223372036854775808"),
    ] {
        cases.push((t, with_raw(t, field, value)));
    }
    // Strings: lone and paired surrogates, escapes, wrong types, null.
    for (t, field, value) in [
        (DataType::State, "Context", r#""\ud800""#),
        (DataType::State, "Context", r#""\udc00x""#),
        (DataType::State, "Context", r#""\ud83d\ude00""#),
        (DataType::State, "Context", r#""\ud83d\u0041""#),
        (DataType::State, "Context", r#""\x""#),
        (DataType::State, "Context", "null"),
        (DataType::Alert, "AlertName", "42"),
        (DataType::Alert, "Owner", "42"),
        (DataType::Alert, "Owner", "null"),
        (DataType::Alert, "Owner", r#""\ud800""#),
        (DataType::Metadata, "DNSName", "[]"),
        (DataType::Alert, "IsMonitorAlert", "\"yes\""),
        (DataType::Alert, "TimeRaised", "\"yesterday\""),
        (
            DataType::Alert,
            "TimeRaised",
            "\"2026-11-23T12:00:00+14:00\"",
        ),
        (DataType::Alert, "TimeResolved", "\"2000-01-01T00:00:00Z\""),
        (DataType::Configuration, "AgentID", "\"not-a-uuid\""),
        (DataType::Event, "EventParameters", "\"one\""),
        (DataType::Event, "EventParameters", "[1]"),
        (DataType::Event, "EventParameters", r#"["\ud800"]"#),
        (DataType::Event, "EventParameters", "null"),
    ] {
        cases.push((t, with_raw(t, field, value)));
    }
    // Duplicate, unknown and missing keys.
    let alert = serde_json::to_string(&golden_value(DataType::Alert)).unwrap();
    cases.push((
        DataType::Alert,
        alert.replacen('{', "{\"AlertName\":\"first\",", 1),
    ));
    cases.push((DataType::Alert, alert.replacen('{', "{\"Owner\":null,", 1)));
    cases.push((
        DataType::Alert,
        alert.replacen('{', "{\"Unexpected\":1,", 1),
    ));
    let event = serde_json::to_string(&golden_value(DataType::Event)).unwrap();
    for dup in ["EventData", "SiteName", "EventParameters"] {
        cases.push((
            DataType::Event,
            event.replacen('{', &format!("{{\"{dup}\":\"first\","), 1),
        ));
    }
    for t in DataType::ALL {
        for field in golden_value(t).keys() {
            let mut v = golden_value(t);
            v.remove(field);
            cases.push((t, serde_json::to_string(&v).unwrap()));
        }
    }
    // Not an object, truncated, trailing data.
    let state = serde_json::to_string(&golden_value(DataType::State)).unwrap();
    for text in [
        "[]".to_owned(),
        String::new(),
        state[..state.len() - 1].to_owned(),
        format!("{state} {{}}"),
        format!("{state}\n"),
    ] {
        cases.push((DataType::State, text));
    }
    let mut failures = 0;
    for (t, text) in &cases {
        failures += usize::from(agree(*t, text.as_bytes(), &limits).is_err());
    }
    assert!(failures > cases.len() / 2, "most of these must fail");

    // Invalid UTF-8, in and out of strings.
    for bytes in [
        &b"{\"Context\":\"\xff\"}"[..],
        b"{\"Context\":\"\xed\xa0\x80\"}",
        b"\xef\xbb\xbf{}",
        b"{\"Co\xc3ntext\":1}",
    ] {
        assert!(agree(DataType::State, bytes, &limits).is_err());
    }
}

#[test]
fn validation_fails_the_same_way() {
    // Records that parse and then fail validation, through both views.
    let small = RecordLimits::default().with_max_field_bytes(8).unwrap();
    for t in DataType::ALL {
        let text = golden(t);
        // Every golden record has a field over 8 bytes but for Metadata.
        let _ = agree(t, text.as_bytes(), &small);
    }
    for (t, field, value) in [
        (
            DataType::Alert,
            "AlertName",
            format!("\"{}\"", "é".repeat(256)),
        ),
        (DataType::Alert, "Priority", "3".to_owned()),
        (DataType::Alert, "RepeatCount", "-4".to_owned()),
        (DataType::State, "HealthState", "9".to_owned()),
        (
            DataType::Event,
            "EventParameters",
            format!("[\"{}\"]", "\\n".repeat(20_000)),
        ),
        (DataType::Event, "bad name", "1".to_owned()),
        (DataType::Event, "eventdata", "1".to_owned()),
    ] {
        let r = agree(
            t,
            with_raw(t, field, &value).as_bytes(),
            &RecordLimits::default(),
        )
        .expect("parses");
        assert!(r.validate(&RecordLimits::default()).is_err(), "{t} {field}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_record_reads_the_same_borrowed(record in common::record()) {
        let mut json = Vec::new();
        record.write_json(&mut json);
        let back = agree(record.data_type(), &json, &RecordLimits::default()).unwrap();
        prop_assert_eq!(back, record);
    }

    #[test]
    fn mutated_golden_json_reads_the_same_borrowed(
        t in common::data_type(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut json = golden(t).into_bytes();
        for (at, byte) in cuts {
            let i = at.index(json.len());
            json[i] = byte;
        }
        let _ = agree(t, &json, &RecordLimits::default());
    }
}

fn frame_of(records: &[Record], codec: Codec) -> opsdata::Frame {
    let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let mut batch = TenantBatch::new(tenant, records[0].data_type());
    for r in records {
        batch.push(Tagged::new(tenant, r.clone())).unwrap();
    }
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut encoder = match codec {
        Codec::None => FrameEncoder::new().with_codec(Codec::None),
        _ => FrameEncoder::new(),
    };
    encoder
        .encode_frame(&batch, BatchId::from_random_bytes([7; 16]), now)
        .unwrap()
}

#[test]
fn the_visitor_reads_what_records_reads() {
    // Enough records of every type to span several 64 KiB windows.
    for t in DataType::ALL {
        let records: Vec<Record> = (0..600).map(|_| common::sample(t)).collect();
        for codec in [Codec::None, Codec::Deflate] {
            let frame = frame_of(&records, codec);
            let mut reader = PayloadReader::new(FrameLimits::default());
            let owned = reader.records(&frame).unwrap();
            let mut visited = Vec::new();
            let count = reader
                .visit_records(&frame, |index, r| {
                    assert_eq!(index, visited.len());
                    visited.push(r.to_owned());
                })
                .unwrap();
            assert_eq!(count as usize, records.len());
            assert_eq!(visited, owned);
            assert_eq!(visited, records);
        }
    }
}

#[test]
fn the_visitor_fails_as_records_fails() {
    let records: Vec<Record> = (0..50)
        .map(|_| common::sample(DataType::Performance))
        .collect();
    let frame = frame_of(&records, Codec::Deflate);
    // A record limit below the line size: RecordTooLarge for line 0.
    let small = FrameLimits::default().with_max_record_bytes(64).unwrap();
    // A record-count limit below the frame's.
    let few = FrameLimits::default().with_max_records(10).unwrap();
    for limits in [small, few] {
        let mut reader = PayloadReader::new(limits);
        let a = reader.records(&frame).unwrap_err();
        let mut visited = 0;
        let b = reader
            .visit_records(&frame, |_, _| visited += 1)
            .unwrap_err();
        assert_eq!(a.to_string(), b.to_string());
        assert_eq!(visited, 0);
        assert!(matches!(
            b,
            FrameError::RecordTooLarge { index: 0, .. } | FrameError::TooManyRecords { .. }
        ));
    }
}

/// A codec-none Alert frame of tenant `tenant` holding `lines` as its
/// payload, built by hand (the encoder refuses invalid records).
fn alert_frame_of_lines(tenant: TenantId, lines: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = Vec::new();
    for line in lines {
        payload.extend_from_slice(line);
        payload.push(b'\n');
    }
    let header = opsdata::FrameHeader {
        sealed: false,
        codec: Codec::None,
        data_type: DataType::Alert,
        record_count: lines.len() as u32,
        tenant,
        batch_id: BatchId::from_random_bytes([lines.len() as u8; 16]),
        created: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        content_len: payload.len() as u32,
        body_len: payload.len() as u32,
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(&common::crc32(&bytes).to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes.extend_from_slice(&common::crc32(&payload).to_be_bytes());
    bytes
}

#[test]
fn ingest_reports_a_frame_that_does_not_parse_before_an_invalid_record() {
    use base64::Engine;
    use opsdata::{
        AuthPolicy, DeterministicEntropy, EnrollmentKey, Ingest, IngestConfig, IngestError,
        KeyRing, Outcome, Principal, RotationPolicy, WorkspaceKeys, sign_data_collector,
        verify_data_collector,
    };
    let tenant: TenantId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let key =
        EnrollmentKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([9u8; 64]))
            .unwrap();
    let s = sign_data_collector(tenant, &key, now, b"x");
    let verified = verify_data_collector(
        &WorkspaceKeys::new(tenant, key),
        &s.authorization,
        &s.x_ms_date,
        b"x",
        &AuthPolicy::default(),
        now,
    )
    .unwrap();
    let principal = Principal::from_signature(&verified);
    let mut entropy = DeterministicEntropy::from_u64(1);
    let mut ring = KeyRing::new(tenant, &RotationPolicy::default());
    let k = ring.generate(&mut entropy, now).unwrap();
    ring.promote(k, now).unwrap();
    let mut ingest = Ingest::new(IngestConfig::default());

    let invalid = with_raw(DataType::Alert, "RepeatCount", "-1").into_bytes();
    let valid = with_raw(DataType::Alert, "RepeatCount", "1").into_bytes();
    let cases: [(&[Vec<u8>], &str); 3] = [
        // An invalid record, then a line that does not parse: the parse
        // error, as when every record was parsed before any was validated.
        (&[invalid.clone(), b"{}".to_vec()], "frame"),
        // An invalid record among valid ones: that record.
        (&[valid.clone(), invalid.clone(), valid.clone()], "record 1"),
        (&[valid.clone(), valid], "stored"),
    ];
    for (lines, want) in cases {
        let bytes = alert_frame_of_lines(tenant, lines);
        let report = ingest
            .handle_request(now, &principal, &mut ring, &mut entropy, &bytes)
            .unwrap();
        let answer = &report.answers[0];
        match (want, &answer.error) {
            ("frame", Some(IngestError::Frame(FrameError::Record { index: 1, .. })))
            | ("record 1", Some(IngestError::Record { index: 1, .. })) => {
                assert_eq!(answer.outcome, Outcome::Rejected);
            }
            ("stored", None) => assert_eq!(answer.outcome, Outcome::Delivered),
            (want, got) => panic!("{want}: {got:?}"),
        }
    }
    assert_eq!(ingest.stats(tenant).records, 2);
    assert_eq!(ingest.stats(tenant).rejected, 2);
}
