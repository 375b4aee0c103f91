use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Check, DataType, RecordError, RecordLimits};

/// One sample of a performance counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    /// `ObjectName` (for example `Processor`), at most 255 characters.
    #[serde(rename = "ObjectName")]
    pub object_name: String,
    /// `CounterName` (for example `% Processor Time`), at most 255 characters.
    #[serde(rename = "CounterName")]
    pub counter_name: String,
    /// `PerfmonInstanceName` (for example `_Total`), at most 255 characters;
    /// may be empty.
    #[serde(rename = "PerfmonInstanceName")]
    pub perfmon_instance_name: String,
    /// `PerformanceDataId`.
    #[serde(rename = "PerformanceDataId", with = "super::uuid_text")]
    pub performance_data_id: Uuid,
    /// `PerformanceSourceInternalID`.
    #[serde(rename = "PerformanceSourceInternalID")]
    pub performance_source_internal_id: i32,
    /// `SampleValue`: must be finite (JSON has no NaN or infinity).
    #[serde(rename = "SampleValue")]
    pub sample_value: f64,
    /// `TimeSampled`.
    #[serde(rename = "TimeSampled", with = "super::rfc3339")]
    pub time_sampled: DateTime<Utc>,
    /// `TimeAdded`.
    #[serde(rename = "TimeAdded", with = "super::rfc3339")]
    pub time_added: DateTime<Utc>,
}

impl Performance {
    /// Checks the sample against the schema's limits; see [`crate::Record::validate`].
    ///
    /// # Errors
    ///
    /// [`RecordError::TooLong`] for a name over 255 characters,
    /// [`RecordError::NonFinite`] for a NaN or infinite `SampleValue`,
    /// [`RecordError::TimeOutOfRange`] for a time outside 0000–9999.
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        self.as_borrowed().validate(limits)
    }

    /// The borrowed view of this sample (no copy).
    #[must_use]
    pub fn as_borrowed(&self) -> PerformanceRef<'_> {
        PerformanceRef {
            object_name: Cow::Borrowed(&self.object_name),
            counter_name: Cow::Borrowed(&self.counter_name),
            perfmon_instance_name: Cow::Borrowed(&self.perfmon_instance_name),
            performance_data_id: self.performance_data_id,
            performance_source_internal_id: self.performance_source_internal_id,
            sample_value: self.sample_value,
            time_sampled: self.time_sampled,
            time_added: self.time_added,
        }
    }
}

pub use self::view::Performance as PerformanceRef;

/// The borrowed struct, in a module of its own so that it can have the
/// owned struct's name: serde's error messages name the struct, and the two
/// must fail with the same text.
mod view {
    use super::*;

    /// A [`Performance`](crate::Performance) sample borrowing its strings from the JSON text it was
    /// parsed from (owning only those that had escapes). Same fields, parsing
    /// rules, validation and errors as [`Performance`](crate::Performance).
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Performance<'a> {
        /// `ObjectName`, at most 255 characters.
        #[serde(rename = "ObjectName", borrow)]
        pub object_name: Cow<'a, str>,
        /// `CounterName`, at most 255 characters.
        #[serde(rename = "CounterName", borrow)]
        pub counter_name: Cow<'a, str>,
        /// `PerfmonInstanceName`, at most 255 characters; may be empty.
        #[serde(rename = "PerfmonInstanceName", borrow)]
        pub perfmon_instance_name: Cow<'a, str>,
        /// `PerformanceDataId`.
        #[serde(rename = "PerformanceDataId", with = "crate::record::uuid_text")]
        pub performance_data_id: Uuid,
        /// `PerformanceSourceInternalID`.
        #[serde(rename = "PerformanceSourceInternalID")]
        pub performance_source_internal_id: i32,
        /// `SampleValue`: must be finite.
        #[serde(rename = "SampleValue")]
        pub sample_value: f64,
        /// `TimeSampled`.
        #[serde(rename = "TimeSampled", with = "crate::record::rfc3339")]
        pub time_sampled: DateTime<Utc>,
        /// `TimeAdded`.
        #[serde(rename = "TimeAdded", with = "crate::record::rfc3339")]
        pub time_added: DateTime<Utc>,
    }
}

