//! `deploy`: the whole rollout: stacks, image, task definition, service, wait, verify.

use super::*;
use crate::error::DeployError;
use crate::image::{self};
use crate::infra::{self, Platform};
use crate::service::{self, ServiceSpec};
use crate::stacks::{self};
use crate::taskdef::{self, TaskSpec, short};

/// The whole rollout: stacks, image, task definition, service, wait, verify.
pub async fn deploy(ctx: &Context, options: &DeployOptions) -> Result<Deployed, DeployError> {
    let s = &ctx.settings;
    // Everything that can be decided without AWS, first.
    let source = image::resolve(s, &options.image, &ctx.report)?;
    let identity = ctx.preflight().await?;
    crate::preflight::check(&ctx.needs, s, &identity.region).await?;

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
