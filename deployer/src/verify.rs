//! The proof that a deploy worked: the service's symbol list over HTTP, then a real WebSocket
//! that receives a data message for one of those symbols. A load balancer may still be
//! registering the new targets when ECS reports the rollout complete, so failures are retried
//! until a deadline.
//!
//! In production the service answers on the user's own domain: an ACM certificate names that
//! domain, not the load balancer's `*.elb.amazonaws.com` name, so verifying against the load
//! balancer's name fails the TLS name check. With a public URL configured, the probe dials the
//! load balancer but speaks TLS and HTTP as the public host (like `curl --connect-to`): it
//! proves the certificate and the routing before the domain's DNS points there. When the
//! service requires API keys, the probe presents one in the `Authorization` header, never in
//! the query string that load balancers write to their access logs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::DeployError;
use crate::report::Reporter;

/// An API key: kept out of `Debug`, logs and output.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key.trim().to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn bearer(&self) -> Result<HeaderValue, String> {
        HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| "the API key has characters a header cannot carry".to_string())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What to verify, and how to reach it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL clients use: `ws://HOST:PORT/ws` or `wss://markets.example.com/ws`.
    pub url: String,
    /// Dial this `host:port` (the load balancer) instead of resolving the URL's host.
    pub connect_to: Option<String>,
    pub api_key: Option<ApiKey>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub url: String,
    pub symbol: String,
    pub attempts: u32,
    pub first_message_ms: u64,
    pub sample: String,
}

/// The HTTP base (`https://host`) of a `ws(s)://host/ws` URL.
fn http_base(ws_url: &str) -> String {
    let base = ws_url
        .replacen("wss://", "https://", 1)
        .replacen("ws://", "http://", 1);
    let base = base.split('?').next().unwrap_or_default();
    base.trim_end_matches('/')
        .trim_end_matches("/ws")
        .to_string()
}

/// The URL's host and port (default 443 for wss, 80 for ws).
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "wss" || scheme == "https" {
        443
    } else {
        80
    };
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            Some((h.to_string(), p.parse().ok()?))
        }
        _ => Some((authority.to_string(), default)),
    }
}

/// An error and its causes, each said once: reqwest's own message ("error sending request")
/// hides what happened (a certificate for another name, a refused connection).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

async fn resolve(connect_to: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(connect_to)
        .await
        .map_err(|e| format!("resolving {connect_to}: {e}"))?
        .next()
        .ok_or_else(|| format!("{connect_to} resolves to no address"))
}

