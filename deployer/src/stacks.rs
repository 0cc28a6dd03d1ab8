//! CloudFormation stacks that change only when their template or parameters do, behaving as
//! AWS does rather than as the emulator does:
//!
//! - A stack is looked up by name (`DescribeStacks`; "does not exist" means absent), not by
//!   paging `ListStacks`, which keeps deleted stacks for 90 days and costs calls in a busy account.
//! - [`plan`] decides from read-only calls what [`apply`] will do, so `deploy plan` and `deploy`
//!   share one decision. A stack left in `ROLLBACK_COMPLETE` (its creation failed) can never be
//!   updated: it is deleted, saying so, and created again. A stack another operation is changing
//!   is waited for. A stack in a state only a person can resolve is refused with the command
//!   that resolves it.
//! - `UpdateStack` refuses a template whose only changes are cosmetic with a ValidationError
//!   "No updates are to be performed": that is "unchanged". (AWS gives it no error code of its
//!   own, so the message is matched; the same holds for "does not exist".)
//! - Every operation carries a client request token, and its events are the ones carrying that
//!   token, read across pages: never "events newer than the local clock".
//! - Waits poll at the caller's interval (seconds against AWS), are bounded, and ride out
//!   throttling and transient errors until their deadline.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::config::http::HttpResponse;
use aws_sdk_cloudformation::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudformation::types::{Capability, Parameter, Stack, StackEvent, StackStatus};
use tokio::time::{Instant, sleep};

use crate::error::{self, AwsProblem};
use crate::report::Reporter;

/// What a stack should be.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub name: String,
    pub template_body: String,
    /// Every parameter the template declares that the deployer manages. Optional ones are sent
    /// empty when unset: an omitted parameter would keep its previous value, so removing a
    /// setting would never reach the stack.
    pub parameters: BTreeMap<String, String>,
    /// Whether the template creates IAM resources with names (`CAPABILITY_NAMED_IAM`).
    pub named_iam: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackChange {
    Created,
    /// Deleted (its creation had failed) and created again.
    Replaced,
    Updated,
    Unchanged,
}

impl StackChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StackChange::Created => "create",
            StackChange::Replaced => "replace",
            StackChange::Updated => "update",
            StackChange::Unchanged => "unchanged",
        }
    }
}

/// What [`apply`] will do to a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// The stack is in `ROLLBACK_COMPLETE` (or an unexecuted change set's `REVIEW_IN_PROGRESS`):
    /// it cannot be updated, only deleted and created again.
    Replace {
        status: String,
    },
    Update,
    Unchanged,
    /// Another operation is changing it now: wait, then decide.
    Busy {
        status: String,
    },
}

impl Action {
    /// As the plan reports it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace { .. } => "replace",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Busy { .. } => "busy",
        }
    }
}

/// A stack's decided action, and what it holds now.
#[derive(Debug, Clone)]
pub struct StackPlan {
    pub spec: StackSpec,
    pub action: Action,
    /// The live outputs (empty when the stack does not exist or will be replaced).
    pub outputs: BTreeMap<String, String>,
    /// The live parameters, as CloudFormation reports them.
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Deployed {
    pub change: StackChange,
    pub outputs: BTreeMap<String, String>,
}

/// How long and how often to wait for CloudFormation.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub timeout: Duration,
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{0}")]
    Aws(Box<AwsProblem>),
    #[error("stack {stack} ended in {status}: {reason}")]
    Failed {
        stack: String,
        status: String,
        reason: String,
    },
    #[error("stack {stack} still {status} after {}", humantime::format_duration(*.waited))]
    Timeout {
        stack: String,
        status: String,
        waited: Duration,
    },
    #[error("stack {stack} is {status}, which only a person can resolve")]
    Stuck {
        stack: String,
        status: String,
        fix: String,
    },
}

fn aws_error<E>(
    operation: &'static str,
    stack: &str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> StackError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let context = format!("{operation} stack {stack}");
    move |e| StackError::Aws(Box::new(error::classify(context, &e)))
}

/// `ValidationError` with this text: AWS's only signal for these cases.
fn validation_says<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>, text: &str) -> bool {
    e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains(text))
}

/// A client request token for one operation: its events carry it.
fn token(operation: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!(
        "tickstream-{operation}-{nanos:x}-{}-{n}",
        std::process::id()
    )
}

/// The live stack of that name, if any.
pub async fn find(client: &Client, name: &str) -> Result<Option<Stack>, StackError> {
    match client.describe_stacks().stack_name(name).send().await {
        Ok(out) => Ok(out
            .stacks()
            .first()
            .filter(|s| s.stack_status() != Some(&StackStatus::DeleteComplete))
            .cloned()),
        Err(e) if validation_says(&e, "does not exist") => Ok(None),
        Err(e) => Err(aws_error("describing", name)(e)),
    }
}

