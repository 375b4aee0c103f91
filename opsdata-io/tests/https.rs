//! `HttpsTransport` and the async agent against a small HTTPS ingest
//! server on loopback (`tests/common/server.rs`): HTTP/2 and HTTP/1.1,
//! requests really in flight at once on one connection, the status-code
//! mapping, reconnecting after the server restarts, a renewed certificate
//! presented on the next connection, a service the agent does not trust.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use chrono::Duration;
use common::server::{IngestServer, Mode, Pki, State, identity};
use common::{TENANT, frame, tenant};
use opsdata::{
    BlobStore, DeliveryEvent, DeliveryPolicy, FrameLimits, MemorySpool, Outcome, Transmit,
};
use opsdata_io::{
    AgentEvent, AgentSettings, AsyncAgent, AsyncTransport, HttpsSettings, HttpsTransport,
    PemIdentity,
};
use tokio::sync::{Semaphore, watch};

/// Runs a test body with a bound: a test that would hang fails instead.
async fn bounded(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(StdDuration::from_secs(120), body)
        .await
        .expect("the test finished within two minutes");
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn settings(pki: &Pki, addr: SocketAddr) -> HttpsSettings {
    HttpsSettings::new(addr, "localhost", pki.roots())
        .unwrap()
        .with_backoff(StdDuration::from_millis(5), StdDuration::from_millis(50), 1)
        .unwrap()
        .with_request_timeout(StdDuration::from_secs(20))
        .unwrap()
}

fn transmit(seq: u64) -> Transmit {
    let frame = frame(seq, 2, 10);
    Transmit {
        tenant: frame.tenant(),
        batch_id: frame.batch_id(),
        attempt: 1,
        frame,
    }
}

fn stored(state: &State) -> usize {
    let s = state.store.lock().unwrap();
    s.blobs.list(tenant()).unwrap().len()
}

async fn server(pki: &Pki) -> IngestServer {
    IngestServer::start(pki, State::new(pki, FrameLimits::default()), any_port()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_is_delivered_over_http2_and_stored() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        let id = Arc::new(identity(&pki.agent(TENANT)));
        let t = HttpsTransport::new(settings(&pki, server.addr), id);
        assert_eq!(t.send(&transmit(1)).await, Outcome::Delivered);
        // The same batch again: the ingest de-duplicates, the agent hears Delivered.
        assert_eq!(t.send(&transmit(1)).await, Outcome::Delivered);
        assert_eq!(t.send(&transmit(2)).await, Outcome::Delivered);
        assert_eq!(stored(&server.state), 2);
        let stats = t.stats();
        assert_eq!((stats.connects, stats.http2_connects, stats.ok), (1, 1, 3));
        assert!(
            server
                .state
                .versions
                .lock()
                .unwrap()
                .iter()
                .all(|v| *v == hyper::Version::HTTP_2)
        );
        // Several frames in one request: one ack each.
        let frames = [frame(3, 1, 1), frame(4, 1, 1), frame(5, 1, 1)];
        assert_eq!(t.send_frames(&frames).await, [Outcome::Delivered; 3]);
        assert_eq!(stored(&server.state), 5);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_is_the_fallback() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        let id = Arc::new(identity(&pki.agent(TENANT)));
        let t = HttpsTransport::new(settings(&pki, server.addr).with_http1_only(true), id);
        for seq in 1..=3 {
            assert_eq!(t.send(&transmit(seq)).await, Outcome::Delivered);
        }
        assert_eq!(stored(&server.state), 3);
        let stats = t.stats();
        assert_eq!((stats.connects, stats.http2_connects), (1, 0));
        assert!(
            server
                .state
                .versions
                .lock()
                .unwrap()
                .iter()
                .all(|v| *v == hyper::Version::HTTP_11)
        );
        // Over HTTP/1.1 the one connection carries one request at a time,
        // whatever max_in_flight says (what the HTTP/2 test is measured
        // against).
        let policy = DeliveryPolicy::default().with_max_in_flight(4).unwrap();
        let (mut agent, _) =
            AsyncAgent::start(AgentSettings::new(policy, 3), t, MemorySpool::new())
                .await
                .unwrap();
        for seq in 10..18 {
            agent.push(frame(seq, 2, 10)).await.unwrap();
        }
        let mut delivered = 0;
        while delivered < 8 {
            if let Some(AgentEvent::Delivery(DeliveryEvent::Delivered { .. })) =
                agent.next_event().await
            {
                delivered += 1;
            }
        }
        agent.shutdown().await.unwrap();
        assert_eq!(server.state.max_active.load(Ordering::SeqCst), 1);
        server.stop().await;
    })
    .await;
}

