//! `deploy status`: stacks, service, deployments, tasks with health, the URL.

use serde::Serialize;

use super::*;
use crate::error::{self, DeployError};
use crate::local::{self};
use crate::service::{self};
use crate::stacks::{self};
use crate::taskdef::short;

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

/// One ECS service as it runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    /// `NAME STATUS`, or `None` when there is no such service.
    pub service: Option<String>,
    pub task_definition: Option<String>,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub deployments: Vec<DeploymentStatus>,
    pub tasks: Vec<TaskStatus>,
    pub events: Vec<String>,
}

/// The broker: its stack (or the local server), and where tasks reach it.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    pub engine: &'static str,
    /// The stack's status, or `local` / `local: not running` for the emulator's server.
    pub state: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LocalTask {
    #[serde(flatten)]
    pub task: local::TaskState,
    pub ready: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub env: String,
    pub stacks: Vec<(String, String)>,
    /// The service clients reach (the edge service with a broker).
    #[serde(flatten)]
    pub serving: ServiceStatus,
    /// With a broker: the ingest service.
    pub ingest: Option<ServiceStatus>,
    pub broker: Option<BrokerStatus>,
    /// The first local task that serves clients (emulator).
    pub local_task: Option<local::TaskState>,
    pub local_task_ready: Option<bool>,
    /// Every local task (emulator).
    pub local_tasks: Vec<LocalTask>,
    pub url: Option<String>,
    pub dashboard_url: Option<String>,
}

pub async fn status(ctx: &Context) -> Result<Status, DeployError> {
    let s = &ctx.settings;
    let mut names = vec![s.network_stack.clone()];
    if s.broker.is_some() && !s.emulator {
        names.push(s.broker_stack.clone());
    }
    names.push(s.platform_stack.clone());
    let mut stacks = Vec::new();
    let mut broker = None;
    for name in names {
        let found = stacks::describe(&ctx.cfn, &name).await?;
        if name == s.broker_stack
            && let Some(engine) = s.broker
        {
            broker = Some(BrokerStatus {
                engine: engine.as_str(),
                state: found.as_ref().map_or("absent".into(), |(st, _)| st.clone()),
                url: found
                    .as_ref()
                    .and_then(|(_, outputs)| outputs.get("BrokerUrl").cloned()),
            });
        }
        let st = found.map_or("absent".to_string(), |(st, _)| st);
        stacks.push((name, st));
    }
    if s.emulator
        && let Some(engine) = s.broker
    {
        let local = crate::local_broker::running(&s.root, &s.env);
        broker = Some(BrokerStatus {
            engine: engine.as_str(),
            state: match &local {
                Some(b) => b.describe(),
                None => "local: not running".into(),
            },
            url: local.map(|_| crate::local_broker::link(s.port, engine).url),
        });
    }
    let platform = ctx.platform().await?;
    let mut out = Status {
        env: s.env.clone(),
        stacks,
        serving: ServiceStatus::default(),
        ingest: None,
        broker,
        local_task: None,
        local_task_ready: None,
        local_tasks: Vec::new(),
        url: platform.as_ref().map(|p| ctx.url(p)),
        dashboard_url: platform.as_ref().map(|p| dashboard(&ctx.url(p))),
    };
    if let Some(platform) = platform {
        out.serving = service_status(ctx, &platform.cluster, &s.service).await?;
        if s.broker.is_some() {
            out.ingest = Some(service_status(ctx, &platform.cluster, &s.ingest_service).await?);
        }
    }
    if s.emulator {
        out.local_task = ctx.task_dir().running();
        out.local_task_ready = match &out.local_task {
            Some(t) => Some(local::ready(t.port).await),
            None => Some(false),
        };
        for (dir, _) in ctx.all_local_slots() {
            if let Some(task) = dir.running() {
                let ready = local::ready(task.port).await;
                out.local_tasks.push(LocalTask { task, ready });
            }
        }
    }
    Ok(out)
}

/// Service `name`: its deployments, up to 100 of its tasks, its last five events.
async fn service_status(
    ctx: &Context,
    cluster: &str,
    name: &str,
) -> Result<ServiceStatus, DeployError> {
    let mut out = ServiceStatus::default();
    let Some(svc) = service::find(&ctx.ecs, cluster, name).await? else {
        return Ok(out);
    };
    out.service = svc.status().map(|st| format!("{name} {st}"));
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
        .cluster(cluster)
        .service_name(name)
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
            .cluster(cluster)
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
    Ok(out)
}
