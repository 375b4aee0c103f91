//! The HTTPS ingest service end to end on 127.0.0.1 (port 0) with
//! certificates made at test time (rcgen), a multi-thread tokio runtime and
//! a hyper client over tokio-rustls: what the raw-TLS tests proved, over
//! HTTPS (`docs/WIRE.md`).
//!
//! Timeouts in the slow-client tests are short (1 s) and the waits for the
//! service to react generous (30 s), only so a bug fails the test instead
//! of hanging it: no assertion depends on timing.

// Tests may read the wall clock and draw random ids.
#![allow(clippy::disallowed_methods)]

mod service_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::Duration;
use hyper::StatusCode;
use opsdata::{KeyRing, KeyStore, ObjectKey, Outcome, TenantId};
use opsdata_io::{AsyncBlobStore, IngestService, ServiceLimits};
use service_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GUARD: StdDuration = StdDuration::from_secs(30);

fn stored(svc: &opsdata_io::IngestService<TestStore>, t: TenantId) -> usize {
    svc.store().inner.count(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_stored_sealed_over_http1_and_http2_and_counted() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let svc = build(TestStore::default(), &clock, limits(), keys.clone());
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut c = Client::connect(run.addr, pki.client(Some(&agent), alpn))
            .await
            .unwrap();
        let frames: Vec<_> = (0..3).map(|_| frame(a, 5)).collect();
        let r = c.post(body(&frames)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.headers["content-type"],
            opsdata_io::ACKS_CONTENT_TYPE,
            "{alpn:?}"
        );
        let acks = acks(&r.body);
        assert_eq!(acks.len(), 3);
        for (ack, f) in acks.iter().zip(&frames) {
            assert_eq!(ack.batch_id, Some(f.batch_id()));
            assert_eq!(ack.outcome, Outcome::Delivered);
            // Stored, and sealed.
            let bytes = svc
                .store()
                .get(a, ObjectKey::for_batch(f.batch_id()))
                .await
                .unwrap()
                .expect("stored");
            let back = opsdata::Frame::decode(bytes, &Default::default()).unwrap();
            assert!(back.header().sealed);
        }
        // The same request again: duplicates, answered delivered.
        let r = c.post(body(&frames)).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(acks_all(&r.body, Outcome::Delivered));
        // Health and readiness on the same connection.
        let h = c.get("/healthz").await.unwrap();
        assert_eq!((h.status, &h.body[..]), (StatusCode::OK, &b"ok\n"[..]));
        assert_eq!(c.get("/readyz").await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(stored(&svc, a), 6);
    let mut c = Client::connect(run.addr, pki.client(Some(&agent), b"h2"))
        .await
        .unwrap();
    let text = String::from_utf8(c.get("/metrics").await.unwrap().body.to_vec()).unwrap();
    assert_eq!(metric(&text, "opsdata_frames_received_total"), 12.0);
    assert_eq!(metric(&text, "opsdata_frames_stored_total"), 6.0);
    assert_eq!(metric(&text, "opsdata_records_stored_total"), 30.0);
    assert_eq!(metric(&text, "opsdata_frames_duplicate_total"), 6.0);
    assert_eq!(metric(&text, "opsdata_seals_total"), 6.0);
    assert_eq!(metric(&text, "opsdata_store_seconds_count"), 6.0);
    assert_eq!(metric(&text, "opsdata_requests_total{status=\"200\"}"), 4.0);
    assert_eq!(
        metric(&text, "opsdata_connections_total{result=\"accepted\"}"),
        3.0
    );
    // Nothing secret or tenant-identifying in the exposition.
    assert!(!text.contains(WS_A));
    run.shutdown().await;
}

fn acks_all(body: &[u8], outcome: Outcome) -> bool {
    acks(body).iter().all(|a| a.outcome == outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_no_client_certificate_is_refused_in_the_handshake() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    // A certificate of another CA with the right subject.
    let rogue_ca = pki::ca("rogue CA", pki.now).unwrap();
    let rogue = pki::agent(&rogue_ca, WS_A, &uuid::Uuid::new_v4().to_string(), pki.now).unwrap();
    for client in [pki.client(Some(&rogue), b"h2"), pki.client(None, b"h2")] {
        // TLS 1.3: the client may finish its side before the server's
        // refusal arrives; then the first request fails.
        match Client::connect(run.addr, client).await {
            Err(_) => {}
            Ok(mut c) => assert!(c.post(body(&[frame(tenant(WS_A), 1)])).await.is_err()),
        }
    }
    assert_eq!(stored(&svc, tenant(WS_A)), 0);
    let text = svc.metrics_text();
    assert_eq!(
        metric(
            &text,
            "opsdata_connections_total{result=\"handshake_failed\"}"
        ),
        2.0
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_mid_connection_is_refused_on_the_next_request() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let agent = pki.agent(WS_A);
    let a = tenant(WS_A);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        clock.set(pki.now);
        let mut c = Client::connect(run.addr, pki.client(Some(&agent), alpn))
            .await
            .unwrap();
        let r = c.post(body(&[frame(a, 1)])).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        // The service's clock passes the certificate's notAfter (365 days).
        clock.set(pki.now + Duration::days(400));
        let f = frame(a, 1);
        let r = c.post(body(std::slice::from_ref(&f))).await.unwrap();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{alpn:?}");
        assert!(
            svc.store()
                .get(a, ObjectKey::for_batch(f.batch_id()))
                .await
                .unwrap()
                .is_none()
        );
        // The connection is closed: the next request on it fails.
        let next = tokio::time::timeout(GUARD, c.post(body(&[frame(a, 1)]))).await;
        assert!(next.unwrap().is_err(), "{alpn:?}: the connection was kept");
    }
    assert_eq!(stored(&svc, a), 2);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspaces_frame_is_rejected_and_counted() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let (a, b) = (tenant(WS_A), tenant(WS_B));
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let (good, foreign, after) = (frame(a, 2), frame(b, 2), frame(a, 2));
    let r = c
        .post(body(&[good.clone(), foreign.clone(), after.clone()]))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let acks = acks(&r.body);
    assert_eq!(
        acks.iter()
            .map(|a| (a.batch_id.unwrap(), a.outcome))
            .collect::<Vec<_>>(),
        vec![
            (good.batch_id(), Outcome::Delivered),
            (foreign.batch_id(), Outcome::Rejected),
            (after.batch_id(), Outcome::Delivered),
        ]
    );
    assert_eq!(stored(&svc, a), 2);
    assert_eq!(stored(&svc, b), 0);
    assert_eq!(svc.stats(a).tenant_mismatches, 1);
    let text = svc.metrics_text();
    assert_eq!(metric(&text, "opsdata_tenant_mismatches_total"), 1.0);
    assert_eq!(
        metric(
            &text,
            "opsdata_frames_rejected_total{reason=\"tenant_mismatch\"}"
        ),
        1.0
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_empty_bodies_are_400_with_the_acks_read() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"http/1.1"))
        .await
        .unwrap();
    let r = c.post(Bytes::from_static(&[0x42; 300])).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let got = acks(&r.body);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].batch_id, got[0].outcome), (None, Outcome::Rejected));

    // A good frame, then one cut short: the first stored, the second
    // rejected.
    let (first, second) = (frame(a, 2), frame(a, 2));
    let mut bytes = body(&[first.clone(), second.clone()]).to_vec();
    bytes.truncate(bytes.len() - 10);
    let r = c.post(Bytes::from(bytes)).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let got = acks(&r.body);
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].batch_id, got[0].outcome),
        (Some(first.batch_id()), Outcome::Delivered)
    );
    assert_eq!(got[1].outcome, Outcome::Rejected);
    assert_eq!(stored(&svc, a), 1);

    // A frame whose body CRC is wrong: rejected by its batch id.
    let bad = frame(a, 2);
    let mut bytes = bad.as_bytes().to_vec();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    let r = c.post(Bytes::from(bytes)).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(acks(&r.body)[0].batch_id, Some(bad.batch_id()));

    let r = c.post(Bytes::new()).await.unwrap();
    assert_eq!((r.status, r.body.len()), (StatusCode::BAD_REQUEST, 0));
    // The wrong content type.
    let req = hyper::Request::post(opsdata_io::FRAMES_PATH)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(body(&[frame(a, 1)])))
        .unwrap();
    assert_eq!(
        c.send(req).await.unwrap().status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(stored(&svc, a), 1);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_nothing_is_stored() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let limits = ServiceLimits::default().with_max_body_bytes(4096).unwrap();
    let svc = build(TestStore::default(), &clock, limits, SharedKeys::default());
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    let frames: Vec<_> = (0..40).map(|_| frame(a, 5)).collect();
    let big = body(&frames);
    assert!(big.len() > 4096);
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut c = Client::connect(run.addr, pki.client(Some(&agent), alpn))
            .await
            .unwrap();
        let r = c.post(big.clone()).await.unwrap();
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers["x-opsdata-max-body-bytes"], "4096");
    }
    assert_eq!(stored(&svc, a), 0);
    run.shutdown().await;
}

