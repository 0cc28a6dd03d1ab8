//! Waiting for a rollout, bounded, with a view a person can follow. Success is only the
//! deployment we started being PRIMARY and COMPLETED with our task definition: the SDK's
//! services-stable waiter also passes after a circuit-breaker rollback, which is how other
//! deployers reported failed deploys as successes. A failure says why: the rollout reason, new
//! service events, each stopped task's reason and exit codes, and its last log lines.
//!
//! What belongs to this rollout is decided by AWS's own identifiers and clock, never ours:
//! stopped tasks are those ECS started for our deployment (`startedBy` is the deployment id),
//! read across every page; service events are those after the deployment's `createdAt`.
//! Throttling or a passing fault while waiting does not end the wait: the rollout goes on in
//! ECS whatever we fail to read, so we keep reading until the deadline.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{DesiredStatus, Service};
use tokio::time::{Instant, sleep};

use crate::error::{self, DeployError};
use crate::report::Reporter;
use crate::taskdef::{CONTAINER, short};

/// What to wait for.
#[derive(Debug, Clone)]
pub struct Watch {
    pub cluster: String,
    pub service: String,
    pub deployment_id: String,
    pub task_definition: String,
    pub timeout: Duration,
    pub poll: Duration,
    /// For the last lines of a stopped task: the log group and the awslogs stream prefix.
    pub logs: Option<(String, String)>,
}

/// How the rollout ended well.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Completed {
    pub deployment_id: String,
    pub running: i32,
    pub desired: i32,
    pub waited_seconds: f64,
}

#[derive(Debug, Default)]
struct Seen {
    events: HashSet<String>,
    stopped: HashSet<String>,
    last_line: String,
    stopped_reasons: Vec<String>,
    transient: u32,
}

/// A read that failed for a passing reason: said once in a while, not on every poll.
fn report_transient(seen: &mut Seen, report: &Reporter, cause: &str) {
    seen.transient += 1;
    if seen.transient == 1 || seen.transient.is_multiple_of(10) {
        report.line(format!(
            "  (reading the rollout failed {} time(s), still waiting: {cause})",
            seen.transient
        ));
    }
}

/// At most this many stopped tasks of ours are shown per poll (all are counted).
const STOPPED_SHOWN: usize = 10;
/// Log lines shown for a stopped task.
const LOG_LINES: i32 = 10;

pub async fn wait(
    ecs: &Client,
    logs: Option<&aws_sdk_cloudwatchlogs::Client>,
    watch: &Watch,
    report: &Reporter,
) -> Result<Completed, DeployError> {
    let started = Instant::now();
    let mut seen = Seen::default();
    loop {
        let out = match ecs
            .describe_services()
            .cluster(&watch.cluster)
            .services(&watch.service)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if error::transient(&e) && started.elapsed() < watch.timeout => {
                report_transient(&mut seen, report, &error::classify(String::new(), &e).cause);
                sleep(watch.poll).await;
                continue;
            }
            Err(e) => {
                return Err(error::aws(format!("describing service {}", watch.service))(
                    e,
                ));
            }
        };
        let service = out.services().first().cloned().ok_or_else(|| {
            DeployError::Rollout(format!("service {} disappeared", watch.service))
        })?;
        let since = service
            .deployments()
            .iter()
            .find(|d| d.id() == Some(watch.deployment_id.as_str()))
            .and_then(|d| d.created_at())
            .map(|t| t.secs());
        report_events(&service, since, &mut seen, report);
        if let Err(e) = stopped_tasks(ecs, logs, watch, &mut seen, report).await {
            // Stopped tasks explain a failure; failing to read them is not one.
            report_transient(&mut seen, report, &e.to_string());
        }

        let ours = service
            .deployments()
            .iter()
            .find(|d| d.id() == Some(watch.deployment_id.as_str()));
        let Some(deployment) = ours else {
            return Err(failure(
                &seen,
                format!(
                    "deployment {} is gone; the service now runs {} (rolled back)",
                    watch.deployment_id,
                    short(service.task_definition().unwrap_or("nothing"))
                ),
            ));
        };
        let state = deployment.rollout_state().map_or("UNKNOWN", |s| s.as_str());
        let line = format!(
            "deployment {}: {state}, {} running / {} desired, {} pending, {} failed tasks",
            deployment.id().unwrap_or_default(),
            deployment.running_count(),
            deployment.desired_count(),
            deployment.pending_count(),
            deployment.failed_tasks()
        );
        if line != seen.last_line {
            report.line(&line);
            seen.last_line = line;
        }
        match state {
            "FAILED" => {
                return Err(failure(
                    &seen,
                    format!(
                        "deployment {} FAILED: {}",
                        watch.deployment_id,
                        deployment
                            .rollout_state_reason()
                            .unwrap_or("no reason given")
                    ),
                ));
            }
            "COMPLETED" if deployment.status() == Some("PRIMARY") => {
                let running_ours =
                    service.task_definition() == Some(watch.task_definition.as_str());
                if !running_ours {
                    return Err(failure(
                        &seen,
                        format!(
                            "the service runs {} instead of {}",
                            short(service.task_definition().unwrap_or("nothing")),
                            short(&watch.task_definition)
                        ),
                    ));
                }
                return Ok(Completed {
                    deployment_id: watch.deployment_id.clone(),
                    running: deployment.running_count(),
                    desired: deployment.desired_count(),
                    waited_seconds: started.elapsed().as_secs_f64(),
                });
            }
            _ => {}
        }
        if started.elapsed() >= watch.timeout {
            let last_event = service
                .events()
                .first()
                .and_then(|e| e.message())
                .unwrap_or("no service events");
            return Err(failure(
                &seen,
                format!(
                    "still {state} after {}: {} running of {} desired, {} pending, {} failed tasks; last service event: {last_event}. \
                     The rollout continues in ECS: `deploy status` shows it, `deploy rollback` ends it",
                    humantime::format_duration(watch.timeout),
                    deployment.running_count(),
                    deployment.desired_count(),
                    deployment.pending_count(),
                    deployment.failed_tasks()
                ),
            ));
        }
        sleep(watch.poll).await;
    }
}

