//! The task definition, as the fields we set: built from the settings, or read back from ECS and
//! reduced to those same fields. Comparing the two decides whether a new revision is registered,
//! and gives `deploy plan` a diff without the noise of defaults ECS fills in.

use std::collections::BTreeMap;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, HealthCheck, KeyValuePair,
    LogConfiguration, LogDriver, NetworkMode, OsFamily, PortMapping, RuntimePlatform, Secret,
    TaskDefinition, TransportProtocol, Ulimit, UlimitName,
};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{self, DeployError};
use crate::infra::{BrokerLink, Platform};
use crate::roles::{Part, Role};

pub const CONTAINER: &str = "tickstream";
/// Thousands of sockets per task: the default 1024 open files would cap connections.
pub const NOFILE: i32 = 65_536;
const HEALTH_COMMAND: [&str; 3] = ["CMD", "/usr/local/bin/tickstream", "healthcheck"];

/// Every field of a task definition the deployer decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskSpec {
    pub family: String,
    pub cpu: String,
    pub memory: String,
    pub cpu_architecture: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    pub image: String,
    pub port: i32,
    pub environment: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub log_options: BTreeMap<String, String>,
    pub readonly_root_filesystem: bool,
    pub user: String,
    pub stop_timeout: i32,
    pub nofile: i32,
    pub health_check: Vec<String>,
}

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What a task definition is made from, besides the settings.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub platform: &'a Platform,
    pub image: &'a str,
    /// The region the SDK resolved (deploy.toml, `AWS_REGION` or the profile), never empty:
    /// `awslogs-region` is required.
    pub region: &'a str,
    /// Variable -> `valueFrom`, as the preflight resolved them.
    pub secrets: &'a BTreeMap<String, String>,
    /// Which service's tasks.
    pub part: &'a Part,
    /// How they reach the broker, when there is one.
    pub broker: Option<&'a BrokerLink>,
}

