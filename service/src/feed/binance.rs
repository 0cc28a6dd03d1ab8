//! `--source binance`: Binance spot's diff-depth, trade and 24 h ticker streams (all
//! instruments on one combined-stream connection) and REST book snapshots (`GET
//! /api/v3/depth`), kept by [`crate::venue::binance::DepthBook`] and published as our book,
//! trades, candles and ticker streams.
//!
//! Binance's limits, obeyed by construction:
//! - 1024 streams per connection: three per instrument, and `Config::validate` refuses more
//!   than [`MAX_INSTRUMENTS`] instruments.
//! - 5 incoming messages per second: the streams are named in the URL, so the only messages
//!   we send are the pongs answering Binance's pings (one per 20 s).
//! - REST weight (6,000 per minute per IP; a 1,000-level snapshot weighs 10): snapshots are
//!   fetched one at a time, at most one per [`SNAPSHOT_SPACING`] (half the budget), and a
//!   `429`/`418` answer's `Retry-After` is waited out before the next request.
//!
//! A gap in one instrument's update ids resyncs that instrument alone (a new snapshot; its
//! clients get a reset); a lost or silent connection resyncs them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::net;
use super::streams::Streams;
use crate::broker::Sink;
use crate::venue::binance::{
    DepthBook, DepthSnapshot, Incoming, Instrument, Step, parse, parse_snapshot,
};

/// The streams of each instrument: book diffs, trades, the rolling 24 h ticker.
pub const STREAMS: [&str; 3] = ["depth@100ms", "trade", "ticker"];
/// Binance takes 1024 streams on a connection.
pub const MAX_INSTRUMENTS: usize = 1024 / STREAMS.len();

/// Binance pings every 20 s: nothing at all for this long and the connection is down.
pub const SILENCE: Duration = Duration::from_secs(30);
/// A diff event is a few KiB; this bounds a broken peer.
const MAX_MESSAGE: usize = 1 << 20;
/// Levels a side asked of the snapshot and kept: the top 100 we publish stay right while
/// up to 900 better levels are removed between two snapshots.
pub const SNAPSHOT_LIMIT: usize = 1000;
/// Between two snapshot requests: weight 10 each, so at most 3,000 of the 6,000 a minute.
pub const SNAPSHOT_SPACING: Duration = Duration::from_millis(200);
/// A snapshot of 1,000 levels a side is about 70 KB; `exchangeInfo` of 341 instruments about
/// 1 MB.
const MAX_BODY_BYTES: usize = 4 << 20;
const REST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Binance {
    ws_url: String,
    rest_url: String,
    instruments: Vec<Instrument>,
    tls: Option<Arc<rustls_client::ClientConfig>>,
}

impl Binance {
    /// `symbols` were checked by `Config::validate`; `tls` is [`net::client_config`]'s answer
    /// for both URLs.
    pub fn new(
        ws_url: &str,
        rest_url: &str,
        symbols: &[String],
        tls: Option<Arc<rustls_client::ClientConfig>>,
    ) -> Self {
        Self {
            ws_url: ws_url.trim_end_matches('/').to_string(),
            rest_url: rest_url.trim_end_matches('/').to_string(),
            instruments: symbols
                .iter()
                .filter_map(|s| Instrument::parse(s))
                .collect(),
            tls,
        }
    }

    pub fn symbols(&self) -> Vec<String> {
        self.instruments.iter().map(|i| i.name.clone()).collect()
    }

    /// Binance's books are numbered here, by this process: positions mean nothing elsewhere.
    pub fn epoch(&self) -> String {
        format!("binance-{}", super::now_micros())
    }

    /// The combined-stream URL of every instrument's diff-depth stream.
    fn stream_url(&self) -> String {
        let streams: Vec<String> = self
            .instruments
            .iter()
            .flat_map(|i| STREAMS.map(|kind| format!("{}@{kind}", i.stream)))
            .collect();
        format!("{}/stream?streams={}", self.ws_url, streams.join("/"))
    }

