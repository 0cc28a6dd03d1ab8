//! `deploy plan` (and `--dry-run`): what a deploy would change, from read-only calls.

use serde::Serialize;

use super::*;
use crate::error::DeployError;
use crate::image::{self, Source};
use crate::infra::{self, Platform};
use crate::service::{self, ServiceSpec};
use crate::stacks::{self, StackChange};
use crate::taskdef::{self, Change, TaskSpec};

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
    crate::preflight::check(&ctx.needs, s, &identity.region).await?;
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
