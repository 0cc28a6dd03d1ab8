//! Issue #14, item 8: no feed rate the flags accept may stall other tasks or the shutdown
//! deadline, a stream that jumps tells its subscribers, and heavy REST work stays off the
//! runtime's workers. The runtime here has two workers, as a two-vCPU task has.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tickstream::hub::Batch;
use tickstream::market::{Channel, Decimal, Event, Payload, Side, Trade};

const ALL_CHANNELS: &str = "channels=ticker,trades,candles_1s,candles_1m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_highest_rate_stuck_clients_are_closed_and_shutdown_keeps_its_deadline() {
    let mut server = start(|c| {
        c.sim_rate = tickstream::feed::sim::MAX_RATE;
        c.sim_symbols = vec!["AAPL".into(), "BTC-USD".into()];
        c.drain_timeout = Duration::from_secs(2);
    })
    .await;
    let query = format!("?symbols=AAPL,BTC-USD&{ALL_CHANNELS}");
    let mut stuck = Vec::new();
    for _ in 0..6 {
        stuck.push(connect_small_buffer(&server, &query).await);
    }
    // Each stuck client's queue overflows within a fraction of a second at this rate; its
    // own task must then run to close it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.state.metrics.slow_consumer_disconnects.get() < 6 {
        assert!(
            Instant::now() < deadline,
            "stuck clients not closed within 20 s: {} of 6",
            server.state.metrics.slow_consumer_disconnects.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client that reads sees every update, in order, while the feed runs this fast.
    let mut ws = server.connect("?symbols=AAPL&channels=ticker").await;
    let got = collect(&mut ws, Duration::from_millis(800)).await;
    let seqs: Vec<u64> = got.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert!(seqs.len() > 100, "{} updates in 0.8 s", seqs.len());
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous seq at 1000 ticks per second"
    );
    for _ in 0..4 {
        stuck.push(connect_small_buffer(&server, &query).await);
    }
    let started = Instant::now();
    server.stop().await.expect("run ends");
    // The drain deadline is 2 s; the rest is room for a loaded two-core machine. Before the
    // feed stopped sleeping on a worker, this took 25 to 45 s.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown took {:?} with a 2 s drain deadline",
        started.elapsed()
    );
}

fn trade(seq: u64) -> Event {
    Event {
        channel: Channel::Trades,
        symbol: 0,
        seq,
        ts: now_micros(),
        payload: Payload::Trade(Trade {
            price: Decimal::new(19_000, 2),
            size: Decimal::new(1, 0),
            side: Side::Buy,
        }),
    }
}

#[tokio::test]
async fn a_stream_that_jumps_ahead_tells_its_subscribers_to_resume() {
    let mut server = start(|c| {
        c.sim_rate = 0;
        c.sim_symbols = vec!["AAPL".into()];
    })
    .await;
    let hub = server.state.hub.clone();
    let mut batch = Batch::default();
    hub.publish_batch(&mut (1..=3).map(trade).collect(), &mut batch);
    let mut ws = server.connect("?symbols=AAPL&channels=trades").await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    hub.publish_batch(&mut vec![trade(4)], &mut batch);
    assert_eq!(recv(&mut ws).await["seq"], 4);
    // What the simulator does when the wall clock steps forward: it skips to now.
    hub.publish_batch(&mut vec![trade(9_000)], &mut batch);
    let (texts, code) = until_close(&mut ws).await;
    assert!(
        texts.iter().all(|t| t["seq"] != 9_000),
        "no update across the jump: {texts:?}"
    );
    let reconnect = expect_reconnect(&texts, code, "trades:AAPL");
    assert_eq!(reconnect["streams"]["trades:AAPL"], 4);
    assert!(
        reconnect["reason"]
            .as_str()
            .is_some_and(|r| r.contains("resume"))
    );

    // Resuming from 4 is not possible any more: the client is told and starts afresh.
    let mut ws = server.connect("").await;
    send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["AAPL"],"channels":["trades"],
            "epoch": hub.epoch(), "resume":{"trades:AAPL":4}}),
    )
    .await;
    let ack = recv_control(&mut ws).await;
    assert_eq!(ack["streams"][0]["recovered"], false, "{ack}");
    assert_eq!(ack["streams"][0]["seq"], 9_000, "{ack}");
    hub.publish_batch(&mut vec![trade(9_001)], &mut batch);
    assert_eq!(recv(&mut ws).await["seq"], 9_001);
    server.stop().await.expect("run ends");
}

/// On a one-worker runtime, anything computed inline would hold up every other request.
#[tokio::test]
async fn candle_history_is_computed_off_the_runtime() {
    let mut server = start(|c| {
        c.sim_rate = tickstream::feed::sim::MAX_RATE;
        c.sim_symbols = vec!["AAPL".into()];
        c.candle_history = 60;
    })
    .await;
    let addr = server.addr;
    // An hour at 1000 ticks per second: about 2.7 million trades to walk (seconds in a debug build).
    let heavy = tokio::task::spawn_blocking(move || {
        tickstream::probe::http_get(
            addr,
            "/api/v1/candles/AAPL?interval=1m&limit=60",
            Duration::from_secs(120),
        )
    });
    let deadline = Instant::now() + WAIT;
    while server.state.history.computations() == 0 {
        assert!(Instant::now() < deadline, "the computation did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        !heavy.is_finished(),
        "health answered while the history was still being computed"
    );
    let (status, body) = heavy.await.expect("thread").expect("candles");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["candles"].as_array().map(Vec::len), Some(60));
    server.stop().await.expect("run ends");
}
