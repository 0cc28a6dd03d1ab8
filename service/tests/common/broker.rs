//! A real `redis-server` (or `valkey-server`) and real `tickstream` processes on 127.0.0.1, for
//! the broker tests: processes, because those tests kill, pause and restart them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Ws, connect, recv_control, send};

/// A free port on 127.0.0.1 (bound and released; nothing else here picks ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The broker server this machine has: Valkey's if installed, else Redis's. The README's test
/// command installs `redis-server`; a machine without either fails here, saying so.
fn server_binary() -> &'static str {
    for name in ["valkey-server", "redis-server"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name;
        }
    }
    panic!("neither valkey-server nor redis-server is installed (apt-get install redis-server)");
}

/// A broker with no persistence: killed and started again, it has lost everything, as a
/// cache node that failed over without its last writes.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    /// TLS only, and AUTH with this password.
    secure: Option<(std::sync::Arc<super::tls::TestTls>, String)>,
    /// Where [`Broker::save`] writes its snapshot and a restart reads it.
    dir: tempfile::TempDir,
    /// A node of a [`Cluster`]: cluster mode on, and (TLS or not) a plain port for the test's
    /// own commands.
    clustered: Option<u16>,
}

/// The password of [`Broker::start_secure`].
pub const PASSWORD: &str = "correct-horse-battery-staple";

impl Broker {
    pub fn start() -> Self {
        let mut broker = Self {
            port: free_port(),
            child: None,
            secure: None,
            dir: tempfile::tempdir().expect("tempdir"),
            clustered: None,
        };
        broker.spawn();
        broker
    }

    /// TLS only (a certificate for 127.0.0.1 from a throwaway CA) and AUTH, as ElastiCache
    /// with encryption in transit and a password.
    pub fn start_secure() -> Self {
        let tls = super::tls::TestTls::new(&["127.0.0.1"]);
        let mut broker = Self {
            port: free_port(),
            child: None,
            secure: Some((tls.into(), PASSWORD.into())),
            dir: tempfile::tempdir().expect("tempdir"),
            clustered: None,
        };
        broker.spawn();
        broker
    }