impl PerformanceRef<'_> {
    /// Checks the sample against the schema's limits: the one implementation
    /// [`Performance::validate`] also runs.
    ///
    /// # Errors
    ///
    /// As [`Performance::validate`].
    pub fn validate(&self, limits: &RecordLimits) -> Result<(), RecordError> {
        let c = Check {
            data_type: DataType::Performance,
            limits,
        };
        c.text("ObjectName", &self.object_name, 255)?;
        c.text("CounterName", &self.counter_name, 255)?;
        c.text("PerfmonInstanceName", &self.perfmon_instance_name, 255)?;
        if !self.sample_value.is_finite() {
            return Err(RecordError::NonFinite {
                data_type: DataType::Performance,
                field: "SampleValue",
            });
        }
        c.time("TimeSampled", &self.time_sampled)?;
        c.time("TimeAdded", &self.time_added)
    }

    /// The owned sample, copying the strings.
    #[must_use]
    pub fn to_owned(&self) -> Performance {
        Performance {
            object_name: String::from(&*self.object_name),
            counter_name: String::from(&*self.counter_name),
            perfmon_instance_name: String::from(&*self.perfmon_instance_name),
            performance_data_id: self.performance_data_id,
            performance_source_internal_id: self.performance_source_internal_id,
            sample_value: self.sample_value,
            time_sampled: self.time_sampled,
            time_added: self.time_added,
        }
    }
}

/// The fast path of [`PerformanceRef`] parsing: the canonical form writers
/// produce (the fields in schema order, no whitespace, no escapes, numbers
/// without exponents), read without going through serde.
///
/// It accepts a strict subset of what the serde parser accepts, and gives
/// the same value for it: strings are the same borrowed slices (the line is
/// checked as UTF-8 once, and a string with a `\` or a control character is
/// left to serde), ids and times go through the same functions as serde's
/// visitors, the integer is in `i32` range without a leading zero or a
/// minus zero, and the sample value is read by `str::parse::<f64>`, which
/// rounds correctly, as serde_json does with `float_roundtrip`; zero, which
/// serde_json may read with another sign from an integer text, is left to
/// serde. Anything else, the odd valid record included, returns `None`
/// and serde parses the line, with its errors. `fuzz::record_differential`
/// checks the agreement against the owned (serde only) parser.
pub(crate) fn parse_canonical(json: &[u8]) -> Option<PerformanceRef<'_>> {
    let text = std::str::from_utf8(json).ok()?;
    let mut c = Canonical { text, at: 0 };
    c.literal("{\"ObjectName\":\"")?;
    let object_name = c.string()?;
    c.literal(",\"CounterName\":\"")?;
    let counter_name = c.string()?;
    c.literal(",\"PerfmonInstanceName\":\"")?;
    let perfmon_instance_name = c.string()?;
    c.literal(",\"PerformanceDataId\":\"")?;
    let performance_data_id = super::uuid_text::parse(c.string()?)?;
    c.literal(",\"PerformanceSourceInternalID\":")?;
    let id = c.number()?;
    if id.contains('.') || id == "-0" {
        return None;
    }
    let performance_source_internal_id = id.parse::<i32>().ok()?;
    c.literal(",\"SampleValue\":")?;
    let sample_value = c.number()?.parse::<f64>().ok()?;
    if !sample_value.is_finite() || sample_value == 0.0 {
        return None;
    }
    c.literal(",\"TimeSampled\":\"")?;
    let time_sampled = super::rfc3339::parse(c.string()?).ok()?;
    c.literal(",\"TimeAdded\":\"")?;
    let time_added = super::rfc3339::parse(c.string()?).ok()?;
    c.literal("}")?;
    if c.at != text.len() {
        return None;
    }
    Some(PerformanceRef {
        object_name: Cow::Borrowed(object_name),
        counter_name: Cow::Borrowed(counter_name),
        perfmon_instance_name: Cow::Borrowed(perfmon_instance_name),
        performance_data_id,
        performance_source_internal_id,
        sample_value,
        time_sampled,
        time_added,
    })
}