impl TaskSpec {
    pub fn new(settings: &Settings, inputs: &Inputs<'_>) -> TaskSpec {
        let platform = inputs.platform;
        let mut environment = settings.environment.clone();
        // Explicit, because the image sets TICKSTREAM_LISTEN (which wins over PORT).
        environment.insert(
            "TICKSTREAM_LISTEN".into(),
            format!("0.0.0.0:{}", settings.port),
        );
        // The drain timeline (ADR-0012): told of the stop through the task metadata, the
        // task spreads its clients' reconnects over the window, well inside the load
        // balancer's deregistration delay; SIGTERM then finds few left, and the last are
        // closed before the stop timeout.
        environment.insert(
            "TICKSTREAM_DRAIN_WINDOW".into(),
            format!("{}s", settings.drain_window_seconds),
        );
        environment.insert(
            "TICKSTREAM_DRAIN_TIMEOUT".into(),
            format!(
                "{}s",
                settings.stop_timeout_seconds.saturating_sub(5).max(1)
            ),
        );
        let mut secrets = inputs.secrets.clone();
        if inputs.part.role != Role::All {
            environment.insert("TICKSTREAM_ROLE".into(), inputs.part.role.as_str().into());
        }
        if let Some(broker) = inputs.broker {
            environment.insert("TICKSTREAM_BROKER".into(), broker.url.clone());
            if let Some(user) = &broker.user {
                environment.insert("TICKSTREAM_BROKER_USER".into(), user.clone());
            }
            // A reference: ECS reads the value at start; it never enters the definition.
            if let Some(value_from) = broker.password_value_from() {
                secrets.insert("TICKSTREAM_BROKER_PASSWORD".into(), value_from);
            }
        }
        TaskSpec {
            family: inputs.part.service.clone(),
            cpu: settings.cpu.to_string(),
            memory: settings.memory.to_string(),
            cpu_architecture: settings.architecture.ecs().to_string(),
            execution_role_arn: platform.execution_role_arn.clone(),
            task_role_arn: platform.task_role_arn.clone(),
            image: inputs.image.to_string(),
            port: i32::from(settings.port),
            environment,
            secrets,
            log_options: BTreeMap::from([
                ("awslogs-group".into(), platform.log_group.clone()),
                ("awslogs-region".into(), inputs.region.to_string()),
                ("awslogs-stream-prefix".into(), settings.app.clone()),
                // A full log buffer drops lines instead of stalling the service.
                ("mode".into(), "non-blocking".into()),
                ("max-buffer-size".into(), "25m".into()),
            ]),
            readonly_root_filesystem: true,
            user: "10001:10001".into(),
            stop_timeout: settings.stop_timeout_seconds as i32,
            nofile: NOFILE,
            health_check: HEALTH_COMMAND.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The same fields, read from a registered task definition.
    pub fn from_live(td: &TaskDefinition) -> Option<TaskSpec> {
        let c = td
            .container_definitions()
            .iter()
            .find(|c| c.name() == Some(CONTAINER))?;
        let pairs = |list: &[KeyValuePair]| -> BTreeMap<String, String> {
            list.iter()
                .filter_map(|kv| {
                    Some((
                        kv.name()?.to_string(),
                        kv.value().unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        };
        Some(TaskSpec {
            family: td.family().unwrap_or_default().to_string(),
            cpu: td.cpu().unwrap_or_default().to_string(),
            memory: td.memory().unwrap_or_default().to_string(),
            cpu_architecture: td
                .runtime_platform()
                .and_then(|p| p.cpu_architecture())
                .map_or("X86_64", |a| a.as_str())
                .to_string(),
            execution_role_arn: td.execution_role_arn().unwrap_or_default().to_string(),
            task_role_arn: td.task_role_arn().unwrap_or_default().to_string(),
            image: c.image().unwrap_or_default().to_string(),
            port: c
                .port_mappings()
                .first()
                .and_then(|p| p.container_port())
                .unwrap_or_default(),
            environment: pairs(c.environment()),
            secrets: c
                .secrets()
                .iter()
                .map(|s| (s.name().to_string(), s.value_from().to_string()))
                .collect(),
            log_options: c
                .log_configuration()
                .and_then(|l| l.options())
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            readonly_root_filesystem: c.readonly_root_filesystem().unwrap_or(false),
            user: c.user().unwrap_or_default().to_string(),
            stop_timeout: c.stop_timeout().unwrap_or(30),
            nofile: c
                .ulimits()
                .iter()
                .find(|u| u.name() == &UlimitName::Nofile)
                .map_or(1024, |u| u.soft_limit()),
            health_check: c
                .health_check()
                .map(|h| h.command().to_vec())
                .unwrap_or_default(),
        })
    }

    /// What changes from `old` to `self`, field by field (maps key by key).
    pub fn diff(&self, old: Option<&TaskSpec>) -> Vec<Change> {
        let flat = |spec: Option<&TaskSpec>| -> BTreeMap<String, String> {
            let mut out = BTreeMap::new();
            let Some(value) = spec.and_then(|s| serde_json::to_value(s).ok()) else {
                return out;
            };
            for (k, v) in value.as_object().into_iter().flatten() {
                match v {
                    serde_json::Value::Object(map) => {
                        for (sub, v) in map {
                            out.insert(
                                format!("{k}.{sub}"),
                                v.as_str().unwrap_or_default().to_string(),
                            );
                        }
                    }
                    serde_json::Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => {
                        out.insert(k.clone(), other.to_string());
                    }
                }
            }
            out
        };
        let (a, b) = (flat(old), flat(Some(self)));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| Change {
                field: k.clone(),
                from: a.get(k).cloned(),
                to: b.get(k).cloned(),
            })
            .collect()
    }

    /// Registers this as a new revision and returns its ARN.
    pub async fn register(&self, client: &Client, app: &str) -> Result<String, DeployError> {
        let build = |e: aws_sdk_ecs::error::BuildError| DeployError::Build(e.to_string());
        let mut log = LogConfiguration::builder().log_driver(LogDriver::Awslogs);
        for (k, v) in &self.log_options {
            log = log.options(k, v);
        }
        let container = ContainerDefinition::builder()
            .name(CONTAINER)
            .image(&self.image)
            .essential(true)
            .port_mappings(
                PortMapping::builder()
                    .container_port(self.port)
                    .protocol(TransportProtocol::Tcp)
                    .name("http")
                    .build(),
            )
            .set_environment(Some(
                self.environment
                    .iter()
                    .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                    .collect(),
            ))
            .set_secrets(Some(
                self.secrets
                    .iter()
                    .map(|(k, v)| Secret::builder().name(k).value_from(v).build())
                    .collect::<Result<_, _>>()
                    .map_err(build)?,
            ))
            .readonly_root_filesystem(true)
            .user(&self.user)
            .stop_timeout(self.stop_timeout)
            .ulimits(
                Ulimit::builder()
                    .name(UlimitName::Nofile)
                    .soft_limit(self.nofile)
                    .hard_limit(self.nofile)
                    .build()
                    .map_err(build)?,
            )
            .health_check(
                HealthCheck::builder()
                    .set_command(Some(self.health_check.clone()))
                    .interval(10)
                    .timeout(5)
                    .retries(3)
                    .start_period(10)
                    .build()
                    .map_err(build)?,
            )
            .log_configuration(log.build().map_err(build)?)
            .build();
        let out = client
            .register_task_definition()
            .family(&self.family)
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu(&self.cpu)
            .memory(&self.memory)
            .runtime_platform(
                RuntimePlatform::builder()
                    .cpu_architecture(CpuArchitecture::from(self.cpu_architecture.as_str()))
                    .operating_system_family(OsFamily::Linux)
                    .build(),
            )
            .execution_role_arn(&self.execution_role_arn)
            .task_role_arn(&self.task_role_arn)
            .container_definitions(container)
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key("app")
                    .value(app)
                    .build(),
            )
            .send()
            .await
            .map_err(error::aws(format!(
                "registering task definition {}",
                self.family
            )))?;
        out.task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| DeployError::Build("RegisterTaskDefinition returned no ARN".into()))
    }
}

/// The task definition a service runs now, and its fields.
pub async fn describe(client: &Client, arn: &str) -> Result<Option<TaskSpec>, DeployError> {
    let out = client
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(error::aws(format!("describing task definition {arn}")))?;
    Ok(out.task_definition().and_then(TaskSpec::from_live))
}

/// `family:revision` from a task definition ARN, for people to read.
pub fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            family: "tickstream-dev".into(),
            cpu: "256".into(),
            memory: "512".into(),
            cpu_architecture: "X86_64".into(),
            execution_role_arn: "arn:exec".into(),
            task_role_arn: "arn:task".into(),
            image: "repo@sha256:aa".into(),
            port: 8080,
            environment: BTreeMap::from([("TICKSTREAM_LISTEN".into(), "0.0.0.0:8080".into())]),
            secrets: BTreeMap::new(),
            log_options: BTreeMap::from([("mode".into(), "non-blocking".into())]),
            readonly_root_filesystem: true,
            user: "10001:10001".into(),
            stop_timeout: 30,
            nofile: NOFILE,
            health_check: HEALTH_COMMAND.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_diff_names_only_what_changed() {
        let old = spec();
        assert!(old.diff(Some(&old)).is_empty());
        let mut new = spec();
        new.image = "repo@sha256:bb".into();
        new.environment.insert("RUST_LOG".into(), "debug".into());
        let changes = new.diff(Some(&old));
        let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["environment.RUST_LOG", "image"]);
        assert_eq!(changes[1].from.as_deref(), Some("repo@sha256:aa"));
        assert!(new.diff(None).len() > 10, "everything is new");
    }
}
