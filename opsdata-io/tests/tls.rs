//! The TLS transport and service end to end, on 127.0.0.1 with certificates
//! made at test time: delivery of every data type, refusal of a wrong
//! workspace and of a foreign CA, and an outage the outbox rides out.
//!
//! Sockets are real; the agent's time (and the service's clock) is a fake
//! `now`, moved to the outbox's retry times. No assertion depends on timing.

// Tests may read the wall clock and draw random ids.
#![allow(clippy::disallowed_methods)]

// Shared with the certs example, which uses the PEM fields this test does not.
#[allow(dead_code)]
#[path = "../examples/support/pki.rs"]
mod pki;
#[path = "../../examples/support/records.rs"]
mod records;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use opsdata::{
    Agent, AgentKey, BatchId, Credential, DataType, DeliveryEvent, DeliveryPolicy, DropReason,
    EnrollmentCa, Frame, FrameLimits, KeyMaterial, KeyStore, MemoryBlobStore, MemoryKeyStore,
    MemorySpool, ObjectKey, Outbox, RotationPolicy, SystemEntropy, TenantId, Transport,
    WrappingKey, read_back,
};
use opsdata_io::{
    Ack, ServiceConfig, ServiceHandle, ServiceSettings, Timeouts, TlsIdentity, TlsService,
    TlsTransport, TransportSettings,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

const WS_A: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const WS_B: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

fn tenant(s: &str) -> TenantId {
    s.parse().unwrap()
}

/// The service's clock, moved by the test.
#[derive(Clone)]
struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    fn new(t: DateTime<Utc>) -> Self {
        FakeClock(Arc::new(AtomicI64::new(t.timestamp_millis())))
    }
    fn set(&self, t: DateTime<Utc>) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }
    fn clock(&self) -> opsdata_io::Clock {
        let c = self.0.clone();
        Arc::new(move || DateTime::from_timestamp_millis(c.load(Ordering::SeqCst)).unwrap())
    }
}

struct Pki {
    now: DateTime<Utc>,
    enrollment: pki::Ca,
    service_ca: pki::Ca,
    service: pki::Issued,
}

impl Pki {
    fn new() -> Self {
        let now = Utc::now();
        let enrollment = pki::ca("test enrollment CA", now).unwrap();
        let service_ca = pki::ca("test service CA", now).unwrap();
        let service = pki::service(&service_ca, &["localhost", "127.0.0.1"], now).unwrap();
        Pki {
            now,
            enrollment,
            service_ca,
            service,
        }
    }

    fn agent(&self, workspace: &str) -> pki::Issued {
        pki::agent(
            &self.enrollment,
            workspace,
            &Uuid::new_v4().to_string(),
            self.now,
        )
        .unwrap()
    }
}

/// A bare rustls client with `issued` as its certificate, for tests that
/// speak to the service below the transport (garbage, trickled bytes).
fn raw_client_config(pki: &Pki, issued: &pki::Issued) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.service_ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![issued.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
    )
    .unwrap();
    Arc::new(config)
}

fn identity(issued: &pki::Issued) -> TlsIdentity {
    TlsIdentity::new(
        vec![issued.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der.clone())),
    )
    .unwrap()
}

type Service = Arc<TlsService<MemoryBlobStore>>;

/// A key store shared between services (a restart keeps it).
#[derive(Clone, Default)]
struct SharedKeys(Arc<std::sync::Mutex<MemoryKeyStore>>);

impl KeyStore for SharedKeys {
    type Error = std::convert::Infallible;

    fn put(&mut self, tenant: TenantId, sealed: &[u8]) -> Result<(), Self::Error> {
        self.0.lock().unwrap().put(tenant, sealed)
    }

    fn get(&self, tenant: TenantId) -> Result<Option<Vec<u8>>, Self::Error> {
        self.0.lock().unwrap().get(tenant)
    }
}

fn wrapping_key() -> WrappingKey {
    WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]))
}

fn service(pki: &Pki, clock: &FakeClock) -> Service {
    service_over(pki, clock, SharedKeys::default(), MemoryBlobStore::new())
}

