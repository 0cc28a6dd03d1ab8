//! A real server on 127.0.0.1:0 and a real WebSocket client, for the integration tests.
#![allow(dead_code)]

pub mod binance_double;
pub mod book_client;
pub mod book_moves;
pub mod broker;
pub mod coinbase_double;
pub mod kraken_double;
pub mod market_client;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickstream::config::Config;
use tickstream::market::Channel;
use tickstream::{AppState, run};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Polls `done` every 10 ms until it holds; fails with `what` after `within`.
pub async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    until(what, within, || std::future::ready(done())).await;
}

/// [`eventually`] for a check that has to wait itself (a query to a server).
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a server with the defaults changed by `tweak`, and waits until it is ready.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    let server = start_unready(tweak).await;
    let state = &server.state;
    let started = tokio::time::Instant::now();
    while !state.is_ready() {
        assert!(started.elapsed() < WAIT, "server not ready in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A simulator starts its history window in the past and catches up after it is ready;
    // tests that measure lag start once it has.
    if state.sim.is_some() {
        let first = &state.hub.symbols()[0];
        let stream = state
            .hub
            .stream(Channel::Ticker, first)
            .expect("first symbol");
        while state
            .hub
            .latest(stream)
            .is_none_or(|e| e.ts < now_micros() - 100_000)
        {
            assert!(
                started.elapsed() < WAIT,
                "simulator did not catch up in time"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    server
}

/// Starts a server without waiting for its source (one that may never come up).
pub async fn start_unready(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        history: 256,
        ..Config::default()
    };
    tweak(&mut config);
    let state = AppState::new(config).expect("valid test configuration");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Server {
        addr,
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Server {
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    pub async fn connect(&self, query: &str) -> Ws {
        connect(&self.ws_url(query)).await
    }

    /// Triggers shutdown and returns how `run` ended.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("run returns within the drain deadline")
            .expect("run task did not panic")
    }

    /// `GET path` over a real socket (on a blocking thread: the server shares this runtime).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (addr, path) = (self.addr, path.to_string());
        let (status, body) =
            tokio::task::spawn_blocking(move || tickstream::probe::http_get(addr, &path, WAIT))
                .await
                .expect("probe thread")
                .expect("HTTP request to the test server");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    ws
}

/// A client whose socket has a tiny receive buffer, so that the server's writes to it block as
/// soon as it stops reading.
pub async fn connect_small_buffer(server: &Server, query: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(
        server.ws_url(query),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("handshake");
    ws
}

/// The next message of any kind (pings included), or `None` when the stream ended.
pub async fn next_raw(ws: &mut Ws) -> Option<Message> {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .and_then(Result::ok)
}

/// The next text message as JSON; panics on close.
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        match next_raw(ws).await {
            Some(Message::Text(t)) => return serde_json::from_str(&t).expect("server sends JSON"),
            Some(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next message that is not market data.
pub async fn recv_control(ws: &mut Ws) -> Value {
    loop {
        let v = recv(ws).await;
        if !matches!(v["type"].as_str(), Some("update" | "snapshot")) {
            return v;
        }
    }
}

/// Reads until the close frame and returns its code; text before it is returned too.
pub async fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Text(t))) => texts.push(serde_json::from_str(&t).expect("JSON")),
            Some(Ok(Message::Close(frame))) => {
                return (texts, frame.map(|f: CloseFrame| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (texts, None),
        }
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}

/// Data messages received during `dur`.
pub async fn collect(ws: &mut Ws, dur: Duration) -> Vec<Value> {
    let end = tokio::time::Instant::now() + dur;
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, ws.next()).await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("JSON");
            if matches!(v["type"].as_str(), Some("update" | "snapshot")) {
                out.push(v);
            }
        }
    }
    out
}

pub fn key(v: &Value) -> String {
    format!(
        "{}:{}",
        v["channel"].as_str().unwrap_or(""),
        v["symbol"].as_str().unwrap_or("")
    )
}

pub fn now_micros() -> i64 {
    tickstream::feed::now_micros()
}

/// The `reconnect` a closing server sent, after asserting it came with close code 1012 and
/// the resume position of `stream`.
pub fn expect_reconnect<'a>(texts: &'a [Value], code: Option<u16>, stream: &str) -> &'a Value {
    let reconnect = texts
        .iter()
        .find(|t| t["type"] == "reconnect")
        .expect("a reconnect message");
    assert!(
        reconnect["streams"][stream].as_u64().is_some(),
        "{reconnect}"
    );
    assert_eq!(code, Some(1012));
    reconnect
}
