//! `ObjectStoreBlobs` against the local filesystem and against Azurite, the
//! Azure Storage emulator (installed with npm into the target directory on
//! first use; see `docs/BLOBS.md`). The same behavioural checks run on both.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use opsdata::{
    AuthPolicy, BatchId, BlobStore, DataType, DeterministicEntropy, EnrollmentKey, Frame,
    FrameEncoder, FrameLimits, Ingest, IngestConfig, IngestError, KeyRing, ObjectKey, Outcome,
    Performance, Principal, Record, RotationPolicy, Tagged, TenantBatch, TenantId, WorkspaceKeys,
    apply_store_op, read_back, sign_data_collector, verify_data_collector,
};
use opsdata::{CasError, KeyMaterial, RingVersion, WrappingKey};
use opsdata_io::{
    AsyncBlobStore, AsyncKeyStore, BlobError, BlobOp, Lease, LeaseError, LeaseState, LocalDirBlobs,
    ObjectStoreBlobs, ObjectStoreKeyStore, PutOutcome, RingStoreError,
};
use uuid::Uuid;

mod azurite_support;
use azurite_support::TempDir;

// ---------------------------------------------------------------- fixtures

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}
fn a() -> TenantId {
    "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap()
}
fn b() -> TenantId {
    "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
}
fn batch(n: u128) -> BatchId {
    BatchId::new(Uuid::from_u128(n)).unwrap()
}
fn key(n: u128) -> ObjectKey {
    ObjectKey::for_batch(batch(n))
}
fn frame(t: TenantId, n: u128) -> Frame {
    frame_valued(t, n, 12.5)
}
/// Frame `n` of `t` with another sample value: the same batch, other bytes.
fn frame_valued(t: TenantId, n: u128, sample_value: f64) -> Frame {
    let record = Record::from(Performance {
        object_name: "Processor".into(),
        counter_name: "% Processor Time".into(),
        perfmon_instance_name: "_Total".into(),
        performance_data_id: Uuid::from_u128(n),
        performance_source_internal_id: 7,
        sample_value,
        time_sampled: t0(),
        time_added: t0(),
    });
    let batch_records = TenantBatch::from_records(
        t,
        DataType::Performance,
        (0..3).map(|_| Tagged::new(t, record.clone())),
    )
    .unwrap();
    FrameEncoder::new()
        .encode_frame(&batch_records, batch(n), t0())
        .unwrap()
}
fn principal(t: TenantId) -> Principal {
    // 64 bytes of 9, in base64.
    let key = EnrollmentKey::from_base64(
        "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQ==",
    )
    .unwrap();
    let s = sign_data_collector(t, &key, t0(), b"x");
    let v = verify_data_collector(
        &WorkspaceKeys::new(t, key),
        &s.authorization,
        &s.x_ms_date,
        b"x",
        &AuthPolicy::default(),
        t0(),
    )
    .unwrap();
    Principal::from_signature(&v)
}
fn ring(t: TenantId, seed: u64) -> KeyRing {
    let mut e = DeterministicEntropy::from_u64(seed);
    let mut r = KeyRing::new(t, &RotationPolicy::default());
    let k = r.generate(&mut e, t0()).unwrap();
    r.promote(k, t0()).unwrap();
    r
}

/// A directory under the system temp dir, unique to this process and
/// call, removed when dropped.
/// Direct access to the store under an `ObjectStoreBlobs`, to plant
/// objects it would never write.
struct Raw {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Raw {
    fn new(store: Arc<dyn ObjectStore>) -> Raw {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Raw { store, runtime }
    }
    fn put(&self, name: &str, bytes: impl Into<Bytes>) {
        let path = Path::parse(name).unwrap();
        let payload = PutPayload::from(bytes.into());
        self.runtime
            .block_on(self.store.put(&path, payload))
            .unwrap();
    }
    fn exists(&self, name: &str) -> bool {
        let path = Path::parse(name).unwrap();
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("head {name}: {e}"),
        }
    }
}

/// `ObjectStoreBlobs` is async; the behavioural checks drive it through
/// the core's synchronous `BlobStore` (so `apply_store_op` and `read_back`
/// apply) by blocking on a runtime of the test's own.
struct Blocking {
    s: ObjectStoreBlobs,
    rt: tokio::runtime::Runtime,
}

impl Blocking {
    fn new(s: ObjectStoreBlobs) -> Blocking {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Blocking { s, rt }
    }
}

impl Blocking {
    /// The async put's own answer.
    fn create(
        &self,
        tenant: TenantId,
        object: ObjectKey,
        frame: &Frame,
    ) -> Result<PutOutcome, BlobError> {
        self.rt
            .block_on(AsyncBlobStore::put(&self.s, tenant, object, frame))
    }
}

