//! `--source coinbase` against a local double of Coinbase Advanced Trade's `level2` channel:
//! a product whose snapshot is larger than the 16 MiB frame limit common clients default to is
//! taken whole; clients hold exactly the venue's book; a skipped `sequence_num` rebuilds that
//! product alone (its own connection, a new snapshot, a reset in sequence); a dropped
//! connection brings every book back as a reset; a product Coinbase refuses stays stale
//! without disturbing the others. The double checks the subscribe deadline and shapes.

mod common;

use std::time::Duration;

use common::book_client::{Clients, until};
use common::coinbase_double::CoinbaseDouble;
use common::*;
use tickstream::config::Source;

#[tokio::test]
async fn clients_hold_coinbases_book_through_a_large_snapshot_a_sequence_gap_and_a_reconnect() {
    // About 18 MB of snapshot for BTC-USD.
    let venue = CoinbaseDouble::start(&[("BTC-USD", 85_000), ("ETH-USD", 200)]).await;
    let url = venue.url();
    let server = start_unready(move |c| {
        c.source = Source::Coinbase;
        c.symbols = vec!["BTC-USD".into(), "eth-usd".into(), "FOO-USD".into()];
        c.coinbase_url = url;
    })
    .await;
    eventually("the books", Duration::from_secs(30), || {
        server.state.hub.stale_symbols() == ["FOO-USD"]
    })
    .await;
    assert!(server.state.is_ready());
    assert!(
        venue.largest_message() > 16 << 20,
        "the snapshot exceeds 16 MiB: {}",
        venue.largest_message()
    );
    let (_, symbols) = server.get("/api/v1/symbols").await;
    assert_eq!(symbols["source"], "coinbase");
    assert_eq!(
        symbols["symbols"],
        serde_json::json!(["BTC-USD", "ETH-USD", "FOO-USD"])
    );

    let mut ws = server
        .connect("?symbols=BTC-USD,ETH-USD&channels=book_100,book")
        .await;
    let mut clients = Clients::default();
    let at_venue = |clients: &Clients, venue: &CoinbaseDouble| {
        clients.view("book_100:BTC-USD") == venue.top("BTC-USD", 100)
            && clients.view("book_100:ETH-USD") == venue.top("ETH-USD", 100)
            && clients.view("book:BTC-USD") == venue.top("BTC-USD", 10)
    };
    for _ in 0..5 {
        venue.step();
    }
    until(&mut ws, &mut clients, "the venue's book", |c| {
        at_venue(c, &venue)
    })
    .await;

    // A skipped sequence number on BTC-USD's connection: that product alone is subscribed
    // again on a new connection; ETH-USD goes on untouched.
    venue.skip_next("BTC-USD");
    venue.step();
    until(&mut ws, &mut clients, "the reset after a gap", |c| {
        c.resets("book_100:BTC-USD") == 1
            && c.resets("book:BTC-USD") == 1
            && c.statuses("book_100:BTC-USD") == ["stale", "live"]
    })
    .await;
    assert_eq!(server.state.metrics.book_resyncs.get(), 1);
    assert_eq!(
        (venue.subscribes("BTC-USD"), venue.subscribes("ETH-USD")),
        (2, 1)
    );
    for _ in 0..3 {
        venue.step();
    }
    until(&mut ws, &mut clients, "in step again", |c| {
        at_venue(c, &venue)
    })
    .await;
    assert_eq!(clients.resets("book_100:ETH-USD"), 0);
    assert!(clients.statuses("book_100:ETH-USD").is_empty());

    // Every connection drops: every book comes back as a reset.
    venue.drop_connections();
    until(&mut ws, &mut clients, "resets after a reconnect", |c| {
        c.resets("book_100:ETH-USD") == 1
            && c.resets("book_100:BTC-USD") == 2
            && c.statuses("book_100:ETH-USD") == ["stale", "live"]
    })
    .await;
    for _ in 0..3 {
        venue.step();
    }
    until(&mut ws, &mut clients, "in step after the reconnect", |c| {
        at_venue(c, &venue)
    })
    .await;

    // FOO-USD is refused: stale, retried with backoff, no book invented.
    let (status, body) = server.get("/api/v1/book/FOO-USD").await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(
        server.state.metrics.venue_up.get(),
        0,
        "not every product is up"
    );
    assert_eq!(venue.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn coinbase_trades_reach_clients_exactly_build_candles_and_tickers_pass_through() {
    let venue = CoinbaseDouble::start(&[("ETH-USD", 50)]).await;
    let url = venue.url();
    let server = start(move |c| {
        c.source = Source::Coinbase;
        c.symbols = vec!["ETH-USD".into()];
        c.coinbase_url = url;
    })
    .await;
    let mut ws = server
        .connect("?symbols=ETH-USD&channels=trades,candles_1s,ticker")
        .await;
    // The channels are subscribed after level2: the book may be live before they are.
    eventually(
        "trade and ticker subscriptions",
        Duration::from_secs(5),
        || venue.channel_subscribes() >= 2,
    )
    .await;
    venue.trade("ETH-USD", "4000.50", "1.25000000", "SELL");
    venue.trade("ETH-USD", "3998.00", "0.50000000", "BUY");
    let expected = [
        ("4000.50", "1.25000000", "sell"),
        ("3998.00", "0.50000000", "buy"),
    ];
    common::market_client::expect_trades_and_candles(&mut ws, "ETH-USD", &expected).await;
    venue.ticker(
        "ETH-USD",
        ["4000.00", "12345.6789", "25", "3999.99", "4000.01"],
    );
    let t = common::market_client::expect_ticker(&mut ws, "ETH-USD").await;
    // Coinbase sends no open: it is the price 25 % lower, at the price's decimals.
    assert_eq!(
        t,
        serde_json::json!({"bid": "3999.99", "ask": "4000.01", "last": "4000.00",
            "open": "3200.00", "change": "800.00", "volume": "12345.6789"})
    );
    assert_eq!(venue.violations(), Vec::<String>::new());
}
