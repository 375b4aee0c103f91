//! Record schemas: serde round trips, golden files, validation, hostile JSON.

#![allow(clippy::disallowed_methods)] // tests read golden files

mod common;

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::{Duration, TimeZone, Utc};
use opsdata::{
    AlertPriority, AlertSeverity, CustomFields, DataType, Event, HealthState, NameProblem, Record,
    RecordError, RecordLimits, ResolutionState,
};
use proptest::prelude::*;

fn golden_path(t: DataType) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/records")
        .join(format!("{}.json", t.name().to_lowercase()))
}

fn round_trip(record: &Record) -> Record {
    let mut json = Vec::new();
    record.write_json(&mut json);
    Record::from_json(record.data_type(), &json)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_type_round_trips_and_validates(record in common::record()) {
        prop_assert!(record.validate(&RecordLimits::default()).is_ok(), "{:?}", record.validate(&RecordLimits::default()));
        let back = round_trip(&record);
        // Compare floats by bits: -0.0 and 0.0 must stay apart.
        if let (Record::Performance(a), Record::Performance(b)) = (&record, &back) {
            prop_assert_eq!(a.sample_value.to_bits(), b.sample_value.to_bits());
        }
        prop_assert_eq!(back, record);
    }

    #[test]
    fn every_resolution_state_round_trips(rs in any::<u8>()) {
        let Record::Alert(mut alert) = common::sample(DataType::Alert) else { unreachable!() };
        alert.resolution_state = ResolutionState(rs);
        let back = round_trip(&Record::Alert(alert.clone()));
        prop_assert_eq!(back, Record::Alert(alert));
    }

    #[test]
    fn arbitrary_bytes_never_panic(t in common::data_type(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Record::from_json(t, &bytes);
    }

    #[test]
    fn mutated_golden_json_never_panics(
        t in common::data_type(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut json = std::fs::read(golden_path(t)).unwrap();
        for (at, byte) in cuts {
            let i = at.index(json.len());
            json[i] = byte;
        }
        if let Ok(record) = Record::from_json(t, &json) {
            let _ = record.validate(&RecordLimits::default());
        }
    }
}

#[test]
fn golden_files_match_both_ways() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for t in DataType::ALL {
        let record = common::sample(t);
        record.validate(&RecordLimits::default()).unwrap();
        let pretty = serde_json::to_string_pretty(&record).unwrap() + "\n";
        let path = golden_path(t);
        if update {
            std::fs::write(&path, &pretty).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap();
        assert_eq!(pretty, golden, "{t}: serialization differs from {path:?}");
        assert_eq!(
            Record::from_json(t, golden.as_bytes()).unwrap(),
            record,
            "{t}: parsing {path:?}"
        );
    }
}

fn full_golden_path(t: DataType) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/records/full")
        .join(format!("{}.json", t.name().to_lowercase()))
}

/// Issue 16 item 7: one golden file per type with every field the schema
/// has, optional ones included, read and written byte for byte (the plain
/// golden files omit the optional ones). `tools/interop.sh` reads them
/// through a frame with `tools/opsf.py`.
#[test]
fn full_golden_files_set_every_field_and_match_both_ways() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for t in DataType::ALL {
        let record = common::full_sample(t);
        record.validate(&RecordLimits::default()).unwrap();
        let pretty = serde_json::to_string_pretty(&record).unwrap() + "\n";
        let path = full_golden_path(t);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &pretty).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap();
        assert_eq!(pretty, golden, "{t}: serialization differs from {path:?}");
        let parsed = Record::from_json(t, golden.as_bytes()).unwrap();
        assert_eq!(parsed, record, "{t}: parsing {path:?}");
        // Written compactly and read back, the same again.
        let mut compact = Vec::new();
        parsed.write_json(&mut compact);
        assert_eq!(Record::from_json(t, &compact).unwrap(), record);
        // Every field of the schema is there: the CSV columns name them all.
        let value: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&golden).unwrap();
        for column in opsdata::csv_header(t) {
            if *column == opsdata::CUSTOM_FIELDS_COLUMN {
                continue;
            }
            assert!(
                value.contains_key(*column),
                "{t}: {column} missing in {path:?}"
            );
        }
        if t == DataType::Event {
            let fixed = opsdata::csv_header(t).len() - 1;
            assert!(value.len() >= fixed + 6, "{t}: custom fields of every kind");
        } else {
            assert_eq!(value.len(), opsdata::csv_header(t).len(), "{t}: extra keys");
        }
    }
}

