//! Development certificates for the `service` and `agent` examples.
//!
//! Writes into `<dir>`: `enrollment-ca.pem` (the CA agents' certificates
//! chain to; the service trusts it), `agent.pem` + `agent.key` (an agent
//! certificate for `<workspace>` and a new agent id, PKCS#8 key; also as
//! `agent.key.der`),
//! `service-ca.pem` (the CA the agent trusts for the service) and
//! `service.pem` + `service.key` (for `localhost` and `127.0.0.1`). DER
//! copies of the certificates are written as `*.der` too. The CA keys are
//! not kept. For development only.
//!
//! ```text
//! cargo run -p opsdata-io --example certs -- <dir> <workspace-id>
//! ```

// An example may read the wall clock and draw random ids; the library never does.
#![allow(clippy::disallowed_methods)]

#[path = "support/pki.rs"]
mod pki;

use std::error::Error;
use std::path::{Path, PathBuf};

use chrono::Utc;
use opsdata::TenantId;
use uuid::Uuid;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, Box<dyn Error>> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, workspace] = args.as_slice() else {
        return Err("usage: certs <dir> <workspace-id>".into());
    };
    let workspace: TenantId = workspace
        .parse()
        .map_err(|e| format!("workspace id {workspace:?}: {e}"))?;
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let now = Utc::now();

    let enrollment = pki::ca("opsdata dev enrollment CA", now)?;
    let agent_id = Uuid::new_v4();
    let agent = pki::agent(
        &enrollment,
        &workspace.to_string(),
        &agent_id.to_string(),
        now,
    )?;
    let service_ca = pki::ca("opsdata dev service CA", now)?;
    let service = pki::service(&service_ca, &["localhost", "127.0.0.1"], now)?;

    write(dir, "enrollment-ca.pem", enrollment.pem.as_bytes())?;
    write(dir, "enrollment-ca.der", &enrollment.der)?;
    write(dir, "agent.pem", agent.pem.as_bytes())?;
    write(dir, "agent.der", &agent.der)?;
    let key = write(dir, "agent.key", agent.key_pem.as_bytes())?;
    restrict(&key)?;
    let key = write(dir, "agent.key.der", &agent.key_der)?;
    restrict(&key)?;
    write(dir, "service-ca.pem", service_ca.pem.as_bytes())?;
    write(dir, "service-ca.der", &service_ca.der)?;
    write(dir, "service.pem", service.pem.as_bytes())?;
    write(dir, "service.der", &service.der)?;
    let key = write(dir, "service.key", service.key_pem.as_bytes())?;
    restrict(&key)?;
    println!(
        "wrote {}: enrollment CA, agent {agent_id} of workspace {workspace}, service CA, service certificate for localhost and 127.0.0.1",
        dir.display()
    );
    Ok(())
}

/// Makes a key file readable by its owner only.
#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}
