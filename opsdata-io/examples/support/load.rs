//! The load the benchmarks send: frames of Performance records, each sent
//! under a fresh batch id by agents' HTTPS transports (one HTTP/2
//! connection per agent, requests multiplexed on it), spread over the
//! service nodes given.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use opsdata::{
    BatchId, DataType, FIXED_HEADER_LEN, Frame, FrameEncoder, FrameHeader, FrameLimits, Outcome,
    Performance, Record, Tagged, TenantBatch, TenantId, Transmit,
};
use opsdata_io::{AsyncTransport, HttpsSettings, HttpsTransport, TlsIdentity};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use uuid::Uuid;

use super::pki;

/// A frame of `records` Performance records (~330 bytes of JSON each).
pub fn template(t: TenantId, records: usize) -> Frame {
    let now = Utc::now();
    let recs = (0..records).map(|i| {
        Tagged::new(
            t,
            Record::Performance(Performance {
                object_name: "Processor".into(),
                counter_name: "% Processor Time".into(),
                perfmon_instance_name: format!("_Total-{i}"),
                performance_data_id: Uuid::new_v4(),
                performance_source_internal_id: i32::try_from(i).unwrap_or(i32::MAX),
                sample_value: i as f64 * 0.37,
                time_sampled: now,
                time_added: now,
            }),
        )
    });
    let batch = TenantBatch::from_records(t, DataType::Performance, recs).expect("a batch");
    FrameEncoder::new()
        .encode_frame(
            &batch,
            BatchId::from_random_bytes(*Uuid::new_v4().as_bytes()),
            now,
        )
        .expect("a frame")
}

/// `frame` under a fresh batch id: the header re-encoded, its CRC
/// recomputed, the body as it is.
pub fn restamp(frame: &Frame) -> Bytes {
    let mut h: FrameHeader = *frame.header();
    h.batch_id = BatchId::from_random_bytes(*Uuid::new_v4().as_bytes());
    let head = h.encode();
    let mut b = frame.as_bytes().to_vec();
    b[..FIXED_HEADER_LEN].copy_from_slice(&head);
    b[FIXED_HEADER_LEN..FIXED_HEADER_LEN + 4]
        .copy_from_slice(&crc32fast::hash(&head).to_be_bytes());
    Bytes::from(b)
}

/// What a run delivered.
pub struct RunResult {
    /// Frames answered delivered.
    pub frames: u64,
    /// Requests failed or not delivered.
    pub errors: u64,
    /// Each request's time.
    pub latencies: Vec<Duration>,
}

/// Sends for `duration`: connection `c` goes to `addrs[c % addrs.len()]`
/// as agent `c % agents.len()`, with `in_flight` requests at a time.
pub async fn run(
    addrs: &[SocketAddr],
    service_ca: &pki::Ca,
    agents: &[pki::Issued],
    templates: &[Frame],
    (connections, in_flight): (usize, usize),
    duration: Duration,
) -> Result<RunResult, Box<dyn Error>> {
    let deadline = Instant::now() + duration;
    let limits = FrameLimits::default();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let tenant = c % agents.len();
        // One agent transport per connection: the agent's own HTTPS client
        // (one HTTP/2 connection, requests multiplexed on it).
        let transport = transport(addrs[c % addrs.len()], service_ca, &agents[tenant])?;
        for _ in 0..in_flight {
            let template = templates[tenant].clone();
            let transport = transport.clone();
            tasks.spawn(async move {
                let mut res = RunResult {
                    frames: 0,
                    errors: 0,
                    latencies: Vec::new(),
                };
                while Instant::now() < deadline {
                    let frame = Frame::decode(restamp(&template), &limits).expect("a frame");
                    let tx = Transmit {
                        tenant: frame.tenant(),
                        batch_id: frame.batch_id(),
                        attempt: 1,
                        frame,
                    };
                    let t = Instant::now();
                    let outcome = transport.send(&tx).await;
                    res.latencies.push(t.elapsed());
                    match outcome {
                        Outcome::Delivered => res.frames += 1,
                        _ => res.errors += 1,
                    }
                }
                res
            });
        }
    }
    let mut all = RunResult {
        frames: 0,
        errors: 0,
        latencies: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let r = r?;
        all.frames += r.frames;
        all.errors += r.errors;
        all.latencies.extend(r.latencies);
    }
    Ok(all)
}

/// The agent's HTTPS transport for `agent`'s certificate, trusting the
/// service's CA, HTTP/2 offered first.
pub fn transport(
    addr: SocketAddr,
    service_ca: &pki::Ca,
    agent: &pki::Issued,
) -> Result<HttpsTransport, Box<dyn Error>> {
    let settings = HttpsSettings::new(addr, "localhost", vec![service_ca.der.clone()])?;
    let identity = TlsIdentity::new(
        vec![agent.der.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(agent.key_der.clone())),
    )?;
    Ok(HttpsTransport::new(settings, Arc::new(identity)))
}
