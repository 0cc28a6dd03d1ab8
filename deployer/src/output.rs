//! Results on stdout: a short summary for people, or one JSON document (`--output json`) with
//! `ok`, the result, or the error with its kind and exit code.

use serde::Serialize;

use crate::commands::{Deployed, Destroyed, Plan, RolledBack, Status};
use crate::error::DeployError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn emit<T: Serialize + Human>(format: Format, value: &T) {
    match format {
        Format::Json => {
            let doc = serde_json::json!({ "ok": true, "result": value });
            println!("{doc}");
        }
        Format::Text => value.print(),
    }
}

/// The error as one short paragraph: what failed and why on the first line, the fix on the
/// next. `verbose` (`--log debug`) adds the whole chain of causes.
pub fn emit_error(format: Format, error: &DeployError, verbose: bool) {
    let fix = error.fix();
    let detail = verbose.then(|| error.detail()).flatten();
    match format {
        Format::Json => {
            let issues = match error {
                DeployError::Config(crate::config::ConfigError::Invalid(i)) => {
                    serde_json::to_value(i).unwrap_or_default()
                }
                _ => serde_json::Value::Null,
            };
            let mut body = serde_json::json!({
                "kind": error.kind(),
                "exit_code": error.exit_code(),
                "message": error.to_string(),
                "fix": fix,
                "issues": issues,
            });
            if let Some(d) = detail {
                body["detail"] = d.into();
            }
            println!("{}", serde_json::json!({ "ok": false, "error": body }));
        }
        Format::Text => {
            eprintln!("error: {error}");
            if let Some(fix) = fix {
                eprintln!("  fix: {fix}");
            }
            if let Some(d) = detail {
                eprintln!("  detail: {d}");
            }
        }
    }
}

/// The summary a person reads.
pub trait Human {
    fn print(&self);
}

fn changes(label: &str, list: &[crate::taskdef::Change]) {
    for c in list {
        println!(
            "  {label} {}: {} -> {}",
            c.field,
            c.from.as_deref().unwrap_or("(none)"),
            c.to.as_deref().unwrap_or("(none)")
        );
    }
}

impl Human for Deployed {
    fn print(&self) {
        println!(
            "deployed {} to {} ({})",
            self.service.name, self.identity.env, self.identity.region
        );
        for s in &self.stacks {
            println!("  stack {}: {}", s.name, s.change);
        }
        println!("  image: {}", self.image.reference);
        println!(
            "  task definition: {} ({})",
            crate::taskdef::short(&self.task_definition.arn),
            if self.task_definition.registered {
                "new revision"
            } else {
                "unchanged"
            }
        );
        if let Some(ingest) = &self.ingest {
            println!(
                "  ingest service {}: {} ({})",
                ingest.service.name,
                ingest.service.action,
                crate::taskdef::short(&ingest.task_definition.arn)
            );
        }
        if let Some(b) = &self.broker {
            println!("  broker: {}", b.url);
        }
        println!("  service: {}", self.service.action);
        for t in &self.local_tasks {
            println!(
                "  local task: pid {} on 127.0.0.1:{} {} (log {})",
                t.pid,
                t.port,
                crate::taskdef::short(&t.task_definition),
                t.log.display()
            );
        }
        println!(
            "  verified: first update {} ms after connecting",
            self.verified.first_message_ms
        );
        for r in &self.removed {
            println!("  removed (no broker any more): {r}");
        }
        println!();
        for u in &self.urls {
            println!("WebSocket: {u}");
        }
        println!("Dashboard: {}", self.dashboard_url);
    }
}