/// A cursor over a line in the canonical form.
struct Canonical<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Canonical<'a> {
    /// Exactly `expected` next.
    fn literal(&mut self, expected: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(expected.as_bytes()).then(|| {
            self.at += expected.len();
        })
    }

    /// A string's contents up to its closing quote (consumed), with no
    /// escape and no control character.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let len = bytes
            .get(start..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Cut at ASCII bytes of valid UTF-8: char boundaries.
        self.text.get(start..start + len)
    }

    /// A number's text in the form `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, at most
    /// 40 bytes.
    fn number(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |i: usize| {
            bytes
                .get(i..)
                .map_or(0, |r| r.iter().take_while(|b| b.is_ascii_digit()).count())
        };
        let int = digits(i);
        if int == 0 || (int > 1 && bytes[i] == b'0') {
            return None;
        }
        i += int;
        if bytes.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return None;
            }
            i += 1 + frac;
        }
        if i - start > 40 {
            return None;
        }
        self.at = i;
        self.text.get(start..i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn sample(value: f64, id: i32, name: &str) -> Performance {
        let t = DateTime::from_timestamp(1_800_000_000, 123_000_000).expect("in range");
        Performance {
            object_name: name.to_owned(),
            counter_name: "% Processor Time".to_owned(),
            perfmon_instance_name: String::new(),
            performance_data_id: Uuid::from_u128(0x0193_5a1e_7c00_7000_8000_0000_0000_0001),
            performance_source_internal_id: id,
            sample_value: value,
            time_sampled: t,
            time_added: t,
        }
    }

    fn serde_ref(json: &[u8]) -> Result<PerformanceRef<'_>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    #[test]
    fn the_canonical_form_reads_as_serde_reads_it() {
        // Sample values over the whole range of bit patterns (splitmix64).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut fast = 0;
        for i in 0..20_000 {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let value = match i % 3 {
                0 => f64::from_bits(z),
                1 => (z % 1_000_000) as f64 / 977.0,
                _ => (z % 100_000) as f64,
            };
            if !value.is_finite() {
                continue;
            }
            let id = (z >> 32) as i32;
            let record = sample(value, id, if i % 2 == 0 { "Processor" } else { "Mémoire" });
            let mut json = Vec::new();
            Record::from(record.clone()).write_json(&mut json);
            let want = serde_ref(&json).expect("written records parse");
            match parse_canonical(&json) {
                Some(got) => {
                    fast += 1;
                    assert_eq!(got, want);
                    assert_eq!(got.sample_value.to_bits(), want.sample_value.to_bits());
                    assert!(matches!(got.object_name, Cow::Borrowed(_)));
                }
                // Only exponents and zero are left to serde.
                None => {
                    let text = std::str::from_utf8(&json).expect("UTF-8");
                    assert!(text.contains('e') || value == 0.0, "{text}");
                }
            }
            assert_eq!(want.to_owned(), record);
        }
        // Two thirds of the values are plain decimals; random bit patterns are
        // mostly written with an exponent.
        assert!(fast > 13_000, "the fast path took {fast}");
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        let mut json = Vec::new();
        Record::from(sample(1.5, 7, "Processor")).write_json(&mut json);
        let text = String::from_utf8(json).expect("UTF-8");
        assert!(parse_canonical(text.as_bytes()).is_some());
        for (from, to) in [
            ("\"Processor\"", "\"Proc\\u0065ssor\""),
            ("\"Processor\"", "\"Proc\u{1}essor\""),
            ("{", "{ "),
            (":1.5", ":1.5e0"),
            (":1.5", ":01.5"),
            (":1.5", ":1."),
            (":1.5", ":-0"),
            (":1.5", ":0"),
            (":1.5", ":1e400"),
            (":7", ":-0"),
            (":7", ":07"),
            (":7", ":7.0"),
            (":7", ":2147483648"),
            ("}", "} "),
            ("}", ",\"X\":1}"),
            ("\"TimeAdded\"", "\"TimeAdded2\""),
            ("2027", "2027x"),
        ] {
            let changed = text.replacen(from, to, 1);
            assert_ne!(changed, text);
            assert!(parse_canonical(changed.as_bytes()).is_none(), "{changed}");
        }
        let mut bad = text.into_bytes();
        bad[16] = 0xff;
        assert!(parse_canonical(&bad).is_none());
    }
}
