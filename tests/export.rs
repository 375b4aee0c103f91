//! Export: CSV parts never exceed their cap and their continuations cover
//! every row exactly once; CSV round-trips through the `csv` reader; search
//! pages likewise; continuation tokens are bound to tenant, data type and
//! query, and an edited, truncated, expired or garbage token is refused
//! with a typed error, never a page. Also the documented token vector and
//! the fuzz seed corpus of `paging_token`.

#![allow(clippy::disallowed_methods)] // reads docs/ and the fuzz corpus from disk

mod common;

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    CUSTOM_FIELDS_COLUMN, CsvExport, DataType, ExportContinuation, ExportError, Metadata,
    PAGE_TOKEN_LEN, Pager, PagingKey, Performance, Record, Tagged, TenantId, csv_header,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const QUERY: &str = "Performance | where CounterName == '% Processor Time'";

fn tenant_a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}

fn tenant_b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}

/// 2026-11-23T12:00:00Z, the documented vector's issue time.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn vector_key() -> PagingKey {
    let mut key = [0u8; 32];
    for (i, b) in (0u8..).zip(key.iter_mut()) {
        *b = i;
    }
    PagingKey::from_bytes(key)
}

fn perf(tenant: TenantId, i: u64, name: &str) -> Tagged<Record> {
    Tagged::new(
        tenant,
        Record::from(Performance {
            object_name: name.into(),
            counter_name: "% Processor Time".into(),
            perfmon_instance_name: "_Total".into(),
            performance_data_id: Uuid::from_u128(u128::from(i) + 1),
            performance_source_internal_id: 7,
            sample_value: i as f64 / 4.0,
            time_sampled: now(),
            time_added: now(),
        }),
    )
}

fn perf_rows(tenant: TenantId, n: usize) -> Vec<Tagged<Record>> {
    (0..n as u64)
        .map(|i| perf(tenant, i, "Processor"))
        .collect()
}

/// Parses CSV text with the `csv` crate's reader: every record, header
/// included, as a list of cells.
fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// The cell a field's JSON value should become, from the record's own JSON
/// text (independent of the exporter, which never writes JSON text first).
fn expected_cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(nested) => nested.to_string(),
    }
}

/// The record's JSON object, parsed back from `Record::write_json`.
fn json_object(record: &Record) -> serde_json::Map<String, Value> {
    let mut out = Vec::new();
    record.write_json(&mut out);
    match serde_json::from_slice(&out).unwrap() {
        Value::Object(map) => map,
        other => panic!("a record is a JSON object, not {other}"),
    }
}

/// The cells `record` must export to, and a check that the header names
/// every field its JSON has (custom fields going into one column).
fn expected_row(data_type: DataType, record: &Record) -> Vec<String> {
    let header = csv_header(data_type);
    let mut object = json_object(record);
    let mut row = Vec::new();
    for &column in header {
        if data_type == DataType::Event && column == CUSTOM_FIELDS_COLUMN {
            continue;
        }
        row.push(expected_cell(object.remove(column).as_ref()));
    }
    if data_type == DataType::Event {
        // What is left are the custom fields.
        row.push(Value::Object(object).to_string());
    } else {
        assert!(
            object.is_empty(),
            "fields missing from the header: {object:?}"
        );
    }
    row
}

/// Rebuilds the record from its cells: each cell becomes the JSON value of
/// the kind the field has (a string stays a string, an empty cell of any
/// other kind is an absent field, anything else is JSON text).
fn record_from_cells(data_type: DataType, original: &Record, cells: &[String]) -> Record {
    let original = json_object(original);
    let mut object = serde_json::Map::new();
    for (&column, cell) in csv_header(data_type).iter().zip(cells) {
        if data_type == DataType::Event && column == CUSTOM_FIELDS_COLUMN {
            let Value::Object(custom) = serde_json::from_str(cell).unwrap() else {
                panic!("CustomFields is not an object: {cell}");
            };
            object.extend(custom);
            continue;
        }
        match original.get(column) {
            Some(Value::String(_)) => {
                object.insert(column.into(), Value::String(cell.clone()));
            }
            _ if cell.is_empty() => {}
            _ => {
                object.insert(column.into(), serde_json::from_str(cell).unwrap());
            }
        }
    }
    Record::from_json(data_type, Value::Object(object).to_string().as_bytes()).unwrap()
}

