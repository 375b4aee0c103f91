//! Crash test: an agent over a `FileSpool` runs in a child process (this
//! test binary, re-executed to run the ignored `crash_child` test), which is
//! killed with SIGKILL at seeded random points and restarted on the same
//! spool directory. The service runs here, in the parent: a plain TCP
//! listener speaking `docs/WIRE.md` (frames in, acknowledgements out) into
//! the core's `Ingest`, authenticated by a `Principal` from an agent
//! certificate made with rcgen. At the end every record the child journaled
//! as pushed must be stored by the service or journaled as dropped, and the
//! duplicates the ingest de-duplicated are at most one per kill.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use common::{frame, seqs_of, t0, tenant};
use opsdata::{
    Agent, BatchId, DeliveryEvent, DeliveryPolicy, DeterministicEntropy, EnrollmentCa,
    FIXED_HEADER_LEN, FrameHeader, FrameLimits, Ingest, IngestConfig, KeyRing, MemoryBlobStore,
    Outcome, Principal, RotationPolicy, Transmit, Transport, apply_store_op, read_back,
};
use opsdata_io::{Ack, FileSpool, SpoolConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

const CHILD_TEST: &str = "crash_child";
const ENV_DIR: &str = "OPSDATA_CRASH_DIR";
const ENV_PORT: &str = "OPSDATA_CRASH_PORT";
const ENV_CYCLE: &str = "OPSDATA_CRASH_CYCLE";
const ENV_DRAIN: &str = "OPSDATA_CRASH_DRAIN";
const CYCLES: u64 = 60;
const SEED: u64 = 0x5eed_c0de;
/// Sequence numbers of cycle `c` are `c * SEQ_STRIDE + i`.
const SEQ_STRIDE: u64 = 1_000_000;

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

/// A wire transport over plain TCP, for this test only: one frame out, one
/// acknowledgement back; any failure is transient.
struct TcpTransport {
    addr: SocketAddr,
    conn: Option<TcpStream>,
}

impl TcpTransport {
    fn exchange(&mut self, tx: &Transmit) -> std::io::Result<Outcome> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, StdDuration::from_secs(1))?;
            s.set_read_timeout(Some(StdDuration::from_secs(5)))?;
            s.set_nodelay(true)?;
            self.conn = Some(s);
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected just above")
        };
        conn.write_all(tx.frame.as_bytes())?;
        let ack = Ack::read_from(conn).map_err(std::io::Error::other)?;
        Ok(if ack.batch_id == Some(tx.batch_id) {
            ack.outcome
        } else {
            Outcome::Transient
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, _now: DateTime<Utc>, tx: &Transmit) -> Outcome {
        self.exchange(tx).unwrap_or_else(|_| {
            self.conn = None;
            Outcome::Transient
        })
    }
}

/// The child's journal: one line per fact, synced before going on. A line
/// repeats its number so a torn line is recognised and ignored.
struct Journal(File);
impl Journal {
    fn open(path: &Path) -> Journal {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .unwrap();
        // A line torn by a kill: end it so the next one starts clean.
        let len = f.metadata().unwrap().len();
        if len > 0 {
            let mut all = Vec::new();
            File::open(path).unwrap().read_to_end(&mut all).unwrap();
            if all.last() != Some(&b'\n') {
                f.write_all(b"\n").unwrap();
            }
        }
        Journal(f)
    }
    fn record(&mut self, kind: char, seq: u64) {
        self.0
            .write_all(format!("{kind} {seq} {seq}\n").as_bytes())
            .unwrap();
        self.0.sync_data().unwrap();
    }
}

fn seq_of(id: BatchId) -> u64 {
    u64::try_from(id.as_uuid().as_u128() - 1).unwrap()
}

fn journal_events(agent: &mut Agent<TcpTransport, FileSpool>, journal: &mut Journal) {
    while let Some(e) = agent.poll_event() {
        if let DeliveryEvent::Dropped { batch_id, .. } = e {
            journal.record('D', seq_of(batch_id));
        }
    }
}

