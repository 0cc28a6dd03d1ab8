//! The broker's part, played on this machine for emulator environments with `broker` set: the
//! emulator has no ElastiCache, so a local `valkey-server` or `redis-server` (Debian's package)
//! runs on 127.0.0.1, in its own process group so it outlives the deploy command, until
//! `deploy destroy`. No persistence, as a cache that fails over without its last writes: the
//! service starts a new epoch then.
//!
//! Local ports, from the environment's `port`: the two edges on `port` and `port + 1`, the
//! ingest task on `port + 2`, the broker on `port + 3`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use crate::error::DeployError;
use crate::infra::BrokerLink;
use crate::report::Reporter;

/// How many edge tasks the local environment runs (a client can resume on the other).
pub const LOCAL_EDGES: u16 = 2;

/// The local ports of an environment whose `port` is `base`.
pub fn edge_port(base: u16, index: u16) -> u16 {
    base + index
}

pub fn ingest_port(base: u16) -> u16 {
    base + LOCAL_EDGES
}

pub fn broker_port(base: u16) -> u16 {
    base + LOCAL_EDGES + 1
}

/// How tasks on this machine reach the local broker.
pub fn link(base: u16) -> BrokerLink {
    BrokerLink {
        url: format!("redis://127.0.0.1:{}", broker_port(base)),
        user: None,
        password_secret_arn: None,
        client_security_group: None,
    }
}

/// The local broker, as recorded in `.local-aws/broker/ENV/broker.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerState {
    pub pid: u32,
    pub port: u16,
    pub server: String,
    pub log: PathBuf,
}

fn dir(root: &Path, env: &str) -> PathBuf {
    root.join(".local-aws").join("broker").join(env)
}

fn state(root: &Path, env: &str) -> Option<BrokerState> {
    let text = std::fs::read_to_string(dir(root, env).join("broker.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether `pid` is still the broker we started (a recycled pid runs something else).
fn ours(state: &BrokerState) -> bool {
    std::fs::read(format!("/proc/{}/cmdline", state.pid)).is_ok_and(|cmd| {
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.contains(&state.server) && cmd.contains(&state.port.to_string())
    }) && !std::fs::read_to_string(format!("/proc/{}/stat", state.pid)).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X")
    })
}

/// Whether a broker answers PING on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// The server this machine has: Valkey's if installed, else Redis's.
fn server() -> Result<&'static str, DeployError> {
    for name in ["valkey-server", "redis-server"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Ok(name);
        }
    }
    Err(DeployError::refused(
        crate::error::Kind::NoLocalBroker,
        "broker = \"elasticache\" runs a local Valkey for the emulator, and neither valkey-server nor redis-server is installed",
        "install one (Debian: apt-get install redis-server), or remove broker from this environment",
    ))
}

/// Starts the local broker unless it already runs, and says how tasks reach it.
pub async fn ensure(
    root: &Path,
    env: &str,
    base: u16,
    report: &Reporter,
) -> Result<BrokerLink, DeployError> {
    let port = broker_port(base);
    if let Some(st) = state(root, env)
        && st.port == port
        && ours(&st)
        && answers(port)
    {
        report.line(format!(
            "local broker {}: already runs on 127.0.0.1:{port}",
            st.pid
        ));
        return Ok(link(base));
    }
    let server = server()?;
    let dir = dir(root, env);
    std::fs::create_dir_all(&dir)
        .map_err(|e| DeployError::Local(format!("{}: {e}", dir.display())))?;
    let log = dir.join("broker.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| DeployError::Local(format!("{}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| DeployError::Local(e.to_string()))?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| DeployError::Local(format!("starting {server}: {e}")))?
    };
    let started = Instant::now();
    while !answers(port) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DeployError::Local(format!(
                "the local broker ({server}) exited with {status}; last log lines:\n    {}",
                crate::local::tail(&log, 10).join("\n    ")
            )));
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return Err(DeployError::Local(format!(
                "the local broker did not answer on 127.0.0.1:{port} within 10 s (log: {})",
                log.display()
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
    let st = BrokerState {
        pid: child.id(),
        port,
        server: server.to_string(),
        log,
    };
    let json = serde_json::to_string_pretty(&st).map_err(|e| DeployError::Local(e.to_string()))?;
    std::fs::write(dir.join("broker.json"), json).map_err(|e| DeployError::Local(e.to_string()))?;
    report.line(format!(
        "local broker {}: {server} on 127.0.0.1:{port}",
        st.pid
    ));
    Ok(link(base))
}

/// Whether the local broker runs (for `status`).
pub fn running(root: &Path, env: &str) -> Option<BrokerState> {
    state(root, env).filter(|st| ours(st) && answers(st.port))
}

/// Stops the local broker; returns whether one ran.
pub async fn stop(root: &Path, env: &str, report: &Reporter) -> bool {
    let file = dir(root, env).join("broker.json");
    let Some(st) = state(root, env).filter(ours) else {
        let _ = std::fs::remove_file(file);
        return false;
    };
    report.line(format!("local broker {}: stopping", st.pid));
    let _ = Command::new("kill").arg(st.pid.to_string()).status();
    let started = Instant::now();
    while ours(&st) && started.elapsed() < Duration::from_secs(5) {
        sleep(Duration::from_millis(20)).await;
    }
    if ours(&st) {
        let _ = Command::new("kill")
            .args(["-KILL", &st.pid.to_string()])
            .status();
    }
    let _ = std::fs::remove_file(file);
    true
}
