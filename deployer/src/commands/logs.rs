//! `deploy logs`: the newest lines, then new ones with `--follow`.

use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::error::{self, DeployError};
use crate::local::{self};

/// One log line, as `deploy logs --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine<'a> {
    pub task: &'a str,
    pub timestamp_ms: Option<i64>,
    pub message: &'a str,
}

fn print_line(json: bool, line: &LogLine<'_>) {
    if json {
        println!("{}", serde_json::to_string(line).unwrap_or_default());
    } else {
        println!("{} {}", &line.task[..line.task.len().min(8)], line.message);
    }
}

/// At most this many events are read to find the newest `lines`.
const MAX_LOG_EVENTS: usize = 10_000;

/// Prints the service's logs: the newest `lines` since `since` (then new ones with `follow`),
/// from CloudWatch, or from the local task's file for emulator environments.
pub async fn logs(
    ctx: &Context,
    follow: bool,
    since: Duration,
    lines: usize,
    json: bool,
) -> Result<(), DeployError> {
    let s = &ctx.settings;
    if s.emulator {
        let path = ctx.task_dir().log_file();
        if !path.exists() {
            return Err(DeployError::Usage(format!(
                "no local task has run yet ({} is missing)",
                path.display()
            )));
        }
        for line in local::tail(&path, lines) {
            print_line(
                json,
                &LogLine {
                    task: "local",
                    timestamp_ms: None,
                    message: &line,
                },
            );
        }
        let mut offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        if follow {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                offset = local::read_from(&path, offset, |line| {
                    print_line(
                        json,
                        &LogLine {
                            task: "local",
                            timestamp_ms: None,
                            message: line,
                        },
                    )
                });
            }
        }
        return Ok(());
    }
    let platform = ctx
        .platform()
        .await?
        .ok_or_else(|| DeployError::Usage(format!("env {} is not deployed", s.env)))?;
    let mut start = std::time::SystemTime::now()
        .checked_sub(since)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut seen = std::collections::HashSet::new();
    let mut first = true;
    loop {
        let mut pages = ctx
            .logs
            .filter_log_events()
            .log_group_name(&platform.log_group)
            .log_stream_name_prefix(format!("{}/", s.app))
            .start_time(start)
            .into_paginator()
            .send();
        let mut batch = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(error::aws(format!(
                "reading logs from {}",
                platform.log_group
            )))?;
            for e in page.events() {
                if seen.insert(e.event_id().unwrap_or_default().to_string()) {
                    batch.push(e.clone());
                }
            }
            if batch.len() >= MAX_LOG_EVENTS {
                break;
            }
        }
        batch.sort_by_key(|e| e.timestamp().unwrap_or(0));
        let skip = if first {
            batch.len().saturating_sub(lines)
        } else {
            0
        };
        for e in &batch[skip..] {
            let task = e
                .log_stream_name()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            print_line(
                json,
                &LogLine {
                    task,
                    timestamp_ms: e.timestamp(),
                    message: e.message().unwrap_or_default().trim_end(),
                },
            );
        }
        if !follow {
            return Ok(());
        }
        first = false;
        start = batch.last().and_then(|e| e.timestamp()).unwrap_or(start);
        if seen.len() > 100_000 {
            seen.clear();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
