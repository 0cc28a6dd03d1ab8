//! REST snapshots, health, readiness and metrics.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::AppState;
use crate::hub::StreamId;
use crate::market::{Candle, Channel, Interval, Micros, Payload};
use crate::ws::protocol::{ErrorCode, ServerMessage};

/// Errors over HTTP have the same shape as WebSocket errors.
pub fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = ServerMessage::error(None, code, message).to_json();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn unknown_symbol(symbol: &str) -> Response {
    let shown: String = symbol.chars().take(32).collect();
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::UnknownSymbol,
        &format!("unknown symbol {shown:?}; GET /api/v1/symbols lists them"),
    )
}

pub async fn symbols(State(state): State<AppState>) -> Response {
    Json(json!({
        "symbols": state.hub.symbols(),
        "channels": Channel::ALL,
        "epoch": state.hub.epoch().to_string(),
        "source": state.config.source_name(),
        "stale": state.hub.stale_symbols(),
    }))
    .into_response()
}

#[derive(Debug, Serialize)]
struct Snapshot<'a> {
    symbol: &'a str,
    seq: u64,
    ts: Micros,
    data: Payload,
}

pub async fn ticker(
    State(state): State<AppState>,
    symbol: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Path(symbol) = match symbol {
        Ok(s) => s,
        Err(e) => return bad_input("the symbol in the path", &e.body_text()),
    };
    let Some(stream) = state.hub.stream(Channel::Ticker, &symbol) else {
        return unknown_symbol(&symbol);
    };
    latest(&state, stream, &symbol, "no ticker published yet")
}

/// A stream's latest state with its position, or 404 when it has none yet.
fn latest(state: &AppState, stream: StreamId, symbol: &str, none: &str) -> Response {
    match state.hub.latest(stream) {
        Some(e) => Json(Snapshot {
            symbol,
            seq: e.seq,
            ts: e.ts,
            data: e.payload,
        })
        .into_response(),
        None => error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, none),
    }
}

#[derive(Debug, Deserialize)]
pub struct BookQuery {
    depth: Option<usize>,
}

/// `GET /api/v1/book/{symbol}?depth=10`: the book stream's latest view, with its `seq`, so
/// that a client may then follow the stream from there (resume from that `seq`).
pub async fn book(
    State(state): State<AppState>,
    symbol: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<BookQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (symbol, q) = match symbol_and_query(symbol, q) {
        Ok(both) => both,
        Err(response) => return *response,
    };
    let depth = q.depth.unwrap_or(10);
    let Some(channel) = Channel::BOOKS
        .into_iter()
        .find(|c| c.book_depth() == Some(depth))
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "depth must be 10, 25, 50 or 100",
        );
    };
    let Some(stream) = state.hub.stream(channel, &symbol) else {
        return unknown_symbol(&symbol);
    };
    latest(&state, stream, &symbol, "no book published yet")
}

#[derive(Debug, Deserialize)]
pub struct CandleQuery {
    interval: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Candles<'a> {
    symbol: &'a str,
    interval: Interval,
    candles: Vec<Candle>,
}

/// RFC 9112 3.2: an HTTP/1.1 request without exactly one `Host` is answered 400.
pub async fn require_host(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let hosts = request
        .headers()
        .get_all(axum::http::header::HOST)
        .iter()
        .count();
    if request.version() == axum::http::Version::HTTP_11 && hosts != 1 {
        let message = if hosts == 0 {
            "an HTTP/1.1 request needs a Host header"
        } else {
            "a request may carry only one Host header"
        };
        return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message);
    }
    next.run(request).await
}

/// Any path the server does not serve: the documented error shape, not an empty 404.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let path: String = uri.path().chars().take(64).collect();
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        &format!("no such path {path:?}; the API is under /api/v1 (docs/protocol.md)"),
    )
}

/// What an ingest task answers on the client routes: it serves no clients (its hub is empty).
pub async fn ingest_only() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "this is an ingest task (--role ingest): it publishes into the broker and serves no clients; connect to an edge",
    )
}

type PathResult = Result<Path<String>, axum::extract::rejection::PathRejection>;
type QueryResult<Q> = Result<Query<Q>, axum::extract::rejection::QueryRejection>;

/// The symbol in the path and the query, or the 400 that says which of them is wrong.
fn symbol_and_query<Q>(
    symbol: PathResult,
    q: QueryResult<Q>,
) -> Result<(String, Q), Box<Response>> {
    let Path(symbol) =
        symbol.map_err(|e| Box::new(bad_input("the symbol in the path", &e.body_text())))?;
    let Query(q) = q.map_err(|e| Box::new(bad_input("the query", &e.body_text())))?;
    Ok((symbol, q))
}

/// A query or path that does not parse, as a 400 in the documented shape.
pub fn bad_input(what: &str, e: &dyn std::fmt::Display) -> Response {
    let text: String = e.to_string().chars().take(200).collect();
    error_response(
        StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest,
        &format!("{what}: {text}"),
    )
}

pub async fn candles(
    State(state): State<AppState>,
    symbol: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<CandleQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (symbol, q) = match symbol_and_query(symbol, q) {
        Ok(both) => both,
        Err(response) => return *response,
    };
    let interval_name = q.interval.as_deref().unwrap_or("1m");
    let Some(interval) = Interval::parse(interval_name) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "interval must be 1s or 1m",
        );
    };
    let max = state.config.candle_history + 1;
    let limit = q.limit.unwrap_or(100);
    if !(1..=max).contains(&limit) {
        let msg = format!("limit must be within 1..={max}");
        return error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &msg);
    }
    if let Some(candles) = simulated_candles(&state, &symbol, interval, limit).await {
        return Json(Candles {
            symbol: &symbol,
            interval,
            candles,
        })
        .into_response();
    }
    match state.hub.candles(&symbol, interval, limit) {
        Some(candles) => Json(Candles {
            symbol: &symbol,
            interval,
            candles,
        })
        .into_response(),
        None => unknown_symbol(&symbol),
    }
}

/// With the simulator as the source, closed candles are computed (see [`crate::history`])
/// and only the open one comes from the hub. `None` when the simulator is not the source or
/// does not have the symbol.
async fn simulated_candles(
    state: &AppState,
    symbol: &str,
    interval: Interval,
    limit: usize,
) -> Option<Vec<Candle>> {
    let sim = state.sim.as_ref()?;
    let index = sim.specs().iter().position(|s| s.name == symbol)?;
    let latest = state.hub.open_candle(symbol, interval)??;
    let (end, open) = if latest.closed {
        (latest.start + interval.micros(), None)
    } else {
        (latest.start, Some(latest))
    };
    let closed = limit - usize::from(open.is_some());
    let mut candles = state.history.get(sim, index, interval, end, closed).await?;
    candles.extend(open);
    Some(candles)
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 503 until the feed is live, and again from the first moment of shutdown so the load
/// balancer stops sending new clients.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() || state.draining.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response()
    } else if state.is_ready() {
        // Ready while the source is down: the clients here keep their streams and are told
        // which are stale; the body says so for whoever looks.
        let stale = state.hub.stale_symbols();
        Json(json!({
            "status": "ready",
            "source": state.config.source_name(),
            "source_up": stale.is_empty(),
            "stale": stale,
        }))
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
            .into_response()
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
