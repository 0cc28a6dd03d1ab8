//! What a client of a live source's `trades`, `candles_1s` and `ticker` streams checks: trades
//! exactly as the venue printed them, in order with contiguous `seq`; each closed one-second
//! candle equal to the open, high, low, close, volume and count of the trades whose venue time
//! falls in its second; tickers exactly as the venue sent them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tickstream::market::Decimal;

use super::{Ws, recv};

/// Reads until the trades `expected` (price, size, side as the client receives them) have
/// arrived on `trades:{symbol}` and every second they fall in has its closed candle on
/// `candles_1s:{symbol}`, which must match them. Returns the ticker messages seen meanwhile.
pub async fn expect_trades_and_candles(
    ws: &mut Ws,
    symbol: &str,
    expected: &[(&str, &str, &str)],
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut trades: Vec<Value> = Vec::new();
    let mut closed: BTreeMap<i64, Value> = BTreeMap::new();
    let mut tickers = Vec::new();
    let mut last_seq: Option<u64> = None;
    loop {
        if trades.len() == expected.len() {
            let seconds: Vec<i64> = trades
                .iter()
                .map(|t| t["ts"].as_i64().expect("ts") / 1_000_000)
                .collect();
            if seconds
                .iter()
                .all(|s| closed.contains_key(&(s * 1_000_000)))
            {
                break;
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, recv(ws))
            .await
            .unwrap_or_else(|_| {
                panic!("trades and candles of {symbol} not within 10 s: got {trades:?}")
            });
        if msg["symbol"] != symbol {
            continue;
        }
        match msg["channel"].as_str() {
            Some("trades") if msg["type"] == "update" => {
                let seq = msg["seq"].as_u64().expect("seq");
                if let Some(last) = last_seq {
                    assert_eq!(seq, last + 1, "contiguous trades: {msg}");
                }
                last_seq = Some(seq);
                trades.push(msg);
            }
            Some("candles_1s") if msg["data"]["closed"] == true => {
                let start = msg["data"]["start"].as_i64().expect("start");
                closed.insert(start, msg["data"].clone());
            }
            Some("ticker") => tickers.push(msg),
            _ => {}
        }
    }
    for (t, (price, size, side)) in trades.iter().zip(expected) {
        assert_eq!(
            (
                t["data"]["price"].as_str(),
                t["data"]["size"].as_str(),
                t["data"]["side"].as_str()
            ),
            (Some(*price), Some(*size), Some(*side)),
            "{t}"
        );
    }
    // Each second's candle is exactly its trades.
    let mut by_second: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for t in &trades {
        let second = t["ts"].as_i64().expect("ts") / 1_000_000 * 1_000_000;
        by_second.entry(second).or_default().push(&t["data"]);
    }
    let dec = |v: &Value| {
        v.as_str()
            .expect("decimal")
            .parse::<Decimal>()
            .expect("decimal")
    };
    for (start, group) in by_second {
        let candle = &closed[&start];
        let prices: Vec<Decimal> = group.iter().map(|t| dec(&t["price"])).collect();
        let key = |d: &Decimal| tickstream::book::key(*d);
        let volume = group
            .iter()
            .map(|t| dec(&t["size"]))
            .try_fold(Decimal::new(0, 0), |a, b| a.checked_add(b))
            .expect("volume");
        assert_eq!(key(&dec(&candle["open"])), key(&prices[0]), "{candle}");
        assert_eq!(
            key(&dec(&candle["close"])),
            key(&prices[prices.len() - 1]),
            "{candle}"
        );
        assert_eq!(
            key(&dec(&candle["high"])),
            prices.iter().map(key).max().expect("high"),
            "{candle}"
        );
        assert_eq!(
            key(&dec(&candle["low"])),
            prices.iter().map(key).min().expect("low"),
            "{candle}"
        );
        assert_eq!(key(&dec(&candle["volume"])), key(&volume), "{candle}");
        assert_eq!(
            candle["trades"].as_u64(),
            Some(group.len() as u64),
            "{candle}"
        );
    }
    tickers
}

/// Reads until a ticker of `symbol` arrives and returns its data.
pub async fn expect_ticker(ws: &mut Ws, symbol: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, recv(ws))
            .await
            .unwrap_or_else(|_| panic!("no ticker of {symbol} within 10 s"));
        if msg["channel"] == "ticker" && msg["symbol"] == symbol {
            return msg["data"].clone();
        }
    }
}
