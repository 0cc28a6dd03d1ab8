//! The CLI's commands, each a function from the resolved settings to a result that prints for
//! people or as JSON. One file per command, as in ecspresso; they share [`Context`] and the
//! image, wait and verify steps below.

mod deploy;
mod destroy;
mod logs;
mod plan;
mod rollback;
mod status;

pub use deploy::deploy;
pub use destroy::{Destroyed, destroy};
pub use logs::{LogLine, logs, newest};
pub use plan::{Plan, plan};
pub use rollback::{RolledBack, rollback};
pub use status::{
    BrokerStatus, DeploymentStatus, LocalTask, ServiceStatus, Status, TaskStatus, status,
};

use std::time::Duration;

use aws_config::SdkConfig;
use serde::Serialize;

use crate::aws::{self, AwsTarget};
use crate::config::Settings;
use crate::error::{self, DeployError, Kind};
use crate::image::{ImageOptions, Source};
use crate::infra::Platform;
use crate::local::{self, TaskDir};
use crate::local_broker;
use crate::report::Reporter;
use crate::roles::{self, Part, Role};
use crate::rollout::{self, Completed, Watch};
use crate::stacks;
use crate::taskdef::{Change, TaskSpec};
use crate::verify::{self, Verified};

/// The AWS clients every command needs, built from one configuration.
#[derive(Debug, Clone)]
pub struct Context {
    pub settings: Settings,
    pub report: Reporter,
    pub sdk: SdkConfig,
    /// The region every call goes to, as the SDK resolved it: never empty.
    pub region: String,
    pub cfn: aws_sdk_cloudformation::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub scaling: aws_sdk_applicationautoscaling::Client,
    pub sts: aws_sdk_sts::Client,
    /// Certificate, secrets and image checks before anything changes.
    pub needs: crate::preflight::Clients,
    /// An API key for the verification, when the service requires one (DEPLOY_VERIFY_API_KEY).
    pub verify_api_key: Option<verify::ApiKey>,
}

impl Context {
    /// Builds the clients. `vars` is the process environment: for an environment that is not
    /// the emulator, an `AWS_ENDPOINT_URL*` left in it is refused before any call, because
    /// the SDK would quietly send every call there.
    pub async fn new(
        settings: Settings,
        report: Reporter,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Context, DeployError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        if !settings.emulator {
            let leftover = aws::leftover_endpoints(vars.iter().cloned());
            if !leftover.is_empty() {
                return Err(DeployError::refused(
                    Kind::LeftoverEndpoint,
                    format!(
                        "{} {} set, so every AWS call of env {} would go to {} instead of AWS",
                        leftover.join(" and "),
                        if leftover.len() == 1 { "is" } else { "are" },
                        settings.env,
                        vars.iter()
                            .find(|(k, _)| k == &leftover[0])
                            .map_or("another endpoint", |(_, v)| v.as_str())
                    ),
                    format!(
                        "unset {} (left from a local session: `eval \"$(localstack/local-aws env)\"` sets it), or set endpoint_url in [env.{}] if you mean it",
                        leftover.join(" "),
                        settings.env
                    ),
                ));
            }
        }
        if settings.emulator
            && let Some(endpoint) = &settings.endpoint_url
        {
            local::ensure_emulator(&settings.root, endpoint, &report).await?;
        }
        let sdk = aws::load(&AwsTarget {
            region: settings.region.clone(),
            profile: settings.profile.clone(),
            endpoint_url: settings.endpoint_url.clone(),
            emulator_credentials: settings.emulator,
        })
        .await;
        if !settings.emulator
            && settings.endpoint_url.is_none()
            && let Some(url) = sdk.endpoint_url()
        {
            return Err(DeployError::refused(
                Kind::LeftoverEndpoint,
                format!(
                    "the AWS profile sends every call to {url} (endpoint_url in ~/.aws/config) instead of AWS"
                ),
                format!(
                    "remove endpoint_url from the profile, use another profile, or set endpoint_url in [env.{}] if you mean it",
                    settings.env
                ),
            ));
        }
        let Some(region) = sdk
            .region()
            .map(|r| r.to_string())
            .filter(|r| !r.is_empty())
        else {
            return Err(DeployError::refused(
                Kind::NoRegion,
                format!("no AWS region for env {}", settings.env),
                format!(
                    "set region in [env.{}] of deploy.toml, or AWS_REGION, or --region (or region in your AWS profile)",
                    settings.env
                ),
            ));
        };
        let verify_api_key = vars
            .iter()
            .find(|(k, _)| k == "DEPLOY_VERIFY_API_KEY")
            .map(|(_, v)| verify::ApiKey::new(v.clone()))
            .filter(|k| !k.is_empty());
        Ok(Context {
            cfn: aws_sdk_cloudformation::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            ecr: aws_sdk_ecr::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            scaling: aws_sdk_applicationautoscaling::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            needs: crate::preflight::Clients {
                acm: aws_sdk_acm::Client::new(&sdk),
                ssm: aws_sdk_ssm::Client::new(&sdk),
                secrets: aws_sdk_secretsmanager::Client::new(&sdk),
                ecr: aws_sdk_ecr::Client::new(&sdk),
            },
            region,
            sdk,
            settings,
            report,
            verify_api_key,
        })
    }

