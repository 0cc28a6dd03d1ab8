//! `deploy`: the whole rollout. The plan's decisions ([`super::plan::compute`]) are carried
//! out in order: account prerequisites, stacks (network, broker, platform), image, then each
//! service (the ingest service before the edges, with a broker): task definition, service,
//! wait; then the tasks run locally (emulator) and every URL clients use is verified.

use super::plan::{Decided, compute, service_diff};
use super::*;
use crate::error::DeployError;
use crate::infra::{self, BrokerLink, Platform};
use crate::service::{self, ServiceSpec};
use crate::stacks::{self, Action};
use crate::taskdef::{TaskSpec, short};

/// The whole rollout: stacks, image, services in order, wait, verify.
pub async fn deploy(ctx: &Context, options: &DeployOptions) -> Result<Deployed, DeployError> {
    let s = &ctx.settings;
    let (_, decided) = compute(ctx, options, true).await?;
    let Decided {
        identity,
        role_missing,
        network,
        broker: broker_plan,
        platform: platform_plan,
        platform_grants,
        source,
        needs,
        verify_key,
        leftovers,
    } = decided;
    let source = source.ok_or_else(|| DeployError::Build("no image to deploy".into()))?;

    if role_missing {
        crate::prerequisites::ensure_ecs_role(&ctx.iam, &ctx.report).await?;
    }
    let planned_outputs = network.outputs.clone();
    let net = stacks::apply(&ctx.cfn, network, ctx.stack_waiting(), &ctx.report).await?;
    let mut stacks = vec![StackResult {
        name: s.network_stack.clone(),
        change: net.change.as_str(),
    }];
    // A plan holds while the outputs it was made from do; otherwise the same function plans
    // again against what was just applied.
    let unchanged_network = net.outputs == planned_outputs;
    let broker = match s.broker {
        None => None,
        Some(engine) if s.emulator => {
            Some(crate::local_broker::ensure(&s.root, &s.env, s.port, engine, &ctx.report).await?)
        }
        Some(_) => {
            let plan = match broker_plan {
                Some(p) if unchanged_network && !matches!(p.action, Action::Busy { .. }) => p,
                _ => {
                    let spec = infra::broker(s, &net.outputs)
                        .map_err(|e| DeployError::Build(e.to_string()))?
                        .ok_or_else(|| DeployError::Build("a broker without a stack".into()))?;
                    stacks::plan(&ctx.cfn, &spec).await?
                }
            };
            let applied = stacks::apply(&ctx.cfn, plan, ctx.stack_waiting(), &ctx.report).await?;
            stacks.push(StackResult {
                name: s.broker_stack.clone(),
                change: applied.change.as_str(),
            });
            Some(
                BrokerLink::from_outputs(s, &applied.outputs)
                    .map_err(|e| DeployError::Build(e.to_string()))?,
            )
        }
    };
    let grants = needs.grants.with_broker(broker.as_ref());
    let platform_plan = match platform_plan {
        Some(p)
            if unchanged_network
                && grants == platform_grants
                && !matches!(p.action, Action::Busy { .. }) =>
        {
            p
        }
        _ => {
            let spec = infra::platform(s, &net.outputs, &grants)
                .map_err(|e| DeployError::Build(e.to_string()))?;
            stacks::plan(&ctx.cfn, &spec).await?
        }
    };
    let plat = stacks::apply(&ctx.cfn, platform_plan, ctx.stack_waiting(), &ctx.report).await?;
    stacks.push(StackResult {
        name: s.platform_stack.clone(),
        change: plat.change.as_str(),
    });
    let platform = Platform::from_outputs(s, &net.outputs, &plat.outputs)
        .map_err(|e| DeployError::Build(e.to_string()))?;

    let image = publish(ctx, source).await?;

    let parts = roles::parts(s);
    let mut rolled = Vec::new();
    for part in &parts {
        rolled.push(
            roll_out(
                ctx,
                &platform,
                &image.reference,
                &needs,
                part,
                broker.as_ref(),
            )
            .await?,
        );
    }
    let running: Vec<Running<'_>> = parts
        .iter()
        .zip(&rolled)
        .map(|(part, r)| Running {
            part,
            spec: &r.spec,
            task_definition: &r.deployed.task_definition.arn,
        })
        .collect();
    let serving = serve_and_verify(ctx, &platform, &running, options, verify_key).await?;
    let local_task = parts
        .iter()
        .zip(&running)
        .filter(|(p, _)| p.serves_clients())
        .find_map(|(_, r)| {
            serving
                .local_tasks
                .iter()
                .find(|t| t.task_definition == r.task_definition)
                .cloned()
        });
    let removed = leftovers.remove(ctx, &platform.cluster).await?;
    let edge = rolled.pop().expect("one part serves clients").deployed;
    let ingest = rolled.pop().map(|r| r.deployed);
    Ok(Deployed {
        identity,
        stacks,
        image,
        task_definition: edge.task_definition,
        service: edge.service,
        rollout: edge.rollout,
        ingest,
        broker,
        local_task,
        local_tasks: serving.local_tasks,
        dashboard_url: dashboard(&serving.url),
        verified: serving.verified,
        url: serving.url,
        urls: serving.urls,
        removed,
    })
}

/// One service rolled out, and the task definition it runs.
struct Rolled {
    deployed: PartDeployed,
    spec: TaskSpec,
}

/// `part`'s task definition (registered when it changed), its service (created or updated
/// in the fields that differ), its autoscaling, and the wait for its deployment.
async fn roll_out(
    ctx: &Context,
    platform: &Platform,
    image: &str,
    needs: &crate::preflight::Needs,
    part: &Part,
    broker: Option<&BrokerLink>,
) -> Result<Rolled, DeployError> {
    let s = &ctx.settings;
    let name = &part.service;
    let diff = service_diff(ctx, platform, image, needs, part, broker).await?;
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

    let service_spec = ServiceSpec::new(s, platform, part, broker, &task_definition);
    let live = if diff.draining {
        service::wait_drained(
            &ctx.ecs,
            &platform.cluster,
            name,
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
            ctx.report.line(format!("service {name}: creating"));
            let created = service_spec.create(&ctx.ecs, &s.app).await?;
            // Read back what was created: a service that came back without a setting (the
            // emulator drops the circuit breaker on create) is brought to the spec at once.
            let missing = service_spec.diff(&created);
            if missing.is_empty() {
                (created, "create", missing)
            } else {
                for c in &missing {
                    ctx.report.line(format!(
                        "service {name}: created without {}; applying it",
                        c.field
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
                ctx.report.line(format!("service {name}: unchanged"));
                (live.clone(), "unchanged", changes)
            } else {
                for c in &changes {
                    ctx.report.line(format!(
                        "service {name}: {} {} -> {}",
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
    let autoscaling_changed = if service_spec.autoscaled() {
        service::ensure_autoscaling(&ctx.scaling, &service_spec, &ctx.report).await?
    } else {
        false
    };
    let deployment_id = service::primary_deployment(&deployed_service)
        .ok_or_else(|| DeployError::Rollout(format!("service {name} has no PRIMARY deployment")))?;
    let rollout = wait_rollout(ctx, platform, name, deployment_id, &task_definition).await?;
    Ok(Rolled {
        deployed: PartDeployed {
            task_definition: TaskDefinitionResult {
                arn: task_definition,
                registered,
                changes: diff.task_changes,
            },
            service: ServiceResult {
                name: name.clone(),
                action,
                changes: service_changes,
                autoscaling_changed,
            },
            rollout,
        },
        spec: diff.spec,
    })
}
