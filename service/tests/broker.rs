//! Many tasks, one stream: ingest and edge processes around a real `redis-server`, killed,
//! paused and restarted, with clients that must never see a silent gap.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::broker::{Broker, Cluster, Node, client, subscribe};
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// A data message as received: its text, and its parsed form.
#[derive(Debug, Clone)]
struct Got {
    text: String,
    v: Value,
}

impl Got {
    fn stream(&self) -> String {
        key(&self.v)
    }
    fn seq(&self) -> u64 {
        self.v["seq"].as_u64().expect("seq")
    }
    fn is_update(&self) -> bool {
        self.v["type"] == "update"
    }
}

/// What a client read until `done` held or the connection ended: data messages, and the
/// other messages.
async fn read_until(
    ws: &mut Ws,
    within: Duration,
    mut done: impl FnMut(&[Got]) -> bool,
) -> (Vec<Got>, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + within;
    let (mut data, mut other) = (Vec::new(), Vec::new());
    while !done(&data) {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(next) = next else {
            panic!(
                "not done within {within:?}: {} messages, then {other:?}",
                data.len()
            );
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                if matches!(v["type"].as_str(), Some("update" | "snapshot")) {
                    data.push(Got {
                        text: t.to_string(),
                        v,
                    });
                } else {
                    other.push(v);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    (data, other)
}

fn updates_of(got: &[Got], stream: &str) -> usize {
    got.iter()
        .filter(|g| g.is_update() && g.stream() == stream)
        .count()
}

/// The last seq per stream: the resume map.
fn positions(got: &[Got]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for g in got {
        out.insert(g.stream(), g.seq().into());
    }
    out
}

/// Each stream's seqs go up by one from its first message: no gap, no repeat.
fn assert_contiguous(got: &[Got]) {
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for g in got {
        if let Some(prev) = last.insert(g.stream(), g.seq()) {
            assert_eq!(g.seq(), prev + 1, "{} after {prev}: {}", g.stream(), g.text);
        }
    }
}

async fn ingest_and_edges(broker: &Broker, edges: usize, args: &[&str]) -> (Node, Vec<Node>) {
    let ingest = Node::start(Some(broker), &[&["--role", "ingest"], args].concat());
    ingest.until_ready(true, WAIT).await;
    let (status, body) = ingest.get("/api/v1/symbols").await.expect("an answer");
    assert_eq!(status, 404, "an ingest task serves no clients: {body}");
    assert!(body.contains("connect to an edge"), "{body}");
    let edges: Vec<Node> = (0..edges)
        .map(|_| Node::start(Some(broker), &["--role", "edge"]))
        .collect();
    for edge in &edges {
        edge.until_ready(true, WAIT).await;
    }
    (ingest, edges)
}

/// A second ingest task with `args`, ready and standing by while `writer` holds the lease.
async fn standby_of(writer: &Node, broker: &Broker, args: &[&str]) -> Node {
    writer
        .until_metric("tickstream_broker_lease_holder", WAIT, |v| v == 1.0)
        .await;
    let standby = Node::start(Some(broker), &[&["--role", "ingest"], args].concat());
    standby.until_ready(true, WAIT).await;
    assert_eq!(standby.metric("tickstream_broker_lease_holder").await, 0.0);
    standby
}

/// How long after `stop` (of the writer) `standby` holds the lease.
async fn takeover_after(standby: &Node, stop: impl FnOnce()) -> Duration {
    let stopped = tokio::time::Instant::now();
    stop();
    standby
        .until_metric(
            "tickstream_broker_lease_holder",
            Duration::from_secs(5),
            |v| v == 1.0,
        )
        .await;
    stopped.elapsed()
}

const CHANNELS: [&str; 3] = ["ticker", "trades", "book"];

#[tokio::test]
async fn a_client_of_a_killed_edge_resumes_on_another_with_no_gap_and_the_same_bytes() {
    let broker = Broker::start();
    let (_ingest, mut edges) = ingest_and_edges(&broker, 2, &["--sim-rate", "50"]).await;
    let mut b = edges.pop().expect("edge B");
    let mut a = edges.pop().expect("edge A");

    // A reference client on B holds every message of the run, to compare bytes with: it
    // resumes from the start of every stream, so it holds what edge A sends whichever edge
    // is ahead (a client that subscribed fresh would start at B's position, which can be
    // past A's when A lags).
    let mut reference = connect(&b.ws_url()).await;
    let from: serde_json::Map<String, serde_json::Value> = CHANNELS
        .iter()
        .map(|c| (format!("{c}:AAPL"), 0.into()))
        .collect();
    let ack = subscribe(
        &mut reference,
        &["AAPL"],
        &CHANNELS,
        Some(&b.epoch().await),
        &from,
    )
    .await;
    for stream in ack["streams"].as_array().expect("streams") {
        assert_eq!(
            stream["recovered"], true,
            "the reference holds every stream from 1: {ack}"
        );
    }
    let (early, _) = read_until(&mut reference, WAIT, |g| updates_of(g, "ticker:AAPL") >= 5).await;
    // It records until it holds, on every stream, the last seq the resuming client got (told
    // once that is known): the reference may read behind the client, never stop short of it.
    let (targets, wanted) = tokio::sync::watch::channel(None::<BTreeMap<String, u64>>);
    let held_early: BTreeMap<String, u64> = positions(&early)
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
        .collect();
    let recording = tokio::spawn(async move {
        let (rest, _) = read_until(&mut reference, Duration::from_secs(30), |got| {
            let wanted = wanted.borrow();
            let Some(wanted) = wanted.as_ref() else {
                return false;
            };
            let held = positions(got);
            wanted.iter().all(|(stream, seq)| {
                held.get(stream)
                    .and_then(Value::as_u64)
                    .is_some_and(|h| h >= *seq)
                    || held_early.get(stream).is_some_and(|h| h >= seq)
            })
        })
        .await;
        rest
    });

    let (mut ws, ack) = client(&a, &["AAPL"], &CHANNELS).await;
    let epoch = ack["epoch"].as_str().expect("epoch").to_string();
    let (mut before, _) = read_until(&mut ws, WAIT, |g| updates_of(g, "ticker:AAPL") >= 40).await;
    a.kill();
    // What was already on its way arrives; then the connection ends.
    let (rest, _) = read_until(&mut ws, WAIT, |_| false).await;
    before.extend(rest);

    let mut ws = connect(&b.ws_url()).await;
    let ack = subscribe(
        &mut ws,
        &["AAPL"],
        &CHANNELS,
        Some(&epoch),
        &positions(&before),
    )
    .await;
    for stream in ack["streams"].as_array().expect("streams") {
        assert_eq!(stream["recovered"], true, "{ack}");
    }
    let (after, _) = read_until(&mut ws, WAIT, |g| updates_of(g, "ticker:AAPL") >= 40).await;
    assert!(
        after.iter().all(Got::is_update),
        "a recovered resume sends updates only"
    );
    let all: Vec<Got> = before.iter().chain(&after).cloned().collect();
    assert_contiguous(&all);

    let last: BTreeMap<String, u64> = positions(&all)
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
        .collect();
    targets.send(Some(last)).expect("the recording runs");
    let mut seen: BTreeMap<(String, u64), String> = BTreeMap::new();
    for g in early.iter().chain(&recording.await.expect("reference")) {
        seen.insert((g.stream(), g.seq()), g.text.clone());
    }
    let mut compared = 0;
    for g in all.iter().filter(|g| g.is_update()) {
        let held = seen
            .get(&(g.stream(), g.seq()))
            .unwrap_or_else(|| panic!("the reference missed {} {}", g.stream(), g.seq()));
        assert_eq!(held, &g.text, "edges A and B sent different bytes");
        compared += 1;
    }
    assert!(compared >= 80, "{compared} updates compared");
    b.kill();
}

#[tokio::test]
async fn a_replay_through_the_broker_is_the_replay_of_one_process() {
    // A recording: one second of what a simulator serves, as a client captured it.
    let sim = Node::start(None, &["--sim-rate", "50"]);
    sim.until_ready(true, WAIT).await;
    let symbols = ["AAPL", "BTC-USD"];
    let channels = ["ticker", "trades", "book", "book_25", "candles_1s"];
    let (mut ws, _) = client(&sim, &symbols, &channels).await;
    let (captured, _) = read_until(&mut ws, WAIT, |g| updates_of(g, "ticker:AAPL") >= 50).await;
    drop(sim);
    let path = common::broker::recorded_path("broker-replay");
    // A recording is in time order; each stream already is.
    let mut lines: Vec<&Got> = captured.iter().collect();
    lines.sort_by_key(|g| g.v["ts"].as_i64());
    let lines: Vec<&str> = lines.iter().map(|g| g.text.as_str()).collect();
    std::fs::write(&path, lines.join("\n")).expect("write the recording");
    let replay = [
        "--replay",
        path.to_str().expect("path"),
        "--replay-speed",
        "0",
    ];
    let history = ["--history", "100000"];

    let alone = Node::start(None, &[&replay[..], &history].concat());
    let broker = Broker::start();
    let ingest = Node::start(
        Some(&broker),
        &[&["--role", "ingest"], &replay[..], &history].concat(),
    );
    let edge = Node::start(Some(&broker), &[&["--role", "edge"], &history[..]].concat());
    let n = captured.len() as f64;
    alone
        .until_metric("tickstream_events_published_total", WAIT, |v| v >= n)
        .await;
    ingest
        .until_metric("tickstream_broker_events_total", WAIT, |v| v >= n)
        .await;
    edge.until_metric("tickstream_broker_events_total", WAIT, |v| v >= n)
        .await;

    // From the start of every stream, each server's window.
    let mut windows = Vec::new();
    for node in [&alone, &edge] {
        let epoch = node.epoch().await;
        let mut from = serde_json::Map::new();
        for s in symbols {
            for c in channels {
                from.insert(format!("{c}:{s}"), 0.into());
            }
        }
        let mut ws = connect(&node.ws_url()).await;
        let ack = subscribe(&mut ws, &symbols, &channels, Some(&epoch), &from).await;
        for stream in ack["streams"].as_array().expect("streams") {
            assert_eq!(stream["recovered"], true, "{ack}");
        }
        let (got, _) = read_until(&mut ws, WAIT, |g| g.len() >= captured.len()).await;
        // The same messages, but the times: a replay is re-timed to when it runs.
        let mut by_stream: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for g in got {
            let mut v = g.v.clone();
            v["ts"] = Value::Null;
            by_stream.entry(g.stream()).or_default().push(v);
        }
        windows.push(by_stream);
    }
    assert_eq!(windows[0].len(), symbols.len() * channels.len());
    assert_eq!(windows[0], windows[1]);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_broker_that_lost_its_data_is_a_new_epoch_and_clients_are_told() {
    let mut broker = Broker::start();
    let (_ingest, edges) = ingest_and_edges(&broker, 1, &["--sim-rate", "20"]).await;
    let edge = &edges[0];
    let (mut ws, ack) = client(edge, &["AAPL"], &["ticker"]).await;
    let old = ack["epoch"].as_str().expect("epoch").to_string();
    let (before, _) = read_until(&mut ws, WAIT, |g| g.len() >= 5).await;

    broker.restart_empty();
    let (_, other) = read_until(&mut ws, Duration::from_secs(15), |_| false).await;
    assert!(
        other.iter().any(|m| m["type"] == "reconnect"),
        "the client is told to resume: {other:?}"
    );
    edge.until_ready(true, Duration::from_secs(15)).await;
    let mut ws = connect(&edge.ws_url()).await;
    let ack = subscribe(
        &mut ws,
        &["AAPL"],
        &["ticker"],
        Some(&old),
        &positions(&before),
    )
    .await;
    assert_ne!(ack["epoch"], old.as_str(), "{ack}");
    assert_eq!(ack["streams"][0]["recovered"], false, "{ack}");
    let (after, _) = read_until(&mut ws, WAIT, |g| g.len() >= 5).await;
    // The stream's state (a snapshot at the acknowledged seq), or its next update when it has
    // none yet in the new epoch; then contiguous.
    let at = ack["streams"][0]["seq"].as_u64().expect("seq");
    let first = (&after[0].v["type"], after[0].seq());
    assert!(
        first == (&"snapshot".into(), at) || first == (&"update".into(), at + 1),
        "{} after {ack}",
        after[0].text
    );
    assert_contiguous(&after);
}

/// A failover that loses the last acknowledged writes (ElastiCache replicates asynchronously),
/// played by a broker restarted from a snapshot taken a moment before: the epoch key is still
/// there, so only the writer can tell. It must not number events again that edges already
/// served: a new epoch, and clients are told.
#[tokio::test]
async fn a_broker_that_lost_acknowledged_writes_is_a_new_epoch_never_a_renumbering() {
    let mut broker = Broker::start();
    let (ingest, edges) = ingest_and_edges(&broker, 1, &["--sim-rate", "20"]).await;
    let edge = &edges[0];
    let (mut ws, ack) = client(edge, &["AAPL"], &["ticker"]).await;
    let old = ack["epoch"].as_str().expect("epoch").to_string();
    let (_, _) = read_until(&mut ws, WAIT, |g| g.len() >= 3).await;
    broker.save().await;
    // Writes the snapshot does not have: acknowledged to the writer after it was taken.
    let saved = ingest.metric("tickstream_broker_events_total").await;
    ingest
        .until_metric("tickstream_broker_events_total", WAIT, |v| v > saved)
        .await;
    let (served, _) = read_until(&mut ws, WAIT, |g| g.len() >= 10).await;
    assert_contiguous(&served);

    broker.restart_from_snapshot();
    let (more, other) = read_until(&mut ws, Duration::from_secs(15), |_| false).await;
    assert!(
        other.iter().any(|m| m["type"] == "reconnect"),
        "the client is told to resume: {other:?}"
    );
    // Nothing the client got after the loss renumbers what it had: the old epoch's updates
    // stay contiguous and unique.
    let all: Vec<Got> = served.iter().chain(&more).cloned().collect();
    assert_contiguous(&all);
    edge.until_ready(true, Duration::from_secs(15)).await;
    let epoch = edge.epoch().await;
    assert_ne!(epoch, old, "a new epoch after lost writes");
}

/// The broker's position of `stream` (`ticker:AAPL`), read from `node`.
async fn broker_position(node: &Broker, stream: &str) -> u64 {
    let (channel, symbol) = stream.split_once(':').expect("channel:symbol");
    let key = format!("{{tickstream}}:s:{channel}:{symbol}");
    let seq: Option<u64> = node.query(&["HGET", "{tickstream}:seq", &key]).await;
    seq.expect("a position")
}

/// Reads `ws` until it holds `stream` at `seq` or later; contiguous, same epoch, nobody told
/// to resume.
async fn read_through(ws: &mut Ws, before: &[Got], stream: &str, seq: u64) -> Vec<Got> {
    let (got, other) = read_until(ws, Duration::from_secs(10), |g| {
        g.iter().any(|g| g.stream() == stream && g.seq() >= seq)
    })
    .await;
    assert!(
        !other.iter().any(|m| m["type"] == "reconnect"),
        "a failover that lost nothing is no new epoch: {other:?}"
    );
    let all = [before, &got[..]].concat();
    assert_contiguous(&all);
    all
}

#[tokio::test]
async fn a_clustered_broker_fails_over_with_no_gap_and_no_new_epoch() {
    let mut cluster = Cluster::start().await;
    // Every process is given the replica, as a cluster endpoint may resolve to one: they find
    // the primary by its MOVED.
    let entry = &cluster.nodes[1];
    let (ingest, edges) = ingest_and_edges(entry, 1, &["--sim-rate", "20"]).await;
    let edge = &edges[0];
    let (mut ws, ack) = client(edge, &["AAPL"], &["ticker", "trades"]).await;
    let epoch = ack["epoch"].as_str().expect("epoch").to_string();
    let (before, _) = read_until(&mut ws, WAIT, |g| g.len() >= 5).await;
    assert_contiguous(&before);

    let reconnects = ingest.metric("tickstream_broker_reconnects_total").await;
    cluster.failover(1).await;
    // The writer finds the new primary (its old connection is answered MOVED) and goes on:
    // what it was acknowledged is all there, so no new epoch.
    let published = ingest.metric("tickstream_broker_events_total").await;
    ingest
        .until_metric("tickstream_broker_events_total", WAIT, |v| {
            v >= published + 20.0
        })
        .await;
    assert!(ingest.metric("tickstream_broker_reconnects_total").await > reconnects);
    let now = broker_position(&cluster.nodes[1], "ticker:AAPL").await;
    let got = read_through(&mut ws, &before, "ticker:AAPL", now).await;
    assert_eq!(edge.epoch().await, epoch);

    // The old primary, now the replica the edge still reads from, goes away: the edge reaches
    // the new primary and the client misses nothing.
    let edge_reconnects = edge.metric("tickstream_broker_reconnects_total").await;
    cluster.nodes[0].kill();
    edge.until_metric("tickstream_broker_reconnects_total", WAIT, |v| {
        v > edge_reconnects
    })
    .await;
    edge.until_ready(true, WAIT).await;
    let published = ingest.metric("tickstream_broker_events_total").await;
    ingest
        .until_metric("tickstream_broker_events_total", WAIT, |v| {
            v >= published + 20.0
        })
        .await;
    let now = broker_position(&cluster.nodes[1], "ticker:AAPL").await;
    read_through(&mut ws, &got, "ticker:AAPL", now).await;
    assert_eq!(edge.epoch().await, epoch);
    assert_eq!(edge.metric("tickstream_broker_epochs_total").await, 0.0);
}

#[tokio::test]
async fn a_standby_ingest_takes_over_within_the_lease_and_clients_see_a_new_epoch() {
    let broker = Broker::start();
    let lease = ["--sim-rate", "20", "--broker-lease", "1s"];
    let (mut first, edges) = ingest_and_edges(&broker, 1, &lease).await;
    let standby = standby_of(&first, &broker, &lease).await;

    let edge = &edges[0];
    let (mut ws, ack) = client(edge, &["AAPL"], &["ticker", "book"]).await;
    let old = ack["epoch"].as_str().expect("epoch").to_string();
    let (before, _) = read_until(&mut ws, WAIT, |g| g.len() >= 5).await;
    assert_contiguous(&before);

    // The lease (1 s) runs out, and the standby asks every third of it.
    let took = takeover_after(&standby, || first.kill()).await;
    assert!(
        took <= Duration::from_millis(1_334 + 700),
        "took over after {took:?}"
    );
    let (got, other) = read_until(&mut ws, Duration::from_secs(10), |_| false).await;
    assert_contiguous(&[&before[..], &got[..]].concat());
    assert!(
        other.iter().any(|m| m["type"] == "reconnect"),
        "a new epoch is told, never a silent jump: {other:?}"
    );
    let mut ws = connect(&edge.ws_url()).await;
    let ack = subscribe(
        &mut ws,
        &["AAPL"],
        &["ticker", "book"],
        Some(&old),
        &positions(&before),
    )
    .await;
    assert_ne!(ack["epoch"], old.as_str());
    let (after, _) = read_until(&mut ws, WAIT, |g| updates_of(g, "book:AAPL") >= 5).await;
    assert_contiguous(&after);
}

#[tokio::test]
async fn a_paused_broker_makes_edges_unready_then_they_catch_up_with_no_gap() {
    let broker = Broker::start();
    let (ingest, edges) =
        ingest_and_edges(&broker, 1, &["--sim-rate", "20", "--broker-lease", "1s"]).await;
    let edge = &edges[0];
    let (mut ws, _) = client(edge, &["AAPL"], &["ticker", "book"]).await;
    let (before, _) = read_until(&mut ws, WAIT, |g| g.len() >= 5).await;

    broker.run(false);
    edge.until_ready(false, Duration::from_secs(8)).await;
    // Longer than the lease: the writer finds it expired, and nobody else wrote since.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    broker.run(true);
    edge.until_ready(true, Duration::from_secs(10)).await;

    let (after, other) = read_until(&mut ws, Duration::from_secs(10), |g| {
        updates_of(g, "ticker:AAPL") >= 60
    })
    .await;
    assert!(other.iter().all(|m| m["type"] != "reconnect"), "{other:?}");
    assert_contiguous(&[&before[..], &after[..]].concat());
    assert_eq!(ingest.metric("tickstream_broker_epochs_total").await, 1.0);
    assert_eq!(ingest.metric("tickstream_broker_dropped_total").await, 0.0);
}

#[tokio::test]
async fn a_writer_that_stops_hands_its_lease_over_at_once() {
    let broker = Broker::start();
    // The default lease, 3 s: a takeover well within it shows the lease was handed over.
    let args = ["--sim-rate", "20"];
    let (mut first, _edges) = ingest_and_edges(&broker, 0, &args).await;
    let standby = standby_of(&first, &broker, &args).await;
    let took = takeover_after(&standby, || first.terminate()).await;
    assert!(
        took < Duration::from_millis(2_000),
        "took over after {took:?}"
    );
}

/// `rediss://` with AUTH, as on ElastiCache with encryption in transit: the certificate is
/// checked (rustls with graviola's crypto, the system's roots moved by SSL_CERT_FILE), and a
/// wrong password keeps an ingest task unready rather than publishing nowhere.
#[tokio::test]
async fn a_broker_over_tls_with_a_password() {
    let broker = Broker::start_secure();
    let (_ingest, edges) = ingest_and_edges(&broker, 1, &["--sim-rate", "20"]).await;
    // Books too, from the start: the ingest sends each book's first update whole, so an edge
    // holds it at once rather than at the first checkpoint (256 updates later).
    let (mut ws, _) = client(&edges[0], &["AAPL"], &["ticker", "book"]).await;
    let (got, _) = read_until(&mut ws, Duration::from_secs(2), |g| {
        updates_of(g, "book:AAPL") >= 3
    })
    .await;
    assert_contiguous(&got);

    // The CA, but no password.
    let mut env = broker.client_env();
    env.retain(|(k, _)| k == "SSL_CERT_FILE");
    let unauthenticated = Node::start_with(Some(&broker), &["--role", "ingest"], env);
    unauthenticated.until_up().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!unauthenticated.ready().await, "no password: not ready");
    assert_eq!(unauthenticated.metric("tickstream_broker_up").await, 0.0);
    // The password, but not the CA: the certificate is refused.
    let mut env = broker.client_env();
    env.retain(|(k, _)| k != "SSL_CERT_FILE");
    let untrusting = Node::start_with(Some(&broker), &["--role", "ingest"], env);
    untrusting.until_up().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!untrusting.ready().await, "an unknown issuer: not ready");
}

/// An edge starts through its own path (it waits for the broker's writer): its API keys
/// still guard it.
#[tokio::test]
async fn an_edge_keeps_its_api_keys() {
    let broker = Broker::start();
    let (_ingest, _) = ingest_and_edges(&broker, 0, &["--sim-rate", "20"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys");
    std::fs::write(&file, "# edge keys\nsecret-key-1\n").expect("write keys");
    let edge = Node::start(
        Some(&broker),
        &[
            "--role",
            "edge",
            "--api-keys-file",
            file.to_str().expect("path"),
        ],
    );
    edge.until_ready(true, WAIT).await;
    let (status, body) = edge.get("/api/v1/symbols").await.expect("an answer");
    assert_eq!(status, 401, "{body}");
}

/// The broker user `infra/broker.yaml` creates on AWS, made on a real server from the
/// template's own access string: the service works as that user, and the user can do nothing
/// else (other keys, other channels, administration).
#[tokio::test]
async fn the_templates_broker_user_runs_the_service_and_nothing_else() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/broker.yaml"))
            .expect("infra/broker.yaml");
    let strings: Vec<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("AccessString: !Sub \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert_eq!(strings.len(), 2, "ElastiCache's and MemoryDB's users");
    assert_eq!(
        strings[0], strings[1],
        "both engines' users have one access string"
    );
    let rules = strings[0].replace("${Namespace}", "tickstream");

    let broker = Broker::start();
    let admin = redis::Client::open(broker.url()).expect("url");
    let mut admin = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect as the default user");
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg("svc").arg("reset");
    for rule in rules.split_whitespace() {
        setuser.arg(rule);
    }
    setuser.arg(">a-long-generated-password");
    let _: () = setuser
        .query_async(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("ACL SETUSER svc {rules}: {e}"));
    let as_svc = || {
        vec![
            ("TICKSTREAM_BROKER_USER".to_string(), "svc".to_string()),
            (
                "TICKSTREAM_BROKER_PASSWORD".to_string(),
                "a-long-generated-password".to_string(),
            ),
        ]
    };

    let ingest = Node::start_with(
        Some(&broker),
        &["--role", "ingest", "--sim-rate", "20"],
        as_svc(),
    );
    ingest.until_ready(true, WAIT).await;
    let edge = Node::start_with(Some(&broker), &["--role", "edge"], as_svc());
    edge.until_ready(true, WAIT).await;
    let (mut ws, _) = client(&edge, &["AAPL"], &["ticker", "trades", "book"]).await;
    let (got, _) = read_until(&mut ws, WAIT, |g| updates_of(g, "book:AAPL") >= 3).await;
    assert_contiguous(&got);

    // Outside its namespace, the same user is refused, so such a task never becomes ready.
    let elsewhere = Node::start_with(
        Some(&broker),
        &["--role", "ingest", "--broker-namespace", "other"],
        as_svc(),
    );
    elsewhere.until_up().await;
    elsewhere
        .until_metric("tickstream_broker_reconnects_total", WAIT, |v| v >= 1.0)
        .await;
    assert!(!elsewhere.ready().await, "another namespace: not ready");
    for command in [
        &["GET", "other:key"][..],
        &["PUBLISH", "other:events", "x"],
        &["FLUSHALL"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["KEYS", "{tickstream}:*"],
        &["ACL", "LIST"],
    ] {
        let verdict: String = redis::cmd("ACL")
            .arg("DRYRUN")
            .arg("svc")
            .arg(command)
            .query_async(&mut admin)
            .await
            .expect("ACL DRYRUN");
        assert_ne!(verdict, "OK", "the service's user may run {command:?}");
    }
    let verdict: String = redis::cmd("ACL")
        .arg("DRYRUN")
        .arg("svc")
        .arg(&["XRANGE", "{tickstream}:s:ticker:AAPL", "-", "+"])
        .query_async(&mut admin)
        .await
        .expect("ACL DRYRUN");
    assert_eq!(verdict, "OK", "its own streams");
}
