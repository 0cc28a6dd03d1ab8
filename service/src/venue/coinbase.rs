//! Coinbase Advanced Trade's `level2` channel (messages arrive on channel `l2_data`): a
//! `snapshot` event replaces a product's whole book, `update` events give each level's new
//! absolute size (`"0"` removes it; `side` is `bid` or `offer`). Every message on a connection,
//! whatever its channel (heartbeats included), carries `sequence_num`, one more than the last:
//! a jump means messages were lost, and with them an unknown part of some book.
//!
//! The snapshot is the whole book (tens of MiB for BTC-USD), and levels deep in it come to the
//! top as better ones go, so the full book is kept (in ordered maps, bounded by
//! [`MAX_LEVELS`] a side) and only its top is published. The adapter gives each product its
//! own connection, so a sequence gap resyncs that product only.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{VenueTicker, VenueTrade, rfc3339_micros};
use crate::book::{Level, View, key};
use crate::market::{Decimal, Side, Ticker, Trade};

/// Levels a side the full book may hold: BTC-USD's book has some tens of thousands.
pub const MAX_LEVELS: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseError {
    #[error("not a Coinbase message: {0}")]
    Shape(String),
    #[error("{0:?} is not a valid price level")]
    Level(String),
}

/// The envelope of every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub sequence_num: u64,
    pub books: Vec<BookEvent>,
    /// New trades of `market_trades` (its snapshot of past trades is skipped), with the side
    /// Coinbase reports.
    pub trades: Vec<VenueTrade>,
    /// `ticker`: `price` is `last`, `volume_24_h` the volume, `best_bid`/`best_ask` (`price`
    /// when Coinbase leaves them out); `open` is derived from `price_percent_chg_24_h`,
    /// rounded to the price's decimals (Coinbase sends no open price).
    pub tickers: Vec<VenueTicker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookEvent {
    pub snapshot: bool,
    pub product_id: String,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

#[derive(Deserialize)]
struct RawMessage<E> {
    channel: String,
    sequence_num: u64,
    /// Each channel's events have their own shape: decoded in the same pass as the envelope.
    #[serde(default = "Vec::new")]
    events: Vec<E>,
}

#[derive(Deserialize)]
struct RawBookEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    product_id: String,
    #[serde(borrow)]
    updates: Vec<RawUpdate<'a>>,
}

#[derive(Deserialize)]
struct RawUpdate<'a> {
    side: &'a str,
    price_level: &'a str,
    new_quantity: &'a str,
}

#[derive(Deserialize)]
struct RawTradeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    trades: Vec<RawTrade<'a>>,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    product_id: String,
    price: &'a str,
    size: &'a str,
    side: &'a str,
    time: &'a str,
}

#[derive(Deserialize)]
struct RawTickerEvent<'a> {
    #[serde(borrow, default)]
    tickers: Vec<RawTicker<'a>>,
}

#[derive(Deserialize)]
struct RawTicker<'a> {
    product_id: String,
    price: &'a str,
    volume_24_h: &'a str,
    price_percent_chg_24_h: &'a str,
    #[serde(default)]
    best_bid: Option<&'a str>,
    #[serde(default)]
    best_ask: Option<&'a str>,
}

fn decimal(field: &str, text: &str) -> Result<Decimal, CoinbaseError> {
    text.parse().map_err(|_| {
        CoinbaseError::Level(format!(
            "{field} {}",
            text.chars().take(40).collect::<String>()
        ))
    })
}

fn trades(events: Vec<RawTradeEvent<'_>>) -> Result<Vec<VenueTrade>, CoinbaseError> {
    let mut out = Vec::new();
    for e in events {
        if e.kind != "update" {
            continue;
        }
        for t in e.trades {
            let side = match t.side {
                "BUY" => Side::Buy,
                "SELL" => Side::Sell,
                other => return Err(CoinbaseError::Shape(format!("trade side {other:?}"))),
            };
            out.push(VenueTrade {
                trade: Trade {
                    price: decimal("price", t.price)?,
                    size: decimal("size", t.size)?,
                    side,
                },
                ts: rfc3339_micros(t.time)
                    .ok_or_else(|| CoinbaseError::Shape(format!("time {:?}", t.time)))?,
                symbol: t.product_id,
            });
        }
    }
    Ok(out)
}