impl std::ops::Deref for Blocking {
    type Target = ObjectStoreBlobs;
    fn deref(&self) -> &ObjectStoreBlobs {
        &self.s
    }
}

impl BlobStore for Blocking {
    type Error = BlobError;
    fn put(&mut self, tenant: TenantId, object: ObjectKey, frame: &Frame) -> Result<(), BlobError> {
        self.create(tenant, object, frame).map(|_| ())
    }
    fn get(&self, tenant: TenantId, object: ObjectKey) -> Result<Option<Bytes>, BlobError> {
        self.rt
            .block_on(AsyncBlobStore::get(&self.s, tenant, object))
    }
    fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>, BlobError> {
        self.rt.block_on(AsyncBlobStore::list(&self.s, tenant))
    }
    fn delete(&mut self, tenant: TenantId, object: ObjectKey) -> Result<(), BlobError> {
        self.rt
            .block_on(AsyncBlobStore::delete(&self.s, tenant, object))
    }
}

// ------------------------------------------------- the behavioural checks

/// Everything a backend must do. `blobs` and `raw` are over the same store;
/// `blobs` has root prefix `root`.
fn check_behaviour(make: &dyn Fn() -> ObjectStoreBlobs, raw: &Raw, root: &str) {
    round_trip(Blocking::new(make()));
    tenants_are_isolated(Blocking::new(make()));
    foreign_objects_are_refused_or_skipped(Blocking::new(make()), raw, root);
    ingest_pipeline(Blocking::new(make()));
    concurrent_inside_a_multi_thread_runtime(make());
    with_small_limits_large_objects_are_not_read(make(), raw, root);
}

