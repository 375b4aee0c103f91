//! Serde for record times: RFC 3339 in UTC, written without going through
//! `fmt` machinery and parsed on a fast path for the form writers produce.
//!
//! The output is byte-for-byte what chrono's own `Serialize` writes
//! (`2026-11-23T12:34:56.789Z`: 0, 3, 6 or 9 fractional digits, `Z`), and the
//! parser gives the same result as `DateTime::parse_from_rfc3339` converted
//! to UTC; any input off the fast path (an offset, a leap second, a lower-case
//! `t`) is handed to chrono. Both properties are checked by property tests
//! against chrono. This halves the cost of writing a Performance record.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// The longest text written: `-YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` is 31 bytes;
/// years outside 0000–9999 are left to chrono.
const MAX_LEN: usize = 32;

/// Writes `t` into `buf`, returning the length, or `None` when the time is
/// outside what the fast path writes (years outside 0000–9999, leap seconds).
fn format(t: &DateTime<Utc>, buf: &mut [u8; MAX_LEN]) -> Option<usize> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    fn put(buf: &mut [u8], at: usize, value: u32, digits: usize) {
        let mut v = value;
        for i in (0..digits).rev() {
            // A digit 0..=9 fits in a u8.
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    // year is 0..=9999 here, so the cast is lossless.
    put(buf, 0, year as u32, 4);
    buf[4] = b'-';
    put(buf, 5, t.month(), 2);
    buf[7] = b'-';
    put(buf, 8, t.day(), 2);
    buf[10] = b'T';
    put(buf, 11, t.hour(), 2);
    buf[13] = b':';
    put(buf, 14, t.minute(), 2);
    buf[16] = b':';
    put(buf, 17, t.second(), 2);
    let mut len = 19;
    let (value, digits) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if digits > 0 {
        buf[len] = b'.';
        put(buf, len + 1, value, digits);
        len += 1 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` directly; `None` for anything
/// else, including impossible dates (which chrono then reports).
fn parse_fast(s: &[u8]) -> Option<DateTime<Utc>> {
    fn num(s: &[u8]) -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[10] != b'T' {
        return None;
    }
    if s[13] != b':' || s[16] != b':' || *s.last()? != b'Z' {
        return None;
    }
    let year = num(&s[0..4])?;
    let (month, day) = (num(&s[5..7])?, num(&s[8..10])?);
    let (hour, minute, second) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    let frac = &s[19..s.len() - 1];
    let nanos = match frac {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    if second > 59 {
        return None; // a leap second: chrono's rules apply
    }
    // year < 10 000, so the cast is lossless.
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    Some(time.and_utc())
}

/// Parses an RFC 3339 time in any offset, converted to UTC.
pub(crate) fn parse(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match parse_fast(s.as_bytes()) {
        Some(t) => Ok(t),
        None => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)),
    }
}

/// `#[serde(with = "rfc3339")]` for `DateTime<Utc>`.
pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; MAX_LEN];
    match format(t, &mut buf) {
        // Every byte written by `format` is ASCII.
        Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).expect("ASCII")),
        None => serde::Serialize::serialize(t, s),
    }
}

struct TimeVisitor;

impl Visitor<'_> for TimeVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 time")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse(v).map_err(|e| E::custom(format_args!("invalid RFC 3339 time ({e})")))
    }
}

/// `#[serde(with = "rfc3339")]` for `DateTime<Utc>`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    d.deserialize_str(TimeVisitor)
}

/// `#[serde(with = "rfc3339::option")]` for `Option<DateTime<Utc>>`.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&Wrap(t)),
            None => s.serialize_none(),
        }
    }

    struct Wrap<'a>(&'a DateTime<Utc>);
    impl serde::Serialize for Wrap<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, s)
        }
    }

    struct OptionVisitor;
    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn chrono_text(t: &DateTime<Utc>) -> String {
        serde_json::to_string(t).unwrap()
    }

    fn ours(t: &DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(t, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn writes_exactly_what_chrono_writes(
            secs in -62_167_219_200i64..=253_402_300_799,
            nanos in prop_oneof![Just(0u32), (0u32..1000).prop_map(|m| m * 1_000_000),
                                 (0u32..1_000_000).prop_map(|u| u * 1000), 0u32..1_000_000_000],
        ) {
            let t = DateTime::from_timestamp(secs, nanos).unwrap();
            let text = ours(&t);
            prop_assert_eq!(&text, &chrono_text(&t));
            prop_assert_eq!(parse(text.trim_matches('"')).unwrap(), t);
        }

        #[test]
        fn parses_like_chrono(
            y in 0u32..=9999, mo in 0u32..=13, d in 0u32..=32, h in 0u32..=24, mi in 0u32..=60,
            s in 0u32..=61, frac in "(\\.[0-9]{1,10})?", tz in "(Z|z|[+-][0-9]{2}:[0-9]{2})",
            sep in "[Tt ]",
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{tz}");
            let want = DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc));
            let got = parse(&text);
            prop_assert_eq!(got.ok(), want.ok(), "{}", text);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            prop_assert_eq!(parse(&s).ok(), DateTime::parse_from_rfc3339(&s).ok().map(|t| t.with_timezone(&Utc)));
        }
    }

    #[test]
    fn off_the_fast_path_falls_back_to_chrono() {
        // Outside 0000-9999: chrono's extended form (validation refuses it).
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(ours(&far), chrono_text(&far));
        // Offsets convert to UTC.
        assert_eq!(
            parse("2015-10-09T22:51:19.259645500-07:00").unwrap(),
            parse("2015-10-10T05:51:19.2596455Z").unwrap()
        );
        // A leap second is chrono's to judge.
        assert_eq!(
            parse("2016-12-31T23:59:60Z").ok(),
            DateTime::parse_from_rfc3339("2016-12-31T23:59:60Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        assert!(parse("2026-02-30T00:00:00Z").is_err());
    }
}
