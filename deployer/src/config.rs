//! What to deploy where, resolved in layers: built-in defaults < `deploy.toml` (`[defaults]`, then
//! `[env.NAME]`) < `DEPLOY_*` variables < command-line flags. Everything is checked before the
//! first AWS call, and every problem is reported at once, each naming its key and the fix, so a
//! user fixes the file in one pass instead of one failed deploy per mistake.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One layer of settings. Every field is optional so layers can be merged; unknown keys are
/// errors, because a misspelt key silently ignored is a production setting silently lost.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub app: Option<String>,
    /// `true` for an environment that lives in the local emulator (`localstack/local-aws`).
    pub emulator: Option<bool>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// Where images are pushed instead of ECR's own endpoint (emulators only: moto has no registry).
    pub registry_url: Option<String>,
    pub network_stack: Option<String>,
    pub platform_stack: Option<String>,
    pub lambda_stack: Option<String>,
    pub broker_stack: Option<String>,
    /// `elasticache` or `memorydb`: run an ingest service and an edge service around a Valkey
    /// broker (docs/adr/0021-broker.md). Unset or `none`: one service, every task whole.
    pub broker: Option<String>,
    /// Ingest tasks with a broker: 1, or 2 for a standby that takes the lease over.
    pub ingest_count: Option<u32>,
    /// MiB for the Lambda REST tier (`--target lambda`).
    pub lambda_memory: Option<u32>,
    /// The Lambda tier's reserved concurrency: a bound on cost and load. Unset: none reserved
    /// (a reservation must leave the account 100 unreserved executions; new accounts may have
    /// only 10 in all).
    pub lambda_concurrency: Option<u32>,
    /// The AWS account this environment lives in: a deploy with credentials for any other
    /// account stops before it changes anything.
    pub account_id: Option<String>,
    /// The URL clients use (`wss://markets.example.com/ws`), when it is not the load
    /// balancer's own name: the certificate names this host, so verification uses it.
    pub public_url: Option<String>,
    /// How long the load balancer keeps a stopping task's connections (its deregistration delay).
    pub deregistration_delay_seconds: Option<u32>,
    /// Over how long a stopping task tells its clients to reconnect, so they do not all arrive
    /// at the other tasks at once. Must end well inside the deregistration delay.
    pub drain_window_seconds: Option<u32>,
    pub service: Option<String>,
    pub repository: Option<String>,
    pub cpu: Option<u32>,
    pub memory: Option<u32>,
    pub architecture: Option<String>,
    pub port: Option<u16>,
    pub desired_count: Option<u32>,
    pub min_count: Option<u32>,
    pub max_count: Option<u32>,
    pub cpu_target_percent: Option<u32>,
    pub private_subnets: Option<bool>,
    pub certificate_arn: Option<String>,
    pub log_retention_days: Option<u32>,
    pub stop_timeout_seconds: Option<u32>,
    pub health_check_grace_seconds: Option<u32>,
    pub rollout_timeout: Option<String>,
    pub stack_timeout: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Layer,
    #[serde(default)]
    env: BTreeMap<String, Layer>,
}

impl Layer {
    /// `other` wins where it says something.
    fn merge(mut self, other: Layer) -> Layer {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            app,
            emulator,
            region,
            profile,
            endpoint_url,
            registry_url,
            network_stack,
            platform_stack,
            lambda_stack,
            broker_stack,
            broker,
            ingest_count,
            lambda_memory,
            lambda_concurrency,
            account_id,
            public_url,
            deregistration_delay_seconds,
            drain_window_seconds,
            service,
            repository,
            cpu,
            memory,
            architecture,
            port,
            desired_count,
            min_count,
            max_count,
            cpu_target_percent,
            private_subnets,
            certificate_arn,
            log_retention_days,
            stop_timeout_seconds,
            health_check_grace_seconds,
            rollout_timeout,
            stack_timeout
        );
        self.environment.extend(other.environment);
        self.secrets.extend(other.secrets);
        self
    }

    /// The layer that `DEPLOY_<KEY>` variables make (`DEPLOY_DESIRED_COUNT=3`).
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layer, ConfigError> {
        // The CLI's own variables, not settings.
        // DEPLOY_VERIFY_API_KEY is a secret: read on its own, never a setting a file could hold.
        const NOT_SETTINGS: [&str; 6] = [
            "DEPLOY_ENV",
            "DEPLOY_CONFIG",
            "DEPLOY_OUTPUT",
            "DEPLOY_LOG",
            "DEPLOY_TARGET",
            "DEPLOY_VERIFY_API_KEY",
        ];
        const NUMBERS: [&str; 14] = [
            "ingest_count",
            "lambda_memory",
            "lambda_concurrency",
            "cpu",
            "memory",
            "port",
            "desired_count",
            "min_count",
            "max_count",
            "cpu_target_percent",
            "log_retention_days",
            "stop_timeout_seconds",
            "deregistration_delay_seconds",
            "drain_window_seconds",
        ];
        let mut table = toml::Table::new();
        let mut issues = Vec::new();
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("DEPLOY_") else {
                continue;
            };
            if NOT_SETTINGS.contains(&name.as_str()) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let parsed = if NUMBERS.contains(&key.as_str()) || key == "health_check_grace_seconds" {
                match value.trim().parse::<i64>() {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => {
                        issues.push(Issue::new(
                            &name,
                            format!("`{value}` is not a whole number"),
                            "set it to a number such as 2",
                        ));
                        continue;
                    }
                }
            } else if key == "emulator" || key == "private_subnets" {
                match value.trim() {
                    "true" | "1" => toml::Value::Boolean(true),
                    "false" | "0" => toml::Value::Boolean(false),
                    _ => {
                        issues.push(Issue::new(
                            &name,
                            format!("`{value}` is not true or false"),
                            "set it to true or false",
                        ));
                        continue;
                    }
                }
            } else {
                toml::Value::String(value)
            };
            table.insert(key, parsed);
        }
        if !issues.is_empty() {
            return Err(ConfigError::Invalid(issues));
        }
        toml::Value::Table(table)
            .try_into::<Layer>()
            .map_err(|e| ConfigError::parse("DEPLOY_* variables", None, &e))
    }
}

