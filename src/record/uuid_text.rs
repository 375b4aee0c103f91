//! Serde for record UUIDs: the hyphenated form only.
//!
//! `uuid`'s own `Deserialize` also accepts the simple (32 hex digits),
//! braced and URN forms. `docs/RECORDS.md` specifies the hyphenated form, so
//! a reader in another language need not know the others; this module keeps
//! the Rust reader to the same rule. Either case of hex digits is accepted;
//! writers use lower case (`uuid`'s `Serialize`).

use serde::de::{self, Visitor};
use serde::{Deserializer, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

pub(crate) fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    id.serialize(s)
}

/// Parses the 36-character hyphenated form, nothing else.
pub(crate) fn parse(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    let hyphens_in_place = bytes.len() == 36 && [8, 13, 18, 23].iter().all(|&i| bytes[i] == b'-');
    if hyphens_in_place {
        Uuid::try_parse(text).ok()
    } else {
        None
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    struct HyphenatedVisitor;
    impl Visitor<'_> for HyphenatedVisitor {
        type Value = Uuid;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a UUID in the hyphenated form")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Uuid, E> {
            parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_str(HyphenatedVisitor)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn only_the_hyphenated_form_parses() {
        let want: uuid::Uuid = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        assert_eq!(parse("0f8fad5b-d9cb-469f-a165-70867728950e"), Some(want));
        assert_eq!(parse("0F8FAD5B-D9CB-469F-A165-70867728950E"), Some(want));
        for other in [
            "0f8fad5bd9cb469fa16570867728950e",
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5b-d9cb-469f-a165+70867728950e",
            "0f8fad5bd-9cb-469f-a165-70867728950e",
            "",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
