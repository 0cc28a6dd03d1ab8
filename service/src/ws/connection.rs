//! One client's task. It reads and answers the client's requests, sends heartbeats, finishes
//! writes the socket could not take at once, and says goodbye. Data frames do not pass through
//! it: the hub writes them to the socket directly (see [`Peer`]).

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use super::deflate::{self, Compressor};
use super::frame::{self, ClientFrame, OP_BINARY, OP_PING, OP_PONG};
use super::message::{Input, Reassembly};
use super::peer::{Drain, Dropped, Peer};
use super::protocol::{
    CLOSE_HEARTBEAT_TIMEOUT, CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY, CLOSE_SERVICE_RESTART,
    CLOSE_SLOW_CONSUMER, CLOSE_WRITE_TIMEOUT, ClientMessage, ErrorCode, RequestId, ServerMessage,
    StreamAck, StreamRef, SubscribeRequest, UnsubscribeRequest, stream_name,
};
use super::upgrade::{Slot, resolve, too_many, truncate};
use crate::AppState;
use crate::feed::now_micros;
use crate::hub::{Frame, Outlet, StreamId};
use crate::market::Channel;

/// How long a closing server waits for the client's close frame once its goodbye is written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The hard limit on a client frame or message; past it the socket is closed with 1009.
pub const HARD_MESSAGE_LIMIT: usize = 64 * 1024;
/// Bytes read per wake-up before requests are handled, for fairness between clients.
const READ_BUDGET: usize = 64 * 1024;
const PING: [u8; 2] = [0x80 | OP_PING, 0];

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer went away or the socket failed: nothing more to send.
    Gone,
    /// The client sent a close frame with this code.
    ClientClosed(u16),
    Shutdown,
    /// The task is being stopped: this connection's turn in the drain window came.
    Drained,
    Kicked,
    /// A stream jumped ahead (the feed skipped): resume for a fresh snapshot.
    Interrupted,
    HeartbeatTimeout,
    WriteTimeout,
    /// A protocol violation or an oversized message, with its close code.
    Violation(u16),
}

impl From<Dropped> for End {
    fn from(d: Dropped) -> End {
        match d {
            Dropped::SlowConsumer => End::Kicked,
            Dropped::Interrupted => End::Interrupted,
        }
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
        Self::with_burst(rate, rate.saturating_mul(2))
    }

    fn with_burst(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst);
        Self {
            tokens: burst,
            rate: f64::from(rate),
            burst,
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

struct Connection {
    state: AppState,
    peer: Arc<Peer>,
    /// Bytes of an incomplete client frame.
    input: Vec<u8>,
    /// A fragmented message being assembled: its opcode and bytes so far.
    messages: Reassembly,
    bucket: Bucket,
    /// Refusals the client may earn: a burst of five seconds' worth of messages, refilled at
    /// the message rate. Spent, the connection is closed with 1008, so a client that floods
    /// garbage without reading cannot pile error replies up in the kernel and in our queue.
    refusals: Bucket,
    /// Set when the refusal allowance ran out.
    abusive: bool,
    last_heard: Instant,
    /// Saying goodbye: requests are no longer answered.
    closing: bool,
    /// Client messages may be compressed (permessage-deflate was agreed).
    inflate: bool,
    _slot: Slot,
    _compressed: Option<Slot>,
}

pub(super) async fn serve(
    state: AppState,
    stream: TcpStream,
    early: Bytes,
    initial: Vec<StreamId>,
    slot: Slot,
    compression: Option<(Compressor, Slot)>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let id = state.next_connection_id();
    let (compressor, compressed) = compression.unzip();
    let inflate = compressor.is_some();
    let peer = Arc::new(Peer::new(
        id,
        stream,
        state.config.queue_capacity,
        state.metrics.clone(),
        compressor,
    ));
    // `early` borrows hyper's whole read buffer: copy what it holds and let the buffer go.
    let input = early.to_vec();
    drop(early);
    let mut conn = Connection {
        bucket: Bucket::new(state.config.max_message_rate),
        refusals: Bucket::with_burst(
            state.config.max_message_rate,
            5 * state.config.max_message_rate,
        ),
        abusive: false,
        state,
        peer,
        input,
        messages: Reassembly::new(HARD_MESSAGE_LIMIT),
        last_heard: Instant::now(),
        closing: false,
        inflate,
        _slot: slot,
        _compressed: compressed,
    };
    let end = conn.run(initial).await;
    conn.finish(end).await;
    for (stream, _) in conn.peer.positions() {
        conn.state.hub.unsubscribe(stream, id);
    }
}

impl Connection {
    async fn run(&mut self, initial: Vec<StreamId>) -> End {
        if !initial.is_empty() {
            self.subscribe_streams(None, &initial, &BTreeMap::new(), None);
        }
        if let Some(end) = self.process_input() {
            return end;
        }
        let every = self.state.config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = self.state.shutdown.clone();
        let mut shutdown = pin!(shutdown.cancelled());
        let draining = self.state.draining.clone();
        let mut draining = pin!(draining.cancelled());
        // Armed when the drain starts, for this connection's moment in the window.
        let mut goodbye = pin!(tokio::time::sleep(Duration::from_secs(86_400 * 365)));
        let mut armed = false;
        let peer = self.peer.clone();
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return End::Shutdown,
                () = &mut draining, if !armed => {
                    armed = true;
                    let window = self.state.config.drain_window;
                    goodbye.as_mut().reset(Instant::now() + crate::drain::offset(self.peer.id(), window));
                }
                () = &mut goodbye, if armed => return End::Drained,
                () = peer.wake.notified() => {
                    if let Some(dropped) = peer.dropped() {
                        return dropped.into();
                    }
                    if let Err(end) = self.drain().await {
                        return end;
                    }
                }
                ready = peer.stream.readable() => {
                    if ready.is_err() {
                        return End::Gone;
                    }
                    if let Some(end) = self.read_input() {
                        return end;
                    }
                }
                _ = heartbeat.tick() => {
                    if self.last_heard.elapsed() > self.state.config.client_timeout {
                        return End::HeartbeatTimeout;
                    }
                    self.peer.release_idle_compressor();
                    let msg = ServerMessage::Heartbeat { ts: now_micros(), streams: self.positions() };
                    self.reply(&msg);
                    self.peer.send(Bytes::from_static(&PING));
                }
            }
        }
    }