/// Which Valkey AWS runs for the broker (infra/broker.yaml's `Engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerEngine {
    ElastiCache,
    MemoryDb,
}

impl BrokerEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerEngine::ElastiCache => "elasticache",
            BrokerEngine::MemoryDb => "memorydb",
        }
    }
}

/// The CPU architecture of the image and of the Fargate task; they must match, or the task dies
/// with "exec format error".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    X86_64,
    Arm64,
}

impl Architecture {
    /// ECS `runtimePlatform.cpuArchitecture`.
    pub fn ecs(self) -> &'static str {
        match self {
            Architecture::X86_64 => "X86_64",
            Architecture::Arm64 => "ARM64",
        }
    }
    /// OCI `architecture`.
    pub fn oci(self) -> &'static str {
        match self {
            Architecture::X86_64 => "amd64",
            Architecture::Arm64 => "arm64",
        }
    }
    /// Lambda's `Architectures`.
    pub fn lambda(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
    /// Rust's target for the static binary.
    pub fn musl_target(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64-unknown-linux-musl",
            Architecture::Arm64 => "aarch64-unknown-linux-musl",
        }
    }
}

/// Everything one environment needs, complete and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub env: String,
    pub app: String,
    pub emulator: bool,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub registry_url: Option<String>,
    pub network_stack: String,
    pub platform_stack: String,
    pub lambda_stack: String,
    pub broker_stack: String,
    /// The broker's engine; `None`: no broker, one service of whole tasks.
    pub broker: Option<BrokerEngine>,
    /// The ingest service's name (with a broker): `SERVICE-ingest`.
    pub ingest_service: String,
    pub ingest_count: u32,
    pub lambda_memory: u32,
    pub lambda_concurrency: Option<u32>,
    pub account_id: Option<String>,
    pub public_url: Option<String>,
    pub deregistration_delay_seconds: u32,
    pub drain_window_seconds: u32,
    pub service: String,
    pub repository: String,
    pub cpu: u32,
    pub memory: u32,
    pub architecture: Architecture,
    pub port: u16,
    pub desired_count: u32,
    pub min_count: u32,
    pub max_count: u32,
    pub cpu_target_percent: u32,
    pub private_subnets: bool,
    pub certificate_arn: Option<String>,
    pub log_retention_days: u32,
    pub stop_timeout_seconds: u32,
    pub health_check_grace_seconds: u32,
    #[serde(with = "humantime_serde_shim")]
    pub rollout_timeout: Duration,
    #[serde(with = "humantime_serde_shim")]
    pub stack_timeout: Duration,
    pub environment: BTreeMap<String, String>,
    /// Variable name -> SSM parameter or Secrets Manager ARN. Only references, never values.
    pub secrets: BTreeMap<String, String>,
    /// The directory holding `deploy.toml`: the repository root.
    #[serde(skip)]
    pub root: PathBuf,
}

