//! The CLI's commands, each a function from the resolved settings to a result that prints for
//! people or as JSON. One file would be one command in ecspresso; here they share [`Context`].

use std::time::Duration;

use aws_config::SdkConfig;
use serde::Serialize;

use crate::aws::{self, AwsTarget};
use crate::config::Settings;
use crate::error::{self, DeployError};
use crate::image::{self, ImageOptions, Source};
use crate::infra::{self, Platform};
use crate::local::{self, TaskDir};
use crate::report::Reporter;
use crate::rollout::{self, Completed, Watch};
use crate::service::{self, ServiceSpec};
use crate::stacks::{self, StackChange};
use crate::taskdef::{self, Change, TaskSpec, short};
use crate::verify::{self, Verified};

/// The AWS clients every command needs, built from one configuration.
#[derive(Debug, Clone)]
pub struct Context {
    pub settings: Settings,
    pub report: Reporter,
    pub sdk: SdkConfig,
    pub cfn: aws_sdk_cloudformation::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub ecr: aws_sdk_ecr::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub scaling: aws_sdk_applicationautoscaling::Client,
    pub sts: aws_sdk_sts::Client,
}

impl Context {
    pub async fn new(settings: Settings, report: Reporter) -> Result<Context, DeployError> {
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
        if sdk.region().is_none() {
            return Err(DeployError::Usage(format!(
                "no AWS region for env {}: set region in [env.{}] of deploy.toml, AWS_REGION, or --region",
                settings.env, settings.env
            )));
        }
        Ok(Context {
            cfn: aws_sdk_cloudformation::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            ecr: aws_sdk_ecr::Client::new(&sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            scaling: aws_sdk_applicationautoscaling::Client::new(&sdk),
            sts: aws_sdk_sts::Client::new(&sdk),
            sdk,
            settings,
            report,
        })
    }

    fn region(&self) -> String {
        self.sdk.region().map(|r| r.to_string()).unwrap_or_default()
    }

    fn poll(&self) -> Duration {
        if self.settings.emulator {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(3)
        }
    }

    fn task_dir(&self) -> TaskDir {
        TaskDir::new(&self.settings.root, &self.settings.service)
    }

    /// Who and where: the first AWS call, so bad credentials fail before anything else.
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
            region: self.region(),
            env: self.settings.env.clone(),
            endpoint: self.settings.endpoint_url.clone(),
        };
        self.report.line(format!(
            "env {} -> account {} in {}{} as {}",
            identity.env,
            identity.account,
            identity.region,
            identity
                .endpoint
                .as_ref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default(),
            identity.caller
        ));
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

