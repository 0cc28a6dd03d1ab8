//! CloudFormation stacks that change only when their template or parameters do. An existing
//! stack is compared with what is wanted first (template body and managed parameters), so an
//! unchanged deploy makes no write call at all; otherwise it is created or updated. Every wait is
//! bounded, and a failure names the stack, its status and the reason CloudFormation gave.
//! Stack events are reported as they come, and a failure names the first resource that failed.
//! (CreateStack/UpdateStack rather than change sets: ADR-0006 lists the emulator's change-set
//! defects; [`preview`] answers `deploy plan` from the same comparison instead.)

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackStatus};
use tokio::time::{Instant, sleep};

use crate::report::Reporter;

const POLL: Duration = Duration::from_millis(500);

/// What a stack should be.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub name: String,
    pub template_body: String,
    /// Every parameter the deployer manages; the rest keep their template defaults.
    pub parameters: BTreeMap<String, String>,
    /// Whether the template creates IAM resources with names (`CAPABILITY_NAMED_IAM`).
    pub named_iam: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackChange {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct Deployed {
    pub change: StackChange,
    pub outputs: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{operation} {stack}: {message}")]
    Aws {
        operation: &'static str,
        stack: String,
        code: Option<String>,
        message: String,
    },
    #[error("stack {stack} ended in {status}: {reason}")]
    Failed {
        stack: String,
        status: String,
        reason: String,
    },
    #[error("stack {stack} still {status} after {waited:?}")]
    Timeout {
        stack: String,
        status: String,
        waited: Duration,
    },
}

fn aws_error<E, R>(
    operation: &'static str,
    stack: &str,
) -> impl FnOnce(SdkError<E, R>) -> StackError
where
    E: std::error::Error + aws_sdk_cloudformation::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let stack = stack.to_string();
    move |e| StackError::Aws {
        operation,
        stack,
        code: e.code().map(str::to_string),
        message: match (&e, e.code()) {
            (SdkError::ServiceError(_), Some(code)) => {
                format!("{code}: {}", e.message().unwrap_or("no message"))
            }
            _ => DisplayErrorContext(&e).to_string(),
        },
    }
}

/// Creates, updates or leaves `spec`'s stack, waiting at most `wait` for CloudFormation.
pub async fn deploy(
    client: &Client,
    spec: &StackSpec,
    wait: Duration,
    report: &Reporter,
) -> Result<Deployed, StackError> {
    let Some(current) = find(client, &spec.name).await? else {
        report.line(format!("stack {}: creating", spec.name));
        create(client, spec).await?;
        let stack = settle(client, &spec.name, wait, report).await?;
        return Ok(Deployed {
            change: StackChange::Created,
            outputs: outputs(&stack),
        });
    };
    if is_unchanged(client, spec, &current).await? {
        report.line(format!("stack {}: unchanged", spec.name));
        return Ok(Deployed {
            change: StackChange::Unchanged,
            outputs: outputs(&current),
        });
    }
    report.line(format!("stack {}: updating", spec.name));
    update(client, spec).await?;
    let stack = settle(client, &spec.name, wait, report).await?;
    Ok(Deployed {
        change: StackChange::Updated,
        outputs: outputs(&stack),
    })
}

/// What [`deploy`] would do, without changing anything, and the outputs the stack has now.
pub async fn preview(client: &Client, spec: &StackSpec) -> Result<Deployed, StackError> {
    let Some(current) = find(client, &spec.name).await? else {
        return Ok(Deployed {
            change: StackChange::Created,
            outputs: BTreeMap::new(),
        });
    };
    let change = if is_unchanged(client, spec, &current).await? {
        StackChange::Unchanged
    } else {
        StackChange::Updated
    };
    Ok(Deployed {
        change,
        outputs: outputs(&current),
    })
}

/// The stack's status and outputs, if it exists.
pub async fn describe(
    client: &Client,
    name: &str,
) -> Result<Option<(String, BTreeMap<String, String>)>, StackError> {
    Ok(find(client, name).await?.map(|s| {
        (
            s.stack_status()
                .map_or("unknown", |s| s.as_str())
                .to_string(),
            outputs(&s),
        )
    }))
}