fn tickers(events: Vec<RawTickerEvent<'_>>) -> Result<Vec<VenueTicker>, CoinbaseError> {
    let mut out = Vec::new();
    for e in events {
        for t in e.tickers {
            let last = decimal("price", t.price)?;
            let pct: f64 = t.price_percent_chg_24_h.parse().map_err(|_| {
                CoinbaseError::Shape(format!(
                    "price_percent_chg_24_h {:?}",
                    t.price_percent_chg_24_h
                ))
            })?;
            // last = open * (1 + pct/100); rounded to the price's decimals.
            let open_units = (last.units as f64 / (1.0 + pct / 100.0)).round();
            if !open_units.is_finite() || open_units.abs() > 9e18 {
                return Err(CoinbaseError::Shape(format!(
                    "price_percent_chg_24_h {pct}"
                )));
            }
            let open = Decimal::new(open_units as i64, last.scale);
            let change = last
                .checked_sub(open)
                .ok_or_else(|| CoinbaseError::Shape("price change out of range".into()))?;
            out.push(VenueTicker {
                ticker: Ticker {
                    bid: t.best_bid.map_or(Ok(last), |b| decimal("best_bid", b))?,
                    ask: t.best_ask.map_or(Ok(last), |a| decimal("best_ask", a))?,
                    last,
                    open,
                    change,
                    volume: decimal("volume_24_h", t.volume_24_h)?,
                },
                symbol: t.product_id,
            });
        }
    }
    Ok(out)
}

/// Parses any message in one pass: the envelope's `channel` (Coinbase sends it first; it is
/// searched for, as JSON promises no order) chooses the shape of its events. `l2_data`,
/// `market_trades` and `ticker` are decoded; other channels' events are skipped (their sequence
/// number still counts).
pub fn parse(text: &str) -> Result<Message, CoinbaseError> {
    fn envelope<'a, E: Deserialize<'a>>(text: &'a str) -> Result<RawMessage<E>, CoinbaseError> {
        serde_json::from_str(text).map_err(|e| CoinbaseError::Shape(e.to_string()))
    }
    const KEY: &str = r#""channel":""#;
    let channel = text
        .find(KEY)
        .and_then(|at| text[at + KEY.len()..].split_once('"'))
        .map(|(name, _)| name);
    let (mut books, mut trade_list, mut ticker_list) = (Vec::new(), Vec::new(), Vec::new());
    let (channel, sequence_num) = match channel {
        Some("l2_data") => {
            let raw = envelope::<RawBookEvent<'_>>(text)?;
            books = raw
                .events
                .into_iter()
                .map(book_event)
                .collect::<Result<_, _>>()?;
            (raw.channel, raw.sequence_num)
        }
        Some("market_trades") => {
            let raw = envelope::<RawTradeEvent<'_>>(text)?;
            trade_list = trades(raw.events)?;
            (raw.channel, raw.sequence_num)
        }
        Some("ticker") => {
            let raw = envelope::<RawTickerEvent<'_>>(text)?;
            ticker_list = tickers(raw.events)?;
            (raw.channel, raw.sequence_num)
        }
        _ => {
            let raw = envelope::<serde::de::IgnoredAny>(text)?;
            (raw.channel, raw.sequence_num)
        }
    };
    Ok(Message {
        channel,
        sequence_num,
        books,
        trades: trade_list,
        tickers: ticker_list,
    })
}

fn book_event(e: RawBookEvent<'_>) -> Result<BookEvent, CoinbaseError> {
    let snapshot = match e.kind {
        "snapshot" => true,
        "update" => false,
        other => return Err(CoinbaseError::Shape(format!("event type {other:?}"))),
    };
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    for u in e.updates {
        let bad =
            || CoinbaseError::Level(format!("{} {} x {}", u.side, u.price_level, u.new_quantity));
        let level = Level::parse(u.price_level, u.new_quantity).ok_or_else(bad)?;
        match u.side {
            "bid" => bids.push(level),
            "offer" => asks.push(level),
            _ => return Err(bad()),
        }
    }
    Ok(BookEvent {
        snapshot,
        product_id: e.product_id,
        bids,
        asks,
    })
}