#[test]
fn golden_files_use_the_schema_names() {
    // Spot checks of the spellings the source uses, against the file text.
    let expect: [(DataType, &[&str]); 6] = [
        (
            DataType::Alert,
            &[
                "\"ProblemID\"",
                "\"TimeResolutionStateLastModifiedInDB\"",
                "\"ResolutionState\": 17",
                "\"TimeRaised\": \"2026-11-23T12:34:56.789Z\"",
            ],
        ),
        (
            DataType::Configuration,
            &["\"CustomerID\"", "\"AgentID\"", "\"ManagedTypePropertyID\""],
        ),
        (
            DataType::Event,
            &[
                "\"EventOriginalID\"",
                "\"ChannelLevel\": 2",
                "\"Bytes_Sent\": 1048576",
            ],
        ),
        (
            DataType::Metadata,
            &[
                "\"DNSName\"",
                "\"ForestDNSName\"",
                "\"IPAddress\"",
                "\"OffsetInMinuteFromGreenwichTime\": -480",
            ],
        ),
        (
            DataType::Performance,
            &["\"PerformanceSourceInternalID\"", "\"SampleValue\": 37.25"],
        ),
        (
            DataType::State,
            &[
                "\"StateId2\"",
                "\"NewHealthState\": 3",
                "\"DatabaseTimeModified\"",
            ],
        ),
    ];
    for (t, needles) in expect {
        let text = std::fs::read_to_string(golden_path(t)).unwrap();
        for needle in needles {
            assert!(text.contains(needle), "{t}: {needle} not in golden file");
        }
    }
    // Absent optional fields are omitted, not written as null.
    let meta = std::fs::read_to_string(golden_path(DataType::Metadata)).unwrap();
    assert!(!meta.contains("null"));
    assert!(!meta.contains("\"NetworkName\""));
    let alert = std::fs::read_to_string(golden_path(DataType::Alert)).unwrap();
    assert!(!alert.contains("\"ResolvedBy\""));
}

fn sample_mut<T>(t: DataType, f: impl FnOnce(&mut Record) -> T) -> Record {
    let mut r = common::sample(t);
    f(&mut r);
    r
}

fn err(r: &Record) -> RecordError {
    r.validate(&RecordLimits::default())
        .expect_err("validation should fail")
}

#[test]
fn too_long_strings_name_the_type_and_field() {
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        // 255 multi-byte characters pass; 256 fail.
        a.alert_name = "é".repeat(255);
    });
    r.validate(&RecordLimits::default()).unwrap();
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.alert_name = "é".repeat(256);
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            data_type: DataType::Alert,
            field: "AlertName",
            chars: 256,
            max: 255
        }
    ));

    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.alert_description = "x".repeat(2001);
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            field: "AlertDescription",
            max: 2000,
            ..
        }
    ));

    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.owner = Some("o".repeat(256));
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong { field: "Owner", .. }
    ));

    let r = sample_mut(DataType::Metadata, |r| {
        let Record::Metadata(m) = r else {
            unreachable!()
        };
        m.organizational_unit = Some("u".repeat(2048));
    });
    r.validate(&RecordLimits::default()).unwrap();
    let r = sample_mut(DataType::Metadata, |r| {
        let Record::Metadata(m) = r else {
            unreachable!()
        };
        m.organizational_unit = Some("u".repeat(2049));
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            data_type: DataType::Metadata,
            field: "OrganizationalUnit",
            max: 2048,
            ..
        }
    ));

    let r = sample_mut(DataType::Metadata, |r| {
        let Record::Metadata(m) = r else {
            unreachable!()
        };
        m.principal_name = Some("p".repeat(256));
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            field: "PrincipalName",
            ..
        }
    ));

    let r = sample_mut(DataType::Performance, |r| {
        let Record::Performance(p) = r else {
            unreachable!()
        };
        p.counter_name = "c".repeat(256);
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            data_type: DataType::Performance,
            field: "CounterName",
            ..
        }
    ));

    let r = sample_mut(DataType::Event, |r| {
        let Record::Event(e) = r else { unreachable!() };
        e.logging_computer = "c".repeat(256);
    });
    assert!(matches!(
        err(&r),
        RecordError::TooLong {
            data_type: DataType::Event,
            field: "LoggingComputer",
            ..
        }
    ));
}

