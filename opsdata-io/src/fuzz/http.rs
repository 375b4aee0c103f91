//! `http_request`: the ingest service's HTTP request path on arbitrary
//! requests.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use chrono::DateTime;
use http_body_util::BodyExt;
use opsdata::{
    BatchId, Codec, DataType, Decoded, DeterministicEntropy, FrameDecoder, FrameEncoder,
    FrameLimits, KeyMaterial, MemoryKeyStore, ObjectKey, Outcome, Performance, Record,
    RotationPolicy, Tagged, TenantBatch, TenantId, WrappingKey,
};
use rustls_pki_types::CertificateDer;
use tower::ServiceExt;

use crate::blobs::{AsyncBlobStore, MemoryBlobs};
use crate::service::{ClientAuth, IngestService, ServiceLimits};
use crate::wire::{ACK_LEN, Ack, FRAMES_CONTENT_TYPE, FRAMES_PATH};

/// The enrollment CA of the fuzzed service (DER), made by
/// `opsdata-io/tests/fuzz_corpus.rs` (`http_request_certificates`) with
/// the tests' PKI helpers, valid 2026-11-22 to 2036-11-20.
const ENROLLMENT_CA: &[u8] = include_bytes!("enrollment-ca.der");
/// An agent certificate of workspace [`WORKSPACE`] under it, valid
/// 2026-11-22 to 2027-11-23.
const AGENT: &[u8] = include_bytes!("agent.der");
/// The workspace (tenant) of [`AGENT`].
pub const WORKSPACE: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
/// Another tenant: its frames are never stored.
const OTHER: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
/// A third, named by no certificate.
const THIRD: &str = "00000000-0000-4000-8000-00000000000c";

/// 2026-11-23T12:00:00Z: the service's clock, fixed.
const NOW: i64 = 1_795_435_200;

/// The largest body of the small service (bit 3 of byte 1).
const SMALL_BODY: usize = 600;

/// At most this many frames in a built body.
const MAX_FRAMES: usize = 16;

/// Executions served by one pair of services before they are built
/// afresh: their stores keep every frame delivered (so that a delivered
/// ack can always be checked against the store, duplicates included),
/// and this bounds that memory.
const SERVICE_USES: u32 = 2_000;

/// What is built once per process (per thread): the runtime, two services (default
/// limits, and a small body limit; rebuilt every [`SERVICE_USES`]
/// executions), the client's identity.
struct World {
    runtime: tokio::runtime::Runtime,
    /// The services and how many executions they served.
    services: std::cell::RefCell<(Services, u32)>,
    auth: ClientAuth,
    tenants: [TenantId; 3],
}

/// Two services and their routers.
type Services = [(IngestService<MemoryBlobs>, Router); 2];

/// The two services: default limits, and a 600-byte body limit.
fn services() -> Services {
    let now = DateTime::from_timestamp(NOW, 0).expect("in range");
    let service = |limits: ServiceLimits| {
        let svc = IngestService::builder(MemoryBlobs::new())
            .clock(std::sync::Arc::new(move || now))
            .limits(limits)
            .key_store(
                MemoryKeyStore::new(),
                WrappingKey::new(1, KeyMaterial::from_bytes([7; 32])),
            )
            .provisioning(RotationPolicy::default())
            .entropy(|| Box::new(DeterministicEntropy::from_u64(16)))
            .build()
            .expect("a service");
        let router = svc.router();
        (svc, router)
    };
    let small = ServiceLimits::default()
        .with_max_body_bytes(SMALL_BODY)
        .expect("a valid limit");
    [service(ServiceLimits::default()), service(small)]
}

/// One per thread (the fuzzer has one; a test binary's threads must not
/// see each other's requests), made on first use and kept.
fn world() -> &'static World {
    thread_local! {
        static WORLD: &'static World = Box::leak(Box::new(make_world()));
    }
    WORLD.with(|w| *w)
}

fn make_world() -> World {
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let now = DateTime::from_timestamp(NOW, 0).expect("in range");
        let ca = opsdata::EnrollmentCa::new(&[CertificateDer::from(ENROLLMENT_CA)])
            .expect("the fuzz CA");
        let auth = ClientAuth::authenticate(&ca, &[CertificateDer::from(AGENT).into_owned()], now)
            .expect("the fuzz agent certificate is valid at the fixed time");
        let tenant = |s: &str| s.parse::<TenantId>().expect("a tenant id");
        World {
            runtime,
            services: std::cell::RefCell::new((services(), 0)),
            auth,
            tenants: [tenant(WORKSPACE), tenant(OTHER), tenant(THIRD)],
        }
    }
}