/// A connection's `sequence_num`, checked message by message.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    last: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqCheck {
    /// The next message (or the first).
    Next,
    /// `lost` messages are missing before this one: every book on the connection is suspect.
    Gap { lost: u64 },
    /// Already seen: drop it.
    Repeat,
}

impl Sequence {
    pub fn check(&mut self, seq: u64) -> SeqCheck {
        match self.last {
            Some(last) if seq <= last => SeqCheck::Repeat,
            Some(last) if seq > last + 1 => {
                self.last = Some(seq);
                SeqCheck::Gap {
                    lost: seq - last - 1,
                }
            }
            _ => {
                self.last = Some(seq);
                SeqCheck::Next
            }
        }
    }

    /// A new connection numbers from scratch.
    pub fn restart(&mut self) {
        self.last = None;
    }
}

/// A product's whole book.
#[derive(Debug, Clone, Default)]
pub struct FullBook {
    /// By negated price, so iteration runs from the best bid down.
    bids: BTreeMap<i128, Level>,
    asks: BTreeMap<i128, Level>,
    synced: bool,
    published: bool,
}

/// What the caller does after a book event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Publish {
        reset: bool,
    },
    /// An update for a book that has no snapshot yet (or lost track): dropped.
    Waiting,
    /// The book outgrew [`MAX_LEVELS`]: subscribe again.
    Resync {
        why: String,
    },
}

impl FullBook {
    pub fn apply(&mut self, event: &BookEvent) -> Outcome {
        if event.snapshot {
            self.bids.clear();
            self.asks.clear();
            self.synced = true;
        } else if !self.synced {
            return Outcome::Waiting;
        }
        for level in &event.bids {
            set(&mut self.bids, -key(level.price), *level);
        }
        for level in &event.asks {
            set(&mut self.asks, key(level.price), *level);
        }
        if self.bids.len() > MAX_LEVELS || self.asks.len() > MAX_LEVELS {
            self.lose_track();
            return Outcome::Resync {
                why: format!(
                    "{} holds more than {MAX_LEVELS} levels a side",
                    event.product_id
                ),
            };
        }
        let reset = event.snapshot && self.published;
        self.published = true;
        Outcome::Publish { reset }
    }

    /// After a sequence gap or a dropped connection: nothing is published until a snapshot.
    pub fn lose_track(&mut self) {
        self.synced = false;
        self.bids.clear();
        self.asks.clear();
    }

    /// The best `depth` levels a side.
    pub fn top(&self, depth: usize) -> View {
        View {
            bids: self.bids.values().take(depth).copied().collect(),
            asks: self.asks.values().take(depth).copied().collect(),
        }
    }
}