/// Waits (generously bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..20_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_requests_are_in_flight_at_once_on_one_connection() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        // The server holds every request until the test lets it go.
        let gate = Arc::new(Semaphore::new(0));
        *server.state.gate.lock().unwrap() = Some(Arc::clone(&gate));
        let id = Arc::new(identity(&pki.agent(TENANT)));
        let transport = HttpsTransport::new(settings(&pki, server.addr), id);
        let policy = DeliveryPolicy::default().with_max_in_flight(4).unwrap();
        let (mut agent, _) = AsyncAgent::start(
            AgentSettings::new(policy, 3),
            transport.clone(),
            MemorySpool::new(),
        )
        .await
        .unwrap();
        for seq in 0..12 {
            agent.push(frame(seq, 2, 10)).await.unwrap();
        }
        let state = Arc::clone(&server.state);
        until("4 requests at the server at once", || {
            state.active.load(Ordering::SeqCst) == 4
        })
        .await;
        gate.add_permits(1000);
        let mut delivered = 0;
        while delivered < 12 {
            if let Some(AgentEvent::Delivery(DeliveryEvent::Delivered { .. })) =
                agent.next_event().await
            {
                delivered += 1;
            }
        }
        assert_eq!(server.state.max_active.load(Ordering::SeqCst), 4);
        assert_eq!(stored(&server.state), 12);
        assert_eq!(transport.stats().connects, 1, "one connection");
        assert_eq!(server.state.connections.load(Ordering::SeqCst), 1);
        let spool = agent.shutdown().await.unwrap();
        assert!(spool.is_empty());
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_map_to_outcomes() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        let id = Arc::new(identity(&pki.agent(TENANT)));
        let t = HttpsTransport::new(settings(&pki, server.addr), id);
        let cases = [
            (
                Mode::Status(429, Some("7".into())),
                Outcome::Throttled {
                    retry_after: Duration::seconds(7),
                },
            ),
            (Mode::Status(503, Some("2".into())), Outcome::Transient),
            (Mode::Status(500, None), Outcome::Transient),
            // A 400 without the rejected ack WIRE.md gives the frame at
            // the bad bytes (a proxy's answer, say): the frame was not
            // read, so it is sent again.
            (Mode::Status(400, None), Outcome::Transient),
            (Mode::Status(413, None), Outcome::Rejected),
        ];
        for (seq, (mode, expected)) in (10..).zip(cases) {
            server.state.set_mode(mode.clone());
            assert_eq!(t.send(&transmit(seq)).await, expected, "{mode:?}");
        }
        assert_eq!(stored(&server.state), 0);
        server.state.set_mode(Mode::Ingest);
        // A body over the service's limit: a real 413, not retried.
        let small = State::new(&pki, FrameLimits::default().with_max_body(1 << 10).unwrap());
        let strict = IngestServer::start(&pki, small, any_port()).await;
        let t2 = HttpsTransport::new(
            settings(&pki, strict.addr),
            Arc::new(identity(&pki.agent(TENANT))),
        );
        let big = frame(1, 20, 200);
        let big = Transmit {
            tenant: big.tenant(),
            batch_id: big.batch_id(),
            attempt: 1,
            frame: big,
        };
        assert_eq!(t2.send(&big).await, Outcome::Rejected);
        // Bytes that are not frames (a frame of another workspace): 400, and
        // nothing is stored.
        let other = common::frame_of("7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap(), 99);
        let other = Transmit {
            tenant: other.tenant(),
            batch_id: other.batch_id(),
            attempt: 1,
            frame: other,
        };
        assert_eq!(t.send(&other).await, Outcome::Rejected);
        assert_eq!(stored(&server.state), 0);
        assert_eq!(t.send(&transmit(1)).await, Outcome::Delivered);
        strict.stop().await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_reconnects_after_the_server_restarts() {
    bounded(async move {
        let pki = Pki::new();
        let state = State::new(&pki, FrameLimits::default());
        let server = IngestServer::start(&pki, Arc::clone(&state), any_port()).await;
        let addr = server.addr;
        let id = Arc::new(identity(&pki.agent(TENANT)));
        let t = HttpsTransport::new(settings(&pki, addr), id);
        assert_eq!(t.send(&transmit(1)).await, Outcome::Delivered);
        server.stop().await;
        assert_eq!(t.send(&transmit(2)).await, Outcome::Transient);
        let server = IngestServer::start(&pki, Arc::clone(&state), addr).await;
        // Within the backoff the send fails at once; then it connects again.
        let mut outcome = Outcome::Transient;
        for _ in 0..200 {
            outcome = t.send(&transmit(2)).await;
            if outcome == Outcome::Delivered {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
        assert_eq!(outcome, Outcome::Delivered);
        assert_eq!(t.stats().connects, 2);
        assert_eq!(stored(&state), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_on_the_next_connection() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        let first = pki.agent(TENANT);
        let renewed = pki.agent(TENANT);
        let (host, source) = watch::channel(Arc::new(identity(&first)));
        let t = HttpsTransport::new(settings(&pki, server.addr), source);
        assert_eq!(t.send(&transmit(1)).await, Outcome::Delivered);
        // The host renews: the open connection keeps its certificate...
        host.send(Arc::new(identity(&renewed))).unwrap();
        assert_eq!(t.send(&transmit(2)).await, Outcome::Delivered);
        // ...and the next connection presents the new one.
        t.disconnect().await;
        assert_eq!(t.send(&transmit(3)).await, Outcome::Delivered);
        let leaves = server.state.client_leaves.lock().unwrap().clone();
        assert_eq!(leaves, [first.der.clone(), renewed.der.clone()]);

        // Files: re-read at each connection.
        let dir = std::env::temp_dir().join(format!("opsdata-https-renew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("agent.pem"), dir.join("agent.key"));
        std::fs::write(&cert, &first.pem).unwrap();
        std::fs::write(&key, &first.key_pem).unwrap();
        let t = HttpsTransport::new(settings(&pki, server.addr), PemIdentity::new(&cert, &key));
        assert_eq!(t.send(&transmit(4)).await, Outcome::Delivered);
        std::fs::write(&cert, &renewed.pem).unwrap();
        std::fs::write(&key, &renewed.key_pem).unwrap();
        t.disconnect().await;
        assert_eq!(t.send(&transmit(5)).await, Outcome::Delivered);
        let leaves = server.state.client_leaves.lock().unwrap().clone();
        assert_eq!(&leaves[2..], [first.der.clone(), renewed.der.clone()]);
        std::fs::remove_dir_all(&dir).unwrap();
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_agent_does_not_trust_is_a_transient_failure() {
    bounded(async move {
        let pki = Pki::new();
        let server = server(&pki).await;
        let stranger = Pki::new();
        // The agent trusts another CA than the one that issued the service's
        // certificate.
        let settings = HttpsSettings::new(server.addr, "localhost", stranger.roots()).unwrap();
        let t = HttpsTransport::new(settings, Arc::new(identity(&pki.agent(TENANT))));
        assert_eq!(t.send(&transmit(1)).await, Outcome::Transient);
        assert_eq!(t.stats().connect_failures, 1);
        assert!(t.last_error().unwrap().contains("connect"));
        // And a certificate the service's enrollment CA did not issue: the
        // handshake fails, transient for the agent.
        let t = HttpsTransport::new(
            HttpsSettings::new(server.addr, "localhost", pki.roots()).unwrap(),
            Arc::new(identity(&stranger.agent(TENANT))),
        );
        assert_eq!(t.send(&transmit(1)).await, Outcome::Transient);
        assert_eq!(stored(&server.state), 0);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_and_a_slow_answer_time_out_as_transient() {
    bounded(async move {
        let pki = Pki::new();
        // Accepts TCP, never speaks TLS.
        let silent = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                held.push(tcp);
            }
        });
        let t = HttpsTransport::new(
            settings(&pki, addr)
                .with_connect_timeout(StdDuration::from_millis(200))
                .unwrap(),
            Arc::new(identity(&pki.agent(TENANT))),
        );
        assert_eq!(t.send(&transmit(1)).await, Outcome::Transient);
        assert_eq!(t.stats().connect_failures, 1);
        assert!(t.last_error().unwrap().contains("timed out"));
        holder.abort();

        // A service that takes the request and never answers.
        let server = server(&pki).await;
        *server.state.gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
        let t = HttpsTransport::new(
            settings(&pki, server.addr)
                .with_request_timeout(StdDuration::from_millis(300))
                .unwrap(),
            Arc::new(identity(&pki.agent(TENANT))),
        );
        assert_eq!(t.send(&transmit(2)).await, Outcome::Transient);
        let stats = t.stats();
        assert_eq!((stats.connects, stats.failures), (1, 1));
        assert!(t.last_error().unwrap().contains("timed out"));
        // The connection stays up (HTTP/2: other requests are unaffected).
        *server.state.gate.lock().unwrap() = None;
        assert_eq!(t.send(&transmit(3)).await, Outcome::Delivered);
        assert_eq!(t.stats().connects, 1);
        server.stop().await;
    })
    .await;
}
