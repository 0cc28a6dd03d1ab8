//! `tickstream-load kraken-double`: a Kraken WebSocket v2 `book` feed for benchmarks, so the
//! venue-to-client latency of `--source kraken` can be measured with no internet. Each pair's
//! book has ten levels a side; every update resizes one level and carries Kraken's CRC32 of the
//! top ten (implemented here from Kraken's description, apart from the server's code, so a
//! mistake in either shows as resyncs). Other channels' subscriptions are acknowledged and get
//! nothing. Updates go out at `--rate` per pair per second to every connection subscribed.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:18800")]
    listen: SocketAddr,
    /// Pairs served: `P0/USD`, `P1/USD`, ...
    #[arg(long, default_value_t = 10)]
    pairs: usize,
    /// Book updates per pair per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
}

const LEVELS: usize = 10;

/// A pair's book: prices fixed (in cents), sizes changing (in 1e-8).
#[derive(Clone)]
struct Book {
    bids: [(i64, i64); LEVELS],
    asks: [(i64, i64); LEVELS],
}

impl Book {
    fn new(n: usize) -> Self {
        let mid = 5_000_000 + n as i64 * 10_000;
        Self {
            bids: std::array::from_fn(|i| (mid - 1 - i as i64, 100_000_000 + i as i64)),
            asks: std::array::from_fn(|i| (mid + 1 + i as i64, 200_000_000 + i as i64)),
        }
    }

    /// Kraken's v2 checksum: asks from the lowest up, then bids from the highest down; price
    /// and size as printed, without the decimal point and leading zeros.
    fn checksum(&self) -> u32 {
        let mut s = String::new();
        for &(p, q) in self.asks.iter().chain(self.bids.iter()) {
            for text in [price(p), size(q)] {
                let digits: String = text.chars().filter(|c| *c != '.').collect();
                s.push_str(digits.trim_start_matches('0'));
            }
        }
        crc32fast::hash(s.as_bytes())
    }
}

fn price(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn size(units: i64) -> String {
    format!("{}.{:08}", units / 100_000_000, units % 100_000_000)
}

fn levels(side: &[(i64, i64)]) -> String {
    side.iter()
        .map(|&(p, q)| format!(r#"{{"price":{},"qty":{}}}"#, price(p), size(q)))
        .collect::<Vec<_>>()
        .join(",")
}

fn message(kind: &str, pair: &str, bids: &[(i64, i64)], asks: &[(i64, i64)], sum: u32) -> String {
    format!(
        r#"{{"channel":"book","type":"{kind}","data":[{{"symbol":"{pair}","bids":[{}],"asks":[{}],"checksum":{sum},"timestamp":"2026-12-03T10:00:00.000000Z"}}]}}"#,
        levels(bids),
        levels(asks)
    )
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("kraken double listening on {}", listener.local_addr()?);
    let names: Vec<String> = (0..args.pairs).map(|i| format!("P{i}/USD")).collect();
    // (pair index, update number, update text)
    let (tx, _) = broadcast::channel::<(usize, u64, String)>(65_536);
    // Each pair's latest snapshot and the number of the update it includes.
    let snapshots: Vec<(u64, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let b = Book::new(i);
            (0, message("snapshot", n, &b.bids, &b.asks, b.checksum()))
        })
        .collect();
    let latest = std::sync::Arc::new(std::sync::Mutex::new(snapshots));
    let (t, l) = (tx.clone(), latest.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (rx, latest) = (t.subscribe(), l.clone());
            tokio::spawn(serve(tcp, rx, latest));
        }
    });
    let mut books: Vec<Book> = (0..args.pairs).map(Book::new).collect();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut clock = tokio::time::interval(period);
    let mut n: u64 = 0;
    loop {
        clock.tick().await;
        for (i, book) in books.iter_mut().enumerate() {
            n = n.wrapping_add(1);
            let level = (n % LEVELS as u64) as usize;
            let new = 1 + (n.wrapping_mul(2_654_435_761) % 500_000_000) as i64;
            let (bids, asks): (Vec<_>, Vec<_>) = if n.is_multiple_of(2) {
                book.bids[level].1 = new;
                (vec![book.bids[level]], vec![])
            } else {
                book.asks[level].1 = new;
                (vec![], vec![book.asks[level]])
            };
            let sum = book.checksum();
            let update = message("update", &names[i], &bids, &asks, sum);
            let snapshot = message("snapshot", &names[i], &book.bids, &book.asks, sum);
            // The snapshot first, under its lock: a subscriber that reads it skips the updates
            // it already includes.
            if let Ok(mut l) = latest.lock() {
                l[i] = (n, snapshot);
            }
            let _ = tx.send((i, n, update));
        }
    }
}

type Latest = std::sync::Arc<std::sync::Mutex<Vec<(u64, String)>>>;

async fn serve(
    tcp: tokio::net::TcpStream,
    mut rx: broadcast::Receiver<(usize, u64, String)>,
    latest: Latest,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    // (pair, the update number its snapshot included)
    let mut subscribed: Vec<(usize, u64)> = Vec::new();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let req: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let channel = req["params"]["channel"].as_str().unwrap_or("");
                let pairs: Vec<String> = req["params"]["symbol"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                for pair in pairs {
                    let ack = json!({"method": req["method"], "result": {"channel": channel, "symbol": pair}, "success": true});
                    if ws.send(Message::text(ack.to_string())).await.is_err() {
                        return;
                    }
                    let index = pair.strip_prefix('P').and_then(|r| r.strip_suffix("/USD")).and_then(|i| i.parse::<usize>().ok());
                    if let (Some(i), "book", Some("subscribe")) = (index, channel, req["method"].as_str()) {
                        let snap = latest.lock().map(|l| l.get(i).cloned()).ok().flatten();
                        if let Some((at, snap)) = snap {
                            subscribed.push((i, at));
                            if ws.send(Message::text(snap)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            update = rx.recv() => match update {
                Ok((i, n, text)) => {
                    let wanted = subscribed.iter().any(|&(p, at)| p == i && n > at);
                    if wanted && ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