fn policy() -> DeliveryPolicy {
    DeliveryPolicy::default()
        .with_limit_bytes(spool_config().outbox_limit_bytes())
        .unwrap()
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
    let drain = std::env::var(ENV_DRAIN).is_ok();
    let mut journal = Journal::open(&dir.join("journal.log"));
    let (spool, _) = FileSpool::open(dir.join("spool"), spool_config()).unwrap();
    let transport = TcpTransport {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        conn: None,
    };
    // A clock of our own: an hour per cycle, a millisecond per push.
    let mut now = t0() + Duration::hours(i64::try_from(cycle).unwrap());
    let (mut agent, _) =
        Agent::recover(policy(), SEED ^ cycle, now, transport, spool, &limits()).unwrap();
    journal_events(&mut agent, &mut journal);
    if drain {
        for _ in 0..1000 {
            if agent.outbox().held_bytes() == 0 {
                break;
            }
            now = agent.next_wakeup().unwrap_or(now).max(now);
            agent.tick(now).unwrap();
            journal_events(&mut agent, &mut journal);
        }
        assert_eq!(agent.outbox().held_bytes(), 0, "drained");
        assert!(agent.spool().is_empty());
        return;
    }
    for i in 0..SEQ_STRIDE {
        let seq = cycle * SEQ_STRIDE + i;
        now += Duration::milliseconds(1);
        agent.push(now, frame(seq, 2, 40)).unwrap();
        journal.record('P', seq);
        journal_events(&mut agent, &mut journal);
    }
}

// ---------------------------------------------------------------- parent

fn validity(p: &mut CertificateParams) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let secs = |t: DateTime<Utc>| StdDuration::from_secs(u64::try_from(t.timestamp()).unwrap());
    p.not_before = epoch + secs(t0() - Duration::days(1));
    p.not_after = epoch + secs(t0() + Duration::days(30));
}

/// The agent's principal, from a certificate made here and checked by the
/// enrollment CA, as the TLS service would.
fn principal() -> Principal {
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "crash test enrollment CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_key = KeyPair::generate().unwrap();
    let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
    let issuer = Issuer::new(ca, ca_key);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common::TENANT);
    dn.push(
        DnType::CustomDnType(vec![2, 5, 4, 3]),
        "5b1f8ac2-6a3e-4b5f-9f0e-2d9c1f7a6e11",
    );
    dn.push(DnType::OrganizationalUnitName, "Linux Monitoring Agent");
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap().der().clone();
    let ca = EnrollmentCa::new(std::slice::from_ref(&ca_der)).unwrap();
    ca.authenticate(std::slice::from_ref(&cert), t0()).unwrap()
}

struct Service {
    ingest: Ingest,
    ring: KeyRing,
    entropy: DeterministicEntropy,
    store: MemoryBlobStore,
    principal: Principal,
}

fn ring() -> KeyRing {
    let mut e = DeterministicEntropy::from_u64(1);
    let mut r = KeyRing::new(tenant(), &RotationPolicy::default());
    let k = r.generate(&mut e, t0()).unwrap();
    r.promote(k, t0()).unwrap();
    r
}

/// Serves one connection: reads frames (the header says the length),
/// ingests each, answers each.
fn serve(mut conn: TcpStream, service: &Mutex<Service>) {
    let max = spool_config().max_frame_len();
    loop {
        let mut head = [0u8; FIXED_HEADER_LEN];
        if conn.read_exact(&mut head).is_err() {
            return;
        }
        let Ok(header) = FrameHeader::parse(&head) else {
            let ack = Ack {
                batch_id: None,
                outcome: Outcome::Rejected,
            };
            let _ = conn.write_all(&ack.encode());
            return;
        };
        let len = header.frame_len() as u64;
        if len > max {
            return;
        }
        let mut bytes = vec![0u8; usize::try_from(len).unwrap()];
        bytes[..FIXED_HEADER_LEN].copy_from_slice(&head);
        if conn.read_exact(&mut bytes[FIXED_HEADER_LEN..]).is_err() {
            // The child was killed mid-frame.
            return;
        }
        let outcome = {
            let mut s = service.lock().unwrap();
            let s = &mut *s;
            let report = s
                .ingest
                .handle_request(t0(), &s.principal, &mut s.ring, &mut s.entropy, &bytes)
                .unwrap();
            while let Some(op) = s.ingest.poll_store() {
                apply_store_op(&mut s.store, &op).unwrap();
            }
            report
                .answers
                .first()
                .map_or(Outcome::Transient, |a| a.outcome)
        };
        let ack = Ack {
            batch_id: Some(header.batch_id),
            outcome,
        };
        if conn.write_all(&ack.encode()).is_err() {
            return;
        }
    }
}