fn service_over(pki: &Pki, clock: &FakeClock, keys: SharedKeys, blobs: MemoryBlobStore) -> Service {
    let settings = ServiceSettings::default()
        .with_read_timeout(StdDuration::from_secs(2))
        .unwrap()
        .with_write_timeout(StdDuration::from_secs(2))
        .unwrap()
        .with_frame_timeout(StdDuration::from_secs(2))
        .unwrap();
    let config = ServiceConfig::new(identity(&pki.service), vec![pki.enrollment.der.clone()])
        .with_settings(settings)
        .with_key_store(keys, wrapping_key())
        .with_provisioning(RotationPolicy::default());
    Arc::new(TlsService::new(config, blobs, Box::new(SystemEntropy::new()), clock.clock()).unwrap())
}

fn listen(service: &Service, addr: SocketAddr) -> ServiceHandle {
    service.spawn(TcpListener::bind(addr).unwrap()).unwrap()
}

fn transport(pki: &Pki, addr: SocketAddr, id: &TlsIdentity) -> TlsTransport {
    let settings = TransportSettings::new(addr, "localhost", vec![pki.service_ca.der.clone()])
        .unwrap()
        .with_timeouts(
            Timeouts::new(
                StdDuration::from_secs(2),
                StdDuration::from_secs(3),
                StdDuration::from_secs(3),
            )
            .unwrap(),
        );
    TlsTransport::new(settings, id).unwrap()
}

fn agent(transport: TlsTransport, policy: DeliveryPolicy) -> Agent<TlsTransport, MemorySpool> {
    Agent::new(Outbox::new(policy, 7), transport, MemorySpool::new())
}

fn next_id() -> BatchId {
    BatchId::from_random_bytes(*Uuid::new_v4().as_bytes())
}

fn events(agent: &mut Agent<TlsTransport, MemorySpool>) -> Vec<DeliveryEvent> {
    std::iter::from_fn(|| agent.poll_event()).collect()
}

/// The stored object of `batch`, opened with its tenant's ring.
fn stored(service: &Service, tenant: TenantId, batch: BatchId) -> Option<Frame> {
    let st = service.lock();
    let ring = st.ring(tenant)?;
    read_back(
        &*service.store(),
        tenant,
        ObjectKey::for_batch(batch),
        ring,
        &FrameLimits::default(),
    )
    .unwrap()
}

fn listed(service: &Service, tenant: TenantId) -> Vec<ObjectKey> {
    opsdata::BlobStore::list(&*service.store(), tenant).unwrap()
}

