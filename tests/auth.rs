//! Request signatures: the published agent-service vector, both schemes
//! round trip, and every refusal (another workspace's key, replay outside
//! the skew window, a body changed after signing, malformed headers).

#![allow(clippy::disallowed_methods)] // the test reads the vector files

use std::path::PathBuf;

use base64::Engine;
use chrono::{DateTime, Duration, TimeZone, Utc};
use opsdata::{
    AuthError, AuthPolicy, EnrollmentKey, KeySlot, PeerReply, TenantId, WorkspaceKeys,
    content_hash, sign_agent_service, sign_data_collector, verify_agent_service,
    verify_data_collector,
};
use proptest::prelude::*;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/auth")
            .join(name),
    )
    .unwrap()
}

fn ws_a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}
fn ws_b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}
fn key(n: u8) -> EnrollmentKey {
    EnrollmentKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([n; 64])).unwrap()
}
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2016, 4, 4, 8, 0, 0).unwrap()
}

const VECTOR_DATE: &str = "2015-10-09T22:51:19.259645500-07:00";

#[test]
fn the_published_agent_service_vector_reproduces() {
    let body = data("body_onboard_test1.xml");
    assert_eq!(body.len(), 2058);
    let key_text = String::from_utf8(data("shared_key_test1")).unwrap();
    let key = EnrollmentKey::from_base64(&key_text).unwrap();
    let signed = sign_agent_service(ws_a(), &key, VECTOR_DATE, &body);
    assert_eq!(
        signed.content_hash,
        "5PWvuBVXOgrizTvwU/n9IVA7wgKDj4ihFVWUhb9j9s0="
    );
    assert_eq!(
        signed.authorization,
        format!("{}; K6h/Cxyr4lYZPX4WiKwgbwUnumOSAFa71AQIz6VnDpw=", ws_a())
    );
    // And it verifies, at its own time, against the body received.
    let at = DateTime::parse_from_rfc3339(VECTOR_DATE)
        .unwrap()
        .with_timezone(&Utc);
    let keys = WorkspaceKeys::new(ws_a(), EnrollmentKey::from_base64(&key_text).unwrap());
    let ok = verify_agent_service(
        &keys,
        &signed.authorization,
        VECTOR_DATE,
        &signed.content_hash,
        &body,
        &AuthPolicy::default(),
        at,
    )
    .unwrap();
    assert_eq!(
        (ok.workspace, ok.key, ok.date),
        (ws_a(), KeySlot::Primary, at)
    );
}

#[test]
fn data_collector_signs_the_byte_length_not_the_character_count() {
    use ring::hmac;
    let body = "[{\"name\":\"żółw ✓\"}]".as_bytes();
    assert_ne!(body.len(), "[{\"name\":\"żółw ✓\"}]".chars().count());
    let signed = sign_data_collector(ws_a(), &key(1), now(), body);
    let expected = {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &[1u8; 64]);
        let msg = format!(
            "POST\n{}\napplication/json\nx-ms-date:Mon, 04 Apr 2016 08:00:00 GMT\n/api/logs",
            body.len()
        );
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&k, msg.as_bytes()))
    };
    assert_eq!(
        signed.authorization,
        format!("SharedKey {}:{expected}", ws_a())
    );
    assert_eq!(signed.x_ms_date, "Mon, 04 Apr 2016 08:00:00 GMT");
}

#[test]
fn the_secondary_key_verifies_too_so_keys_can_be_regenerated() {
    let keys = WorkspaceKeys::new(ws_a(), key(1)).with_secondary(key(2));
    let body = b"[]";
    let p = AuthPolicy::default();
    let by_primary = sign_data_collector(ws_a(), &key(1), now(), body);
    let by_secondary = sign_data_collector(ws_a(), &key(2), now(), body);
    let v = |s: &opsdata::DataCollectorSignature| {
        verify_data_collector(&keys, &s.authorization, &s.x_ms_date, body, &p, now())
    };
    assert_eq!(v(&by_primary).unwrap().key, KeySlot::Primary);
    assert_eq!(v(&by_secondary).unwrap().key, KeySlot::Secondary);
    let by_other = sign_data_collector(ws_a(), &key(3), now(), body);
    assert_eq!(v(&by_other), Err(AuthError::BadSignature));
}