    /// How often to ask AWS how a wait is going: every few seconds (a shared account throttles
    /// faster polling), a few times a second against the emulator.
    pub fn poll(&self) -> Duration {
        if self.settings.emulator {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(5)
        }
    }

    pub fn stack_waiting(&self) -> stacks::Waiting {
        stacks::Waiting {
            timeout: self.settings.stack_timeout,
            poll: self.poll(),
        }
    }

    /// Where `part`'s tasks run on this machine (emulator environments): the directory each
    /// keeps its files in, and its port (`crate::local_broker` lays the ports out).
    fn local_slots(&self, part: &Part) -> Vec<(TaskDir, u16)> {
        let s = &self.settings;
        let dir = |name: &str| TaskDir::new(&s.root, name);
        match part.role {
            Role::All => vec![(dir(&part.service), s.port)],
            Role::Ingest => vec![(dir(&part.service), local_broker::ingest_port(s.port))],
            Role::Edge => (0..local_broker::LOCAL_EDGES)
                .map(|i| {
                    let name = if i == 0 {
                        part.service.clone()
                    } else {
                        format!("{}-{}", part.service, i + 1)
                    };
                    (dir(&name), local_broker::edge_port(s.port, i))
                })
                .collect(),
        }
    }

    /// The local slots only a broker environment uses: the ingest task's, and the edges' after
    /// the first (a whole task uses the first edge's).
    fn broker_only_slots(&self) -> Vec<(TaskDir, u16)> {
        let [ingest, edge] = roles::broker_parts(&self.settings);
        let mut slots = self.local_slots(&ingest);
        slots.extend(self.local_slots(&edge).into_iter().skip(1));
        slots
    }

    /// Every local task slot a deploy of this environment may have started, with or without a
    /// broker.
    fn all_local_slots(&self) -> Vec<(TaskDir, u16)> {
        let s = &self.settings;
        let mut slots = vec![(TaskDir::new(&s.root, &s.service), s.port)];
        slots.extend(self.broker_only_slots());
        slots
    }

    /// The first slot that serves clients (its log is what `logs` shows locally).
    fn task_dir(&self) -> TaskDir {
        let parts = roles::parts(&self.settings);
        let serving = parts.last().map(|p| self.local_slots(p));
        serving
            .and_then(|mut slots| (!slots.is_empty()).then(|| slots.swap_remove(0).0))
            .unwrap_or_else(|| TaskDir::new(&self.settings.root, &self.settings.service))
    }

