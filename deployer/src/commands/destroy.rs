//! `deploy destroy`: the service and the stacks go; the image repository stays.

use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::error::{self, DeployError};
use crate::local::{self};
use crate::service::{self};
use crate::stacks::{self};

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
        service_deleted,
        stacks_deleted,
        emulator_reset,
        kept: vec![format!(
            "ECR repository {} (delete it with: aws ecr delete-repository --force --repository-name {})",
            s.repository, s.repository
        )],
    })
}
