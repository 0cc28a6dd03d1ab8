//! The `book` channels end to end: a client that applies what it receives, as docs/protocol.md
//! tells it to, holds exactly the source's book at every `seq` (the simulator's book is a pure
//! function of the tick, so the test computes it independently), verifies every checksum, and
//! keeps an exact book across a resume inside the window and a snapshot outside it.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};
use tickstream::book::{BookData, View};
use tickstream::market::Channel;

/// One stream's book as a client holds it.
#[derive(Debug, Default)]
struct BookClient {
    view: View,
    seq: Option<u64>,
    updates: usize,
}

impl BookClient {
    /// Applies one data message: a `snapshot` replaces the book, an `update` follows the last
    /// `seq` by one and patches it; either way the checksum must then match.
    fn apply(&mut self, msg: &Value) {
        let data: BookData = serde_json::from_value(msg["data"].clone()).expect("book data");
        let seq = msg["seq"].as_u64().expect("seq");
        let snapshot = msg["type"] == "snapshot";
        if !snapshot {
            assert_eq!(Some(seq), self.seq.map(|s| s + 1), "contiguous: {msg}");
            self.updates += 1;
        }
        assert!(self.view.apply(&data, snapshot), "checksum at {msg}");
        self.seq = Some(seq);
    }
}

struct Books {
    clients: HashMap<String, BookClient>,
}

impl Books {
    fn new() -> Self {
        Self {
            clients: HashMap::new(),
        }
    }

    /// Applies `msg` and checks the result against the simulator's book at that tick.
    fn apply(&mut self, server: &Server, msg: &Value) {
        let client = self.clients.entry(key(msg)).or_default();
        client.apply(msg);
        let sim = server
            .state
            .sim
            .as_ref()
            .expect("the simulator is the source");
        let symbol = msg["symbol"].as_str().expect("symbol");
        let spec = sim
            .specs()
            .iter()
            .find(|s| s.name == symbol)
            .expect("known symbol");
        let channel: Channel = serde_json::from_value(msg["channel"].clone()).expect("channel");
        let depth = channel.book_depth().expect("a book channel");
        let seq = client.seq.expect("applied");
        assert_eq!(
            client.view,
            sim.book(spec, seq).top(depth),
            "{} at {seq}",
            key(msg)
        );
    }

    fn min_updates(&self) -> usize {
        self.clients.values().map(|c| c.updates).min().unwrap_or(0)
    }

    fn positions(&self) -> serde_json::Map<String, Value> {
        self.clients
            .iter()
            .map(|(k, c)| (k.clone(), json!(c.seq)))
            .collect()
    }
}

/// Reads data messages into `books` until every stream has had `n` more updates.
async fn follow(server: &Server, ws: &mut Ws, books: &mut Books, streams: usize, n: usize) {
    let target = books.min_updates() + n;
    while books.clients.len() < streams || books.min_updates() < target {
        let msg = recv(ws).await;
        if matches!(msg["type"].as_str(), Some("update" | "snapshot")) {
            books.apply(server, &msg);
        }
    }
}