    /// Who and where: the first AWS call, so bad credentials fail before anything else. The
    /// line always names the endpoint, so a deploy to an emulator can never pass for a real one.
    pub async fn preflight(&self) -> Result<Identity, DeployError> {
        let me = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(error::aws(
                "checking the AWS identity (sts:GetCallerIdentity)",
            ))?;
        let identity = Identity {
            account: me.account().unwrap_or_default().to_string(),
            caller: me.arn().unwrap_or_default().to_string(),
            region: self.region.clone(),
            env: self.settings.env.clone(),
            endpoint: aws::endpoint_in_use(&self.sdk),
        };
        self.report.line(format!(
            "env {} -> account {} in {} at {} as {}",
            identity.env, identity.account, identity.region, identity.endpoint, identity.caller
        ));
        if let Some(expected) = &self.settings.account_id
            && expected != &identity.account
        {
            return Err(DeployError::refused(
                Kind::WrongAccount,
                format!(
                    "env {} lives in account {expected}, but these credentials are for account {} ({})",
                    identity.env, identity.account, identity.caller
                ),
                format!(
                    "switch to credentials for {expected} (AWS_PROFILE, or `aws sso login --profile NAME`), or correct account_id in [env.{}]",
                    identity.env
                ),
            ));
        }
        Ok(identity)
    }

    /// Stack outputs as the service needs them, when both stacks exist.
    async fn platform(&self) -> Result<Option<Platform>, DeployError> {
        let Some((_, net)) = stacks::describe(&self.cfn, &self.settings.network_stack).await?
        else {
            return Ok(None);
        };
        let Some((_, plat)) = stacks::describe(&self.cfn, &self.settings.platform_stack).await?
        else {
            return Ok(None);
        };
        Ok(Platform::from_outputs(&self.settings, &net, &plat).ok())
    }

    /// The URL clients use: the local task's, the configured public URL, or the load balancer's.
    fn url(&self, platform: &Platform) -> String {
        if self.settings.emulator {
            format!("ws://127.0.0.1:{}/ws", self.settings.port)
        } else if let Some(public) = &self.settings.public_url {
            public.clone()
        } else {
            platform.websocket_url.clone()
        }
    }
}

/// The key the verification presents, when the service requires one: `DEPLOY_VERIFY_API_KEY`,
/// else the first key of the `TICKSTREAM_API_KEYS` secret the task reads (which the deployer's
/// identity must then be allowed to read). Never printed.
pub async fn verify_key(ctx: &Context) -> Result<Option<verify::ApiKey>, DeployError> {
    if let Some(key) = &ctx.verify_api_key {
        return Ok(Some(key.clone()));
    }
    let Some(value_from) = ctx.settings.secrets.get("TICKSTREAM_API_KEYS") else {
        return Ok(None);
    };
    let denied = |action: &str| {
        DeployError::refused(
            crate::error::Kind::AccessDenied,
            format!(
                "the service requires API keys, and the deployer may not read them to verify the deploy ({action} on {value_from})"
            ),
            format!(
                "set DEPLOY_VERIFY_API_KEY to one of the keys, or allow {action} on {value_from} to the identity you deploy with"
            ),
        )
    };
    let text = if value_from.contains(":secretsmanager:") {
        let (arn, rest) = crate::preflight::split_secret(value_from);
        let out = match ctx
            .needs
            .secrets
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let p = crate::error::classify("reading the API keys".into(), &e);
                if p.kind == crate::error::Kind::AccessDenied {
                    return Err(denied("secretsmanager:GetSecretValue"));
                }
                return Err(p.into());
            }
        };
        let raw = out.secret_string().unwrap_or_default().to_string();
        // `:json-key:...`: one key of a JSON secret, as ECS reads it.
        match rest.split(':').nth(1).filter(|k| !k.is_empty()) {
            Some(field) => serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v[field].as_str().map(str::to_string))
                .unwrap_or_default(),
            None => raw,
        }
    } else {
        let name = value_from
            .split_once(":parameter")
            .map_or(value_from.as_str(), |(_, n)| n);
        match ctx
            .needs
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => out
                .parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string(),
            Err(e) => {
                let p = crate::error::classify("reading the API keys".into(), &e);
                if p.kind == crate::error::Kind::AccessDenied {
                    return Err(denied("ssm:GetParameter"));
                }
                return Err(p.into());
            }
        }
    };
    let first = text.split(',').map(str::trim).find(|k| !k.is_empty());
    Ok(first.map(|k| verify::ApiKey::new(k.to_string())))
}