async fn closed_within(tls: &mut Tls) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(GUARD, tls.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the service did not close the slow connection"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let limits = ServiceLimits::default()
        .with_header_timeout(StdDuration::from_secs(1))
        .unwrap()
        .with_body_timeout(StdDuration::from_secs(1))
        .unwrap();
    let svc = build(TestStore::default(), &clock, limits, SharedKeys::default());
    let run = start(&svc, &pki).await;
    let agent = pki.agent(WS_A);
    // Headers that never end.
    let mut t = tls(run.addr, pki.client(Some(&agent), b"http/1.1"))
        .await
        .unwrap();
    t.write_all(b"POST /v1/frames HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    t.flush().await.unwrap();
    let got = closed_within(&mut t).await;
    assert!(
        !got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A body that never ends: 408, then closed.
    let mut t = tls(run.addr, pki.client(Some(&agent), b"http/1.1"))
        .await
        .unwrap();
    let f = frame(tenant(WS_A), 1);
    let head = format!(
        "POST /v1/frames HTTP/1.1\r\nhost: localhost\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
        opsdata_io::FRAMES_CONTENT_TYPE,
        f.as_bytes().len()
    );
    t.write_all(head.as_bytes()).await.unwrap();
    t.write_all(&f.as_bytes()[..10]).await.unwrap();
    t.flush().await.unwrap();
    let got = closed_within(&mut t).await;
    assert!(
        got.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(stored(&svc, tenant(WS_A)), 0);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_are_all_stored() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let config = pki.client(Some(&pki.agent(WS_A)), b"http/1.1");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let config = Arc::clone(&config);
        let addr = run.addr;
        tasks.spawn(async move {
            let mut c = Client::connect(addr, config).await.unwrap();
            let f = frame(a, 3);
            let r = c.post(body(std::slice::from_ref(&f))).await.unwrap();
            assert_eq!(r.status, StatusCode::OK);
            let got = acks(&r.body);
            assert_eq!(
                (got[0].batch_id, got[0].outcome),
                (Some(f.batch_id()), Outcome::Delivered)
            );
            c
        });
    }
    // Keep every connection open until all have answered.
    let mut open = Vec::new();
    while let Some(c) = tasks.join_next().await {
        open.push(c.unwrap());
    }
    assert_eq!(open.len(), 200);
    assert_eq!(stored(&svc, a), 200);
    assert_eq!(
        metric(&svc.metrics_text(), "opsdata_connections_open"),
        200.0
    );
    drop(open);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_503_and_the_retry_stores_every_frame() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let frames: Vec<_> = (0..4).map(|_| frame(a, 2)).collect();
    svc.store().failing.store(true, Ordering::SeqCst);
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(acks_all(&r.body, Outcome::Transient));
    assert_eq!(stored(&svc, a), 0);
    // The store is back: the same request is stored, not answered as
    // duplicates of data never stored.
    svc.store().failing.store(false, Ordering::SeqCst);
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(acks_all(&r.body, Outcome::Delivered));
    assert_eq!(stored(&svc, a), 4);
    assert_eq!(svc.stats(a).duplicates, 0);
    assert_eq!(
        metric(&svc.metrics_text(), "opsdata_store_failures_total"),
        4.0
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_panics_fails_its_frames_and_the_retry_stores_them() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let frames: Vec<_> = (0..2).map(|_| frame(a, 2)).collect();
    svc.store().panicking.store(true, Ordering::SeqCst);
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(acks_all(&r.body, Outcome::Transient));
    // Not left marked in flight, not remembered as stored.
    svc.store().panicking.store(false, Ordering::SeqCst);
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(acks_all(&r.body, Outcome::Delivered));
    assert_eq!(stored(&svc, a), 2);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let store = TestStore {
        gate: Some(Gate::new()),
        ..TestStore::default()
    };
    let svc = build(store, &clock, limits(), SharedKeys::default());
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let config = pki.client(Some(&pki.agent(WS_A)), b"h2");
    let mut c = Client::connect(run.addr, config.clone()).await.unwrap();
    let mut c1 = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"http/1.1"))
        .await
        .unwrap();
    let frames: Vec<_> = (0..6).map(|_| frame(a, 2)).collect();
    let (f1, f2) = (frames[..3].to_vec(), frames[3..].to_vec());
    let r1 = tokio::spawn(async move { c.post(body(&f1)).await });
    let r2 = tokio::spawn(async move { c1.post(body(&f2)).await });
    // Wait until all six puts are held by the store.
    let gate = svc.store().gate.as_ref().unwrap();
    tokio::time::timeout(GUARD, async {
        while gate.waiting.load(Ordering::SeqCst) < 6 {
            let arrived = gate.arrived.notified();
            if gate.waiting.load(Ordering::SeqCst) >= 6 {
                break;
            }
            arrived.await;
        }
    })
    .await
    .unwrap();
    let stop = run.stop;
    let done = run.done;
    let addr = run.addr;
    let _ = stop.unwrap().send(());
    // Shutting down: not ready, and no new connection is served.
    tokio::time::timeout(GUARD, async {
        while svc.is_ready() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    gate.release();
    for r in [r1, r2] {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert!(acks_all(&r.body, Outcome::Delivered));
    }
    tokio::time::timeout(GUARD, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stored(&svc, a), 6);
    // Every frame acknowledged is stored whole (the store checks both
    // CRCs on read) and sealed.
    for f in &frames {
        let bytes = svc
            .store()
            .get(a, ObjectKey::for_batch(f.batch_id()))
            .await
            .unwrap()
            .unwrap();
        let back = opsdata::Frame::decode(bytes, &Default::default()).unwrap();
        assert!(back.header().sealed);
    }
    // After shutdown the port is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounts_in_an_axum_app_next_to_another_route() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = build(
        TestStore::default(),
        &clock,
        limits(),
        SharedKeys::default(),
    );
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello\n" }))
        .merge(svc.router());
    let run = start_app(&svc, &pki, app).await;
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let h = c.get("/hello").await.unwrap();
    assert_eq!((h.status, &h.body[..]), (StatusCode::OK, &b"hello\n"[..]));
    let r = c.post(body(&[frame(tenant(WS_A), 1)])).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(stored(&svc, tenant(WS_A)), 1);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_usage_is_reserved_in_blocks_and_never_recorded_below_real_use() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let limits = ServiceLimits::default()
        .with_key_reservation_block(4)
        .unwrap();
    let svc = build(TestStore::default(), &clock, limits, keys.clone());
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    for n in 1..=10u64 {
        let r = c.post(body(&[frame(a, 1)])).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        let (usage, reserved) = svc.key_usage(a).unwrap();
        assert_eq!(usage, n);
        // What the key store records is never below the real usage.
        let sealed = keys.get(a).unwrap().unwrap();
        let ring = KeyRing::from_sealed(&sealed, a, &wrapping_key()).unwrap();
        let recorded = ring.primary().unwrap().usage;
        assert!(recorded >= usage, "recorded {recorded} < real {usage}");
        assert_eq!(recorded, reserved);
        assert!(recorded - usage < 4);
    }
    // Provisioning wrote the ring once; 10 seals in blocks of 4: 3 more.
    assert_eq!(keys.1.load(Ordering::SeqCst), 4);
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_tenant_gets_429_with_retry_after_and_nothing_stored() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let a = tenant(WS_A);
    let f = frame(a, 20);
    let content = u64::from(f.header().content_len);
    // A burst of one frame's worth, refilled at 1/10 of it per second.
    let rate = opsdata::RateLimit::new(content / 10 + 1, content + 1).unwrap();
    let svc = IngestService::builder(TestStore::default())
        .ingest_config(opsdata::IngestConfig::default().with_rate_limit(Some(rate)))
        .clock(clock.clock())
        .key_store(SharedKeys::default(), wrapping_key())
        .provisioning(opsdata::RotationPolicy::default())
        .build()
        .unwrap();
    let run = start(&svc, &pki).await;
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let r = c.post(body(std::slice::from_ref(&f))).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // The bucket is empty: the next request is throttled whole.
    let g = frame(a, 20);
    let r = c.post(body(std::slice::from_ref(&g))).await.unwrap();
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=11).contains(&wait), "{wait}");
    let got = acks(&r.body);
    assert_eq!(got[0].batch_id, Some(g.batch_id()));
    assert!(matches!(got[0].outcome, Outcome::Throttled { .. }));
    assert_eq!(stored(&svc, a), 1);
    // After the wait (on the service's clock) it is stored.
    clock.set(pki.now + Duration::seconds(11));
    let r = c.post(body(std::slice::from_ref(&g))).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(stored(&svc, a), 2);
    assert_eq!(
        metric(&svc.metrics_text(), "opsdata_frames_throttled_total"),
        1.0
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_new_connections_are_closed() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let limits = ServiceLimits::default().with_max_connections(2).unwrap();
    let svc = build(TestStore::default(), &clock, limits, SharedKeys::default());
    let run = start(&svc, &pki).await;
    let config = pki.client(Some(&pki.agent(WS_A)), b"h2");
    let mut c1 = Client::connect(run.addr, config.clone()).await.unwrap();
    let mut c2 = Client::connect(run.addr, config.clone()).await.unwrap();
    assert_eq!(c1.get("/healthz").await.unwrap().status, StatusCode::OK);
    assert_eq!(c2.get("/healthz").await.unwrap().status, StatusCode::OK);
    // A third: closed before its handshake.
    assert!(Client::connect(run.addr, config.clone()).await.is_err());
    assert_eq!(
        metric(
            &svc.metrics_text(),
            "opsdata_connections_total{result=\"over_limit\"}"
        ),
        1.0
    );
    // One closes: a new one is served.
    drop(c1);
    let ok = tokio::time::timeout(GUARD, async {
        loop {
            if let Ok(mut c) = Client::connect(run.addr, config.clone()).await
                && c.get("/healthz").await.is_ok()
            {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok());
    drop(c2);
    run.shutdown().await;
}

/// A host that serves the router with its own stack inserts only the
/// peer's certificates: the handler authenticates each request against the
/// enrollment CA on the service clock (here called in process, no TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_given_only_peer_certificates_authenticates_each_request() {
    use tower::ServiceExt;
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = IngestService::builder(TestStore::default())
        .clock(clock.clock())
        .key_store(SharedKeys::default(), wrapping_key())
        .provisioning(opsdata::RotationPolicy::default())
        .enrollment_ca(std::slice::from_ref(&pki.enrollment.der))
        .unwrap()
        .build()
        .unwrap();
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    let rogue_ca = pki::ca("rogue CA", pki.now).unwrap();
    let rogue = pki::agent(&rogue_ca, WS_A, &uuid::Uuid::new_v4().to_string(), pki.now).unwrap();
    let request = |certs: Option<&pki::Issued>| {
        let mut req = axum::http::Request::post(opsdata_io::FRAMES_PATH)
            .header("content-type", opsdata_io::FRAMES_CONTENT_TYPE)
            .body(axum::body::Body::from(body(&[frame(a, 1)])))
            .unwrap();
        if let Some(c) = certs {
            req.extensions_mut()
                .insert(opsdata_io::PeerCertificates(Arc::new(vec![c.der.clone()])));
        }
        req
    };
    let status = |r: axum::response::Response| r.status();
    let r = svc.router().oneshot(request(Some(&agent))).await.unwrap();
    assert_eq!(status(r), StatusCode::OK);
    for certs in [None, Some(&rogue)] {
        let r = svc.router().oneshot(request(certs)).await.unwrap();
        assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    }
    // Expired on the service's clock.
    clock.set(pki.now + Duration::days(400));
    let r = svc.router().oneshot(request(Some(&agent))).await.unwrap();
    assert_eq!(status(r), StatusCode::UNAUTHORIZED);
    assert_eq!(stored(&svc, a), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_shut_down() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let limits = ServiceLimits::default()
        .with_idle_timeout(StdDuration::from_secs(1))
        .unwrap();
    let svc = build(TestStore::default(), &clock, limits, SharedKeys::default());
    let run = start(&svc, &pki).await;
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    let r = c.post(body(&[frame(tenant(WS_A), 1)])).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // Quiet from now on: the service closes it (GOAWAY).
    let closed = tokio::time::timeout(GUARD, async {
        while !c.is_closed() {
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was kept");
    // And the service counts it closed (its task ends just after).
    let counted = tokio::time::timeout(GUARD, async {
        while metric(&svc.metrics_text(), "opsdata_connections_open") != 0.0 {
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
    })
    .await;
    assert!(counted.is_ok());
    run.shutdown().await;
}

/// Entropy that counts its fills and, once armed, panics after `allow`
/// more: a stand-in for a bug that panics in the middle of a request's
/// preparation, after earlier frames of the same request were sealed.
struct PanickyEntropy {
    inner: opsdata::SystemEntropy,
    fills: Arc<std::sync::atomic::AtomicU64>,
    panic_at: Arc<std::sync::atomic::AtomicU64>,
}

impl opsdata::Entropy for PanickyEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), opsdata::EntropyUnavailable> {
        let n = self.fills.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(n != self.panic_at.load(Ordering::SeqCst), "entropy bug");
        self.inner.fill(dest)
    }
}

/// Regression: a panic while preparing a request (after an earlier frame
/// of it was sealed and remembered) left that frame's batch marked in
/// flight, so every retry of it was answered transient (`in_flight`) and
/// it was never stored. The frames prepared before the panic are now
/// handed back to ingest, and the retry stores them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_panic_while_preparing_leaves_no_batch_in_flight() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let fills = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let panic_at = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let (f, p) = (Arc::clone(&fills), Arc::clone(&panic_at));
    let svc = IngestService::builder(TestStore::default())
        .limits(limits())
        .clock(clock.clock())
        .key_store(SharedKeys::default(), wrapping_key())
        .provisioning(opsdata::RotationPolicy::default())
        .entropy(move || {
            Box::new(PanickyEntropy {
                inner: opsdata::SystemEntropy::new(),
                fills: Arc::clone(&f),
                panic_at: Arc::clone(&p),
            })
        })
        .build()
        .unwrap();
    let run = start(&svc, &pki).await;
    let a = tenant(WS_A);
    let mut c = Client::connect(run.addr, pki.client(Some(&pki.agent(WS_A)), b"h2"))
        .await
        .unwrap();
    // Provision the ring, then measure the fills of one seal.
    let r = c.post(body(&[frame(a, 1)])).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let before = fills.load(Ordering::SeqCst);
    let r = c.post(body(&[frame(a, 1)])).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let per_seal = fills.load(Ordering::SeqCst) - before;
    assert!(per_seal > 0, "a seal draws randomness");
    // Two frames: the first is sealed, the second's first fill panics.
    let frames: Vec<_> = (0..2).map(|_| frame(a, 2)).collect();
    panic_at.store(
        fills.load(Ordering::SeqCst) + per_seal + 1,
        Ordering::SeqCst,
    );
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stored(&svc, a), 2);
    panic_at.store(u64::MAX, Ordering::SeqCst);
    let r = c.post(body(&frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(acks_all(&r.body, Outcome::Delivered));
    assert_eq!(stored(&svc, a), 4);
    assert_eq!(svc.stats(a).duplicates, 0);
    run.shutdown().await;
}

// ------------------------------------------- several nodes, one store

/// Posts `frames` to the service at `addr` as `agent`; the acks.
async fn post_frames(
    addr: std::net::SocketAddr,
    pki: &Pki,
    agent: &pki::Issued,
    frames: &[opsdata::Frame],
) -> Vec<opsdata_io::Ack> {
    let mut c = Client::connect(addr, pki.client(Some(agent), b"h2"))
        .await
        .unwrap();
    let r = c.post(body(frames)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    acks(&r.body)
}

/// Two nodes (two services) over one blob store and one key store: a batch
/// sent to both is stored once, both answer it delivered, the second as a
/// duplicate; then the same for a batch sent to both at once, and for a
/// batch an earlier try already stored (`docs/BLOBS.md`).
async fn two_nodes_store_each_batch_once<B: AsyncBlobStore>(one: B, two: B) {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let one = build_over(one, &clock, limits(), keys.clone());
    let two = build_over(two, &clock, limits(), keys.clone());
    let (r1, r2) = (start(&one, &pki).await, start(&two, &pki).await);
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);

    // One after the other: the second node does not remember the batch.
    let f = frame(a, 4);
    let name = ObjectKey::for_batch(f.batch_id());
    let acks1 = post_frames(r1.addr, &pki, &agent, std::slice::from_ref(&f)).await;
    assert_eq!(acks1.len(), 1);
    assert_eq!(acks1[0].outcome, Outcome::Delivered);
    let stored = one.store().get(a, name).await.unwrap().expect("stored");
    let acks2 = post_frames(r2.addr, &pki, &agent, std::slice::from_ref(&f)).await;
    assert_eq!(acks2.len(), 1);
    assert_eq!(acks2[0].batch_id, Some(f.batch_id()));
    assert_eq!(acks2[0].outcome, Outcome::Delivered);
    // One object, still the first node's seal, and it opens with the
    // shared ring.
    assert_eq!(one.store().list(a).await.unwrap(), vec![name]);
    assert_eq!(
        two.store().get(a, name).await.unwrap(),
        Some(stored.clone())
    );
    let ring = opsdata::load_ring(&*keys.0.lock().unwrap(), a, &wrapping_key())
        .unwrap()
        .expect("a ring");
    let sealed = opsdata::Frame::decode(stored, &Default::default()).unwrap();
    let opened = opsdata::open(&sealed, &ring).unwrap();
    assert_eq!(opened.batch_id(), f.batch_id());
    let (m1, m2) = (one.metrics_text(), two.metrics_text());
    assert_eq!(metric(&m1, "opsdata_frames_stored_total"), 1.0);
    assert_eq!(metric(&m1, "opsdata_frames_duplicate_total"), 0.0);
    assert_eq!(metric(&m2, "opsdata_frames_stored_total"), 0.0);
    assert_eq!(metric(&m2, "opsdata_frames_duplicate_total"), 1.0);
    assert_eq!(metric(&m2, "opsdata_seals_total"), 1.0);

    // At once, on both nodes: exactly one stores, both answer delivered.
    let g = frame(a, 3);
    let (x, y) = tokio::join!(
        post_frames(r1.addr, &pki, &agent, std::slice::from_ref(&g)),
        post_frames(r2.addr, &pki, &agent, std::slice::from_ref(&g)),
    );
    for acks in [&x, &y] {
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].outcome, Outcome::Delivered);
    }
    let mut names = vec![name, ObjectKey::for_batch(g.batch_id())];
    names.sort_unstable();
    assert_eq!(one.store().list(a).await.unwrap(), names);
    let (m1, m2) = (one.metrics_text(), two.metrics_text());
    let stored_total =
        metric(&m1, "opsdata_frames_stored_total") + metric(&m2, "opsdata_frames_stored_total");
    let duplicates = metric(&m1, "opsdata_frames_duplicate_total")
        + metric(&m2, "opsdata_frames_duplicate_total");
    assert_eq!((stored_total, duplicates), (2.0, 2.0));

    r1.shutdown().await;
    r2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_one_memory_store_store_a_batch_once() {
    let shared = Arc::new(opsdata_io::MemoryBlobs::new());
    let node = || TestStore {
        inner: shared.clone(),
        ..TestStore::default()
    };
    two_nodes_store_each_batch_once(node(), node()).await;
    assert_eq!(shared.count(tenant(WS_A)), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_one_local_directory_store_a_batch_once() {
    let dir = std::env::temp_dir().join(format!(
        "opsdata-io-two-nodes-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    // Two stores on one directory, as two processes would have.
    let one = opsdata_io::LocalDirBlobs::new(&dir).unwrap();
    let two = opsdata_io::LocalDirBlobs::new(&dir).unwrap();
    two_nodes_store_each_batch_once(one, two).await;
    // No temporary file left behind; exactly the two objects.
    let files = std::fs::read_dir(dir.join(WS_A)).unwrap().count();
    assert_eq!(files, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two nodes provisioning one new tenant at once end with ONE ring: the
/// second node read "no ring" before the first wrote its own, so it
/// provisions one too, but its create-if-absent write loses and it takes
/// the winner's ring. Every stored object opens with the stored ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_provisioning_one_tenant_end_with_one_ring() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let shared = Arc::new(opsdata_io::MemoryBlobs::new());
    let node = || TestStore {
        inner: shared.clone(),
        ..TestStore::default()
    };
    let one = build(node(), &clock, limits(), keys.clone());
    let two = build(node(), &clock, limits(), keys.clone());
    let (r1, r2) = (start(&one, &pki).await, start(&two, &pki).await);
    let a = tenant(WS_A);
    let agent = pki.agent(WS_A);
    let (f1, f2) = (frame(a, 2), frame(a, 3));
    let acks1 = post_frames(r1.addr, &pki, &agent, std::slice::from_ref(&f1)).await;
    assert_eq!(acks1[0].outcome, Outcome::Delivered);
    let ring_after_one = keys.0.lock().unwrap().get(a).unwrap().unwrap();
    // The second node's first read misses the ring just written.
    keys.2.store(true, Ordering::SeqCst);
    let acks2 = post_frames(r2.addr, &pki, &agent, std::slice::from_ref(&f2)).await;
    assert_eq!(acks2[0].outcome, Outcome::Delivered);
    assert!(
        !keys.2.load(Ordering::SeqCst),
        "the second node read the ring"
    );
    let ring = opsdata::load_ring(&*keys.0.lock().unwrap(), a, &wrapping_key())
        .unwrap()
        .expect("a ring");
    let first = KeyRing::from_sealed(&ring_after_one, a, &wrapping_key()).unwrap();
    for f in [&f1, &f2] {
        let stored = shared
            .get(a, ObjectKey::for_batch(f.batch_id()))
            .await
            .unwrap()
            .expect("stored");
        let sealed = opsdata::Frame::decode(stored, &Default::default()).unwrap();
        assert_eq!(
            opsdata::open(&sealed, &ring).unwrap().batch_id(),
            f.batch_id()
        );
        assert_eq!(
            opsdata::open(&sealed, &first).unwrap().batch_id(),
            f.batch_id()
        );
    }
    r1.shutdown().await;
    r2.shutdown().await;
}
