//! Leaving a load balancer gracefully. When ECS stops a task behind an ALB it first marks the
//! task `STOPPED` in the task metadata and deregisters it from the target group; the load
//! balancer sends it no new connections and keeps the open ones for the deregistration delay;
//! only then does the container get SIGTERM. A server that waits for SIGTERM to tell its
//! clients to reconnect talks to sockets the load balancer has already cut.
//!
//! So the server watches the task metadata endpoint (`$ECS_CONTAINER_METADATA_URI_V4/task`,
//! polled every second), and when `DesiredStatus` becomes `STOPPED` it stops being ready and
//! tells its clients to reconnect, each at its own moment spread evenly over the drain window,
//! so the other tasks see a gentle ramp instead of a stampede. SIGTERM, when it comes, finds
//! few or none left. The deregistration delay must outlast one poll plus the window
//! (`docs/adr/0012-draining-behind-a-load-balancer.md` has the timeline).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::AppState;

/// How often the task metadata is read.
pub const POLL: Duration = Duration::from_secs(1);
/// One metadata request, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A task's metadata is a few KiB; nothing larger is read.
const MAX_RESPONSE: usize = 1 << 20;

/// When, within the window, connection `id` is told to reconnect: a Weyl sequence over the ids,
/// so any number of connections spread evenly and consecutive ids land far apart.
pub fn offset(id: u64, window: Duration) -> Duration {
    // 2^64 / golden ratio: multiplying by it walks the unit interval with low discrepancy.
    const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
    let fraction = id.wrapping_mul(STEP) as f64 / u64::MAX as f64;
    window.mul_f64(fraction)
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{0} is not an http:// URL")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the metadata endpoint answered {0}")]
    Status(u16),
    #[error("the metadata answer is not what ECS sends: {0}")]
    Malformed(String),
}

/// `DesiredStatus` of this task, from `{uri}/task`.
pub async fn desired_status(uri: &str) -> Result<String, MetadataError> {
    let rest = uri
        .strip_prefix("http://")
        .ok_or_else(|| MetadataError::Url(uri.to_string()))?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let request = async {
        let mut stream = TcpStream::connect(host).await?;
        stream
            .write_all(
                format!("GET {path}/task HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
    let (status, body) =
        crate::probe::parse_response(&raw).map_err(|e| MetadataError::Malformed(e.to_string()))?;
    if status != 200 {
        return Err(MetadataError::Status(status));
    }
    let task: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| MetadataError::Malformed(e.to_string()))?;
    task["DesiredStatus"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| MetadataError::Malformed("no DesiredStatus".into()))
}

/// Polls the task metadata until ECS wants the task stopped, then starts the drain. Ends with
/// the server. Failures to read are logged (the first, then every minute) and polling goes on.
pub async fn watch(uri: String, state: AppState) {
    let mut failures: u32 = 0;
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match desired_status(&uri).await {
            Ok(status) if status == "STOPPED" => {
                state.begin_drain("ECS marked the task STOPPED");
                return;
            }
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, failures, "cannot read the ECS task metadata");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_spread_evenly_over_the_window() {
        let window = Duration::from_secs(10);
        let mut buckets = [0u32; 10];
        for id in 1..=1000 {
            let o = offset(id, window);
            assert!(o < window);
            buckets[o.as_secs() as usize] += 1;
        }
        // 1000 connections over ten one-second buckets: each holds close to 100.
        assert!(
            buckets.iter().all(|&n| (90..=110).contains(&n)),
            "{buckets:?}"
        );
        assert_eq!(offset(7, Duration::ZERO), Duration::ZERO);
    }
}