fn export_all(export: CsvExport, rows: &[Tagged<Record>]) -> (Vec<Vec<String>>, usize) {
    let mut all = Vec::new();
    let mut parts = 0;
    let mut next: Option<ExportContinuation> = None;
    loop {
        let part = match &next {
            None => export,
            Some(c) => export.resume(c).unwrap(),
        };
        let mut out = Vec::new();
        let summary = part.write(rows, &mut out).unwrap();
        parts += 1;
        assert!(summary.rows <= export.max_rows(), "a part over its cap");
        let cells = parse_csv(&out);
        assert_eq!(
            cells[0],
            csv_header(export.data_type()),
            "every part has the header"
        );
        assert_eq!(cells.len() - 1, summary.rows);
        assert_eq!(summary.first_row, all.len() as u64);
        all.extend(cells.into_iter().skip(1));
        match summary.continuation {
            Some(c) => {
                assert_eq!(summary.rows, export.max_rows(), "cut below the cap");
                assert_eq!(c.next_row(), all.len() as u64);
                next = Some(c);
            }
            None => return (all, parts),
        }
        assert!(parts <= rows.len() + 1, "continuations do not end");
    }
}

fn is_token_error(e: &ExportError) -> bool {
    matches!(
        e,
        ExportError::TokenMalformed { .. }
            | ExportError::TokenTampered
            | ExportError::TokenVersion { .. }
            | ExportError::TokenTenantMismatch { .. }
            | ExportError::TokenDataTypeMismatch { .. }
            | ExportError::TokenQueryMismatch
            | ExportError::TokenExpired { .. }
    )
}

/// The next-page token of a fresh first page (page size 2, 5 rows).
fn fresh_token(pager: &Pager, rows: &[Tagged<Record>]) -> String {
    pager
        .page(tenant_a(), DataType::Performance, QUERY, None, rows, now())
        .unwrap()
        .next
        .expect("more than one page")
}

fn page_with(pager: &Pager, rows: &[Tagged<Record>], token: &str) -> Result<usize, ExportError> {
    pager
        .page(
            tenant_a(),
            DataType::Performance,
            QUERY,
            Some(token),
            rows,
            now() + Duration::seconds(1),
        )
        .map(|p| p.rows.len())
}

// ---------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------

