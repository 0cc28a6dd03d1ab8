//! `--source kraken`: Kraken's public WebSocket v2 `book` channel (depth 100) for the
//! instruments of `--symbols`, kept by [`crate::venue::kraken`] and published as our book
//! streams.
//!
//! The connection is retried with capped exponential backoff and full jitter; a connection
//! that says nothing (Kraken sends a heartbeat about once a second) for [`SILENCE`] is treated
//! as down. Losing the connection loses every book: each is published again, as a reset, from
//! the snapshot the new subscription brings. A checksum mismatch loses one book: that symbol
//! alone is unsubscribed and subscribed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::book::{Depths, MAX_DEPTH};
use crate::config::normalize_symbol;
use crate::hub::{Batch, Hub};
use crate::market::{Channel, Event, Payload};
use crate::venue::kraken::{Incoming, KrakenBook, Outcome, parse};

/// No message for this long: the connection is down.
pub const SILENCE: Duration = Duration::from_secs(10);
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
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

    pub async fn run(self, hub: Arc<Hub>, shutdown: CancellationToken, on_ready: impl FnOnce()) {
        let mut state = State::new(&self, hub);
        // Nothing is live until its first snapshot.
        state.lose_all();
        let mut on_ready = Some(on_ready);
        let mut attempt: u32 = 0;
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&mut state, &mut on_ready) => outcome,
            };
            state.hub_metrics().venue_up.set(0);
            state.lose_all();
            match outcome {
                Ok(()) => attempt = 0,
                Err(e) => tracing::warn!(error = %e, url = %self.url, "kraken connection lost"),
            }
            state.hub_metrics().venue_reconnects.inc();
            let delay = backoff(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
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
        let mut ws = super::net::websocket(&self.url, MAX_MESSAGE, self.tls.as_ref()).await?;
        ws.send(Message::text(
            subscribe("subscribe", &self.pairs).to_string(),
        ))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
        let mut worked = false;
        loop {
            let msg = match tokio::time::timeout(SILENCE, ws.next()).await {
                Err(_) => return Err(format!("silent for {SILENCE:?}")),
                Ok(None) => return if worked { Ok(()) } else { Err("closed".into()) },
                Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                Ok(Some(Ok(msg))) => msg,
            };
            let Message::Text(text) = msg else { continue };
            for pair in state.on_text(&text) {
                let again = [pair];
                for method in ["unsubscribe", "subscribe"] {
                    ws.send(Message::text(subscribe(method, &again).to_string()))
                        .await
                        .map_err(|e| format!("resubscribe: {e}"))?;
                }
            }
            if !worked && state.any_published() {
                worked = true;
                state.hub_metrics().venue_up.set(1);
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

/// Full jitter: uniform in [0, min(cap, base * 2^attempt)).
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_CAP.min(BACKOFF_BASE.saturating_mul(1 << attempt.min(16)));
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // The clock's low bits are jitter enough here: no two tasks retry in step.
    let noise = super::now_micros()
        .unsigned_abs()
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Duration::from_nanos(noise % nanos.max(1))
}

/// The books and the streams' positions, across connections.
struct State {
    hub: Arc<Hub>,
    index: HashMap<String, u16>,
    books: Vec<KrakenBook>,
    depths: Vec<Depths>,
    /// The last seq of each book channel, per symbol (0: nothing published yet).
    seqs: Vec<[u64; 4]>,
    batch: Batch,
    events: Vec<Event>,
}

impl State {
    fn new(kraken: &Kraken, hub: Arc<Hub>) -> Self {
        let n = kraken.pairs.len();
        Self {
            hub,
            index: kraken
                .pairs
                .iter()
                .enumerate()
                .map(|(i, p)| (p.clone(), i as u16))
                .collect(),
            books: vec![KrakenBook::new(MAX_DEPTH); n],
            depths: vec![Depths::default(); n],
            seqs: vec![[0; 4]; n],
            batch: Batch::default(),
            events: Vec::new(),
        }
    }

    fn hub_metrics(&self) -> &crate::metrics::Metrics {
        self.hub.metrics()
    }

    fn any_published(&self) -> bool {
        self.seqs.iter().any(|s| s[0] > 0)
    }

    /// The connection is gone: every book must come again from a snapshot, and until then
    /// its streams are stale (their subscribers are told).
    fn lose_all(&mut self) {
        for (i, book) in self.books.iter_mut().enumerate() {
            book.unsync();
            self.hub.set_live(i as u16, false);
        }
    }

    /// Handles one message; returns the pairs to subscribe to again.
    fn on_text(&mut self, text: &str) -> Vec<String> {
        let mut again = Vec::new();
        let msgs = match parse(text) {
            Ok(Incoming::Book(msgs)) => msgs,
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
        let mut live = Vec::new();
        for msg in msgs {
            let Some(&i) = self.index.get(&msg.symbol) else {
                continue;
            };
            let i = usize::from(i);
            match self.books[i].apply(&msg) {
                Outcome::Publish { reset } => {
                    let view = self.books[i].view().clone();
                    let updates = self.depths[i].next(view, reset);
                    for (t, (channel, update)) in
                        Channel::BOOKS.into_iter().zip(updates).enumerate()
                    {
                        self.seqs[i][t] += 1;
                        self.events.push(Event {
                            channel,
                            symbol: i as u16,
                            seq: self.seqs[i][t],
                            ts,
                            payload: Payload::Book(update),
                        });
                    }
                    live.push(i);
                }
                Outcome::Resync { why } => {
                    tracing::warn!(symbol = %msg.symbol, why, "kraken book resync");
                    self.hub_metrics().book_resyncs.inc();
                    self.hub.set_live(i as u16, false);
                    again.push(msg.symbol.clone());
                }
                Outcome::Waiting => {}
            }
        }
        if !self.events.is_empty() {
            self.hub.publish_batch(&mut self.events, &mut self.batch);
        }
        // After the (reset) snapshot went out, so a client told `live` already holds it.
        for i in live {
            self.hub.set_live(i as u16, true);
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in [0, 3, 30, u32::MAX] {
            let d = backoff(attempt);
            assert!(d < BACKOFF_CAP, "{attempt}: {d:?}");
        }
        assert!(backoff(0) < BACKOFF_BASE);
    }
}
