//! The `deploy` binary end to end against the local AWS (`localstack/local-aws`: moto and a real
//! OCI registry, behind a front that answers as ECR does), the way a user runs it: a first
//! deploy creates everything and serves live data; a second changes nothing; a new image rolls
//! out a new revision; `plan`, `status`, `logs`, `rollback` and `destroy` work; the pushed
//! manifest is in the registry under the digest the task definition names.
//!
//! Needs `TICKSTREAM_LOCAL_AWS` (the emulator) and `TICKSTREAM_STATIC_BIN` (the static musl
//! binary); `scripts/check` provides both, and without them this test fails naming them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

/// The region the whole test runs in, given only as AWS_REGION (deploy.toml names none).
const REGION: &str = "eu-west-2";

fn required(var: &str, how: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: {how}"))
}

/// The first of `n` consecutive ports for the local tasks, below the kernel's ephemeral range:
/// the tasks bind them later, and a port released from `bind(0)` could meanwhile be handed to
/// another test's double.
fn task_ports(n: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let low = 20_000.min(range.saturating_sub(4000));
    let start = (std::process::id() % 3000) as u16;
    for _ in 0..3000 {
        let k = NEXT.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        let port = low + (start + k) % 3000;
        if (port..port + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return port;
        }
    }
    panic!("no free port in {low}..{}", low + 3000);
}

/// A deploy.toml for an environment of its own, so the test never touches a user's `local`.
/// Its images go through a registry front that answers as ECR does.
struct Env {
    dir: tempfile::TempDir,
    name: String,
    port: u16,
    endpoint: String,
    front: crate::support::ecr_front::EcrFront,
}

/// Tests that destroy an environment hold this: moto cannot delete a VPC stack, so a destroy
/// resets the whole emulator, which must not happen under another test's deploy.
static EMULATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Env {
    fn new() -> Env {
        Env::with("", "", 1)
    }

    /// An environment named with `suffix`, with `extra` settings in its table, and `ports`
    /// consecutive local ports from its `port`.
    fn with(suffix: &str, extra: &str, ports: u16) -> Env {
        let endpoint = required(
            "TICKSTREAM_LOCAL_AWS",
            "run ./scripts/check, or `localstack/local-aws start` and set it to http://127.0.0.1:4566",
        );
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "tests only talk to 127.0.0.1"
        );
        let port = task_ports(ports);
        let name = format!("e{}{suffix}", std::process::id() % 1_000_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let front = crate::support::ecr_front::EcrFront::start("http://127.0.0.1:5000");
        std::fs::write(
            dir.path().join("deploy.toml"),
            format!(
                "[defaults]\napp = \"tickstream\"\n[defaults.environment]\nTICKSTREAM_SIM_RATE = \"20\"\n\
                 [env.{name}]\nemulator = true\nendpoint_url = \"{endpoint}\"\nregistry_url = \"{}\"\n\
                 port = {port}\ndesired_count = 1\nmin_count = 1\nmax_count = 2\nrepository = \"tickstream-{name}\"\n{extra}",
                front.url
            ),
        )
        .expect("deploy.toml");
        Env {
            dir,
            name,
            port,
            endpoint,
            front,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_deploy"))
            .args(["--env", &self.name, "--output", "json"])
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            // The region only from the environment, as a profile or AWS_REGION gives it.
            .env("AWS_REGION", REGION)
            .output()
            .expect("run deploy")
    }

    /// Runs and returns the JSON result, failing with the live view when the command failed.
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "deploy {args:?}: {}\n{stdout}\n{stderr}",
            out.status
        );
        let doc: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
        assert_eq!(doc["ok"], true, "{doc}");
        doc["result"].clone()
    }

    /// An ECS client of the emulator, in the test's region.
    async fn ecs(&self) -> aws_sdk_ecs::Client {
        let sdk = tickstream_deployer::aws::load(&tickstream_deployer::aws::AwsTarget {
            endpoint_url: Some(self.endpoint.clone()),
            emulator_credentials: true,
            region: Some(REGION.into()),
            ..Default::default()
        })
        .await;
        aws_sdk_ecs::Client::new(&sdk)
    }

    fn task_pid(&self) -> Option<u32> {
        self.pid_in(&format!("tasks/tickstream-{}/task.json", self.name))
    }

    /// The pid recorded in `.local-aws/FILE`.
    fn pid_in(&self, file: &str) -> Option<u32> {
        let path = self.dir.path().join(".local-aws").join(file);
        let state: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        state["pid"].as_u64().map(|p| p as u32)
    }

    /// Every process a deploy of this environment may have left: tasks and a local broker (a
    /// server, or a primary and its replica).
    fn pids(&self) -> Vec<u32> {
        let n = &self.name;
        let mut pids: Vec<u32> = [
            format!("tasks/tickstream-{n}/task.json"),
            format!("tasks/tickstream-{n}-2/task.json"),
            format!("tasks/tickstream-{n}-ingest/task.json"),
            format!("broker/{n}/broker.json"),
        ]
        .iter()
        .filter_map(|f| self.pid_in(f))
        .collect();
        let broker = self
            .dir
            .path()
            .join(format!(".local-aws/broker/{n}/broker.json"));
        if let Some(replica) = std::fs::read_to_string(broker)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|b| b["replica"]["pid"].as_u64())
        {
            pids.push(replica as u32);
        }
        pids
    }
}

