//! Azurite, the Azure Storage emulator, for tests: installed with npm into
//! `<target dir>/azurite/<version>` on first use, started on a free port,
//! killed (and its data removed) on drop. Shared by `tests/blobs.rs` and
//! `tests/scale_azurite.rs`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "opsdata-io-{name}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Azurite's well-known account key.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub fn tool_version(tool: &str) -> Option<String> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether Azurite can run here: node and npm on PATH. Without them the
/// caller skips, unless `OPSDATA_REQUIRE_AZURITE` is set (CI sets it),
/// which fails instead.
pub fn available(test: &str) -> bool {
    let (Some(node), Some(npm)) = (tool_version("node"), tool_version("npm")) else {
        assert!(
            std::env::var_os("OPSDATA_REQUIRE_AZURITE").is_none(),
            "OPSDATA_REQUIRE_AZURITE is set but node or npm is not on PATH"
        );
        eprintln!("SKIPPED {test}: node and npm are needed on PATH to run Azurite");
        return false;
    };
    eprintln!("node {node}, npm {npm}");
    true
}

// ---------------------------------------------------------------- Azurite

/// The Azurite version installed: the last that runs on Node 20 (3.36 needs
/// Node 21).
pub const AZURITE_VERSION: &str = "3.35.0";

/// Where Azurite is installed: `<target dir>/azurite/<version>`.
pub fn azurite_cache() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| FsPath::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("azurite").join(AZURITE_VERSION)
}

pub fn azurite_bin(dir: &FsPath) -> PathBuf {
    dir.join("node_modules/.bin/azurite-blob")
}

/// Installs Azurite into the cache unless it is there. Concurrent test
/// processes each install into a directory of their own and rename it into
/// place; the first rename wins and the others use its result.
pub fn install_azurite() -> PathBuf {
    let dir = azurite_cache();
    if azurite_bin(&dir).exists() {
        return dir;
    }
    let parent = dir.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let tmp = parent.join(format!(
        ".{AZURITE_VERSION}-installing-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let started = Instant::now();
    eprintln!(
        "installing azurite@{AZURITE_VERSION} into {}",
        dir.display()
    );
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&tmp)
        .arg(format!("azurite@{AZURITE_VERSION}"))
        .output()
        .expect("run npm");
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        panic!(
            "npm install azurite@{AZURITE_VERSION} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(azurite_bin(&tmp).exists(), "npm installed no azurite-blob");
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(
            azurite_bin(&dir).exists(),
            "could not move the Azurite install into {}",
            dir.display()
        );
    }
    eprintln!("installed azurite in {:.1?}", started.elapsed());
    dir
}

/// A running Azurite blob service, killed (and its data removed) on drop,
/// panics included.
pub struct Azurite {
    child: Child,
    pub url: String,
    _location: TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    pub fn start(install: &FsPath) -> Azurite {
        let location = TempDir::new("azurite");
        let mut child = Command::new(azurite_bin(install))
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--location",
            ])
            .arg(&location.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start azurite-blob");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let log = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(url) = line.split("listens on ").nth(1) {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let log = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            log.lock().unwrap().push_str(&s);
        });
        // From here on the guard kills it, whatever happens.
        let mut azurite = Azurite {
            child,
            url: String::new(),
            _location: location,
        };
        let deadline = Duration::from_secs(60);
        match rx.recv_timeout(deadline) {
            Ok(url) => azurite.url = url,
            Err(_) => panic!(
                "Azurite did not report a listening port within {deadline:?}; its output:\n{}",
                output.lock().unwrap()
            ),
        }
        let addr = azurite.url.trim_start_matches("http://").to_owned();
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Azurite at {addr} does not accept connections; its output:\n{}",
                output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        azurite
    }

    /// Creates `container`: object_store has no call for it, so a tiny
    /// node script (node is there: it runs Azurite) sends the Create
    /// Container request signed with the well-known account key (Shared
    /// Key), with node's own http and crypto modules.
    /// An `object_store` client for `container` of this Azurite, made on
    /// the calling runtime.
    pub fn raw_store(&self, container: &str) -> Arc<dyn object_store::ObjectStore> {
        raw_store(&self.url, container)
    }

    pub fn create_container(&self, container: &str) {
        const SCRIPT: &str = r#"
const http = require('http'), crypto = require('crypto');
const [url, container] = process.argv.slice(-2);
const account = 'devstoreaccount1';
const key = Buffer.from('Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==', 'base64');
const date = new Date().toUTCString(), version = '2021-08-06';
const path = `/${account}/${container}`;
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  `x-ms-date:${date}`, `x-ms-version:${version}`,
  `/${account}${path}`, 'restype:container'].join('\n');
const sig = crypto.createHmac('sha256', key).update(toSign, 'utf8').digest('base64');
const req = http.request(`${url}${path}?restype=container`, { method: 'PUT', headers: {
  'x-ms-date': date, 'x-ms-version': version, 'Content-Length': 0,
  'Authorization': `SharedKey ${account}:${sig}` } }, res => {
  let body = ''; res.on('data', d => body += d);
  res.on('end', () => { if (res.statusCode !== 201) { console.error(res.statusCode, body); process.exit(1); } });
});
req.on('error', e => { console.error(e.message); process.exit(1); });
req.end();
"#;
        let out = Command::new("node")
            .args(["-e", SCRIPT, &self.url, container])
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "creating container {container} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An `object_store` client for `container` of the Azurite at `url`.
pub fn raw_store(url: &str, container: &str) -> Arc<dyn object_store::ObjectStore> {
    Arc::new(
        object_store::azure::MicrosoftAzureBuilder::new()
            .with_account("devstoreaccount1")
            .with_container_name(container)
            .with_access_key(ACCOUNT_KEY)
            .with_endpoint(format!("{url}/devstoreaccount1"))
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}