fn round_trip(mut s: Blocking) {
    let root = s.root().as_ref().to_owned();
    assert!(s.list(a()).unwrap().is_empty());
    assert_eq!(s.get(a(), key(1)).unwrap(), None);
    s.delete(a(), key(1)).unwrap(); // missing: fine

    let f1 = frame(a(), 1);
    let f2 = frame(a(), 2);
    assert_eq!(s.create(a(), key(2), &f2).unwrap(), PutOutcome::Created);
    assert_eq!(s.create(a(), key(1), &f1).unwrap(), PutOutcome::Created);
    assert_eq!(s.get(a(), key(1)).unwrap().as_ref(), Some(f1.as_bytes()));
    assert_eq!(s.get(a(), key(2)).unwrap().as_ref(), Some(f2.as_bytes()));
    assert_eq!(s.list(a()).unwrap(), vec![key(1), key(2)]);
    // The documented layout.
    let expected = format!("{root}/{}/{}", a(), batch(1));
    assert_eq!(
        s.object_path(a(), key(1)).as_ref(),
        expected.trim_start_matches('/')
    );

    // Put again: create if absent (`PutMode::Create`); the stored object
    // stays, whatever the new bytes.
    assert_eq!(
        s.create(a(), key(1), &f1).unwrap(),
        PutOutcome::AlreadyExists
    );
    let other = frame_valued(a(), 1, 99.0);
    assert_ne!(other.as_bytes(), f1.as_bytes());
    assert_eq!(
        s.create(a(), key(1), &other).unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(s.get(a(), key(1)).unwrap().as_ref(), Some(f1.as_bytes()));
    assert_eq!(s.list(a()).unwrap(), vec![key(1), key(2)]);
    // Deleted, the name can be created again.
    s.delete(a(), key(2)).unwrap();
    assert_eq!(s.create(a(), key(2), &f2).unwrap(), PutOutcome::Created);

    s.delete(a(), key(1)).unwrap();
    assert_eq!(s.get(a(), key(1)).unwrap(), None);
    assert_eq!(s.list(a()).unwrap(), vec![key(2)]);
    s.delete(a(), key(1)).unwrap(); // again: fine
    s.delete(a(), key(2)).unwrap();
    assert!(s.list(a()).unwrap().is_empty());
}

fn tenants_are_isolated(mut s: Blocking) {
    s.put(a(), key(10), &frame(a(), 10)).unwrap();
    s.put(b(), key(20), &frame(b(), 20)).unwrap();
    assert_eq!(s.list(a()).unwrap(), vec![key(10)]);
    assert_eq!(s.list(b()).unwrap(), vec![key(20)]);
    // B's key through A: nothing there.
    assert_eq!(s.get(a(), key(20)).unwrap(), None);
    assert_eq!(s.get(b(), key(10)).unwrap(), None);
    // Deleting B's key through A removes nothing of B's.
    s.delete(a(), key(20)).unwrap();
    assert_eq!(s.list(b()).unwrap(), vec![key(20)]);

    // A frame of B put under A: refused, nothing written.
    let err = s.put(a(), key(21), &frame(b(), 21)).unwrap_err();
    assert!(
        matches!(err, BlobError::WrongTenant { tenant, found } if tenant == a() && found == b()),
        "{err:?}"
    );
    assert_eq!(s.list(a()).unwrap(), vec![key(10)]);
    // A frame put under another batch's key: refused.
    let err = s.put(a(), key(11), &frame(a(), 12)).unwrap_err();
    assert!(
        matches!(err, BlobError::WrongObject { object, found } if object == key(11) && found == batch(12)),
        "{err:?}"
    );
    assert_eq!(s.get(a(), key(11)).unwrap(), None);

    s.delete(a(), key(10)).unwrap();
    s.delete(b(), key(20)).unwrap();
}

fn foreign_objects_are_refused_or_skipped(mut s: Blocking, raw: &Raw, root: &str) {
    let pre = |t: TenantId| {
        if root.is_empty() {
            t.to_string()
        } else {
            format!("{root}/{t}")
        }
    };
    let (pa, pb) = (pre(a()), pre(b()));
    s.put(a(), key(30), &frame(a(), 30)).unwrap();
    // Names under A's prefix that are not A's objects.
    raw.put(&format!("{pa}/not-a-batch"), frame(a(), 31).into_bytes());
    let upper = batch(0x3a).to_string().to_uppercase();
    assert_ne!(upper, batch(0x3a).to_string());
    raw.put(&format!("{pa}/{upper}"), frame(a(), 0x3a).into_bytes());
    let simple = batch(33).as_uuid().simple().to_string();
    raw.put(&format!("{pa}/{simple}"), frame(a(), 33).into_bytes());
    raw.put(
        &format!("{pa}/{}/deeper", batch(34)),
        frame(a(), 34).into_bytes(),
    );
    raw.put(&format!("{pa}/00000000-0000-0000-0000-000000000000"), "nil");
    raw.put(
        &format!("{pa}-other/{}", batch(35)),
        frame(a(), 35).into_bytes(),
    );
    // A canonical name whose bytes are B's frame, and one of garbage.
    raw.put(&format!("{pa}/{}", batch(36)), frame(b(), 36).into_bytes());
    raw.put(&format!("{pa}/{}", batch(37)), frame(a(), 38).into_bytes());
    raw.put(&format!("{pa}/{}", batch(39)), vec![0u8; 100]);
    let mut truncated = frame(a(), 40).into_bytes().to_vec();
    truncated.pop();
    raw.put(&format!("{pa}/{}", batch(40)), truncated);
    let mut extra = frame(a(), 41).into_bytes().to_vec();
    extra.push(0);
    raw.put(&format!("{pa}/{}", batch(41)), extra);
    // Something under B's prefix A's listing must not see.
    raw.put(&format!("{pb}/{}", batch(50)), frame(b(), 50).into_bytes());

    assert_eq!(
        s.list(a()).unwrap(),
        vec![key(30), key(36), key(37), key(39), key(40), key(41)],
        "only canonical batch ids directly under A's prefix"
    );
    assert_eq!(s.list(b()).unwrap(), vec![key(50)]);
    assert!(s.get(a(), key(30)).unwrap().is_some());
    // B's frame filed under A's name: refused, not returned.
    let err = s.get(a(), key(36)).unwrap_err();
    assert!(
        matches!(err, BlobError::Misfiled { tenant, found_tenant, .. } if tenant == a() && found_tenant == b()),
        "{err:?}"
    );
    // A's frame of another batch under this name: refused.
    let err = s.get(a(), key(37)).unwrap_err();
    assert!(
        matches!(err, BlobError::Misfiled { found_batch, .. } if found_batch == batch(38)),
        "{err:?}"
    );
    for n in [39, 40, 41] {
        let err = s.get(a(), key(n)).unwrap_err();
        assert!(matches!(err, BlobError::NotAFrame { .. }), "{n}: {err:?}");
    }
    // Deleting through A never touches the planted names outside A's keys.
    for n in [30, 36, 37, 39, 40, 41] {
        s.delete(a(), key(n)).unwrap();
    }
    assert!(s.list(a()).unwrap().is_empty());
    assert!(raw.exists(&format!("{pa}/not-a-batch")));
    assert!(raw.exists(&format!("{pa}-other/{}", batch(35))));
    assert!(raw.exists(&format!("{pb}/{}", batch(50))));
    s.delete(b(), key(50)).unwrap();
    assert!(!raw.exists(&format!("{pb}/{}", batch(50))));
}

fn ingest_pipeline(mut s: Blocking) {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut ring_a = ring(a(), 1);
    let mut ring_b = ring(b(), 2);
    let mut e = DeterministicEntropy::from_u64(3);
    let mut bytes = Vec::new();
    for n in 60..63 {
        bytes.extend_from_slice(frame(a(), n).as_bytes());
    }
    let report = ingest
        .handle_request(t0(), &principal(a()), &mut ring_a, &mut e, &bytes)
        .unwrap();
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    assert!(
        report
            .answers
            .iter()
            .all(|x| x.outcome == Outcome::Delivered)
    );
    let report = ingest
        .handle_request(
            t0(),
            &principal(b()),
            &mut ring_b,
            &mut e,
            frame(b(), 70).as_bytes(),
        )
        .unwrap();
    assert!(report.stopped.is_none(), "{:?}", report.stopped);
    let mut ops = 0;
    while let Some(op) = ingest.poll_store() {
        apply_store_op(&mut s, &op).unwrap();
        ops += 1;
    }
    assert_eq!(ops, 4);
    assert_eq!(s.list(a()).unwrap(), vec![key(60), key(61), key(62)]);
    assert_eq!(s.list(b()).unwrap(), vec![key(70)]);
    let limits = FrameLimits::default();
    for n in 60..63 {
        let raw = s.get(a(), key(n)).unwrap().unwrap();
        assert_eq!(raw[5] & 1, 1, "stored sealed");
        let back = read_back(&s, a(), key(n), &ring_a, &limits)
            .unwrap()
            .unwrap();
        assert_eq!(back, frame(a(), n));
    }
    let back = read_back(&s, b(), key(70), &ring_b, &limits)
        .unwrap()
        .unwrap();
    assert_eq!(back, frame(b(), 70));
    // A's object through B: not there; with B's ring: does not open.
    assert!(
        read_back(&s, b(), key(60), &ring_b, &limits)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        read_back(&s, a(), key(60), &ring_b, &limits),
        Err(IngestError::Key(_))
    ));
    // The store's errors reach the pipeline as IngestError::Store.
    let wrong = opsdata::StoreOp::Put {
        tenant: a(),
        object: key(70),
        frame: s
            .get(b(), key(70))
            .unwrap()
            .map(|b| Frame::decode(b, &limits).unwrap())
            .unwrap(),
    };
    let err = apply_store_op(&mut s, &wrong).unwrap_err();
    let IngestError::Store(inner) = err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        inner.downcast_ref::<BlobError>(),
        Some(BlobError::WrongTenant { .. })
    ));
    for n in 60..63 {
        s.delete(a(), key(n)).unwrap();
    }
    s.delete(b(), key(70)).unwrap();
}

