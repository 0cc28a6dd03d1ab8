//! A local Binance spot endpoint: the combined diff-depth stream
//! (`/stream?streams=<symbol>@depth@100ms/...`, each event wrapped as `{"stream","data"}`) and
//! the REST snapshot (`GET /api/v3/depth?symbol=&limit=`), as strict as Binance where a client
//! can go wrong:
//! - update ids: each event covers `U..=u`, contiguous unless a gap is injected; a snapshot's
//!   `lastUpdateId` is the id of the book it shows (or an older one, on demand);
//! - limits: more than 1024 streams is refused at the handshake; more than 5 client messages
//!   in a second closes the connection; a ping every 200 ms must be answered within a second;
//!   REST `limit` must be one Binance accepts; `429` with `Retry-After` on demand, and a
//!   request before that time is a violation answered `418`, as Binance bans;
//! - unknown symbols: `400 {"code":-1121,"msg":"Invalid symbol."}`.
//!
//! Prices and quantities are strings with eight decimals, as Binance prints them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickstream::book::{Level, View};
use tickstream::market::Decimal;
use tokio::net::TcpListener;

use super::book_moves::{Rng, step};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// Levels a side in the venue's book.
const LEVELS: i64 = 200;
const PING_EVERY: Duration = Duration::from_millis(200);
const PONG_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Cmd {
    /// Events: (stream name, wrapped JSON).
    Events(Vec<(String, String)>),
    Drop,
}

#[derive(Debug, Default)]
struct Book {
    view: View,
    /// The last update id.
    id: u64,
}

#[derive(Debug, Default)]
struct Shared {
    books: HashMap<String, Book>,
    /// `exchangeInfo` requests.
    info_requests: usize,
    /// REST snapshot requests, by symbol.
    requests: HashMap<String, usize>,
    /// The next snapshot of these symbols shows an old book (its id before the stream's).
    stale_snapshot: Vec<String>,
    /// The next event of these symbols follows lost ids.
    skip: Vec<String>,
    /// The next so many REST requests are answered `429`.
    throttle: usize,
    retry_until: Option<Instant>,
    /// Requests made while told to wait, missed pongs, too many messages, bad limits.
    violations: Vec<String>,
    connections: usize,
    rng: u64,
}

pub struct BinanceDouble {
    pub ws_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    tx: broadcast::Sender<Cmd>,
}