#[test]
fn an_agent_delivers_every_data_type_and_the_service_stores_it_sealed() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());

    // The agent's credential as the core holds it.
    let issued = pki.agent(WS_A);
    let entropy = SystemEntropy::new();
    let key = AgentKey::from_pkcs8(&issued.key_der, entropy.secure_random()).unwrap();
    let credential = Credential::new(issued.der.clone(), key).unwrap();
    let id = TlsIdentity::from_credential(&credential);
    assert!(!format!("{id:?}").contains(&format!("{:?}", &issued.key_der[..8])));

    let a = tenant(WS_A);
    let frames = records::frames(a, pki.now, 0, &mut next_id);
    assert_eq!(
        frames.iter().map(Frame::data_type).collect::<BTreeSet<_>>(),
        DataType::ALL.into_iter().collect()
    );
    let mut agent = agent(
        transport(&pki, handle.addr(), &id),
        DeliveryPolicy::default(),
    );
    for f in &frames {
        agent.push(pki.now, f.clone()).unwrap();
    }
    let delivered: BTreeSet<BatchId> = events(&mut agent)
        .into_iter()
        .filter_map(|e| match e {
            DeliveryEvent::Delivered { batch_id, .. } => Some(batch_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered,
        frames.iter().map(Frame::batch_id).collect::<BTreeSet<_>>()
    );
    // One connection, kept for every frame.
    let stats = agent.transport().stats();
    assert_eq!((stats.connects, stats.sends, stats.failures), (1, 6, 0));
    assert!(agent.transport().is_connected());

    // Each frame is stored sealed and opens to the records sent.
    let limits = FrameLimits::default();
    for f in &frames {
        let back = stored(&svc, a, f.batch_id()).expect("stored");
        assert_eq!(back.data_type(), f.data_type());
        assert_eq!(back.records(&limits).unwrap(), f.records(&limits).unwrap());
    }
    assert_eq!(listed(&svc, a).len(), 6);
    let st = svc.lock().stats(a);
    assert_eq!((st.frames, st.duplicates, st.rejected), (6, 0, 0));
    assert_eq!(st.records_by_type.len(), 6);
    drop(handle);
    assert_eq!(svc.stats().authenticated, 1);
}

#[test]
fn a_certificate_of_another_workspace_is_rejected_and_a_foreign_ca_fails_the_handshake() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let (a, b) = (tenant(WS_A), tenant(WS_B));

    // A certificate for workspace B sending workspace A's frames.
    let issued_b = pki.agent(WS_B);
    let mut wrong = agent(
        transport(&pki, handle.addr(), &identity(&issued_b)),
        DeliveryPolicy::default(),
    );
    let frame = records::frames(a, pki.now, 0, &mut next_id).remove(0);
    wrong.push(pki.now, frame.clone()).unwrap();
    let evs = events(&mut wrong);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            DeliveryEvent::Dropped { batch_id, reason: DropReason::Rejected, .. }
                if *batch_id == frame.batch_id()
        )),
        "{evs:?}"
    );
    assert!(wrong.outbox().held_batches() == 0);
    let principal_b = EnrollmentCa::new(std::slice::from_ref(&pki.enrollment.der))
        .unwrap()
        .authenticate(std::slice::from_ref(&issued_b.der), pki.now)
        .unwrap();
    {
        let st = svc.lock();
        assert_eq!(st.ingest().tenant_mismatches(&principal_b), 1);
        assert_eq!(st.stats(b).tenant_mismatches, 1);
    }
    assert!(listed(&svc, a).is_empty() && listed(&svc, b).is_empty());

    // A certificate for A from another CA: the handshake fails.
    let rogue_ca = pki::ca("rogue CA", pki.now).unwrap();
    let rogue = pki::agent(&rogue_ca, WS_A, &Uuid::new_v4().to_string(), pki.now).unwrap();
    let mut t = transport(&pki, handle.addr(), &identity(&rogue));
    let frame = records::frames(a, pki.now, 0, &mut next_id).remove(0);
    let tx = Outbox::new(DeliveryPolicy::default(), 1);
    let mut tx = tx;
    tx.push(pki.now, frame).unwrap();
    let transmit = tx.poll_transmit(pki.now).expect("due");
    assert_eq!(t.send(pki.now, &transmit), opsdata::Outcome::Transient);
    assert_eq!(t.stats().failures, 1);
    assert!(!t.is_connected());
    assert!(t.last_error().is_some());
    handle.stop();
    // Stopped: every connection's thread has finished counting.
    assert_eq!(svc.stats().handshake_failures, 1);
    assert_eq!(svc.stats().authenticated, 1);
    assert!(listed(&svc, a).is_empty() && listed(&svc, b).is_empty());
}

