//! The WebSocket protocol against a real server on loopback.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Every channel of every default symbol: the heaviest subscription a client can make.
const EVERY_STREAM: &str = "?symbols=AAPL,MSFT,NVDA,AMZN,GOOGL,TSLA,SPY,BTC-USD,ETH-USD,SOL-USD&channels=ticker,trades,candles";

/// Every update's seq is exactly one more than the last seen on its stream.
fn assert_contiguous(frames: &[Value]) -> HashMap<String, u64> {
    let mut last: HashMap<String, u64> = HashMap::new();
    for f in frames {
        let seq = f["seq"].as_u64().expect("seq");
        if let Some(prev) = last.insert(key(f), seq) {
            assert_eq!(
                seq,
                prev + 1,
                "gap or repeat on {}: {prev} then {seq}",
                key(f)
            );
        }
    }
    last
}

#[tokio::test]
async fn url_subscription_streams_contiguous_data_at_once() {
    let server = start(|c| c.sim_rate = 50).await;
    let mut ws = server
        .connect("?symbols=AAPL,BTC-USD&channels=ticker,trades")
        .await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["streams"].as_array().map(Vec::len), Some(4));
    let started = now_micros();
    let frames = collect(&mut ws, Duration::from_millis(1500)).await;
    let updates: Vec<_> = frames.iter().filter(|f| f["type"] == "update").collect();
    assert!(
        updates.len() > 100,
        "50 Hz x 2 symbols for 1.5 s, got {}",
        updates.len()
    );
    let last = assert_contiguous(&frames);
    assert_eq!(last.len(), 4, "all four streams delivered: {last:?}");
    for f in &frames {
        let ts = f["ts"].as_i64().expect("ts");
        assert!(
            (started - 30_000_000..started + 2_000_000).contains(&ts),
            "ts {ts} near now {started}"
        );
        assert!(f["data"].is_object());
    }
    let first_update_ts = updates[0]["ts"].as_i64().expect("ts");
    assert!(
        first_update_ts - started < 1_000_000,
        "data within a second"
    );
}

#[tokio::test]
async fn channels_default_to_ticker_and_snapshots_come_first() {
    let server = start(|_| {}).await;
    let mut ws = server.connect("?symbols=MSFT").await;
    let ack = recv(&mut ws).await;
    assert_eq!(
        ack["streams"],
        json!([{"channel": "ticker", "symbol": "MSFT", "seq": ack["streams"][0]["seq"]}])
    );
    let snap = recv(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["seq"], ack["streams"][0]["seq"]);
    for k in ["bid", "ask", "last", "open", "change", "volume"] {
        assert!(
            snap["data"][k].is_string(),
            "ticker {k} is a decimal string: {snap}"
        );
    }
    let next = recv(&mut ws).await;
    assert_eq!(next["type"], "update");
    assert_eq!(next["seq"].as_u64(), snap["seq"].as_u64().map(|s| s + 1));

    send(
        &mut ws,
        json!({"op": "subscribe", "id": "c1", "symbols": ["MSFT"], "channels": ["candles"]}),
    )
    .await;
    let ack = recv_control(&mut ws).await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["id"], "c1");
    let mut snapshots = Vec::new();
    while snapshots.len() < 2 {
        let m = recv(&mut ws).await;
        if m["channel"] != "ticker" {
            assert_eq!(
                m["type"], "snapshot",
                "a candle snapshot before its first update"
            );
            assert!(m["data"]["closed"].is_boolean());
            snapshots.push(m["channel"].clone());
        }
    }
    assert_eq!(snapshots, vec![json!("candles_1s"), json!("candles_1m")]);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_acknowledged() {
    let server = start(|c| c.sim_rate = 50).await;
    let mut ws = server.connect("").await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "symbols": ["AAPL", "ETH-USD"], "channels": ["ticker"]}),
    )
    .await;
    let ack = recv(&mut ws).await;
    assert_eq!(
        (ack["type"].as_str(), ack["id"].as_i64()),
        (Some("subscribed"), Some(1))
    );
    assert!(ack["epoch"].as_str().is_some_and(|e| e.starts_with("sim-")));
    send(
        &mut ws,
        json!({"op": "unsubscribe", "id": 2, "symbols": ["AAPL"]}),
    )
    .await;
    let unack = recv_control(&mut ws).await;
    assert_eq!(
        unack,
        json!({"type": "unsubscribed", "id": 2, "streams": [{"channel": "ticker", "symbol": "AAPL"}]})
    );
    let after = collect(&mut ws, Duration::from_millis(400)).await;
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|f| f["symbol"] == "ETH-USD"),
        "nothing of AAPL after its unsubscribe"
    );
    send(&mut ws, json!({"op": "list", "id": 3})).await;
    let list = recv_control(&mut ws).await;
    assert_eq!(list["subscriptions"], json!(["ticker:ETH-USD"]));
    assert_eq!(list["symbols"].as_array().map(Vec::len), Some(10));
    send(&mut ws, json!({"op": "ping", "id": 4})).await;
    let pong = recv_control(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_i64()),
        (Some("pong"), Some(4))
    );
}

