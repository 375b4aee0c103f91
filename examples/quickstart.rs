//! The main job on embedded defaults: the whole pipeline, agent to storage.
//!
//! Two workspaces' agents collect records of every type, tagged with their
//! workspace; a `Batcher` closes them into per-tenant, per-type batches;
//! the `FrameEncoder` writes OPSF frames; an `Agent` (an `Outbox` with an
//! in-memory spool) delivers them through a transport that signs each
//! request with the workspace key; the "service" verifies the signature,
//! derives the principal and runs `Ingest` (decode, tenant check,
//! validation, de-duplication, sealing under the tenant's key), storing
//! into an in-memory `BlobStore`. Every stored object is then read back and
//! opened with its tenant's key ring. A short summary is printed.
//!
//! Run with `cargo run --release --example quickstart`.

// An example may read the wall clock and draw random ids; the library never does.
#![allow(clippy::disallowed_methods)]

#[path = "support/records.rs"]
mod records;

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::io::Write;

use chrono::{DateTime, Utc};
use opsdata::{
    Agent, AuthPolicy, BatchId, Batcher, BatcherConfig, BlobStore, DataType, DeliveryEvent,
    DeliveryPolicy, EnrollmentKey, FrameEncoder, FrameLimits, Ingest, IngestConfig, KeyCensus,
    KeyRing, MemoryBlobStore, MemorySpool, Outbox, Outcome, Principal, RecordLimits,
    RotationPolicy, SystemEntropy, Tagged, TenantId, Transmit, Transport, WorkspaceKeys,
    apply_store_op, claimed_workspace, peek, read_back, sign_data_collector, verify_data_collector,
};
use uuid::Uuid;

/// The service side, reached through a transport that signs each request.
struct Service {
    /// Each workspace's shared key, as the agent holds it (Base64).
    agent_keys: HashMap<TenantId, String>,
    /// The same keys, as the service holds them.
    workspace_keys: HashMap<TenantId, WorkspaceKeys>,
    rings: HashMap<TenantId, KeyRing>,
    ingest: Ingest,
    store: MemoryBlobStore,
    entropy: SystemEntropy,
    refused: usize,
}

