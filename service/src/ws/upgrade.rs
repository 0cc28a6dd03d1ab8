//! `GET /ws`: admission (shutdown, origin, connection limit, URL subscription) and the
//! WebSocket handshake. Refusals are plain HTTP answers a client can read. After the upgrade the
//! raw TCP socket is handed to a [`Connection`](super::connection) so that the hub can write
//! to it directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio::net::TcpStream;

use super::connection;
use super::deflate::{self, Compressor};
use super::protocol::ErrorCode;
use crate::AppState;
use crate::http::error_response;
use crate::hub::StreamId;
use crate::market::Channel;
use crate::metrics::Metrics;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    symbols: Option<String>,
    channels: Option<String>,
}

pub(super) type Rejection = (ErrorCode, String);

pub async fn ws_handler(
    State(state): State<AppState>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    mut request: Request,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return crate::http::bad_input("the query", &e.body_text()),
    };
    let limits = &state.config;
    let key = match handshake_key(&headers) {
        Ok(_) if request.version() < axum::http::Version::HTTP_11 => {
            return NotWebSocket::OldHttp.response();
        }
        Ok(key) => key,
        Err(not) => return not.response(),
    };
    if state.shutdown.is_cancelled() {
        return refuse(
            &state.metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown,
            "server is shutting down",
        );
    }
    if !limits.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
        && !limits
            .allowed_origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
    {
        return refuse(
            &state.metrics,
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "origin not allowed",
        );
    }
    let initial = match query.symbols.as_deref() {
        None => Vec::new(),
        Some(symbols) => {
            let symbols: Vec<String> = split_list(symbols);
            let channels = query.channels.as_deref().map(split_list);
            match resolve(&state, &symbols, channels.as_deref(), 0) {
                Ok(streams) => streams,
                Err((code, message)) => {
                    return refuse(&state.metrics, StatusCode::BAD_REQUEST, code, &message);
                }
            }
        }
    };
    let Some(slot) = Slot::acquire(
        &state.connections,
        limits.max_connections,
        &state.metrics.connections_open,
    ) else {
        return refuse(
            &state.metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            "connection limit reached; try another task or later",
        );
    };
    state.metrics.connections_total.inc();
    let deflate = limits.deflate().and_then(|ours| {
        let offers = headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let (agreed, answer) = deflate::negotiate(offers, &ours)?;
        // Past the cap the client is served uncompressed: it asked, it did not require.
        let slot = Slot::acquire(
            &state.compressed,
            limits.ws_compression_max_connections,
            &state.metrics.connections_compressed,
        )?;
        Some((Compressor::new(agreed, ours), slot, answer))
    });
    let (compression, answer) = match deflate {
        Some((compressor, slot, answer)) => (Some((compressor, slot)), Some(answer)),
        None => (None, None),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let tracker = state.tracker.clone();
    tracker.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                let io = parts.io.into_inner();
                connection::serve(state, io, parts.read_buf, initial, slot, compression).await
            }
            Err(_) => tracing::error!("WebSocket upgrade on a transport other than TCP; closing"),
        }
    });
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = answer.and_then(|a| HeaderValue::from_str(&a).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    // The one subprotocol we speak, when offered (a browser offering any must get one back).
    // Never the key-carrying one: the key is not echoed.
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == crate::auth::PROTOCOL);
    if offered {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(crate::auth::PROTOCOL),
        );
    }
    response
}

/// Why a request to `/ws` is not a WebSocket handshake we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotWebSocket {
    NoUpgrade,
    Version,
    /// `Sec-WebSocket-Key` is not base64 of 16 bytes, or is given twice.
    BadKey,
    /// An upgrade over HTTP/1.0: the handshake needs HTTP/1.1.
    OldHttp,
}

