//! `deploy logs`: the newest lines, then new ones with `--follow`.

use std::time::Duration;

use serde::Serialize;

use super::*;
use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;

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

/// At most this many new events are read per poll while following.
const MAX_LOG_EVENTS: usize = 10_000;

/// The newest `lines` events at or after `since_ms`, oldest first. CloudWatch returns events
/// oldest first, so the search starts with the last minute and widens (x4) towards `since_ms`
/// until it holds enough lines: a busy service is not read from `since_ms` on, and the lines
/// shown are the newest whatever the volume. Only the newest `lines` are ever held.
pub async fn newest(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    prefix: &str,
    since_ms: i64,
    now_ms: i64,
    lines: usize,
) -> Result<Vec<FilteredLogEvent>, DeployError> {
    let mut window: i64 = 60_000;
    loop {
        let start = (now_ms - window).max(since_ms);
        // The newest `lines` seen so far (pages need not be in time order across streams).
        let mut kept: Vec<FilteredLogEvent> = Vec::with_capacity(2 * lines + 1);
        let trim = |kept: &mut Vec<FilteredLogEvent>| {
            kept.sort_by_key(|e| e.timestamp().unwrap_or(0));
            let extra = kept.len().saturating_sub(lines);
            kept.drain(..extra);
        };
        let mut pages = logs
            .filter_log_events()
            .log_group_name(group)
            .log_stream_name_prefix(prefix)
            .start_time(start)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(error::aws(format!("reading logs from {group}")))?;
            kept.extend(page.events().iter().cloned());
            if kept.len() > 2 * lines {
                trim(&mut kept);
            }
        }
        if kept.len() >= lines || start == since_ms {
            trim(&mut kept);
            return Ok(kept);
        }
        window = window.saturating_mul(4);
    }
}

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
            return Err(DeployError::usage(
                format!("no local task has run yet ({} is missing)", path.display()),
                format!("deploy first: cargo run --bin deploy -- --env {}", s.env),
            ));
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
    let platform = ctx.platform().await?.ok_or_else(|| {
        DeployError::usage(
            format!("env {} is not deployed", s.env),
            format!("deploy first: cargo run --bin deploy -- --env {}", s.env),
        )
    })?;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let since_ms = now_ms() - since.as_millis() as i64;
    let prefix = format!("{}/", s.app);
    let newest = newest(
        &ctx.logs,
        &platform.log_group,
        &prefix,
        since_ms,
        now_ms(),
        lines,
    )
    .await?;
    let mut seen: std::collections::HashSet<String> = newest
        .iter()
        .map(|e| e.event_id().unwrap_or_default().to_string())
        .collect();
    let mut start = newest
        .last()
        .and_then(|e| e.timestamp())
        .unwrap_or(since_ms);
    let show = |e: &FilteredLogEvent| {
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
    };
    newest.iter().for_each(show);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // From the last line shown, inclusive (lines of the same millisecond may follow);
        // what was shown is skipped by its id.
        let mut pages = ctx
            .logs
            .filter_log_events()
            .log_group_name(&platform.log_group)
            .log_stream_name_prefix(&prefix)
            .start_time(start)
            .into_paginator()
            .send();
        let mut batch = Vec::new();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                // Following rides out throttling: the next poll reads on from the same point.
                Err(e) if error::transient(&e) => break,
                Err(e) => {
                    return Err(error::aws(format!(
                        "reading logs from {}",
                        platform.log_group
                    ))(e));
                }
            };
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
        batch.iter().for_each(show);
        start = batch.last().and_then(|e| e.timestamp()).unwrap_or(start);
        if seen.len() > 100_000 {
            seen.clear();
        }
    }
}