impl Drop for Env {
    /// A failed test must not leave a task or a broker running.
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn variant(binary: &Path, dir: &Path) -> PathBuf {
    // The same program with a different digest: trailing bytes do not change what runs.
    let mut bytes = std::fs::read(binary).expect("binary");
    bytes.extend_from_slice(b"\0second build");
    let path = dir.join("tickstream-v2");
    std::fs::write(&path, bytes).expect("write");
    path
}

async fn first_update(url: &str) -> Value {
    epoch_and_update(url).await.1
}

/// The digest the registry holds under `reference`, asked with the same login the deployer used.
async fn registry_digest(repository: &str, reference: &str) -> Option<String> {
    tickstream_deployer::tls();
    let url = format!("http://127.0.0.1:5000/v2/{repository}/manifests/{reference}");
    let response = reqwest::Client::new()
        .head(&url)
        .basic_auth("AWS", Some("123456789012-auth-token"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("registry answers");
    if !response.status().is_success() {
        return None;
    }
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_redeploy_roll_out_roll_back_and_destroy_locally() {
    let _emulator = EMULATOR.lock().await;
    let binary = required(
        "TICKSTREAM_STATIC_BIN",
        "run ./scripts/check, which builds the static musl binary",
    );
    let env = Env::new();
    let url = format!("ws://127.0.0.1:{}/ws", env.port);

    // 1. First deploy: everything is created, and the URL streams.
    let first = env.ok(&["--binary", &binary]);
    assert_eq!(first["stacks"][0]["change"], "create", "{first}");
    assert_eq!(first["stacks"][1]["change"], "create");
    assert_eq!(first["task_definition"]["registered"], true);
    assert_eq!(first["service"]["action"], "create");
    assert_eq!(first["url"], url.as_str());
    assert_eq!(
        first["dashboard_url"],
        format!("http://127.0.0.1:{}/", env.port)
    );
    let reference = first["image"]["reference"]
        .as_str()
        .expect("reference")
        .to_string();
    let digest = reference
        .rsplit_once('@')
        .expect("pinned by digest")
        .1
        .to_string();
    let update = first_update(&url).await;
    assert!(update["seq"].as_u64().is_some(), "{update}");

    // The pushed manifest is in the registry under the digest the task definition names, and
    // the image went up as ECR takes it: no PATCH.
    assert!(reference.starts_with(&env.front.host()), "{reference}");
    assert!(
        env.front.log().iter().all(|l| !l.starts_with("PATCH")),
        "{:?}",
        env.front.log()
    );
    let repository = format!("tickstream-{}", env.name);
    assert_eq!(
        registry_digest(&repository, &digest).await.as_deref(),
        Some(digest.as_str())
    );
    let ecs = env.ecs().await;
    let arn = first["task_definition"]["arn"].as_str().expect("arn");
    let td = ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .expect("describe");
    let td = td.task_definition().expect("task definition");
    let container = &td.container_definitions()[0];
    assert_eq!(container.image(), Some(reference.as_str()));
    assert_eq!(container.readonly_root_filesystem(), Some(true));
    // awslogs-region is the region the SDK resolved, never empty.
    let log_options = container
        .log_configuration()
        .and_then(|l| l.options())
        .expect("log options");
    assert_eq!(
        log_options.get("awslogs-region").map(String::as_str),
        Some(REGION)
    );
    assert!(arn.contains(&format!(":ecs:{REGION}:")), "{arn}");
    assert_eq!(container.user(), Some("10001:10001"));
    assert_eq!(
        td.runtime_platform()
            .and_then(|p| p.cpu_architecture())
            .map(|a| a.as_str()),
        Some("X86_64")
    );
    let pid1 = env.task_pid().expect("a local task");

    // 2. The same deploy again changes nothing: no push, no revision, no service update.
    let second = env.ok(&["--binary", &binary]);
    assert_eq!(second["stacks"][0]["change"], "unchanged", "{second}");
    assert_eq!(second["stacks"][1]["change"], "unchanged");
    assert_eq!(second["image"]["pushed"]["blobs_uploaded"], 0);
    assert_eq!(second["image"]["pushed"]["manifest_written"], false);
    assert_eq!(second["task_definition"]["registered"], false);
    assert_eq!(second["task_definition"]["arn"], arn);
    assert_eq!(second["service"]["action"], "unchanged");
    assert_eq!(
        env.task_pid(),
        Some(pid1),
        "the running task was left alone"
    );
    let plan = env.ok(&["plan", "--binary", &binary]);
    assert_eq!(plan["changes"], false, "{plan}");

    // 3. A new image: plan says so, deploy registers revision 2 and replaces the task.
    let v2 = variant(Path::new(&binary), env.dir.path());
    let v2 = v2.to_str().expect("utf-8 path");
    let plan = env.ok(&["--dry-run", "--binary", v2]);
    assert_eq!(plan["changes"], true);
    assert_eq!(plan["image_in_registry"], false);
    assert_eq!(plan["task_definition"][0]["field"], "image", "{plan}");
    let third = env.ok(&["--binary", v2]);
    let arn2 = third["task_definition"]["arn"]
        .as_str()
        .expect("arn")
        .to_string();
    assert!(
        arn2.ends_with(&format!("tickstream-{}:2", env.name)),
        "{arn2}"
    );
    assert_eq!(third["service"]["action"], "update");
    assert_ne!(third["image"]["reference"], reference.as_str());
    let pid2 = env.task_pid().expect("task");
    assert_ne!(pid2, pid1);
    assert!(!alive(pid1), "the old task was stopped");
    first_update(&url).await;

    // 4. Status shows the service, its deployment and the live task.
    let status = env.ok(&["status"]);
    assert_eq!(
        status["task_definition"],
        format!("tickstream-{}:2", env.name),
        "{status}"
    );
    assert_eq!(status["deployments"][0]["rollout_state"], "COMPLETED");
    assert_eq!(status["local_task_ready"], true);

    // 5. Logs are the task's own lines.
    let logs = env.run(&["logs", "--lines", "5"]);
    assert!(logs.status.success());
    let logs = String::from_utf8_lossy(&logs.stdout);
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 5, "{logs}");
    assert!(
        lines
            .iter()
            .all(|l| l["task"] == "local" && l["message"].is_string()),
        "{logs}"
    );

    // 6. Rollback returns to revision 1, verified.
    let back = env.ok(&["rollback"]);
    assert_eq!(back["to"], arn, "{back}");
    assert_eq!(back["from"], arn2.as_str());
    let pid3 = env.task_pid().expect("task");
    assert!(!alive(pid2));
    first_update(&url).await;
    let td_now = env.ok(&["status"]);
    assert_eq!(
        td_now["task_definition"],
        format!("tickstream-{}:1", env.name)
    );

    // 7. Destroy stops the task and removes the service and the stacks.
    let out = env.run(&["destroy"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "without a terminal, destroy needs --yes"
    );
    assert!(alive(pid3), "an unconfirmed destroy changes nothing");
    let gone = env.ok(&["destroy", "--yes"]);
    assert_eq!(gone["local_task_stopped"], true, "{gone}");
    assert_eq!(gone["service_deleted"], true);
    assert!(!alive(pid3));
    let status = env.ok(&["status"]);
    assert_eq!(status["stacks"][0][1], "absent", "{status}");
    assert!(status["service"].is_null());
}

#[test]
fn bad_configuration_fails_before_any_aws_call() {
    // Something that counts connections stands where AWS would be.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"{endpoint}\"\ncpu = 512\nmemory = 512\n\
             port = 80\narchitecture = \"sparc\"\n[env.dev.secrets]\nAPI_KEY = \"plain-text\"\n"
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--env", "dev", "--output", "json"])
        .current_dir(dir.path())
        .env("DEPLOY_DESIRED_COUNT", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["kind"], "invalid_configuration");
    let keys: Vec<&str> = doc["error"]["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .map(|i| i["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        ["memory", "architecture", "port", "secrets.API_KEY"],
        "{doc}"
    );
    for issue in doc["error"]["issues"].as_array().expect("issues") {
        assert!(
            !issue["fix"].as_str().unwrap_or("").is_empty(),
            "every issue says how to fix it: {issue}"
        );
    }
    assert!(listener.accept().is_err(), "no connection was made to AWS");

    // A misspelt key, and an unknown environment, in text mode.
    std::fs::write(
        dir.path().join("deploy.toml"),
        "[env.dev]\nregoin = \"eu-west-1\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--env", "dev"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("regoin") && stderr.contains("deploy.toml"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("deploy.toml"), "[env.dev]\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .args(["--env", "staging", "status"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(it has dev)"));
    assert!(listener.accept().is_err(), "still no connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lambda_tier_deploys_into_the_emulator_and_only_on_change() {
    let _emulator = EMULATOR.lock().await;
    let binary = required(
        "TICKSTREAM_STATIC_BIN",
        "run ./scripts/check, which builds the static musl binary",
    );
    let env = Env::new();
    // Bytes of its own, so its zip is new to the bucket whatever ran before.
    let mut bytes = std::fs::read(&binary).expect("binary");
    bytes.extend_from_slice(env.name.as_bytes());
    let own = env.dir.path().join("tickstream-lambda");
    std::fs::write(&own, bytes).expect("write");
    let binary = own.to_str().expect("utf-8").to_string();
    let first = env.ok(&["--target", "lambda", "--binary", &binary]);
    assert_eq!(first["stack_change"], "create", "{first}");
    assert_eq!(first["uploaded"], true);
    assert_eq!(first["function"], format!("tickstream-{}-api", env.name));
    assert!(
        first["verified"]
            .as_str()
            .is_some_and(|v| v.contains("answered a ticker")),
        "{first}"
    );
    assert!(
        first["zip_bytes"]
            .as_u64()
            .is_some_and(|n| n > 100_000 && n < 10_000_000),
        "{first}"
    );

    let again = env.ok(&["--target", "lambda", "--binary", &binary]);
    assert_eq!(again["stack_change"], "unchanged", "{again}");
    assert_eq!(again["uploaded"], false);
    assert_eq!(again["key"], first["key"]);

    let status = env.ok(&["--target", "lambda", "status"]);
    assert_eq!(status["status"], "CREATE_COMPLETE", "{status}");
    assert!(
        status["outputs"]["FunctionArn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:lambda:")),
        "{status}"
    );

    let gone = env.ok(&["--target", "lambda", "destroy", "--yes"]);
    assert_eq!(gone["status"], "deleted", "{gone}");
    assert_eq!(
        env.ok(&["--target", "lambda", "status"])["status"],
        "absent"
    );
    let plan = env.run(&["--target", "lambda", "plan"]);
    assert_eq!(plan.status.code(), Some(2), "unsupported commands say so");
}

/// Subscribes to AAPL's ticker at `url` and returns the acknowledgement's epoch and the first
/// update.
async fn epoch_and_update(url: &str) -> (String, Value) {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"op":"subscribe","id":1,"symbols":["AAPL"],"channels":["ticker"]}"#.into(),
    ))
    .await
    .expect("send");
    let mut epoch = None;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "subscribed" {
                epoch = v["epoch"].as_str().map(str::to_string);
            }
            if v["type"] == "update" {
                return (epoch.expect("acknowledged before the first update"), v);
            }
        }
    }
}

