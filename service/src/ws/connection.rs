//! One client's task: reads its requests, writes its frames in batches, keeps it alive, and
//! enforces its limits. The hub hands it frames through a bounded queue; this task is the only
//! writer to its socket, so acknowledgements, snapshots and updates keep their order.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tokio_util::sync::CancellationToken;

use super::protocol::{
    CLOSE_HEARTBEAT_TIMEOUT, CLOSE_MESSAGE_TOO_BIG, CLOSE_SERVICE_RESTART, CLOSE_SLOW_CONSUMER,
    CLOSE_WRITE_TIMEOUT, ClientMessage, ErrorCode, ServerMessage, StreamAck, StreamRef,
    SubscribeRequest, UnsubscribeRequest, stream_name,
};
use crate::AppState;
use crate::feed::now_micros;
use crate::http::error_response;
use crate::hub::{Frame, StreamId, Subscriber};
use crate::market::Channel;
use crate::metrics::Metrics;

/// Frames written per flush: enough to amortize syscalls, small enough to keep reads flowing.
const MAX_BATCH: usize = 64;
/// How long a closing server waits for the client's close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
/// The hard limit on a client frame; past it the socket is closed (1009) without reading more.
const HARD_MESSAGE_LIMIT: usize = 64 * 1024;

/// Per-connection bounds, from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_subscriptions: usize,
    pub max_message_bytes: usize,
    pub max_message_rate: u32,
    pub queue_capacity: usize,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub write_timeout: Duration,
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    symbols: Option<String>,
    channels: Option<String>,
}

type Rejection = (ErrorCode, String);

/// `GET /ws`: admission (shutdown, origin, connection limit, URL subscription) happens before the
/// upgrade so that refusals are plain HTTP answers a client can read.
pub async fn ws_handler(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let limits = &state.limits;
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
    let Some(slot) = Slot::acquire(&state.connections, limits.max_connections, &state.metrics)
    else {
        return refuse(
            &state.metrics,
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooManyConnections,
            "connection limit reached; try another task or later",
        );
    };
    let tracker = state.tracker.clone();
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(HARD_MESSAGE_LIMIT)
        .max_frame_size(HARD_MESSAGE_LIMIT)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let mut conn = Connection::new(socket, state, slot);
                conn.run(initial).await;
                conn.cleanup();
            })
        })
}