#[test]
fn fields_over_32_kib_are_refused() {
    let max = RecordLimits::DEFAULT_MAX_FIELD_BYTES;
    type Setter = fn(&mut Record, String);
    let cases: [(DataType, &str, Setter); 4] = [
        (DataType::Configuration, "CurrentValue", |r, s| {
            let Record::Configuration(c) = r else {
                unreachable!()
            };
            c.current_value = s;
        }),
        (DataType::Event, "EventData", |r, s| {
            let Record::Event(e) = r else { unreachable!() };
            e.event_data = s;
        }),
        (DataType::State, "Context", |r, s| {
            let Record::State(st) = r else { unreachable!() };
            st.context = s;
        }),
        (DataType::Event, "SiteName", |r, s| {
            let Record::Event(e) = r else { unreachable!() };
            e.custom.insert("SiteName", s);
        }),
    ];
    for (t, field, set) in cases {
        let mut ok = common::sample(t);
        set(&mut ok, "x".repeat(max));
        ok.validate(&RecordLimits::default()).unwrap();
        let mut bad = common::sample(t);
        set(&mut bad, "x".repeat(max + 1));
        match err(&bad) {
            RecordError::FieldTooLarge {
                data_type,
                field: f,
                bytes,
                max: m,
            } => {
                assert_eq!((data_type, f.as_ref(), bytes, m), (t, field, max + 1, max));
            }
            other => panic!("{t} {field}: {other:?}"),
        }
    }

    // EventParameters are measured as JSON text: escapes count.
    let mut r = common::sample(DataType::Event);
    let Record::Event(e) = &mut r else {
        unreachable!()
    };
    e.event_parameters = vec!["\u{1}".repeat(max / 6)]; // each becomes \u0001
    assert!(matches!(
        err(&r),
        RecordError::FieldTooLarge {
            field: Cow::Borrowed("EventParameters"),
            ..
        }
    ));

    // A structured custom value is measured as JSON text.
    let mut r = common::sample(DataType::Event);
    let Record::Event(e) = &mut r else {
        unreachable!()
    };
    e.custom
        .insert("Big", serde_json::json!(vec![1234567; max / 8]));
    assert!(matches!(err(&r), RecordError::FieldTooLarge { .. }));

    // A lower configured limit applies to every string field.
    let limits = RecordLimits::default().with_max_field_bytes(5).unwrap();
    let r = common::sample(DataType::Performance);
    assert!(matches!(
        r.validate(&limits),
        Err(RecordError::FieldTooLarge {
            field: Cow::Borrowed("ObjectName"),
            max: 5,
            ..
        })
    ));
}

#[test]
fn non_finite_sample_values_are_refused() {
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let r = sample_mut(DataType::Performance, |r| {
            let Record::Performance(p) = r else {
                unreachable!()
            };
            p.sample_value = v;
        });
        assert!(matches!(
            err(&r),
            RecordError::NonFinite {
                data_type: DataType::Performance,
                field: "SampleValue"
            }
        ));
    }
}

#[test]
fn negative_repeat_count_is_refused() {
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.repeat_count = -1;
    });
    assert!(matches!(
        err(&r),
        RecordError::Negative {
            data_type: DataType::Alert,
            field: "RepeatCount",
            value: -1
        }
    ));
}