#[test]
fn a_signature_made_with_a_key_does_not_verify_for_b() {
    let body = b"[{\"a\":1}]";
    let p = AuthPolicy::default();
    let keys_b = WorkspaceKeys::new(ws_b(), key(2));
    // A signs for A: B's verifier refuses it as another workspace's.
    let s = sign_data_collector(ws_a(), &key(1), now(), body);
    assert!(matches!(
        verify_data_collector(&keys_b, &s.authorization, &s.x_ms_date, body, &p, now()),
        Err(AuthError::WorkspaceMismatch { .. })
    ));
    // A's key, B's workspace id in the header: the signature fails.
    let s = sign_data_collector(ws_b(), &key(1), now(), body);
    assert_eq!(
        verify_data_collector(&keys_b, &s.authorization, &s.x_ms_date, body, &p, now()),
        Err(AuthError::BadSignature)
    );
    let s = sign_agent_service(ws_b(), &key(1), "2016-04-04T08:00:00Z", body);
    assert_eq!(
        verify_agent_service(
            &keys_b,
            &s.authorization,
            &s.x_ms_date,
            &s.content_hash,
            body,
            &p,
            now()
        ),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn replay_outside_the_skew_window_is_refused() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let body = b"[]";
    let s = sign_data_collector(ws_a(), &key(1), now(), body);
    for (offset, ok) in [
        (0, true),
        (15, true),
        (-15, true),
        (16, false),
        (-16, false),
        (600, false),
    ] {
        let at = now() + Duration::minutes(offset);
        let r = verify_data_collector(&keys, &s.authorization, &s.x_ms_date, body, &p, at);
        assert_eq!(r.is_ok(), ok, "verified at {offset} minutes: {r:?}");
        if !ok {
            assert!(matches!(r, Err(AuthError::ClockSkew { .. })));
        }
    }
    let narrow = AuthPolicy::default()
        .with_max_skew(Duration::minutes(1))
        .unwrap();
    assert!(
        verify_data_collector(
            &keys,
            &s.authorization,
            &s.x_ms_date,
            body,
            &narrow,
            now() + Duration::minutes(2)
        )
        .is_err()
    );
    assert!(
        AuthPolicy::default()
            .with_max_skew(Duration::zero())
            .is_err()
    );
}

#[test]
fn a_body_changed_after_signing_fails() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let body = b"[{\"a\":1}]".to_vec();
    let mut changed = body.clone();
    changed[6] = b'2';
    // Data Collector: same length, different bytes: the signature covers
    // only the length, so the HMAC still matches; the scheme cannot tell.
    // A longer body is caught.
    let s = sign_data_collector(ws_a(), &key(1), now(), &body);
    let longer = [&body[..], b" "].concat();
    assert_eq!(
        verify_data_collector(&keys, &s.authorization, &s.x_ms_date, &longer, &p, now()),
        Err(AuthError::BadSignature)
    );
    // Agent service: the hash is recomputed from the body received.
    let date = "2016-04-04T08:00:00Z";
    let s = sign_agent_service(ws_a(), &key(1), date, &body);
    assert_eq!(
        verify_agent_service(
            &keys,
            &s.authorization,
            date,
            &s.content_hash,
            &changed,
            &p,
            now()
        ),
        Err(AuthError::ContentHashMismatch)
    );
    // A sender who also rewrites the hash header still fails the signature.
    assert_eq!(
        verify_agent_service(
            &keys,
            &s.authorization,
            date,
            &content_hash(&changed),
            &changed,
            &p,
            now()
        ),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn malformed_headers_are_typed_errors_and_peers_learn_little() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let good = sign_data_collector(ws_a(), &key(1), now(), b"[]");
    let sig = good.authorization.rsplit(':').next().unwrap().to_owned();
    let cases = [
        (format!("Bearer {}:{sig}", ws_a()), good.x_ms_date.clone()),
        (format!("SharedKey {}{sig}", ws_a()), good.x_ms_date.clone()),
        (
            format!("SharedKey not-a-uuid:{sig}"),
            good.x_ms_date.clone(),
        ),
        (
            format!("SharedKey {}:{}", ws_a(), &sig[..40]),
            good.x_ms_date.clone(),
        ),
        (
            format!("SharedKey {}:{}", ws_a(), "!".repeat(44)),
            good.x_ms_date.clone(),
        ),
        (good.authorization.clone(), "yesterday".into()),
        (
            good.authorization.clone(),
            "Mon, 04 Apr 2016 08:00:00 GMT\n".into(),
        ),
        ("x".repeat(5000), good.x_ms_date.clone()),
        (
            format!("SharedKey {}:{sig}é", ws_a()),
            good.x_ms_date.clone(),
        ),
    ];
    for (auth, date) in cases {
        let err = verify_data_collector(&keys, &auth, &date, b"[]", &p, now()).unwrap_err();
        assert!(
            matches!(err, AuthError::MalformedHeader { .. }),
            "{auth:?} {date:?}: {err:?}"
        );
        assert_eq!(err.peer_reply(), PeerReply::BadRequest);
        assert_eq!(err.peer_reply().message(), "bad request");
    }
    assert_eq!(AuthError::BadSignature.peer_reply().status(), 401);
    let skew = verify_data_collector(
        &keys,
        &good.authorization,
        &good.x_ms_date,
        b"[]",
        &p,
        now() + Duration::hours(2),
    )
    .unwrap_err();
    assert_eq!(skew.peer_reply(), PeerReply::Unauthorized);
    for text in ["", "!!!!", "c2hvcnQ="] {
        assert!(matches!(
            EnrollmentKey::from_base64(text),
            Err(AuthError::InvalidKey { .. })
        ));
    }
}

#[test]
fn keys_are_redacted_in_debug() {
    let k = key(0x41);
    let keys = WorkspaceKeys::new(ws_a(), key(0x41)).with_secondary(key(0x42));
    for text in [format!("{k:?}"), format!("{keys:?}"), format!("{keys:#?}")] {
        assert!(!text.contains("QUFB"), "{text}");
        assert!(!text.contains("65, 65"), "{text}");
        assert!(text.contains("EnrollmentKey(..)"), "{text}");
    }
}

proptest! {
    /// Any body signed at any time verifies within the window, under the
    /// right workspace; flipping any one byte of it (agent-service scheme)
    /// never verifies.
    #[test]
    fn signatures_round_trip_and_any_change_fails(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        secs in 0i64..4_000_000_000,
        drift in -900i64..=900,
        flip in any::<prop::sample::Index>(),
        n in 1u8..=255,
    ) {
        let at = DateTime::from_timestamp(secs, 0).unwrap();
        let keys = WorkspaceKeys::new(ws_a(), key(n));
        let p = AuthPolicy::default();
        let verifier_now = at + Duration::seconds(drift);
        let s = sign_data_collector(ws_a(), &key(n), at, &body);
        prop_assert!(verify_data_collector(&keys, &s.authorization, &s.x_ms_date, &body, &p, verifier_now).is_ok());
        let date = at.to_rfc3339();
        let s = sign_agent_service(ws_a(), &key(n), &date, &body);
        prop_assert!(verify_agent_service(&keys, &s.authorization, &date, &s.content_hash, &body, &p, verifier_now).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(body.len());
            changed[i] ^= 0x01;
            prop_assert!(verify_agent_service(&keys, &s.authorization, &date, &s.content_hash, &changed, &p, verifier_now).is_err());
        }
    }
}

#[test]
fn agent_service_malformed_headers_are_typed_errors() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let body = b"<register/>";
    let date = "2016-04-04T08:00:00Z";
    let good = sign_agent_service(ws_a(), &key(1), date, body);
    let sig = good.authorization.rsplit("; ").next().unwrap().to_owned();
    let hash = good.content_hash.clone();
    let cases: Vec<(&str, String, String, String)> = vec![
        (
            "no separator",
            format!("{}{sig}", ws_a()),
            date.into(),
            hash.clone(),
        ),
        (
            "bad id",
            format!("not-a-uuid; {sig}"),
            date.into(),
            hash.clone(),
        ),
        (
            "short signature",
            format!("{}; {}", ws_a(), &sig[..40]),
            date.into(),
            hash.clone(),
        ),
        (
            "date",
            good.authorization.clone(),
            "yesterday".into(),
            hash.clone(),
        ),
        (
            "date with newline",
            good.authorization.clone(),
            format!("{date}\n"),
            hash.clone(),
        ),
        // The content hash header must be Base64 of 32 bytes.
        (
            "hash garbage",
            good.authorization.clone(),
            date.into(),
            "zz".into(),
        ),
        (
            "hash not base64",
            good.authorization.clone(),
            date.into(),
            "!".repeat(44),
        ),
        (
            "hash of 33 bytes",
            good.authorization.clone(),
            date.into(),
            format!("{}A", &hash[..43]),
        ),
    ];
    for (what, auth, date, hash) in cases {
        let err = verify_agent_service(&keys, &auth, &date, &hash, body, &p, now()).unwrap_err();
        assert!(
            matches!(err, AuthError::MalformedHeader { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.peer_reply(), PeerReply::BadRequest, "{what}");
    }
    // A well-formed hash of another body is a mismatch, not a malformed header.
    assert_eq!(
        verify_agent_service(
            &keys,
            &good.authorization,
            date,
            &content_hash(b"other"),
            body,
            &p,
            now()
        ),
        Err(AuthError::ContentHashMismatch)
    );
}

#[test]
fn agent_service_replay_outside_the_skew_window_is_refused() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let body = b"<register/>";
    // Signed at now() in another offset: the window is on the instant.
    let date = "2016-04-04T01:00:00-07:00";
    let s = sign_agent_service(ws_a(), &key(1), date, body);
    for (offset, ok) in [
        (0, true),
        (15, true),
        (-15, true),
        (16, false),
        (-16, false),
    ] {
        let at = now() + Duration::minutes(offset);
        let r = verify_agent_service(&keys, &s.authorization, date, &s.content_hash, body, &p, at);
        assert_eq!(r.is_ok(), ok, "verified at {offset} minutes: {r:?}");
        if !ok {
            assert!(matches!(r, Err(AuthError::ClockSkew { .. })));
            assert_eq!(r.unwrap_err().peer_reply(), PeerReply::Unauthorized);
        }
    }
}

#[test]
fn data_collector_dates_are_strict_rfc_1123_in_gmt() {
    let keys = WorkspaceKeys::new(ws_a(), key(1));
    let p = AuthPolicy::default();
    let body = b"[]";
    // Each is the same instant as now() in a looser form: the signature is
    // made over the text as sent, so only the date rule can refuse it.
    for date in [
        "Mon, 04 Apr 2016 10:00:00 +0200",
        "Mon, 04 Apr 2016 03:00:00 EST",
        "04 Apr 2016 08:00:00 GMT",
        "Tue, 04 Apr 2016 08:00:00 GMT",
        "Mon, 04 Apr 2016 08:00:00 UT",
    ] {
        let authorization = {
            // Re-sign over the loose date text, as a client sending it would.
            let signed = format!(
                "POST\n{}\napplication/json\nx-ms-date:{date}\n/api/logs",
                body.len()
            );
            let tag = ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[1u8; 64]),
                signed.as_bytes(),
            );
            let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
            format!("SharedKey {}:{sig}", ws_a())
        };
        let err = verify_data_collector(&keys, &authorization, date, body, &p, now()).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::MalformedHeader {
                    header: "x-ms-date",
                    ..
                }
            ),
            "{date}: {err:?}"
        );
    }
}

#[test]
fn the_claimed_workspace_is_read_from_either_scheme() {
    let dc = sign_data_collector(ws_a(), &key(1), now(), b"[]");
    assert_eq!(opsdata::claimed_workspace(&dc.authorization), Ok(ws_a()));
    let ag = sign_agent_service(ws_b(), &key(1), "2016-04-04T08:00:00Z", b"x");
    assert_eq!(opsdata::claimed_workspace(&ag.authorization), Ok(ws_b()));
    for bad in [
        "",
        "SharedKey 0f8fad5b-d9cb-469f-a165-70867728950e",
        "SharedKey 00000000-0000-0000-0000-000000000000:sig",
        "0f8fad5bd9cb469fa16570867728950e; sig",
        "Bearer token",
    ] {
        assert!(
            matches!(
                opsdata::claimed_workspace(bad),
                Err(AuthError::MalformedHeader { .. })
            ),
            "{bad}"
        );
    }
}