    pub async fn run(
        self,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        on_ready: impl FnOnce(),
    ) {
        let rest = match net::http_client(self.tls.as_ref(), REST_TIMEOUT) {
            Ok(client) => Snapshots {
                client,
                base: self.rest_url.clone(),
            },
            Err(e) => {
                tracing::error!(error = %e, "binance: no HTTP client; the source stays down");
                return;
            }
        };
        let mut state = State::new(&self.instruments, sink.clone());
        // An instrument Binance does not list gets no events at all, not an error: ask once.
        tokio::select! {
            () = shutdown.cancelled() => return,
            unlisted = rest.unlisted(&self.instruments) => {
                for (i, why) in unlisted {
                    tracing::error!(symbol = %self.instruments[i].symbol, why, "binance does not list this instrument; its streams stay stale");
                    state.unlisted[i] = true;
                }
            }
        }
        let mut on_ready = Some(on_ready);
        let url = self.stream_url();
        let mut retry = net::Retry::new("binance", &self.ws_url, sink.metrics());
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.session(&url, &rest, &mut state, &mut on_ready) => outcome,
            };
            state.lose_all();
            if !retry.wait(outcome, &shutdown).await {
                return;
            }
        }
    }

    /// One connection: read the streams, fetch snapshots as the books ask, until the
    /// connection fails or goes silent. `Ok` when it had worked.
    async fn session(
        &self,
        url: &str,
        rest: &Snapshots,
        state: &mut State,
        on_ready: &mut Option<impl FnOnce()>,
    ) -> Result<(), String> {
        let mut ws = net::websocket(url, MAX_MESSAGE, self.tls.as_ref()).await?;
        let n = self.instruments.len();
        let (ask, asked) = mpsc::channel(n);
        let (answer, mut answers) = mpsc::channel(n);
        let fetcher = rest.serve(&self.instruments, asked, answer);
        tokio::pin!(fetcher);
        let mut reader = net::Reader::new(SILENCE);
        loop {
            let fetch = tokio::select! {
                read = reader.next(&mut ws) => match read {
                    Err(end) => return end,
                    Ok(net::Read::Message(Message::Text(text))) => state.on_text(&text),
                    Ok(net::Read::Message(_)) => Vec::new(),
                    Ok(net::Read::CandleTick) => {
                        state.streams.close_candles(super::now_micros());
                        state.streams.flush();
                        Vec::new()
                    }
                },
                Some((i, snapshot)) = answers.recv() => state.on_snapshot(i, snapshot),
                () = &mut fetcher => return Err("the snapshot fetcher stopped".into()),
            };
            for i in fetch {
                // At most one request per instrument is outstanding, so this never fills.
                if ask.try_send(i).is_err() {
                    return Err("the snapshot queue is full".into());
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

/// Why a snapshot did not come.
#[derive(Debug)]
enum FetchError {
    /// `429` or `418`: wait this long before any request.
    RetryAfter(Duration),
    /// Binance refuses the instrument (`400`, for example `-1121 Invalid symbol`).
    Refused(String),
    /// Anything else: retried after a pause.
    Failed(String),
}

/// Binance's REST snapshots, one request at a time.
struct Snapshots {
    client: reqwest::Client,
    base: String,
}

impl Snapshots {
    /// Answers the requests on `asked` in order, paced by [`SNAPSHOT_SPACING`] and any
    /// `Retry-After`. A refused instrument is answered with `Err` and not asked again.
    async fn serve(
        &self,
        instruments: &[Instrument],
        mut asked: mpsc::Receiver<usize>,
        answer: mpsc::Sender<(usize, Result<DepthSnapshot, String>)>,
    ) {
        let mut next = tokio::time::Instant::now();
        while let Some(i) = asked.recv().await {
            let mut failures = 0u32;
            let result = loop {
                tokio::time::sleep_until(next).await;
                next = tokio::time::Instant::now() + SNAPSHOT_SPACING;
                match self.fetch(&instruments[i]).await {
                    Ok(snapshot) => break Ok(snapshot),
                    Err(FetchError::Refused(why)) => break Err(why),
                    Err(FetchError::RetryAfter(wait)) => {
                        tracing::warn!(?wait, "binance asks us to slow down; waiting");
                        next = tokio::time::Instant::now() + wait;
                    }
                    Err(FetchError::Failed(why)) => {
                        tracing::warn!(symbol = %instruments[i].symbol, why, "binance snapshot failed");
                        next = tokio::time::Instant::now()
                            + net::backoff(failures).max(SNAPSHOT_SPACING);
                        failures = failures.saturating_add(1);
                    }
                }
            };
            if answer.send((i, result)).await.is_err() {
                return;
            }
        }
    }

    /// The instruments Binance does not list for trading, with why, from `GET
    /// /api/v3/exchangeInfo?symbols=[...]`. Binance refuses the whole request when one name is
    /// unknown, so a refused group is split in two and each half asked again: k unknown names
    /// among n cost about 2k log2(n) requests (each weighs 20 of the 6,000 a minute), paced
    /// like snapshots. If Binance cannot be asked, what is known so far: the check is a
    /// courtesy, the streams are the truth.
    async fn unlisted(&self, instruments: &[Instrument]) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut groups: Vec<Vec<usize>> = vec![(0..instruments.len()).collect()];
        let mut asked = false;
        while let Some(group) = groups.pop() {
            if std::mem::replace(&mut asked, true) {
                tokio::time::sleep(SNAPSHOT_SPACING).await;
            }
            let names: Vec<&str> = group
                .iter()
                .map(|&i| instruments[i].symbol.as_str())
                .collect();
            let query = serde_json::to_string(&names).unwrap_or_default();
            match self.exchange_info(&[("symbols", &query)]).await {
                Ok(listed) => out.extend(group.iter().filter_map(|&i| {
                    match listed.iter().find(|(s, _)| *s == instruments[i].symbol) {
                        Some((_, status)) if status == "TRADING" => None,
                        Some((_, status)) => Some((i, format!("status {status}"))),
                        None => Some((i, "not in exchangeInfo".into())),
                    }
                })),
                Err(FetchError::Refused(why)) if group.len() == 1 => out.push((group[0], why)),
                Err(FetchError::Refused(_)) => {
                    let (first, second) = group.split_at(group.len().div_ceil(2));
                    groups.push(second.to_vec());
                    groups.push(first.to_vec());
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "binance exchangeInfo unavailable; instruments not checked");
                    break;
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// `(symbol, status)` of each instrument `GET /api/v3/exchangeInfo` lists.
    async fn exchange_info(
        &self,
        query: &[(&str, &str)],
    ) -> Result<Vec<(String, String)>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Info {
            symbols: Vec<Listed>,
        }
        #[derive(serde::Deserialize)]
        struct Listed {
            symbol: String,
            status: String,
        }
        let url = format!("{}/api/v3/exchangeInfo", self.base);
        let response = self
            .client
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| FetchError::Failed(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let text = read_body(response).await?;
        match status {
            200 => serde_json::from_str::<Info>(&text)
                .map(|info| {
                    info.symbols
                        .into_iter()
                        .map(|l| (l.symbol, l.status))
                        .collect()
                })
                .map_err(|e| FetchError::Failed(e.to_string())),
            400 => Err(FetchError::Refused(net::excerpt(&text).to_string())),
            _ => Err(FetchError::Failed(format!("HTTP {status}"))),
        }
    }

    async fn fetch(&self, instrument: &Instrument) -> Result<DepthSnapshot, FetchError> {
        let url = format!(
            "{}/api/v3/depth?symbol={}&limit={SNAPSHOT_LIMIT}",
            self.base, instrument.symbol
        );
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| FetchError::Failed(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        if status == 429 || status == 418 {
            let seconds = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(60);
            return Err(FetchError::RetryAfter(Duration::from_secs(
                seconds.clamp(1, 3600),
            )));
        }
        let text = read_body(response).await?;
        match status {
            200 => parse_snapshot(&text).map_err(|e| FetchError::Failed(e.to_string())),
            400..=499 => Err(FetchError::Refused(format!(
                "HTTP {status}: {}",
                net::excerpt(&text)
            ))),
            _ => Err(FetchError::Failed(format!(
                "HTTP {status}: {}",
                net::excerpt(&text)
            ))),
        }
    }
}

/// A REST answer's body, at most [`MAX_BODY_BYTES`].
async fn read_body(mut response: reqwest::Response) -> Result<String, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Failed(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(FetchError::Failed(format!(
                "an answer larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The books and their streams, across connections.
struct State {
    index: HashMap<String, u16>,
    books: Vec<DepthBook>,
    /// Instruments Binance refused: not asked for again until the next connection.
    refused: Vec<bool>,
    /// Instruments Binance does not list (or not for trading): never asked for.
    unlisted: Vec<bool>,
    /// Binance's names, for log lines.
    symbols: Vec<String>,
    streams: Streams,
}

impl State {
    fn new(instruments: &[Instrument], sink: Arc<dyn Sink>) -> Self {
        let n = instruments.len();
        Self {
            index: instruments
                .iter()
                .enumerate()
                .map(|(i, inst)| (inst.symbol.clone(), i as u16))
                .collect(),
            books: vec![DepthBook::new(SNAPSHOT_LIMIT); n],
            refused: vec![false; n],
            unlisted: vec![false; n],
            symbols: instruments.iter().map(|i| i.symbol.clone()).collect(),
            streams: Streams::new(sink, n),
        }
    }

    fn lose_all(&mut self) {
        for book in &mut self.books {
            book.restart();
        }
        self.refused.fill(false);
        self.streams.lose_all();
    }

    /// Handles one stream message; returns the instruments whose snapshot to fetch.
    fn on_text(&mut self, text: &str) -> Vec<usize> {
        let event = match parse(text) {
            Ok(Incoming::Depth(event)) => event,
            Ok(Incoming::Trade(t)) => {
                if let Some(&i) = self.index.get(&t.symbol) {
                    self.streams.trade(usize::from(i), t.trade, t.ts);
                    self.streams.flush();
                }
                return Vec::new();
            }
            Ok(Incoming::Ticker(t)) => {
                if let Some(&i) = self.index.get(&t.symbol) {
                    self.streams
                        .ticker(usize::from(i), t.ticker, super::now_micros());
                    self.streams.flush();
                }
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, "binance message dropped");
                return Vec::new();
            }
        };
        let Some(&i) = self.index.get(&event.symbol) else {
            return Vec::new();
        };
        let i = usize::from(i);
        let step = self.books[i].on_update(event);
        self.step(i, step)
    }

    fn on_snapshot(&mut self, i: usize, snapshot: Result<DepthSnapshot, String>) -> Vec<usize> {
        match snapshot {
            Ok(snapshot) => {
                let step = self.books[i].on_snapshot(snapshot);
                self.step(i, step)
            }
            Err(why) => {
                tracing::error!(symbol = %self.symbols[i], why, "binance refused an instrument's snapshot");
                self.refused[i] = true;
                Vec::new()
            }
        }
    }

    fn step(&mut self, i: usize, step: Step) -> Vec<usize> {
        match step {
            Step::FetchSnapshot if !self.refused[i] && !self.unlisted[i] => return vec![i],
            Step::FetchSnapshot | Step::Continue => {}
            Step::Publish { reset } => {
                self.streams
                    .publish(i, self.books[i].view(), reset, super::now_micros(), None);
                self.streams.flush();
            }
            Step::Gap { why } => {
                tracing::warn!(symbol = %self.symbols[i], why, "binance book resync");
                self.streams.lose(i);
            }
        }
        Vec::new()
    }
}