mod humantime_serde_shim {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// One thing wrong with the configuration, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl Issue {
    pub fn new(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> Issue {
        Issue {
            key: key.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no deploy.toml in {} or any directory above it", .start.display())]
    NotFound { start: PathBuf },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{origin}{}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        origin: String,
        line: Option<usize>,
        message: String,
        fix: Option<String>,
    },
    #[error("there is no environment `{env}` in {path} (it has {known})")]
    UnknownEnv {
        env: String,
        path: PathBuf,
        known: String,
    },
    #[error("{}", Issues(.0))]
    Invalid(Vec<Issue>),
}

impl ConfigError {
    pub fn kind(&self) -> crate::error::Kind {
        use crate::error::Kind;
        match self {
            ConfigError::NotFound { .. } => Kind::NoConfigFile,
            ConfigError::Read { .. } | ConfigError::Parse { .. } | ConfigError::Invalid(_) => {
                Kind::InvalidConfiguration
            }
            ConfigError::UnknownEnv { .. } => Kind::UnknownEnvironment,
        }
    }

    pub fn fix(&self) -> Option<String> {
        match self {
            ConfigError::NotFound { .. } => Some(
                "run from the repository (it has deploy.toml at its root), or pass --config PATH"
                    .into(),
            ),
            ConfigError::Read { .. } => Some("check the path given to --config".into()),
            ConfigError::Parse { fix, .. } => fix.clone(),
            ConfigError::UnknownEnv { env, known, .. } => Some(format!(
                "use one of them (--env {}), or add an [env.{env}] table to deploy.toml",
                known.split(", ").next().unwrap_or("dev")
            )),
            ConfigError::Invalid(issues) if issues.len() == 1 => Some(issues[0].fix.clone()),
            // Each issue carries its own fix, in the message.
            ConfigError::Invalid(_) => None,
        }
    }

    /// A TOML or settings error from `origin`, as one line with its line number and, for a
    /// misspelt key, the setting that was probably meant.
    fn parse(origin: &str, text: Option<&str>, e: &toml::de::Error) -> ConfigError {
        let line = match (text, e.span()) {
            (Some(text), Some(span)) => {
                Some(text[..span.start.min(text.len())].matches('\n').count() + 1)
            }
            _ => None,
        };
        let message = e.message().trim().replace("field", "setting");
        let (message, fix) = match message
            .strip_prefix("unknown setting `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((unknown, _)) => {
                let fix = match closest(unknown) {
                    Some(known) => format!(
                        "did you mean `{known}`? Every setting is listed in the README's Deploy section"
                    ),
                    None => "remove it; every setting is listed in the README's Deploy section"
                        .to_string(),
                };
                (format!("unknown setting `{unknown}`"), Some(fix))
            }
            None => (message, None),
        };
        ConfigError::Parse {
            origin: origin.to_string(),
            line,
            message,
            fix,
        }
    }
}

/// Every key a layer may hold.
pub const KEYS: [&str; 37] = [
    "app",
    "emulator",
    "region",
    "profile",
    "endpoint_url",
    "registry_url",
    "network_stack",
    "platform_stack",
    "lambda_stack",
    "broker_stack",
    "broker",
    "ingest_count",
    "lambda_memory",
    "lambda_concurrency",
    "account_id",
    "public_url",
    "deregistration_delay_seconds",
    "drain_window_seconds",
    "service",
    "repository",
    "cpu",
    "memory",
    "architecture",
    "port",
    "desired_count",
    "min_count",
    "max_count",
    "cpu_target_percent",
    "private_subnets",
    "certificate_arn",
    "log_retention_days",
    "stop_timeout_seconds",
    "health_check_grace_seconds",
    "rollout_timeout",
    "stack_timeout",
    "environment",
    "secrets",
];

/// The known key nearest to `word`, if it is near enough to be a typo.
fn closest(word: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1)
                    .min(row[j] + 1)
                    .min(prev + usize::from(ca != *cb));
                prev = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    }
    KEYS.iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

struct Issues<'a>(&'a [Issue]);

impl fmt::Display for Issues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [one] = self.0 {
            return write!(f, "{}: {}", one.key, one.problem);
        }
        write!(f, "{} problems in the configuration:", self.0.len())?;
        for i in self.0 {
            write!(f, "\n  - {}: {} (fix: {})", i.key, i.problem, i.fix)?;
        }
        Ok(())
    }
}

/// Finds `deploy.toml` in `start` or the nearest parent directory.
pub fn find_file(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("deploy.toml"))
        .find(|p| p.is_file())
}

/// `path` as the user would type it from `cwd`: `deploy.toml`, `../deploy.toml`, or whole.
pub fn shown(path: &Path, cwd: &Path) -> String {
    let Some(dir) = path.parent() else {
        return path.display().to_string();
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    match cwd.ancestors().position(|a| a == dir) {
        Some(0) => name,
        Some(up) => format!("{}{name}", "../".repeat(up)),
        None => path.display().to_string(),
    }
}

/// Reads `path` and resolves environment `env` with the `vars` and `flags` layers on top.
/// Messages name the file as `shown`.
pub fn load(
    path: &Path,
    shown: &str,
    env: &str,
    vars: Layer,
    flags: Layer,
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: PathBuf::from(shown),
        message: e.to_string(),
    })?;
    let root = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    resolve(&text, shown, env, vars, flags, root)
}