fn qty(units: i64) -> Decimal {
    Decimal::new(units, 8)
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl BinanceDouble {
    /// Lists `symbols` (`BTCUSDT`), each with a book of 200 levels a side.
    pub async fn start(symbols: &[&str]) -> Self {
        let mut shared = Shared {
            rng: 0xb1a5,
            ..Shared::default()
        };
        for (n, symbol) in symbols.iter().enumerate() {
            let base = 6_800_000_000_000 + n as i64 * 100_000_000_000;
            let view = View {
                bids: (0..LEVELS)
                    .map(|i| Level::new(Decimal::new(base - i * 1_000_000, 8), qty(1 + i * 7)))
                    .collect(),
                asks: (0..LEVELS)
                    .map(|i| {
                        Level::new(
                            Decimal::new(base + 1_000_000 + i * 1_000_000, 8),
                            qty(2 + i * 5),
                        )
                    })
                    .collect(),
            };
            shared
                .books
                .insert((*symbol).to_string(), Book { view, id: 1_000 });
        }
        let shared = Arc::new(Mutex::new(shared));
        let (tx, _) = broadcast::channel(4096);

        let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ws_addr = ws.local_addr().expect("addr");
        let (s, t) = (shared.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                let (s, rx) = (s.clone(), t.subscribe());
                tokio::spawn(serve_stream(tcp, s, rx));
            }
        });

        let rest = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rest_addr = rest.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/api/v3/depth", axum::routing::get(depth))
            .route("/api/v3/exchangeInfo", axum::routing::get(exchange_info))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(rest, app).await;
        });
        Self {
            ws_addr,
            rest_addr,
            shared,
            tx,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.ws_addr)
    }

    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest_addr)
    }

    /// The venue's book of `symbol` now.
    pub fn book(&self, symbol: &str) -> View {
        lock(&self.shared).books[symbol].view.clone()
    }

    pub fn requests(&self, symbol: &str) -> usize {
        lock(&self.shared)
            .requests
            .get(symbol)
            .copied()
            .unwrap_or(0)
    }

    pub fn info_requests(&self) -> usize {
        lock(&self.shared).info_requests
    }

    pub fn connections(&self) -> usize {
        lock(&self.shared).connections
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared).violations.clone()
    }

    pub fn skip_next(&self, symbol: &str) {
        lock(&self.shared).skip.push(symbol.to_string());
    }

    pub fn stale_snapshot_next(&self, symbol: &str) {
        lock(&self.shared).stale_snapshot.push(symbol.to_string());
    }

    /// The next `n` REST requests are answered `429` with `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        lock(&self.shared).throttle = n;
    }

    /// A trade on `symbol` now (`buyer_maker`: the taker sold).
    pub fn trade(&self, symbol: &str, price: &str, qty: &str, buyer_maker: bool) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let data = json!({"e":"trade","E":ms,"s":symbol,"t":12345,"p":price,"q":qty,"T":ms,"m":buyer_maker,"M":true});
        let stream = format!("{}@trade", symbol.to_ascii_lowercase());
        let text = json!({"stream": stream, "data": data}).to_string();
        let _ = self.tx.send(Cmd::Events(vec![(stream, text)]));
    }

    /// The rolling 24 h ticker of `symbol`: bid, ask, last, open, change, volume.
    pub fn ticker(&self, symbol: &str, fields: [&str; 6]) {
        let [b, a, c, o, p, v] = fields;
        let data = json!({"e":"24hrTicker","E":1,"s":symbol,"p":p,"P":"0.5","w":c,"x":o,"c":c,"Q":"1","b":b,"B":"2","a":a,"A":"3","o":o,"h":c,"l":o,"v":v,"q":"1","O":0,"C":1,"F":0,"L":1,"n":2});
        let stream = format!("{}@ticker", symbol.to_ascii_lowercase());
        let text = json!({"stream": stream, "data": data}).to_string();
        let _ = self.tx.send(Cmd::Events(vec![(stream, text)]));
    }

    pub fn drop_connections(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }

    /// Moves every book: sizes change near the top, a level appears inside the spread or the
    /// best one goes; the event covers three update ids (two more if ids are to be lost).
    pub fn step(&self) {
        let mut sh = lock(&self.shared);
        let mut rng = Rng(sh.rng);
        let mut events = Vec::new();
        let symbols: Vec<String> = sh.books.keys().cloned().collect();
        let ms = 1_672_515_782_136u64;
        for symbol in symbols {
            let lose = if let Some(at) = sh.skip.iter().position(|s| *s == symbol) {
                sh.skip.remove(at);
                2
            } else {
                0
            };
            let book = sh.books.get_mut(&symbol).expect("book");
            let (bids, asks) = step(&mut book.view, &mut rng, 1_000_000, 900);
            let first = book.id + 1 + lose;
            book.id = first + 2;
            let side = |levels: &[Level]| -> Vec<[String; 2]> {
                levels
                    .iter()
                    .map(|l| [l.price.to_string(), l.size.to_string()])
                    .collect()
            };
            let data = json!({"e":"depthUpdate","E":ms,"s":symbol,"U":first,"u":book.id,"b":side(&bids),"a":side(&asks)});
            let stream = format!("{}@depth@100ms", symbol.to_ascii_lowercase());
            events.push((
                stream.clone(),
                json!({"stream": stream, "data": data}).to_string(),
            ));
        }
        sh.rng = rng.0;
        // Sent under the lock, so a snapshot is always before or after a whole step.
        let _ = self.tx.send(Cmd::Events(events));
    }
}

#[derive(serde::Deserialize)]
struct DepthQuery {
    symbol: Option<String>,
    limit: Option<usize>,
}

