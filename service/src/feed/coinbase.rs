//! `--source coinbase`: Coinbase Advanced Trade's `level2`, `market_trades` and `ticker`
//! channels, kept by [`crate::venue::coinbase`] and published as our book, trades, candles and
//! ticker streams.
//!
//! Coinbase numbers every message of a connection (`sequence_num`, all channels together), so a
//! jump says messages were lost but not whose: each product gets its **own connection**, and a
//! gap on it rebuilds that product alone (a new connection brings a new snapshot; its clients
//! get a reset). Each connection subscribes at once (Coinbase closes one that has not within
//! 5 s), one channel per message: `level2`, `market_trades`, `ticker`, and `heartbeats` so that a quiet product's
//! connection stays open and a silent one ([`SILENCE`]) is known to be down.
//!
//! A product's snapshot is its whole book (tens of MiB for BTC-USD), so a message may be up to
//! [`MAX_MESSAGE`] bytes, and one larger than [`PARSE_ASIDE`] is decoded off the runtime's
//! workers so that it stalls no client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::net;
use super::streams::Streams;
use crate::book::MAX_DEPTH;
use crate::broker::Sink;
use crate::config::normalize_symbol;
use crate::venue::coinbase::{self, FullBook, Outcome, SeqCheck, Sequence};

/// Subscribed on each product's connection, one per message as Coinbase requires.
const CHANNELS: [&str; 4] = ["level2", "heartbeats", "market_trades", "ticker"];

/// Heartbeats come every second: nothing for this long and the connection is down.
pub const SILENCE: Duration = Duration::from_secs(10);
/// BTC-USD's snapshot is tens of MiB; this admits it and bounds a broken peer.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Messages larger than this are decoded on a blocking thread.
const PARSE_ASIDE: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Coinbase {
    url: String,
    /// Coinbase's names (`BTC-USD`), which are ours too.
    products: Vec<String>,
    tls: Option<Arc<rustls_client::ClientConfig>>,
}

impl Coinbase {
    /// `products` were checked by `Config::validate`; `tls` is [`net::client_config`]'s
    /// answer for `url`.
    pub fn new(
        url: &str,
        products: &[String],
        tls: Option<Arc<rustls_client::ClientConfig>>,
    ) -> Self {
        Self {
            url: url.to_string(),
            products: products
                .iter()
                .map(|p| normalize_symbol(p).unwrap_or_else(|| p.clone()))
                .collect(),
            tls,
        }
    }

    pub fn symbols(&self) -> Vec<String> {
        self.products.clone()
    }

    /// Coinbase's books are numbered here, by this process: positions mean nothing elsewhere.
    pub fn epoch(&self) -> String {
        format!("coinbase-{}", super::now_micros())
    }

    pub async fn run(
        self,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        on_ready: impl FnOnce(),
    ) {
        let n = self.products.len();
        let shared = Shared {
            streams: Mutex::new(Streams::new(sink.clone(), n)),
            up: Mutex::new(vec![false; n]),
            sink,
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let ready_tx = Mutex::new(Some(ready_tx));
        let products = (0..n).map(|i| self.product(i, &shared, &ready_tx, &shutdown));
        let all = futures_util::future::join_all(products);
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => return,
            Ok(()) = ready_rx => on_ready(),
        }
        all.await;
    }

    /// Product `i`'s connection, made again after every loss until shutdown.
    async fn product(
        &self,
        i: usize,
        shared: &Shared,
        ready: &Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
        shutdown: &CancellationToken,
    ) {
        let mut book = FullBook::default();
        let mut retry = net::Retry::new("coinbase", &self.url, shared.sink.metrics());
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(i, &mut book, shared, ready) => outcome,
            };
            book.lose_track();
            shared.set_up(i, false);
            lock(&shared.streams).disconnected(i);
            if !retry.wait(outcome, shutdown).await {
                return;
            }
        }
    }

    /// One connection for product `i`: subscribe, then read until it fails, goes silent or
    /// skips a sequence number. `Ok` when it had worked.
    async fn session(
        &self,
        i: usize,
        book: &mut FullBook,
        shared: &Shared,
        ready: &Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    ) -> Result<(), String> {
        let product = &self.products[i];
        let mut ws = net::websocket(&self.url, MAX_MESSAGE, self.tls.as_ref()).await?;
        for channel in CHANNELS {
            let subscribe =
                json!({"type": "subscribe", "product_ids": [product], "channel": channel});
            ws.send(Message::text(subscribe.to_string()))
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
        }
        let mut sequence = Sequence::default();
        let mut reader = net::Reader::new(SILENCE);
        loop {
            let text = match reader.next(&mut ws).await {
                Err(end) => return end,
                Ok(net::Read::CandleTick) => {
                    let mut streams = lock(&shared.streams);
                    // Each product's connection closes its own candles.
                    streams.close_candles_of(i, super::now_micros());
                    streams.flush();
                    continue;
                }
                Ok(net::Read::Message(Message::Text(text))) => text,
                Ok(net::Read::Message(_)) => continue,
            };
            let parsed = if text.len() > PARSE_ASIDE {
                let text = text.clone();
                tokio::task::spawn_blocking(move || coinbase::parse(&text))
                    .await
                    .map_err(|e| format!("decoding a large message: {e}"))?
            } else {
                coinbase::parse(&text)
            };
            let msg = match parsed {
                Ok(msg) => msg,
                Err(_) if is_error(&text) => {
                    return Err(format!("{product}: {}", net::excerpt(&text)));
                }
                Err(e) => {
                    tracing::warn!(product, error = %e, "coinbase message dropped");
                    continue;
                }
            };
            match sequence.check(msg.sequence_num) {
                SeqCheck::Next => {}
                SeqCheck::Repeat => continue,
                SeqCheck::Gap { lost } => {
                    lock(&shared.streams).lose(i);
                    return Err(format!("{product}: {lost} messages lost; resubscribing"));
                }
            }
            let ts = super::now_micros();
            let mut streams = lock(&shared.streams);
            for event in msg.books.iter().filter(|e| e.product_id == *product) {
                match book.apply(event) {
                    Outcome::Publish { reset } => {
                        streams.publish(i, &book.top(MAX_DEPTH), reset, ts, None);
                    }
                    Outcome::Waiting => {}
                    Outcome::Resync { why } => {
                        streams.lose(i);
                        return Err(why);
                    }
                }
            }
            for t in msg.trades.into_iter().filter(|t| t.symbol == *product) {
                streams.trade(i, t.trade, t.ts);
            }
            for t in msg.tickers.into_iter().filter(|t| t.symbol == *product) {
                streams.ticker(i, t.ticker, ts);
            }
            streams.flush();
            if streams.published(i) && reader.worked() {
                drop(streams);
                shared.set_up(i, true);
                if let Some(tx) = lock(ready).take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// What the products' connections share.
struct Shared {
    sink: Arc<dyn Sink>,
    streams: Mutex<Streams>,
    /// Which products' connections work: the venue is up when all do.
    up: Mutex<Vec<bool>>,
}

impl Shared {
    fn set_up(&self, i: usize, up: bool) {
        let mut all = lock(&self.up);
        all[i] = up;
        let venue_up = all.iter().all(|&u| u);
        self.sink.metrics().venue_up.set(i64::from(venue_up));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Coinbase's refusals: `{"type":"error","message":"..."}`, with no sequence number.
fn is_error(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
    }
    serde_json::from_str::<Error<'_>>(text).is_ok_and(|e| e.kind == "error")
}