#[test]
fn resolved_before_raised_is_refused() {
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.time_resolved = Some(a.time_raised - Duration::nanoseconds(1));
    });
    assert!(matches!(
        err(&r),
        RecordError::TimeOrder {
            data_type: DataType::Alert,
            field: "TimeResolved",
            earlier_than: "TimeRaised"
        }
    ));
    // Equal times are fine.
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.time_resolved = Some(a.time_raised);
    });
    r.validate(&RecordLimits::default()).unwrap();
}

#[test]
fn utc_offset_must_be_within_14_hours() {
    for (offset, ok) in [
        (-840, true),
        (840, true),
        (-841, false),
        (841, false),
        (i32::MIN, false),
    ] {
        let r = sample_mut(DataType::Metadata, |r| {
            let Record::Metadata(m) = r else {
                unreachable!()
            };
            m.offset_in_minute_from_greenwich_time = Some(offset);
        });
        match r.validate(&RecordLimits::default()) {
            Ok(()) => assert!(ok, "{offset}"),
            Err(RecordError::OutOfRange {
                field,
                value,
                min,
                max,
                ..
            }) => {
                assert!(!ok, "{offset}");
                assert_eq!(
                    (field, value, min, max),
                    (
                        "OffsetInMinuteFromGreenwichTime",
                        i64::from(offset),
                        -840,
                        840
                    )
                );
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn times_must_be_writable_as_rfc_3339() {
    let r = sample_mut(DataType::Performance, |r| {
        let Record::Performance(p) = r else {
            unreachable!()
        };
        p.time_sampled = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
    });
    assert!(matches!(
        err(&r),
        RecordError::TimeOutOfRange {
            data_type: DataType::Performance,
            field: "TimeSampled",
            ..
        }
    ));
    let r = sample_mut(DataType::State, |r| {
        let Record::State(s) = r else { unreachable!() };
        s.last_green_alert_generated = Some(Utc.with_ymd_and_hms(-1, 12, 31, 0, 0, 0).unwrap());
    });
    assert!(matches!(
        err(&r),
        RecordError::TimeOutOfRange {
            field: "LastGreenAlertGenerated",
            ..
        }
    ));
}

#[test]
fn closed_enumerations_refuse_undefined_values() {
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.priority = AlertPriority(3);
    });
    assert!(matches!(
        err(&r),
        RecordError::UndefinedValue {
            field: "Priority",
            value: 3,
            ..
        }
    ));
    let r = sample_mut(DataType::Alert, |r| {
        let Record::Alert(a) = r else { unreachable!() };
        a.severity = AlertSeverity(9);
    });
    assert!(matches!(
        err(&r),
        RecordError::UndefinedValue {
            field: "Severity",
            value: 9,
            ..
        }
    ));
    let r = sample_mut(DataType::State, |r| {
        let Record::State(s) = r else { unreachable!() };
        s.old_health_state = HealthState(4);
    });
    assert!(matches!(
        err(&r),
        RecordError::UndefinedValue {
            data_type: DataType::State,
            field: "OldHealthState",
            value: 4
        }
    ));
}

#[test]
fn custom_field_names_follow_the_rule() {
    let cases: [(&str, Option<NameProblem>); 10] = [
        ("A", None),
        ("Site_Name_2", None),
        (&"a".repeat(45), None),
        ("", Some(NameProblem::Empty)),
        ("_private", Some(NameProblem::BadStart)),
        ("9lives", Some(NameProblem::BadStart)),
        ("has space", Some(NameProblem::BadCharacter)),
        ("Ünicode", Some(NameProblem::BadStart)),
        (&"a".repeat(46), Some(NameProblem::TooLong)),
        ("eventdata", Some(NameProblem::CollidesWithFixedField)),
    ];
    for (name, problem) in cases {
        let r = sample_mut(DataType::Event, |r| {
            let Record::Event(e) = r else { unreachable!() };
            e.custom.insert(name, 1);
        });
        match (r.validate(&RecordLimits::default()), problem) {
            (Ok(()), None) => {}
            (
                Err(RecordError::CustomFieldName {
                    data_type,
                    name: n,
                    problem: p,
                }),
                Some(want),
            ) => {
                assert_eq!((data_type, p), (DataType::Event, want), "{name:?}");
                assert_eq!(n, name);
            }
            (other, want) => panic!("{name:?}: {other:?}, wanted {want:?}"),
        }
    }
    // A long bad name is cut in the error.
    let r = sample_mut(DataType::Event, |r| {
        let Record::Event(e) = r else { unreachable!() };
        e.custom
            .insert(format!("bad name {}", "x".repeat(10_000)), 1);
    });
    let RecordError::CustomFieldName { name, .. } = err(&r) else {
        panic!()
    };
    assert!(name.len() < 100);
}

#[test]
fn at_most_500_fields_in_all() {
    let fixed = Event::FIXED_FIELDS.len();
    let build = |n: usize| {
        sample_mut(DataType::Event, |r| {
            let Record::Event(e) = r else { unreachable!() };
            e.custom = (0..n)
                .map(|i| (format!("F{i}"), i))
                .collect::<CustomFields>();
        })
    };
    build(500 - fixed)
        .validate(&RecordLimits::default())
        .unwrap();
    assert!(matches!(
        err(&build(501 - fixed)),
        RecordError::TooManyFields {
            data_type: DataType::Event,
            fields: 501,
            max: 500
        }
    ));
}

fn parse_err(t: DataType, json: &str) -> String {
    match Record::from_json(t, json.as_bytes()) {
        Err(RecordError::Json { data_type, source }) => {
            assert_eq!(data_type, t);
            source.to_string()
        }
        other => panic!("{json}: expected a JSON error, got {other:?}"),
    }
}

fn golden_value(t: DataType) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(golden_path(t)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn hostile_json_is_a_typed_error() {
    // Deep nesting, in a custom field and at the top.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut text = serde_json::to_string(&golden_value(DataType::Event)).unwrap();
    text.insert_str(text.len() - 1, &format!(",\"Deep\":{deep}"));
    assert!(parse_err(DataType::Event, &text).contains("recursion limit"));
    parse_err(DataType::Alert, &deep);

    // Numbers out of their field's range.
    for (t, field, value) in [
        (DataType::Alert, "RepeatCount", "99999999999999999999"),
        (DataType::Alert, "ResolutionState", "256"),
        (DataType::Alert, "Priority", "-1"),
        (DataType::Event, "ChannelLevel", "1.5"),
        (DataType::Performance, "SampleValue", "1e400"),
        (DataType::Metadata, "PhysicalProcessors", "-2"),
        (DataType::Event, "FullNumber", "9223372036854775808"),
    ] {
        let msg = parse_err(t, &with_raw(t, field, value));
        assert!(
            msg.contains("invalid") || msg.contains("out of range"),
            "{t} {field}: {msg}"
        );
    }

    // Wrong types.
    for (t, field, value) in [
        (DataType::Alert, "AlertName", "42"),
        (DataType::Alert, "IsMonitorAlert", "\"yes\""),
        (DataType::Alert, "TimeRaised", "\"yesterday\""),
        (DataType::Alert, "TimeRaised", "1700000000"),
        (DataType::Configuration, "AgentID", "\"not-a-uuid\""),
        (DataType::Event, "EventParameters", "\"one\""),
        (DataType::State, "Context", "null"),
    ] {
        let mut v = golden_value(t);
        v.insert(field.into(), serde_json::from_str(value).unwrap());
        let msg = parse_err(t, &serde_json::to_string(&v).unwrap());
        assert!(
            msg.contains("invalid") || msg.contains("expected"),
            "{t} {field}: {msg}"
        );
    }

    // Duplicate keys: fixed fields, and custom fields (which a plain map would silently merge).
    let alert = serde_json::to_string(&golden_value(DataType::Alert)).unwrap();
    let dup = alert.replacen("{", "{\"AlertName\":\"first\",", 1);
    assert!(parse_err(DataType::Alert, &dup).contains("duplicate field"));
    let event = serde_json::to_string(&golden_value(DataType::Event)).unwrap();
    let dup = event.replacen("{", "{\"EventData\":\"first\",", 1);
    assert!(parse_err(DataType::Event, &dup).contains("duplicate field"));
    let dup = event.replacen("{", "{\"SiteName\":\"first\",", 1);
    assert!(parse_err(DataType::Event, &dup).contains("duplicate field `SiteName`"));

    // Unknown fields on the fixed schemas; missing required fields.
    let extra = alert.replacen("{", "{\"Unexpected\":1,", 1);
    assert!(parse_err(DataType::Alert, &extra).contains("unknown field"));
    for field in Event::FIXED_FIELDS {
        let mut v = golden_value(DataType::Event);
        v.remove(field);
        let msg = parse_err(DataType::Event, &serde_json::to_string(&v).unwrap());
        assert!(msg.contains("missing field"), "{field}: {msg}");
    }
    let mut v = golden_value(DataType::Performance);
    v.remove("SampleValue");
    assert!(
        parse_err(DataType::Performance, &serde_json::to_string(&v).unwrap())
            .contains("missing field")
    );

    // Not an object, truncated, trailing data, not UTF-8.
    parse_err(DataType::State, "[]");
    parse_err(DataType::State, "");
    let state = serde_json::to_string(&golden_value(DataType::State)).unwrap();
    parse_err(DataType::State, &state[..state.len() - 1]);
    parse_err(DataType::State, &format!("{state} {{}}"));
    assert!(Record::from_json(DataType::State, b"{\"Context\":\"\xff\"}").is_err());

    // Optional fields may be null (read as absent).
    let mut v = golden_value(DataType::Alert);
    v.insert("ResolvedBy".into(), serde_json::Value::Null);
    let Record::Alert(a) = Record::from_json(
        DataType::Alert,
        serde_json::to_string(&v).unwrap().as_bytes(),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(a.resolved_by, None);
}

/// The golden record of `t` as JSON text with `field` set to the raw JSON `value`.
fn with_raw(t: DataType, field: &str, value: &str) -> String {
    let mut v = golden_value(t);
    v.insert(field.into(), "__RAW__".into());
    serde_json::to_string(&v)
        .unwrap()
        .replacen("\"__RAW__\"", value, 1)
}

#[test]
fn times_are_read_in_any_offset_and_written_in_utc() {
    let mut v = golden_value(DataType::Configuration);
    v.insert(
        "ChangeDate".into(),
        "2015-10-09T22:51:19.259645500-07:00".into(),
    );
    let r = Record::from_json(
        DataType::Configuration,
        serde_json::to_string(&v).unwrap().as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    r.write_json(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\"ChangeDate\":\"2015-10-10T05:51:19.259645500Z\""),
        "{text}"
    );
}

#[test]
fn nesting_limit_is_127_containers_counting_the_record_object() {
    // The record object is the first container; a custom field holding
    // `inner` arrays nests `1 + inner` containers in all.
    let with_depth = |inner: usize| {
        let mut text = serde_json::to_string(&golden_value(DataType::Event)).unwrap();
        let deep = format!("{}{}", "[".repeat(inner), "]".repeat(inner));
        text.insert_str(text.len() - 1, &format!(",\"Deep\":{deep}"));
        Record::from_json(DataType::Event, text.as_bytes())
    };
    assert!(with_depth(126).is_ok(), "127 containers must parse");
    let err = with_depth(127).unwrap_err().to_string();
    assert!(err.contains("recursion limit"), "128 containers: {err}");
}

#[test]
fn uuids_are_read_only_in_the_hyphenated_form() {
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let upper = id.to_uppercase();
    let accepted = Record::from_json(
        DataType::Performance,
        with_raw(
            DataType::Performance,
            "PerformanceDataId",
            &format!("\"{upper}\""),
        )
        .as_bytes(),
    )
    .unwrap();
    let Record::Performance(p) = accepted else {
        unreachable!()
    };
    assert_eq!(p.performance_data_id.to_string(), id);
    for other in [
        id.replace('-', ""),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
    ] {
        for (t, field) in [
            (DataType::Performance, "PerformanceDataId"),
            (DataType::Event, "EventId"),
            (DataType::State, "MonitorId"),
        ] {
            let msg = parse_err(t, &with_raw(t, field, &format!("\"{other}\"")));
            assert!(msg.contains("hyphenated"), "{t} {field} {other}: {msg}");
        }
    }
}