fn set(side: &mut BTreeMap<i128, Level>, k: i128, level: Level) {
    if level.size.units == 0 {
        side.remove(&k);
    } else {
        side.insert(k, level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Decimal;

    fn lv(p: &str, q: &str) -> Level {
        Level::new(p.parse().expect("price"), q.parse().expect("qty"))
    }

    fn l2(seq: u64, kind: &str, updates: &[(&str, &str, &str)]) -> String {
        let updates: Vec<String> = updates
            .iter()
            .map(|(side, p, q)| {
                format!(r#"{{"side":"{side}","event_time":"2024-01-01T00:00:00.000000Z","price_level":"{p}","new_quantity":"{q}"}}"#)
            })
            .collect();
        format!(
            r#"{{"channel":"l2_data","client_id":"","timestamp":"2024-01-01T00:00:00.123456789Z","sequence_num":{seq},"events":[{{"type":"{kind}","product_id":"BTC-USD","updates":[{}]}}]}}"#,
            updates.join(",")
        )
    }

    #[test]
    fn a_snapshot_then_updates_keep_the_whole_book_and_publish_its_top() {
        let mut book = FullBook::default();
        let snap = parse(&l2(
            0,
            "snapshot",
            &[
                ("bid", "68900.00", "2.00000000"),
                ("bid", "68899.50", "1.5"),
                ("bid", "68899.00", "3"),
                ("offer", "68901.00", "0.5"),
                ("offer", "68902.00", "4"),
            ],
        ))
        .expect("parses");
        assert_eq!(
            book.apply(&snap.books[0]),
            Outcome::Publish { reset: false }
        );
        assert_eq!(book.top(1).bids, vec![lv("68900.00", "2.00000000")]);
        // The best bid goes: the level below it, not in a depth-1 view, comes up.
        let update = parse(&l2(
            1,
            "update",
            &[("bid", "68900.00", "0"), ("offer", "68901.00", "0.25")],
        ))
        .expect("parses");
        assert_eq!(
            book.apply(&update.books[0]),
            Outcome::Publish { reset: false }
        );
        let top = book.top(1);
        assert_eq!(top.bids, vec![lv("68899.50", "1.5")]);
        assert_eq!(top.asks, vec![lv("68901.00", "0.25")]);
    }

    #[test]
    fn sequence_numbers_find_gaps_and_repeats() {
        let mut seq = Sequence::default();
        assert_eq!(seq.check(7), SeqCheck::Next);
        assert_eq!(seq.check(8), SeqCheck::Next);
        assert_eq!(seq.check(8), SeqCheck::Repeat);
        assert_eq!(seq.check(11), SeqCheck::Gap { lost: 2 });
        assert_eq!(seq.check(12), SeqCheck::Next);
        seq.restart();
        assert_eq!(seq.check(0), SeqCheck::Next);
        // Heartbeats count too.
        let hb = parse(r#"{"channel":"heartbeats","client_id":"","timestamp":"2024-01-01T00:00:00Z","sequence_num":1,"events":[{"current_time":"2024-01-01 00:00:00 +0000 UTC","heartbeat_counter":3}]}"#).expect("parses");
        assert_eq!((hb.sequence_num, hb.books.len()), (1, 0));
        assert_eq!(seq.check(hb.sequence_num), SeqCheck::Next);
    }

    #[test]
    fn after_losing_track_updates_wait_and_the_next_snapshot_is_a_reset() {
        let mut book = FullBook::default();
        let snap = parse(&l2(0, "snapshot", &[("bid", "1.00", "1")])).expect("parses");
        book.apply(&snap.books[0]);
        book.lose_track();
        let update = parse(&l2(5, "update", &[("bid", "1.00", "2")])).expect("parses");
        assert_eq!(book.apply(&update.books[0]), Outcome::Waiting);
        assert_eq!(book.apply(&snap.books[0]), Outcome::Publish { reset: true });
        assert_eq!(book.top(10).bids, vec![lv("1.00", "1")]);
    }

    proptest::proptest! {
        /// The maps give the same top as a plainly sorted book, whatever the scales of the
        /// prices (`1.5` and `1.50` are one level).
        #[test]
        fn the_full_book_agrees_with_a_sorted_list(
            changes in proptest::collection::vec((proptest::bool::ANY, 1i64..60, 0u8..3, 0i64..4), 1..200),
        ) {
            use crate::book::{Side, set_level};
            let mut book = FullBook::default();
            let mut model = View::default();
            let mut event = BookEvent { snapshot: true, product_id: "X".into(), bids: vec![], asks: vec![] };
            for (bid, price, scale, size) in changes {
                // Bids below 30, asks from 30: a crossed book is not what this checks.
                let units = if bid { price % 30 + 1 } else { price + 30 } * 10i64.pow(u32::from(scale));
                let level = Level::new(Decimal::new(units, scale), Decimal::new(size, 0));
                if bid {
                    event.bids.push(level);
                    set_level(&mut model.bids, Side::Bid, level);
                } else {
                    event.asks.push(level);
                    set_level(&mut model.asks, Side::Ask, level);
                }
            }
            book.apply(&event);
            let top = book.top(10);
            let want = model.top(10);
            let prices = |l: &[Level]| l.iter().map(|l| (key(l.price), l.size)).collect::<Vec<_>>();
            proptest::prop_assert_eq!(prices(&top.bids), prices(&want.bids));
            proptest::prop_assert_eq!(prices(&top.asks), prices(&want.asks));
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert!(matches!(parse("{"), Err(CoinbaseError::Shape(_))));
        assert!(matches!(
            parse(&l2(1, "update", &[("ask", "1", "1")])),
            Err(CoinbaseError::Level(_))
        ));
        assert!(matches!(
            parse(&l2(1, "update", &[("bid", "1e2", "1")])),
            Err(CoinbaseError::Level(_))
        ));
        assert!(matches!(
            parse(&l2(1, "refresh", &[])),
            Err(CoinbaseError::Shape(_))
        ));
    }
}
