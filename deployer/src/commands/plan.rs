//! `deploy plan` (and `--dry-run`): what a deploy would change, from read-only calls. It is
//! also the first half of `deploy`: [`compute`] makes every decision `deploy` then carries out
//! (account prerequisites, each stack's action, the image, the grants), and [`service_diff`] is
//! the one comparison of task definition and service, used by the plan and, once the stacks
//! and image exist, by the deploy.

use serde::Serialize;

use super::*;
use crate::error::DeployError;
use crate::image::{self, Source};
use crate::infra::{self, BrokerLink, Grants, Platform};
use crate::preflight::Needs;
use crate::reference::ImageRef;
use crate::roles::{self, Part};
use crate::service::{self, Found, ServiceSpec};
use crate::stacks::{self, Action, StackPlan};
use crate::taskdef::{self, Change, Inputs, TaskSpec};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub identity: Identity,
    /// ECS's service-linked role: `present`, `create`, or `unknown` (the caller may not look).
    pub ecs_service_linked_role: &'static str,
    pub stacks: Vec<StackResult>,
    pub image: ImageResult,
    pub image_in_registry: Option<bool>,
    /// The service clients reach (the edge service with a broker).
    pub task_definition: Vec<Change>,
    pub service: ServiceResult,
    /// With a broker: the ingest service, rolled out first.
    pub ingest: Option<PartPlan>,
    /// What a broker left that this configuration no longer wants, removed once the service
    /// serves (`broker` turned off).
    pub remove: Vec<String>,
    pub changes: bool,
}

/// What a deploy would change in one service.
#[derive(Debug, Clone, Serialize)]
pub struct PartPlan {
    pub task_definition: Vec<Change>,
    pub service: ServiceResult,
}

/// What [`compute`] decided, for `deploy` to carry out.
#[derive(Debug)]
pub(super) struct Decided {
    pub identity: Identity,
    pub role_missing: bool,
    pub network: StackPlan,
    /// With a broker on AWS; unknown until the network stack exists.
    pub broker: Option<StackPlan>,
    /// Unknown until the network stack exists.
    pub platform: Option<StackPlan>,
    /// What the platform's plan grants the execution role (the broker's password included).
    pub platform_grants: Grants,
    pub source: Option<Source>,
    pub needs: Needs,
    pub verify_key: Option<verify::ApiKey>,
    /// What the plan lists under `remove`, removed once the service serves.
    pub leftovers: Leftovers,
}

/// The task definition and service a deploy would leave, against what runs now.
#[derive(Debug)]
pub(super) struct ServiceDiff {
    pub live: Option<aws_sdk_ecs::types::Service>,
    pub draining: bool,
    /// The running task definition's ARN, when there is one.
    pub current: Option<String>,
    pub spec: TaskSpec,
    pub task_changes: Vec<Change>,
    /// The service's fields that differ, against the task definition it would run.
    pub service_changes: Vec<Change>,
}

impl ServiceDiff {
    pub fn action(&self) -> &'static str {
        match &self.live {
            None => "create",
            Some(_) if self.service_changes.is_empty() && self.task_changes.is_empty() => {
                "unchanged"
            }
            Some(_) => "update",
        }
    }
}

/// Compares what `platform` and `image` make of `part` with what runs now.
pub(super) async fn service_diff(
    ctx: &Context,
    platform: &Platform,
    image: &str,
    needs: &Needs,
    part: &Part,
    broker: Option<&BrokerLink>,
) -> Result<ServiceDiff, DeployError> {
    let s = &ctx.settings;
    let (live, draining) = match service::lookup(&ctx.ecs, &platform.cluster, &part.service).await?
    {
        Found::Active(svc) => (Some(*svc), false),
        Found::Draining => (None, true),
        Found::Absent => (None, false),
    };
    let current_arn = live
        .as_ref()
        .and_then(|l| l.task_definition())
        .map(str::to_string);
    let current = match &current_arn {
        Some(arn) => taskdef::describe(&ctx.ecs, arn).await?,
        None => None,
    };
    let spec = TaskSpec::new(
        s,
        &Inputs {
            platform,
            image,
            region: &ctx.region,
            secrets: &needs.secrets,
            part,
            broker,
        },
    );
    let task_changes = spec.diff(current.as_ref());
    let service_changes = match &live {
        Some(l) => {
            let td = if task_changes.is_empty() {
                current_arn.clone().unwrap_or_default()
            } else {
                "(a new revision)".to_string()
            };
            ServiceSpec::new(s, platform, part, broker, &td).diff(l)
        }
        None => Vec::new(),
    };
    Ok(ServiceDiff {
        live,
        draining,
        current: current_arn,
        spec,
        task_changes,
        service_changes,
    })
}