#[test]
fn an_outage_is_ridden_out_and_everything_not_dropped_is_delivered_once() {
    let pki = Pki::new();
    let t0 = pki.now;
    let clock = FakeClock::new(t0);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let addr = handle.addr();
    let a = tenant(WS_A);

    // Room for about two sets of the six sample frames (~2.7 KB a set).
    let policy = DeliveryPolicy::default().with_limit_bytes(5000).unwrap();
    let cache_window = policy.cache_window();
    let mut agent = agent(transport(&pki, addr, &identity(&pki.agent(WS_A))), policy);
    let mut pushed = Vec::new();
    for f in records::frames(a, t0, 0, &mut next_id) {
        pushed.push(f.batch_id());
        agent.push(t0, f).unwrap();
    }
    let mut all_events = events(&mut agent);
    assert_eq!(listed(&svc, a).len(), 6);

    // The service goes away; the next frames fail and are cached.
    handle.stop();
    let mut now = t0 + Duration::minutes(1);
    clock.set(now);
    for f in records::frames(a, now, 1, &mut next_id) {
        pushed.push(f.batch_id());
        agent.push(now, f).unwrap();
    }
    let failures_at_outage = agent.transport().stats().failures;
    assert!(failures_at_outage >= 1);
    assert_eq!(agent.outbox().held_by_phase().cached, 6);

    // Retries at the policy's times, each Transient, past the cache window.
    let offline_since = now;
    let mut queued = false;
    for _ in 0..100 {
        now = agent.next_wakeup().expect("a retry is scheduled");
        clock.set(now);
        agent.tick(now).unwrap();
        let evs = events(&mut agent);
        queued |= evs
            .iter()
            .any(|e| matches!(e, DeliveryEvent::Queued { .. }));
        all_events.extend(evs);
        if queued {
            break;
        }
    }
    assert!(queued, "queued after the cache window");
    assert!(now - offline_since >= cache_window);
    assert!(agent.transport().stats().failures > failures_at_outage);
    assert_eq!(agent.outbox().held_by_phase().queued, 6);

    // Fill the queue: Performance goes first.
    let mut n = 2;
    let mut drops = Vec::new();
    while drops.is_empty() && n < 10 {
        for f in records::frames(a, now, n, &mut next_id)
            .into_iter()
            .filter(|f| matches!(f.data_type(), DataType::Alert | DataType::Event))
        {
            pushed.push(f.batch_id());
            agent.push(now, f).unwrap();
        }
        n += 1;
        let evs = events(&mut agent);
        drops.extend(evs.iter().filter_map(|e| match e {
            DeliveryEvent::Dropped {
                data_type,
                batch_id,
                reason: DropReason::QueueFull,
                ..
            } => Some((*data_type, *batch_id)),
            _ => None,
        }));
        all_events.extend(evs);
    }
    assert_eq!(drops.first().map(|d| d.0), Some(DataType::Performance));
    assert!(
        drops
            .iter()
            .all(|d| !matches!(d.0, DataType::Alert | DataType::Event)),
        "{drops:?}"
    );

    // The service comes back on the same port (same store and state).
    let handle = listen(&svc, addr);
    for _ in 0..10 {
        if agent.outbox().held_batches() == 0 {
            break;
        }
        now = agent.next_wakeup().expect("a retry is scheduled");
        clock.set(now);
        agent.tick(now).unwrap();
        all_events.extend(events(&mut agent));
    }
    assert!(agent.outbox().held_batches() == 0);

    let dropped: BTreeSet<BatchId> = drops.iter().map(|d| d.1).collect();
    let expected: BTreeSet<BatchId> = pushed
        .iter()
        .copied()
        .filter(|id| !dropped.contains(id))
        .collect();
    let mut delivered: BTreeMap<BatchId, usize> = BTreeMap::new();
    for e in &all_events {
        if let DeliveryEvent::Delivered { batch_id, .. } = e {
            *delivered.entry(*batch_id).or_default() += 1;
        }
    }
    assert!(delivered.values().all(|&n| n == 1), "{delivered:?}");
    assert_eq!(delivered.keys().copied().collect::<BTreeSet<_>>(), expected);
    let stored_ids: BTreeSet<BatchId> = listed(&svc, a).iter().map(ObjectKey::batch_id).collect();
    assert_eq!(stored_ids, expected);
    let st = svc.lock().stats(a);
    assert_eq!(st.frames, expected.len() as u64);
    assert_eq!(st.duplicates, 0);
    for id in &dropped {
        assert!(stored(&svc, a, *id).is_none());
    }
    drop(handle);
}

#[test]
fn garbage_and_a_stalled_peer_do_not_hold_the_service() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());

    // A raw TLS client that sends bytes that are not a frame: the service
    // answers Rejected with no batch id and closes.
    let issued = pki.agent(WS_A);
    let config = raw_client_config(&pki, &issued);
    let connect = || {
        let tcp = TcpStream::connect(handle.addr()).unwrap();
        tcp.set_read_timeout(Some(StdDuration::from_secs(10)))
            .unwrap();
        let conn =
            rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    };
    let mut tls = connect();
    tls.write_all(&[0xAB; 100]).unwrap();
    tls.flush().unwrap();
    let ack = Ack::read_from(&mut tls).unwrap();
    assert_eq!(ack.batch_id, None);
    assert_eq!(ack.outcome, opsdata::Outcome::Rejected);
    let mut rest = Vec::new();
    let end = tls.read_to_end(&mut rest);
    assert!(end.is_ok() || rest.is_empty(), "the service closes");

    // A peer that starts a frame and stalls is cut off by the read timeout
    // (2 s here): the read below ends instead of waiting its own 10 s.
    let mut tls = connect();
    let frame = records::frames(tenant(WS_A), pki.now, 0, &mut next_id).remove(0);
    tls.write_all(&frame.as_bytes()[..30]).unwrap();
    tls.flush().unwrap();
    let mut buf = [0u8; 1];
    let r = tls.read(&mut buf);
    assert!(
        matches!(r, Ok(0))
            || r.as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "{r:?}"
    );
    handle.stop();
    assert_eq!(svc.stats().bad_frames, 1);
    assert!(listed(&svc, tenant(WS_A)).is_empty());
}

