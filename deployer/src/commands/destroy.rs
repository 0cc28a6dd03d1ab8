//! `deploy destroy`: the service and the stacks go; the image repository stays.

use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::error::DeployError;
use crate::local::{self};
use crate::stacks::{self};

#[derive(Debug, Clone, Serialize)]
pub struct Destroyed {
    pub env: String,
    pub local_task_stopped: bool,
    pub local_broker_stopped: bool,
    /// The service clients reach.
    pub service_deleted: bool,
    /// Every service deleted (with a broker, the ingest service too).
    pub services_deleted: Vec<String>,
    pub stacks_deleted: Vec<String>,
    pub emulator_reset: bool,
    pub kept: Vec<String>,
}

/// Removes the service and the stacks; keeps the ECR repository (its images are the history
/// rollbacks need) and says so.
pub async fn destroy(ctx: &Context) -> Result<Destroyed, DeployError> {
    let s = &ctx.settings;
    ctx.preflight().await?;
    // Whatever a deploy may have made, whether or not deploy.toml still asks for it: edges
    // first (they read from the ingest task), then the ingest, then the local broker.
    let mut local_task_stopped = false;
    let mut local_broker_stopped = false;
    if s.emulator {
        let grace = Duration::from_secs(u64::from(s.stop_timeout_seconds));
        for (dir, _) in ctx.all_local_slots().iter().rev() {
            local_task_stopped |= local::stop(dir, grace, &ctx.report).await;
        }
        local_broker_stopped = crate::local_broker::stop(&s.root, &s.env, &ctx.report).await;
    }
    let mut services_deleted = Vec::new();
    if let Some(platform) = ctx.platform().await? {
        for name in [&s.service, &s.ingest_service] {
            if delete_service(ctx, &platform.cluster, name).await? {
                services_deleted.push(name.clone());
            }
        }
    }
    let mut stacks_deleted = Vec::new();
    let mut emulator_reset = false;
    for name in [&s.platform_stack, &s.broker_stack, &s.network_stack] {
        match stacks::delete(&ctx.cfn, name, ctx.stack_waiting(), &ctx.report).await {
            Ok(true) => stacks_deleted.push(name.clone()),
            Ok(false) => {}
            // moto cannot delete a VPC stack (it removes the VPC before its gateway and
            // routes, ADR-0006); a reset of the emulator is the local equivalent.
            Err(stacks::StackError::Aws(p))
                if s.emulator && p.code.as_deref() == Some("DependencyViolation") =>
            {
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
        local_broker_stopped,
        service_deleted: services_deleted.contains(&s.service),
        services_deleted,
        stacks_deleted,
        emulator_reset,
        kept: vec![format!(
            "ECR repository {} (delete it with: aws ecr delete-repository --force --repository-name {})",
            s.repository, s.repository
        )],
    })
}
