//! `--source kraken` against a local double of Kraken's WebSocket v2 book channel: clients hold
//! exactly the venue's book after every message; a corrupted checksum resyncs that symbol alone
//! (a reset snapshot in sequence); a dropped or silent connection is retried and every book
//! comes back as a reset; a pair the venue refuses leaves the others working.

mod common;

use std::time::Duration;

use common::book_client::{Clients, until};
use common::kraken_double::KrakenDouble;
use common::*;
use serde_json::Value;
use tickstream::config::Source;

/// A server whose source is `venue`, for the Kraken instruments `pairs`.
async fn kraken_server(venue: &KrakenDouble, pairs: &[&str]) -> Server {
    let url = venue.url();
    let pairs: Vec<String> = pairs.iter().map(|p| (*p).to_string()).collect();
    start(move |c| {
        c.source = Source::Kraken;
        c.symbols = pairs;
        c.kraken_url = url;
    })
    .await
}

#[tokio::test]
async fn clients_hold_the_venues_book_through_a_bad_checksum_and_a_dropped_connection() {
    let venue = KrakenDouble::start(&["BTC/USD", "ETH/USD"]).await;
    let server = kraken_server(&venue, &["BTC/USD", "ETH/USD", "SOL/USD"]).await;
    let (status, symbols) = server.get("/api/v1/symbols").await;
    assert_eq!(status, 200);
    assert_eq!(symbols["source"], "kraken");
    assert_eq!(
        symbols["symbols"],
        serde_json::json!(["BTC-USD", "ETH-USD", "SOL-USD"])
    );

    let mut ws = server
        .connect("?symbols=BTC-USD,ETH-USD&channels=book_100,book")
        .await;
    let mut clients = Clients::default();
    let at_venue = |clients: &Clients, venue: &KrakenDouble| {
        clients.view("book_100:BTC-USD") == venue.book("BTC/USD").top(100)
            && clients.view("book_100:ETH-USD") == venue.book("ETH/USD").top(100)
            && clients.view("book:BTC-USD") == venue.book("BTC/USD").top(10)
    };
    for _ in 0..20 {
        venue.step();
    }
    until(&mut ws, &mut clients, "the venue's book", |c| {
        at_venue(c, &venue)
    })
    .await;

    // A corrupted checksum on BTC/USD: that pair alone is subscribed again, and its streams
    // carry a reset snapshot; ETH-USD goes on untouched.
    venue.corrupt_next("BTC/USD");
    venue.step();
    until(
        &mut ws,
        &mut clients,
        "the reset after a bad checksum",
        |c| {
            c.resets("book_100:BTC-USD") == 1
                && c.resets("book:BTC-USD") == 1
                && c.statuses("book_100:BTC-USD") == ["stale", "live"]
        },
    )
    .await;
    assert_eq!(venue.subscribes("BTC/USD"), 2);
    assert_eq!(venue.subscribes("ETH/USD"), 1);
    assert_eq!(server.state.metrics.book_resyncs.get(), 1);
    for _ in 0..5 {
        venue.step();
    }
    until(&mut ws, &mut clients, "in step again", |c| {
        at_venue(c, &venue)
    })
    .await;
    assert_eq!(clients.resets("book_100:ETH-USD"), 0);
    assert!(
        clients.statuses("book_100:ETH-USD").is_empty(),
        "ETH-USD was never stale"
    );

    // The connection drops: it is made again, every book comes back as a reset.
    venue.drop_connections();
    until(&mut ws, &mut clients, "resets after a reconnect", |c| {
        c.resets("book_100:ETH-USD") == 1
            && c.resets("book_100:BTC-USD") == 2
            && c.statuses("book_100:ETH-USD") == ["stale", "live"]
    })
    .await;
    assert_eq!(venue.connections(), 2);
    for _ in 0..5 {
        venue.step();
    }
    until(&mut ws, &mut clients, "in step after the reconnect", |c| {
        at_venue(c, &venue)
    })
    .await;
    assert!(server.state.metrics.venue_reconnects.get() >= 1);

    // The pair the venue refused has no book; the server says so rather than inventing one,
    // and lists it as stale.
    let (status, body) = server.get("/api/v1/book/SOL-USD").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (_, symbols) = server.get("/api/v1/symbols").await;
    assert_eq!(symbols["stale"], serde_json::json!(["SOL-USD"]));
    let (_, metrics) = server.get("/metrics").await;
    let metrics = metrics.as_str().expect("text exposition");
    for line in [
        "tickstream_source_info{source=\"kraken\"} 1",
        "tickstream_stale_symbols 1",
        // The connection is up: one pair is refused, the others are live.
        "tickstream_venue_up 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(
        (status, &ready["source_up"]),
        (200, &Value::Bool(false)),
        "{ready}"
    );
    // A new subscriber to a stale stream is told in the acknowledgement.
    let mut late = server.connect("").await;
    let subscribe = serde_json::json!({"op": "subscribe", "symbols": ["SOL-USD", "BTC-USD"], "channels": ["book"]});
    send(&mut late, subscribe).await;
    let ack = recv_control(&mut late).await;
    assert_eq!(ack["streams"][0]["status"], "stale", "{ack}");
    assert!(ack["streams"][1].get("status").is_none(), "{ack}");
}