#[test]
fn an_ack_for_another_batch_is_transient_and_drops_the_connection() {
    let pki = Pki::new();
    // A server that answers every frame with an acknowledgement for
    // another batch.
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![pki.service.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.service.key_der.clone())),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(server);
    let thread = std::thread::spawn(move || {
        let mut accepted = 0;
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(StdDuration::from_secs(10)))
                .unwrap();
            let mut tls = rustls::StreamOwned::new(
                rustls::ServerConnection::new(server.clone()).unwrap(),
                tcp,
            );
            let mut header = [0u8; 64];
            if tls.read_exact(&mut header).is_err() {
                continue;
            }
            accepted += 1;
            let ack = Ack {
                batch_id: Some(BatchId::from_random_bytes([9; 16])),
                outcome: opsdata::Outcome::Delivered,
            };
            let _ = tls.write_all(&ack.encode());
            let _ = tls.flush();
            // Keep the connection until the agent drops it.
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest);
        }
        accepted
    });
    let mut t = transport(&pki, addr, &identity(&pki.agent(WS_A)));
    let mut outbox = Outbox::new(DeliveryPolicy::default(), 1);
    for f in records::frames(tenant(WS_A), pki.now, 0, &mut next_id)
        .into_iter()
        .take(2)
    {
        outbox.push(pki.now, f).unwrap();
    }
    for expected_connects in 1..=2 {
        let tx = outbox.poll_transmit(pki.now).expect("due");
        assert_eq!(t.send(pki.now, &tx), opsdata::Outcome::Transient);
        assert!(!t.is_connected(), "dropped after a wrong acknowledgement");
        let s = t.stats();
        assert_eq!(
            (s.connects, s.wrong_acks, s.failures),
            (expected_connects, expected_connects, expected_connects)
        );
    }
    assert!(matches!(
        t.last_error(),
        Some(opsdata_io::TlsError::AckMismatch { .. })
    ));
    assert_eq!(thread.join().unwrap(), 2);
}

#[test]
fn regression_rings_are_kept_in_the_key_store_and_a_restarted_service_opens_what_it_stored() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let keys = SharedKeys::default();
    let a = tenant(WS_A);
    let frames = records::frames(a, pki.now, 0, &mut next_id);

    // The first service provisions A's ring, stores every frame, stops.
    let svc = service_over(&pki, &clock, keys.clone(), MemoryBlobStore::new());
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let mut first = agent(
        transport(&pki, handle.addr(), &identity(&pki.agent(WS_A))),
        DeliveryPolicy::default(),
    );
    for f in &frames {
        first.push(pki.now, f.clone()).unwrap();
    }
    assert_eq!(first.outbox().held_batches(), 0, "{:?}", events(&mut first));
    handle.stop();
    let blobs = svc.store().clone();
    let usage_before = svc.lock().ring(a).unwrap().primary().unwrap().usage;
    drop(svc);
    assert!(keys.get(a).unwrap().is_some(), "the ring was saved");

    // A new service over the same stores: it loads the ring instead of
    // provisioning another, and everything stored before opens.
    let svc = service_over(&pki, &clock, keys.clone(), blobs);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let mut second = agent(
        transport(&pki, handle.addr(), &identity(&pki.agent(WS_A))),
        DeliveryPolicy::default(),
    );
    let more = records::frames(a, pki.now, 1, &mut next_id);
    second.push(pki.now, more[0].clone()).unwrap();
    assert_eq!(second.outbox().held_batches(), 0);
    handle.stop();
    let limits = FrameLimits::default();
    for f in frames.iter().chain(&more[..1]) {
        let back = stored(&svc, a, f.batch_id()).expect("stored and opened");
        assert_eq!(back.records(&limits).unwrap(), f.records(&limits).unwrap());
    }
    // The usage counted before the restart was kept, and counts on.
    let ring = svc.lock();
    let primary = ring.ring(a).unwrap().primary().unwrap();
    assert_eq!(primary.usage, usage_before + 1);
    assert_eq!(usage_before, frames.len() as u64);
}