    /// The URL clients use: the local task's, or the load balancer's.
    fn url(&self, platform: &Platform) -> String {
        if self.settings.emulator {
            format!("ws://127.0.0.1:{}/ws", self.settings.port)
        } else {
            platform.websocket_url.clone()
        }
    }
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
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackResult {
    pub name: String,
    pub change: &'static str,
}

fn change_name(c: StackChange) -> &'static str {
    match c {
        StackChange::Created => "create",
        StackChange::Updated => "update",
        StackChange::Unchanged => "unchanged",
    }
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

#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub identity: Identity,
    pub stacks: Vec<StackResult>,
    pub image: ImageResult,
    pub task_definition: TaskDefinitionResult,
    pub service: ServiceResult,
    pub rollout: Completed,
    pub local_task: Option<local::TaskState>,
    pub verified: Verified,
    pub url: String,
    pub dashboard_url: String,
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
            reference,
            source: "--image".into(),
            pushed: None,
        }),
        Source::Built { image, how } => {
            let registry = crate::ecr::login(&ctx.ecr, s.registry_url.as_deref()).await?;
            let tag = format!("sha256-{}", &image.manifest.digest[7..23]);
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

/// The registry the local task pulls from (emulators only).
async fn local_registry(ctx: &Context) -> Result<crate::registry::Registry, DeployError> {
    crate::ecr::login(&ctx.ecr, ctx.settings.registry_url.as_deref()).await
}

async fn wait_and_verify(
    ctx: &Context,
    platform: &Platform,
    deployment_id: String,
    task_definition: &str,
    spec: &TaskSpec,
    options: &DeployOptions,
) -> Result<(Completed, Option<local::TaskState>, Verified, String), DeployError> {
    let s = &ctx.settings;
    let watch = Watch {
        cluster: platform.cluster.clone(),
        service: s.service.clone(),
        deployment_id,
        task_definition: task_definition.to_string(),
        timeout: s.rollout_timeout,
        poll: ctx.poll(),
        logs: Some((platform.log_group.clone(), s.app.clone())),
    };
    let completed = rollout::wait(&ctx.ecs, Some(&ctx.logs), &watch, &ctx.report).await?;
    ctx.report.line(format!(
        "rollout: {} COMPLETED and PRIMARY ({} of {} running) after {:.1}s",
        completed.deployment_id, completed.running, completed.desired, completed.waited_seconds
    ));
    let local_task = if s.emulator {
        let registry = local_registry(ctx).await?;
        Some(
            local::run(
                &ctx.task_dir(),
                spec,
                task_definition,
                &registry,
                &s.repository,
                s.port,
                &ctx.report,
            )
            .await?,
        )
    } else {
        None
    };
    let url = ctx.url(platform);
    let within = options.verify_within.unwrap_or(if s.emulator {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(180)
    });
    let verified = verify::websocket(&url, within, &ctx.report).await?;
    Ok((completed, local_task, verified, url))
}

/// The whole rollout: stacks, image, task definition, service, wait, verify.
pub async fn deploy(ctx: &Context, options: &DeployOptions) -> Result<Deployed, DeployError> {
    let s = &ctx.settings;
    // Everything that can be decided without AWS, first.
    let source = image::resolve(s, &options.image, &ctx.report)?;
    let identity = ctx.preflight().await?;

    let net = stacks::deploy(&ctx.cfn, &infra::network(s), s.stack_timeout, &ctx.report).await?;
    let platform_spec =
        infra::platform(s, &net.outputs).map_err(|e| DeployError::Build(e.to_string()))?;
    let plat = stacks::deploy(&ctx.cfn, &platform_spec, s.stack_timeout, &ctx.report).await?;
    let stacks = vec![
        StackResult {
            name: s.network_stack.clone(),
            change: change_name(net.change),
        },
        StackResult {
            name: s.platform_stack.clone(),
            change: change_name(plat.change),
        },
    ];
    let platform = Platform::from_outputs(s, &net.outputs, &plat.outputs)
        .map_err(|e| DeployError::Build(e.to_string()))?;

    let image = publish(ctx, source).await?;

    let live = service::find(&ctx.ecs, &platform.cluster, &s.service).await?;
    let spec = TaskSpec::new(s, &platform, &image.reference);
    let current = match live.as_ref().and_then(|l| l.task_definition()) {
        Some(arn) => taskdef::describe(&ctx.ecs, arn)
            .await?
            .map(|t| (arn.to_string(), t)),
        None => None,
    };
    let changes = spec.diff(current.as_ref().map(|(_, t)| t));
    let (task_definition, registered) = match current {
        Some((arn, _)) if changes.is_empty() => {
            ctx.report
                .line(format!("task definition: unchanged ({})", short(&arn)));
            (arn, false)
        }
        _ => {
            let arn = spec.register(&ctx.ecs, &s.app).await?;
            ctx.report.line(format!(
                "task definition: registered {} ({} change(s))",
                short(&arn),
                changes.len()
            ));
            (arn, true)
        }
    };

    let service_spec = ServiceSpec::new(s, &platform, &task_definition);
    let (deployed_service, action, service_changes) = match &live {
        None => {
            ctx.report.line(format!("service {}: creating", s.service));
            let created = service_spec.create(&ctx.ecs, &s.app).await?;
            // Read back what was created: a service that came back without a setting (the
            // emulator drops the circuit breaker on create) is brought to the spec at once.
            let missing = service_spec.diff(&created);
            if missing.is_empty() {
                (created, "create", missing)
            } else {
                for c in &missing {
                    ctx.report.line(format!(
                        "service {}: created without {}; applying it",
                        s.service, c.field
                    ));
                }
                (
                    service_spec.update(&ctx.ecs, &created).await?,
                    "create",
                    missing,
                )
            }
        }
        Some(live) => {
            let diff = service_spec.diff(live);
            if diff.is_empty() {
                ctx.report.line(format!("service {}: unchanged", s.service));
                (live.clone(), "unchanged", diff)
            } else {
                for c in &diff {
                    ctx.report.line(format!(
                        "service {}: {} {} -> {}",
                        s.service,
                        c.field,
                        c.from.as_deref().unwrap_or("-"),
                        c.to.as_deref().unwrap_or("-")
                    ));
                }
                (service_spec.update(&ctx.ecs, live).await?, "update", diff)
            }
        }
    };
    let autoscaling_changed =
        service::ensure_autoscaling(&ctx.scaling, &service_spec, &ctx.report).await?;
    let deployment_id = service::primary_deployment(&deployed_service).ok_or_else(|| {
        DeployError::Rollout(format!("service {} has no PRIMARY deployment", s.service))
    })?;
    let (rollout, local_task, verified, url) = wait_and_verify(
        ctx,
        &platform,
        deployment_id,
        &task_definition,
        &spec,
        options,
    )
    .await?;
    Ok(Deployed {
        identity,
        stacks,
        image,
        task_definition: TaskDefinitionResult {
            arn: task_definition,
            registered,
            changes,
        },
        service: ServiceResult {
            name: s.service.clone(),
            action,
            changes: service_changes,
            autoscaling_changed,
        },
        rollout,
        local_task,
        dashboard_url: dashboard(&url),
        verified,
        url,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub identity: Identity,
    pub stacks: Vec<StackResult>,
    pub image: ImageResult,
    pub image_in_registry: Option<bool>,
    pub task_definition: Vec<Change>,
    pub service: ServiceResult,
    pub changes: bool,
}

/// What `deploy` would change, computed with read-only calls.
pub async fn plan(ctx: &Context, options: &DeployOptions) -> Result<Plan, DeployError> {
    let s = &ctx.settings;
    let nothing_given = options.image.reference.is_none()
        && options.image.archive.is_none()
        && options.image.binary.is_none();
    let source = match image::resolve(s, &options.image, &ctx.report) {
        Ok(source) => Some(source),
        // A plan is still useful where the image cannot be built (no engine on this machine).
        Err(DeployError::Usage(why)) if nothing_given && !s.emulator => {
            ctx.report
                .line(format!("image: not built for the plan: {why}"));
            None
        }
        Err(e) => return Err(e),
    };
    let identity = ctx.preflight().await?;
    let net = stacks::preview(&ctx.cfn, &infra::network(s)).await?;
    let mut stacks = vec![StackResult {
        name: s.network_stack.clone(),
        change: change_name(net.change),
    }];
    let plat = match infra::platform(s, &net.outputs) {
        Ok(spec) => stacks::preview(&ctx.cfn, &spec).await?,
        Err(_) => stacks::Deployed {
            change: StackChange::Created,
            outputs: Default::default(),
        },
    };
    stacks.push(StackResult {
        name: s.platform_stack.clone(),
        change: change_name(plat.change),
    });
    let (reference, how, digest) = match &source {
        None => (
            "(built from the Dockerfile at deploy time)".to_string(),
            "Dockerfile".to_string(),
            None,
        ),
        Some(Source::Pinned(r)) => (r.clone(), "--image".to_string(), None),
        Some(Source::Built { image, how }) => (
            format!("{}@{}", s.repository, image.manifest.digest),
            how.clone(),
            Some(image.manifest.digest.clone()),
        ),
    };
    let image_in_registry = match &digest {
        Some(d) => match crate::ecr::login(&ctx.ecr, s.registry_url.as_deref()).await {
            Ok(registry) => registry
                .manifest_digest(&s.repository, d)
                .await
                .ok()
                .map(|found| found.is_some()),
            Err(_) => None,
        },
        None => None,
    };
    let platform = Platform::from_outputs(s, &net.outputs, &plat.outputs).ok();
    let live = match &platform {
        Some(p) => service::find(&ctx.ecs, &p.cluster, &s.service).await?,
        None => None,
    };
    let current = match live.as_ref().and_then(|l| l.task_definition()) {
        Some(arn) => taskdef::describe(&ctx.ecs, arn).await?,
        None => None,
    };
    // Compare images by digest: the live reference names the registry host, ours may not yet.
    let full_reference = match (&current, &digest) {
        (Some(c), Some(d)) if c.image.ends_with(d.as_str()) => c.image.clone(),
        _ => reference.clone(),
    };
    let task_changes = match &platform {
        Some(p) => TaskSpec::new(s, p, &full_reference).diff(current.as_ref()),
        None => vec![Change {
            field: "taskDefinition".into(),
            from: None,
            to: Some("a first revision, once the stacks exist".into()),
        }],
    };
    let service = match (&platform, &live) {
        (Some(p), Some(l)) => {
            let would_register = !task_changes.is_empty();
            let td = if would_register {
                "(new revision)".to_string()
            } else {
                l.task_definition().unwrap_or_default().to_string()
            };
            let changes = ServiceSpec::new(s, p, &td).diff(l);
            ServiceResult {
                name: s.service.clone(),
                action: if changes.is_empty() {
                    "unchanged"
                } else {
                    "update"
                },
                changes,
                autoscaling_changed: false,
            }
        }
        _ => ServiceResult {
            name: s.service.clone(),
            action: "create",
            changes: Vec::new(),
            autoscaling_changed: true,
        },
    };
    let changes = stacks.iter().any(|st| st.change != "unchanged")
        || image_in_registry == Some(false)
        || !task_changes.is_empty()
        || service.action != "unchanged";
    Ok(Plan {
        identity,
        stacks,
        image: ImageResult {
            reference,
            source: how,
            pushed: None,
        },
        image_in_registry,
        task_definition: task_changes,
        service,
        changes,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    pub status: String,
    pub rollout_state: String,
    pub reason: String,
    pub task_definition: String,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub failed_tasks: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    pub id: String,
    pub last_status: String,
    pub health: String,
    pub task_definition: String,
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub env: String,
    pub stacks: Vec<(String, String)>,
    pub service: Option<String>,
    pub task_definition: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub deployments: Vec<DeploymentStatus>,
    pub tasks: Vec<TaskStatus>,
    pub events: Vec<String>,
    pub local_task: Option<local::TaskState>,
    pub local_task_ready: Option<bool>,
    pub url: Option<String>,
    pub dashboard_url: Option<String>,
}

pub async fn status(ctx: &Context) -> Result<Status, DeployError> {
    let s = &ctx.settings;
    let mut stacks = Vec::new();
    for name in [&s.network_stack, &s.platform_stack] {
        let st = stacks::describe(&ctx.cfn, name)
            .await?
            .map_or("absent".to_string(), |(st, _)| st);
        stacks.push((name.clone(), st));
    }
    let platform = ctx.platform().await?;
    let mut out = Status {
        env: s.env.clone(),
        stacks,
        service: None,
        task_definition: None,
        desired: 0,
        running: 0,
        pending: 0,
        deployments: Vec::new(),
        tasks: Vec::new(),
        events: Vec::new(),
        local_task: None,
        local_task_ready: None,
        url: platform.as_ref().map(|p| ctx.url(p)),
        dashboard_url: platform.as_ref().map(|p| dashboard(&ctx.url(p))),
    };
    let Some(platform) = platform else {
        return Ok(out);
    };
    if let Some(svc) = service::find(&ctx.ecs, &platform.cluster, &s.service).await? {
        out.service = svc.status().map(|st| format!("{} {st}", s.service));
        out.task_definition = svc.task_definition().map(|t| short(t).to_string());
        out.desired = svc.desired_count();
        out.running = svc.running_count();
        out.pending = svc.pending_count();
        out.deployments = svc
            .deployments()
            .iter()
            .map(|d| DeploymentStatus {
                id: d.id().unwrap_or_default().into(),
                status: d.status().unwrap_or_default().into(),
                rollout_state: d.rollout_state().map_or("", |r| r.as_str()).into(),
                reason: d.rollout_state_reason().unwrap_or_default().into(),
                task_definition: short(d.task_definition().unwrap_or_default()).into(),
                desired: d.desired_count(),
                running: d.running_count(),
                pending: d.pending_count(),
                failed_tasks: d.failed_tasks(),
            })
            .collect();
        out.events = svc
            .events()
            .iter()
            .take(5)
            .filter_map(|e| e.message().map(str::to_string))
            .collect();
        let arns = ctx
            .ecs
            .list_tasks()
            .cluster(&platform.cluster)
            .service_name(&s.service)
            .send()
            .await
            .map_err(error::aws("listing tasks"))?
            .task_arns()
            .iter()
            .take(100)
            .cloned()
            .collect::<Vec<_>>();
        if !arns.is_empty() {
            let tasks = ctx
                .ecs
                .describe_tasks()
                .cluster(&platform.cluster)
                .set_tasks(Some(arns))
                .send()
                .await
                .map_err(error::aws("describing tasks"))?;
            out.tasks = tasks
                .tasks()
                .iter()
                .map(|t| TaskStatus {
                    id: t
                        .task_arn()
                        .unwrap_or_default()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .into(),
                    last_status: t.last_status().unwrap_or_default().into(),
                    health: t.health_status().map_or("UNKNOWN", |h| h.as_str()).into(),
                    task_definition: short(t.task_definition_arn().unwrap_or_default()).into(),
                    started_at: t.started_at().map(|d| d.to_string()),
                })
                .collect();
        }
    }
    if s.emulator {
        out.local_task = ctx.task_dir().running();
        out.local_task_ready = match &out.local_task {
            Some(t) => Some(local::ready(t.port).await),
            None => Some(false),
        };
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub from: String,
    pub to: String,
    pub rollout: Completed,
    pub local_task: Option<local::TaskState>,
    pub verified: Verified,
    pub url: String,
}

/// Back to the previous revision (or `to`: a revision number or ARN), waited and verified.
pub async fn rollback(
    ctx: &Context,
    to: Option<&str>,
    options: &DeployOptions,
) -> Result<RolledBack, DeployError> {
    let s = &ctx.settings;
    ctx.preflight().await?;
    let platform = ctx.platform().await?.ok_or_else(|| {
        DeployError::Usage(format!(
            "env {} is not deployed: nothing to roll back",
            s.env
        ))
    })?;
    let live = service::find(&ctx.ecs, &platform.cluster, &s.service)
        .await?
        .ok_or_else(|| {
            DeployError::Usage(format!(
                "service {} does not exist: nothing to roll back",
                s.service
            ))
        })?;
    let current = live.task_definition().unwrap_or_default().to_string();
    let revision = |arn: &str| {
        arn.rsplit(':')
            .next()
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut arns = Vec::new();
    let mut pages = ctx
        .ecs
        .list_task_definitions()
        .family_prefix(&s.service)
        .sort(aws_sdk_ecs::types::SortOrder::Desc)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(error::aws("listing task definition revisions"))?;
        arns.extend(
            page.task_definition_arns()
                .iter()
                .filter(|a| short(a).split(':').next() == Some(s.service.as_str()))
                .cloned(),
        );
        if arns.len() > 1000 {
            break;
        }
    }
    let target = match to {
        Some(t) if t.starts_with("arn:") => arns.iter().find(|a| a.as_str() == t).cloned(),
        Some(t) => {
            let wanted: u32 = t
                .trim_start_matches(&format!("{}:", s.service))
                .parse()
                .map_err(|_| {
                    DeployError::Usage(format!(
                        "--to {t}: give a revision number or a task definition ARN"
                    ))
                })?;
            arns.iter().find(|a| revision(a) == wanted).cloned()
        }
        None => arns
            .iter()
            .filter(|a| revision(a) < revision(&current))
            .max_by_key(|a| revision(a))
            .cloned(),
    }
    .ok_or_else(|| {
        DeployError::Usage(format!(
            "no revision to roll back to from {} (known: {})",
            short(&current),
            arns.iter().map(|a| short(a)).collect::<Vec<_>>().join(", ")
        ))
    })?;
    if target == current {
        return Err(DeployError::Usage(format!(
            "the service already runs {}",
            short(&current)
        )));
    }
    let spec = taskdef::describe(&ctx.ecs, &target).await?.ok_or_else(|| {
        DeployError::Build(format!(
            "{} has no {} container",
            short(&target),
            taskdef::CONTAINER
        ))
    })?;
    ctx.report.line(format!(
        "rollback: {} -> {}",
        short(&current),
        short(&target)
    ));
    let updated = ctx
        .ecs
        .update_service()
        .cluster(&platform.cluster)
        .service(&s.service)
        .task_definition(&target)
        .send()
        .await
        .map_err(error::aws(format!("updating service {}", s.service)))?;
    let deployment_id = updated
        .service()
        .and_then(service::primary_deployment)
        .ok_or_else(|| DeployError::Rollout("the service has no PRIMARY deployment".into()))?;
    let (rollout, local_task, verified, url) =
        wait_and_verify(ctx, &platform, deployment_id, &target, &spec, options).await?;
    Ok(RolledBack {
        from: current,
        to: target,
        rollout,
        local_task,
        verified,
        url,
    })
}

/// One log line, as `deploy logs --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine<'a> {
    pub task: &'a str,
    pub timestamp_ms: Option<i64>,
    pub message: &'a str,
}

fn print_line(json: bool, line: &LogLine<'_>) {
    if json {
        println!("{}", serde_json::to_string(line).unwrap_or_default());
    } else {
        println!("{} {}", &line.task[..line.task.len().min(8)], line.message);
    }
}

/// At most this many events are read to find the newest `lines`.
const MAX_LOG_EVENTS: usize = 10_000;

/// Prints the service's logs: the newest `lines` since `since` (then new ones with `follow`),
/// from CloudWatch, or from the local task's file for emulator environments.
pub async fn logs(
    ctx: &Context,
    follow: bool,
    since: Duration,
    lines: usize,
    json: bool,
) -> Result<(), DeployError> {
    let s = &ctx.settings;
    if s.emulator {
        let path = ctx.task_dir().log_file();
        if !path.exists() {
            return Err(DeployError::Usage(format!(
                "no local task has run yet ({} is missing)",
                path.display()
            )));
        }
        for line in local::tail(&path, lines) {
            print_line(
                json,
                &LogLine {
                    task: "local",
                    timestamp_ms: None,
                    message: &line,
                },
            );
        }
        let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        if follow {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                offset = local::read_from(&path, offset, |line| {
                    print_line(
                        json,
                        &LogLine {
                            task: "local",
                            timestamp_ms: None,
                            message: line,
                        },
                    )
                });
            }
        }
        return Ok(());
    }
    let platform = ctx
        .platform()
        .await?
        .ok_or_else(|| DeployError::Usage(format!("env {} is not deployed", s.env)))?;
    let mut start = std::time::SystemTime::now()
        .checked_sub(since)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut seen = std::collections::HashSet::new();
    let mut first = true;
    loop {
        let mut pages = ctx
            .logs
            .filter_log_events()
            .log_group_name(&platform.log_group)
            .log_stream_name_prefix(format!("{}/", s.app))
            .start_time(start)
            .into_paginator()
            .send();
        let mut batch = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(error::aws(format!(
                "reading logs from {}",
                platform.log_group
            )))?;
            for e in page.events() {
                if seen.insert(e.event_id().unwrap_or_default().to_string()) {
                    batch.push(e.clone());
                }
            }
            if batch.len() >= MAX_LOG_EVENTS {
                break;
            }
        }
        batch.sort_by_key(|e| e.timestamp().unwrap_or(0));
        let skip = if first {
            batch.len().saturating_sub(lines)
        } else {
            0
        };
        for e in &batch[skip..] {
            let task = e
                .log_stream_name()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            print_line(
                json,
                &LogLine {
                    task,
                    timestamp_ms: e.timestamp(),
                    message: e.message().unwrap_or_default().trim_end(),
                },
            );
        }
        if !follow {
            return Ok(());
        }
        first = false;
        start = batch.last().and_then(|e| e.timestamp()).unwrap_or(start);
        if seen.len() > 100_000 {
            seen.clear();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Destroyed {
    pub env: String,
    pub local_task_stopped: bool,
    pub service_deleted: bool,
    pub stacks_deleted: Vec<String>,
    pub emulator_reset: bool,
    pub kept: Vec<String>,
}

/// Removes the service and the stacks; keeps the ECR repository (its images are the history
/// rollbacks need) and says so.
pub async fn destroy(ctx: &Context) -> Result<Destroyed, DeployError> {
    let s = &ctx.settings;
    ctx.preflight().await?;
    let local_task_stopped = if s.emulator {
        local::stop(
            &ctx.task_dir(),
            Duration::from_secs(u64::from(s.stop_timeout_seconds)),
            &ctx.report,
        )
        .await
    } else {
        false
    };
    let mut service_deleted = false;
    if let Some(platform) = ctx.platform().await? {
        service::remove_autoscaling(&ctx.scaling, &platform.cluster, &s.service).await?;
        if service::find(&ctx.ecs, &platform.cluster, &s.service)
            .await?
            .is_some()
        {
            ctx.report.line(format!("service {}: deleting", s.service));
            ctx.ecs
                .delete_service()
                .cluster(&platform.cluster)
                .service(&s.service)
                .force(true)
                .send()
                .await
                .map_err(error::aws(format!("deleting service {}", s.service)))?;
            let started = tokio::time::Instant::now();
            // DRAINING while its tasks stop, then INACTIVE (which `find` treats as gone).
            while service::find(&ctx.ecs, &platform.cluster, &s.service)
                .await?
                .is_some()
            {
                if started.elapsed() > s.rollout_timeout {
                    return Err(DeployError::Rollout(format!(
                        "service {} still exists after {:?}",
                        s.service, s.rollout_timeout
                    )));
                }
                tokio::time::sleep(ctx.poll()).await;
            }
            service_deleted = true;
        }
    }
    let mut stacks_deleted = Vec::new();
    let mut emulator_reset = false;
    for name in [&s.platform_stack, &s.network_stack] {
        match stacks::delete(&ctx.cfn, name, s.stack_timeout, &ctx.report).await {
            Ok(true) => stacks_deleted.push(name.clone()),
            Ok(false) => {}
            // moto cannot delete a VPC stack (it removes the VPC before its gateway and
            // routes, ADR-0006); a reset of the emulator is the local equivalent.
            Err(stacks::StackError::Aws {
                code: Some(code), ..
            }) if s.emulator && code == "DependencyViolation" => {
                ctx.report.line(format!(
                    "stack {name}: the emulator cannot delete a VPC stack; resetting the local AWS instead"
                ));
                local::reset_emulator(s.endpoint_url.as_deref().unwrap_or_default()).await?;
                stacks_deleted.push(name.clone());
                emulator_reset = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Destroyed {
        env: s.env.clone(),
        local_task_stopped,
        service_deleted,
        stacks_deleted,
        emulator_reset,
        kept: vec![format!(
            "ECR repository {} (delete it with: aws ecr delete-repository --force --repository-name {})",
            s.repository, s.repository
        )],
    })
}