fn dashboard(ws_url: &str) -> String {
    ws_url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1)
        .trim_end_matches("/ws")
        .to_string()
        + "/"
}

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub account: String,
    pub caller: String,
    pub region: String,
    pub env: String,
    /// Where the calls go: an emulator's URL, or AWS's own endpoints.
    pub endpoint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackResult {
    pub name: String,
    pub change: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    pub reference: String,
    pub source: String,
    pub pushed: Option<crate::registry::Pushed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskDefinitionResult {
    pub arn: String,
    pub registered: bool,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceResult {
    pub name: String,
    pub action: &'static str,
    pub changes: Vec<Change>,
    pub autoscaling_changed: bool,
}

/// One service's part of a deploy.
#[derive(Debug, Clone, Serialize)]
pub struct PartDeployed {
    pub task_definition: TaskDefinitionResult,
    pub service: ServiceResult,
    pub rollout: Completed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub identity: Identity,
    pub stacks: Vec<StackResult>,
    pub image: ImageResult,
    /// The service clients reach (the edge service with a broker).
    pub task_definition: TaskDefinitionResult,
    pub service: ServiceResult,
    pub rollout: Completed,
    /// With a broker: the ingest service, rolled out first.
    pub ingest: Option<PartDeployed>,
    /// With a broker: how tasks reach it (no credentials in it).
    pub broker: Option<crate::infra::BrokerLink>,
    /// The first local task that serves clients (emulator).
    pub local_task: Option<local::TaskState>,
    /// Every local task, in rollout order (emulator).
    pub local_tasks: Vec<local::TaskState>,
    pub verified: Verified,
    pub url: String,
    /// Every URL that serves clients, each verified: locally, each edge task's.
    pub urls: Vec<String>,
    pub dashboard_url: String,
    /// What a broker left that this configuration no longer wants, removed after the rollout.
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    pub image: ImageOptions,
    /// How long verification may retry (the ALB registers targets after ECS says COMPLETED).
    pub verify_within: Option<Duration>,
}

/// The image reference the task definition names, pushing first when it was built here.
async fn publish(ctx: &Context, source: Source) -> Result<ImageResult, DeployError> {
    let s = &ctx.settings;
    let repo = crate::ecr::ensure(&ctx.ecr, &s.repository, &s.app, &ctx.report).await?;
    match source {
        Source::Pinned(reference) => Ok(ImageResult {
            reference: reference.to_string(),
            source: "--image".into(),
            pushed: None,
        }),
        Source::Built { image, how } => {
            let registry = crate::ecr::login(&ctx.ecr, s.registry_url.as_deref()).await?;
            let tag = image.manifest.digest.tag();
            ctx.report.line(format!("image: {how}"));
            let pushed = registry.push(&s.repository, &image, &tag).await?;
            ctx.report.line(format!(
                "image: pushed {}:{tag} to {} ({} blob(s) uploaded, {} already there, {} bytes)",
                s.repository,
                registry.host(),
                pushed.blobs_uploaded,
                pushed.blobs_skipped,
                pushed.bytes_uploaded
            ));
            let name = if s.registry_url.is_some() {
                format!("{}/{}", registry.host(), s.repository)
            } else {
                repo.uri.clone()
            };
            Ok(ImageResult {
                reference: format!("{name}@{}", image.manifest.digest),
                source: how,
                pushed: Some(pushed),
            })
        }
    }
}

/// Waits until `service`'s deployment `deployment_id` is COMPLETED and PRIMARY.
async fn wait_rollout(
    ctx: &Context,
    platform: &Platform,
    service: &str,
    deployment_id: String,
    task_definition: &str,
) -> Result<Completed, DeployError> {
    let s = &ctx.settings;
    let watch = Watch {
        cluster: platform.cluster.clone(),
        service: service.to_string(),
        deployment_id,
        task_definition: task_definition.to_string(),
        timeout: s.rollout_timeout,
        poll: ctx.poll(),
        logs: Some((platform.log_group.clone(), s.app.clone())),
    };
    let completed = rollout::wait(&ctx.ecs, Some(&ctx.logs), &watch, &ctx.report).await?;
    ctx.report.line(format!(
        "rollout: {service} {} COMPLETED and PRIMARY ({} of {} running) after {:.1}s",
        completed.deployment_id, completed.running, completed.desired, completed.waited_seconds
    ));
    Ok(completed)
}

/// A service's task definition, as it now runs.
pub(super) struct Running<'a> {
    pub part: &'a Part,
    pub spec: &'a TaskSpec,
    pub task_definition: &'a str,
}

/// What a deploy or rollback leaves serving: the local tasks (emulator), the URLs clients use,
/// each verified.
pub(super) struct Serving {
    pub local_tasks: Vec<local::TaskState>,
    pub verified: Verified,
    /// The URL clients use (locally: the first edge's).
    pub url: String,
    /// Every URL that serves clients: locally, each edge task's.
    pub urls: Vec<String>,
}

/// For the emulator, runs `running`'s tasks on this machine in order (ingest first); then
/// verifies every URL clients use with a live update.
async fn serve_and_verify(
    ctx: &Context,
    platform: &Platform,
    running: &[Running<'_>],
    options: &DeployOptions,
    api_key: Option<verify::ApiKey>,
) -> Result<Serving, DeployError> {
    let s = &ctx.settings;
    let mut local_tasks = Vec::new();
    let mut urls = Vec::new();
    if s.emulator {
        // The emulator's registry, where the task's image was pushed.
        let registry = crate::ecr::login(&ctx.ecr, s.registry_url.as_deref()).await?;
        for r in running {
            for (dir, port) in ctx.local_slots(r.part) {
                let task = local::run(
                    &dir,
                    r.spec,
                    r.task_definition,
                    &registry,
                    &s.repository,
                    port,
                    &ctx.report,
                )
                .await?;
                if r.part.serves_clients() {
                    urls.push(format!("ws://127.0.0.1:{port}/ws"));
                }
                local_tasks.push(task);
            }
        }
    }
    let url = ctx.url(platform);
    if urls.is_empty() {
        urls.push(url.clone());
    }
    let within = options.verify_within.unwrap_or(if s.emulator {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(180)
    });
    // With a public URL, dial the load balancer as that host: its certificate names the
    // domain, and the domain's DNS may not point there yet.
    let connect_to = (!s.emulator && s.public_url.is_some())
        .then(|| format!("{}:443", platform.load_balancer_dns));
    let mut verified = None;
    for u in &urls {
        let target = verify::Target {
            url: u.clone(),
            connect_to: connect_to.clone(),
            api_key: api_key.clone(),
        };
        let v = verify::websocket(&target, within, &ctx.report).await?;
        verified.get_or_insert(v);
    }
    let verified = verified.ok_or_else(|| DeployError::Build("no URL to verify".into()))?;
    Ok(Serving {
        local_tasks,
        verified,
        url,
        urls,
    })
}

/// Deletes service `name` (its autoscaling first) and waits until it is gone; returns whether
/// there was one.
pub(super) async fn delete_service(
    ctx: &Context,
    cluster: &str,
    name: &str,
) -> Result<bool, DeployError> {
    let s = &ctx.settings;
    crate::service::remove_autoscaling(&ctx.scaling, cluster, name).await?;
    if crate::service::find(&ctx.ecs, cluster, name)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    ctx.report.line(format!("service {name}: deleting"));
    ctx.ecs
        .delete_service()
        .cluster(cluster)
        .service(name)
        .force(true)
        .send()
        .await
        .map_err(error::aws(format!("deleting service {name}")))?;
    let started = tokio::time::Instant::now();
    // DRAINING while its tasks stop, then INACTIVE (which `find` treats as gone).
    while crate::service::find(&ctx.ecs, cluster, name)
        .await?
        .is_some()
    {
        if started.elapsed() > s.rollout_timeout {
            return Err(DeployError::Rollout(format!(
                "service {name} still exists after {:?}",
                s.rollout_timeout
            )));
        }
        tokio::time::sleep(ctx.poll()).await;
    }
    Ok(true)
}

/// What a broker environment leaves once `broker` is turned off: the ingest service (it would
/// keep a venue connection and publish into a broker nobody reads), the broker stack, and
/// locally the ingest task, the second edge and the local broker. A deploy removes them once
/// the whole service serves; the plan lists them.
#[derive(Debug, Default)]
pub(super) struct Leftovers {
    ingest_service: bool,
    broker_stack: bool,
    local_tasks: Vec<(TaskDir, local::TaskState)>,
    local_broker: Option<local_broker::BrokerState>,
}

impl Leftovers {
    /// Finds them, with read-only calls (none with a broker: nothing is left over).
    pub async fn find(ctx: &Context, cluster: Option<&str>) -> Result<Leftovers, DeployError> {
        let s = &ctx.settings;
        let mut out = Leftovers::default();
        if s.broker.is_some() {
            return Ok(out);
        }
        if let Some(cluster) = cluster {
            out.ingest_service = crate::service::find(&ctx.ecs, cluster, &s.ingest_service)
                .await?
                .is_some();
        }
        out.broker_stack = !s.emulator && stacks::find(&ctx.cfn, &s.broker_stack).await?.is_some();
        if s.emulator {
            for (dir, _) in ctx.broker_only_slots() {
                if let Some(task) = dir.running() {
                    out.local_tasks.push((dir, task));
                }
            }
            out.local_broker = local_broker::running(&s.root, &s.env);
        }
        Ok(out)
    }

    /// Each, as the plan and the deploy name it.
    pub fn names(&self, s: &crate::config::Settings) -> Vec<String> {
        let mut out = Vec::new();
        if self.ingest_service {
            out.push(format!("service {}", s.ingest_service));
        }
        if self.broker_stack {
            out.push(format!("stack {}", s.broker_stack));
        }
        for (_, t) in &self.local_tasks {
            out.push(format!("local task {} on 127.0.0.1:{}", t.pid, t.port));
        }
        if let Some(b) = &self.local_broker {
            out.push(format!("local broker {} on 127.0.0.1:{}", b.pid, b.port));
        }
        out
    }

    /// Removes them (local tasks first, then the ingest service, then the broker stack);
    /// returns their names.
    pub async fn remove(self, ctx: &Context, cluster: &str) -> Result<Vec<String>, DeployError> {
        let s = &ctx.settings;
        let names = self.names(s);
        let grace = Duration::from_secs(u64::from(s.stop_timeout_seconds));
        for (dir, _) in &self.local_tasks {
            local::stop(dir, grace, &ctx.report).await;
        }
        if self.local_broker.is_some() {
            local_broker::stop(&s.root, &s.env, &ctx.report).await;
        }
        if self.ingest_service {
            delete_service(ctx, cluster, &s.ingest_service).await?;
        }
        if self.broker_stack {
            stacks::delete(&ctx.cfn, &s.broker_stack, ctx.stack_waiting(), &ctx.report).await?;
        }
        Ok(names)
    }
}