/// The stack's status and outputs, if it exists.
pub async fn describe(
    client: &Client,
    name: &str,
) -> Result<Option<(String, BTreeMap<String, String>)>, StackError> {
    Ok(find(client, name)
        .await?
        .map(|s| (status_of(&s), outputs(&s))))
}

fn status_of(stack: &Stack) -> String {
    stack
        .stack_status()
        .map_or("unknown", |s| s.as_str())
        .to_string()
}

/// What [`apply`] would do to `spec`'s stack, from read-only calls.
pub async fn plan(client: &Client, spec: &StackSpec) -> Result<StackPlan, StackError> {
    let Some(current) = find(client, &spec.name).await? else {
        return Ok(StackPlan {
            spec: spec.clone(),
            action: Action::Create,
            outputs: BTreeMap::new(),
            parameters: BTreeMap::new(),
        });
    };
    let status = status_of(&current);
    let live_parameters: BTreeMap<String, String> = current
        .parameters()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.parameter_value().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    let action = match current.stack_status() {
        Some(StackStatus::RollbackComplete | StackStatus::ReviewInProgress) => {
            Action::Replace { status }
        }
        Some(
            StackStatus::UpdateRollbackFailed
            | StackStatus::RollbackFailed
            | StackStatus::DeleteFailed
            | StackStatus::ImportRollbackFailed,
        ) => return Err(stuck(&spec.name, &status)),
        _ if status.ends_with("_IN_PROGRESS") => Action::Busy { status },
        _ if is_unchanged(client, spec, &live_parameters).await? => Action::Unchanged,
        _ => Action::Update,
    };
    let outputs = match action {
        Action::Replace { .. } => BTreeMap::new(),
        _ => outputs(&current),
    };
    Ok(StackPlan {
        spec: spec.clone(),
        action,
        outputs,
        parameters: live_parameters,
    })
}

fn stuck(stack: &str, status: &str) -> StackError {
    let fix = match status {
        "UPDATE_ROLLBACK_FAILED" => format!(
            "run `aws cloudformation continue-update-rollback --stack-name {stack}` (skip the resources it names if they are gone), then deploy again"
        ),
        "DELETE_FAILED" => format!(
            "delete what the stack's last events name, then `aws cloudformation delete-stack --stack-name {stack}` (or `deploy destroy`), then deploy again"
        ),
        _ => format!(
            "read the stack's events (`aws cloudformation describe-stack-events --stack-name {stack}`), resolve them, and delete the stack"
        ),
    };
    StackError::Stuck {
        stack: stack.to_string(),
        status: status.to_string(),
        fix,
    }
}

/// CreateStack and UpdateStack take the same request; their builders are distinct types.
macro_rules! request {
    ($builder:expr, $spec:expr, $token:expr) => {{
        $builder
            .stack_name(&$spec.name)
            .template_body(&$spec.template_body)
            .set_parameters(Some(parameters($spec)))
            .set_capabilities(Some(capabilities($spec)))
            .client_request_token($token)
            .send()
            .await
            .map(|_| ())
    }};
}

