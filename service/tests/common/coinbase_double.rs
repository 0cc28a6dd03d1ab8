//! A local Coinbase Advanced Trade market-data endpoint, as strict as Coinbase where a client
//! can go wrong:
//! - a connection that has not subscribed within 5 s is closed; each subscribe names one
//!   channel (`level2` or `heartbeats`) and its `product_ids`; an unknown product is answered
//!   `{"type":"error","message":"failure to subscribe"}` and the connection closed;
//! - every message of a connection carries `sequence_num`, one more than the last, across all
//!   channels (a skipped number on demand);
//! - `level2` answers on channel `l2_data`: a `snapshot` event with the whole book, then
//!   `update` events with absolute sizes (`"0"` removes; sides `bid` and `offer`);
//! - `market_trades` and `ticker` subscriptions, and their events on demand;
//! - heartbeats every 250 ms on channel `heartbeats` once subscribed (Coinbase: every second);
//! - a product's book may be made large enough that its snapshot exceeds 16 MiB, the default
//!   frame limit of common WebSocket clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickstream::book::{Level, View};
use tickstream::market::Decimal;
use tokio::net::TcpListener;

use super::book_moves::{Rng, step};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(5);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
const TIME: &str = "2026-12-03T10:00:00.123456789Z";

#[derive(Debug, Clone)]
enum Cmd {
    /// (product, `updates` array) per product.
    Updates(Vec<(String, Value)>),
    /// An event on another channel: (channel, product, events).
    Channel(&'static str, String, Value),
    Drop,
}

#[derive(Debug, Default)]
struct Shared {
    books: HashMap<String, View>,
    /// The next message on connections following these products skips a sequence number.
    skip: Vec<String>,
    /// Level-2 subscriptions received, by product.
    subscribes: HashMap<String, usize>,
    violations: Vec<String>,
    /// `market_trades` and `ticker` subscriptions received.
    channel_subscribes: usize,
    /// The largest message sent, in bytes.
    largest: usize,
    connections: usize,
    rng: u64,
}

pub struct CoinbaseDouble {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    tx: broadcast::Sender<Cmd>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn size(units: i64) -> Decimal {
    Decimal::new(units, 8)
}

impl CoinbaseDouble {
    /// Lists `products`, each with `levels` price levels a side.
    pub async fn start(products: &[(&str, usize)]) -> Self {
        let mut shared = Shared {
            rng: 0xc0ba5e,
            ..Shared::default()
        };
        for (n, (product, levels)) in products.iter().enumerate() {
            let base = 6_890_000 + n as i64 * 1_000_000;
            let levels = *levels as i64;
            let view = View {
                bids: (0..levels)
                    .map(|i| Level::new(Decimal::new(base - i, 2), size(100_000_000 + i)))
                    .collect(),
                asks: (0..levels)
                    .map(|i| Level::new(Decimal::new(base + 1 + i, 2), size(200_000_000 + i)))
                    .collect(),
            };
            shared.books.insert((*product).to_string(), view);
        }
        let shared = Arc::new(Mutex::new(shared));
        let (tx, _) = broadcast::channel(4096);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (s, t) = (shared.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, rx) = (s.clone(), t.subscribe());
                tokio::spawn(async move {
                    let config =
                        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                            .max_frame_size(Some(128 << 20))
                            .max_message_size(Some(128 << 20));
                    if let Ok(ws) =
                        tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                    {
                        serve(ws, s, rx).await;
                    }
                });
            }
        });
        Self { addr, shared, tx }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The venue's book of `product` now, its best `depth` levels a side.
    pub fn top(&self, product: &str, depth: usize) -> View {
        lock(&self.shared).books[product].top(depth)
    }

    pub fn subscribes(&self, product: &str) -> usize {
        lock(&self.shared)
            .subscribes
            .get(product)
            .copied()
            .unwrap_or(0)
    }

    pub fn connections(&self) -> usize {
        lock(&self.shared).connections
    }

    pub fn channel_subscribes(&self) -> usize {
        lock(&self.shared).channel_subscribes
    }

    pub fn largest_message(&self) -> usize {
        lock(&self.shared).largest
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared).violations.clone()
    }

    pub fn skip_next(&self, product: &str) {
        lock(&self.shared).skip.push(product.to_string());
    }

    /// A trade on `product` now, on `market_trades`.
    pub fn trade(&self, product: &str, price: &str, size: &str, side: &str) {
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let trade = json!({"trade_id": "12345", "product_id": product, "price": price, "size": size, "side": side, "time": time});
        let events = json!([{"type": "update", "trades": [trade]}]);
        let _ = self
            .tx
            .send(Cmd::Channel("market_trades", product.to_string(), events));
    }

    /// A `ticker` event of `product`: price, 24 h volume, 24 h change in percent, best bid
    /// and ask.
    pub fn ticker(&self, product: &str, fields: [&str; 5]) {
        let [price, volume, pct, bid, ask] = fields;
        let ticker = json!({"type": "ticker", "product_id": product, "price": price, "volume_24_h": volume,
            "low_24_h": price, "high_24_h": price, "low_52_w": price, "high_52_w": price,
            "price_percent_chg_24_h": pct, "best_bid": bid, "best_bid_quantity": "1", "best_ask": ask, "best_ask_quantity": "2"});
        let events = json!([{"type": "update", "tickers": [ticker]}]);
        let _ = self
            .tx
            .send(Cmd::Channel("ticker", product.to_string(), events));
    }

    pub fn drop_connections(&self) {
        let _ = self.tx.send(Cmd::Drop);
    }

    /// Moves every book: sizes change near the top, a level appears inside the spread or the
    /// best one goes.
    pub fn step(&self) {
        let mut sh = lock(&self.shared);
        let mut rng = Rng(sh.rng);
        let mut all = Vec::new();
        let products: Vec<String> = sh.books.keys().cloned().collect();
        for product in products {
            let book = sh.books.get_mut(&product).expect("book");
            let (bids, asks) = step(book, &mut rng, 1, 900_000);
            let mut changed: Vec<(&str, Level)> = bids.into_iter().map(|l| ("bid", l)).collect();
            changed.extend(asks.into_iter().map(|l| ("offer", l)));
            all.push((product.clone(), updates(&changed)));
        }
        sh.rng = rng.0;
        let _ = self.tx.send(Cmd::Updates(all));
    }
}

