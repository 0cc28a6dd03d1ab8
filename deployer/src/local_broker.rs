//! The broker's part, played on this machine for emulator environments with `broker` set: the
//! emulator has no ElastiCache or MemoryDB, so local `valkey-server` or `redis-server` processes
//! (Debian's package) run on 127.0.0.1, in their own process groups so they outlive the deploy
//! command, until `deploy destroy`. No persistence.
//!
//! `elasticache`: one server; restarted, it has lost everything, as a cache that failed over
//! without its last writes (the service starts a new epoch). `memorydb`: a one-shard cluster,
//! a primary and its replica, and the tasks are given the replica, as MemoryDB's cluster endpoint
//! may resolve to one: they reach the primary by following its `MOVED`, as they must there.
//!
//! Local ports, from the environment's `port`: the two edges on `port` and `port + 1`, the
//! ingest task on `port + 2`, the broker on `port + 3` (MemoryDB's replica on `port + 4`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use crate::config::BrokerEngine;
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

/// MemoryDB's replica, the node the tasks are given.
pub fn replica_port(base: u16) -> u16 {
    base + LOCAL_EDGES + 2
}

/// How tasks on this machine reach the local broker.
pub fn link(base: u16, engine: BrokerEngine) -> BrokerLink {
    let port = match engine {
        BrokerEngine::ElastiCache => broker_port(base),
        BrokerEngine::MemoryDb => replica_port(base),
    };
    BrokerLink {
        url: format!("redis://127.0.0.1:{port}"),
        user: None,
        password_secret_arn: None,
        client_security_group: None,
    }
}

/// The local broker, as recorded in `.local-aws/broker/ENV/broker.json`: the server (the
/// primary of a cluster) and, for `memorydb`, its replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerState {
    pub pid: u32,
    pub port: u16,
    pub server: String,
    pub log: PathBuf,
    #[serde(default)]
    pub replica: Option<Process>,
}

/// One more server process of the local broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub port: u16,
}

impl BrokerState {
    /// Every process, the replica first (the order they are stopped in).
    fn processes(&self) -> Vec<Process> {
        let primary = Process {
            pid: self.pid,
            port: self.port,
        };
        self.replica.iter().cloned().chain([primary]).collect()
    }

    /// What `status` says of it.
    pub fn describe(&self) -> String {
        match &self.replica {
            None => format!(
                "local {} pid {} on 127.0.0.1:{}",
                self.server, self.pid, self.port
            ),
            Some(r) => format!(
                "local {} cluster: primary pid {} on {}, replica pid {} on {}",
                self.server, self.pid, self.port, r.pid, r.port
            ),
        }
    }
}

fn dir(root: &Path, env: &str) -> PathBuf {
    root.join(".local-aws").join("broker").join(env)
}

fn state(root: &Path, env: &str) -> Option<BrokerState> {
    let text = std::fs::read_to_string(dir(root, env).join("broker.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Whether every process is still one we started (a recycled pid runs something else).
fn ours(state: &BrokerState) -> bool {
    state.processes().iter().all(|p| alive(&state.server, p))
}

fn alive(server: &str, p: &Process) -> bool {
    std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|cmd| {
        let cmd = String::from_utf8_lossy(&cmd);
        cmd.contains(server) && cmd.contains(&p.port.to_string())
    }) && !std::fs::read_to_string(format!("/proc/{}/stat", p.pid)).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X")
    })
}

/// Whether a broker answers PING on `port`.
fn answers(port: u16) -> bool {
    query::<String>(port, &["PING"], Duration::from_millis(500)).is_ok_and(|r| r == "PONG")
}

/// The server this machine has: Valkey's if installed, else Redis's.
fn server(engine: BrokerEngine) -> Result<&'static str, DeployError> {
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
        format!(
            "broker = \"{}\" runs a local Valkey for the emulator, and neither valkey-server nor redis-server is installed",
            engine.as_str()
        ),
        "install one (Debian: apt-get install redis-server), or remove broker from this environment",
    ))
}