/// `broker = "elasticache"` in an emulator environment: a local Valkey/Redis plays the cache,
/// the ingest service rolls out before the edge service, one ingest task and two edge tasks
/// run here, both edges serve the same epoch; `"memorydb"` makes the local broker a one-shard
/// cluster whose replica the tasks are given; turned off, the broker's parts go, and destroy
/// removes the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_environment_runs_a_local_broker_one_ingest_and_two_edges() {
    let _emulator = EMULATOR.lock().await;
    let binary = required(
        "TICKSTREAM_STATIC_BIN",
        "run ./scripts/check, which builds the static musl binary",
    );
    let env = Env::with("b", "broker = \"elasticache\"\n", 5);
    let (p, n) = (env.port, env.name.clone());
    let first = env.ok(&["--binary", &binary]);
    // The emulator has no ElastiCache: no broker stack, a local server instead.
    let stacks: Vec<&str> = first["stacks"]
        .as_array()
        .expect("stacks")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        stacks,
        [
            format!("tickstream-{n}-network"),
            format!("tickstream-{n}-platform")
        ],
        "{first}"
    );
    assert_eq!(
        first["broker"]["url"],
        format!("redis://127.0.0.1:{}", p + 3)
    );
    assert_eq!(
        first["ingest"]["service"]["name"],
        format!("tickstream-{n}-ingest")
    );
    assert_eq!(first["ingest"]["service"]["action"], "create");
    assert_eq!(first["ingest"]["service"]["autoscaling_changed"], false);
    assert_eq!(first["service"]["name"], format!("tickstream-{n}"));
    assert_eq!(first["service"]["action"], "create");
    let urls: Vec<String> = (0..2)
        .map(|i| format!("ws://127.0.0.1:{}/ws", p + i))
        .collect();
    assert_eq!(first["urls"], serde_json::json!(urls), "{first}");
    let ports: Vec<u64> = first["local_tasks"]
        .as_array()
        .expect("local tasks")
        .iter()
        .map(|t| t["port"].as_u64().expect("port"))
        .collect();
    assert_eq!(
        ports,
        [u64::from(p) + 2, u64::from(p), u64::from(p) + 1],
        "the ingest task first, then the edges"
    );

    // Each task definition runs its role against the broker.
    let ecs = env.ecs().await;
    for (result, role) in [(&first["ingest"], "ingest"), (&first, "edge")] {
        let arn = result["task_definition"]["arn"].as_str().expect("arn");
        let td = ecs
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .expect("describe");
        let env_of = |name: &str| {
            td.task_definition()
                .and_then(|t| t.container_definitions().first())
                .and_then(|c| c.environment().iter().find(|kv| kv.name() == Some(name)))
                .and_then(|kv| kv.value().map(str::to_string))
        };
        assert_eq!(env_of("TICKSTREAM_ROLE").as_deref(), Some(role), "{arn}");
        assert_eq!(
            env_of("TICKSTREAM_BROKER"),
            Some(format!("redis://127.0.0.1:{}", p + 3))
        );
    }

    // Both edges serve one stream: the same epoch, live updates.
    let (epoch_a, update) = epoch_and_update(&urls[0]).await;
    assert!(update["seq"].as_u64().is_some(), "{update}");
    let (epoch_b, _) = epoch_and_update(&urls[1]).await;
    assert_eq!(epoch_a, epoch_b, "two edges of one broker");
    assert!(epoch_a.starts_with("sim-"), "{epoch_a}");

    // Again: nothing changes, nothing restarts.
    let pids = env.pids();
    assert_eq!(pids.len(), 4, "three tasks and the broker");
    let second = env.ok(&["--binary", &binary]);
    assert_eq!(
        second["ingest"]["service"]["action"], "unchanged",
        "{second}"
    );
    assert_eq!(second["ingest"]["task_definition"]["registered"], false);
    assert_eq!(second["service"]["action"], "unchanged");
    assert_eq!(env.pids(), pids, "every process was left alone");

    let status = env.ok(&["status"]);
    assert_eq!(
        status["ingest"]["service"],
        format!("tickstream-{n}-ingest ACTIVE"),
        "{status}"
    );
    assert_eq!(status["service"], format!("tickstream-{n} ACTIVE"));
    assert!(
        status["broker"]["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("local ")),
        "{status}"
    );
    let ready: Vec<bool> = status["local_tasks"]
        .as_array()
        .expect("local tasks")
        .iter()
        .map(|t| t["ready"].as_bool().expect("ready"))
        .collect();
    assert_eq!(ready, [true, true, true], "{status}");

    // MemoryDB: the tasks are given the cluster's replica and reach its primary by its MOVED.
    let toml = env.dir.path().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).expect("deploy.toml");
    let text = text.replace("broker = \"elasticache\"\n", "broker = \"memorydb\"\n");
    std::fs::write(&toml, &text).expect("write");
    let clustered = env.ok(&["--binary", &binary]);
    assert_eq!(
        clustered["broker"]["url"],
        format!("redis://127.0.0.1:{}", p + 4),
        "{clustered}"
    );
    assert_eq!(clustered["ingest"]["service"]["action"], "update");
    let (epoch_a, _) = epoch_and_update(&urls[0]).await;
    let (epoch_b, _) = epoch_and_update(&urls[1]).await;
    assert_eq!(epoch_a, epoch_b, "two edges of one cluster");
    let pids = env.pids();
    assert_eq!(pids.len(), 5, "three tasks, a primary and a replica");
    let status = env.ok(&["status"]);
    assert!(
        status["broker"]["state"]
            .as_str()
            .is_some_and(|s| s.contains("replica")),
        "{status}"
    );

    // The broker turned off: the plan says what goes; the deploy leaves one whole service and
    // removes the ingest service, the second edge and the local broker.
    std::fs::write(&toml, text.replace("broker = \"memorydb\"\n", "")).expect("write");
    let plan = env.ok(&["plan", "--binary", &binary]);
    assert_eq!(plan["changes"], true, "{plan}");
    let remove: Vec<&str> = plan["remove"]
        .as_array()
        .expect("remove")
        .iter()
        .map(|r| r.as_str().expect("text"))
        .collect();
    assert_eq!(
        remove.len(),
        4,
        "the ingest service, two local tasks, the broker: {plan}"
    );
    assert_eq!(remove[0], format!("service tickstream-{n}-ingest"));
    let whole = env.ok(&["--binary", &binary]);
    assert_eq!(whole["service"]["action"], "update", "{whole}");
    assert!(whole["ingest"].is_null());
    assert_eq!(
        whole["removed"].as_array().map(Vec::len),
        Some(4),
        "{whole}"
    );
    assert_eq!(whole["urls"], serde_json::json!([urls[0]]));
    let left = env.pids();
    assert_eq!(left.len(), 1, "one whole task: {left:?}");
    for pid in pids.iter().filter(|p| !left.contains(p)) {
        assert!(
            !alive(*pid),
            "{pid} still runs after the broker was turned off"
        );
    }
    let (epoch, _) = epoch_and_update(&urls[0]).await;
    assert_ne!(epoch, epoch_a, "one whole task numbers its own streams");
    let status = env.ok(&["status"]);
    assert!(
        status["ingest"].is_null() && status["broker"].is_null(),
        "{status}"
    );
    assert_eq!(env.ok(&["plan", "--binary", &binary])["changes"], false);

    let gone = env.ok(&["destroy", "--yes"]);
    assert_eq!(
        gone["services_deleted"],
        serde_json::json!([format!("tickstream-{n}")]),
        "{gone}"
    );
    assert_eq!(gone["local_broker_stopped"], false, "already gone");
    for pid in left {
        assert!(!alive(pid), "{pid} still runs after destroy");
    }
}
