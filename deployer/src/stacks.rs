//! CloudFormation stacks that change only when their template or parameters do. An existing
//! stack is compared with what is wanted first (template body and managed parameters), so an
//! unchanged deploy makes no write call at all; otherwise it is created or updated. Every wait is
//! bounded, and a failure names the stack, its status and the reason CloudFormation gave.
//! (The preview for `deploy plan` will use change sets, created and deleted, issue #6.)

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::error::{DisplayErrorContext, SdkError};
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackStatus};
use tokio::time::{Instant, sleep};

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
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let stack = stack.to_string();
    move |e| StackError::Aws {
        operation,
        stack,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Creates, updates or leaves `spec`'s stack, waiting at most `wait` for CloudFormation.
pub async fn deploy(
    client: &Client,
    spec: &StackSpec,
    wait: Duration,
) -> Result<Deployed, StackError> {
    let Some(current) = find(client, &spec.name).await? else {
        create(client, spec).await?;
        let stack = settle(client, &spec.name, wait).await?;
        return Ok(Deployed {
            change: StackChange::Created,
            outputs: outputs(&stack),
        });
    };
    if is_unchanged(client, spec, &current).await? {
        tracing::info!(stack = %spec.name, "unchanged");
        return Ok(Deployed {
            change: StackChange::Unchanged,
            outputs: outputs(&current),
        });
    }
    update(client, spec).await?;
    let stack = settle(client, &spec.name, wait).await?;
    Ok(Deployed {
        change: StackChange::Updated,
        outputs: outputs(&stack),
    })
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

/// Waits for the stack to leave its in-progress states, at most `wait`.
async fn settle(client: &Client, name: &str, wait: Duration) -> Result<Stack, StackError> {
    let started = Instant::now();
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
        let status = stack.stack_status().cloned();
        match status {
            Some(StackStatus::CreateComplete | StackStatus::UpdateComplete) => return Ok(stack),
            Some(s) if !s.as_str().ends_with("_IN_PROGRESS") => {
                return Err(StackError::Failed {
                    stack: name.to_string(),
                    status: s.as_str().to_string(),
                    reason: stack
                        .stack_status_reason()
                        .unwrap_or("no reason given")
                        .to_string(),
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