#[test]
fn regression_provisioning_without_a_key_store_is_refused() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let config = ServiceConfig::new(identity(&pki.service), vec![pki.enrollment.der.clone()])
        .with_provisioning(RotationPolicy::default());
    let r = TlsService::new(
        config,
        MemoryBlobStore::new(),
        Box::new(SystemEntropy::new()),
        clock.clock(),
    );
    assert!(matches!(r, Err(opsdata_io::TlsError::NoKeyStore)));
}

/// A service with a 1 s handshake and frame timeout and room for one
/// handshake at a time.
fn strict_service(pki: &Pki, clock: &FakeClock) -> Service {
    let settings = ServiceSettings::default()
        .with_read_timeout(StdDuration::from_secs(2))
        .unwrap()
        .with_frame_timeout(StdDuration::from_secs(1))
        .unwrap()
        .with_handshake_timeout(StdDuration::from_secs(1))
        .unwrap()
        .with_max_handshakes(1)
        .unwrap();
    let config = ServiceConfig::new(identity(&pki.service), vec![pki.enrollment.der.clone()])
        .with_settings(settings)
        .with_key_store(SharedKeys::default(), wrapping_key())
        .with_provisioning(RotationPolicy::default());
    Arc::new(
        TlsService::new(
            config,
            MemoryBlobStore::new(),
            Box::new(SystemEntropy::new()),
            clock.clock(),
        )
        .unwrap(),
    )
}

/// Writes `bytes` one at a time, 100 ms apart, until the peer closes (a
/// write fails or a read sees the end); whether it did within `cap`.
fn trickle_until_closed(tcp: &mut TcpStream, bytes: &[u8], cap: StdDuration) -> bool {
    tcp.set_read_timeout(Some(StdDuration::from_millis(100)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut i = 0;
    while start.elapsed() < cap {
        if tcp.write_all(&bytes[i % bytes.len()..][..1]).is_err() {
            return true;
        }
        i += 1;
        let mut b = [0u8; 64];
        match tcp.read(&mut b) {
            Ok(0) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
            // An alert or other bytes: keep going until the close.
            Ok(_) => {}
        }
    }
    false
}

/// Sends `frame` through a fresh agent, retrying a few times (the
/// service frees a slot just after closing its socket).
fn deliver_eventually(pki: &Pki, addr: SocketAddr, frame: &Frame) -> bool {
    let mut t = transport(pki, addr, &identity(&pki.agent(WS_A)));
    let mut outbox = Outbox::new(DeliveryPolicy::default(), 1);
    outbox.push(pki.now, frame.clone()).unwrap();
    let tx = outbox.poll_transmit(pki.now).expect("due");
    for _ in 0..50 {
        if t.send(pki.now, &tx) == opsdata::Outcome::Delivered {
            return true;
        }
        std::thread::sleep(StdDuration::from_millis(100));
    }
    false
}

#[test]
fn regression_a_trickled_handshake_is_closed_at_the_handshake_deadline() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = strict_service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());

    // A TLS record header announcing a 16 000-byte handshake message, then
    // its bytes one by one: each read brings a byte well within the read
    // timeout, so only a deadline on the whole handshake ends it.
    let mut record = vec![0x16, 0x03, 0x01, 0x3e, 0x80, 0x01, 0x00, 0x3e, 0x7c];
    record.extend(std::iter::repeat_n(0x03, 64));
    let mut slow = TcpStream::connect(handle.addr()).unwrap();
    // It holds the only handshake slot: an agent is refused meanwhile...
    std::thread::sleep(StdDuration::from_millis(200));
    let frame = records::frames(tenant(WS_A), pki.now, 0, &mut next_id).remove(0);
    let mut t = transport(&pki, handle.addr(), &identity(&pki.agent(WS_A)));
    let mut outbox = Outbox::new(DeliveryPolicy::default(), 1);
    outbox.push(pki.now, frame.clone()).unwrap();
    let tx = outbox.poll_transmit(pki.now).expect("due");
    assert_eq!(t.send(pki.now, &tx), opsdata::Outcome::Transient);
    assert!(svc.stats().over_limit >= 1);
    // ...until the service closes it (well before this 20 s cap).
    assert!(
        trickle_until_closed(&mut slow, &record, StdDuration::from_secs(20)),
        "the trickling peer was not closed"
    );
    // The slot is free again: a real agent gets through.
    assert!(deliver_eventually(&pki, handle.addr(), &frame));
    handle.stop();
    assert!(svc.stats().handshake_failures >= 1);
}

