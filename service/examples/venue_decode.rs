//! Venue book messages decoded, checked and turned into our four book streams' messages, per
//! CPU-second (issue #15's figure; target 200,000). Single thread, release build:
//!
//!     cargo run --release --example venue_decode
//!
//! Kraken: an update of 4 levels on a 100-level BTC/USD book, parsed from text, applied,
//! truncated, checksummed, then differenced into book/book_25/book_50/book_100 and encoded as
//! JSON frames as the hub does. Binance: a diff-depth event of 4 levels through the documented
//! procedure, then the same. Coinbase: an l2_data update of 4 levels on the full book.

use std::time::Instant;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

use tickstream::book::{Depths, Level, View, checksum};
use tickstream::hub::DataMessage;
use tickstream::market::{Channel, Decimal, Payload};
use tickstream::venue::{binance, coinbase, kraken};

const N: u64 = 200_000;

fn book(base: i64) -> View {
    View {
        bids: (0..100)
            .map(|i| {
                Level::new(
                    Decimal::new(base - i * 3, 1),
                    Decimal::new(10_000_000 + i * 7, 8),
                )
            })
            .collect(),
        asks: (0..100)
            .map(|i| {
                Level::new(
                    Decimal::new(base + 17 + i * 3, 1),
                    Decimal::new(20_000_000 + i * 5, 8),
                )
            })
            .collect(),
    }
}

/// Publishes a view as the four tiers' messages, encoded as the hub's `Encode` would.
fn publish(depths: &mut Depths, view: View, bytes: &mut usize, checksum: Option<u32>) {
    let updates = match checksum {
        Some(sum) => depths.next_checked(view, false, sum),
        None => depths.next(view, false),
    };
    for (channel, update) in Channel::BOOKS.into_iter().zip(updates) {
        let payload = Payload::Book(update);
        let msg = DataMessage {
            kind: "update",
            channel,
            symbol: "BTC-USD",
            seq: 1,
            ts: 1,
            data: &payload,
        };
        *bytes += tickstream::ws::protocol::data_frame(&msg).len();
    }
}

fn report(venue: &str, start: (Instant, f64), bytes: usize) {
    let cpu = cpu_seconds() - start.1;
    let wall = start.0.elapsed().as_secs_f64();
    println!(
        "{venue:9} {N} messages: {:.0} per CPU-second ({:.0} per wall second), {} bytes out",
        N as f64 / cpu.max(1e-9),
        N as f64 / wall,
        bytes
    );
}