impl NotWebSocket {
    fn response(self) -> Response {
        let (status, message) = match self {
            NotWebSocket::NoUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                "this endpoint speaks WebSocket: connect with a WebSocket client",
            ),
            NotWebSocket::Version => (
                StatusCode::UPGRADE_REQUIRED,
                "only WebSocket version 13 is supported",
            ),
            NotWebSocket::BadKey => (
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key must appear once, as base64 of 16 random bytes",
            ),
            NotWebSocket::OldHttp => (
                StatusCode::BAD_REQUEST,
                "the WebSocket handshake needs HTTP/1.1",
            ),
        };
        let mut response = error_response(status, ErrorCode::BadRequest, message);
        if self == NotWebSocket::Version {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Checks that this is a WebSocket upgrade (RFC 6455, version 13) and returns its key.
fn handshake_key(headers: &HeaderMap) -> Result<String, NotWebSocket> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().and_then(|v| v.to_str().ok());
    let (true, true, Some(key)) = (
        has_token(header::CONNECTION, "upgrade"),
        has_token(header::UPGRADE, "websocket"),
        key,
    ) else {
        return Err(NotWebSocket::NoUpgrade);
    };
    // RFC 6455 4.2.1: the key is base64 of exactly 16 bytes, and appears once.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
    if keys.next().is_some() || decoded.map_or(true, |k| k.len() != 16) {
        return Err(NotWebSocket::BadKey);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(NotWebSocket::Version);
    }
    Ok(key.to_string())
}

fn refuse(metrics: &Metrics, status: StatusCode, code: ErrorCode, message: &str) -> Response {
    metrics.rejected(code);
    error_response(status, code, message).into_response()
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Turns symbols and channel names into streams, or the error a client must see. `held` is
/// how many streams the connection has already, for the subscription limit.
pub(super) fn resolve(
    state: &AppState,
    symbols: &[String],
    channels: Option<&[String]>,
    held: usize,
) -> Result<Vec<StreamId>, Rejection> {
    if symbols.is_empty() {
        return Err((
            ErrorCode::BadRequest,
            "symbols must name at least one symbol".into(),
        ));
    }
    let names = channels.unwrap_or(&[]);
    let mut chans: Vec<Channel> = Vec::new();
    if names.is_empty() {
        chans.push(Channel::Ticker);
    }
    for name in names {
        let found = Channel::parse_many(name).ok_or_else(|| {
            (
                ErrorCode::UnknownChannel,
                format!("unknown channel {name:?}; channels are ticker, trades, candles_1s, candles_1m, candles"),
            )
        })?;
        chans.extend(
            found
                .iter()
                .filter(|c| !chans.contains(c))
                .collect::<Vec<_>>(),
        );
    }
    let max = state.config.max_subscriptions;
    if symbols.len().saturating_mul(chans.len()) > max {
        return Err(too_many(max));
    }
    let mut streams = Vec::with_capacity(symbols.len() * chans.len());
    for symbol in symbols {
        for &channel in &chans {
            let stream = state.hub.stream(channel, symbol).ok_or_else(|| {
                (
                    ErrorCode::UnknownSymbol,
                    format!(
                        "unknown symbol {:?}; GET /api/v1/symbols lists them",
                        truncate(symbol)
                    ),
                )
            })?;
            if !streams.contains(&stream) {
                streams.push(stream);
            }
        }
    }
    if held + streams.len() > max {
        return Err(too_many(max));
    }
    Ok(streams)
}

pub(super) fn too_many(max: usize) -> Rejection {
    (
        ErrorCode::TooManySubscriptions,
        format!("at most {max} streams per connection"),
    )
}

/// Echoing untrusted input back is bounded too.
pub(super) fn truncate(s: &str) -> &str {
    s.char_indices().nth(32).map_or(s, |(i, _)| &s[..i])
}

/// A held place under a limit (connections, compressed connections), counted in a gauge and
/// released on drop.
#[derive(Debug)]
pub(super) struct Slot {
    count: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Slot {
    fn acquire(count: &Arc<AtomicUsize>, max: usize, gauge: &Gauge) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        gauge.inc();
        Some(Self {
            count: count.clone(),
            gauge: gauge.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}