/// The image name (without digest) a pushed image gets: the local registry's, or the ECR
/// repository's URI.
async fn image_name(ctx: &Context, account: &str) -> Result<String, DeployError> {
    let s = &ctx.settings;
    if let Some(url) = &s.registry_url {
        let host = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        return Ok(format!("{host}/{}", s.repository));
    }
    Ok(match crate::ecr::uri(&ctx.ecr, &s.repository).await? {
        Some(uri) => uri,
        None => format!(
            "{account}.dkr.ecr.{}.amazonaws.com/{}",
            ctx.region, s.repository
        ),
    })
}

/// Every decision of a deploy, from read-only calls.
pub(super) async fn compute(
    ctx: &Context,
    options: &DeployOptions,
    for_deploy: bool,
) -> Result<(Plan, Decided), DeployError> {
    let s = &ctx.settings;
    let nothing_given = options.image.reference.is_none()
        && options.image.archive.is_none()
        && options.image.binary.is_none();
    let source = match image::resolve(s, &options.image, &ctx.report) {
        Ok(source) => Some(source),
        // A plan is still useful where the image cannot be built (no engine on this machine).
        Err(e)
            if !for_deploy
                && nothing_given
                && !s.emulator
                && e.kind() == Kind::NoContainerEngine =>
        {
            ctx.report
                .line(format!("image: not built for the plan: {e}"));
            None
        }
        Err(e) => return Err(e),
    };
    let identity = ctx.preflight().await?;
    let pinned: Option<&ImageRef> = match &source {
        Some(Source::Pinned(r)) => Some(r),
        _ => None,
    };
    let needs = crate::preflight::check(
        &ctx.needs,
        s,
        &ctx.region,
        &identity.account,
        pinned,
        &ctx.report,
    )
    .await?;
    let verify_key = verify_key(ctx).await?;
    let role = if s.emulator {
        // moto has no account prerequisites; nothing to make.
        Some(true)
    } else {
        crate::prerequisites::ecs_role_exists(&ctx.iam).await?
    };

    let network = stacks::plan(&ctx.cfn, &infra::network(s)).await?;
    // The emulator has no ElastiCache: a local server plays the broker (crate::local_broker).
    let broker = match infra::broker(s, &network.outputs) {
        Ok(Some(spec)) if !s.emulator && !network.outputs.is_empty() => {
            Some(stacks::plan(&ctx.cfn, &spec).await?)
        }
        _ => None,
    };
    let link = broker_link(s, broker.as_ref());
    let platform_grants = needs.grants.with_broker(link.as_ref());
    let platform = match infra::platform(s, &network.outputs, &platform_grants) {
        Ok(spec) if !network.outputs.is_empty() => Some(stacks::plan(&ctx.cfn, &spec).await?),
        _ => None,
    };
    if let Some(p) = &platform {
        refuse_replacement(s, p)?;
    }
    let mut stack_results = vec![StackResult {
        name: s.network_stack.clone(),
        change: network.action.as_str(),
    }];
    if s.broker.is_some() && !s.emulator {
        stack_results.push(StackResult {
            name: s.broker_stack.clone(),
            change: broker.as_ref().map_or("create", |p| p.action.as_str()),
        });
    }
    stack_results.push(StackResult {
        name: s.platform_stack.clone(),
        change: platform.as_ref().map_or("create", |p| p.action.as_str()),
    });

    let (reference, how, digest) = match &source {
        None => (
            "(built from the Dockerfile at deploy time)".to_string(),
            "Dockerfile".to_string(),
            None,
        ),
        Some(Source::Pinned(r)) => (r.to_string(), "--image".to_string(), None),
        Some(Source::Built { image, how }) => (
            format!(
                "{}@{}",
                image_name(ctx, &identity.account).await?,
                image.manifest.digest
            ),
            how.clone(),
            Some(image.manifest.digest.clone()),
        ),
    };
    let image_in_registry = match &digest {
        Some(d) => match crate::ecr::login(&ctx.ecr, s.registry_url.as_deref()).await {
            Ok(registry) => registry
                .manifest_digest(&s.repository, d.as_str())
                .await
                .ok()
                .map(|found| found.is_some()),
            Err(_) => None,
        },
        None => None,
    };
    let live_platform = match &platform {
        Some(p)
            if matches!(
                p.action,
                Action::Unchanged | Action::Update | Action::Busy { .. }
            ) =>
        {
            Platform::from_outputs(s, &network.outputs, &p.outputs).ok()
        }
        _ => None,
    };
    let mut parts = Vec::new();
    for part in roles::parts(s) {
        let known = live_platform
            .as_ref()
            .filter(|_| source.is_some() && (s.broker.is_none() || link.is_some()));
        parts.push(match known {
            Some(p) => {
                let diff = service_diff(ctx, p, &reference, &needs, &part, link.as_ref()).await?;
                PartPlan {
                    service: ServiceResult {
                        name: part.service.clone(),
                        action: diff.action(),
                        changes: diff.service_changes.clone(),
                        autoscaling_changed: diff.live.is_none() && part.serves_clients(),
                    },
                    task_definition: diff.task_changes,
                }
            }
            None => PartPlan {
                task_definition: vec![Change {
                    field: "taskDefinition".into(),
                    from: None,
                    to: Some(if source.is_none() {
                        "a new revision with the image built at deploy time".into()
                    } else {
                        "a first revision, once the stacks exist".into()
                    }),
                }],
                service: ServiceResult {
                    name: part.service.clone(),
                    action: "create",
                    changes: Vec::new(),
                    autoscaling_changed: part.serves_clients(),
                },
            },
        });
    }
    let leftovers =
        Leftovers::find(ctx, live_platform.as_ref().map(|p| p.cluster.as_str())).await?;
    let remove = leftovers.names(s);
    let changes = role != Some(true)
        || !remove.is_empty()
        || stack_results.iter().any(|st| st.change != "unchanged")
        || image_in_registry == Some(false)
        || parts
            .iter()
            .any(|p| !p.task_definition.is_empty() || p.service.action != "unchanged");
    let serving = parts.pop().expect("one part serves clients");
    let ingest = parts.pop();
    let plan = Plan {
        identity: identity.clone(),
        ecs_service_linked_role: match role {
            Some(true) => "present",
            Some(false) => "create",
            None => "unknown",
        },
        stacks: stack_results,
        image: ImageResult {
            reference,
            source: how,
            pushed: None,
        },
        image_in_registry,
        task_definition: serving.task_definition,
        service: serving.service,
        ingest,
        remove,
        changes,
    };
    let decided = Decided {
        identity,
        role_missing: role != Some(true),
        network,
        broker,
        platform,
        platform_grants,
        source,
        needs,
        verify_key,
        leftovers,
    };
    Ok((plan, decided))
}