async fn depth(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(q): Query<DepthQuery>,
) -> axum::response::Response {
    let mut sh = lock(&shared);
    let now = Instant::now();
    if let Some(until) = sh.retry_until {
        if now < until {
            sh.violations
                .push("a REST request before Retry-After elapsed".into());
            return (StatusCode::IM_A_TEAPOT, [("retry-after", "60")], "banned").into_response();
        }
        sh.retry_until = None;
    }
    if sh.throttle > 0 {
        sh.throttle -= 1;
        sh.retry_until = Some(now + Duration::from_secs(1));
        let body = json!({"code": -1003, "msg": "Too many requests."});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            body.to_string(),
        )
            .into_response();
    }
    let limit = q.limit.unwrap_or(100);
    if ![5, 10, 20, 50, 100, 500, 1000, 5000].contains(&limit) {
        sh.violations.push(format!("limit {limit}"));
        let body = json!({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."});
        return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    }
    let symbol = q.symbol.unwrap_or_default();
    *sh.requests.entry(symbol.clone()).or_default() += 1;
    let Some(book) = sh.books.get(&symbol) else {
        let body = json!({"code": -1121, "msg": "Invalid symbol."});
        return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    };
    let top = book.view.top(limit);
    let mut id = book.id;
    if let Some(at) = sh.stale_snapshot.iter().position(|s| *s == symbol) {
        sh.stale_snapshot.remove(at);
        // A book from before the stream's first event: the client must ask again.
        id = 1;
    }
    let side = |levels: &[Level]| -> Vec<[String; 2]> {
        levels
            .iter()
            .map(|l| [l.price.to_string(), l.size.to_string()])
            .collect()
    };
    let body = json!({"lastUpdateId": id, "bids": side(&top.bids), "asks": side(&top.asks)});
    (StatusCode::OK, body.to_string()).into_response()
}

#[derive(serde::Deserialize)]
struct InfoQuery {
    symbol: Option<String>,
    /// A JSON array of names.
    symbols: Option<String>,
}

/// `GET /api/v3/exchangeInfo?symbols=["A","B"]` or `?symbol=A`: Binance refuses the whole
/// request if one name is not listed.
async fn exchange_info(
    State(shared): State<Arc<Mutex<Shared>>>,
    Query(q): Query<InfoQuery>,
) -> axum::response::Response {
    let mut sh = lock(&shared);
    sh.info_requests += 1;
    let names: Vec<String> = match (q.symbol, q.symbols) {
        (Some(one), None) => vec![one],
        (None, Some(list)) => match serde_json::from_str(&list) {
            Ok(names) => names,
            Err(_) => {
                let body = json!({"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."});
                return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
            }
        },
        _ => {
            let body = json!({"code": -1128, "msg": "Combination of optional parameters invalid."});
            return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
        }
    };
    if names.iter().any(|n| !sh.books.contains_key(n)) {
        let body = json!({"code": -1121, "msg": "Invalid symbol."});
        return (StatusCode::BAD_REQUEST, body.to_string()).into_response();
    }
    let symbols: Vec<Value> = names
        .iter()
        .map(|n| json!({"symbol": n, "status": "TRADING", "baseAsset": &n[..3], "quoteAsset": &n[3..]}))
        .collect();
    let body = json!({"timezone": "UTC", "serverTime": 1, "rateLimits": [], "exchangeFilters": [], "symbols": symbols});
    (StatusCode::OK, body.to_string()).into_response()
}

async fn serve_stream(
    tcp: tokio::net::TcpStream,
    shared: Arc<Mutex<Shared>>,
    mut rx: broadcast::Receiver<Cmd>,
) {
    let mut streams: Vec<String> = Vec::new();
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let query = req.uri().query().unwrap_or("");
        let names = query.strip_prefix("streams=").unwrap_or("");
        streams = names.split('/').map(String::from).collect();
        if req.uri().path() != "/stream" || names.is_empty() || streams.len() > 1024 {
            let mut refuse = ErrorResponse::new(Some("Invalid request".into()));
            *refuse.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
            return Err(refuse);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    lock(&shared).connections += 1;
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut unanswered: Option<Instant> = None;
    let mut second = (Instant::now(), 0usize);
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let now = Instant::now();
                if now.duration_since(second.0) >= Duration::from_secs(1) {
                    second = (now, 0);
                }
                second.1 += 1;
                if second.1 > 5 {
                    lock(&shared).violations.push("more than 5 messages in a second".into());
                    let _ = ws.close(None).await;
                    return;
                }
                if matches!(msg, Message::Pong(_)) {
                    unanswered = None;
                }
            }
            cmd = rx.recv() => match cmd {
                Ok(Cmd::Events(events)) => {
                    for (stream, text) in events {
                        if streams.contains(&stream) && ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Cmd::Drop) | Err(_) => return,
            },
            _ = ping.tick() => {
                if unanswered.is_some_and(|at| at.elapsed() > PONG_WITHIN) {
                    lock(&shared).violations.push("a ping not answered within a second".into());
                    return;
                }
                if unanswered.is_none() {
                    unanswered = Some(Instant::now());
                }
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