#[test]
fn regression_a_frame_trickled_inside_a_tls_record_is_closed_at_the_frame_deadline() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = strict_service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());

    // An authenticated client: handshake done, then one frame sealed into a
    // single TLS record whose bytes are written one by one.
    let issued = pki.agent(WS_A);
    let config = raw_client_config(&pki, &issued);
    let mut tcp = TcpStream::connect(handle.addr()).unwrap();
    tcp.set_read_timeout(Some(StdDuration::from_secs(5)))
        .unwrap();
    let mut conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let frame = records::frames(tenant(WS_A), pki.now, 0, &mut next_id).remove(0);
    conn.writer().write_all(frame.as_bytes()).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    assert!(
        trickle_until_closed(&mut tcp, &wire, StdDuration::from_secs(20)),
        "the trickling peer was not closed"
    );
    // The frame never arrived whole, so nothing was stored.
    assert!(listed(&svc, tenant(WS_A)).is_empty());
    assert!(deliver_eventually(&pki, handle.addr(), &frame));
    handle.stop();
}

/// A blob store whose puts wait at a gate, then fail or succeed.
#[derive(Clone, Default)]
struct GatedStore {
    inner: MemoryBlobStore,
    /// (open, fail the puts): set by the test.
    gate: Arc<(std::sync::Mutex<(bool, bool)>, std::sync::Condvar)>,
    entered: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
#[error("store refused")]
struct Refused;

impl opsdata::BlobStore for GatedStore {
    type Error = Refused;

    fn put(&mut self, tenant: TenantId, object: ObjectKey, frame: &Frame) -> Result<(), Refused> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let (m, cv) = &*self.gate;
        let mut g = m.lock().unwrap();
        while !g.0 {
            g = cv.wait(g).unwrap();
        }
        if g.1 {
            return Err(Refused);
        }
        self.inner.put(tenant, object, frame).map_err(|_| Refused)
    }

    fn get(&self, t: TenantId, o: ObjectKey) -> Result<Option<bytes::Bytes>, Refused> {
        self.inner.get(t, o).map_err(|_| Refused)
    }

    fn list(&self, t: TenantId) -> Result<Vec<ObjectKey>, Refused> {
        self.inner.list(t).map_err(|_| Refused)
    }

    fn delete(&mut self, t: TenantId, o: ObjectKey) -> Result<(), Refused> {
        self.inner.delete(t, o).map_err(|_| Refused)
    }
}

#[test]
fn regression_a_slow_store_does_not_hold_the_state_and_an_in_flight_retry_is_transient() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let store = GatedStore::default();
    let config = ServiceConfig::new(identity(&pki.service), vec![pki.enrollment.der.clone()])
        .with_key_store(SharedKeys::default(), wrapping_key())
        .with_provisioning(RotationPolicy::default());
    let svc = Arc::new(
        TlsService::new(
            config,
            store.clone(),
            Box::new(SystemEntropy::new()),
            clock.clock(),
        )
        .unwrap(),
    );
    let handle = svc
        .spawn(TcpListener::bind("127.0.0.1:0").unwrap())
        .unwrap();
    let addr = handle.addr();
    let frame = records::frames(tenant(WS_A), pki.now, 0, &mut next_id).remove(0);
    let transmit = |f: &Frame| {
        let mut o = Outbox::new(DeliveryPolicy::default(), 1);
        o.push(pki.now, f.clone()).unwrap();
        o.poll_transmit(pki.now).expect("due")
    };
    let tx = transmit(&frame);

    // The first copy reaches the store and waits there.
    let mut first = transport(&pki, addr, &identity(&pki.agent(WS_A)));
    let tx1 = tx.clone();
    let sender = std::thread::spawn(move || {
        let outcome = first.send(pki.now, &tx1);
        (outcome, first.stats())
    });
    while store.entered.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(StdDuration::from_millis(10));
    }

    // Meanwhile a retry of the same batch is answered (the state is not
    // locked by the store), transient: it is not stored yet.
    let mut second = transport(&pki, addr, &identity(&pki.agent(WS_A)));
    assert_eq!(second.send(pki.now, &tx), opsdata::Outcome::Transient);
    assert_eq!(second.stats().acked, 1, "{:?}", second.last_error());

    // The store fails: the first copy is answered transient and the batch
    // forgotten, so the retry is stored, not taken for a duplicate.
    {
        let (m, cv) = &*store.gate;
        *m.lock().unwrap() = (true, true);
        cv.notify_all();
    }
    let (outcome, stats) = sender.join().unwrap();
    assert_eq!(outcome, opsdata::Outcome::Transient);
    assert_eq!(stats.acked, 1);
    {
        let (m, _) = &*store.gate;
        *m.lock().unwrap() = (true, false);
    }
    assert_eq!(second.send(pki.now, &tx), opsdata::Outcome::Delivered);
    handle.stop();
    let st = svc.lock().stats(tenant(WS_A));
    assert_eq!((st.store_failures, st.duplicates), (1, 0));
    assert_eq!(
        opsdata::BlobStore::list(&*svc.store(), tenant(WS_A)).unwrap(),
        vec![ObjectKey::for_batch(frame.batch_id())]
    );
}