/// Lists the symbols, then waits on a WebSocket for an `update` of the first.
pub async fn websocket(
    target: &Target,
    deadline: Duration,
    report: &Reporter,
) -> Result<Verified, DeployError> {
    crate::tls();
    let started = Instant::now();
    let mut attempts = 0;
    let mut last_error = String::from("no attempt");
    if let (Some(lb), Some((host, _))) = (&target.connect_to, host_port(&target.url))
        && tokio::net::lookup_host((host.as_str(), 0)).await.is_err()
    {
        report.line(format!(
            "verify: {host} does not resolve yet; verifying through the load balancer {lb} as {host}. Point {host} at {lb} (a CNAME, or a Route 53 alias) for clients to reach it"
        ));
    }
    while started.elapsed() < deadline {
        attempts += 1;
        match once(target).await {
            Ok((symbol, ms, sample)) => {
                report.line(format!(
                    "verified: {} streamed an update of {symbol} {ms} ms after connecting",
                    target.url
                ));
                return Ok(Verified {
                    url: target.url.clone(),
                    symbol,
                    attempts,
                    first_message_ms: ms,
                    sample,
                });
            }
            Err(Failure::Final(e)) => {
                return Err(DeployError::Verify(format!("{}: {e}", target.url)));
            }
            Err(Failure::Retry(e)) => {
                if attempts == 1 || attempts % 5 == 0 {
                    report.line(format!("verify: {e}; retrying"));
                }
                last_error = e;
                sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(DeployError::Verify(format!(
        "no data from {} within {} ({attempts} attempts); last error: {last_error}",
        target.url,
        humantime::format_duration(deadline)
    )))
}

enum Failure {
    /// Worth another attempt (the load balancer may still be registering targets).
    Retry(String),
    /// Another attempt would answer the same (a refused key).
    Final(String),
}

async fn symbols(target: &Target) -> Result<Vec<String>, Failure> {
    let base = http_base(&target.url);
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let (Some(lb), Some((host, port))) = (&target.connect_to, host_port(&target.url)) {
        let mut addr = resolve(lb).await.map_err(Failure::Retry)?;
        addr.set_port(port);
        client = client.resolve(&host, addr);
    }
    let client = client.build().map_err(|e| Failure::Final(e.to_string()))?;
    let mut request = client.get(format!("{base}/api/v1/symbols"));
    if let Some(key) = &target.api_key {
        request = request.header(header::AUTHORIZATION, key.bearer().map_err(Failure::Final)?);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Retry(format!("GET {base}/api/v1/symbols: {}", chain(&e))))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Failure::Final(if target.api_key.is_some() {
            "the service refused the API key given in DEPLOY_VERIFY_API_KEY (or read from the TICKSTREAM_API_KEYS secret) with 401".into()
        } else {
            "the service requires an API key (401): set DEPLOY_VERIFY_API_KEY, or give the deployer read access to the TICKSTREAM_API_KEYS secret".into()
        }));
    }
    if !status.is_success() {
        return Err(Failure::Retry(format!(
            "GET {base}/api/v1/symbols answered {status}"
        )));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Failure::Retry(format!("GET {base}/api/v1/symbols: not JSON: {e}")))?;
    let list: Vec<String> = body["symbols"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        return Err(Failure::Retry(format!(
            "GET {base}/api/v1/symbols listed no symbols"
        )));
    }
    Ok(list)
}

async fn once(target: &Target) -> Result<(String, u64, String), Failure> {
    let list = symbols(target).await?;
    let symbol = list[0].clone();
    let url = format!(
        "{}{}symbols={symbol}&channels=ticker",
        target.url,
        if target.url.contains('?') { '&' } else { '?' }
    );
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::Final(e.to_string()))?;
    if let Some(key) = &target.api_key {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, key.bearer().map_err(Failure::Final)?);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let connected = Instant::now();
    let connect = async {
        match &target.connect_to {
            None => tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .map(|(ws, _)| ws),
            Some(lb) => {
                let mut addr = resolve(lb)
                    .await
                    .map_err(|e| std::io::Error::other(e).into())
                    .map_err(|e: tokio_tungstenite::tungstenite::Error| e)?;
                if let Some((_, port)) = host_port(&target.url) {
                    addr.set_port(port);
                }
                let stream = TcpStream::connect(addr).await?;
                // TLS (when wss) and the Host header follow the URL: the public name.
                tokio_tungstenite::client_async_tls_with_config(request, stream, Some(config), None)
                    .await
                    .map(|(ws, _)| ws)
            }
        }
    };
    let mut ws = timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| Failure::Retry("connect timed out after 10s".into()))?
        .map_err(|e| Failure::Retry(format!("connect: {}", chain(&e))))?;
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
    .map_err(|_| Failure::Retry(format!("no update of {symbol} within 10s")))?;
    let sample = wait.map_err(Failure::Retry)?;
    let _ = ws.close(None).await;
    Ok((symbol, connected.elapsed().as_millis() as u64, sample))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_split_into_their_parts() {
        assert_eq!(
            super::http_base("wss://markets.example.com/ws"),
            "https://markets.example.com"
        );
        assert_eq!(
            super::http_base("ws://127.0.0.1:8080/ws"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            super::host_port("wss://markets.example.com/ws"),
            Some(("markets.example.com".into(), 443))
        );
        assert_eq!(
            super::host_port("ws://127.0.0.1:8080/ws"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            format!("{:?}", super::ApiKey::new("secret".into())),
            "ApiKey(<redacted>)"
        );
    }
}
