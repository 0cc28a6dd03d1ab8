//! Fargate's part, played on this machine for emulator environments. The emulator registers
//! task definitions and services but runs no containers, so after each rollout this pulls the
//! image the task definition names (by digest, from the local registry), unpacks it, and runs its
//! entrypoint with the task definition's environment and port, in its own process group so it
//! outlives the deploy command, until `deploy destroy` stops it. What runs is exactly what was
//! pushed.

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use crate::error::DeployError;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::report::Reporter;
use crate::taskdef::TaskSpec;

/// How long a local task may take to answer `/readyz` (tickstream needs milliseconds).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The task running on this machine, as recorded in `task.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskState {
    pub pid: u32,
    pub task_definition: String,
    pub image: String,
    pub port: u16,
    pub started_unix: u64,
    pub log: PathBuf,
}

/// Where one service's local task keeps its files: `.local-aws/tasks/SERVICE/`.
#[derive(Debug, Clone)]
pub struct TaskDir(pub PathBuf);

impl TaskDir {
    pub fn new(root: &Path, service: &str) -> TaskDir {
        TaskDir(root.join(".local-aws").join("tasks").join(service))
    }

    fn state_file(&self) -> PathBuf {
        self.0.join("task.json")
    }

    pub fn log_file(&self) -> PathBuf {
        self.0.join("task.log")
    }

    pub fn state(&self) -> Option<TaskState> {
        let text = std::fs::read_to_string(self.state_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The recorded task, if its process is still ours and alive.
    pub fn running(&self) -> Option<TaskState> {
        let state = self.state()?;
        alive(state.pid, &self.0).then_some(state)
    }
}

/// Whether `pid` is a live (not zombie) process started from `dir`.
fn alive(pid: u32, dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    if state == Some("Z") || state == Some("X") {
        return false;
    }
    // A recycled pid belongs to someone else: ours runs a binary under `dir`.
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.starts_with(dir))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Stops the local task: SIGTERM (it tells clients to reconnect and drains), then SIGKILL after
/// `grace`. Returns whether one was running.
pub async fn stop(dir: &TaskDir, grace: Duration, report: &Reporter) -> bool {
    let Some(state) = dir.running() else {
        let _ = std::fs::remove_file(dir.state_file());
        return false;
    };
    report.line(format!("local task {}: stopping (SIGTERM)", state.pid));
    signal(state.pid, "TERM");
    let started = Instant::now();
    while alive(state.pid, &dir.0) {
        if started.elapsed() > grace {
            report.line(format!(
                "local task {}: still running after {grace:?}; SIGKILL",
                state.pid
            ));
            signal(state.pid, "KILL");
            sleep(Duration::from_millis(200)).await;
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_file(dir.state_file());
    true
}

/// A client for quick local probes: short timeouts, nothing else.
fn probe_client() -> reqwest::Result<reqwest::Client> {
    patient_client(Duration::from_secs(2))
}

fn patient_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    crate::tls();
    reqwest::Client::builder().timeout(timeout).build()
}

/// How long the emulator may take to answer. A stopped one refuses the connection at once, so
/// waiting longer costs nothing then; moto is a single-threaded Python server, and on a busy
/// two-core machine it once took over the old 2 s to answer while it ran (CI failed with
/// "does not answer" for a server whose log shows it answering).
const EMULATOR_PATIENCE: Duration = Duration::from_secs(20);

pub async fn ready(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/readyz");
    match probe_client() {
        Ok(c) => c
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    }
}

/// The last `n` lines of the task's log.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut lines: std::collections::VecDeque<String> =
        std::collections::VecDeque::with_capacity(n + 1);
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if lines.len() == n {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    lines.into()
}

/// Hands each complete line from `offset` on to `each` and returns the new offset.
pub fn read_from(path: &Path, offset: u64, mut each: impl FnMut(&str)) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return offset;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = if len < offset { 0 } else { offset };
    if file.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    let mut pos = offset;
    while let Ok(n) = reader.read_line(&mut line) {
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        each(line.trim_end_matches('\n'));
        pos += n as u64;
        line.clear();
    }
    pos
}

/// Makes the local task run `task_definition`: nothing to do when it already does; otherwise
/// pull, unpack, stop the old task, start the new one and wait until it is ready.
pub async fn run(
    dir: &TaskDir,
    spec: &TaskSpec,
    task_definition: &str,
    registry: &Registry,
    repository: &str,
    port: u16,
    report: &Reporter,
) -> Result<TaskState, DeployError> {
    if let Some(state) = dir.running()
        && state.task_definition == task_definition
        && state.port == port
        && ready(port).await
    {
        report.line(format!(
            "local task {}: already runs {}",
            state.pid,
            crate::taskdef::short(task_definition)
        ));
        return Ok(state);
    }
    let image_ref = ImageRef::parse(&spec.image)
        .map_err(|e| DeployError::Local(format!("the task definition's image: {e}")))?;
    let digest = &image_ref.digest;
    let rootfs = dir.0.join(format!("rootfs-{}", digest.short()));
    let image = registry.pull(repository, digest).await?;
    report.line(format!(
        "local task: pulled {repository}@sha256:{} from {} ({} layer(s))",
        digest.short(),
        registry.host(),
        image.layers.len()
    ));
    if !rootfs.exists() {
        let partial = dir.0.join("rootfs.partial");
        let _ = std::fs::remove_dir_all(&partial);
        image.unpack(&partial)?;
        std::fs::rename(&partial, &rootfs)
            .map_err(|e| DeployError::Local(format!("{}: {e}", rootfs.display())))?;
    }
    let command = image.command();
    let Some(entry) = command.first() else {
        return Err(DeployError::Local("the image has no entrypoint".into()));
    };
    let program = rootfs.join(entry.trim_start_matches('/'));
    stop(
        dir,
        Duration::from_secs(u64::try_from(spec.stop_timeout).unwrap_or(30)),
        report,
    )
    .await;

    let log = dir.log_file();
    let open = |path: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DeployError::Local(format!("{}: {e}", path.display())))
    };
    let out = open(&log)?;
    let err = out
        .try_clone()
        .map_err(|e| DeployError::Local(e.to_string()))?;
    let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&program)
            .args(&command[1..])
            .env_clear()
            .envs(&spec.environment)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            // The task's port, on loopback only: nothing here should be reachable from outside.
            .env("TICKSTREAM_LISTEN", format!("127.0.0.1:{port}"))
            .current_dir(&rootfs)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| DeployError::Local(format!("starting {}: {e}", program.display())))?
    };
    let pid = child.id();
    report.line(format!(
        "local task {pid}: started {} on 127.0.0.1:{port}",
        crate::taskdef::short(task_definition)
    ));
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let lines = tail(&log, 20);
            let hint = if lines.iter().any(|l| l.contains("in use")) {
                format!("\n  hint: port {port} is taken; set port in [env.local] or DEPLOY_PORT")
            } else {
                String::new()
            };
            return Err(DeployError::Rollout(format!(
                "the local task exited with {status} before it was ready; last log lines:\n    {}{hint}",
                lines.join("\n    ")
            )));
        }
        if ready(port).await {
            break;
        }
        if started.elapsed() > READY_WITHIN {
            signal(pid, "KILL");
            return Err(DeployError::Rollout(format!(
                "the local task did not answer /readyz within {READY_WITHIN:?} (log: {})",
                log.display()
            )));
        }
        sleep(Duration::from_millis(20)).await;
    }
    report.line(format!(
        "local task {pid}: ready in {} ms (log: {}, from byte {log_start})",
        started.elapsed().as_millis(),
        log.display()
    ));
    let state = TaskState {
        pid,
        task_definition: task_definition.to_string(),
        image: spec.image.clone(),
        port,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        log,
    };
    let json =
        serde_json::to_string_pretty(&state).map_err(|e| DeployError::Local(e.to_string()))?;
    std::fs::write(dir.state_file(), json).map_err(|e| DeployError::Local(e.to_string()))?;
    Ok(state)
}