#[tokio::test]
async fn book_clients_hold_the_sources_book_through_resume_and_snapshot() {
    let server = start(|c| {
        c.sim_rate = 50;
        c.history = 100;
    })
    .await;
    let query = "?symbols=BTC-USD,AAPL&channels=book,book_100";
    let mut ws = server.connect(query).await;
    let mut books = Books::new();
    follow(&server, &mut ws, &mut books, 4, 25).await;
    drop(ws);

    // Away for a while, within the 100-update window (2 s at 50 Hz): the stream moves on.
    let held = books.positions();
    let seq_of = |v: &Value| v["seq"].as_u64().unwrap_or(0);
    let behind = held["book:BTC-USD"].as_u64().expect("held") + 20;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seq_of(&server.get("/api/v1/book/BTC-USD").await.1) < behind {
        assert!(tokio::time::Instant::now() < deadline, "the stream moves");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut ws = server.connect("").await;
    let subscribe = json!({"op": "subscribe", "symbols": ["BTC-USD", "AAPL"],
        "channels": ["book", "book_100"], "epoch": server.state.hub.epoch(), "resume": held});
    send(&mut ws, subscribe).await;
    let ack = recv_control(&mut ws).await;
    assert_eq!(ack["type"], "subscribed", "{ack}");
    for s in ack["streams"].as_array().expect("streams") {
        assert_eq!(s["recovered"], true, "{s}");
    }
    // Updates only, from exactly where the client was: the missed ones replayed, then live.
    let before = books.min_updates();
    follow(&server, &mut ws, &mut books, 4, 30).await;
    assert!(books.min_updates() >= before + 30);
    drop(ws);

    // Far outside the window: `recovered: false` and a snapshot that replaces the book.
    let mut stale = books.positions();
    for v in stale.values_mut() {
        *v = json!(v.as_u64().expect("seq") - 1_000);
    }
    let mut ws = server.connect("").await;
    send(
        &mut ws,
        json!({"op": "subscribe", "symbols": ["BTC-USD", "AAPL"],
        "channels": ["book", "book_100"], "epoch": server.state.hub.epoch(), "resume": stale}),
    )
    .await;
    let ack = recv_control(&mut ws).await;
    for s in ack["streams"].as_array().expect("streams") {
        assert_eq!(s["recovered"], false, "{s}");
    }
    let mut fresh = Books::new();
    for _ in 0..4 {
        let msg = recv(&mut ws).await;
        assert_eq!(msg["type"], "snapshot", "{msg}");
        fresh.apply(&server, &msg);
    }
    follow(&server, &mut ws, &mut fresh, 4, 10).await;
}

#[tokio::test]
async fn a_snapshot_has_the_depth_asked_for_and_the_ack_position() {
    let server = start(|c| c.sim_rate = 20).await;
    let mut ws = server.connect("").await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "symbols": ["ETH-USD"], "channels": ["book_50"]}),
    )
    .await;
    let ack = recv_control(&mut ws).await;
    let acked = ack["streams"][0]["seq"].as_u64().expect("seq");
    assert_eq!(ack["streams"][0]["channel"], "book_50");
    let snap = recv(&mut ws).await;
    assert_eq!(
        (snap["type"].as_str(), snap["seq"].as_u64()),
        (Some("snapshot"), Some(acked))
    );
    let data: BookData = serde_json::from_value(snap["data"].clone()).expect("book data");
    assert_eq!((data.bids.len(), data.asks.len()), (50, 50));
    assert!(data.bids[0].price < data.asks[0].price);
    assert!(!data.reset, "a subscribe's snapshot is not a reset");
    let mut books = Books::new();
    books.apply(&server, &snap);
    follow(&server, &mut ws, &mut books, 1, 5).await;
}

/// A capture of `/ws` output with book streams is a recording: replayed, clients rebuild the
/// books it holds, and so does the REST snapshot at its end.
#[tokio::test]
async fn a_recorded_book_replays_to_the_same_book() {
    let source = start(|c| c.sim_rate = 50).await;
    let mut ws = source
        .connect("?symbols=BTC-USD&channels=book,book_25")
        .await;
    let mut recorded = Books::new();
    let mut lines = String::new();
    while recorded.clients.len() < 2 || recorded.min_updates() < 40 {
        let msg = recv(&mut ws).await;
        if matches!(msg["type"].as_str(), Some("update" | "snapshot")) {
            recorded.apply(&source, &msg);
            lines.push_str(&format!("{msg}\n"));
        }
    }
    drop(ws);
    let path = std::env::temp_dir().join(format!("tickstream-book-{}.ndjson", std::process::id()));
    std::fs::write(&path, lines).expect("write recording");
    let replay = path.clone();
    let server = start(move |c| {
        c.replay = Some(replay);
        c.replay_speed = 4.0;
    })
    .await;
    let mut ws = server.connect("?symbols=BTC-USD&channels=book_25").await;
    let mut client = BookClient::default();
    let want = &recorded.clients["book_25:BTC-USD"];
    let last = want.updates as u64 + 1;
    while client.seq != Some(last) {
        let msg = recv(&mut ws).await;
        if matches!(msg["type"].as_str(), Some("update" | "snapshot")) {
            client.apply(&msg);
        }
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(client.view, want.view);
    let (status, rest) = server.get("/api/v1/book/BTC-USD?depth=25").await;
    assert_eq!((status, rest["seq"].as_u64()), (200, Some(last)));
    let mut from_rest = View::default();
    let data: BookData = serde_json::from_value(rest["data"].clone()).expect("book data");
    assert!(from_rest.apply(&data, true));
    assert_eq!(from_rest, want.view);
}