/// Carries out `plan`: creates, replaces, updates or leaves the stack, waiting as `waiting` says.
pub async fn apply(
    client: &Client,
    plan: StackPlan,
    waiting: Waiting,
    report: &Reporter,
) -> Result<Deployed, StackError> {
    let spec = &plan.spec;
    match plan.action {
        Action::Unchanged => {
            report.line(format!("stack {}: unchanged", spec.name));
            Ok(Deployed {
                change: StackChange::Unchanged,
                outputs: plan.outputs,
            })
        }
        Action::Busy { status } => {
            report.line(format!(
                "stack {}: {status} (another operation is changing it); waiting for it to finish",
                spec.name
            ));
            let started = Instant::now();
            settle_any(client, &spec.name, waiting, report).await?;
            let left = Waiting {
                timeout: waiting.timeout.saturating_sub(started.elapsed()),
                ..waiting
            };
            let again = self::plan(client, spec).await?;
            if let Action::Busy { status } = &again.action {
                return Err(StackError::Timeout {
                    stack: spec.name.clone(),
                    status: status.clone(),
                    waited: waiting.timeout,
                });
            }
            Box::pin(apply(client, again, left, report)).await
        }
        Action::Create => {
            report.line(format!("stack {}: creating", spec.name));
            let stack = create_and_settle(client, spec, waiting, report).await?;
            Ok(Deployed {
                change: StackChange::Created,
                outputs: outputs(&stack),
            })
        }
        Action::Replace { status } => {
            report.line(format!(
                "stack {}: {status}: an earlier creation failed and CloudFormation cannot update it; deleting it and creating it again",
                spec.name
            ));
            delete(client, &spec.name, waiting, report).await?;
            let stack = create_and_settle(client, spec, waiting, report).await?;
            Ok(Deployed {
                change: StackChange::Replaced,
                outputs: outputs(&stack),
            })
        }
        Action::Update => {
            report.line(format!("stack {}: updating", spec.name));
            let token = token("update");
            let sent = request!(client.update_stack(), spec, &token);
            match sent {
                Ok(()) => {}
                Err(e) if validation_says(&e, "No updates are to be performed") => {
                    // The template differs only in what CloudFormation ignores (comments,
                    // descriptions): nothing changed.
                    report.line(format!(
                        "stack {}: unchanged (CloudFormation found nothing to update)",
                        spec.name
                    ));
                    return Ok(Deployed {
                        change: StackChange::Unchanged,
                        outputs: plan.outputs,
                    });
                }
                Err(e) => return Err(aws_error("updating", &spec.name)(e)),
            }
            let stack = settle(client, &spec.name, &token, waiting, report).await?;
            Ok(Deployed {
                change: StackChange::Updated,
                outputs: outputs(&stack),
            })
        }
    }
}

/// [`plan`] then [`apply`].
pub async fn deploy(
    client: &Client,
    spec: &StackSpec,
    waiting: Waiting,
    report: &Reporter,
) -> Result<Deployed, StackError> {
    let plan = plan(client, spec).await?;
    apply(client, plan, waiting, report).await
}

/// Deletes the stack if it exists and waits for it to go.
pub async fn delete(
    client: &Client,
    name: &str,
    waiting: Waiting,
    report: &Reporter,
) -> Result<bool, StackError> {
    let Some(current) = find(client, name).await? else {
        report.line(format!("stack {name}: not there"));
        return Ok(false);
    };
    if current.stack_status() != Some(&StackStatus::DeleteInProgress) {
        report.line(format!("stack {name}: deleting"));
        let token = token("delete");
        client
            .delete_stack()
            .stack_name(name)
            .client_request_token(&token)
            .send()
            .await
            .map_err(aws_error("deleting", name))?;
        wait_gone(client, name, Some(&token), waiting, report).await?;
    } else {
        wait_gone(client, name, None, waiting, report).await?;
    }
    report.line(format!("stack {name}: deleted"));
    Ok(true)
}