#[test]
fn csv_header_follows_records_md() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/RECORDS.md"))
            .unwrap();
    let mut sections = 0;
    for data_type in DataType::ALL {
        let heading = format!("## {} (data type {})", data_type, data_type.as_u8());
        let section = doc.split(&heading).nth(1).expect("a section per type");
        let section = section.split("\n## ").next().unwrap();
        let fields: Vec<&str> = section
            .lines()
            .skip_while(|l| !l.starts_with("| field |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.split('|').nth(1).unwrap().trim())
            .collect();
        let mut expected = fields.clone();
        if data_type == DataType::Event {
            expected.push(CUSTOM_FIELDS_COLUMN);
        }
        assert_eq!(csv_header(data_type), expected.as_slice(), "{data_type}");
        sections += 1;
    }
    assert_eq!(sections, 6);
}

#[test]
fn awkward_strings_round_trip_through_the_csv_reader() {
    let awkward = [
        "",
        "a,b",
        "say \"hi\"",
        "\"",
        "line one\nline two",
        "cr\rand crlf\r\n",
        "héllo wörld ✓ 𝄞 日本語",
        "  spaced  ",
        "\t,\"\n",
        "=SUM(A1:A2)",
    ];
    let rows: Vec<_> = awkward
        .iter()
        .enumerate()
        .map(|(i, s)| perf(tenant_a(), i as u64, s))
        .collect();
    let mut out = Vec::new();
    let summary = CsvExport::new(tenant_a(), DataType::Performance)
        .write(&rows, &mut out)
        .unwrap();
    assert_eq!((summary.rows, summary.is_cut()), (awkward.len(), false));
    assert!(out.ends_with(b"\r\n"), "records end with CRLF");
    let cells = parse_csv(&out);
    assert_eq!(cells.len(), awkward.len() + 1);
    for (row, s) in cells[1..].iter().zip(awkward) {
        assert_eq!(row[0], s, "ObjectName");
        assert_eq!(row[1], "% Processor Time");
        assert_eq!(row[6], "2026-11-23T12:00:00Z", "TimeSampled");
    }
}

#[test]
fn cells_follow_the_record_json() {
    // The golden sample records: times, UUIDs, numbers, lists, custom fields.
    let mut out = Vec::new();
    let event = Tagged::new(tenant_a(), common::sample(DataType::Event));
    let summary = CsvExport::new(tenant_a(), DataType::Event)
        .write([&event], &mut out)
        .unwrap();
    assert_eq!(summary.rows, 1);
    let cells = parse_csv(&out);
    let row: Vec<(&str, &str)> = cells[0]
        .iter()
        .map(String::as_str)
        .zip(cells[1].iter().map(String::as_str))
        .collect();
    let cell = |name: &str| row.iter().find(|(c, _)| *c == name).unwrap().1;
    assert_eq!(cell("EventId"), "0f8fad5b-d9cb-469f-a165-708677280014");
    assert_eq!(cell("FullNumber"), "1073743833");
    assert_eq!(cell("ChannelLevel"), "2");
    assert_eq!(cell("EventParameters"), r#"["Default Web Site","503"]"#);
    assert_eq!(cell("TimeGenerated"), "2026-11-23T12:34:56.789Z");
    assert_eq!(
        cell(CUSTOM_FIELDS_COLUMN),
        r#"{"Bytes_Sent":1048576,"SiteName":"Default Web Site","Tags":["iis","prod"]}"#
    );

    // Absent optional fields are empty cells; booleans are true/false.
    let metadata = Tagged::new(
        tenant_a(),
        Record::from(Metadata {
            base_managed_entity_id: Uuid::from_u128(1),
            is_virtual_machine: Some(false),
            offset_in_minute_from_greenwich_time: Some(-480),
            ..Metadata::default()
        }),
    );
    let mut out = Vec::new();
    let summary = CsvExport::new(tenant_a(), DataType::Metadata)
        .write([metadata], &mut out)
        .unwrap();
    assert_eq!(summary.rows, 1);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        lines[1],
        "00000000-0000-0000-0000-000000000001,,,,,,,,,,,,false,,,,,,,,-480"
    );

    // An event without custom fields has {} in its last column.
    let Record::Event(mut bare) = common::sample(DataType::Event) else {
        unreachable!()
    };
    bare.custom = opsdata::CustomFields::new();
    let mut out = Vec::new();
    let summary = CsvExport::new(tenant_a(), DataType::Event)
        .write([Tagged::new(tenant_a(), Record::Event(bare))], &mut out)
        .unwrap();
    assert_eq!(summary.rows, 1);
    assert_eq!(parse_csv(&out)[1].last().unwrap(), "{}");
}

#[test]
fn export_refuses_another_tenants_or_types_record_before_writing_it() {
    let mut rows = perf_rows(tenant_a(), 3);
    rows.push(perf(tenant_b(), 3, "SECRET-OF-B"));
    let mut out = Vec::new();
    let err = CsvExport::new(tenant_a(), DataType::Performance)
        .write(&rows, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, ExportError::TenantMismatch { expected, found, row: 3 }
            if expected == tenant_a() && found == tenant_b()),
        "{err:?}"
    );
    assert!(!String::from_utf8_lossy(&out).contains("SECRET-OF-B"));

    let mut rows = perf_rows(tenant_a(), 2);
    rows.push(Tagged::new(tenant_a(), common::sample(DataType::Alert)));
    let err = CsvExport::new(tenant_a(), DataType::Performance)
        .write(&rows, Vec::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::DataTypeMismatch {
                expected: DataType::Performance,
                found: DataType::Alert,
                row: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn export_settings_and_continuations_are_checked() {
    let export = CsvExport::new(tenant_a(), DataType::Performance);
    assert_eq!(export.max_rows(), 50_000);
    for bad in [0, CsvExport::MAX_ROWS_CEILING + 1] {
        assert!(matches!(
            export.with_max_rows(bad),
            Err(ExportError::InvalidSetting {
                setting: "max_rows",
                ..
            })
        ));
    }
    let other_tenant = ExportContinuation::new(tenant_b(), DataType::Performance, 3);
    let other_type = ExportContinuation::new(tenant_a(), DataType::Alert, 3);
    for c in [other_tenant, other_type] {
        assert!(matches!(
            export.resume(&c),
            Err(ExportError::ContinuationMismatch { .. })
        ));
    }
    // A start past the end: the header alone, not cut.
    let past = ExportContinuation::new(tenant_a(), DataType::Performance, 99);
    let mut out = Vec::new();
    let summary = export
        .resume(&past)
        .unwrap()
        .write(perf_rows(tenant_a(), 3), &mut out)
        .unwrap();
    assert_eq!((summary.rows, summary.is_cut()), (0, false));
    assert_eq!(parse_csv(&out).len(), 1);
}

#[test]
fn default_cap_cuts_at_50_000_rows() {
    let rows = perf_rows(tenant_a(), 50_001);
    let export = CsvExport::new(tenant_a(), DataType::Performance);
    let mut out = Vec::new();
    let summary = export.write(&rows, &mut out).unwrap();
    assert_eq!(summary.rows, 50_000);
    let next = summary.continuation.expect("cut");
    assert_eq!(next.next_row(), 50_000);
    let summary = export
        .resume(&next)
        .unwrap()
        .write(&rows, Vec::new())
        .unwrap();
    assert_eq!((summary.rows, summary.is_cut()), (1, false));
    // Exactly at the cap: not cut.
    let summary = export.write(&rows[..50_000], Vec::new()).unwrap();
    assert!(!summary.is_cut());
}

// ---------------------------------------------------------------------------
// Paging and tokens
// ---------------------------------------------------------------------------

#[test]
fn token_matches_the_documented_vector() {
    const VECTOR: &str = "AQUPj61b2ctGn6FlcIZ3KJUObL5nuF_B1NVlzPclZaTnehuPqYKfiIKq8FzOnmiGCm0AAAAAAAAAAwAAAABrBCrASflX5pP1wOA0wbTt-RCODDQl09iLvkbSKaJV-a7sWoM";
    // Built here from docs/EXPORT.md alone.
    let mut payload = vec![1u8, 5];
    payload.extend_from_slice(tenant_a().as_bytes());
    payload
        .extend_from_slice(ring::digest::digest(&ring::digest::SHA256, QUERY.as_bytes()).as_ref());
    payload.extend_from_slice(&3u64.to_be_bytes());
    payload.extend_from_slice(&now().timestamp().to_be_bytes());
    let key: Vec<u8> = (0u8..32).collect();
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        &payload,
    );
    payload.extend_from_slice(tag.as_ref());
    assert_eq!(URL_SAFE_NO_PAD.encode(&payload), VECTOR);
    assert_eq!(VECTOR.len(), PAGE_TOKEN_LEN);

    // The library issues it, and accepts it.
    let pager = Pager::new(vector_key()).with_page_size(3).unwrap();
    let rows = perf_rows(tenant_a(), 5);
    let first = pager
        .page(tenant_a(), DataType::Performance, QUERY, None, &rows, now())
        .unwrap();
    assert_eq!(first.next.as_deref(), Some(VECTOR));
    let second = pager
        .page(
            tenant_a(),
            DataType::Performance,
            QUERY,
            Some(VECTOR),
            &rows,
            now(),
        )
        .unwrap();
    assert_eq!(
        (second.offset, second.rows.len(), second.next),
        (3, 2, None)
    );
}

#[test]
fn pager_settings_are_checked() {
    let pager = Pager::new(vector_key());
    assert_eq!(pager.page_size(), 5_000);
    assert_eq!(pager.max_token_age(), Duration::hours(1));
    for bad in [0, Pager::MAX_PAGE_SIZE + 1] {
        assert!(matches!(
            Pager::new(vector_key()).with_page_size(bad),
            Err(ExportError::InvalidSetting {
                setting: "page_size",
                ..
            })
        ));
    }
    for bad in [
        Duration::zero(),
        Duration::milliseconds(999),
        Duration::days(8),
    ] {
        assert!(matches!(
            Pager::new(vector_key()).with_max_token_age(bad),
            Err(ExportError::InvalidSetting {
                setting: "max_token_age",
                ..
            })
        ));
    }
    // The default page is 5 000 rows.
    let rows = perf_rows(tenant_a(), 5_001);
    let page = pager
        .page(tenant_a(), DataType::Performance, QUERY, None, &rows, now())
        .unwrap();
    assert_eq!(page.rows.len(), 5_000);
    assert!(page.next.is_some());
}

#[test]
fn a_page_refuses_another_tenants_row() {
    let pager = Pager::new(vector_key()).with_page_size(10).unwrap();
    let mut rows = perf_rows(tenant_a(), 2);
    rows.push(perf(tenant_b(), 2, "Processor"));
    let err = pager
        .page(tenant_a(), DataType::Performance, QUERY, None, &rows, now())
        .unwrap_err();
    assert!(
        matches!(err, ExportError::TenantMismatch { row: 2, .. }),
        "{err:?}"
    );
    let err = pager
        .page(tenant_a(), DataType::Alert, QUERY, None, &rows, now())
        .unwrap_err();
    assert!(
        matches!(err, ExportError::DataTypeMismatch { row: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn tokens_expire() {
    let pager = Pager::new(vector_key()).with_page_size(2).unwrap();
    let rows = perf_rows(tenant_a(), 5);
    let token = fresh_token(&pager, &rows);
    let at = |t: DateTime<Utc>| {
        pager.page(
            tenant_a(),
            DataType::Performance,
            QUERY,
            Some(&token),
            &rows,
            t,
        )
    };
    assert!(at(now() + Duration::hours(1)).is_ok());
    assert!(matches!(
        at(now() + Duration::hours(1) + Duration::seconds(1)),
        Err(ExportError::TokenExpired { .. })
    ));
    // Another node whose clock is behind by up to five minutes accepts it.
    assert!(at(now() - Duration::minutes(5)).is_ok());
    assert!(matches!(
        at(now() - Duration::minutes(5) - Duration::seconds(1)),
        Err(ExportError::TokenExpired { .. })
    ));
}

/// The base64url alphabet, and bytes outside it.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn every_single_character_edit_of_a_token_is_refused() {
    let pager = Pager::new(vector_key()).with_page_size(2).unwrap();
    let rows = perf_rows(tenant_a(), 5);
    let token = fresh_token(&pager, &rows);
    assert_eq!(page_with(&pager, &rows, &token).unwrap(), 2);
    let others: &[u8] = b"=+/ .\0\x7f";
    let mut edits = 0;
    for at in 0..token.len() {
        for &b in ALPHABET.iter().chain(others) {
            if token.as_bytes()[at] == b {
                continue;
            }
            let mut edited = token.clone().into_bytes();
            edited[at] = b;
            let edited = String::from_utf8(edited).unwrap();
            match page_with(&pager, &rows, &edited) {
                Err(ExportError::TokenMalformed { .. } | ExportError::TokenTampered) => {}
                other => panic!("edit {b:#x} at {at} gave {other:?}"),
            }
            edits += 1;
        }
        // A multi-byte character in place of one: malformed.
        let mut edited = token.clone();
        edited.replace_range(at..=at, "é");
        assert!(matches!(
            page_with(&pager, &rows, &edited),
            Err(ExportError::TokenMalformed { .. })
        ));
    }
    assert!(edits > 131 * 63);
}

#[test]
fn every_bit_flip_of_the_token_bytes_is_tampered() {
    let pager = Pager::new(vector_key()).with_page_size(2).unwrap();
    let rows = perf_rows(tenant_a(), 5);
    let raw = URL_SAFE_NO_PAD.decode(fresh_token(&pager, &rows)).unwrap();
    assert_eq!(raw.len(), 98);
    for at in 0..raw.len() {
        for bit in 0..8 {
            let mut edited = raw.clone();
            edited[at] ^= 1 << bit;
            let text = URL_SAFE_NO_PAD.encode(&edited);
            assert!(
                matches!(
                    page_with(&pager, &rows, &text),
                    Err(ExportError::TokenTampered)
                ),
                "bit {bit} of byte {at}"
            );
        }
    }
    // Under another key: tampered too.
    let other = Pager::new(PagingKey::from_bytes([7; 32]));
    let token = fresh_token(&pager, &rows);
    assert!(matches!(
        page_with(&other, &rows, &token),
        Err(ExportError::TokenTampered)
    ));
}

#[test]
fn truncated_padded_and_oversized_tokens_are_malformed() {
    let pager = Pager::new(vector_key()).with_page_size(2).unwrap();
    let rows = perf_rows(tenant_a(), 5);
    let token = fresh_token(&pager, &rows);
    for end in 0..token.len() {
        assert!(
            matches!(
                page_with(&pager, &rows, &token[..end]),
                Err(ExportError::TokenMalformed { .. })
            ),
            "prefix of {end}"
        );
    }
    for extra in ["=", "A", "==", " ", "\n"] {
        assert!(matches!(
            page_with(&pager, &rows, &format!("{token}{extra}")),
            Err(ExportError::TokenMalformed { .. })
        ));
    }
    let huge = "A".repeat(10 << 20);
    assert!(matches!(
        page_with(&pager, &rows, &huge),
        Err(ExportError::TokenMalformed { .. })
    ));
    // Standard Base64 (+ and /) is not the URL-safe alphabet.
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(URL_SAFE_NO_PAD.decode(&token).unwrap());
    if standard != token {
        assert!(matches!(
            page_with(&pager, &rows, &standard),
            Err(ExportError::TokenMalformed { .. })
        ));
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Text dense in the characters CSV must quote, and non-ASCII.
fn awkward_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just(','),
            Just('"'),
            Just('\n'),
            Just('\r'),
            Just(' '),
            Just('é'),
            Just('𝄞'),
            any::<char>(),
        ],
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// A data type and some valid records of it.
fn records_of_one_type(max: usize) -> impl Strategy<Value = (DataType, Vec<Record>)> {
    common::data_type().prop_flat_map(move |t| (Just(t), vec(common::record_of(t), 0..max)))
}

fn tagged(tenant: TenantId, records: Vec<Record>) -> Vec<Tagged<Record>> {
    records
        .into_iter()
        .map(|r| Tagged::new(tenant, r))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn csv_rows_round_trip_through_the_csv_reader(
        (data_type, records) in records_of_one_type(6),
        names in vec(awkward_text(), 6),
    ) {
        // Awkward strings in every type's string fields (Performance,
        // Configuration and Event get them from here; the others from the
        // record strategies' any-Unicode text).
        let records: Vec<Record> = records
            .into_iter()
            .zip(names.iter().cycle())
            .map(|(mut r, name)| {
                match &mut r {
                    Record::Performance(p) => p.object_name.clone_from(name),
                    Record::Configuration(c) => c.current_value.clone_from(name),
                    Record::Event(e) => e.event_data.clone_from(name),
                    Record::Alert(a) => a.alert_description.clone_from(name),
                    Record::State(s) => s.context.clone_from(name),
                    Record::Metadata(m) => m.display_name = Some(name.clone()),
                }
                r
            })
            .collect();
        let rows = tagged(tenant_a(), records.clone());
        let mut out = Vec::new();
        let summary = CsvExport::new(tenant_a(), data_type).write(&rows, &mut out).unwrap();
        prop_assert_eq!(summary.rows, records.len());
        let cells = parse_csv(&out);
        prop_assert_eq!(&cells[0], csv_header(data_type));
        prop_assert_eq!(cells.len(), records.len() + 1);
        for (row, record) in cells[1..].iter().zip(&records) {
            prop_assert_eq!(row, &expected_row(data_type, record));
            prop_assert_eq!(&record_from_cells(data_type, record, row), record);
        }
    }

    #[test]
    fn csv_parts_never_exceed_the_cap_and_cover_every_row_once(
        (data_type, records) in records_of_one_type(40),
        cap in 1usize..12,
    ) {
        let rows = tagged(tenant_a(), records.clone());
        let export = CsvExport::new(tenant_a(), data_type).with_max_rows(cap).unwrap();
        let (all, parts) = export_all(export, &rows);
        prop_assert_eq!(parts, records.len().div_ceil(cap).max(1));
        prop_assert_eq!(all.len(), records.len());
        for (row, record) in all.iter().zip(&records) {
            prop_assert_eq!(row, &expected_row(data_type, record));
        }
    }

    #[test]
    fn pages_never_exceed_the_size_and_cover_every_row_once(
        n in 0usize..60,
        size in 1usize..12,
        step in 0i64..600,
    ) {
        let pager = Pager::new(vector_key()).with_page_size(size).unwrap();
        let rows = perf_rows(tenant_a(), n);
        let mut seen: Vec<&Tagged<Record>> = Vec::new();
        let mut token: Option<String> = None;
        let mut t = now();
        loop {
            let page = pager
                .page(tenant_a(), DataType::Performance, QUERY, token.as_deref(), &rows, t)
                .unwrap();
            prop_assert!(page.rows.len() <= size);
            prop_assert_eq!(page.offset, seen.len() as u64);
            seen.extend(page.rows);
            match page.next {
                Some(next) => {
                    prop_assert_eq!(seen.len() % size, 0, "a short page with a next token");
                    token = Some(next);
                }
                None => break,
            }
            prop_assert!(seen.len() <= n);
            t += Duration::seconds(step);
        }
        prop_assert_eq!(seen.len(), n);
        for (got, want) in seen.iter().zip(&rows) {
            prop_assert!(std::ptr::eq(*got, want), "rows out of order");
        }
    }

    #[test]
    fn a_token_moved_to_another_tenant_type_or_query_is_refused(
        tenant in common::tenant(),
        other in common::tenant(),
        query in ".{0,40}",
        other_query in ".{0,40}",
        size in 1usize..4,
    ) {
        prop_assume!(tenant != other && query != other_query);
        let pager = Pager::new(vector_key()).with_page_size(size).unwrap();
        let rows = perf_rows(tenant, 2 * size);
        let others = perf_rows(other, 2 * size);
        let token = pager
            .page(tenant, DataType::Performance, &query, None, &rows, now())
            .unwrap()
            .next
            .unwrap();
        let ask = |t, d, q: &str, rows: &[Tagged<Record>]| {
            pager.page(t, d, q, Some(&token), rows, now()).map(|p| p.rows.len())
        };
        prop_assert_eq!(ask(tenant, DataType::Performance, &query, &rows).unwrap(), size);
        let is_tenant_mismatch = matches!(
            ask(other, DataType::Performance, &query, &others),
            Err(ExportError::TokenTenantMismatch { expected, found })
                if expected == other && found == tenant
        );
        prop_assert!(is_tenant_mismatch);
        let is_query_mismatch = matches!(
            ask(tenant, DataType::Performance, &other_query, &rows),
            Err(ExportError::TokenQueryMismatch)
        );
        prop_assert!(is_query_mismatch);
        let is_type_mismatch = matches!(
            ask(tenant, DataType::Alert, &query, &rows),
            Err(ExportError::TokenDataTypeMismatch { .. })
        );
        prop_assert!(is_type_mismatch);
    }

    #[test]
    fn a_token_edited_in_any_byte_is_refused(
        tenant in common::tenant(),
        query in ".{0,20}",
        size in 1usize..4,
        at in 0usize..PAGE_TOKEN_LEN,
        byte in any::<u8>(),
    ) {
        let pager = Pager::new(vector_key()).with_page_size(size).unwrap();
        let rows = perf_rows(tenant, 3 * size);
        let token = pager
            .page(tenant, DataType::Performance, &query, None, &rows, now())
            .unwrap()
            .next
            .unwrap();
        prop_assume!(token.as_bytes()[at] != byte);
        let mut edited = token.into_bytes();
        edited[at] = byte;
        let edited = String::from_utf8_lossy(&edited).into_owned();
        let result = pager.page(tenant, DataType::Performance, &query, Some(&edited), &rows, now());
        let refused = matches!(
            result,
            Err(ExportError::TokenMalformed { .. } | ExportError::TokenTampered)
        );
        prop_assert!(refused, "{:?}", result.map(|p| p.offset));
    }

    #[test]
    fn garbage_is_never_a_page(
        text in prop_oneof![
            ".{0,200}",
            "[A-Za-z0-9_-]{131}",
            vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
    ) {
        let pager = Pager::new(vector_key()).with_page_size(2).unwrap();
        let rows = perf_rows(tenant_a(), 5);
        let result = pager.page(tenant_a(), DataType::Performance, QUERY, Some(&text), &rows, now());
        let is_token_refusal = matches!(&result, Err(e) if is_token_error(e));
        prop_assert!(is_token_refusal);
    }
}
