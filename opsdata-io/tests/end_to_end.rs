//! The whole path with nothing stubbed: the async agent (`AsyncAgent`)
//! over a `FileSpool` sealed at rest, sending through `HttpsTransport` (one
//! HTTP/2 connection, four requests in flight) to the real `IngestService`
//! served over mutual TLS, which seals and stores each batch. Every batch
//! pushed is stored exactly once and acknowledged, and the spool is empty
//! afterwards, also across a reopen.

// Tests may read the wall clock and draw random ids.
#![allow(clippy::disallowed_methods)]

mod service_support;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use opsdata::{DeliveryEvent, DeliveryPolicy, Spool};
use opsdata_io::{
    AgentEvent, AgentSettings, AsyncAgent, FileSpool, HttpsSettings, HttpsTransport, KeyFileStore,
    SpoolConfig, SpoolProtection, system_clock,
};
use service_support::*;

fn open_spool(dir: &std::path::Path) -> (FileSpool, opsdata_io::SpoolRecovery) {
    let config = SpoolConfig::new(256 << 20)
        .unwrap()
        .with_sealed_at_rest(true)
        .unwrap();
    let protection = SpoolProtection::new(KeyFileStore::new(dir.join("spool.key")), system_clock());
    FileSpool::open_protected(dir.join("spool"), config, protection).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_delivers_through_the_real_service_and_its_spool_drains() {
    tokio::time::timeout(StdDuration::from_secs(120), async {
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

        let dir = std::env::temp_dir().join(format!("opsdata-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (spool, found) = open_spool(&dir);
        assert_eq!(found.frames, 0);
        let settings =
            HttpsSettings::new(run.addr, "localhost", vec![pki.service_ca.der.clone()]).unwrap();
        let transport = HttpsTransport::new(settings, Arc::new(identity(&pki.agent(WS_A))));
        let policy = DeliveryPolicy::default().with_max_in_flight(4).unwrap();
        let (mut agent, _) =
            AsyncAgent::start(AgentSettings::new(policy, 7), transport.clone(), spool)
                .await
                .unwrap();

        let frames: Vec<_> = (0..24).map(|_| frame(a, 3)).collect();
        for f in &frames {
            agent.push(f.clone()).await.unwrap();
        }
        let mut delivered = std::collections::BTreeSet::new();
        while delivered.len() < frames.len() {
            match agent.next_event().await {
                Some(AgentEvent::Delivery(DeliveryEvent::Delivered { batch_id, .. })) => {
                    assert!(delivered.insert(batch_id), "delivered twice: {batch_id}");
                }
                Some(AgentEvent::Delivery(DeliveryEvent::Dropped {
                    batch_id, reason, ..
                })) => {
                    panic!("{batch_id} dropped: {reason:?}")
                }
                Some(_) => {}
                None => panic!("the agent stopped"),
            }
        }
        let mut spool = agent.shutdown().await.unwrap();

        // Each batch stored once, sealed, by the service; none left behind.
        assert_eq!(
            delivered,
            frames.iter().map(opsdata::Frame::batch_id).collect()
        );
        assert_eq!(svc.store().inner.count(a), frames.len());
        assert_eq!(svc.stats(a).duplicates, 0);
        assert_eq!(
            metric(&svc.metrics_text(), "opsdata_frames_stored_total"),
            frames.len() as f64
        );
        let stats = transport.stats();
        assert_eq!((stats.connects, stats.http2_connects), (1, 1));
        let mut left = 0;
        spool.load(&mut |_| left += 1).unwrap();
        assert_eq!(left, 0);
        drop(spool);
        let (_, found) = open_spool(&dir);
        assert_eq!((found.frames, found.held_bytes), (0, 0));

        run.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("the test finished within two minutes");
}