#[tokio::test]
async fn a_silent_venue_is_treated_as_down_and_reconnected() {
    let venue = KrakenDouble::start(&["BTC/USD"]).await;
    let server = kraken_server(&venue, &["BTC/USD"]).await;
    assert_eq!(venue.connections(), 1);
    venue.silence(true);
    eventually(
        "a reconnect after silence",
        tickstream::feed::kraken::SILENCE * 2,
        || venue.connections() >= 2,
    )
    .await;
    assert!(server.state.metrics.venue_reconnects.get() >= 1);
}

#[tokio::test]
async fn over_tls_the_venue_is_trusted_through_the_given_ca_and_an_unknown_certificate_is_refused()
{
    let venue = KrakenDouble::start_tls(&["BTC/USD"]).await;
    assert!(venue.url().starts_with("wss://"));
    let (url, ca) = (venue.url(), venue.ca_file());
    let server = start(move |c| {
        c.source = Source::Kraken;
        c.symbols = vec!["BTC/USD".into()];
        c.kraken_url = url;
        c.tls_ca_file = ca;
    })
    .await;
    let mut ws = server.connect("?symbols=BTC-USD&channels=book_100").await;
    let mut clients = Clients::default();
    for _ in 0..5 {
        venue.step();
    }
    until(&mut ws, &mut clients, "the venue's book over TLS", |c| {
        c.view("book_100:BTC-USD") == venue.book("BTC/USD").top(100)
    })
    .await;
    assert_eq!(venue.tls_failures(), 0);

    // A server that trusts another CA refuses the double's certificate: no book, the source
    // is down and retried, and nothing is published from it.
    let other = common::tls::TestTls::new(&["127.0.0.1"]);
    let (url, ca) = (venue.url(), Some(other.ca_file.clone()));
    let wary = start_unready(move |c| {
        c.source = Source::Kraken;
        c.symbols = vec!["BTC/USD".into()];
        c.kraken_url = url;
        c.tls_ca_file = ca;
    })
    .await;
    eventually(
        "a retried untrusted handshake",
        Duration::from_secs(10),
        || venue.tls_failures() >= 2,
    )
    .await;
    assert!(wary.state.metrics.venue_reconnects.get() >= 1);
    assert_eq!(wary.state.metrics.venue_up.get(), 0);
    let (_, symbols) = wary.get("/api/v1/symbols").await;
    assert_eq!(symbols["stale"], serde_json::json!(["BTC-USD"]));
}

#[tokio::test]
async fn kraken_trades_reach_clients_exactly_build_candles_and_tickers_pass_through() {
    let venue = KrakenDouble::start(&["BTC/USD"]).await;
    let server = kraken_server(&venue, &["BTC/USD"]).await;
    eventually(
        "trade and ticker subscriptions",
        Duration::from_secs(5),
        || venue.channel_subscribes() >= 2,
    )
    .await;
    assert_eq!(venue.trade_snapshots(), 0, "only new trades are asked for");
    let mut ws = server
        .connect("?symbols=BTC-USD&channels=trades,candles_1s,ticker")
        .await;
    // Kraken prints numbers with their trailing zeros; clients get the same digits.
    venue.trade("BTC/USD", "105944.20", "0.00027625", true);
    venue.trade("BTC/USD", "105950.1", "0.5", false);
    venue.trade("BTC/USD", "105940.00", "1.00000000", true);
    let expected = [
        ("105944.20", "0.00027625", "buy"),
        ("105950.1", "0.5", "sell"),
        ("105940.00", "1.00000000", "buy"),
    ];
    common::market_client::expect_trades_and_candles(&mut ws, "BTC-USD", &expected).await;
    venue.ticker(
        "BTC/USD",
        "105940.1",
        "105940.2",
        "105940.00",
        "1234.5678",
        "-120.35",
    );
    let t = common::market_client::expect_ticker(&mut ws, "BTC-USD").await;
    assert_eq!(
        t,
        serde_json::json!({"bid": "105940.1", "ask": "105940.2", "last": "105940.00",
            "open": "106060.35", "change": "-120.35", "volume": "1234.5678"})
    );
}