/// The store is async and has no runtime of its own: it runs inside any
/// tokio runtime, here from many tasks at once on a multi-thread one (and
/// from a `spawn_blocking` thread through the runtime's handle).
fn concurrent_inside_a_multi_thread_runtime(s: ObjectStoreBlobs) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Arc::new(s);
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 80..96 {
            let s = Arc::clone(&s);
            tasks.spawn(async move {
                assert_eq!(
                    s.put(a(), key(n), &frame(a(), n)).await.unwrap(),
                    PutOutcome::Created
                );
                assert_eq!(
                    s.get(a(), key(n)).await.unwrap().unwrap(),
                    frame(a(), n).into_bytes()
                );
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
        assert_eq!(
            s.list(a()).await.unwrap(),
            (80..96).map(key).collect::<Vec<_>>()
        );
        let handle = tokio::runtime::Handle::current();
        let s2 = Arc::clone(&s);
        let listed = tokio::task::spawn_blocking(move || handle.block_on(s2.list(a())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listed.len(), 16);
        for n in 80..96 {
            s.delete(a(), key(n)).await.unwrap();
        }
        assert!(s.list(a()).await.unwrap().is_empty());
        // Racing puts of one name, each with other bytes: exactly one
        // creates, and its bytes are what is stored.
        assert_eq!(racing_puts(&s, &s).await, 1);
        s.delete(a(), key(79)).await.unwrap();
    });
}

/// Eight puts of batch 79 at once, half through `one`, half through `two`
/// (two stores over the same objects, as two nodes), each frame with other
/// bytes: checks that exactly one answered `Created` and that its frame is
/// the one stored; returns how many created.
async fn racing_puts<S: AsyncBlobStore<Error = BlobError>>(one: &Arc<S>, two: &Arc<S>) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u32 {
        let s = Arc::clone(if i % 2 == 0 { one } else { two });
        tasks.spawn(async move {
            let f = frame_valued(a(), 79, f64::from(i));
            let outcome = s.put(a(), key(79), &f).await.unwrap();
            (outcome, f)
        });
    }
    let mut created = Vec::new();
    while let Some(t) = tasks.join_next().await {
        let (outcome, f) = t.unwrap();
        match outcome {
            PutOutcome::Created => created.push(f),
            PutOutcome::AlreadyExists => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one put creates");
    assert_eq!(
        one.get(a(), key(79)).await.unwrap().unwrap(),
        created[0].as_bytes().clone()
    );
    created.len()
}

fn with_small_limits_large_objects_are_not_read(s: ObjectStoreBlobs, raw: &Raw, root: &str) {
    let limits = FrameLimits::default().with_max_body(64).unwrap();
    let s = Blocking::new(s.with_limits(limits));
    let name = s.object_path(a(), key(90));
    assert!(name.as_ref().starts_with(root));
    raw.put(name.as_ref(), vec![0u8; 10_000]);
    let err = s.get(a(), key(90)).unwrap_err();
    assert!(
        matches!(err, BlobError::TooLarge { size: 10_000, .. }),
        "{err:?}"
    );
    let mut s = s;
    s.delete(a(), key(90)).unwrap();
    assert!(!raw.exists(name.as_ref()));
    // Regression: a frame past the store's limits was stored (and answered
    // Delivered by a service) though `get` could never read it back.
    let big = frame(a(), 91);
    assert!(big.header().body_len > 64);
    let err = s.put(a(), key(91), &big).unwrap_err();
    assert!(matches!(err, BlobError::Unreadable { .. }), "{err:?}");
    assert!(!raw.exists(s.object_path(a(), key(91)).as_ref()));
}

// ------------------------------------------------------ local filesystem

#[test]
fn local_filesystem_backend() {
    let dir = TempDir::new("local");
    let raw = Raw::new(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(&dir.0).unwrap(),
    ));
    let d = dir.0.clone();
    check_behaviour(
        &|| {
            ObjectStoreBlobs::local(&d)
                .unwrap()
                .with_root("ops/frames")
                .unwrap()
        },
        &raw,
        "ops/frames",
    );
    // And without a root prefix.
    let dir2 = TempDir::new("local-noroot");
    let raw2 = Raw::new(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(&dir2.0).unwrap(),
    ));
    let d2 = dir2.0.clone();
    check_behaviour(&|| ObjectStoreBlobs::local(&d2).unwrap(), &raw2, "");
}