fn updates(levels: &[(&str, Level)]) -> Value {
    levels
        .iter()
        .map(|(side, l)| {
            json!({"side": side, "event_time": TIME, "price_level": l.price.to_string(), "new_quantity": l.size.to_string()})
        })
        .collect()
}

/// One connection's outbound numbering.
struct Out {
    seq: u64,
}

impl Out {
    fn envelope(&mut self, channel: &str, events: Value) -> String {
        let text = json!({"channel": channel, "client_id": "", "timestamp": TIME, "sequence_num": self.seq, "events": events}).to_string();
        self.seq += 1;
        text
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    shared: Arc<Mutex<Shared>>,
    mut rx: broadcast::Receiver<Cmd>,
) {
    lock(&shared).connections += 1;
    let mut out = Out { seq: 0 };
    let mut products: Vec<String> = Vec::new();
    // (channel, product) of the `market_trades` and `ticker` subscriptions.
    let mut channels: Vec<(String, String)> = Vec::new();
    let mut heartbeats = false;
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut counter = 0u64;
    let deadline = tokio::time::sleep(SUBSCRIBE_WITHIN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline, if products.is_empty() && !heartbeats => {
                lock(&shared).violations.push(format!("no subscribe within {SUBSCRIBE_WITHIN:?}"));
                return;
            }
            msg = ws.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let req: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let ids: Vec<String> = req["product_ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let mut replies = Vec::new();
                match (req["type"].as_str(), req["channel"].as_str()) {
                    (Some("subscribe"), Some("level2")) => {
                        for product in ids {
                            let book = {
                                let mut sh = lock(&shared);
                                let book = sh.books.get(&product).cloned();
                                if book.is_some() {
                                    *sh.subscribes.entry(product.clone()).or_default() += 1;
                                }
                                book
                            };
                            let Some(book) = book else {
                                let _ = ws.send(Message::text(json!({"type": "error", "message": "failure to subscribe"}).to_string())).await;
                                return;
                            };
                            let subs = json!([{"subscriptions": {"level2": [product]}}]);
                            replies.push(out.envelope("subscriptions", subs));
                            let mut levels: Vec<(&str, Level)> = book.bids.iter().map(|l| ("bid", *l)).collect();
                            levels.extend(book.asks.iter().map(|l| ("offer", *l)));
                            let events = json!([{"type": "snapshot", "product_id": product, "updates": updates(&levels)}]);
                            replies.push(out.envelope("l2_data", events));
                            products.push(product);
                        }
                    }
                    (Some("subscribe"), Some(channel @ ("market_trades" | "ticker"))) => {
                        let subs = json!([{"subscriptions": {channel: &ids}}]);
                        replies.push(out.envelope("subscriptions", subs));
                        lock(&shared).channel_subscribes += ids.len();
                        channels.extend(ids.into_iter().map(|p| (channel.to_string(), p)));
                    }
                    (Some("subscribe"), Some("heartbeats")) => {
                        heartbeats = true;
                        replies.push(out.envelope("subscriptions", json!([{"subscriptions": {"heartbeats": ["heartbeats"]}}])));
                    }
                    _ => {
                        lock(&shared).violations.push(format!("unexpected message {text}"));
                        let _ = ws.send(Message::text(json!({"type": "error", "message": "failure to subscribe"}).to_string())).await;
                        return;
                    }
                }
                for reply in replies {
                    {
                        let mut sh = lock(&shared);
                        sh.largest = sh.largest.max(reply.len());
                    }
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Ok(Cmd::Updates(all)) => {
                    for (product, ups) in all {
                        if !products.contains(&product) {
                            continue;
                        }
                        let skip = {
                            let mut sh = lock(&shared);
                            let at = sh.skip.iter().position(|p| *p == product);
                            at.map(|at| sh.skip.remove(at)).is_some()
                        };
                        if skip {
                            out.seq += 1;
                        }
                        let events = json!([{"type": "update", "product_id": product, "updates": ups}]);
                        if ws.send(Message::text(out.envelope("l2_data", events))).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Cmd::Channel(channel, product, events)) => {
                    if channels.iter().any(|(c, p)| c == channel && *p == product)
                        && ws.send(Message::text(out.envelope(channel, events))).await.is_err()
                    {
                        return;
                    }
                }
                Ok(Cmd::Drop) | Err(_) => return,
            },
            _ = beat.tick(), if heartbeats => {
                counter += 1;
                let events = json!([{"current_time": TIME, "heartbeat_counter": counter}]);
                if ws.send(Message::text(out.envelope("heartbeats", events))).await.is_err() {
                    return;
                }
            }
        }
    }
}