/// Deletes the stack if it exists and waits, at most `wait`, for it to go.
pub async fn delete(
    client: &Client,
    name: &str,
    wait: Duration,
    report: &Reporter,
) -> Result<bool, StackError> {
    if find(client, name).await?.is_none() {
        report.line(format!("stack {name}: not there"));
        return Ok(false);
    }
    report.line(format!("stack {name}: deleting"));
    client
        .delete_stack()
        .stack_name(name)
        .send()
        .await
        .map_err(aws_error("deleting", name))?;
    let started = Instant::now();
    let mut seen = Events::default();
    loop {
        let Some(stack) = find(client, name).await? else {
            report.line(format!("stack {name}: deleted"));
            return Ok(true);
        };
        seen.report(client, name, report).await;
        match stack.stack_status() {
            Some(StackStatus::DeleteFailed) => {
                return Err(StackError::Failed {
                    stack: name.to_string(),
                    status: "DELETE_FAILED".into(),
                    reason: seen
                        .first_failure
                        .clone()
                        .or_else(|| stack.stack_status_reason().map(str::to_string))
                        .unwrap_or_else(|| "no reason given".into()),
                });
            }
            _ if started.elapsed() > wait => {
                return Err(StackError::Timeout {
                    stack: name.to_string(),
                    status: stack
                        .stack_status()
                        .map_or("unknown", |s| s.as_str())
                        .to_string(),
                    waited: wait,
                });
            }
            _ => sleep(POLL).await,
        }
    }
}

/// Stack events not yet reported, and the first failure among them.
#[derive(Debug, Default)]
struct Events {
    seen: std::collections::HashSet<String>,
    first_failure: Option<String>,
    since: Option<aws_sdk_cloudformation::primitives::DateTime>,
}

impl Events {
    async fn report(&mut self, client: &Client, name: &str, report: &Reporter) {
        // Only this operation's events: the first page is the newest; older pages are history.
        let Ok(page) = client.describe_stack_events().stack_name(name).send().await else {
            return;
        };
        let mut fresh: Vec<_> = page
            .stack_events()
            .iter()
            .filter(|e| e.event_id().is_some_and(|id| !self.seen.contains(id)))
            .filter(|e| match (&self.since, e.timestamp()) {
                (Some(since), Some(t)) => t.secs() >= since.secs(),
                _ => true,
            })
            .cloned()
            .collect();
        fresh.reverse();
        for e in fresh {
            if let Some(id) = e.event_id() {
                self.seen.insert(id.to_string());
            }
            let status = e.resource_status().map_or("", |s| s.as_str());
            let reason = e.resource_status_reason().unwrap_or("");
            let what = e.logical_resource_id().unwrap_or("?");
            if status.ends_with("_FAILED")
                && self.first_failure.is_none()
                && !reason.contains("cancelled")
            {
                self.first_failure = Some(format!("{what}: {reason}"));
            }
            let kind = e.resource_type().unwrap_or("");
            report.line(format!(
                "  {name} {what} ({kind}) {status}{}{reason}",
                if reason.is_empty() { "" } else { ": " }
            ));
        }
    }
}

/// The live stack of that name, if any (deleted stacks do not count).
async fn find(client: &Client, name: &str) -> Result<Option<Stack>, StackError> {
    let mut pages = client.list_stacks().into_paginator().items().send();
    let mut exists = false;
    while let Some(summary) = pages.next().await {
        let summary = summary.map_err(aws_error("listing stacks for", name))?;
        if summary.stack_name() == Some(name)
            && summary.stack_status() != Some(&StackStatus::DeleteComplete)
        {
            exists = true;
            break;
        }
    }
    if !exists {
        return Ok(None);
    }
    let described = client
        .describe_stacks()
        .stack_name(name)
        .send()
        .await
        .map_err(aws_error("describing", name))?;
    Ok(described.stacks().first().cloned())
}

fn parameters(spec: &StackSpec) -> Vec<Parameter> {
    spec.parameters
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect()
}

