//! `--source kraken`: Kraken's public WebSocket v2 `book` (depth 100), `trade` and `ticker`
//! channels for the instruments of `--symbols`, kept by [`crate::venue::kraken`] and published
//! as our book, trades, candles and ticker streams.
//!
//! The connection is retried with capped exponential backoff and full jitter; a connection
//! that says nothing (Kraken sends a heartbeat about once a second) for [`SILENCE`] is treated
//! as down. Losing the connection loses every book: each is published again, as a reset, from
//! the snapshot the new subscription brings. A checksum mismatch loses one book: that symbol
//! alone is unsubscribed and subscribed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::net;
use super::streams::Streams;
use crate::book::MAX_DEPTH;
use crate::broker::Sink;
use crate::config::normalize_symbol;
use crate::venue::kraken::{Incoming, KrakenBook, Outcome, parse};

/// No message for this long: the connection is down.
pub const SILENCE: Duration = Duration::from_secs(10);
/// Kraken's books at depth 100 are a few KiB a message; this bounds a broken peer.
const MAX_MESSAGE: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Kraken {
    url: String,
    /// Kraken's names (`BTC/USD`), in the order of [`Self::symbols`].
    pairs: Vec<String>,
    names: Vec<String>,
    tls: Option<Arc<rustls_client::ClientConfig>>,
}

impl Kraken {
    /// `pairs` were checked by `Config::validate`; `tls` is [`super::net::client_config`]'s
    /// answer for `url`.
    pub fn new(url: &str, pairs: &[String], tls: Option<Arc<rustls_client::ClientConfig>>) -> Self {
        let pairs: Vec<String> = pairs.iter().map(|p| p.trim().to_string()).collect();
        let names = pairs
            .iter()
            .map(|p| normalize_symbol(p).unwrap_or_else(|| p.clone()))
            .collect();
        Self {
            url: url.to_string(),
            pairs,
            names,
            tls,
        }
    }

    pub fn symbols(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Kraken's books are numbered here, by this process: positions mean nothing elsewhere.
    pub fn epoch(&self) -> String {
        format!("kraken-{}", super::now_micros())
    }

    pub async fn run(
        self,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        on_ready: impl FnOnce(),
    ) {
        let mut state = State::new(&self, sink.clone());
        let mut on_ready = Some(on_ready);
        let mut retry = net::Retry::new("kraken", &self.url, sink.metrics());
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&mut state, &mut on_ready) => outcome,
            };
            state.lose_all();
            if !retry.wait(outcome, &shutdown).await {
                return;
            }
        }
    }

    /// One connection: subscribe, then read until it fails or goes silent. `Ok` when the
    /// connection had worked (the backoff starts over).
    async fn session(
        &self,
        state: &mut State,
        on_ready: &mut Option<impl FnOnce()>,
    ) -> Result<(), String> {
        let mut ws = net::websocket(&self.url, MAX_MESSAGE, self.tls.as_ref()).await?;
        ws.send(Message::text(
            subscribe("subscribe", &self.pairs).to_string(),
        ))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
        for channel in ["trade", "ticker"] {
            let params = json!({"channel": channel, "symbol": &self.pairs, "snapshot": false});
            let text = json!({"method": "subscribe", "params": params}).to_string();
            ws.send(Message::text(text))
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
        }
        let mut reader = net::Reader::new(SILENCE);
        loop {
            let text = match reader.next(&mut ws).await {
                Err(end) => return end,
                Ok(net::Read::CandleTick) => {
                    state.streams.close_candles(super::now_micros());
                    state.streams.flush();
                    continue;
                }
                Ok(net::Read::Message(Message::Text(text))) => text,
                Ok(net::Read::Message(_)) => continue,
            };
            for pair in state.on_text(&text) {
                let again = [pair];
                for method in ["unsubscribe", "subscribe"] {
                    ws.send(Message::text(subscribe(method, &again).to_string()))
                        .await
                        .map_err(|e| format!("resubscribe: {e}"))?;
                }
            }
            if state.streams.any_published() && reader.worked() {
                state.streams.metrics().venue_up.set(1);
                if let Some(ready) = on_ready.take() {
                    ready();
                }
            }
        }
    }
}

fn subscribe(method: &str, pairs: &[String]) -> Value {
    json!({
        "method": method,
        "params": {"channel": "book", "symbol": pairs, "depth": MAX_DEPTH, "snapshot": true},
    })
}

/// The books and their streams, across connections.
struct State {
    index: HashMap<String, u16>,
    books: Vec<KrakenBook>,
    streams: Streams,
}

impl State {
    fn new(kraken: &Kraken, sink: Arc<dyn Sink>) -> Self {
        let n = kraken.pairs.len();
        Self {
            index: kraken
                .pairs
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i as u16))
                .collect(),
            books: vec![KrakenBook::new(MAX_DEPTH); n],
            streams: Streams::new(sink, n),
        }
    }

    /// The connection is gone: every book must come again from a snapshot, and until then
    /// its streams are stale (their subscribers are told).
    fn lose_all(&mut self) {
        for book in &mut self.books {
            book.unsync();
        }
        self.streams.lose_all();
    }

    /// Handles one message; returns the pairs to subscribe to again.
    fn on_text(&mut self, text: &str) -> Vec<String> {
        let mut again = Vec::new();
        let msgs = match parse(text) {
            Ok(Incoming::Book(msgs)) => msgs,
            Ok(Incoming::Trades(trades)) => {
                for t in trades {
                    if let Some(&i) = self.index.get(&t.symbol) {
                        self.streams.trade(usize::from(i), t.trade, t.ts);
                    }
                }
                self.streams.flush();
                return again;
            }
            Ok(Incoming::Tickers(tickers)) => {
                let ts = super::now_micros();
                for t in tickers {
                    if let Some(&i) = self.index.get(&t.symbol) {
                        self.streams.ticker(usize::from(i), t.ticker, ts);
                    }
                }
                self.streams.flush();
                return again;
            }
            Ok(Incoming::Refused(error)) => {
                tracing::error!(error, "kraken refused a subscription");
                return again;
            }
            Ok(Incoming::Other) => return again,
            Err(e) => {
                tracing::warn!(error = %e, "kraken message dropped");
                return again;
            }
        };
        let ts = super::now_micros();
        for msg in msgs {
            let Some(&i) = self.index.get(&msg.symbol) else {
                continue;
            };
            let i = usize::from(i);
            match self.books[i].apply(&msg) {
                Outcome::Publish { reset } => {
                    // The book's checksum is Kraken's: apply just checked they agree.
                    let view = self.books[i].view();
                    self.streams.publish(i, view, reset, ts, Some(msg.checksum));
                }
                Outcome::Resync { why } => {
                    tracing::warn!(symbol = %msg.symbol, why, "kraken book resync");
                    self.streams.lose(i);
                    again.push(msg.symbol.clone());
                }
                Outcome::Waiting => {}
            }
        }
        self.streams.flush();
        again
    }
}
