//! A local Kraken WebSocket v2 `book` endpoint, as strict as the real one where it matters to a
//! client: subscribe acknowledgements (and refusals for pairs it does not list), a snapshot at
//! the depth asked for, updates whose levels are applied in order with no removal for levels
//! pushed below the depth, a CRC32 of the top ten on every message, JSON numbers printed with
//! their trailing zeros, and a heartbeat when idle; plain or over TLS. Faults on demand: a corrupted checksum, a
//! dropped connection, silence.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickstream::book::{Level, View, checksum};
use tickstream::market::Decimal;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::book_moves::{Rng, step};
use super::tls::TestTls;

#[derive(Debug, Clone)]
enum Cmd {
    /// Send one update per listed pair (already applied to the truth).
    Update(Vec<(String, String)>),
    /// A `trade` or `ticker` message for one pair: (channel, pair, text).
    Channel(&'static str, String, String),
    Drop,
    /// Stop sending anything, heartbeats included.
    Silence(bool),
}

#[derive(Debug, Default)]
struct Shared {
    /// The venue's books (depth 100), by pair.
    books: HashMap<String, View>,
    /// Subscribe requests received, by pair.
    subscribes: HashMap<String, usize>,
    /// The next update of these pairs carries a wrong checksum.
    corrupt: Vec<String>,
    connections: usize,
    tls_failures: usize,
    trade_snapshots: usize,
    /// `trade` and `ticker` subscriptions received.
    channel_subscribes: usize,
    rng: u64,
}

pub struct KrakenDouble {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    tx: broadcast::Sender<Cmd>,
    /// Set when the double speaks `wss://`.
    tls: Option<TestTls>,
}

const DEPTH: usize = 100;

fn lot(units: i64) -> Decimal {
    Decimal::new(units, 8)
}

impl KrakenDouble {
    /// Serves the pairs in `pairs` (others are refused), each with a book of 100 levels a side.
    pub async fn start(pairs: &[&str]) -> Self {
        Self::start_with(pairs, None).await
    }

    /// The same over TLS (`wss://`), with a certificate for 127.0.0.1 from a test CA.
    pub async fn start_tls(pairs: &[&str]) -> Self {
        Self::start_with(pairs, Some(TestTls::new(&["127.0.0.1"]))).await
    }