fn capabilities(spec: &StackSpec) -> Vec<Capability> {
    vec![if spec.named_iam {
        Capability::CapabilityNamedIam
    } else {
        Capability::CapabilityIam
    }]
}

/// CreateStack and UpdateStack take the same request; their builders are distinct types.
macro_rules! stack_request {
    ($builder:expr, $spec:expr, $operation:literal) => {{
        tracing::info!(stack = %$spec.name, $operation);
        $builder
            .stack_name(&$spec.name)
            .template_body(&$spec.template_body)
            .set_parameters(Some(parameters($spec)))
            .set_capabilities(Some(capabilities($spec)))
            .send()
            .await
            .map(|_| ())
            .map_err(aws_error($operation, &$spec.name))
    }};
}

async fn create(client: &Client, spec: &StackSpec) -> Result<(), StackError> {
    stack_request!(client.create_stack(), spec, "creating")
}

/// A parameter value as CloudFormation reports it back: list parameters may come back as
/// `a,b` or (from some emulators) as `['a', 'b']`.
fn normalize(value: &str) -> String {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|part| part.trim().trim_matches('\''))
        .collect::<Vec<_>>()
        .join(",")
}

async fn is_unchanged(
    client: &Client,
    spec: &StackSpec,
    current: &Stack,
) -> Result<bool, StackError> {
    let live: BTreeMap<&str, String> = current
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, normalize(p.parameter_value()?))))
        .collect();
    let same_parameters = spec
        .parameters
        .iter()
        .all(|(k, v)| live.get(k.as_str()) == Some(&normalize(v)));
    if !same_parameters {
        return Ok(false);
    }
    let template = client
        .get_template()
        .stack_name(&spec.name)
        .send()
        .await
        .map_err(aws_error("reading the template of", &spec.name))?;
    Ok(template.template_body() == Some(spec.template_body.as_str()))
}

async fn update(client: &Client, spec: &StackSpec) -> Result<(), StackError> {
    stack_request!(client.update_stack(), spec, "updating")
}

/// Waits for the stack to leave its in-progress states, at most `wait`, reporting its events.
async fn settle(
    client: &Client,
    name: &str,
    wait: Duration,
    report: &Reporter,
) -> Result<Stack, StackError> {
    let started = Instant::now();
    let mut events = Events {
        since: Some(aws_sdk_cloudformation::primitives::DateTime::from(
            std::time::SystemTime::now() - Duration::from_secs(5),
        )),
        ..Events::default()
    };
    loop {
        let described = client
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(aws_error("describing", name))?;
        let Some(stack) = described.stacks().first().cloned() else {
            return Err(StackError::Failed {
                stack: name.to_string(),
                status: "missing".into(),
                reason: "the stack disappeared".into(),
            });
        };
        events.report(client, name, report).await;
        let status = stack.stack_status().cloned();
        match status {
            Some(StackStatus::CreateComplete | StackStatus::UpdateComplete) => return Ok(stack),
            Some(s) if !s.as_str().ends_with("_IN_PROGRESS") => {
                // ROLLBACK_COMPLETE and friends: the stack's own reason is generic; the first
                // failed resource says what to fix.
                return Err(StackError::Failed {
                    stack: name.to_string(),
                    status: s.as_str().to_string(),
                    reason: events
                        .first_failure
                        .clone()
                        .or_else(|| stack.stack_status_reason().map(str::to_string))
                        .unwrap_or_else(|| "no reason given".into()),
                });
            }
            s => {
                if started.elapsed() > wait {
                    return Err(StackError::Timeout {
                        stack: name.to_string(),
                        status: s.map_or_else(|| "unknown".to_string(), |s| s.as_str().to_string()),
                        waited: wait,
                    });
                }
                sleep(POLL).await;
            }
        }
    }
}

fn outputs(stack: &Stack) -> BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_parameters_compare_in_either_form() {
        assert_eq!(
            super::normalize("['subnet-a', 'subnet-b']"),
            "subnet-a,subnet-b"
        );
        assert_eq!(super::normalize("subnet-a,subnet-b"), "subnet-a,subnet-b");
        assert_eq!(super::normalize("dev"), "dev");
    }
}