#[test]
fn local_creates_its_directory_and_lays_objects_out_per_tenant() {
    let dir = TempDir::new("layout");
    let nested = dir.0.join("x/y");
    let mut s = Blocking::new(
        ObjectStoreBlobs::local(&nested)
            .unwrap()
            .with_root("frames")
            .unwrap(),
    );
    s.put(a(), key(1), &frame(a(), 1)).unwrap();
    let file = nested.join(format!("frames/{}/{}", a(), batch(1)));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        frame(a(), 1).as_bytes().to_vec()
    );
}

#[cfg(unix)]
#[test]
fn local_listing_skips_names_that_are_not_object_paths() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("badnames");
    let mut s = Blocking::new(ObjectStoreBlobs::local(&dir.0).unwrap());
    s.put(a(), key(1), &frame(a(), 1)).unwrap();
    let tenant_dir = dir.0.join(a().to_string());
    // Not UTF-8; and a subdirectory that is a batch id.
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe-not-utf8");
    std::fs::write(tenant_dir.join(bad), b"x").unwrap();
    std::fs::create_dir(tenant_dir.join(batch(2).to_string())).unwrap();
    assert_eq!(s.list(a()).unwrap(), vec![key(1)]);
}

/// The durable local store: the same checks at its boundary, the layout,
/// no temporary file left behind, concurrent puts.
#[test]
fn local_dir_blobs_store_durably_and_check_the_tenant() {
    let dir = TempDir::new("localdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Arc::new(LocalDirBlobs::new(dir.0.join("blobs")).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for n in 1..=20 {
            let s = Arc::clone(&s);
            tasks.spawn(async move {
                assert_eq!(
                    s.put(a(), key(n), &frame(a(), n)).await.unwrap(),
                    PutOutcome::Created
                );
            });
        }
        while let Some(t) = tasks.join_next().await {
            t.unwrap();
        }
        assert_eq!(
            s.list(a()).await.unwrap(),
            (1..=20).map(key).collect::<Vec<_>>()
        );
        assert!(s.list(b()).await.unwrap().is_empty());
        let file = dir.0.join(format!("blobs/{}/{}", a(), batch(3)));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            frame(a(), 3).as_bytes().to_vec()
        );
        assert_eq!(s.object_path(a(), key(3)), file);
        // Create if absent: a second put of a name leaves the stored file.
        assert_eq!(
            s.put(a(), key(3), &frame_valued(a(), 3, 99.0))
                .await
                .unwrap(),
            PutOutcome::AlreadyExists
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            frame(a(), 3).as_bytes().to_vec()
        );
        // Only the objects: no temporary file left.
        let names = std::fs::read_dir(dir.0.join(format!("blobs/{}", a())))
            .unwrap()
            .count();
        assert_eq!(names, 20);
        assert_eq!(
            s.get(a(), key(3)).await.unwrap().unwrap(),
            frame(a(), 3).into_bytes()
        );
        // Another tenant's frame, another batch: refused before writing.
        let err = s.put(b(), key(1), &frame(a(), 1)).await.unwrap_err();
        assert!(matches!(err, BlobError::WrongTenant { .. }), "{err:?}");
        let err = s.put(a(), key(2), &frame(a(), 1)).await.unwrap_err();
        assert!(matches!(err, BlobError::WrongObject { .. }), "{err:?}");
        // Through B, A's object is not there.
        assert!(s.get(b(), key(3)).await.unwrap().is_none());
        // A misfiled object is refused on read.
        std::fs::create_dir_all(dir.0.join(format!("blobs/{}", b()))).unwrap();
        std::fs::copy(&file, dir.0.join(format!("blobs/{}/{}", b(), batch(3)))).unwrap();
        let err = s.get(b(), key(3)).await.unwrap_err();
        assert!(matches!(err, BlobError::Misfiled { .. }), "{err:?}");
        // Names that are not batch ids are skipped; a temporary is too.
        std::fs::write(dir.0.join(format!("blobs/{}/.x.tmp", a())), b"x").unwrap();
        assert_eq!(s.list(a()).await.unwrap().len(), 20);
        for n in 1..=20 {
            s.delete(a(), key(n)).await.unwrap();
        }
        s.delete(a(), key(99)).await.unwrap();
        assert!(s.list(a()).await.unwrap().is_empty());
        // Two stores on one directory (two processes): racing puts of one
        // name create it once; no temporary file is left.
        let other = Arc::new(LocalDirBlobs::new(dir.0.join("blobs")).unwrap());
        assert_eq!(racing_puts(&s, &other).await, 1);
        let names = std::fs::read_dir(dir.0.join(format!("blobs/{}", a())))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n != ".x.tmp")
            .collect::<Vec<_>>();
        assert_eq!(names, vec![batch(79).to_string()]);
    });
}

