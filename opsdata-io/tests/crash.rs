//! Crash test: the async agent (`AsyncAgent` over a `FileSpool`, sending
//! through `HttpsTransport`) runs in a child process (this test binary,
//! re-executed to run the ignored `crash_child` test), which is killed with
//! SIGKILL at seeded random points and restarted on the same spool
//! directory. The service runs here, in the parent: the minimal HTTPS
//! ingest server of `tests/common/server.rs` (mutual TLS, HTTP/2, the
//! core's `Ingest`), the agent authenticated by a certificate made with
//! rcgen.
//!
//! Drops happen for real: the service rejects a fixed subset of batch ids
//! (`Rejected`), some cycles run with a small outbox limit (`QueueFull`, at
//! push and at recovery), and in the cycles where the service is
//! unreachable the child's clock runs ten minutes a push, so its tenant goes
//! past the two-hour cache window and is queued while the limit drops the
//! oldest batches. Up to `MAX_IN_FLIGHT` requests are in flight at once.
//!
//! The child's driver records every `Dropped` event through its
//! `EventJournal` (written and synced) before it applies the storage
//! operations of the same round, and on restart the child removes, before
//! recovery, the frames its journal already names as dropped (a drop
//! journaled is committed: it is not sent after a kill). The journal
//! pauses after recording drops (`CRASH_WINDOW`), so that kills land
//! between a drop on record and its `Remove`: with the order reversed
//! there (the core `Agent`'s), the test finds records lost; without the
//! removal at restart, drops journaled twice. A push is journaled once
//! `AgentHandle::push` returned, that is once its frame is in the spool.
//!
//! At the end, against the service's store: every record journaled as
//! pushed is stored or journaled as dropped; a record is journaled as
//! dropped at most once; only the push under way at a kill can be stored or
//! dropped without being journaled as pushed; no rejected batch is stored;
//! a record both stored and dropped was delivered with its acknowledgement
//! lost to a kill and evicted after the restart, so that these and the
//! ingest's de-duplicated resends together number at most the requests in
//! flight at each kill (`MAX_IN_FLIGHT` per kill).
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use common::server::{IngestServer, Pki, State};
use common::{frame, seqs_of, t0, tenant};
use opsdata::{
    BatchId, DeliveryEvent, DeliveryPolicy, DropReason, FIXED_HEADER_LEN, FrameHeader, FrameLimits,
    Spool, read_back,
};
use opsdata_io::{
    AgentSettings, AsyncAgent, EventJournal, FileSpool, HttpsSettings, HttpsTransport,
    KeyFileStore, PemIdentity, SpoolConfig, SpoolProtection, SpoolRecovery, load_certificates,
};

const CHILD_TEST: &str = "crash_child";
const ENV_DIR: &str = "OPSDATA_CRASH_DIR";
const ENV_PORT: &str = "OPSDATA_CRASH_PORT";
const ENV_CYCLE: &str = "OPSDATA_CRASH_CYCLE";
const ENV_DRAIN: &str = "OPSDATA_CRASH_DRAIN";
const ENV_LIMIT: &str = "OPSDATA_CRASH_LIMIT";
const CYCLES: u64 = 60;
const SEED: u64 = 0x5eed_c0de;
/// Sequence numbers of cycle `c` are `c * SEQ_STRIDE + i`.
const SEQ_STRIDE: u64 = 1_000_000;
/// The child's pause between journaling drops and applying their removes.
const CRASH_WINDOW: StdDuration = StdDuration::from_millis(20);

fn limits() -> FrameLimits {
    FrameLimits::default().with_max_body(64 << 10).unwrap()
}

fn spool_config() -> SpoolConfig {
    SpoolConfig::new(1 << 30)
        .unwrap()
        .with_frame_limits(limits())
        .unwrap()
        .with_segment_bytes(128 << 10)
        .unwrap()
        .with_sealed_at_rest(SPOOL_PROTECTED)
        .unwrap()
}

/// The spool is sealed at rest (issue 15: the crash test passes with
/// protection on), its key in a 0600 file beside the spool directory.
const SPOOL_PROTECTED: bool = true;

fn open_spool(dir: &Path) -> (FileSpool, SpoolRecovery) {
    if SPOOL_PROTECTED {
        let store = KeyFileStore::new(dir.join("spool.key"));
        let protection = SpoolProtection::new(store, Arc::new(Utc::now));
        FileSpool::open_protected(dir.join("spool"), spool_config(), protection).unwrap()
    } else {
        FileSpool::open(dir.join("spool"), spool_config()).unwrap()
    }
}