fn failure(seen: &Seen, summary: String) -> DeployError {
    let mut text = summary;
    for reason in seen.stopped_reasons.iter().take(5) {
        text.push_str("\n  stopped task: ");
        text.push_str(reason);
    }
    DeployError::Rollout(text)
}

/// Service events since our deployment was created (by ECS's clock), each once.
fn report_events(service: &Service, since: Option<i64>, seen: &mut Seen, report: &Reporter) {
    let mut fresh: Vec<_> = service
        .events()
        .iter()
        .filter(|e| match (since, e.created_at()) {
            (Some(since), Some(t)) => t.secs() >= since,
            // Without our deployment's time (it is gone: rolled back), every new event counts.
            (None, _) => true,
            (Some(_), None) => false,
        })
        .filter(|e| e.id().is_some_and(|id| !seen.events.contains(id)))
        .collect();
    fresh.reverse();
    for e in fresh {
        if let Some(id) = e.id() {
            seen.events.insert(id.to_string());
        }
        report.line(format!("  event: {}", e.message().unwrap_or_default()));
    }
}

async fn stopped_tasks(
    ecs: &Client,
    logs: Option<&aws_sdk_cloudwatchlogs::Client>,
    watch: &Watch,
    seen: &mut Seen,
    report: &Reporter,
) -> Result<(), DeployError> {
    // Every page: a busy service lists many stopped tasks, ours may be on any page.
    let mut fresh: Vec<String> = Vec::new();
    let mut pages = ecs
        .list_tasks()
        .cluster(&watch.cluster)
        .service_name(&watch.service)
        .desired_status(DesiredStatus::Stopped)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(error::aws("listing stopped tasks"))?;
        fresh.extend(
            page.task_arns()
                .iter()
                .filter(|arn| !seen.stopped.contains(*arn))
                .cloned(),
        );
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let mut described = Vec::new();
    // DescribeTasks takes up to 100 tasks a call.
    for batch in fresh.chunks(100) {
        let out = ecs
            .describe_tasks()
            .cluster(&watch.cluster)
            .set_tasks(Some(batch.to_vec()))
            .send()
            .await
            .map_err(error::aws("describing stopped tasks"))?;
        described.extend(out.tasks().iter().cloned());
    }
    seen.stopped.extend(fresh);
    let mut shown = 0;
    for task in &described {
        // Only tasks ECS started for this deployment: earlier stops are history, even of the
        // same task definition.
        if task.started_by() != Some(watch.deployment_id.as_str()) {
            continue;
        }
        shown += 1;
        if shown > STOPPED_SHOWN {
            continue;
        }
        let id = task
            .task_arn()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let containers: Vec<String> = task
            .containers()
            .iter()
            .map(|c| {
                format!(
                    "{} exit {}{}",
                    c.name().unwrap_or("?"),
                    c.exit_code()
                        .map_or_else(|| "none".to_string(), |e| e.to_string()),
                    c.reason().map(|r| format!(" ({r})")).unwrap_or_default()
                )
            })
            .collect();
        let reason = format!(
            "{id}: {}{}; {}",
            task.stopped_reason().unwrap_or("no reason given"),
            task.stop_code()
                .map(|c| format!(" [{}]", c.as_str()))
                .unwrap_or_default(),
            if containers.is_empty() {
                "no containers started".to_string()
            } else {
                containers.join(", ")
            }
        );
        report.line(format!("  task stopped: {reason}"));
        seen.stopped_reasons.push(reason);
        if let (Some(logs), Some((group, prefix))) = (logs, &watch.logs) {
            let stream = format!("{prefix}/{CONTAINER}/{id}");
            if let Ok(out) = logs
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(&stream)
                .limit(LOG_LINES)
                .start_from_head(false)
                .send()
                .await
            {
                for e in out.events() {
                    report.line(format!(
                        "    log: {}",
                        e.message().unwrap_or_default().trim_end()
                    ));
                }
            }
        }
    }
    Ok(())
}