#[test]
fn invalid_root_is_a_typed_error() {
    let dir = TempDir::new("badroot");
    for root in ["a//b", "a/../b", "a/./b", "a/\u{1}b"] {
        let r = ObjectStoreBlobs::local(&dir.0).unwrap().with_root(root);
        assert!(
            matches!(r, Err(BlobError::InvalidRoot { .. })),
            "{root}: {r:?}"
        );
    }
    // Leading and trailing slashes are dropped, as object_store does.
    let s = ObjectStoreBlobs::local(&dir.0)
        .unwrap()
        .with_root("/a/b/")
        .unwrap();
    assert_eq!(s.root().as_ref(), "a/b");
}

// ------------------------------------------------- the shared key store

/// The shared key store's compare-and-swap on a real store: create if
/// absent, update from the version read, stale and racing writers lose and
/// write nothing, another tenant's ring and strange tokens are refused.
async fn check_key_store(s: &ObjectStoreKeyStore) {
    let wrapping = WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]));
    let mut e = DeterministicEntropy::from_u64(9);
    let mut sealed = |seed| ring(a(), seed).to_sealed(&wrapping, &mut e).unwrap();
    let (one, two, three) = (sealed(1), sealed(2), sealed(3));
    assert!(s.get_versioned(a()).await.unwrap().is_none());

    // Create if absent: of two creators, one wins.
    let v1 = s.put_if(a(), &one, None).await.unwrap();
    assert!(matches!(
        s.put_if(a(), &two, None).await,
        Err(CasError::Conflict)
    ));
    let (bytes, v) = s.get_versioned(a()).await.unwrap().unwrap();
    assert_eq!((&bytes, &v), (&one, &v1));
    assert!(KeyRing::from_sealed(&bytes, a(), &wrapping).is_ok());

    // Update from the version read; a writer still holding v1 loses.
    let v2 = s.put_if(a(), &two, Some(&v1)).await.unwrap();
    assert_ne!(v1, v2);
    assert!(matches!(
        s.put_if(a(), &three, Some(&v1)).await,
        Err(CasError::Conflict)
    ));
    assert_eq!(
        s.get_versioned(a()).await.unwrap().unwrap(),
        (two.clone(), v2.clone())
    );

    // Three writers at once from v2: exactly one wins, its version is the
    // stored one.
    let (x, y, z) = tokio::join!(
        s.put_if(a(), &one, Some(&v2)),
        s.put_if(a(), &three, Some(&v2)),
        s.put_if(a(), &one, Some(&v2)),
    );
    let results = [&x, &y, &z];
    for r in results {
        assert!(r.is_ok() || matches!(r, Err(CasError::Conflict)), "{r:?}");
    }
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1);
    let (_, v3) = s.get_versioned(a()).await.unwrap().unwrap();
    assert_eq!(&v3, won[0]);

    // Refused before writing: another tenant's ring, a token not ours.
    assert!(matches!(
        s.put_if(b(), &one, None).await,
        Err(CasError::Store(RingStoreError::WrongTenant { .. }))
    ));
    assert!(s.get_versioned(b()).await.unwrap().is_none());
    assert!(matches!(
        s.put_if(a(), &two, Some(&RingVersion::new("not ours")))
            .await,
        Err(CasError::Store(RingStoreError::BadVersion))
    ));
    assert_eq!(s.get_versioned(a()).await.unwrap().unwrap().1, v3);
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn object_store_key_store_compare_and_swap_in_memory() {
    let rt = current_thread();
    let store = Arc::new(object_store::memory::InMemory::new());
    let s = ObjectStoreKeyStore::new(store.clone());
    assert_eq!(s.ring_path(a()).as_ref(), format!("keyrings/{}", a()));
    rt.block_on(check_key_store(&s));
    let s = ObjectStoreKeyStore::new(store)
        .with_root("ops/keys")
        .unwrap();
    rt.block_on(check_key_store(&s));
    assert!(matches!(
        ObjectStoreKeyStore::new(Arc::new(object_store::memory::InMemory::new())).with_root("a//b"),
        Err(RingStoreError::InvalidRoot { .. })
    ));
}