impl Transport for Service {
    fn send(&mut self, now: DateTime<Utc>, tx: &Transmit) -> Outcome {
        // Agent side: sign the request with the workspace key.
        let body = tx.frame.as_bytes();
        let key = EnrollmentKey::from_base64(&self.agent_keys[&tx.tenant]).expect("a valid key");
        let signed = sign_data_collector(tx.tenant, &key, now, body);
        // Service side: find the keys of the workspace the request claims,
        // verify, derive the principal, ingest, store.
        let Some(keys) = claimed_workspace(&signed.authorization)
            .ok()
            .and_then(|claimed| self.workspace_keys.get(&claimed))
        else {
            return Outcome::Rejected;
        };
        let verified = match verify_data_collector(
            keys,
            &signed.authorization,
            &signed.x_ms_date,
            body,
            &AuthPolicy::default(),
            now,
        ) {
            Ok(v) => v,
            // A refused signature is a clock or key problem, not bad data:
            // the agent keeps the batch and retries (Rejected would drop it).
            Err(_) => {
                self.refused += 1;
                return Outcome::Transient;
            }
        };
        let principal = Principal::from_signature(&verified);
        let ring = self
            .rings
            .get_mut(&principal.tenant())
            .expect("a ring per tenant");
        let Ok(report) = self
            .ingest
            .handle_request(now, &principal, ring, &mut self.entropy, body)
        else {
            return Outcome::Transient;
        };
        // Apply every operation; one that fails is handed back, so the
        // agent's retry is stored rather than taken for a duplicate.
        let mut failed = false;
        while let Some(op) = self.ingest.poll_store() {
            if apply_store_op(&mut self.store, &op).is_err() {
                self.ingest.handle_store_failed(&op);
                failed = true;
            }
        }
        if failed {
            return Outcome::Transient;
        }
        match (report.answers.first(), report.stopped) {
            (Some(answer), None) => answer.outcome,
            _ => Outcome::Rejected,
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let now = Utc::now();
    let tenants: [TenantId; 2] = [
        "0f8fad5b-d9cb-469f-a165-70867728950e".parse()?,
        "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse()?,
    ];
    let mut entropy = SystemEntropy::new();
    let rotation = RotationPolicy::default();

    // The service: a workspace key and a key ring per tenant.
    let mut service = Service {
        agent_keys: HashMap::new(),
        workspace_keys: HashMap::new(),
        rings: HashMap::new(),
        ingest: Ingest::new(IngestConfig::default()),
        store: MemoryBlobStore::new(),
        entropy: SystemEntropy::new(),
        refused: 0,
    };
    for &tenant in &tenants {
        let mut raw = [0u8; 64];
        opsdata::Entropy::fill(&mut entropy, &mut raw)?;
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(raw);
        service.workspace_keys.insert(
            tenant,
            WorkspaceKeys::new(tenant, EnrollmentKey::from_base64(&text)?),
        );
        service.agent_keys.insert(tenant, text);
        let mut ring = KeyRing::new(tenant, &rotation);
        // What the rotation policy asks for a new tenant: a key, promoted.
        for _ in 0..2 {
            for action in rotation.evaluate(&ring, &KeyCensus::new(), now) {
                let _ = ring.apply(&action, &mut entropy, now)?;
            }
        }
        service.rings.insert(tenant, ring);
    }

    // The agents: records of every type, tagged, batched, framed, queued.
    let limits = FrameLimits::default();
    let mut batcher = Batcher::new(BatcherConfig::default(), &limits)?;
    let mut collected = 0;
    for (i, &tenant) in tenants.iter().enumerate() {
        for record in records::sample_records(now, i) {
            record.validate(&RecordLimits::default())?;
            batcher.push(now, Tagged::new(tenant, record))?;
            collected += 1;
        }
    }
    batcher.flush(now);
    let mut encoder = FrameEncoder::new();
    let mut agent = Agent::new(
        Outbox::new(DeliveryPolicy::default(), rand_seed()),
        service,
        MemorySpool::new(),
    );
    // (tenant, type) -> (records, payload bytes, frame bytes)
    let mut sent: BTreeMap<(TenantId, DataType), (u32, usize, usize)> = BTreeMap::new();
    while let Some(batch) = batcher.poll_batch() {
        let frame = encoder.encode_closed_frame(&batch, BatchId::new(Uuid::new_v4())?)?;
        let e = sent.entry((frame.tenant(), frame.data_type())).or_default();
        e.0 += frame.header().record_count;
        e.1 += frame.header().content_len as usize;
        e.2 += frame.len();
        agent.push(now, frame)?;
    }
    agent.tick(now)?;
    let events: Vec<DeliveryEvent> = std::iter::from_fn(|| agent.poll_event()).collect();
    let delivered = events
        .iter()
        .filter(|e| matches!(e, DeliveryEvent::Delivered { .. }))
        .count();
    let (_, service, spool) = agent.into_parts();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "tenant                                type            records  JSON bytes  frame bytes"
    )?;
    let (mut json, mut framed) = (0, 0);
    for ((tenant, data_type), (records, content, bytes)) in &sent {
        writeln!(
            out,
            "{tenant}  {:<14}  {records:>7}  {content:>10}  {bytes:>11}",
            data_type.to_string()
        )?;
        json += content;
        framed += bytes;
    }
    writeln!(
        out,
        "{collected} records in {} frames: {json} bytes of JSON in {framed} frame bytes ({:.1}:1 with headers)",
        sent.len(),
        json as f64 / framed as f64
    )?;
    writeln!(
        out,
        "delivered {delivered}, refused {}, still in the spool {}",
        service.refused,
        spool.len()
    )?;
    // What the service stored: sealed, per tenant, under which key; each
    // object read back and opened with its own tenant's ring.
    for tenant in tenants {
        let ring = &service.rings[&tenant];
        let objects = service.store.list(tenant)?;
        let mut by_key: BTreeMap<u32, usize> = BTreeMap::new();
        let mut records = 0;
        for object in &objects {
            let bytes = service.store.get(tenant, *object)?.expect("listed");
            let kek = peek(&bytes)?.kek_id.expect("stored sealed").get();
            *by_key.entry(kek).or_default() += 1;
            let frame = read_back(&service.store, tenant, *object, ring, &limits)?.expect("listed");
            records += frame.records(&limits)?.len();
        }
        let stats = service.ingest.stats(tenant);
        writeln!(
            out,
            "stored for {tenant}: {} sealed objects ({records} records read back), key id(s) {:?}; {} duplicate(s), {} rejected",
            objects.len(),
            by_key,
            stats.duplicates,
            stats.rejected
        )?;
    }
    Ok(())
}

/// A seed for the outbox's retry jitter, from the OS.
fn rand_seed() -> u64 {
    u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"))
}
