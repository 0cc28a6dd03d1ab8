//! Events per second one ingest task publishes into a broker (issue #16's figure): the
//! ingest's sink and writer, as `--role ingest` runs them, against the Valkey or Redis at
//! `TICKSTREAM_BROKER` (default `redis://127.0.0.1:6379`; `scripts/bench broker` starts one).
//!
//!     cargo run --release --example broker_publish
//!
//! 10 symbols; each tick publishes a trade and a book update (ten levels a side, about 3 levels
//! changed) per symbol, as a venue would. The source is kept at most 20,000 events ahead of the
//! broker, well inside the ingest's queue bound, so what is measured is the broker's pace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tickstream::book::{Depths, Level, View};
use tickstream::broker::Sink;
use tickstream::broker::ingest::{Ingest, WriterConfig, write};
use tickstream::config::Config;
use tickstream::hub::Batch;
use tickstream::market::{Channel, Decimal, Event, Payload, Side, Trade};
use tickstream::metrics::Metrics;
use tokio_util::sync::CancellationToken;

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_seconds;

const EVENTS: u64 = 400_000;
const SYMBOLS: u16 = 10;
const AHEAD: u64 = 20_000;

fn view(tick: u64) -> View {
    let level = |p: i64, s: i64| Level::new(Decimal::new(p, 2), Decimal::new(s, 0));
    let t = tick as i64;
    View {
        bids: (0..10)
            .map(|i| level(10_000 - i, 1 + (t + i) % 5))
            .collect(),
        asks: (0..10)
            .map(|i| level(10_001 + i, 1 + (t * 3 + i) % 7))
            .collect(),
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("TICKSTREAM_BROKER").unwrap_or("redis://127.0.0.1:6379".into());
    let config = Config::parse_from(["tickstream", "--role", "ingest", "--broker", &url]);
    let client = tickstream::broker::client(&config).expect("broker URL");
    let metrics = Arc::new(Metrics::new());
    let symbols = (0..SYMBOLS).map(|i| format!("S{i}")).collect();
    let ingest = Arc::new(Ingest::new(symbols, "bench", 1024, metrics.clone()));
    let stop = CancellationToken::new();
    let (leased, mut holding) = tokio::sync::watch::channel(false);
    let writer = WriterConfig {
        lease: Duration::from_secs(3),
        meta: r#"{"source":"bench","symbols":[]}"#.into(),
        source: "bench",
    };
    tokio::spawn(write(
        ingest.clone(),
        client,
        writer,
        stop.clone(),
        move |h| {
            let _ = leased.send(h);
        },
    ));
    holding.wait_for(|h| *h).await.expect("the lease");

    let mut depths: Vec<Depths> = (0..SYMBOLS).map(|_| Depths::default()).collect();
    let mut batch = Batch::default();
    let mut events = Vec::new();
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut published = 0u64;
    let mut tick = 0u64;
    while published < EVENTS {
        while published > metrics.broker_events.get() + AHEAD {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tick += 1;
        for (s, depths) in depths.iter_mut().enumerate() {
            let [book, ..] = depths.next(view(tick), false);
            let trade = Trade {
                price: Decimal::new(10_000 + (tick % 3) as i64, 2),
                size: Decimal::new(1 + (tick % 9) as i64, 0),
                side: if tick.is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                },
            };
            let ts = tickstream::feed::now_micros();
            for (channel, payload) in [
                (Channel::Book, Payload::Book(book)),
                (Channel::Trades, Payload::Trade(trade)),
            ] {
                events.push(Event {
                    channel,
                    symbol: s as u16,
                    seq: tick,
                    ts,
                    payload,
                });
            }
        }
        published += events.len() as u64;
        ingest.publish(&mut events, &mut batch);
    }
    while metrics.broker_events.get() < published {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    stop.cancel();
    assert_eq!(metrics.broker_dropped.get(), 0, "nothing dropped");
    println!(
        "{{\"label\":\"broker-publish\",\"events\":{published},\"events_per_s\":{:.0},\"ingest_cpu_s_per_m\":{:.2}}}",
        published as f64 / wall,
        cpu / published as f64 * 1e6
    );
}