/// Whether the service rejects the batch of `seq` (one in sixteen, fixed).
fn rejected(seq: u64) -> bool {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60 == 0
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- child

/// Requests in flight at once per tenant: a kill cuts off at most this
/// many acknowledgements.
const MAX_IN_FLIGHT: u32 = 4;

/// The journal's kinds of line.
const PUSHED: char = 'P';
const DROPPED_FULL: char = 'Q';
const DROPPED_REJECTED: char = 'R';
const DROPPED_OTHER: char = 'E';
/// A tenant queued (past the cache window); the number is the cycle.
const QUEUED: char = 'K';
/// A drop on record whose frame a restart found still in the spool (the
/// kill came before its `Remove`) and removed.
const COMPLETED: char = 'C';

fn is_drop(kind: char) -> bool {
    matches!(kind, DROPPED_FULL | DROPPED_REJECTED | DROPPED_OTHER)
}

/// The whole lines of a journal: `kind n n`. A line repeats its number so
/// one torn by a kill is recognised and ignored.
fn parse_journal(text: &str) -> Vec<(char, u64)> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            let [kind, a, b] = parts[..] else {
                return None;
            };
            let mut chars = kind.chars();
            let (Some(kind), None) = (chars.next(), chars.next()) else {
                return None;
            };
            let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                return None;
            };
            (a == b).then_some((kind, a))
        })
        .collect()
}

/// The child's journal: lines of facts, synced before going on.
struct Journal(File);
impl Journal {
    /// Opens the journal and returns the lines it already holds.
    fn open(path: &Path) -> (Journal, Vec<(char, u64)>) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .unwrap();
        let mut all = String::new();
        File::open(path).unwrap().read_to_string(&mut all).unwrap();
        // A line torn by a kill: end it so the next one starts clean.
        if !all.is_empty() && !all.ends_with('\n') {
            f.write_all(b"\n").unwrap();
        }
        (Journal(f), parse_journal(&all))
    }
    fn write(&mut self, lines: &str) {
        if lines.is_empty() {
            return;
        }
        self.0.write_all(lines.as_bytes()).unwrap();
        self.0.sync_data().unwrap();
    }
}

fn line(kind: char, n: u64) -> String {
    format!("{kind} {n} {n}\n")
}

fn seq_of(id: BatchId) -> u64 {
    u64::try_from(id.as_uuid().as_u128() - 1).unwrap()
}

/// The outbox limit for `frames` frames of the size the test pushes.
fn limit_for(frames: u64) -> u64 {
    frames * frame(CYCLES * SEQ_STRIDE, 2, 40).len() as u64
}

fn policy(limit_bytes: u64) -> DeliveryPolicy {
    DeliveryPolicy::default()
        .with_limit_bytes(limit_bytes)
        .unwrap()
        .with_max_in_flight(MAX_IN_FLIGHT)
        .unwrap()
}

/// The driver's journal: every `Dropped` (and `Queued`) event written and
/// synced before the driver applies the storage operations of its round,
/// so a dropped batch leaves the spool only once its drop is on record.
struct DropJournal {
    cycle: u64,
    journal: Arc<Mutex<Journal>>,
    /// A pause after drops are on record, before their removes.
    window: StdDuration,
}

impl EventJournal for DropJournal {
    fn record(&mut self, events: &[DeliveryEvent]) -> std::io::Result<()> {
        let mut lines = String::new();
        let mut drops = false;
        for e in events {
            match e {
                DeliveryEvent::Dropped {
                    batch_id, reason, ..
                } => {
                    let kind = match reason {
                        DropReason::QueueFull => DROPPED_FULL,
                        DropReason::Rejected => DROPPED_REJECTED,
                        _ => DROPPED_OTHER,
                    };
                    lines.push_str(&line(kind, seq_of(*batch_id)));
                    drops = true;
                }
                DeliveryEvent::Queued { .. } => lines.push_str(&line(QUEUED, self.cycle)),
                _ => {}
            }
        }
        self.journal.lock().unwrap().write(&lines);
        if drops {
            // Widen the window between a drop on record and its `Remove`,
            // so that kills land there: a host that applied the `Remove`
            // first would lose the report here.
            std::thread::sleep(self.window);
        }
        Ok(())
    }
}