/// A body built from descriptors, three bytes a frame: `[sel, id, dmg]`.
/// `sel` bits 0–1: the tenant (0, 1: the client's; 2: another; 3: a
/// third), bits 2–3: records (Performance only; other types empty), bits
/// 4–6: the data type (mod 6), bit 7: compressed. `id`: the batch id's
/// low byte (the high bits count executions, so ids repeat only within a
/// request). `dmg`: 0 none; else the byte at `dmg × 7` (mod the length)
/// is flipped, and with bit 7 the frame is cut in half.
fn built_body(world: &World, exec: u64, descriptors: &[u8]) -> Vec<u8> {
    let now = DateTime::from_timestamp(NOW, 0).expect("in range");
    let mut body = Vec::new();
    for d in descriptors.chunks_exact(3).take(MAX_FRAMES) {
        let (sel, id, dmg) = (d[0], d[1], d[2]);
        let tenant = world.tenants[usize::from(sel & 3).saturating_sub(1)];
        let data_type = DataType::ALL[usize::from((sel >> 4) & 7) % 6];
        let records = if data_type == DataType::Performance {
            (sel >> 2) & 3
        } else {
            0
        };
        let recs = (0..records).map(|i| {
            Tagged::new(
                tenant,
                Record::from(Performance {
                    object_name: "Processor".into(),
                    counter_name: "% Processor Time".into(),
                    perfmon_instance_name: format!("cpu{i}"),
                    performance_data_id: uuid::Uuid::from_u128(u128::from(i) + 1),
                    performance_source_internal_id: 7,
                    sample_value: f64::from(i),
                    time_sampled: now,
                    time_added: now,
                }),
            )
        });
        let batch = TenantBatch::from_records(tenant, data_type, recs).expect("one tenant");
        let id = BatchId::new(uuid::Uuid::from_u128(
            (u128::from(exec) << 8 | u128::from(id)) + 1,
        ))
        .expect("not nil");
        let codec = if sel & 0x80 != 0 {
            Codec::Deflate
        } else {
            Codec::None
        };
        let frame = FrameEncoder::new()
            .with_codec(codec)
            .encode_frame(&batch, id, now)
            .expect("a small batch encodes");
        let mut bytes = frame.into_bytes().to_vec();
        if dmg != 0 {
            let at = usize::from(dmg & 0x7f) * 7 % bytes.len();
            bytes[at] ^= 0x55;
            if dmg & 0x80 != 0 {
                bytes.truncate(bytes.len() / 2);
            }
        }
        body.extend_from_slice(&bytes);
    }
    body
}

/// The frames the core's decoder reads from the start of `body` (with
/// the service's limits), as (batch id, tenant), up to the first bytes
/// that are not a frame; and whether the whole body was frames.
fn frames_in(body: &[u8]) -> (Vec<(BatchId, TenantId)>, bool) {
    let mut decoder = FrameDecoder::new(FrameLimits::default());
    decoder.push(body);
    let mut out = Vec::new();
    loop {
        match decoder.poll_frame() {
            Ok(Decoded::Frame(f)) => out.push((f.batch_id(), f.tenant())),
            Ok(Decoded::NeedMore(_)) => return (out, decoder.buffered() == 0),
            Err(_) => return (out, false),
        }
    }
}