fn dead_port() -> u16 {
    // Bound then closed: connections to it are refused.
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_child(dir: &Path, port: u16, cycle: u64, drain: bool) -> std::process::Child {
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

    let ingest = Ingest::new(IngestConfig::default().with_limits(limits()));
    let service = Arc::new(Mutex::new(Service {
        ingest,
        ring: ring(),
        entropy: DeterministicEntropy::from_u64(2),
        store: MemoryBlobStore::new(),
        principal: principal(),
    }));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    {
        let service = Arc::clone(&service);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let service = Arc::clone(&service);
                std::thread::spawn(move || serve(conn, &service));
            }
        });
    }

    let mut rng = Rng(SEED);
    let mut kills = 0u64;
    let mut offline_cycles = 0;
    for cycle in 0..CYCLES {
        // One cycle in five, the service is unreachable.
        let offline = rng.below(5) == 0;
        offline_cycles += u64::from(offline);
        let p = if offline { dead_port() } else { port };
        let mut child = spawn_child(&dir, p, cycle, false);
        std::thread::sleep(StdDuration::from_millis(30 + rng.below(200)));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "child {cycle} exited before the kill ({status}):\n{}",
                child_stderr(&dir, cycle)
            );
        }
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        kills += 1;
    }
    // A last run, not killed, delivers the backlog and exits.
    let mut child = spawn_child(&dir, port, CYCLES, true);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "drain child failed:\n{}",
        child_stderr(&dir, CYCLES)
    );

    // What the child journaled.
    let journal = fs::read_to_string(dir.join("journal.log")).unwrap();
    let mut pushed = BTreeSet::new();
    let mut dropped = BTreeSet::new();
    for line in journal.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [kind, a, b] = parts[..] else { continue };
        let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
            continue;
        };
        if a != b {
            continue; // torn by a kill
        }
        match kind {
            "P" => pushed.insert(a),
            "D" => dropped.insert(a),
            _ => continue,
        };
    }
    // What the service stored.
    let s = service.lock().unwrap();
    let mut delivered = BTreeSet::new();
    for object in opsdata::BlobStore::list(&s.store, tenant()).unwrap() {
        let f = read_back(&s.store, tenant(), object, &s.ring, &limits())
            .unwrap()
            .unwrap();
        let seqs = seqs_of(&f);
        assert_eq!(seqs.len(), 2);
        assert!(seqs[0] == seqs[1] && seqs[0] == seq_of(f.batch_id()));
        assert!(delivered.insert(seqs[0]), "stored once");
    }
    let stats = s.ingest.stats(tenant());

    assert!(
        pushed.len() > 100,
        "the children made progress: {}",
        pushed.len()
    );
    assert!(offline_cycles > 0 && offline_cycles < CYCLES);
    let lost: Vec<u64> = pushed
        .iter()
        .filter(|q| !delivered.contains(q) && !dropped.contains(q))
        .copied()
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    // Delivered but not journaled: pushed when the kill came, before the
    // journal line. At most one per kill, and only of a cycle's last push.
    let unjournaled: Vec<u64> = delivered.difference(&pushed).copied().collect();
    assert!(unjournaled.len() as u64 <= kills, "{unjournaled:?}");
    for q in &unjournaled {
        let cycle = q / SEQ_STRIDE;
        assert!(cycle < CYCLES);
        assert!(
            !pushed.contains(&(q + 1)),
            "seq {q} is not the last push of its cycle"
        );
    }
    // Duplicates: only batches in flight at a kill, one per kill at most.
    assert!(
        stats.duplicates <= kills,
        "{} duplicates for {kills} kills",
        stats.duplicates
    );
    assert_eq!(stats.frames as usize, delivered.len());
    drop(s);
    // Nothing left in the spool.
    let (_, rec) = FileSpool::open(dir.join("spool"), spool_config()).unwrap();
    assert_eq!((rec.frames, rec.held_bytes), (0, 0));
    eprintln!(
        "crash: {kills} kills, {offline_cycles} offline cycles, {} pushed, {} delivered, {} dropped, {} duplicates, {} unjournaled",
        pushed.len(),
        delivered.len(),
        dropped.len(),
        stats.duplicates,
        unjournaled.len()
    );
}