#[tokio::test]
async fn resume_inside_the_window_has_no_gap_and_outside_it_says_so() {
    let server = start(|c| {
        c.sim_rate = 100;
        c.history = 200;
    })
    .await;
    let mut ws = server.connect("?symbols=SPY&channels=ticker,trades").await;
    let before = collect(&mut ws, Duration::from_millis(300)).await;
    let held = assert_contiguous(&before);
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut ws = server.connect("").await;
    let resume: serde_json::Map<String, Value> =
        held.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    send(&mut ws, json!({"op": "subscribe", "symbols": ["SPY"], "channels": ["ticker", "trades"], "resume": resume})).await;
    let ack = recv(&mut ws).await;
    for s in ack["streams"].as_array().expect("streams") {
        assert_eq!(s["recovered"], true, "{s}");
    }
    let after = collect(&mut ws, Duration::from_millis(300)).await;
    let mut all = before.clone();
    all.extend(after.iter().cloned());
    let last = assert_contiguous(&all);
    assert!(
        after.iter().all(|f| f["type"] == "update"),
        "replayed, not re-snapshotted"
    );
    assert!(
        last["ticker:SPY"] >= held["ticker:SPY"] + 70,
        "the 500 ms gap was replayed"
    );

    // Far behind the 200-update window (2 s at 100 Hz): recovered false and a fresh snapshot.
    let stale = last["ticker:SPY"] - 1_000;
    let mut ws = server.connect("").await;
    send(
        &mut ws,
        json!({"op": "subscribe", "symbols": ["SPY"], "resume": {"ticker:SPY": stale}}),
    )
    .await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["streams"][0]["recovered"], false);
    assert_eq!(recv(&mut ws).await["type"], "snapshot");

    // Positions from another epoch cannot be honoured either.
    let mut ws = server.connect("").await;
    let pos = last["ticker:SPY"];
    send(&mut ws, json!({"op": "subscribe", "symbols": ["SPY"], "resume": {"ticker:SPY": pos}, "epoch": "sim-other"})).await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["streams"][0]["recovered"], false);
}