impl Human for Plan {
    fn print(&self) {
        println!(
            "plan for {} in {} ({}):",
            self.service.name, self.identity.env, self.identity.region
        );
        match self.ecs_service_linked_role {
            "create" => println!("  account: ECS's service-linked role would be created"),
            "unknown" => println!(
                "  account: ECS's service-linked role unknown (iam:GetRole denied); the deploy will try to create it"
            ),
            _ => {}
        }
        for s in &self.stacks {
            println!("  stack {}: {}", s.name, s.change);
        }
        let pushed = match self.image_in_registry {
            Some(true) => "already in the registry",
            Some(false) => "would be pushed",
            None => "registry not checked",
        };
        println!("  image: {} ({pushed})", self.image.reference);
        if let Some(ingest) = &self.ingest {
            println!(
                "  ingest service {}: {}{}",
                ingest.service.name,
                ingest.service.action,
                if ingest.task_definition.is_empty() {
                    ", task definition unchanged"
                } else {
                    ", a new task definition revision"
                }
            );
            changes("  ", &ingest.task_definition);
            changes("  ", &ingest.service.changes);
        }
        if self.task_definition.is_empty() {
            println!("  task definition: unchanged");
        } else {
            println!("  task definition: a new revision");
            changes("  ", &self.task_definition);
        }
        println!("  service: {}", self.service.action);
        changes("  ", &self.service.changes);
        for r in &self.remove {
            println!("  remove (no broker any more): {r}");
        }
        println!(
            "{}",
            if self.changes {
                "changes pending"
            } else {
                "nothing to change"
            }
        );
    }
}

impl Human for Status {
    fn print(&self) {
        println!("env {}", self.env);
        for (name, status) in &self.stacks {
            println!("  stack {name}: {status}");
        }
        if let Some(b) = &self.broker {
            println!(
                "  broker ({}): {}{}",
                b.engine,
                b.state,
                b.url
                    .as_ref()
                    .map(|u| format!(" at {u}"))
                    .unwrap_or_default()
            );
        }
        if let Some(ingest) = &self.ingest {
            print_service(ingest);
        }
        print_service(&self.serving);
        for t in &self.local_tasks {
            println!(
                "  local task: pid {} on 127.0.0.1:{} {} ({})",
                t.task.pid,
                t.task.port,
                crate::taskdef::short(&t.task.task_definition),
                if t.ready { "ready" } else { "NOT ready" }
            );
        }
        if self.local_task_ready.is_some() && self.local_tasks.is_empty() {
            println!("  local task: not running");
        }
        if let (Some(u), Some(d)) = (&self.url, &self.dashboard_url) {
            println!("\nWebSocket: {u}\nDashboard: {d}");
        }
    }
}

fn print_service(st: &crate::commands::ServiceStatus) {
    match &st.service {
        None => println!("  service: absent"),
        Some(s) => println!(
            "  service {s}: {} running / {} desired, {} pending, {}",
            st.running,
            st.desired,
            st.pending,
            st.task_definition.as_deref().unwrap_or("?")
        ),
    }
    for d in &st.deployments {
        println!(
            "  deployment {} {} {} {}: {}/{} running, {} pending, {} failed{}",
            d.id,
            d.status,
            d.rollout_state,
            d.task_definition,
            d.running,
            d.desired,
            d.pending,
            d.failed_tasks,
            if d.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.reason)
            }
        );
    }
    for t in &st.tasks {
        println!(
            "  task {} {} health {} {}",
            t.id, t.last_status, t.health, t.task_definition
        );
    }
    for e in &st.events {
        println!("  event: {e}");
    }
}

impl Human for RolledBack {
    fn print(&self) {
        println!(
            "rolled back {} -> {}; verified ({} ms to the first update)",
            crate::taskdef::short(&self.from),
            crate::taskdef::short(&self.to),
            self.verified.first_message_ms
        );
        println!("\nWebSocket: {}", self.url);
    }
}

impl Human for Destroyed {
    fn print(&self) {
        println!("destroyed env {}", self.env);
        if self.local_task_stopped {
            println!("  local tasks stopped");
        }
        if self.local_broker_stopped {
            println!("  local broker stopped");
        }
        if self.services_deleted.is_empty() {
            println!("  service deleted: false");
        }
        for s in &self.services_deleted {
            println!("  service deleted: {s}");
        }
        for s in &self.stacks_deleted {
            println!("  stack deleted: {s}");
        }
        for k in &self.kept {
            println!("  kept: {k}");
        }
    }
}

impl Human for crate::lambda::LambdaDeployed {
    fn print(&self) {
        println!(
            "deployed the REST tier: stack {} ({})",
            self.stack, self.stack_change
        );
        println!("  function: {}", self.function);
        println!(
            "  code: s3://{}/{} ({} bytes, {})",
            self.bucket,
            self.key,
            self.zip_bytes,
            if self.uploaded {
                "uploaded"
            } else {
                "already there"
            }
        );
        println!("  verified: {}", self.verified);
        if let Some(url) = &self.api_url {
            println!("\nREST API: {url}api/v1/symbols");
        }
    }
}