/// How tasks reach the broker, as far as it is known: the local server's address for the
/// emulator, the broker stack's outputs once it exists, `None` before (or without a broker).
pub(super) fn broker_link(
    s: &crate::config::Settings,
    plan: Option<&StackPlan>,
) -> Option<BrokerLink> {
    let engine = s.broker?;
    if s.emulator {
        return Some(crate::local_broker::link(s.port, engine));
    }
    plan.filter(|p| {
        matches!(
            p.action,
            Action::Unchanged | Action::Update | Action::Busy { .. }
        )
    })
    .and_then(|p| BrokerLink::from_outputs(s, &p.outputs).ok())
}

/// A change that would replace the target group while the service is attached to it (the
/// port) is refused: the service would lose its targets mid-deploy.
fn refuse_replacement(s: &crate::config::Settings, plan: &StackPlan) -> Result<(), DeployError> {
    if !matches!(plan.action, Action::Update | Action::Unchanged) {
        return Ok(());
    }
    match plan.parameters.get("ContainerPort") {
        Some(live) if live != &s.port.to_string() => Err(crate::config::ConfigError::Invalid(vec![
            crate::config::Issue::new(
                "port",
                format!(
                    "{live} -> {}: the load balancer's target group would be replaced while the service sends its tasks to it, cutting every client off",
                    s.port
                ),
                format!(
                    "keep port = {live}, or `deploy destroy --env {}` and deploy again with the new port",
                    s.env
                ),
            ),
        ])
        .into()),
        _ => Ok(()),
    }
}

/// What `deploy` would change, computed with read-only calls.
pub async fn plan(ctx: &Context, options: &DeployOptions) -> Result<Plan, DeployError> {
    Ok(compute(ctx, options, false).await?.0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::refuse_replacement;
    use crate::config::{Layer, resolve};
    use crate::stacks::{Action, StackPlan, StackSpec};

    fn live(port: &str, action: Action) -> StackPlan {
        StackPlan {
            spec: StackSpec {
                name: "tickstream-dev-platform".into(),
                template_body: String::new(),
                parameters: BTreeMap::new(),
                named_iam: false,
            },
            action,
            outputs: BTreeMap::new(),
            parameters: BTreeMap::from([("ContainerPort".to_string(), port.to_string())]),
        }
    }

    #[test]
    fn a_port_change_on_a_live_platform_is_refused_with_the_way_out() {
        let s = resolve(
            "[env.dev]\nregion = \"eu-west-1\"\nport = 9090\n",
            "deploy.toml",
            "dev",
            Layer::default(),
            Layer::default(),
            ".".into(),
        )
        .expect("valid");
        let err = refuse_replacement(&s, &live("8080", Action::Update)).expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("port: 8080 -> 9090"), "{text}");
        assert!(
            err.fix().is_some_and(
                |f| f.contains("keep port = 8080") && f.contains("deploy destroy --env dev")
            ),
            "{:?}",
            err.fix()
        );
        assert!(refuse_replacement(&s, &live("9090", Action::Update)).is_ok());
        // A stack being created or replaced has no service attached to lose.
        assert!(refuse_replacement(&s, &live("8080", Action::Create)).is_ok());
    }
}