    async fn start_with(pairs: &[&str], tls: Option<TestTls>) -> Self {
        let mut shared = Shared {
            rng: 0x5eed,
            ..Shared::default()
        };
        for (n, pair) in pairs.iter().enumerate() {
            let base = 4_528_350 + n as i64 * 1_000_000;
            let view = View {
                bids: (0..DEPTH as i64)
                    .map(|i| Level::new(Decimal::new(base - i * 3, 1), lot(10_000_000 + i * 7)))
                    .collect(),
                asks: (0..DEPTH as i64)
                    .map(|i| {
                        Level::new(Decimal::new(base + 17 + i * 3, 1), lot(20_000_000 + i * 5))
                    })
                    .collect(),
            };
            shared.books.insert((*pair).to_string(), view);
        }
        let shared = Arc::new(Mutex::new(shared));
        let (tx, _) = broadcast::channel(1024);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (s, t) = (shared.clone(), tx.clone());
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, rx) = (s.clone(), t.subscribe());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => {
                            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                                serve(ws, s, rx).await;
                            }
                        }
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                s.lock().unwrap_or_else(|e| e.into_inner()).tls_failures += 1;
                                return;
                            };
                            if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                                serve(ws, s, rx).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            shared,
            tx,
            tls,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/v2", self.addr)
    }

    /// The CA that signed the double's certificate (`wss://` only).
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(|t| t.ca_file.clone())
    }

    /// TLS handshakes that failed (a client that did not trust the certificate).
    pub fn tls_failures(&self) -> usize {
        self.lock().tls_failures
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The venue's book of `pair` now.
    pub fn book(&self, pair: &str) -> View {
        self.lock().books[pair].clone()
    }

    pub fn subscribes(&self, pair: &str) -> usize {
        self.lock().subscribes.get(pair).copied().unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Moves every book ([`super::book_moves::step`]; a level inserted at the top pushes the
    /// deepest out, and no removal is sent for it); then sends the updates.
    pub fn step(&self) {
        let mut updates = Vec::new();
        {
            let mut sh = self.lock();
            let pairs: Vec<String> = sh.books.keys().cloned().collect();
            for pair in pairs {
                let mut rng = Rng(sh.rng);
                let book = sh.books.get_mut(&pair).expect("book");
                let changes = step(book, &mut rng, 1, 90_000_000);
                // Kraken sends no removal for the level pushed below the depth.
                book.bids.truncate(DEPTH);
                let sum = checksum(&book.bids, &book.asks);
                let corrupt = sh.corrupt.iter().position(|p| *p == pair);
                let sum = match corrupt {
                    Some(at) => {
                        sh.corrupt.remove(at);
                        sum ^ 0x5a5a
                    }
                    None => sum,
                };
                sh.rng = rng.0;
                updates.push((
                    pair.clone(),
                    message("update", &pair, &changes.0, &changes.1, sum),
                ));
            }
        }
        let _ = self.tx.send(Cmd::Update(updates));
    }

    /// A trade on `pair` now (`price`, `qty` as Kraken prints them: JSON numbers).
    pub fn trade(&self, pair: &str, price: &str, qty: &str, buy: bool) {
        let side = if buy { "buy" } else { "sell" };
        let time = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let text = format!(
            r#"{{"channel":"trade","type":"update","data":[{{"symbol":"{pair}","side":"{side}","price":{price},"qty":{qty},"ord_type":"market","trade_id":4665906,"timestamp":"{time}"}}]}}"#
        );
        let _ = self.tx.send(Cmd::Channel("trade", pair.to_string(), text));
    }

    /// A ticker of `pair` (numbers as Kraken prints them).
    pub fn ticker(&self, pair: &str, bid: &str, ask: &str, last: &str, volume: &str, change: &str) {
        let text = format!(
            r#"{{"channel":"ticker","type":"update","data":[{{"symbol":"{pair}","bid":{bid},"bid_qty":0.5,"ask":{ask},"ask_qty":1.25,"last":{last},"volume":{volume},"vwap":{last},"low":{last},"high":{last},"change":{change},"change_pct":0.5}}]}}"#
        );
        let _ = self.tx.send(Cmd::Channel("ticker", pair.to_string(), text));
    }

    /// `trade` and `ticker` subscriptions received.
    pub fn channel_subscribes(&self) -> usize {
        self.lock().channel_subscribes
    }

    /// Trade snapshots asked for (a client that wants only new trades asks for none).
    pub fn trade_snapshots(&self) -> usize {
        self.lock().trade_snapshots
    }

    /// The next update of `pair` carries a wrong checksum.
    pub fn corrupt_next(&self, pair: &str) {
        self.lock().corrupt.push(pair.to_string());
    }

    /// Closes every connection.
    pub fn drop_connections(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }

    pub fn silence(&self, on: bool) {
        let _ = self.tx.send(Cmd::Silence(on));
    }
}

/// A number as Kraken prints it: a JSON number with the pair's precision, trailing zeros kept.
fn number(d: Decimal) -> String {
    d.to_string()
}

fn message(kind: &str, pair: &str, bids: &[Level], asks: &[Level], sum: u32) -> String {
    let side = |levels: &[Level]| {
        levels
            .iter()
            .map(|l| {
                format!(
                    r#"{{"price":{},"qty":{}}}"#,
                    number(l.price),
                    number(l.size)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"channel":"book","type":"{kind}","data":[{{"symbol":"{pair}","bids":[{}],"asks":[{}],"checksum":{sum},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}"#,
        side(bids),
        side(asks)
    )
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    shared: Arc<Mutex<Shared>>,
    mut rx: broadcast::Receiver<Cmd>,
) {
    shared.lock().unwrap_or_else(|e| e.into_inner()).connections += 1;
    let mut subscribed: Vec<String> = Vec::new();
    // (channel, pair) of the `trade` and `ticker` subscriptions.
    let mut channels: Vec<(String, String)> = Vec::new();
    let mut silent = false;
    let mut heartbeat = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let Ok(req) = serde_json::from_str::<Value>(&text) else { continue };
                let method = req["method"].as_str().unwrap_or("").to_string();
                let pairs: Vec<String> = req["params"]["symbol"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let depth = req["params"]["depth"].as_u64().unwrap_or(10) as usize;
                let channel = req["params"]["channel"].as_str().unwrap_or("").to_string();
                if method == "subscribe" && (channel == "trade" || channel == "ticker") {
                    let mut acks = Vec::new();
                    for pair in pairs {
                        if channel == "trade" && req["params"]["snapshot"] != Value::Bool(false) {
                            // Kraken would send the last 50 trades: old news to a live feed.
                            shared.lock().unwrap_or_else(|e| e.into_inner()).trade_snapshots += 1;
                        }
                        shared.lock().unwrap_or_else(|e| e.into_inner()).channel_subscribes += 1;
                        acks.push(json!({"method":"subscribe","result":{"channel":channel,"symbol":pair},"success":true}).to_string());
                        channels.push((channel.clone(), pair));
                    }
                    for ack in acks {
                        if ws.send(Message::text(ack)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                for pair in pairs {
                    let reply = {
                        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                        match (method.as_str(), sh.books.get(&pair).cloned()) {
                            ("subscribe", Some(book)) => {
                                *sh.subscribes.entry(pair.clone()).or_default() += 1;
                                subscribed.push(pair.clone());
                                let top = book.top(depth);
                                vec![
                                    json!({"method":"subscribe","result":{"channel":"book","depth":depth,"snapshot":true,"symbol":pair},"success":true,"time_in":"2023-10-06T17:35:55.000000Z","time_out":"2023-10-06T17:35:55.000100Z"}).to_string(),
                                    message("snapshot", &pair, &top.bids, &top.asks, checksum(&book.bids, &book.asks)),
                                ]
                            }
                            ("subscribe", None) => vec![json!({"method":"subscribe","error":format!("Currency pair not supported {pair}"),"success":false,"symbol":pair,"time_in":"2023-10-06T17:35:55.000000Z","time_out":"2023-10-06T17:35:55.000100Z"}).to_string()],
                            ("unsubscribe", _) => {
                                subscribed.retain(|p| *p != pair);
                                vec![json!({"method":"unsubscribe","result":{"channel":"book","symbol":pair},"success":true}).to_string()]
                            }
                            _ => vec![json!({"error":"Method not found","success":false}).to_string()],
                        }
                    };
                    for text in reply {
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Ok(Cmd::Update(updates)) => {
                    for (pair, text) in updates {
                        if !silent && subscribed.contains(&pair) && ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Cmd::Channel(channel, pair, text)) => {
                    let wanted = channels.iter().any(|(c, p)| c == channel && *p == pair);
                    if !silent && wanted && ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Ok(Cmd::Drop) | Err(_) => return,
                Ok(Cmd::Silence(on)) => silent = on,
            },
            _ = heartbeat.tick() => {
                if !silent && ws.send(Message::text(r#"{"channel":"heartbeat"}"#)).await.is_err() {
                    return;
                }
            }
        }
    }
}