fn main() {
    // Kraken: the update alternates a level's size so the book stays 100 deep.
    let mut kbook = kraken::KrakenBook::new(100);
    let snap = book(4_528_350);
    let side = |levels: &[Level]| {
        levels
            .iter()
            .map(|l| format!(r#"{{"price":{},"qty":{}}}"#, l.price, l.size))
            .collect::<Vec<_>>()
            .join(",")
    };
    let snapshot = format!(
        r#"{{"channel":"book","type":"snapshot","data":[{{"symbol":"BTC/USD","bids":[{}],"asks":[{}],"checksum":{},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}"#,
        side(&snap.bids),
        side(&snap.asks),
        checksum(&snap.bids, &snap.asks)
    );
    kbook.apply(&kraken::parse_book(&snapshot).expect("snapshot")[0]);
    let mut texts = Vec::new();
    for k in 0..2 {
        let mut after = snap.clone();
        let changes: Vec<Level> = (0..2)
            .map(|i| Level::new(snap.bids[i * 3].price, Decimal::new(30_000_000 + k, 8)))
            .collect();
        let asks: Vec<Level> = (0..2)
            .map(|i| Level::new(snap.asks[i * 5].price, Decimal::new(40_000_000 + k, 8)))
            .collect();
        for (i, l) in changes.iter().enumerate() {
            after.bids[i * 3] = *l;
        }
        for (i, l) in asks.iter().enumerate() {
            after.asks[i * 5] = *l;
        }
        texts.push(format!(
            r#"{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":[{}],"asks":[{}],"checksum":{},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}"#,
            side(&changes),
            side(&asks),
            checksum(&after.bids, &after.asks)
        ));
    }
    let mut depths = Depths::default();
    let (mut bytes, start) = (0, (Instant::now(), cpu_seconds()));
    for i in 0..N {
        let msg = &kraken::parse_book(&texts[(i % 2) as usize]).expect("update")[0];
        assert_eq!(kbook.apply(msg), kraken::Outcome::Publish { reset: false });
        // As the feed does: the checksum Kraken sent, which apply has verified.
        publish(
            &mut depths,
            kbook.view().clone(),
            &mut bytes,
            Some(msg.checksum),
        );
    }
    report("kraken", start, bytes);

    // Binance: consecutive update ids.
    let mut bbook = binance::DepthBook::new(100);
    let first = binance::parse_update(
        r#"{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":10,"u":10,"b":[],"a":[]}"#,
    )
    .expect("event");
    bbook.on_update(first);
    let levels = |l: &[Level]| {
        l.iter()
            .map(|l| format!(r#"["{}","{}"]"#, l.price, l.size))
            .collect::<Vec<_>>()
            .join(",")
    };
    let snapshot = format!(
        r#"{{"lastUpdateId":10,"bids":[{}],"asks":[{}]}}"#,
        levels(&snap.bids),
        levels(&snap.asks)
    );
    bbook.on_snapshot(binance::parse_snapshot(&snapshot).expect("snapshot"));
    let mut depths = Depths::default();
    let (mut bytes, start) = (0, (Instant::now(), cpu_seconds()));
    for i in 0..N {
        let id = 11 + i;
        let text = format!(
            r#"{{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":{id},"u":{id},"b":[["{}","0.3{}"],["{}","0.4"]],"a":[["{}","0.5"],["{}","0.6{}"]]}}"#,
            snap.bids[3].price,
            i % 7,
            snap.bids[6].price,
            snap.asks[2].price,
            snap.asks[9].price,
            i % 5
        );
        let event = binance::parse_update(&text).expect("event");
        assert_eq!(
            bbook.on_update(event),
            binance::Step::Publish { reset: false }
        );
        publish(&mut depths, bbook.view().clone(), &mut bytes, None);
    }
    report("binance", start, bytes);

    // Coinbase: the full book, absolute sizes.
    let mut cbook = coinbase::FullBook::default();
    let updates = |kind: &str, bids: &[Level], asks: &[Level]| {
        let one = |side: &str, l: &Level| {
            format!(
                r#"{{"side":"{side}","event_time":"2024-01-01T00:00:00Z","price_level":"{}","new_quantity":"{}"}}"#,
                l.price, l.size
            )
        };
        let all: Vec<String> = bids
            .iter()
            .map(|l| one("bid", l))
            .chain(asks.iter().map(|l| one("offer", l)))
            .collect();
        format!(
            r#"{{"channel":"l2_data","client_id":"","timestamp":"2024-01-01T00:00:00Z","sequence_num":1,"events":[{{"type":"{kind}","product_id":"BTC-USD","updates":[{}]}}]}}"#,
            all.join(",")
        )
    };
    let msg = coinbase::parse(&updates("snapshot", &snap.bids, &snap.asks)).expect("snapshot");
    cbook.apply(&msg.books[0]);
    let texts: Vec<String> = (0..2)
        .map(|k| {
            let b: Vec<Level> = (0..2)
                .map(|i| Level::new(snap.bids[i * 4].price, Decimal::new(50_000_000 + k, 8)))
                .collect();
            let a: Vec<Level> = (0..2)
                .map(|i| Level::new(snap.asks[i * 4].price, Decimal::new(60_000_000 + k, 8)))
                .collect();
            updates("update", &b, &a)
        })
        .collect();
    let mut depths = Depths::default();
    let (mut bytes, start) = (0, (Instant::now(), cpu_seconds()));
    for i in 0..N {
        let msg = coinbase::parse(&texts[(i % 2) as usize]).expect("update");
        cbook.apply(&msg.books[0]);
        publish(&mut depths, cbook.top(100), &mut bytes, None);
    }
    report("coinbase", start, bytes);
}