/// The planner lease on a real store: one holder; others see it held; the
/// holder renews; a lapsed lease is taken over (term + 1) and its old
/// holder's renewal fails; a released lease is free at once.
async fn check_lease(store: Arc<dyn ObjectStore>, name: &str) {
    let t = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let s = chrono::Duration::seconds;
    let lease = |n: u128| {
        Lease::new(store.clone(), name, Uuid::from_u128(n))
            .unwrap()
            .with_ttl(s(30), s(5))
            .unwrap()
    };
    let (mut one, mut two) = (lease(1), lease(2));
    assert_eq!(
        one.poll(t).await.unwrap(),
        LeaseState::Held {
            term: 1,
            until: t + s(25)
        }
    );
    assert!(one.holds(t + s(24)) && !one.holds(t + s(25)));
    assert_eq!(
        two.poll(t + s(1)).await.unwrap(),
        LeaseState::HeldBy {
            holder: Uuid::from_u128(1),
            retry_at: t + s(35)
        }
    );
    assert!(!two.holds(t + s(1)));
    // Renewed: it lasts 30 s from the renewal.
    assert!(matches!(
        one.poll(t + s(20)).await.unwrap(),
        LeaseState::Held { term: 1, .. }
    ));
    // Not lapsed yet for the other node (ends at 50, + 5 s margin).
    assert!(matches!(
        two.poll(t + s(54)).await.unwrap(),
        LeaseState::HeldBy { .. }
    ));
    assert!(!one.holds(t + s(45)), "past its end less the margin");
    assert_eq!(
        two.poll(t + s(55)).await.unwrap(),
        LeaseState::Held {
            term: 2,
            until: t + s(80)
        }
    );
    // The old holder's renewal finds another holder.
    assert!(matches!(
        one.poll(t + s(56)).await.unwrap(),
        LeaseState::HeldBy { .. }
    ));
    assert!(!one.holds(t + s(56)) && two.holds(t + s(56)));
    // Released: free at once for the next poll.
    two.release(t + s(60)).await.unwrap();
    assert!(!two.holds(t + s(60)));
    assert_eq!(
        one.poll(t + s(60)).await.unwrap(),
        LeaseState::Held {
            term: 3,
            until: t + s(85)
        }
    );
    // Something that is not a lease is left alone.
    let odd = format!("{name}-odd");
    store
        .put(&Path::from(odd.as_str()), PutPayload::from_static(b"hello"))
        .await
        .unwrap();
    let mut three = Lease::new(store.clone(), &odd, Uuid::from_u128(3)).unwrap();
    assert!(matches!(
        three.poll(t).await,
        Err(LeaseError::Format { .. })
    ));
    assert_eq!(
        store
            .get(&Path::from(odd.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        Bytes::from_static(b"hello")
    );
}

#[test]
fn the_planner_lease_in_memory() {
    let rt = current_thread();
    rt.block_on(check_lease(
        Arc::new(object_store::memory::InMemory::new()),
        "leases/planner",
    ));
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    assert!(Lease::new(store.clone(), "", Uuid::nil()).is_err());
    let l = Lease::new(store, "x", Uuid::nil()).unwrap();
    let s = chrono::Duration::seconds;
    assert!(
        l.with_ttl(s(10), s(5)).is_err(),
        "2 x margin must be under the ttl"
    );
}

/// On the local filesystem a lease can be created but never renewed or
/// taken over: it says so.
#[test]
fn the_planner_lease_on_the_local_filesystem_cannot_renew() {
    let dir = TempDir::new("lease");
    let rt = current_thread();
    let fs: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir.0).unwrap());
    let mut l = Lease::new(fs, "planner", Uuid::from_u128(1)).unwrap();
    let t = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    rt.block_on(async {
        assert!(matches!(l.poll(t).await, Ok(LeaseState::Held { .. })));
        assert!(matches!(l.poll(t).await, Err(LeaseError::Unsupported)));
        assert!(!l.holds(t));
    });
}