/// The ingest service's HTTP request path: a request built from the input
/// is sent to the service's `axum::Router` (built once per process, over
/// [`MemoryBlobs`], an in-memory key store with provisioning, a fixed
/// clock and deterministic entropy, on a current-thread runtime), the
/// client's identity injected as a [`ClientAuth`] extension as a host's
/// TLS stack does. The request goes to the Router directly (`oneshot`),
/// not as raw HTTP/1.1 bytes through hyper: the HTTP parser is hyper's
/// (fuzzed by hyper), and the service's own code starts at the Router;
/// this keeps an execution in the microseconds.
///
/// Input: byte 0: bits 0–1 the method (POST, POST, GET, PUT), bits 2–4
/// the path (0–4 `/v1/frames`, 5 `/healthz`, 6 `/metrics`, 7 another),
/// bit 5 `Content-Type: application/vnd.opsdata.frames`, else with bit 6
/// `text/plain`, else none; bit 7 authenticated (the `ClientAuth`), else
/// not. Byte 1: bit 0 the body is the rest of the input as it is, else
/// built from descriptors (`built_body`: real frames of the client's
/// tenant or others, damaged or cut or not); bit 1 `Content-Length` as
/// the body's; bit 2 a `Content-Length` one past the service's limit;
/// bit 3 the service with a 600-byte body limit.
///
/// Checks: no panic; a frames request (`POST /v1/frames`) is answered
/// with a status of `docs/WIRE.md`'s table; a 200's body is a whole
/// number of acks, one per frame of the body, for those frames in order;
/// a 400's acks are those of the frames read before the bad bytes then
/// one rejected (none at all for an empty body); 401, 408, 413 and 415 have empty bodies; a 429's acks
/// are all throttled, a 503's all transient; a frame of another tenant is
/// never acked delivered; and what is stored afterwards is exactly the
/// frames acked delivered that were not stored before (none for a status
/// without delivered acks), never anything under another tenant.
pub fn http_request(data: &[u8]) {
    static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
    let Some((&[a, b], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let world = world();
    let exec = EXECUTIONS.fetch_add(1, Ordering::Relaxed);
    let body: Bytes = if b & 1 == 1 {
        Bytes::copy_from_slice(rest)
    } else {
        Bytes::from(built_body(world, exec, rest))
    };
    let mut services = world.services.borrow_mut();
    services.1 += 1;
    if services.1 > SERVICE_USES {
        *services = (self::services(), 1);
    }
    let (svc, router) = &services.0[usize::from(b >> 3 & 1)];
    let method = match a & 3 {
        0 | 1 => Method::POST,
        2 => Method::GET,
        _ => Method::PUT,
    };
    let path = match (a >> 2) & 7 {
        0..=4 => FRAMES_PATH,
        5 => "/healthz",
        6 => "/metrics",
        _ => "/v1/other",
    };
    let frames_request = method == Method::POST && path == FRAMES_PATH;
    let mut req = Request::builder().method(method).uri(path);
    if a & 0x20 != 0 {
        req = req.header(header::CONTENT_TYPE, FRAMES_CONTENT_TYPE);
    } else if a & 0x40 != 0 {
        req = req.header(header::CONTENT_TYPE, "text/plain");
    }
    if b & 2 != 0 {
        req = req.header(header::CONTENT_LENGTH, body.len());
    } else if b & 4 != 0 {
        req = req.header(header::CONTENT_LENGTH, svc.limits().max_body_bytes() + 1);
    }
    let mut req = req.body(Body::from(body.clone())).expect("a request");
    if a & 0x80 != 0 {
        req.extensions_mut().insert(world.auth.clone());
    }
    let [own, other, third] = world.tenants;

    // The batches of the body's frames (as far as they can be read) that
    // are stored already: a delivered ack for one of them stores nothing.
    let (frames, whole) = frames_in(&body);
    let store = svc.store();
    world.runtime.block_on(async {
        let stored = |id: BatchId| async move {
            store
                .get(own, ObjectKey::for_batch(id))
                .await
                .expect("the store reads back")
                .is_some()
        };
        let mut already = Vec::new();
        for (id, _) in &frames {
            if stored(*id).await {
                already.push(*id);
            }
        }
        let count_before = store.count(own);
        let response = router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let out = response
            .into_body()
            .collect()
            .await
            .expect("a body in memory")
            .to_bytes();
        for t in [other, third] {
            assert_eq!(store.count(t), 0, "stored under a tenant the client is not");
        }
        let acks = if frames_request
            && matches!(status.as_u16(), 200 | 400 | 429 | 503)
            && out.len() % ACK_LEN == 0
        {
            out.chunks_exact(ACK_LEN)
                .map(|c| Ack::decode(c.try_into().expect("26 bytes")).expect("a valid ack"))
                .collect()
        } else {
            Vec::new()
        };
        // Stored now: what was, and the frames acked delivered, each once.
        let mut delivered: Vec<BatchId> = acks
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered)
            .filter_map(|a| a.batch_id)
            .collect();
        for id in &delivered {
            assert!(stored(*id).await, "acked delivered but not stored");
        }
        delivered.sort_unstable();
        delivered.dedup();
        delivered.retain(|id| !already.contains(id));
        assert_eq!(
            store.count(own),
            count_before + delivered.len(),
            "stored other than what was acked delivered ({status})"
        );
        if frames_request {
            check_frames_answer(status, &out, &acks, (&frames, whole), body.is_empty(), own);
        } else {
            assert!(
                matches!(status.as_u16(), 200 | 404 | 405),
                "{status} for another route"
            );
        }
    });
}

/// The status and body of a frames request against `docs/WIRE.md`.
fn check_frames_answer(
    status: StatusCode,
    out: &[u8],
    acks: &[Ack],
    (frames, whole): (&[(BatchId, TenantId)], bool),
    empty: bool,
    own: TenantId,
) {
    match status.as_u16() {
        200 => {
            assert_eq!(out.len() % ACK_LEN, 0, "a 200's body is acks");
            assert!(whole && !empty, "200 for bytes that are not frames");
            assert_eq!(acks.len(), frames.len(), "one ack per frame");
            for (ack, (id, tenant)) in acks.iter().zip(frames) {
                assert_eq!(ack.batch_id, Some(*id), "acks out of order");
                if *tenant != own {
                    assert_ne!(ack.outcome, Outcome::Delivered, "another tenant's frame");
                }
            }
        }
        400 => {
            assert_eq!(out.len() % ACK_LEN, 0, "a 400's body is acks");
            if empty {
                // No frame, no bad bytes: nothing to answer.
                assert!(acks.is_empty(), "acks for an empty body");
                return;
            }
            let (last, read) = acks.split_last().expect("a 400 names the bad frame");
            assert_eq!(last.outcome, Outcome::Rejected, "the bad frame is rejected");
            assert_eq!(read.len(), frames.len(), "one ack per frame read");
            for (ack, (id, tenant)) in read.iter().zip(frames) {
                assert_eq!(ack.batch_id, Some(*id), "acks out of order");
                if *tenant != own {
                    assert_ne!(ack.outcome, Outcome::Delivered, "another tenant's frame");
                }
            }
        }
        401 | 408 | 413 | 415 => assert!(out.is_empty(), "{status} with a body"),
        429 => assert!(
            acks.iter()
                .all(|a| matches!(a.outcome, Outcome::Throttled { .. })),
            "a 429 with acks other than throttled"
        ),
        503 => assert!(
            acks.iter().all(|a| a.outcome == Outcome::Transient),
            "a 503 with acks other than transient"
        ),
        _ => panic!("{status}: not a status of docs/WIRE.md"),
    }
}

/// The seed corpus of [`http_request`]: valid requests with real frames
/// (built, and raw bytes of frames made by the core's [`FrameEncoder`]),
/// the client's and other tenants' frames, damaged and cut frames,
/// duplicate ids, bodies over the limits, no identity, wrong or missing
/// content types, empty and garbage bodies, the other routes.
pub fn http_request_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // POST /v1/frames, the right content type, authenticated.
    const OK: u8 = 0xa0;
    let built = |a: u8, b: u8, d: &[u8]| [&[a, b][..], d].concat();
    let raw_frames = {
        let now = DateTime::from_timestamp(NOW, 0).expect("in range");
        let own: TenantId = WORKSPACE.parse().expect("a tenant id");
        let mut v = vec![OK, 0x03];
        for n in 1..=3u128 {
            let batch = TenantBatch::new(own, DataType::ALL[n as usize]);
            let id = BatchId::new(uuid::Uuid::from_u128(0xfeed_0000 + n)).expect("not nil");
            let f = FrameEncoder::new()
                .encode_frame(&batch, id, now)
                .expect("an empty batch encodes");
            v.extend_from_slice(f.as_bytes());
        }
        v
    };
    vec![
        (
            "built-own-frames",
            built(OK, 0x02, &[0x44, 1, 0, 0xcc, 2, 0, 0x20, 3, 0]),
        ),
        (
            "built-other-tenants",
            built(OK, 0x02, &[0x44, 1, 0, 0x46, 2, 0, 0x47, 3, 0]),
        ),
        (
            "built-damaged-middle",
            built(OK, 0x00, &[0x44, 1, 0, 0x48, 2, 5, 0x44, 3, 0]),
        ),
        (
            "built-damaged-header",
            built(OK, 0x00, &[0x44, 1, 1, 0x44, 2, 0]),
        ),
        (
            "built-cut-last",
            built(OK, 0x02, &[0x44, 1, 0, 0x4c, 2, 0x85]),
        ),
        (
            "built-duplicate-ids",
            built(OK, 0x02, &[0x44, 9, 0, 0x44, 9, 0, 0x44, 9, 0]),
        ),
        (
            "built-over-small-limit",
            built(OK, 0x08, &[0x4c, 1, 0, 0x4c, 2, 0, 0x4c, 3, 0]),
        ),
        ("declared-over-limit", built(OK, 0x04, &[0x44, 1, 0])),
        ("no-identity", built(0x20, 0x02, &[0x44, 1, 0])),
        ("wrong-content-type", built(0xc0, 0x02, &[0x44, 1, 0])),
        ("no-content-type", built(0x80, 0x02, &[0x44, 1, 0])),
        ("raw-empty-body", vec![OK, 0x01]),
        (
            "raw-garbage",
            [&[OK, 0x01][..], b"not a frame at all"].concat(),
        ),
        ("raw-frames", raw_frames),
        ("get-frames", built(0xa2, 0x02, &[0x44, 1, 0])),
        ("healthz", vec![0x96, 0x01]),
        ("metrics", vec![0x9a, 0x01]),
        ("other-path", vec![0x9c, 0x01]),
    ]
}