#[test]
fn regression_a_worker_that_panics_gives_its_connection_slot_back() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let settings = ServiceSettings::default().with_max_connections(1).unwrap();
    let config = ServiceConfig::new(identity(&pki.service), vec![pki.enrollment.der.clone()])
        .with_settings(settings)
        .with_key_store(SharedKeys::default(), wrapping_key())
        .with_provisioning(RotationPolicy::default());
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let p = panicked.clone();
    let svc = Arc::new(
        TlsService::new(
            config,
            MemoryBlobStore::new(),
            Box::new(SystemEntropy::new()),
            clock.clock(),
        )
        .unwrap()
        // The first connection's observer call panics.
        .with_observer(move |e| {
            if matches!(e, opsdata_io::ServiceEvent::Connected { .. })
                && !p.swap(true, Ordering::SeqCst)
            {
                panic!("observer panics");
            }
        }),
    );
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let frame = records::frames(tenant(WS_A), pki.now, 0, &mut next_id).remove(0);
    assert!(deliver_eventually(&pki, handle.addr(), &frame));
    assert!(panicked.load(Ordering::SeqCst));
    handle.stop();
}

#[test]
fn regression_stop_returns_for_a_service_listening_on_the_wildcard_address() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "0.0.0.0:0".parse().unwrap());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        handle.stop();
        let _ = done_tx.send(());
    });
    // Generous: stop returns at once when it can wake its accept.
    assert!(
        done_rx.recv_timeout(StdDuration::from_secs(10)).is_ok(),
        "stop did not return"
    );
}

/// Regression: the certificate was checked only when the connection was
/// made, so a kept connection went on being served after it expired.
#[test]
fn regression_a_kept_connection_is_not_served_past_its_certificates_expiry() {
    let pki = Pki::new();
    let clock = FakeClock::new(pki.now);
    let svc = service(&pki, &clock);
    let handle = listen(&svc, "127.0.0.1:0".parse().unwrap());
    let id = identity(&pki.agent(WS_A));
    let a = tenant(WS_A);
    let mut frames = records::frames(a, pki.now, 0, &mut next_id).into_iter();
    let (first, second) = (frames.next().unwrap(), frames.next().unwrap());
    let mut agent = agent(
        transport(&pki, handle.addr(), &id),
        DeliveryPolicy::default(),
    );
    agent.push(pki.now, first.clone()).unwrap();
    assert!(agent.transport().is_connected());
    assert!(stored(&svc, a, first.batch_id()).is_some());

    // A year and a day later (the certificate is valid for a year), on the
    // same connection.
    clock.set(pki.now + Duration::days(366));
    agent.push(pki.now, second.clone()).unwrap();
    let evs = events(&mut agent);
    assert!(
        !evs.iter().any(|e| matches!(
            e,
            DeliveryEvent::Delivered { batch_id, .. } if *batch_id == second.batch_id()
        )),
        "{evs:?}"
    );
    assert!(stored(&svc, a, second.batch_id()).is_none());
    assert_eq!(agent.outbox().held_batches(), 1, "kept for a retry");
    drop(handle);
}