/// `object_store`'s local filesystem creates if absent but cannot update
/// conditionally: the key store says so, and writes nothing.
#[test]
fn object_store_key_store_on_the_local_filesystem_cannot_update() {
    let dir = TempDir::new("keyrings");
    let rt = current_thread();
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir.0).unwrap();
    let s = ObjectStoreKeyStore::new(Arc::new(fs));
    let wrapping = WrappingKey::new(1, KeyMaterial::from_bytes([7; 32]));
    let mut e = DeterministicEntropy::from_u64(9);
    let one = ring(a(), 1).to_sealed(&wrapping, &mut e).unwrap();
    let two = ring(a(), 2).to_sealed(&wrapping, &mut e).unwrap();
    rt.block_on(async {
        let v1 = s.put_if(a(), &one, None).await.unwrap();
        assert!(matches!(
            s.put_if(a(), &two, None).await,
            Err(CasError::Conflict)
        ));
        assert!(matches!(
            s.put_if(a(), &two, Some(&v1)).await,
            Err(CasError::Unsupported)
        ));
        assert_eq!(s.get_versioned(a()).await.unwrap().unwrap().0, one);
    });
}

/// Azure: the config's Debug, and the whole behaviour against Azurite.
#[cfg(feature = "azure")]
mod azure {
    use std::time::Instant;

    use opsdata_io::AzureBlobConfig;

    use super::azurite_support::{self, Azurite, install_azurite};
    use super::*;

    #[test]
    fn debug_shows_no_secrets() {
        let config = AzureBlobConfig::new("acct", "frames", "c2VjcmV0LWtleQ==");
        let text = format!("{config:?}");
        assert!(text.contains("acct") && text.contains("frames"), "{text}");
        assert!(!text.contains("c2VjcmV0LWtleQ=="), "{text}");
        let blobs = ObjectStoreBlobs::azure(&config).unwrap();
        let text = format!("{blobs:?}");
        assert!(text.contains("acct"), "{text}");
        assert!(!text.contains("c2VjcmV0LWtleQ=="), "{text}");
    }

    #[test]
    fn azurite_backend() {
        // CI (.ci/run) requires npm and sets OPSDATA_REQUIRE_AZURITE, so
        // it cannot skip there.
        if !azurite_support::available("azurite_backend") {
            return;
        }
        let started = Instant::now();
        let install = install_azurite();
        let azurite = Azurite::start(&install);
        eprintln!("azurite at {} after {:.1?}", azurite.url, started.elapsed());

        // A container that does not exist: a typed error, no panic.
        let mut missing = Blocking::new(
            ObjectStoreBlobs::azure(&AzureBlobConfig::emulator(&azurite.url, "missing")).unwrap(),
        );
        let err = missing.put(a(), key(1), &frame(a(), 1)).unwrap_err();
        assert!(
            matches!(
                err,
                BlobError::Store {
                    op: BlobOp::Put,
                    ..
                }
            ),
            "{err:?}"
        );

        azurite.create_container("opsdata");
        let config = AzureBlobConfig::emulator(&azurite.url, "opsdata");
        let raw = Raw::new(azurite.raw_store("opsdata"));
        check_behaviour(
            &|| {
                ObjectStoreBlobs::azure(&config)
                    .unwrap()
                    .with_root("ops/frames")
                    .unwrap()
            },
            &raw,
            "ops/frames",
        );
        check_behaviour(&|| ObjectStoreBlobs::azure(&config).unwrap(), &raw, "");
        // The shared key store's conditional writes on Azure's ETags.
        let rt = current_thread();
        rt.block_on(check_key_store(
            &ObjectStoreKeyStore::azure(&config).unwrap(),
        ));
        rt.block_on(check_key_store(
            &ObjectStoreKeyStore::azure(&config)
                .unwrap()
                .with_root("ops/keys")
                .unwrap(),
        ));
        // The planner lease on Azure's ETags (a client made on this
        // runtime).
        rt.block_on(check_lease(azurite.raw_store("opsdata"), "leases/planner"));
        eprintln!("azurite_backend done in {:.1?}", started.elapsed());
    }
}