fn refuse(metrics: &Metrics, status: StatusCode, code: ErrorCode, message: &str) -> Response {
    metrics.rejected(code);
    error_response(status, code, message)
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
fn resolve(
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
    let max = state.limits.max_subscriptions;
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

fn too_many(max: usize) -> Rejection {
    (
        ErrorCode::TooManySubscriptions,
        format!("at most {max} streams per connection"),
    )
}

/// Echoing untrusted input back is bounded too.
fn truncate(s: &str) -> &str {
    s.char_indices().nth(32).map_or(s, |(i, _)| &s[..i])
}

/// A held place under the connection limit, released on drop.
#[derive(Debug)]
struct Slot {
    count: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Slot {
    fn acquire(count: &Arc<AtomicUsize>, max: usize, metrics: &Arc<Metrics>) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics.connections_open.inc();
        metrics.connections_total.inc();
        Some(Self {
            count: count.clone(),
            metrics: metrics.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections_open.dec();
    }
}

/// Client message rate: a token bucket refilled continuously.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self {
            tokens: rate * 2.0,
            rate,
            burst: rate * 2.0,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the loop ended, when the socket is still worth a goodbye.
enum Stop {
    /// The peer went away or the socket failed: nothing more to send.
    Gone,
    Close(u16, &'static str),
}

struct Connection {
    id: u64,
    socket: WebSocket,
    state: AppState,
    tx: mpsc::Sender<Frame>,
    rx: mpsc::Receiver<Frame>,
    kick: CancellationToken,
    /// The last seq sent per subscribed stream; frames at or below it are skipped.
    subs: HashMap<StreamId, u64>,
    bucket: Bucket,
    last_heard: Instant,
    _slot: Slot,
}

impl Connection {
    fn new(socket: WebSocket, state: AppState, slot: Slot) -> Self {
        let (tx, rx) = mpsc::channel(state.limits.queue_capacity);
        Self {
            id: state.next_connection_id(),
            socket,
            bucket: Bucket::new(state.limits.max_message_rate),
            state,
            tx,
            rx,
            kick: CancellationToken::new(),
            subs: HashMap::new(),
            last_heard: Instant::now(),
            _slot: slot,
        }
    }

    async fn run(&mut self, initial: Vec<StreamId>) {
        let stop = match self.serve(initial).await {
            Ok(()) => return,
            Err(stop) => stop,
        };
        if let Stop::Close(code, reason) = stop {
            let close = Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }));
            if self.send(close).await.is_ok() {
                self.await_close_reply().await;
            }
        }
    }

    /// Completes the closing handshake: dropping the socket while the client still sends
    /// (pongs, say) makes the kernel answer with a reset, which discards the close frame and
    /// any data the client has not read yet.
    async fn await_close_reply(&mut self) {
        let wait = async {
            while let Some(Ok(msg)) = self.socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(CLOSE_REPLY_WAIT, wait).await;
    }

    async fn serve(&mut self, initial: Vec<StreamId>) -> Result<(), Stop> {
        if !initial.is_empty() {
            self.subscribe_streams(None, &initial, &BTreeMap::new(), None)
                .await?;
        }
        let every = self.state.limits.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Registered once: a fresh `cancelled()` per iteration would take the shared token's
        // lock twice per message for every connection.
        let shutdown = self.state.shutdown.clone();
        let kick = self.kick.clone();
        let mut shutdown = pin!(shutdown.cancelled());
        let mut kicked = pin!(kick.cancelled());
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    let msg = ServerMessage::Reconnect { reason: "server shutting down".into(), streams: self.positions() };
                    self.send_json(&msg).await?;
                    return Err(Stop::Close(CLOSE_SERVICE_RESTART, "server restart: reconnect"));
                }
                () = &mut kicked => {
                    self.state.metrics.slow_consumer_disconnects.inc();
                    let msg = ServerMessage::error(None, ErrorCode::SlowConsumer, format!(
                        "your queue of {} messages overflowed; reconnect and resume from the seqs in the last heartbeat",
                        self.state.limits.queue_capacity));
                    self.send_json(&msg).await?;
                    return Err(Stop::Close(CLOSE_SLOW_CONSUMER, "slow consumer"));
                }
                incoming = self.socket.recv() => match incoming {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        tracing::debug!(conn = self.id, error = %e, "socket read failed");
                        let too_big = matches!(
                            e.into_inner().downcast_ref::<tungstenite::Error>(),
                            Some(tungstenite::Error::Capacity(_))
                        );
                        return Err(if too_big { Stop::Close(CLOSE_MESSAGE_TOO_BIG, "message too big") } else { Stop::Gone });
                    }
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.on_message(msg).await?;
                    }
                },
                Some(frame) = self.rx.recv() => self.send_frames(frame).await?,
                _ = heartbeat.tick() => {
                    if self.last_heard.elapsed() > self.state.limits.client_timeout {
                        self.state.metrics.heartbeat_timeouts.inc();
                        return Err(Stop::Close(CLOSE_HEARTBEAT_TIMEOUT, "no pong"));
                    }
                    let msg = ServerMessage::Heartbeat { ts: now_micros(), streams: self.positions() };
                    self.send_json(&msg).await?;
                    self.send(Message::Ping(bytes::Bytes::new())).await?;
                }
            }
        }
    }

    fn positions(&self) -> BTreeMap<String, u64> {
        self.subs
            .iter()
            .map(|(s, seq)| {
                (
                    stream_name(s.channel(), self.state.hub.symbol_name(*s)),
                    *seq,
                )
            })
            .collect()
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), Stop> {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return self
                    .reject(
                        None,
                        ErrorCode::BadRequest,
                        "binary messages are not supported; send JSON text",
                    )
                    .await;
            }
            Message::Close(_) => return Err(Stop::Gone),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
        };
        if !self.bucket.take() {
            let msg = format!(
                "at most {} messages per second",
                self.state.limits.max_message_rate
            );
            return self.reject(None, ErrorCode::RateLimited, &msg).await;
        }
        let max = self.state.limits.max_message_bytes;
        if text.len() > max {
            return self
                .reject(
                    None,
                    ErrorCode::MessageTooLarge,
                    &format!("messages are limited to {max} bytes"),
                )
                .await;
        }
        match serde_json::from_str::<ClientMessage>(&text) {
            Err(e) => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").cloned());
                self.reject(id, ErrorCode::BadRequest, &format!("invalid message: {e}"))
                    .await
            }
            Ok(ClientMessage::Subscribe(req)) => self.on_subscribe(req).await,
            Ok(ClientMessage::Unsubscribe(req)) => self.on_unsubscribe(req).await,
            Ok(ClientMessage::Ping { id }) => {
                self.send_json(&ServerMessage::Pong {
                    id,
                    ts: now_micros(),
                })
                .await
            }
            Ok(ClientMessage::List { id }) => {
                let msg = ServerMessage::List {
                    id,
                    symbols: self.state.hub.symbols().to_vec(),
                    channels: Channel::ALL.to_vec(),
                    subscriptions: self.positions().into_keys().collect(),
                };
                self.send_json(&msg).await
            }
        }
    }

    async fn reject(
        &mut self,
        id: Option<Value>,
        code: ErrorCode,
        message: &str,
    ) -> Result<(), Stop> {
        self.state.metrics.client_error(code);
        self.send_json(&ServerMessage::error(id, code, message))
            .await
    }

    async fn on_subscribe(&mut self, req: SubscribeRequest) -> Result<(), Stop> {
        let held = self.subs.len();
        let streams = match resolve(&self.state, &req.symbols, req.channels.as_deref(), 0) {
            Ok(s) => s,
            Err((code, message)) => return self.reject(req.id, code, &message).await,
        };
        let new = streams
            .iter()
            .filter(|s| !self.subs.contains_key(s))
            .count();
        if held + new > self.state.limits.max_subscriptions {
            let (code, message) = too_many(self.state.limits.max_subscriptions);
            return self.reject(req.id, code, &message).await;
        }
        for key in req.resume.keys() {
            let known = streams
                .iter()
                .any(|s| stream_name(s.channel(), self.state.hub.symbol_name(*s)) == *key);
            if !known {
                let message = format!(
                    "resume key {:?} is not one of the streams subscribed (channel:SYMBOL)",
                    truncate(key)
                );
                return self.reject(req.id, ErrorCode::BadRequest, &message).await;
            }
        }
        self.subscribe_streams(req.id, &streams, &req.resume, req.epoch.as_deref())
            .await
    }

    async fn subscribe_streams(
        &mut self,
        id: Option<Value>,
        streams: &[StreamId],
        resume: &BTreeMap<String, u64>,
        epoch: Option<&str>,
    ) -> Result<(), Stop> {
        let hub = self.state.hub.clone();
        let same_epoch = epoch.is_none_or(|e| e == hub.epoch());
        let mut acks = Vec::with_capacity(streams.len());
        let mut follow = Vec::new();
        for &stream in streams {
            let symbol = hub.symbol_name(stream).to_string();
            if let Some(&seq) = self.subs.get(&stream) {
                acks.push(StreamAck {
                    channel: stream.channel(),
                    symbol,
                    seq,
                    recovered: None,
                });
                continue;
            }
            let wanted = resume.get(&stream_name(stream.channel(), &symbol)).copied();
            let sub = Subscriber {
                conn: self.id,
                tx: self.tx.clone(),
                kick: self.kick.clone(),
            };
            let got = hub.subscribe(stream, sub, wanted.filter(|_| same_epoch));
            let recovered = wanted.map(|_| got.recovered == Some(true));
            let start = match (got.recovered, wanted) {
                (Some(true), Some(last)) => last,
                _ => got.seq,
            };
            self.subs.insert(stream, start);
            acks.push(StreamAck {
                channel: stream.channel(),
                symbol,
                seq: got.seq,
                recovered,
            });
            follow.push((stream, got.snapshot, got.replay));
        }
        let ack = ServerMessage::Subscribed {
            id,
            epoch: hub.epoch().to_string(),
            streams: acks,
        };
        self.send_json(&ack).await?;
        for (_, snapshot, replay) in follow {
            if let Some(text) = snapshot {
                self.send(Message::Text(text)).await?;
            }
            for frame in replay {
                if accept(&mut self.subs, &frame) {
                    self.send(Message::Text(frame.text)).await?;
                }
            }
        }
        Ok(())
    }

    async fn on_unsubscribe(&mut self, req: UnsubscribeRequest) -> Result<(), Stop> {
        let streams = match resolve(&self.state, &req.symbols, req.channels.as_deref(), 0) {
            Ok(s) => s,
            Err((code, message)) => return self.reject(req.id, code, &message).await,
        };
        let mut removed = Vec::new();
        for stream in streams {
            if self.subs.remove(&stream).is_some() {
                self.state.hub.unsubscribe(stream, self.id);
                removed.push(StreamRef {
                    channel: stream.channel(),
                    symbol: self.state.hub.symbol_name(stream).to_string(),
                });
            }
        }
        self.send_json(&ServerMessage::Unsubscribed {
            id: req.id,
            streams: removed,
        })
        .await
    }

    /// Writes `first` and whatever else is already queued, then flushes once. A write that
    /// cannot finish at once waits for the socket, bounded by the write timeout and cut short
    /// when the hub gives up on this client.
    async fn send_frames(&mut self, first: Frame) -> Result<(), Stop> {
        let metrics = self.state.metrics.clone();
        metrics
            .send_lag
            .observe_micros((now_micros() - first.ts).max(0) as u64);
        let Self {
            socket,
            rx,
            subs,
            kick,
            ..
        } = self;
        let batch = async {
            let (mut count, mut bytes) = (0u64, 0u64);
            let mut next = Some(first);
            while let Some(frame) = next.take() {
                if accept(subs, &frame) {
                    bytes += frame.text.len() as u64;
                    count += 1;
                    socket.feed(Message::Text(frame.text)).await?;
                }
                if count < MAX_BATCH as u64 {
                    next = rx.try_recv().ok();
                }
            }
            let flushed = socket.flush().await;
            metrics.messages_sent.inc_by(count);
            metrics.bytes_sent.inc_by(bytes);
            flushed
        };
        let mut batch = pin!(batch);
        // Most batches complete on the first poll; only a blocked one pays for a timer.
        let result = match poll_fn(|cx| Poll::Ready(batch.as_mut().poll(cx))).await {
            Poll::Ready(r) => r.map_err(|_| Stop::Gone),
            Poll::Pending => tokio::select! {
                r = &mut batch => r.map_err(|_| Stop::Gone),
                () = kick.cancelled() => Ok(()),
                () = tokio::time::sleep(self.state.limits.write_timeout) => Err(Stop::Close(CLOSE_WRITE_TIMEOUT, "write timeout")),
            },
        };
        result
    }

    async fn send_json(&mut self, msg: &ServerMessage) -> Result<(), Stop> {
        self.send(Message::Text(msg.to_json().into())).await
    }

    async fn send(&mut self, msg: Message) -> Result<(), Stop> {
        let len = match &msg {
            Message::Text(t) => t.len() as u64,
            _ => 0,
        };
        match timeout(self.state.limits.write_timeout, self.socket.send(msg)).await {
            Ok(Ok(())) => {
                self.state.metrics.messages_sent.inc();
                self.state.metrics.bytes_sent.inc_by(len);
                Ok(())
            }
            Ok(Err(_)) => Err(Stop::Gone),
            Err(_) => Err(Stop::Close(CLOSE_WRITE_TIMEOUT, "write timeout")),
        }
    }

    fn cleanup(&mut self) {
        for stream in self.subs.keys() {
            self.state.hub.unsubscribe(*stream, self.id);
        }
        self.subs.clear();
    }
}

/// Whether a frame is news for this client, recording it as sent if so.
fn accept(subs: &mut HashMap<StreamId, u64>, frame: &Frame) -> bool {
    match subs.get_mut(&frame.stream) {
        Some(last) if frame.seq > *last => {
            *last = frame.seq;
            true
        }
        _ => false,
    }
}