#[tokio::test]
async fn two_servers_with_the_same_seed_send_identical_events() {
    let a = start(|c| c.sim_rate = 20).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = start(|c| c.sim_rate = 20).await;
    let query = "?symbols=AAPL,BTC-USD,SOL-USD&channels=ticker,trades,candles";
    let (mut wa, mut wb) = (a.connect(query).await, b.connect(query).await);
    let ack_a = recv(&mut wa).await;
    let ack_b = recv(&mut wb).await;
    assert_eq!(ack_a["epoch"], ack_b["epoch"]);
    let (fa, fb) = tokio::join!(
        collect(&mut wa, Duration::from_millis(1500)),
        collect(&mut wb, Duration::from_millis(1500))
    );
    let index = |frames: &[Value]| -> HashMap<(String, u64), Value> {
        frames
            .iter()
            .filter(|f| f["type"] == "update")
            .map(|f| ((key(f), f["seq"].as_u64().unwrap_or(0)), f.clone()))
            .collect()
    };
    let (ia, ib) = (index(&fa), index(&fb));
    let common: Vec<_> = ia.keys().filter(|k| ib.contains_key(*k)).collect();
    assert!(
        common.len() > 200,
        "the two servers overlap: {}",
        common.len()
    );
    for k in common {
        assert_eq!(ia[k], ib[k], "event {k:?} differs between servers");
    }

    // A client of server A resumes on server B with nothing lost.
    let held = assert_contiguous(&fa);
    drop(wa);
    let mut wb2 = b.connect("").await;
    let resume: serde_json::Map<String, Value> =
        held.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    send(
        &mut wb2,
        json!({"op": "subscribe", "symbols": ["AAPL", "BTC-USD", "SOL-USD"],
        "channels": ["ticker", "trades", "candles"], "resume": resume, "epoch": ack_a["epoch"]}),
    )
    .await;
    let ack = recv(&mut wb2).await;
    assert!(
        ack["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .all(|s| s["recovered"] == true),
        "{ack}"
    );
    let mut all = fa.clone();
    all.extend(collect(&mut wb2, Duration::from_millis(300)).await);
    assert_contiguous(&all);
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_the_connection_stays_usable() {
    let server = start(|c| c.max_subscriptions = 3).await;
    let mut ws = server.connect("").await;
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad_request"),
        (json!({"op": "fly"}).to_string(), "bad_request"),
        (json!({"symbols": ["AAPL"]}).to_string(), "bad_request"),
        (json!({"op": "subscribe", "symbols": ["AAPL"], "colour": 1}).to_string(), "bad_request"),
        (json!({"op": "subscribe", "symbols": []}).to_string(), "bad_request"),
        (json!({"op": "subscribe", "id": 9, "symbols": ["NOPE"]}).to_string(), "unknown_symbol"),
        (json!({"op": "subscribe", "symbols": ["AAPL"], "channels": ["orderbook"]}).to_string(), "unknown_channel"),
        (json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "channels": ["ticker", "trades"]}).to_string(), "too_many_subscriptions"),
        (json!({"op": "subscribe", "symbols": ["AAPL"], "resume": {"trades:MSFT": 5}}).to_string(), "bad_request"),
        (json!({"op": "ping", "pad": "x".repeat(5000)}).to_string(), "message_too_large"),
    ];
    for (text, code) in &cases {
        send_text(&mut ws, text).await;
        let err = recv_control(&mut ws).await;
        assert_eq!(
            (err["type"].as_str(), err["code"].as_str()),
            (Some("error"), Some(*code)),
            "for {text}"
        );
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        // The connection is still usable (and nothing was subscribed by the failed request).
        send(&mut ws, json!({"op": "list"})).await;
        let list = recv_control(&mut ws).await;
        assert_eq!(list["subscriptions"], json!([]), "after {text}");
        tokio::time::sleep(Duration::from_millis(120)).await; // stay under the message rate
    }
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 9, "symbols": ["NOPE"]}),
    )
    .await;
    assert_eq!(
        recv_control(&mut ws).await["id"],
        9,
        "errors echo the request id"
    );

    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .expect("send");
    assert_eq!(recv_control(&mut ws).await["code"], "bad_request");

    // Past the hard frame limit the server closes with 1009 instead of reading it.
    send_text(&mut ws, &"x".repeat(70_000)).await;
    let (_, code) = until_close(&mut ws).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn a_bad_url_subscription_is_refused_before_the_upgrade() {
    let server = start(|_| {}).await;
    for (query, status) in [
        ("?symbols=NOPE", 400),
        ("?symbols=AAPL&channels=x", 400),
        ("?symbols=", 400),
    ] {
        match tokio_tungstenite::connect_async(server.ws_url(query)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{query}");
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}"))
                    .expect("JSON body");
                assert_eq!(body["type"], "error");
            }
            other => panic!("{query} should be refused, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_message_rate_is_limited_per_connection() {
    let server = start(|c| c.max_message_rate = 5).await;
    let mut ws = server.connect("").await;
    for i in 0..30 {
        send(&mut ws, json!({"op": "ping", "id": i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..30 {
        match recv_control(&mut ws).await["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pongs, 10, "a burst of twice the rate passes");
    assert_eq!(limited, 20);
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(&mut ws, json!({"op": "ping", "id": "later"})).await;
    assert_eq!(recv_control(&mut ws).await["type"], "pong", "tokens refill");
}

#[tokio::test]
async fn the_connection_limit_refuses_with_503() {
    let server = start(|c| c.max_connections = 2).await;
    let _a = server.connect("").await;
    let b = server.connect("").await;
    match tokio_tungstenite::connect_async(server.ws_url("")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503)
        }
        other => panic!("third connection should be refused, got {other:?}"),
    }
    drop(b);
    let started = tokio::time::Instant::now();
    while server.state.connections() > 1 {
        assert!(started.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _c = server.connect("").await;
}

#[tokio::test]
async fn heartbeats_carry_positions_and_silent_clients_are_dropped() {
    let server = start(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.client_timeout = Duration::from_millis(700);
    })
    .await;
    let mut ws = server.connect("?symbols=AAPL").await;
    let hb = loop {
        let m = recv(&mut ws).await;
        if m["type"] == "heartbeat" {
            break m;
        }
    };
    assert!(
        hb["streams"]["ticker:AAPL"].as_u64().is_some_and(|s| s > 0),
        "{hb}"
    );
    // A client that reads (and so answers pings) stays connected.
    let still = collect(&mut ws, Duration::from_millis(1200)).await;
    assert!(!still.is_empty());
    // A client that stops reading stops answering pings and is dropped with 4101.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, code) = until_close(&mut ws).await;
    assert_eq!(code, Some(4101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gets_everything_in_order_when_it_reads_again() {
    let server = start(|c| {
        c.sim_rate = 200;
        c.queue_capacity = 100_000;
    })
    .await;
    let mut ws = connect_small_buffer(&server, EVERY_STREAM).await;
    // Not reading: the server's direct writes to this socket block, and frames queue up for
    // the connection task.
    let metrics = &server.state.metrics;
    let started = tokio::time::Instant::now();
    while metrics.writes_blocked.get() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the socket never blocked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Reading again: the queue drains, then the hub writes directly again.
    let mut frames = Vec::new();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the client never caught up"
        );
        let batch = collect(&mut ws, Duration::from_millis(200)).await;
        let lag = batch
            .iter()
            .rev()
            .find(|f| f["type"] == "update")
            .and_then(|f| f["ts"].as_i64())
            .map(|ts| now_micros() - ts);
        frames.extend(batch);
        if lag.is_some_and(|lag| lag < 200_000) {
            break;
        }
    }
    assert_contiguous(&frames);
    assert!(frames.len() > 1000, "{} frames", frames.len());
    assert_eq!(
        metrics.slow_consumer_disconnects.get(),
        0,
        "it was not cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_without_delaying_a_fast_one() {
    let server = start(|c| {
        c.sim_rate = 200;
        c.queue_capacity = 64;
    })
    .await;
    // The slow client has a tiny receive buffer and never reads.
    let mut slow = connect_small_buffer(&server, EVERY_STREAM).await;
    let mut fast = server.connect(EVERY_STREAM).await;
    let started = tokio::time::Instant::now();
    let mut frames = Vec::new();
    let mut worst_lag = 0;
    while server.state.metrics.slow_consumer_disconnects.get() == 0
        || started.elapsed() < Duration::from_secs(1)
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow client was never cut off"
        );
        let batch = collect(&mut fast, Duration::from_millis(100)).await;
        let now = now_micros();
        for f in &batch {
            if f["type"] == "update" {
                worst_lag = worst_lag.max(now - f["ts"].as_i64().unwrap_or(now));
            }
        }
        frames.extend(batch);
    }
    assert_contiguous(&frames);
    assert!(
        worst_lag < 250_000,
        "the fast client kept up: worst lag {worst_lag} us"
    );
    let (texts, code) = until_close(&mut slow).await;
    assert_eq!(code, Some(4100), "slow consumer close code");
    assert!(
        texts.iter().any(|t| t["code"] == "slow_consumer"),
        "the slow client is told why"
    );
    assert!(server.state.metrics.frames_dropped.get() >= 1);
}

#[tokio::test]
async fn the_endpoint_speaks_websocket_only_and_answers_pings() {
    let server = start(|_| {}).await;
    let (status, body) = server.get("/ws?symbols=AAPL").await;
    assert_eq!((status, body["code"].as_str()), (426, Some("bad_request")));

    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = server.connect("").await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    match next_raw(&mut ws).await {
        Some(Message::Pong(payload)) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    // A client-initiated close is answered with a close.
    ws.send(Message::Close(None)).await.expect("close");
    let (_, code) = until_close(&mut ws).await;
    assert_eq!(code, Some(1000));
}