/// Run by `crash_cycles` in a child process; does nothing when run
/// directly (`--ignored`) without its environment.
#[test]
#[ignore = "the child of crash_cycles, which runs it in its own process"]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let port: u16 = std::env::var(ENV_PORT).unwrap().parse().unwrap();
    let cycle: u64 = std::env::var(ENV_CYCLE).unwrap().parse().unwrap();
    let limit_bytes: u64 = std::env::var(ENV_LIMIT).unwrap().parse().unwrap();
    let drain = std::env::var(ENV_DRAIN).is_ok();
    let (mut journal, lines) = Journal::open(&dir.join("journal.log"));
    let (mut spool, recovery) = open_spool(&dir);
    // A kill (not a power cut) can leave a torn tail, never damage: no
    // segment may be moved aside.
    assert!(
        recovery.moved_aside.is_empty(),
        "{:?}",
        recovery.moved_aside
    );
    // A drop on record is committed: finish it (its `Remove` may not have
    // been applied before the kill) rather than send the batch again.
    let committed: BTreeSet<u64> = lines
        .iter()
        .filter(|(kind, _)| is_drop(*kind))
        .map(|&(_, seq)| seq)
        .collect();
    let mut frames = Vec::new();
    spool.load(&mut |bytes| frames.push(bytes)).unwrap();
    let mut completed = String::new();
    for bytes in frames {
        let head: &[u8; FIXED_HEADER_LEN] = bytes[..FIXED_HEADER_LEN].try_into().unwrap();
        let id = FrameHeader::parse(head).unwrap().batch_id;
        if committed.contains(&seq_of(id)) {
            spool.remove(id).unwrap();
            completed.push_str(&line(COMPLETED, seq_of(id)));
        }
    }
    journal.write(&completed);
    let journal = Arc::new(Mutex::new(journal));
    // A clock of our own: a month per cycle, ten minutes per push, so an
    // unreachable service is past the two-hour cache window in 12 pushes.
    let start = t0() + Duration::days(30 * i64::try_from(cycle).unwrap());
    let clock_ms = Arc::new(AtomicI64::new(start.timestamp_millis()));
    let c = Arc::clone(&clock_ms);
    let clock: opsdata_io::Clock =
        Arc::new(move || DateTime::from_timestamp_millis(c.load(Ordering::SeqCst)).unwrap());
    let settings = AgentSettings::new(policy(limit_bytes), SEED ^ cycle)
        .with_limits(limits())
        .with_clock(Arc::clone(&clock));
    let transport = HttpsTransport::new(
        HttpsSettings::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "localhost",
            load_certificates(&dir.join("service-ca.pem")).unwrap(),
        )
        .unwrap()
        .with_connect_timeout(StdDuration::from_secs(2))
        .unwrap()
        .with_request_timeout(StdDuration::from_secs(5))
        .unwrap(),
        PemIdentity::new(dir.join("agent.pem"), dir.join("agent.key")),
    );
    let drop_journal = DropJournal {
        cycle,
        journal: Arc::clone(&journal),
        window: if drain {
            StdDuration::ZERO
        } else {
            CRASH_WINDOW
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Recovery's drops are journaled before their removes are applied
        // (the driver's first round).
        let (mut agent, report) =
            AsyncAgent::start_with_journal(settings, transport, spool, drop_journal)
                .await
                .unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(report.duplicates, 0);
        if drain {
            // The service is reachable: everything goes out now, or on the
            // retry schedule should a send fail.
            for _ in 0..10_000 {
                let status = agent.status().await.unwrap();
                if status.held_batches == 0 {
                    break;
                }
                if status.in_flight == 0 {
                    let now = clock();
                    let next = status.next_timeout.unwrap_or(now).max(now);
                    clock_ms.store(next.timestamp_millis(), Ordering::SeqCst);
                    agent.handle().wake();
                }
                tokio::time::sleep(StdDuration::from_millis(2)).await;
            }
            assert_eq!(agent.status().await.unwrap().held_batches, 0, "drained");
            let spool = agent.shutdown().await.unwrap();
            assert!(spool.is_empty());
            return;
        }
        for i in 0..SEQ_STRIDE {
            clock_ms.fetch_add(Duration::minutes(10).num_milliseconds(), Ordering::SeqCst);
            let seq = cycle * SEQ_STRIDE + i;
            // Returns once the frame is persisted (or dropped at its push,
            // its drop journaled): only then is it pushed.
            agent.push(frame(seq, 2, 40)).await.unwrap();
            journal.lock().unwrap().write(&line(PUSHED, seq));
        }
    });
}

// ---------------------------------------------------------------- parent

