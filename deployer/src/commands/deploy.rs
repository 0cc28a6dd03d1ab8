//! `deploy`: the whole rollout. The plan's decisions ([`super::plan::compute`]) are carried
//! out in order: account prerequisites, stacks, image, task definition, service, wait, verify.

use super::plan::{Decided, compute, service_diff};
use super::*;
use crate::error::DeployError;
use crate::infra::{self, Platform};
use crate::service::{self, ServiceSpec};
use crate::stacks::{self, Action};
use crate::taskdef::short;

/// The whole rollout: stacks, image, task definition, service, wait, verify.
pub async fn deploy(ctx: &Context, options: &DeployOptions) -> Result<Deployed, DeployError> {
    let s = &ctx.settings;
    let (_, decided) = compute(ctx, options, true).await?;
    let Decided {
        identity,
        role_missing,
        network,
        platform: platform_plan,
        source,
        needs,
        verify_key,
    } = decided;
    let source = source.ok_or_else(|| DeployError::Build("no image to deploy".into()))?;

    if role_missing {
        crate::prerequisites::ensure_ecs_role(&ctx.iam, &ctx.report).await?;
    }
    let planned_outputs = network.outputs.clone();
    let net = stacks::apply(&ctx.cfn, network, ctx.stack_waiting(), &ctx.report).await?;
    // The platform's plan holds while the network's outputs are those it was made from; a
    // created or changed network is planned against again, by the same function.
    let platform_plan = match platform_plan {
        Some(p) if net.outputs == planned_outputs && !matches!(p.action, Action::Busy { .. }) => p,
        _ => {
            let spec = infra::platform(s, &net.outputs, &needs.grants)
                .map_err(|e| DeployError::Build(e.to_string()))?;
            stacks::plan(&ctx.cfn, &spec).await?
        }
    };
    let plat = stacks::apply(&ctx.cfn, platform_plan, ctx.stack_waiting(), &ctx.report).await?;
    let stacks = vec![
        StackResult {
            name: s.network_stack.clone(),
            change: net.change.as_str(),
        },
        StackResult {
            name: s.platform_stack.clone(),
            change: plat.change.as_str(),
        },
    ];
    let platform = Platform::from_outputs(s, &net.outputs, &plat.outputs)
        .map_err(|e| DeployError::Build(e.to_string()))?;

    let image = publish(ctx, source).await?;

    let diff = service_diff(ctx, &platform, &image.reference, &needs).await?;
    let (task_definition, registered) = match &diff.current {
        Some(arn) if diff.task_changes.is_empty() => {
            ctx.report
                .line(format!("task definition: unchanged ({})", short(arn)));
            (arn.clone(), false)
        }
        _ => {
            let arn = diff.spec.register(&ctx.ecs, &s.app).await?;
            ctx.report.line(format!(
                "task definition: registered {} ({} change(s))",
                short(&arn),
                diff.task_changes.len()
            ));
            (arn, true)
        }
    };

    let service_spec = ServiceSpec::new(s, &platform, &task_definition);
    let live = if diff.draining {
        service::wait_drained(
            &ctx.ecs,
            &platform.cluster,
            &s.service,
            s.rollout_timeout,
            ctx.poll(),
            &ctx.report,
        )
        .await?
    } else {
        diff.live
    };
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
            let changes = service_spec.diff(live);
            if changes.is_empty() {
                ctx.report.line(format!("service {}: unchanged", s.service));
                (live.clone(), "unchanged", changes)
            } else {
                for c in &changes {
                    ctx.report.line(format!(
                        "service {}: {} {} -> {}",
                        s.service,
                        c.field,
                        c.from.as_deref().unwrap_or("-"),
                        c.to.as_deref().unwrap_or("-")
                    ));
                }
                (
                    service_spec.update(&ctx.ecs, live).await?,
                    "update",
                    changes,
                )
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
        &diff.spec,
        options,
        verify_key,
    )
    .await?;
    Ok(Deployed {
        identity,
        stacks,
        image,
        task_definition: TaskDefinitionResult {
            arn: task_definition,
            registered,
            changes: diff.task_changes,
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
