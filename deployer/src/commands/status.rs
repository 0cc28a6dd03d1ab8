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