/// The agent's certificate and key and the service's CA, in the files
/// the child reads (`PemIdentity`, `load_certificates`).
fn write_credentials(dir: &Path, pki: &Pki) {
    let agent = pki.agent(common::TENANT);
    fs::write(dir.join("agent.pem"), &agent.pem).unwrap();
    fs::write(dir.join("agent.key"), &agent.key_pem).unwrap();
    fs::write(dir.join("service-ca.pem"), &pki.service_ca.pem).unwrap();
}

fn dead_port() -> u16 {
    // Bound then closed: connections to it are refused.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_child(
    dir: &Path,
    port: u16,
    cycle: u64,
    limit_bytes: u64,
    drain: bool,
) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        CHILD_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_DIR, dir)
    .env(ENV_PORT, port.to_string())
    .env(ENV_CYCLE, cycle.to_string())
    .env(ENV_LIMIT, limit_bytes.to_string())
    .stdout(Stdio::null())
    .stderr(File::create(dir.join(format!("child-{cycle}.err"))).unwrap());
    if drain {
        cmd.env(ENV_DRAIN, "1");
    }
    cmd.spawn().unwrap()
}

fn child_stderr(dir: &Path, cycle: u64) -> String {
    fs::read_to_string(dir.join(format!("child-{cycle}.err"))).unwrap_or_default()
}