/// Starts the local broker unless it already runs as `engine` wants, and says how tasks reach
/// it.
pub async fn ensure(
    root: &Path,
    env: &str,
    base: u16,
    engine: BrokerEngine,
    report: &Reporter,
) -> Result<BrokerLink, DeployError> {
    let port = broker_port(base);
    let clustered = engine == BrokerEngine::MemoryDb;
    if let Some(st) = state(root, env)
        && st.port == port
        && st.replica.as_ref().map(|r| r.port) == clustered.then(|| replica_port(base))
        && ours(&st)
        && st.processes().iter().all(|p| answers(p.port))
    {
        report.line(format!("{}: already runs", st.describe()));
        return Ok(link(base, engine));
    }
    // Whatever ran here in another shape (the other engine, another port) goes first.
    stop(root, env, report).await;
    let server = server(engine)?;
    let dir = dir(root, env);
    let log = dir.join("broker.log");
    let mut started = Vec::new();
    let formed = async {
        started.push(spawn(server, port, &dir, clustered, &log).await?);
        if clustered {
            started.push(spawn(server, replica_port(base), &dir, true, &log).await?);
            form_cluster(port, replica_port(base)).await?;
        }
        Ok::<_, DeployError>(())
    }
    .await;
    if let Err(e) = formed {
        for child in &mut started {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(e);
    }
    let st = BrokerState {
        pid: started[0].id(),
        port,
        server: server.to_string(),
        log,
        replica: started.get(1).map(|c| Process {
            pid: c.id(),
            port: replica_port(base),
        }),
    };
    let json = serde_json::to_string_pretty(&st).map_err(|e| DeployError::Local(e.to_string()))?;
    std::fs::write(dir.join("broker.json"), json).map_err(|e| DeployError::Local(e.to_string()))?;
    report.line(st.describe());
    Ok(link(base, engine))
}

/// Starts `server` on `port` (in cluster mode if `clustered`), its files in `dir/node-PORT`,
/// and waits until it answers.
async fn spawn(
    server: &str,
    port: u16,
    dir: &Path,
    clustered: bool,
    log: &Path,
) -> Result<std::process::Child, DeployError> {
    let local =
        |what: &Path, e: std::io::Error| DeployError::Local(format!("{}: {e}", what.display()));
    let home = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&home).map_err(|e| local(&home, e))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| local(log, e))?;
    let err = out.try_clone().map_err(|e| local(log, e))?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(server);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&home);
        if clustered {
            // A replica's first sync starts at once, not after the 5 s wait for more replicas.
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ]);
        }
        cmd.stdin(Stdio::null())
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
                crate::local::tail(log, 10).join("\n    ")
            )));
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DeployError::Local(format!(
                "the local broker did not answer on 127.0.0.1:{port} within 10 s (log: {})",
                log.display()
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// Makes the two nodes one shard: every slot on `primary`, `replica` following it; returns once
/// the replica is in sync.
async fn form_cluster(primary: u16, replica: u16) -> Result<(), DeployError> {
    let _: () = command(primary, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])?;
    let _: () = command(
        replica,
        &["CLUSTER", "MEET", "127.0.0.1", &primary.to_string()],
    )?;
    let id: String = command(primary, &["CLUSTER", "MYID"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    // The replica learns the primary by gossip, and can follow it only then.
    let mut following = false;
    loop {
        if !following {
            let nodes: String = command(replica, &["CLUSTER", "NODES"])?;
            if nodes.contains(&id) {
                let _: () = command(replica, &["CLUSTER", "REPLICATE", &id])?;
                following = true;
            }
        }
        // In sync, and knowing which node serves the slots (else it answers CLUSTERDOWN, not
        // MOVED).
        let has = |port: u16, args: &[&str], line: &str| {
            command::<String>(port, args).map(|info| info.lines().any(|l| l.trim() == line))
        };
        if following
            && has(replica, &["INFO", "replication"], "master_link_status:up")?
            && has(replica, &["CLUSTER", "INFO"], "cluster_state:ok")?
            && has(primary, &["CLUSTER", "INFO"], "cluster_state:ok")?
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DeployError::Local(format!(
                "the local broker's replica (127.0.0.1:{replica}) did not follow its primary (127.0.0.1:{primary}) within 10 s"
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// One command to the local server on `port`.
fn command<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, DeployError> {
    query(port, args, Duration::from_secs(2))
}

/// [`command`], waiting at most `wait` to connect and for the answer.
fn query<T: redis::FromRedisValue>(
    port: u16,
    args: &[&str],
    wait: Duration,
) -> Result<T, DeployError> {
    let failed = |e: redis::RedisError| {
        DeployError::Local(format!(
            "the local broker on 127.0.0.1:{port}: {args:?}: {e}"
        ))
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(failed)?;
    let mut conn = client.get_connection_with_timeout(wait).map_err(failed)?;
    conn.set_read_timeout(Some(wait)).map_err(failed)?;
    redis::cmd(args[0])
        .arg(&args[1..])
        .query(&mut conn)
        .map_err(failed)
}

/// Sends the signal `name` to `pid` (best effort: it may have gone already).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status();
}

/// Whether the local broker runs (for `status`).
pub fn running(root: &Path, env: &str) -> Option<BrokerState> {
    state(root, env).filter(|st| ours(st) && answers(st.port))
}

/// Stops the local broker; returns whether one ran.
pub async fn stop(root: &Path, env: &str, report: &Reporter) -> bool {
    let file = dir(root, env).join("broker.json");
    let Some(st) = state(root, env) else {
        let _ = std::fs::remove_file(file);
        return false;
    };
    let running: Vec<Process> = st
        .processes()
        .into_iter()
        .filter(|p| alive(&st.server, p))
        .collect();
    if !running.is_empty() {
        report.line(format!("{}: stopping", st.describe()));
    }
    for p in &running {
        signal(p.pid, "TERM");
        let started = Instant::now();
        while alive(&st.server, p) && started.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(20)).await;
        }
        if alive(&st.server, p) {
            signal(p.pid, "KILL");
        }
    }
    let _ = std::fs::remove_file(file);
    !running.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base port whose broker ports (`+ 3`, `+ 4`) are free now.
    fn free_base() -> u16 {
        loop {
            let first = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if first > 1_024 && std::net::TcpListener::bind(("127.0.0.1", first + 1)).is_ok() {
                return first - 3;
            }
        }
    }

    /// Kills whatever the broker state in `.0` names when the test ends, passed or not.
    struct Cleanup(tempfile::TempDir);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in state(self.0.path(), "t").map_or(Vec::new(), |s| s.processes()) {
                signal(p.pid, "KILL");
            }
        }
    }

    #[tokio::test]
    async fn memorydb_is_a_one_shard_cluster_whose_replica_sends_tasks_to_its_primary() {
        let cleanup = Cleanup(tempfile::tempdir().expect("tempdir"));
        let root = &cleanup.0;
        let (base, report) = (free_base(), Reporter::recording());
        let link = ensure(root.path(), "t", base, BrokerEngine::MemoryDb, &report)
            .await
            .expect("a local cluster");
        assert_eq!(
            link.url,
            format!("redis://127.0.0.1:{}", replica_port(base))
        );
        // The node the tasks are given redirects our keys to the primary, as MemoryDB's may.
        let got: redis::RedisResult<Option<String>> = (|| {
            let client = redis::Client::open(link.url.as_str())?;
            redis::cmd("GET")
                .arg("{tickstream}:epoch")
                .query(&mut client.get_connection()?)
        })();
        let err = got.expect_err("a replica redirects");
        let primary = format!("127.0.0.1:{}", broker_port(base));
        assert_eq!(
            err.redirect_node().map(|(to, _)| to),
            Some(primary.as_str())
        );
        let first = running(root.path(), "t").expect("runs");
        let replica = first.replica.clone().expect("a replica");

        // Deployed again: the same processes.
        ensure(root.path(), "t", base, BrokerEngine::MemoryDb, &report)
            .await
            .expect("already runs");
        assert_eq!(running(root.path(), "t").expect("runs").pid, first.pid);

        // Another engine: the cluster stops and one server takes its port.
        let single = ensure(root.path(), "t", base, BrokerEngine::ElastiCache, &report)
            .await
            .expect("one server");
        assert_eq!(
            single.url,
            format!("redis://127.0.0.1:{}", broker_port(base))
        );
        let now = running(root.path(), "t").expect("runs");
        assert!(now.replica.is_none() && now.pid != first.pid);
        for p in [&replica, &first.processes()[1]] {
            assert!(!alive(&first.server, p), "{p:?} still runs");
        }
        assert!(stop(root.path(), "t", &report).await);
        assert!(running(root.path(), "t").is_none());
        assert!(
            !stop(root.path(), "t", &report).await,
            "nothing left to stop"
        );
    }
}