async fn wait_gone(
    client: &Client,
    name: &str,
    token: Option<&str>,
    waiting: Waiting,
    report: &Reporter,
) -> Result<(), StackError> {
    let started = Instant::now();
    let mut events = Events::new(token);
    loop {
        let status = match find(client, name).await {
            Ok(None) => return Ok(()),
            Ok(Some(stack)) => Some(status_of(&stack)),
            Err(StackError::Aws(p)) if p.kind == crate::error::Kind::Throttled => None,
            Err(e) => return Err(e),
        };
        events.report(client, name, report).await;
        if status.as_deref() == Some("DELETE_FAILED") {
            return Err(StackError::Failed {
                stack: name.to_string(),
                status: "DELETE_FAILED".into(),
                reason: events
                    .first_failure
                    .clone()
                    .unwrap_or_else(|| "no reason given".into()),
            });
        }
        if started.elapsed() > waiting.timeout {
            return Err(StackError::Timeout {
                stack: name.to_string(),
                status: status.unwrap_or_else(|| "unknown".into()),
                waited: waiting.timeout,
            });
        }
        sleep(waiting.poll).await;
    }
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

async fn create_and_settle(
    client: &Client,
    spec: &StackSpec,
    waiting: Waiting,
    report: &Reporter,
) -> Result<Stack, StackError> {
    let token = token("create");
    request!(client.create_stack(), spec, &token).map_err(aws_error("creating", &spec.name))?;
    settle(client, &spec.name, &token, waiting, report).await
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
    live: &BTreeMap<String, String>,
) -> Result<bool, StackError> {
    let same_parameters = spec
        .parameters
        .iter()
        .all(|(k, v)| live.get(k).map(|l| normalize(l)) == Some(normalize(v)));
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

/// Waits for the operation `token` started to end, reporting its events.
async fn settle(
    client: &Client,
    name: &str,
    token: &str,
    waiting: Waiting,
    report: &Reporter,
) -> Result<Stack, StackError> {
    let started = Instant::now();
    let mut events = Events::new(Some(token));
    let mut last_status = String::from("unknown");
    loop {
        match client.describe_stacks().stack_name(name).send().await {
            Ok(out) => {
                let Some(stack) = out.stacks().first().cloned() else {
                    return Err(StackError::Failed {
                        stack: name.to_string(),
                        status: "missing".into(),
                        reason: "the stack disappeared".into(),
                    });
                };
                events.report(client, name, report).await;
                last_status = status_of(&stack);
                match stack.stack_status() {
                    Some(StackStatus::CreateComplete | StackStatus::UpdateComplete) => {
                        return Ok(stack);
                    }
                    _ if !last_status.ends_with("_IN_PROGRESS") => {
                        // ROLLBACK_COMPLETE and friends: the stack's own reason is generic;
                        // the first failed resource says what to fix.
                        return Err(StackError::Failed {
                            stack: name.to_string(),
                            status: last_status,
                            reason: events
                                .first_failure
                                .clone()
                                .or_else(|| stack.stack_status_reason().map(str::to_string))
                                .unwrap_or_else(|| "no reason given".into()),
                        });
                    }
                    _ => {}
                }
            }
            // Throttling or a passing fault while waiting: the operation goes on in AWS.
            Err(e) if error::transient(&e) => {
                tracing::debug!(stack = name, error = %error::classify(String::new(), &e).cause, "transient error while waiting");
            }
            Err(e) => return Err(aws_error("describing", name)(e)),
        }
        if started.elapsed() > waiting.timeout {
            return Err(StackError::Timeout {
                stack: name.to_string(),
                status: last_status,
                waited: waiting.timeout,
            });
        }
        sleep(waiting.poll).await;
    }
}

/// Waits, reporting nothing but its end, for whatever operation is running to finish.
async fn settle_any(
    client: &Client,
    name: &str,
    waiting: Waiting,
    report: &Reporter,
) -> Result<(), StackError> {
    let started = Instant::now();
    loop {
        let status = match find(client, name).await {
            Ok(None) => return Ok(()),
            Ok(Some(stack)) => status_of(&stack),
            Err(StackError::Aws(p)) if p.kind == crate::error::Kind::Throttled => "unknown".into(),
            Err(e) => return Err(e),
        };
        if !status.ends_with("_IN_PROGRESS") && status != "unknown" {
            report.line(format!("stack {name}: now {status}"));
            return Ok(());
        }
        if started.elapsed() > waiting.timeout {
            return Err(StackError::Timeout {
                stack: name.to_string(),
                status,
                waited: waiting.timeout,
            });
        }
        sleep(waiting.poll).await;
    }
}

/// At most this many pages of events are read per poll (100 events each).
const MAX_EVENT_PAGES: usize = 20;

/// The events of one operation, reported once each, and the first failure among them.
#[derive(Debug)]
struct Events {
    token: Option<String>,
    seen: HashSet<String>,
    first_failure: Option<String>,
}

impl Events {
    fn new(token: Option<&str>) -> Events {
        Events {
            token: token.map(str::to_string),
            seen: HashSet::new(),
            first_failure: None,
        }
    }

    /// Whether `e` belongs to our operation. Events carry the token of the request that caused
    /// them; an emulator that sets no tokens leaves the stack-level "User Initiated" event as
    /// the boundary.
    fn ours(&self, e: &StackEvent) -> bool {
        match (&self.token, e.client_request_token()) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        }
    }

    async fn report(&mut self, client: &Client, name: &str, report: &Reporter) {
        let mut fresh: Vec<StackEvent> = Vec::new();
        let mut pages = client
            .describe_stack_events()
            .stack_name(name)
            .into_paginator()
            .send();
        let mut read = 0;
        'pages: while let Some(page) = pages.next().await {
            // Events are a view for people; a failed read is retried at the next poll.
            let Ok(page) = page else { break };
            read += 1;
            // Newest first: stop at what was reported before, or at an earlier operation.
            for e in page.stack_events() {
                let id = e.event_id().unwrap_or_default();
                if self.seen.contains(id) || !self.ours(e) {
                    break 'pages;
                }
                fresh.push(e.clone());
                let start = e.logical_resource_id() == Some(name)
                    && e.resource_status_reason() == Some("User Initiated");
                if start {
                    break 'pages;
                }
            }
            if read >= MAX_EVENT_PAGES {
                break;
            }
        }
        fresh.reverse();
        for e in fresh {
            self.seen
                .insert(e.event_id().unwrap_or_default().to_string());
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

    #[test]
    fn tokens_are_valid_and_distinct() {
        let (a, b) = (super::token("create"), super::token("create"));
        assert_ne!(a, b);
        assert!(a.len() <= 128);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