/// Starts `localstack/local-aws` when the emulator does not answer at `endpoint`.
pub async fn ensure_emulator(
    root: &Path,
    endpoint: &str,
    report: &Reporter,
) -> Result<(), DeployError> {
    let answers = |url: String| async move {
        match patient_client(EMULATOR_PATIENCE) {
            Ok(c) => c.get(url).send().await.is_ok(),
            Err(_) => false,
        }
    };
    if answers(endpoint.to_string()).await {
        return Ok(());
    }
    let script = root.join("localstack/local-aws");
    if !endpoint.contains("127.0.0.1:4566") || !script.is_file() {
        return Err(DeployError::refused(
            crate::error::Kind::EmulatorUnreachable,
            format!("the local AWS does not answer at {endpoint}"),
            "start it (`localstack/local-aws start` in the repository), or correct endpoint_url for this environment in deploy.toml",
        ));
    }
    report.line("local AWS is not running: starting it (localstack/local-aws start; the first time installs moto)");
    let status = tokio::process::Command::new(&script)
        .arg("start")
        .current_dir(root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|e| DeployError::Local(format!("{}: {e}", script.display())))?;
    if !status.success() || !answers(endpoint.to_string()).await {
        return Err(DeployError::refused(
            crate::error::Kind::EmulatorUnreachable,
            format!("the local AWS did not start ({status})"),
            "read .local-aws/moto.log and .local-aws/registry.log; `localstack/local-aws start` shows the same",
        ));
    }
    Ok(())
}

/// Forgets every resource in the emulator (moto's reset; pushed images stay in the registry).
pub async fn reset_emulator(endpoint: &str) -> Result<(), DeployError> {
    let url = format!("{}/moto-api/reset", endpoint.trim_end_matches('/'));
    let client =
        patient_client(EMULATOR_PATIENCE).map_err(|e| DeployError::Local(e.to_string()))?;
    let response = client
        .post(&url)
        .send()
        .await
        .map_err(|e| DeployError::Local(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(DeployError::Local(format!(
            "{url}: HTTP {}",
            response.status()
        )));
    }
    Ok(())
}
