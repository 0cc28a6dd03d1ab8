//! `deploy rollback`: back to an earlier task definition, waited and verified like a deploy.

use serde::Serialize;

use super::*;
use crate::error::{self, DeployError};
use crate::local::{self};
use crate::rollout::Completed;
use crate::service::{self};
use crate::taskdef::{self, short};
use crate::verify::Verified;

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
        DeployError::usage(
            format!("env {} is not deployed: nothing to roll back", s.env),
            format!("deploy it first: cargo run --bin deploy -- --env {}", s.env),
        )
    })?;
    let live = service::find(&ctx.ecs, &platform.cluster, &s.service)
        .await?
        .ok_or_else(|| {
            DeployError::usage(
                format!("service {} does not exist: nothing to roll back", s.service),
                format!("deploy it first: cargo run --bin deploy -- --env {}", s.env),
            )
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
                    DeployError::usage(
                        format!("--to {t} is neither a revision number nor a task definition ARN"),
                        format!(
                            "give a revision: --to 3 (or --to {}:3, or the full ARN)",
                            s.service
                        ),
                    )
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
        DeployError::usage(
            format!("no revision to roll back to from {}", short(&current)),
            format!(
                "name one of the known revisions with --to: {}",
                arns.iter().map(|a| short(a)).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    if target == current {
        return Err(DeployError::usage(
            format!("the service already runs {}", short(&current)),
            "name another revision with --to",
        ));
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
    let api_key = verify_key(ctx).await?;
    let rollout = wait_rollout(ctx, &platform, &s.service, deployment_id, &target).await?;
    // The service clients reach; with a broker, the ingest service keeps running as it is.
    let parts = roles::parts(s);
    let serving = parts.last().expect("one part serves clients");
    let serving = serve_and_verify(
        ctx,
        &platform,
        &[Running {
            part: serving,
            spec: &spec,
            task_definition: &target,
        }],
        options,
        api_key,
    )
    .await?;
    Ok(RolledBack {
        from: current,
        to: target,
        rollout,
        local_task: serving.local_tasks.first().cloned(),
        verified: serving.verified,
        url: serving.url,
    })
}