#[test]
fn crash_cycles() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    eprintln!(
        "crash: seed {SEED:#x}, {CYCLES} cycles, files in {}",
        dir.display()
    );

    // The service: HTTPS (mutual TLS, the core's `Ingest`) on a runtime of
    // the parent's; it refuses the `rejected` batches for good.
    let pki = Pki::new();
    write_credentials(&dir, &pki);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = State::rejecting(&pki, limits(), |id| rejected(seq_of(id)));
    let server = rt.block_on(IngestServer::start(
        &pki,
        Arc::clone(&state),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ));
    let port = server.addr.port();

    let big = spool_config().outbox_limit_bytes();
    let mut rng = Rng(SEED);
    let mut kills = 0u64;
    let mut offline_cycles = 0;
    let mut small_cycles = 0;
    for cycle in 0..CYCLES {
        // One cycle in four, the service is unreachable; one in three, the
        // outbox holds a few frames only (at push, and at recovery of what
        // an earlier cycle left).
        let offline = rng.below(4) == 0;
        let small = rng.below(3) == 0;
        offline_cycles += u64::from(offline);
        small_cycles += u64::from(small);
        let limit = if small {
            limit_for(4 + rng.below(20))
        } else {
            big
        };
        let p = if offline { dead_port() } else { port };
        let mut child = spawn_child(&dir, p, cycle, limit, false);
        std::thread::sleep(StdDuration::from_millis(30 + rng.below(200)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "seed {SEED:#x}: child {cycle} exited before the kill ({status}):\n{}",
                child_stderr(&dir, cycle)
            );
        }
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        kills += 1;
    }
    // A last run, not killed, delivers the backlog and exits.
    let mut child = spawn_child(&dir, port, CYCLES, big, true);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "seed {SEED:#x}: drain child failed:\n{}",
        child_stderr(&dir, CYCLES)
    );

    // What the child journaled.
    let journal = fs::read_to_string(dir.join("journal.log")).unwrap();
    let mut pushed = BTreeSet::new();
    let mut dropped_full = BTreeSet::new();
    let mut dropped_rejected = BTreeSet::new();
    let mut drop_lines: BTreeMap<u64, usize> = BTreeMap::new();
    let mut queued_cycles = BTreeSet::new();
    let mut completed = BTreeSet::new();
    for (kind, n) in parse_journal(&journal) {
        if is_drop(kind) {
            *drop_lines.entry(n).or_default() += 1;
        }
        match kind {
            PUSHED => assert!(pushed.insert(n), "seed {SEED:#x}: {n} pushed twice"),
            DROPPED_FULL => _ = dropped_full.insert(n),
            DROPPED_REJECTED => _ = dropped_rejected.insert(n),
            QUEUED => _ = queued_cycles.insert(n),
            COMPLETED => _ = completed.insert(n),
            other => panic!("seed {SEED:#x}: journal line {other} {n}"),
        }
    }
    let dropped: BTreeSet<u64> = dropped_full.union(&dropped_rejected).copied().collect();
    // What the service stored.
    let s = state.store.lock().unwrap();
    let ring = &s.rings[&tenant()];
    let mut delivered = BTreeSet::new();
    for object in opsdata::BlobStore::list(&s.blobs, tenant()).unwrap() {
        let f = read_back(&s.blobs, tenant(), object, ring, &limits())
            .unwrap()
            .unwrap();
        let seqs = seqs_of(&f);
        assert_eq!(seqs.len(), 2);
        assert!(seqs[0] == seqs[1] && seqs[0] == seq_of(f.batch_id()));
        assert!(delivered.insert(seqs[0]), "stored once");
    }
    let stats = s.ingest.stats(tenant());
    drop(s);
    rt.block_on(server.stop());
    let report = format!(
        "seed {SEED:#x}: {kills} kills ({offline_cycles} offline, {small_cycles} with a small \
         outbox, {} queued), {} pushed, {} delivered, {} dropped ({} queue full, {} rejected), \
         {} duplicates",
        queued_cycles.len(),
        pushed.len(),
        delivered.len(),
        dropped.len(),
        dropped_full.len(),
        dropped_rejected.len(),
        stats.duplicates,
    );

    // Nothing lost: every record pushed is stored or its drop is on record.
    let lost: Vec<u64> = pushed
        .iter()
        .filter(|q| !delivered.contains(q) && !dropped.contains(q))
        .copied()
        .collect();
    assert!(lost.is_empty(), "{report}: lost {lost:?}");
    // Each drop is journaled once: a drop on record is never made again
    // after a restart (its batch is neither resent nor recovered).
    let twice: Vec<u64> = drop_lines
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(&q, _)| q)
        .collect();
    assert!(twice.is_empty(), "{report}: dropped twice {twice:?}");
    // Rejections are the service's, and nothing rejected is stored.
    assert!(
        dropped_rejected.iter().all(|&q| rejected(q)),
        "{report}: rejected without the service's word"
    );
    assert!(
        delivered.iter().all(|&q| !rejected(q)),
        "{report}: a rejected batch was stored"
    );
    // Stored or dropped without a `P` line: only the push under way at a
    // kill (persisted, or dropped at its push, before its line), so the
    // cycle's next seq after its last journaled push, one per cycle at most.
    let mut last_pushed: BTreeMap<u64, u64> = BTreeMap::new();
    for &q in &pushed {
        last_pushed.insert(q / SEQ_STRIDE, q);
    }
    let unjournaled: Vec<u64> = delivered
        .union(&dropped)
        .filter(|q| !pushed.contains(q))
        .copied()
        .collect();
    for &q in &unjournaled {
        let cycle = q / SEQ_STRIDE;
        let next = last_pushed
            .get(&cycle)
            .map_or(cycle * SEQ_STRIDE, |last| last + 1);
        assert!(
            cycle < CYCLES && q == next,
            "{report}: {q} not the push under way at its cycle's kill"
        );
    }
    // Both stored and dropped: only a batch the service took whose
    // acknowledgement a kill cut off, evicted after the restart (a rejected
    // one is never stored). A kill cuts off at most the `MAX_IN_FLIGHT`
    // sends in flight (the stop-and-wait agent had one), whose batches are
    // then either resent (duplicates for the ingest) or so dropped.
    let both: Vec<u64> = delivered.intersection(&dropped).copied().collect();
    assert!(
        both.iter().all(|q| dropped_full.contains(q)),
        "{report}: stored and rejected {both:?}"
    );
    assert!(
        stats.duplicates + both.len() as u64 <= kills * u64::from(MAX_IN_FLIGHT),
        "{report}: {} duplicates and {both:?} both stored and dropped, for {kills} kills \
         of {MAX_IN_FLIGHT} requests in flight at most",
        stats.duplicates
    );
    assert_eq!(stats.frames as usize, delivered.len(), "{report}");
    // Nothing left in the spool.
    let (_, rec) = open_spool(&dir);
    assert_eq!((rec.frames, rec.held_bytes), (0, 0), "{report}");
    // The run exercised what it is for.
    assert!(pushed.len() > 100, "{report}: too little progress");
    assert!(offline_cycles > 0 && offline_cycles < CYCLES, "{report}");
    assert!(!dropped_full.is_empty(), "{report}: no queue-full drops");
    assert!(!dropped_rejected.is_empty(), "{report}: no rejections");
    assert!(!queued_cycles.is_empty(), "{report}: never queued");
    // Drops completed at a restart are drops on record.
    assert!(completed.is_subset(&dropped), "{report}");
    eprintln!(
        "crash: {report}, {} unjournaled, {} both stored and dropped, {} drops on record \
         completed at a restart",
        unjournaled.len(),
        both.len(),
        completed.len()
    );
}