    pub fn url(&self) -> String {
        let scheme = if self.secure.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What a client process needs besides the URL: the CA to trust, and the password.
    pub fn client_env(&self) -> Vec<(String, String)> {
        let Some((tls, password)) = &self.secure else {
            return Vec::new();
        };
        vec![
            ("SSL_CERT_FILE".into(), tls.ca_file.display().to_string()),
            ("TICKSTREAM_BROKER_PASSWORD".into(), password.clone()),
        ]
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(server_binary());
        let admin = self.clustered.unwrap_or(0).to_string();
        match &self.secure {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((tls, password)) => cmd
                .args(["--port", &admin, "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_file)
                .args(["--tls-auth-clients", "no", "--requirepass", password])
                // A cluster's nodes talk TLS to each other, and replicas log in.
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--masterauth", password]),
        };
        if self.clustered.is_some() {
            // A replica's first sync starts at once, not after the 5 s wait for more replicas.
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the broker");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Killed and started again on the same port, empty.
    pub fn restart_empty(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        self.spawn();
    }

    /// Writes a snapshot of everything now (SAVE).
    pub async fn save(&self) {
        let _: () = self.query(&["SAVE"]).await;
    }

    /// What the command `args` answers (a plain broker's; panics on an error).
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let url = match (self.clustered, &self.secure) {
            (Some(admin), Some((_, password))) => format!("redis://:{password}@127.0.0.1:{admin}"),
            (Some(admin), None) => format!("redis://127.0.0.1:{admin}"),
            (None, _) => self.url(),
        };
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        redis::cmd(args[0])
            .arg(&args[1..])
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The field `name` of what `args` (`INFO replication`, `CLUSTER INFO`) answers.
    async fn info(&self, args: &[&str], name: &str) -> String {
        let info: String = self.query(args).await;
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Killed and started again from the last [`Broker::save`]: what was written after it is
    /// lost, as when a cache fails over to a replica that had not received the last writes.
    pub fn restart_from_snapshot(&mut self) {
        assert!(self.dir.path().join("dump.rdb").is_file(), "save first");
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`false`) or SIGCONT (`true`).
    pub fn run(&self, running: bool) {
        let pid = self.child.as_ref().expect("running").id();
        signal(pid, if running { "CONT" } else { "STOP" });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
        self.kill();
    }
}

/// How long a cluster may take to form or to fail over.
const CLUSTER_WAIT: Duration = Duration::from_secs(10);

/// A one-shard cluster of two nodes, a primary and its replica, as MemoryDB runs one (TLS only,
/// with a password): the node a client first reaches may be the replica, which redirects every
/// command on our keys with `MOVED`, and a failover swaps the two.
pub struct Cluster {
    pub nodes: [Broker; 2],
}

impl Cluster {
    /// Node 0 the primary (every slot), node 1 its replica; returns once the replica is in sync.
    pub async fn start() -> Self {
        let tls = std::sync::Arc::new(super::tls::TestTls::new(&["127.0.0.1"]));
        let node = || {
            let mut broker = Broker {
                port: free_port(),
                child: None,
                secure: Some((tls.clone(), PASSWORD.into())),
                dir: tempfile::tempdir().expect("tempdir"),
                clustered: Some(free_port()),
            };
            broker.spawn();
            broker
        };
        let cluster = Self {
            nodes: [node(), node()],
        };
        let [primary, replica] = &cluster.nodes;
        let _: () = primary
            .query(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"])
            .await;
        let port = primary.port.to_string();
        let _: () = replica
            .query(&["CLUSTER", "MEET", "127.0.0.1", &port])
            .await;
        let id: String = primary.query(&["CLUSTER", "MYID"]).await;
        // The replica learns the primary's id by gossip; REPLICATE fails until it has.
        super::until("the replica follows the primary", CLUSTER_WAIT, || async {
            let known: String = replica.query(&["CLUSTER", "NODES"]).await;
            if !known.contains(&id) {
                return false;
            }
            let _: () = replica.query(&["CLUSTER", "REPLICATE", &id]).await;
            true
        })
        .await;
        super::until(
            "the replica in sync and the cluster ok",
            CLUSTER_WAIT,
            || async {
                replica
                    .info(&["INFO", "replication"], "master_link_status")
                    .await
                    == "up"
                    && primary.info(&["CLUSTER", "INFO"], "cluster_state").await == "ok"
                    && replica.info(&["CLUSTER", "INFO"], "cluster_state").await == "ok"
            },
        )
        .await;
        cluster
    }

    /// A manual failover to node `to` (`CLUSTER FAILOVER`: the primary stops taking writes
    /// until the replica has all of them, then the replica takes over; nothing acknowledged is
    /// lost, as MemoryDB promises); returns once the two have swapped roles.
    pub async fn failover(&self, to: usize) {
        let (new, old) = (&self.nodes[to], &self.nodes[1 - to]);
        let _: () = new.query(&["CLUSTER", "FAILOVER"]).await;
        super::until("the failover", CLUSTER_WAIT, || async {
            new.info(&["INFO", "replication"], "role").await == "master"
                && old.info(&["INFO", "replication"], "role").await == "slave"
        })
        .await;
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid}");
}

/// A `tickstream` process.
#[derive(Debug)]
pub struct Node {
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Node {
    /// Starts `tickstream ARGS --listen 127.0.0.1:PORT` (with `--broker` of `broker`, if any).
    pub fn start(broker: Option<&Broker>, args: &[&str]) -> Self {
        Self::start_with(
            broker,
            args,
            broker.map(Broker::client_env).unwrap_or_default(),
        )
    }

    /// The same with the environment `env` (a broker's client settings, or some of them).
    pub fn start_with(broker: Option<&Broker>, args: &[&str], env: Vec<(String, String)>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickstream"));
        cmd.args(args)
            .args(["--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(broker) = broker {
            cmd.args(["--broker", &broker.url()]);
        }
        let child = cmd.spawn().expect("start tickstream");
        Self {
            addr,
            child: Some(child),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The status of `GET path` and its body (`None` while nothing answers).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let (addr, path) = (self.addr, path.to_string());
        tokio::task::spawn_blocking(move || {
            tickstream::probe::http_get(addr, &path, Duration::from_secs(2)).ok()
        })
        .await
        .ok()?
    }

    pub async fn ready(&self) -> bool {
        self.get("/readyz").await.is_some_and(|(s, _)| s == 200)
    }

    /// Polls `/healthz` until the process answers.
    pub async fn until_up(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.get("/healthz").await.is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: not up",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/readyz` until it answers `want` (200: true); fails after `within`.
    pub async fn until_ready(&self, want: bool, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.ready().await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: /readyz not {} within {within:?}",
                self.addr,
                if want { "200" } else { "503" }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A metric's value (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let Some((_, body)) = self.get("/metrics").await else {
            return 0.0;
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// Polls a metric until `want` holds for it.
    pub async fn until_metric(&self, name: &str, within: Duration, want: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.metric(name).await;
            if want(v) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {name} is {v}, not as wanted within {within:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn epoch(&self) -> String {
        let (_, body) = self.get("/api/v1/symbols").await.expect("symbols");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        v["epoch"].as_str().expect("epoch").to_string()
    }

    /// SIGTERM, and waits for the process to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Subscribes `ws` to `channels` of `symbols` (resuming from `resume` in `epoch`, if given)
/// and returns the acknowledgement.
pub async fn subscribe(
    ws: &mut Ws,
    symbols: &[&str],
    channels: &[&str],
    epoch: Option<&str>,
    resume: &serde_json::Map<String, Value>,
) -> Value {
    let mut msg = json!({"op": "subscribe", "id": 1, "symbols": symbols, "channels": channels});
    if let Some(epoch) = epoch {
        msg["epoch"] = json!(epoch);
        msg["resume"] = Value::Object(resume.clone());
    }
    send(ws, msg).await;
    let ack = recv_control(ws).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    ack
}

/// Connects to `node` and subscribes; see [`subscribe`].
pub async fn client(node: &Node, symbols: &[&str], channels: &[&str]) -> (Ws, Value) {
    let mut ws = connect(&node.ws_url()).await;
    let ack = subscribe(&mut ws, symbols, channels, None, &Default::default()).await;
    (ws, ack)
}

/// A recording of the data messages a client received, as text.
pub fn recorded_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tickstream-{name}-{}.ndjson", std::process::id()))
}
