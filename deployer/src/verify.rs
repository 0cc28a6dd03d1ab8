//! The proof that a deploy worked: a real WebSocket to the public endpoint that receives a data
//! message. A load balancer may still be registering the new targets when ECS reports the
//! rollout complete, so connection failures are retried until a deadline.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::DeployError;
use crate::report::Reporter;

/// A subscription that always has data flowing (the simulator's ticker).
pub const PROBE_QUERY: &str = "symbols=AAPL&channels=ticker";

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub url: String,
    pub attempts: u32,
    pub first_message_ms: u64,
    pub sample: String,
}

/// Connects to `url` (a `ws://` or `wss://` URL ending in `/ws`) and waits for an `update`.
pub async fn websocket(
    url: &str,
    deadline: Duration,
    report: &Reporter,
) -> Result<Verified, DeployError> {
    crate::tls();
    let probe = format!(
        "{url}{}{PROBE_QUERY}",
        if url.contains('?') { '&' } else { '?' }
    );
    let started = Instant::now();
    let mut attempts = 0;
    let mut last_error = String::from("no attempt");
    while started.elapsed() < deadline {
        attempts += 1;
        match once(&probe).await {
            Ok((ms, sample)) => {
                report.line(format!(
                    "verified: {url} streamed an update {ms} ms after connecting"
                ));
                return Ok(Verified {
                    url: url.to_string(),
                    attempts,
                    first_message_ms: ms,
                    sample,
                });
            }
            Err(e) => {
                if attempts == 1 || attempts % 5 == 0 {
                    report.line(format!("verify: {e}; retrying"));
                }
                last_error = e;
                sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(DeployError::Verify(format!(
        "no data from {url} within {} ({attempts} attempts); last error: {last_error}",
        humantime::format_duration(deadline)
    )))
}

async fn once(url: &str) -> Result<(u64, String), String> {
    let request = url.into_client_request().map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let connected = Instant::now();
    let (mut ws, _) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await
    .map_err(|_| "connect timed out after 10s".to_string())?
    .map_err(|e| format!("connect: {e}"))?;
    let wait = timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            match msg.map_err(|e| e.to_string())? {
                Message::Text(text) => {
                    let value: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
                    match value["type"].as_str() {
                        Some("update") => return Ok(text.to_string()),
                        Some("error") => {
                            return Err(format!("the server answered an error: {text}"));
                        }
                        _ => {}
                    }
                }
                Message::Close(frame) => return Err(format!("closed by the server: {frame:?}")),
                _ => {}
            }
        }
        Err("the connection ended without data".to_string())
    })
    .await
    .map_err(|_| "no update within 10s".to_string())?;
    let sample = wait?;
    let _ = ws.close(None).await;
    Ok((connected.elapsed().as_millis() as u64, sample))
}