    /// Writes what the socket could not take at once, waiting for it to become writable. A
    /// socket that accepts nothing for the write timeout ends the connection.
    async fn drain(&mut self) -> Result<(), End> {
        let peer = self.peer.clone();
        loop {
            match peer.drain() {
                Drain::Done => return Ok(()),
                Drain::Failed => return Err(End::Gone),
                Drain::Blocked => {}
            }
            if !self.closing
                && let Some(dropped) = peer.dropped()
            {
                return Err(dropped.into());
            }
            tokio::select! {
                ready = peer.stream.writable() => ready.map_err(|_| End::Gone)?,
                () = tokio::time::sleep(self.state.config.write_timeout) => return Err(End::WriteTimeout),
                () = peer.wake.notified(), if !self.closing => {}
            }
        }
    }

    /// Reads what the socket has (up to a budget) and handles every complete frame.
    fn read_input(&mut self) -> Option<End> {
        let mut chunk = [0u8; 4096];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.peer.stream.try_read(&mut chunk) {
                Ok(0) => return Some(End::Gone),
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Some(End::Gone),
            }
        }
        self.process_input()
    }

    fn process_input(&mut self) -> Option<End> {
        let mut at = 0;
        let end = loop {
            match frame::parse_with(&self.input[at..], HARD_MESSAGE_LIMIT, self.inflate) {
                Ok(Some((f, used))) => {
                    at += used;
                    self.last_heard = Instant::now();
                    if let Some(end) = self.on_frame(f) {
                        break Some(end);
                    }
                    if self.abusive {
                        self.state.metrics.abuse_disconnects.inc();
                        break Some(End::Violation(CLOSE_POLICY));
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(End::Violation(e.close_code())),
            }
        };
        self.input.drain(..at);
        if self.input.is_empty() {
            // Idle connections should not keep a read buffer.
            self.input = Vec::new();
        }
        end
    }

    fn on_frame(&mut self, f: ClientFrame) -> Option<End> {
        match self.messages.push(f) {
            Ok(Input::Ping(payload)) => {
                self.peer.send(frame::server_frame(OP_PONG, &payload));
                None
            }
            Ok(Input::Pong | Input::Pending) => None,
            Ok(Input::Close(Ok(code))) => Some(End::ClientClosed(code)),
            Ok(Input::Close(Err(code))) | Err(code) => Some(End::Violation(code)),
            Ok(Input::Message {
                opcode,
                payload,
                compressed: false,
            }) => self.on_message(opcode, payload),
            // Inflated up to the hard limit: a bomb ends the connection (1009) at that size;
            // what is merely over `--max-message-bytes` is answered like any large message.
            Ok(Input::Message {
                opcode,
                payload,
                compressed: true,
            }) => match deflate::inflate(&payload, HARD_MESSAGE_LIMIT) {
                Ok(payload) => self.on_message(opcode, payload),
                Err(e) => Some(End::Violation(e.close_code())),
            },
        }
    }

    fn on_message(&mut self, opcode: u8, payload: Vec<u8>) -> Option<End> {
        if self.closing {
            return None;
        }
        if opcode == OP_BINARY {
            self.reject(
                None,
                ErrorCode::BadRequest,
                "binary messages are not supported; send JSON text",
            );
            return None;
        }
        let Ok(text) = String::from_utf8(payload) else {
            return Some(End::Violation(1007));
        };
        if !self.bucket.take() {
            let msg = format!(
                "at most {} messages per second",
                self.state.config.max_message_rate
            );
            self.reject(None, ErrorCode::RateLimited, &msg);
            return None;
        }
        let max = self.state.config.max_message_bytes;
        if text.len() > max {
            self.reject(
                None,
                ErrorCode::MessageTooLarge,
                &format!("messages are limited to {max} bytes"),
            );
            return None;
        }
        let id = RequestId::of(&text);
        match ClientMessage::parse(&text) {
            Err(e) => {
                self.reject(id, ErrorCode::BadRequest, &format!("invalid message: {e}"));
            }
            Ok(ClientMessage::Subscribe(req)) => self.on_subscribe(req, id),
            Ok(ClientMessage::Unsubscribe(req)) => self.on_unsubscribe(req, id),
            Ok(ClientMessage::Ping) => self.reply(&ServerMessage::Pong {
                id,
                ts: now_micros(),
            }),
            Ok(ClientMessage::List) => {
                let msg = ServerMessage::List {
                    id,
                    symbols: self.state.hub.symbols().to_vec(),
                    channels: Channel::ALL.to_vec(),
                    subscriptions: self.positions().into_keys().collect(),
                };
                self.reply(&msg);
            }
        }
        None
    }

    fn reply(&self, msg: &ServerMessage) {
        self.peer.send(frame::text(&msg.to_json()));
    }

    fn reject(&mut self, id: Option<RequestId>, code: ErrorCode, message: &str) {
        self.state.metrics.client_error(code);
        if !self.refusals.take() {
            self.abusive = true;
            return;
        }
        self.reply(&ServerMessage::error(id, code, message));
    }

    fn positions(&self) -> BTreeMap<String, u64> {
        self.peer
            .positions()
            .into_iter()
            .map(|(s, seq)| (stream_name(s.channel(), self.state.hub.symbol_name(s)), seq))
            .collect()
    }

    fn on_subscribe(&mut self, req: SubscribeRequest, id: Option<RequestId>) {
        let streams = match resolve(&self.state, &req.symbols, req.channels.as_deref(), 0) {
            Ok(s) => s,
            Err((code, message)) => return self.reject(id, code, &message),
        };
        let new = streams
            .iter()
            .filter(|s| !self.peer.is_subscribed(**s))
            .count();
        let max = self.state.config.max_subscriptions;
        if self.peer.subscription_count() + new > max {
            let (code, message) = too_many(max);
            return self.reject(id, code, &message);
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
                return self.reject(id, ErrorCode::BadRequest, &message);
            }
        }
        self.subscribe_streams(id, &streams, &req.resume, req.epoch.as_deref());
    }

    /// Registers the streams with the hub while the peer holds live frames back, so that the
    /// acknowledgement, then each snapshot or replay, then the live updates go out in order.
    fn subscribe_streams(
        &mut self,
        id: Option<RequestId>,
        streams: &[StreamId],
        resume: &BTreeMap<String, u64>,
        epoch: Option<&str>,
    ) {
        let hub = self.state.hub.clone();
        let same_epoch = epoch.is_none_or(|e| e == &*hub.epoch());
        let mut fresh = Vec::new();
        let mut acks = Vec::with_capacity(streams.len());
        let held: BTreeMap<StreamId, u64> = self.peer.positions().into_iter().collect();
        for &stream in streams {
            let symbol = hub.symbol_name(stream).to_string();
            if let Some(&seq) = held.get(&stream) {
                acks.push(StreamAck {
                    channel: stream.channel(),
                    symbol,
                    seq,
                    recovered: None,
                    status: None,
                });
                continue;
            }
            let wanted = resume.get(&stream_name(stream.channel(), &symbol)).copied();
            // A position the stream cannot have is no position: a fresh start, said so.
            let usable = wanted.filter(|&w| same_epoch && hub.plausible(stream, w));
            fresh.push((stream, symbol, wanted, usable));
        }
        let provisional: Vec<(StreamId, u64)> = fresh
            .iter()
            .map(|(s, _, _, usable)| (*s, usable.unwrap_or(0)))
            .collect();
        self.peer.hold(&provisional);
        let mut frames: Vec<Frame> = Vec::new();
        for (stream, symbol, wanted, usable) in fresh {
            let got = hub.subscribe(stream, self.peer.clone(), usable);
            let recovered = wanted.map(|_| got.recovered == Some(true));
            acks.push(StreamAck {
                channel: stream.channel(),
                symbol,
                seq: got.seq,
                recovered,
                status: got.stale.then(|| "stale".to_string()),
            });
            frames.extend(got.snapshot);
            frames.extend(got.replay);
        }
        let ack = ServerMessage::Subscribed {
            id,
            epoch: hub.epoch().to_string(),
            streams: acks,
        };
        self.peer.release(frame::text(&ack.to_json()), frames);
    }

    fn on_unsubscribe(&mut self, req: UnsubscribeRequest, id: Option<RequestId>) {
        let streams = match resolve(&self.state, &req.symbols, req.channels.as_deref(), 0) {
            Ok(s) => s,
            Err((code, message)) => return self.reject(id, code, &message),
        };
        let mut removed = Vec::new();
        for stream in streams {
            if self.peer.is_subscribed(stream) {
                self.state.hub.unsubscribe(stream, self.peer.id());
                self.peer.forget(stream);
                removed.push(StreamRef {
                    channel: stream.channel(),
                    symbol: self.state.hub.symbol_name(stream).to_string(),
                });
            }
        }
        self.reply(&ServerMessage::Unsubscribed {
            id,
            streams: removed,
        });
    }

    /// Tells the client why it is being closed, sends the close frame, and completes the
    /// closing handshake within a bound. Dropping a socket while the client still sends makes
    /// the kernel answer with a reset, which discards the close frame and any unread data.
    async fn finish(&mut self, end: End) {
        let metrics = self.state.metrics.clone();
        let (message, code, reason) = match end {
            End::Gone => return,
            End::ClientClosed(code) => {
                // Echo the client's code (it is one that may be sent: checked on arrival).
                self.peer.close_data();
                self.peer.send(frame::close(code, ""));
                let _ = tokio::time::timeout(CLOSE_WAIT, self.drain()).await;
                return;
            }
            End::Shutdown => (
                Some(ServerMessage::Reconnect {
                    reason: "server shutting down".into(),
                    streams: self.positions(),
                }),
                CLOSE_SERVICE_RESTART,
                "server restart: reconnect",
            ),
            End::Drained => (
                Some(ServerMessage::Reconnect {
                    reason: "this task is stopping; the load balancer sends you to another".into(),
                    streams: self.positions(),
                }),
                CLOSE_SERVICE_RESTART,
                "task stopping: reconnect",
            ),
            End::Interrupted => (
                Some(ServerMessage::Reconnect {
                    reason: "the stream jumped ahead (the server's clock stepped forward, or a new epoch began upstream); resume: what you missed is gone and a fresh snapshot follows".into(),
                    streams: self.positions(),
                }),
                CLOSE_SERVICE_RESTART,
                "stream interrupted: resume",
            ),
            End::Kicked => {
                metrics.slow_consumer_disconnects.inc();
                let msg = format!(
                    "more than {} messages were waiting for you; the rest were dropped. Reconnect and resume from the last seq you received",
                    self.state.config.queue_capacity
                );
                (
                    Some(ServerMessage::error(None, ErrorCode::SlowConsumer, msg)),
                    CLOSE_SLOW_CONSUMER,
                    "slow consumer",
                )
            }
            End::HeartbeatTimeout => {
                metrics.heartbeat_timeouts.inc();
                (None, CLOSE_HEARTBEAT_TIMEOUT, "no pong")
            }
            End::WriteTimeout => (None, CLOSE_WRITE_TIMEOUT, "write timeout"),
            End::Violation(code) => (
                None,
                code,
                match code {
                    1007 => "invalid UTF-8",
                    CLOSE_POLICY => "too many refused messages",
                    CLOSE_MESSAGE_TOO_BIG => "message too big",
                    _ => "protocol error",
                },
            ),
        };
        self.closing = true;
        self.peer.close_data();
        if let Some(m) = message {
            self.reply(&m);
        }
        self.peer.send(frame::close(code, reason));
        // The goodbye may queue behind data the client has yet to read: give it the write
        // timeout (drain() enforces it), then a short wait for the client's close frame.
        if self.drain().await.is_err() {
            return;
        }
        let close_reply = async {
            loop {
                self.peer.stream.readable().await.map_err(|_| End::Gone)?;
                if let Some(end) = self.read_input() {
                    return Err::<(), End>(end);
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, close_reply).await;
    }
}