pub fn resolve(
    text: &str,
    source: &str,
    env: &str,
    vars: Layer,
    flags: Layer,
    root: PathBuf,
) -> Result<Settings, ConfigError> {
    let file: File =
        toml::from_str(text).map_err(|e| ConfigError::parse(source, Some(text), &e))?;
    let Some(env_layer) = file.env.get(env).cloned() else {
        return Err(ConfigError::UnknownEnv {
            env: env.to_string(),
            path: PathBuf::from(source),
            known: file.env.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    };
    let layer = file.defaults.merge(env_layer).merge(vars).merge(flags);
    validate(env, layer, root)
}

/// How long a task may take to notice it is being stopped (it polls the task metadata every
/// second) plus a margin, before its drain window starts.
pub const DRAIN_NOTICE_SECONDS: u32 = 5;

const FARGATE_SIZES: [(u32, u32, u32, u32); 7] = [
    // cpu units, smallest memory, largest memory, step (MiB)
    (256, 512, 2048, 512),
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

fn fargate_memory_ok(cpu: u32, memory: u32) -> Option<bool> {
    let (_, lo, hi, step) = FARGATE_SIZES.iter().find(|s| s.0 == cpu)?;
    let in_steps = if cpu == 256 {
        memory == 512 || (memory >= 1024 && memory.is_multiple_of(1024))
    } else {
        (memory - lo.min(&memory)).is_multiple_of(*step)
    };
    Some(memory >= *lo && memory <= *hi && in_steps)
}

fn valid_name(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

fn valid_repository(s: &str) -> bool {
    (2..=256).contains(&s.len())
        && s.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        })
}

fn parse_duration(
    key: &str,
    value: Option<String>,
    default: &str,
    issues: &mut Vec<Issue>,
) -> Duration {
    let text = value.unwrap_or_else(|| default.to_string());
    match humantime::parse_duration(&text) {
        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(6 * 3600) => d,
        Ok(_) => {
            issues.push(Issue::new(
                key,
                format!("`{text}` is out of range"),
                "use between 1s and 6h",
            ));
            Duration::from_secs(600)
        }
        Err(e) => {
            issues.push(Issue::new(
                key,
                format!("`{text}`: {e}"),
                "write a duration such as \"15m\"",
            ));
            Duration::from_secs(600)
        }
    }
}

fn validate(env: &str, l: Layer, root: PathBuf) -> Result<Settings, ConfigError> {
    let mut issues = Vec::new();
    if !(env.len() >= 2
        && env.len() <= 21
        && env.starts_with(|c: char| c.is_ascii_lowercase())
        && env
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        issues.push(Issue::new(
            "env",
            format!("`{env}` cannot name AWS resources"),
            "use 2-21 lower-case letters, digits and hyphens, starting with a letter",
        ));
    }
    let emulator = l.emulator.unwrap_or(false);
    let app = l.app.unwrap_or_else(|| "tickstream".into());
    if !valid_name(&app, 24, &['-']) {
        issues.push(Issue::new(
            "app",
            format!("`{app}` is not a usable name"),
            "use 1-24 letters, digits and hyphens, starting with a letter",
        ));
    }
    let default_name = |suffix: &str| format!("{app}-{env}{suffix}");
    let network_stack = l.network_stack.unwrap_or_else(|| default_name("-network"));
    let platform_stack = l
        .platform_stack
        .unwrap_or_else(|| default_name("-platform"));
    let lambda_stack = l.lambda_stack.unwrap_or_else(|| default_name("-api"));
    let broker_stack = l.broker_stack.unwrap_or_else(|| default_name("-broker"));
    for (key, name) in [
        ("network_stack", &network_stack),
        ("platform_stack", &platform_stack),
        ("lambda_stack", &lambda_stack),
        ("broker_stack", &broker_stack),
    ] {
        if !valid_name(name, 128, &['-']) {
            issues.push(Issue::new(
                key,
                format!("`{name}` is not a valid CloudFormation stack name"),
                "use letters, digits and hyphens, starting with a letter, at most 128",
            ));
        }
    }
    let service = l.service.unwrap_or_else(|| default_name(""));
    if !valid_name(&service, 255, &['-', '_']) {
        issues.push(Issue::new(
            "service",
            format!("`{service}` is not a valid ECS service name"),
            "use letters, digits, hyphens and underscores, starting with a letter",
        ));
    }
    let broker = match l.broker.as_deref().unwrap_or("none") {
        "none" => None,
        "elasticache" => Some(BrokerEngine::ElastiCache),
        "memorydb" => Some(BrokerEngine::MemoryDb),
        other => {
            issues.push(Issue::new(
                "broker",
                format!("`{other}` is not a broker"),
                "use \"elasticache\" or \"memorydb\", or \"none\" for one service of whole tasks",
            ));
            None
        }
    };
    // Locally one ingest task runs (crate::local_broker); on AWS a writer and a standby.
    let ingest_count = l.ingest_count.unwrap_or(if emulator { 1 } else { 2 });
    if emulator && ingest_count != 1 {
        issues.push(Issue::new(
            "ingest_count",
            "an emulator environment runs one ingest task on this machine",
            "remove ingest_count from this environment (or set it to 1)",
        ));
    } else if !(1..=2).contains(&ingest_count) {
        issues.push(Issue::new(
            "ingest_count",
            format!("{ingest_count} ingest tasks: one writes, and only one can stand by"),
            "use 2 (a writer and a standby) or 1",
        ));
    }
    if broker.is_none() && l.ingest_count.is_some() {
        issues.push(Issue::new(
            "ingest_count",
            "is set, but there is no broker: every task is whole",
            "set broker = \"elasticache\", or remove ingest_count",
        ));
    }
    let repository = l.repository.unwrap_or_else(|| app.clone());
    if !valid_repository(&repository) {
        issues.push(Issue::new(
            "repository",
            format!("`{repository}` is not a valid ECR repository name"),
            "use lower-case letters, digits and . _ - / (2-256 characters)",
        ));
    }
    if let Some(region) = &l.region {
        let parts: Vec<&str> = region.split('-').collect();
        let ok = parts.len() >= 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            issues.push(Issue::new(
                "region",
                format!("`{region}` is not an AWS region"),
                "use a region code such as eu-west-1",
            ));
        }
    }
    // Without a region here, the standard chain may still find one (AWS_REGION, the profile);
    // `Context::new` fails with the fix when it does not.
    for (key, url) in [
        ("endpoint_url", &l.endpoint_url),
        ("registry_url", &l.registry_url),
    ] {
        if let Some(url) = url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            issues.push(Issue::new(
                key,
                format!("`{url}` is not an http(s) URL"),
                "write it as http://127.0.0.1:4566",
            ));
        }
    }
    if l.registry_url.is_some() && !emulator {
        issues.push(Issue::new(
            "registry_url",
            "only emulator environments may push somewhere other than ECR",
            "remove registry_url, or set emulator = true",
        ));
    }
    let cpu = l.cpu.unwrap_or(256);
    let memory = l.memory.unwrap_or(512);
    match fargate_memory_ok(cpu, memory) {
        None => issues.push(Issue::new(
            "cpu",
            format!("{cpu} is not a Fargate CPU size"),
            "use 256, 512, 1024, 2048, 4096, 8192 or 16384",
        )),
        Some(false) => {
            let (_, lo, hi, step) = FARGATE_SIZES
                .iter()
                .find(|s| s.0 == cpu)
                .copied()
                .unwrap_or_default();
            issues.push(Issue::new(
                "memory",
                format!("{memory} MiB does not go with cpu = {cpu}"),
                format!("use {lo}-{hi} MiB in steps of {step}"),
            ));
        }
        Some(true) => {}
    }
    let architecture = match l.architecture.as_deref().unwrap_or("x86_64") {
        "x86_64" | "amd64" => Architecture::X86_64,
        "arm64" | "aarch64" => Architecture::Arm64,
        other => {
            issues.push(Issue::new(
                "architecture",
                format!("`{other}` is not a Fargate architecture"),
                "use x86_64 or arm64",
            ));
            Architecture::X86_64
        }
    };
    let port = l.port.unwrap_or(8080);
    if port < 1024 {
        issues.push(Issue::new(
            "port",
            format!("{port} needs root to bind, and the container runs as uid 10001"),
            "use a port from 1024 to 65535, such as 8080",
        ));
    }
    let desired_count = l.desired_count.unwrap_or(2);
    let min_count = l.min_count.unwrap_or(desired_count.min(1));
    let max_count = l.max_count.unwrap_or(desired_count.max(1) * 4);
    if min_count > max_count {
        issues.push(Issue::new(
            "min_count",
            format!("min_count {min_count} is above max_count {max_count}"),
            "make min_count <= desired_count <= max_count",
        ));
    } else if !(min_count..=max_count).contains(&desired_count) {
        issues.push(Issue::new(
            "desired_count",
            format!("{desired_count} is outside min_count..max_count ({min_count}..{max_count})"),
            "make min_count <= desired_count <= max_count",
        ));
    }
    if max_count > 1000 {
        issues.push(Issue::new(
            "max_count",
            "above ECS's 1000 tasks a service",
            "use at most 1000",
        ));
    }
    let lambda_memory = l.lambda_memory.unwrap_or(256);
    if !(128..=10240).contains(&lambda_memory) {
        issues.push(Issue::new(
            "lambda_memory",
            format!("{lambda_memory} MiB is outside Lambda's 128-10240"),
            "use 128-10240 (256 is plenty for the REST tier)",
        ));
    }
    if let Some(c) = l.lambda_concurrency
        && !(1..=1000).contains(&c)
    {
        issues.push(Issue::new(
            "lambda_concurrency",
            format!("{c} is not a sensible bound"),
            "use 1-1000, or leave it unset to reserve none",
        ));
    }
    if let Some(account) = &l.account_id
        && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
    {
        issues.push(Issue::new(
            "account_id",
            format!("`{account}` is not an AWS account id"),
            "write the 12 digits `aws sts get-caller-identity` shows as Account",
        ));
    }
    let deregistration_delay_seconds = l.deregistration_delay_seconds.unwrap_or(30);
    let drain_window_seconds = l.drain_window_seconds.unwrap_or(15);
    if deregistration_delay_seconds > 3600 {
        issues.push(Issue::new(
            "deregistration_delay_seconds",
            "above ELB's 3600",
            "use 0-3600 (30 suits tickstream: clients are told to reconnect first)",
        ));
    }
    if drain_window_seconds > 600 {
        issues.push(Issue::new(
            "drain_window_seconds",
            "above 600",
            "use 0-600 (15 spreads a reconnect storm well)",
        ));
    } else if drain_window_seconds + DRAIN_NOTICE_SECONDS > deregistration_delay_seconds {
        issues.push(Issue::new(
            "drain_window_seconds",
            format!(
                "{drain_window_seconds} s of draining plus {DRAIN_NOTICE_SECONDS} s to notice the stop outlast the load balancer's {deregistration_delay_seconds} s deregistration delay: it would cut clients that were not yet told to reconnect"
            ),
            format!(
                "make deregistration_delay_seconds at least drain_window_seconds + {DRAIN_NOTICE_SECONDS} (docs/adr/0012-draining-behind-a-load-balancer.md)"
            ),
        ));
    }
    let cpu_target_percent = l.cpu_target_percent.unwrap_or(60);
    if !(10..=95).contains(&cpu_target_percent) {
        issues.push(Issue::new(
            "cpu_target_percent",
            format!("{cpu_target_percent} is not a sensible target"),
            "use 10-95",
        ));
    }
    if let Some(arn) = &l.certificate_arn
        && !(arn.starts_with("arn:aws") && arn.contains(":acm:") && arn.contains(":certificate/"))
    {
        issues.push(Issue::new(
            "certificate_arn",
            format!("`{arn}` is not an ACM certificate ARN"),
            "use arn:aws:acm:REGION:ACCOUNT:certificate/ID, or remove it for plain ws://",
        ));
    }
    if let Some(url) = &l.public_url {
        let scheme_ok = url.starts_with("wss://") || url.starts_with("ws://");
        let host = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        if !scheme_ok || host.is_empty() || url.contains('?') || url.contains('#') {
            issues.push(Issue::new(
                "public_url",
                format!("`{url}` is not a WebSocket URL"),
                "write the URL clients use, such as wss://markets.example.com/ws",
            ));
        } else if url.starts_with("ws://") && l.certificate_arn.is_some() {
            issues.push(Issue::new(
                "public_url",
                "is ws:// while certificate_arn serves TLS (port 80 redirects to HTTPS)",
                "use wss://",
            ));
        }
    }
    if l.certificate_arn.is_some() && l.public_url.is_none() && !emulator {
        issues.push(Issue::new(
            "public_url",
            "is missing: with certificate_arn the load balancer serves your domain's certificate, and its own name fails the TLS name check",
            "set public_url = \"wss://YOUR.DOMAIN/ws\" (the name the certificate covers)",
        ));
    }
    // The values infra/platform.yaml accepts.
    const RETENTION: [u32; 17] = [
        1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653,
    ];
    let log_retention_days = l.log_retention_days.unwrap_or(30);
    if !RETENTION.contains(&log_retention_days) {
        issues.push(Issue::new(
            "log_retention_days",
            format!("{log_retention_days} is not a CloudWatch retention"),
            "use one of 1, 3, 5, 7, 14, 30, 60, 90, 180, 365 ...",
        ));
    }
    let stop_timeout_seconds = l.stop_timeout_seconds.unwrap_or(30);
    if !(2..=120).contains(&stop_timeout_seconds) {
        issues.push(Issue::new(
            "stop_timeout_seconds",
            format!("{stop_timeout_seconds} is outside Fargate's 2-120"),
            "use 2-120 (30 gives clients time to reconnect)",
        ));
    }
    let health_check_grace_seconds = l.health_check_grace_seconds.unwrap_or(60);
    if health_check_grace_seconds > 3600 {
        issues.push(Issue::new(
            "health_check_grace_seconds",
            "above an hour",
            "use 0-3600 (60 is plenty: tickstream is ready in milliseconds)",
        ));
    }
    let rollout_timeout = parse_duration("rollout_timeout", l.rollout_timeout, "15m", &mut issues);
    let stack_timeout = parse_duration("stack_timeout", l.stack_timeout, "20m", &mut issues);
    for (name, _) in l.environment.iter().chain(l.secrets.iter()) {
        let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            issues.push(Issue::new(
                &format!("environment.{name}"),
                "not a valid variable name",
                "use letters, digits and underscores, not starting with a digit",
            ));
        }
        if name.starts_with("AWS_") || name.starts_with("ECS_") {
            issues.push(Issue::new(
                &format!("environment.{name}"),
                "AWS_ and ECS_ names are reserved for the platform",
                "rename the variable",
            ));
        }
    }
    for (name, value) in &l.environment {
        let lower = name.to_ascii_lowercase();
        if ["secret", "password", "token", "api_key", "apikey"]
            .iter()
            .any(|w| lower.contains(w))
            && !value.is_empty()
        {
            issues.push(Issue::new(
                &format!("environment.{name}"),
                "looks like a secret in plain text, which would be stored in the task definition",
                format!("put it in SSM or Secrets Manager and list it under [secrets] as {name} = \"arn:...\""),
            ));
        }
    }
    for (name, arn) in &l.secrets {
        // Secrets Manager: the secret's ARN (full or partial), optionally followed by
        // `:json-key:version-stage:version-id` (ECS's form for one key of a JSON secret).
        let fields = arn.split(':').count();
        let ok = arn.starts_with("arn:aws")
            && (arn.contains(":ssm:") && arn.contains(":parameter/")
                || arn.contains(":secretsmanager:")
                    && arn.split(':').nth(5) == Some("secret")
                    && (fields == 7 || fields == 10));
        if !ok {
            issues.push(Issue::new(
                &format!("secrets.{name}"),
                format!("`{arn}` is not an SSM parameter or Secrets Manager ARN"),
                "use arn:aws:ssm:REGION:ACCOUNT:parameter/NAME or arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME",
            ));
        }
    }
    if emulator && !l.secrets.is_empty() {
        issues.push(Issue::new(
            "secrets",
            "the local emulator cannot resolve secrets for a task running on this machine",
            "move them to [env.dev.secrets] / [env.prod.secrets], or use plain environment values locally",
        ));
    }
    if !issues.is_empty() {
        return Err(ConfigError::Invalid(issues));
    }
    let endpoint_url = l
        .endpoint_url
        .or_else(|| emulator.then(|| "http://127.0.0.1:4566".to_string()));
    let registry_url = l
        .registry_url
        .or_else(|| emulator.then(|| "http://127.0.0.1:5000".to_string()));
    // Unset, the SDK's chain decides (AWS_REGION, the profile); see `aws::load`.
    let region = l.region;
    Ok(Settings {
        env: env.to_string(),
        app,
        emulator,
        region,
        profile: l.profile,
        endpoint_url,
        registry_url,
        network_stack,
        platform_stack,
        lambda_stack,
        broker_stack,
        broker,
        ingest_service: format!("{service}-ingest"),
        ingest_count,
        lambda_memory,
        lambda_concurrency: l.lambda_concurrency,
        account_id: l.account_id,
        public_url: l.public_url,
        deregistration_delay_seconds,
        drain_window_seconds,
        service,
        repository,
        cpu,
        memory,
        architecture,
        port,
        desired_count,
        min_count,
        max_count,
        cpu_target_percent,
        private_subnets: l.private_subnets.unwrap_or(false),
        certificate_arn: l.certificate_arn,
        log_retention_days,
        stop_timeout_seconds,
        health_check_grace_seconds,
        rollout_timeout,
        stack_timeout,
        environment: l.environment,
        secrets: l.secrets,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[defaults]
cpu = 256
memory = 512
[defaults.environment]
RUST_LOG = "info"

[env.local]
emulator = true
desired_count = 1

[env.prod]
region = "eu-west-1"
cpu = 1024
memory = 2048
desired_count = 3
[env.prod.secrets]
TICKSTREAM_API_KEYS = "arn:aws:ssm:eu-west-1:123456789012:parameter/tickstream/api-keys"
"#;

    fn resolve_with(
        env: &str,
        vars: &[(&str, &str)],
        flags: Layer,
    ) -> Result<Settings, ConfigError> {
        let vars = Layer::from_env(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        resolve(FILE, "deploy.toml", env, vars, flags, PathBuf::from("."))
    }

    fn issues(e: ConfigError) -> Vec<Issue> {
        match e {
            ConfigError::Invalid(i) => i,
            other => panic!("expected issues, got {other}"),
        }
    }

    #[test]
    fn layers_apply_in_order() {
        let s = resolve_with("prod", &[("DEPLOY_DESIRED_COUNT", "4")], Layer::default())
            .expect("valid");
        assert_eq!((s.cpu, s.memory, s.desired_count), (1024, 2048, 4));
        assert_eq!(s.environment["RUST_LOG"], "info");
        assert_eq!(s.service, "tickstream-prod");
        let flags = Layer {
            desired_count: Some(5),
            ..Layer::default()
        };
        let s = resolve_with("prod", &[("DEPLOY_DESIRED_COUNT", "4")], flags).expect("valid");
        assert_eq!(s.desired_count, 5);
        let local = resolve_with("local", &[], Layer::default()).expect("valid");
        assert_eq!(local.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(local.registry_url.as_deref(), Some("http://127.0.0.1:5000"));
    }

    #[test]
    fn every_mistake_is_named_with_its_fix() {
        let flags = Layer {
            cpu: Some(512),
            memory: Some(512),
            port: Some(80),
            architecture: Some("sparc".into()),
            desired_count: Some(50),
            max_count: Some(10),
            certificate_arn: Some("my-cert".into()),
            environment: BTreeMap::from([("DB_PASSWORD".into(), "hunter2".into())]),
            ..Layer::default()
        };
        let found = issues(resolve_with("prod", &[], flags).expect_err("invalid"));
        let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "memory",
                "architecture",
                "port",
                "desired_count",
                "certificate_arn",
                "public_url",
                "environment.DB_PASSWORD"
            ]
        );
        assert!(found[0].fix.contains("1024-4096"), "{:?}", found[0]);
    }

    #[test]
    fn unknown_keys_and_environments_are_errors() {
        let e = resolve(
            "[defaults]\ncpus = 256\n[env.dev]\n",
            "deploy.toml",
            "dev",
            Layer::default(),
            Layer::default(),
            PathBuf::new(),
        )
        .expect_err("typo");
        assert_eq!(e.to_string(), "deploy.toml line 2: unknown setting `cpus`");
        assert!(
            e.fix()
                .is_some_and(|f| f.starts_with("did you mean `cpu`?")),
            "{:?}",
            e.fix()
        );
        let e = resolve_with("staging", &[], Layer::default()).expect_err("no such env");
        assert!(e.to_string().contains("(it has local, prod)"), "{e}");
        let e = resolve_with("prod", &[("DEPLOY_CPUS", "1")], Layer::default()).expect_err("typo");
        assert!(e.to_string().contains("cpus"), "{e}");
        let e = issues(
            resolve_with("prod", &[("DEPLOY_CPU", "lots")], Layer::default()).expect_err("nan"),
        );
        assert_eq!(e[0].key, "DEPLOY_CPU");
    }

    #[test]
    fn a_broker_is_chosen_and_checked() {
        let none = resolve_with("prod", &[], Layer::default()).expect("valid");
        assert_eq!(none.broker, None);
        let with = resolve_with(
            "prod",
            &[("DEPLOY_BROKER", "elasticache")],
            Layer::default(),
        )
        .expect("valid");
        assert_eq!(with.broker, Some(BrokerEngine::ElastiCache));
        assert_eq!(with.ingest_count, 2, "a writer and a standby by default");
        assert_eq!(with.broker_stack, "tickstream-prod-broker");
        assert_eq!(with.ingest_service, "tickstream-prod-ingest");
        let one = resolve_with(
            "prod",
            &[
                ("DEPLOY_BROKER", "elasticache"),
                ("DEPLOY_INGEST_COUNT", "1"),
            ],
            Layer::default(),
        )
        .expect("valid");
        assert_eq!(one.ingest_count, 1);

        let wrong = issues(
            resolve_with(
                "prod",
                &[("DEPLOY_BROKER", "redis"), ("DEPLOY_INGEST_COUNT", "3")],
                Layer::default(),
            )
            .expect_err("invalid"),
        );
        let keys: Vec<&str> = wrong.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["broker", "ingest_count", "ingest_count"],
            "{wrong:?}"
        );
        assert!(wrong[0].fix.contains("elasticache"), "{wrong:?}");
        let memorydb = resolve_with("prod", &[("DEPLOY_BROKER", "memorydb")], Layer::default())
            .expect("MemoryDB is a broker");
        assert_eq!(memorydb.broker, Some(BrokerEngine::MemoryDb));
    }

    #[test]
    fn fargate_sizes() {
        assert_eq!(fargate_memory_ok(256, 512), Some(true));
        assert_eq!(fargate_memory_ok(256, 1536), Some(false));
        assert_eq!(fargate_memory_ok(512, 3072), Some(true));
        assert_eq!(fargate_memory_ok(8192, 20480), Some(true));
        assert_eq!(fargate_memory_ok(8192, 18432), Some(false));
        assert_eq!(fargate_memory_ok(300, 512), None);
    }
}
