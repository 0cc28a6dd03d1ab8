//! Binance spot's local order book: the diff-depth stream (`<symbol>@depth@100ms`) combined with
//! a REST snapshot (`GET /api/v3/depth`), by the procedure Binance documents:
//!
//! 1. Open the stream and buffer its events; note the first event's `U`.
//! 2. Fetch the snapshot; fetch again while its `lastUpdateId` is below that `U`.
//! 3. Drop buffered events with `u <= lastUpdateId`.
//! 4. The first event applied must have `U <= lastUpdateId + 1 <= u`.
//! 5. Then for each event: ignore it if `u` is below the book's id; if `U` is above the book's
//!    id + 1, updates were lost: start again from 1; otherwise set each level (quantity 0
//!    removes it) and make `u` the book's id.
//!
//! [`DepthBook`] is that procedure as a state machine with no I/O: the caller feeds it events
//! and snapshots and does what it answers (fetch a snapshot, publish, start over).

use serde::Deserialize;

use super::{VenueTicker, VenueTrade};
use crate::book::{Level, View};
use crate::market::{Side, Ticker, Trade};

/// A Binance spot instrument under its three names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrument {
    /// As the REST API and the events spell it: `BTCUSDT`.
    pub symbol: String,
    /// As stream names spell it: `btcusdt`.
    pub stream: String,
    /// Ours: `BTC-USDT`.
    pub name: String,
}

/// Quote assets tried, longest first, to split a bare `BTCUSDT` into base and quote.
const QUOTES: [&str; 14] = [
    "FDUSD", "USDT", "USDC", "TUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY",
    "GBP", "DAI",
];

impl Instrument {
    /// `BTC-USDT`, `BTC/USDT` or `BTCUSDT` (split at a known quote asset). `None` when it is
    /// none of these.
    pub fn parse(text: &str) -> Option<Self> {
        let upper = text.trim().to_ascii_uppercase();
        let name = if upper.contains(['-', '/']) {
            crate::config::normalize_symbol(&upper)?
        } else {
            let quote = QUOTES
                .iter()
                .find(|q| upper.len() > q.len() && upper.ends_with(*q))?;
            let base = &upper[..upper.len() - quote.len()];
            crate::config::normalize_symbol(&format!("{base}-{quote}"))?
        };
        let (base, quote) = name.split_once('-')?;
        if base.is_empty() || quote.is_empty() || quote.contains('-') {
            return None;
        }
        let symbol = format!("{base}{quote}");
        if !symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Self {
            stream: symbol.to_ascii_lowercase(),
            symbol,
            name,
        })
    }
}

/// What is wrong with a message from Binance.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinanceError {
    #[error("not a Binance market-data message: {0}")]
    Shape(String),
    #[error("{0:?} is not a valid price or quantity")]
    Number(String),
}

/// A diff-depth event (`"e":"depthUpdate"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthUpdate {
    pub symbol: String,
    /// First and last update id in the event.
    pub first: u64,
    pub last: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

/// The REST snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthSnapshot {
    pub last_update_id: u64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

#[derive(Deserialize)]
struct RawUpdate {
    e: String,
    s: String,
    #[serde(rename = "U")]
    first: u64,
    #[serde(rename = "u")]
    last: u64,
    b: Vec<(String, String)>,
    a: Vec<(String, String)>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSnapshot {
    last_update_id: u64,
    bids: Vec<(String, String)>,
    asks: Vec<(String, String)>,
}

fn levels(raw: &[(String, String)]) -> Result<Vec<Level>, BinanceError> {
    raw.iter()
        .map(|(p, q)| Level::parse(p, q).ok_or_else(|| BinanceError::Number(format!("{p} x {q}"))))
        .collect()
}

/// What a message of the combined stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Depth(DepthUpdate),
    /// `<symbol>@trade`: the side is the taker's (`m`, "buyer is maker", means a sell).
    Trade(VenueTrade),
    /// `<symbol>@ticker` (rolling 24 h): `b`, `a`, `c` (last), `o` (open 24 h ago), `p`
    /// (change), `v` (base volume).
    Ticker(VenueTicker),
}

#[derive(Deserialize)]
struct Wrapped<T> {
    data: T,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    s: String,
    p: &'a str,
    q: &'a str,
    #[serde(rename = "T")]
    time: i64,
    m: bool,
}

#[derive(Deserialize)]
struct RawTicker<'a> {
    s: String,
    b: &'a str,
    a: &'a str,
    c: &'a str,
    o: &'a str,
    p: &'a str,
    v: &'a str,
}

fn decimal(text: &str) -> Result<crate::market::Decimal, BinanceError> {
    text.parse()
        .map_err(|_| BinanceError::Number(text.chars().take(40).collect()))
}

/// Decodes a combined-stream message (`{"stream":"btcusdt@trade","data":{...}}`) in one pass,
/// choosing the shape by the stream's name; a bare diff-depth event is accepted too.
pub fn parse(text: &str) -> Result<Incoming, BinanceError> {
    let shape = |e: serde_json::Error| BinanceError::Shape(e.to_string());
    // Binance sends `stream` first, but JSON does not promise key order: search for it. No
    // key inside `data` is called `stream`.
    const KEY: &str = r#""stream":""#;
    let stream = text
        .find(KEY)
        .and_then(|at| text[at + KEY.len()..].split_once('"'))
        .map(|(name, _)| name);
    match stream.and_then(|s| s.split_once('@')).map(|(_, kind)| kind) {
        Some("trade") => {
            let t = serde_json::from_str::<Wrapped<RawTrade<'_>>>(text)
                .map_err(shape)?
                .data;
            Ok(Incoming::Trade(VenueTrade {
                symbol: t.s,
                trade: Trade {
                    price: decimal(t.p)?,
                    size: decimal(t.q)?,
                    side: if t.m { Side::Sell } else { Side::Buy },
                },
                ts: t.time.saturating_mul(1000),
            }))
        }
        Some("ticker") => {
            let t = serde_json::from_str::<Wrapped<RawTicker<'_>>>(text)
                .map_err(shape)?
                .data;
            Ok(Incoming::Ticker(VenueTicker {
                symbol: t.s,
                ticker: Ticker {
                    bid: decimal(t.b)?,
                    ask: decimal(t.a)?,
                    last: decimal(t.c)?,
                    open: decimal(t.o)?,
                    change: decimal(t.p)?,
                    volume: decimal(t.v)?,
                },
            }))
        }
        Some(_) => {
            let raw = serde_json::from_str::<Wrapped<RawUpdate>>(text)
                .map_err(shape)?
                .data;
            depth(raw).map(Incoming::Depth)
        }
        None => {
            let raw = serde_json::from_str::<RawUpdate>(text).map_err(shape)?;
            depth(raw).map(Incoming::Depth)
        }
    }
}

/// Parses a diff-depth event, bare or wrapped as a combined stream's `{"stream","data"}`.
pub fn parse_update(text: &str) -> Result<DepthUpdate, BinanceError> {
    match parse(text)? {
        Incoming::Depth(update) => Ok(update),
        other => Err(BinanceError::Shape(format!("not a depth event: {other:?}"))),
    }
}

fn depth(raw: RawUpdate) -> Result<DepthUpdate, BinanceError> {
    if raw.e != "depthUpdate" {
        return Err(BinanceError::Shape(format!("event {:?}", raw.e)));
    }
    if raw.first > raw.last {
        return Err(BinanceError::Shape(format!(
            "U {} after u {}",
            raw.first, raw.last
        )));
    }
    Ok(DepthUpdate {
        symbol: raw.s,
        first: raw.first,
        last: raw.last,
        bids: levels(&raw.b)?,
        asks: levels(&raw.a)?,
    })
}

pub fn parse_snapshot(text: &str) -> Result<DepthSnapshot, BinanceError> {
    let raw: RawSnapshot =
        serde_json::from_str(text).map_err(|e| BinanceError::Shape(e.to_string()))?;
    Ok(DepthSnapshot {
        last_update_id: raw.last_update_id,
        bids: levels(&raw.bids)?,
        asks: levels(&raw.asks)?,
    })
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Fetch a (new) snapshot and pass it to [`DepthBook::on_snapshot`].
    FetchSnapshot,
    /// Keep reading the stream.
    Continue,
    /// The book changed and is right: publish it (`reset`: it replaces one already published).
    Publish { reset: bool },
    /// Updates were lost: start over (the book is dropped; the next steps fetch a snapshot).
    Gap { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Buffering events until a snapshot recent enough arrives.
    Buffering,
    /// In step with the stream: the book's id is the last applied `u`.
    Live { id: u64 },
}

/// One symbol's book, kept by Binance's procedure; bounded: at most [`MAX_BUFFERED`] events wait
/// for a snapshot, and the book holds at most `depth` levels a side.
#[derive(Debug, Clone)]
pub struct DepthBook {
    depth: usize,
    state: State,
    buffer: Vec<DepthUpdate>,
    view: View,
    published: bool,
    snapshot_asked: bool,
}

/// Events kept while a snapshot is fetched (ten seconds of a 100 ms stream is 100).
pub const MAX_BUFFERED: usize = 1000;

impl DepthBook {
    /// `depth`: levels a side kept (the snapshot's `limit`; deeper levels are dropped).
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            state: State::Buffering,
            buffer: Vec::new(),
            view: View::default(),
            published: false,
            snapshot_asked: false,
        }
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    /// A diff-depth event from the stream.
    pub fn on_update(&mut self, event: DepthUpdate) -> Step {
        match self.state {
            State::Buffering => {
                if self.buffer.len() == MAX_BUFFERED {
                    return self.gap(format!(
                        "{MAX_BUFFERED} events buffered and no usable snapshot"
                    ));
                }
                self.buffer.push(event);
                if self.snapshot_asked {
                    Step::Continue
                } else {
                    self.snapshot_asked = true;
                    Step::FetchSnapshot
                }
            }
            State::Live { id } => {
                if event.last <= id {
                    return Step::Continue;
                }
                if event.first > id + 1 {
                    return self.gap(format!(
                        "update ids {}..={} follow {id}: {} lost",
                        event.first,
                        event.last,
                        event.first - id - 1
                    ));
                }
                self.apply(&event);
                self.state = State::Live { id: event.last };
                Step::Publish { reset: false }
            }
        }
    }

    /// The REST snapshot the last [`Step::FetchSnapshot`] asked for.
    pub fn on_snapshot(&mut self, snap: DepthSnapshot) -> Step {
        if self.state != State::Buffering {
            return Step::Continue;
        }
        let Some(first) = self.buffer.first().map(|e| e.first) else {
            // Nothing buffered yet: the snapshot cannot be tied to the stream; wait for an event.
            self.snapshot_asked = false;
            return Step::Continue;
        };
        if snap.last_update_id < first {
            // Older than the stream's start: ask again (step 2).
            return Step::FetchSnapshot;
        }
        self.buffer.retain(|e| e.last > snap.last_update_id);
        if let Some(e) = self.buffer.first()
            && !(e.first <= snap.last_update_id + 1 && snap.last_update_id < e.last)
        {
            let why = format!(
                "the first event after snapshot {} covers {}..={}",
                snap.last_update_id, e.first, e.last
            );
            return self.gap(why);
        }
        self.view = View::default();
        self.view.patch(&snap.bids, &snap.asks);
        let buffered = std::mem::take(&mut self.buffer);
        let mut id = snap.last_update_id;
        for event in &buffered {
            if event.first > id + 1 {
                return self.gap(format!(
                    "buffered ids {}..={} follow {id}",
                    event.first, event.last
                ));
            }
            self.apply(event);
            id = event.last;
        }
        self.view.patch_to(&[], &[], self.depth);
        self.state = State::Live { id };
        self.snapshot_asked = false;
        let reset = self.published;
        self.published = true;
        Step::Publish { reset }
    }

    fn apply(&mut self, event: &DepthUpdate) {
        self.view.patch_to(&event.bids, &event.asks, self.depth);
    }

    /// The stream was lost (a new connection): the book is rebuilt from a new snapshot and
    /// published as a reset.
    pub fn restart(&mut self) {
        self.gap(String::new());
    }

    /// Drops everything: the caller starts over (the stream may go on; its next event asks for
    /// a snapshot again).
    fn gap(&mut self, why: String) -> Step {
        self.state = State::Buffering;
        self.buffer.clear();
        self.snapshot_asked = false;
        self.view = View::default();
        Step::Gap { why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: &str, q: &str) -> Level {
        Level::new(p.parse().expect("price"), q.parse().expect("qty"))
    }

    /// A depth event in Binance's documented shape.
    fn event(first: u64, last: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> DepthUpdate {
        let side = |l: &[(&str, &str)]| {
            l.iter()
                .map(|(p, q)| format!(r#"["{p}","{q}"]"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let text = format!(
            r#"{{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":{first},"u":{last},"b":[{}],"a":[{}]}}"#,
            side(bids),
            side(asks)
        );
        parse_update(&text).expect("parses")
    }

    fn snapshot(id: u64) -> DepthSnapshot {
        parse_snapshot(&format!(
            r#"{{"lastUpdateId":{id},"bids":[["4.00000000","431.00000000"],["3.90000000","10.00000000"]],"asks":[["4.00000200","12.00000000"]]}}"#
        ))
        .expect("parses")
    }

    #[test]
    fn the_documented_procedure_builds_the_book() {
        let mut book = DepthBook::new(100);
        assert_eq!(
            book.on_update(event(157, 160, &[], &[])),
            Step::FetchSnapshot
        );
        assert_eq!(
            book.on_update(event(161, 165, &[("4.00000000", "0")], &[])),
            Step::Continue
        );
        // A snapshot older than the first buffered event: fetch again.
        assert_eq!(book.on_snapshot(snapshot(150)), Step::FetchSnapshot);
        // 162: the first event kept must cover 163; 157..=160 is dropped.
        assert_eq!(
            book.on_snapshot(snapshot(162)),
            Step::Publish { reset: false }
        );
        assert_eq!(
            book.view().bids,
            vec![lv("3.90000000", "10.00000000")],
            "161..=165 applied"
        );
        // Old events are ignored; the next one in sequence applies.
        assert_eq!(book.on_update(event(160, 165, &[], &[])), Step::Continue);
        assert_eq!(
            book.on_update(event(166, 170, &[("3.95", "1")], &[("4.000002", "0")])),
            Step::Publish { reset: false }
        );
        assert_eq!(book.view().bids[0], lv("3.95", "1"));
        assert!(book.view().asks.is_empty());
    }

    #[test]
    fn a_skipped_update_id_is_a_gap_and_the_rebuilt_book_is_a_reset() {
        let mut book = DepthBook::new(100);
        book.on_update(event(100, 110, &[], &[]));
        assert_eq!(
            book.on_snapshot(snapshot(105)),
            Step::Publish { reset: false }
        );
        let Step::Gap { why } = book.on_update(event(112, 115, &[], &[])) else {
            panic!("111 is missing");
        };
        assert!(why.contains("1 lost"), "{why}");
        assert!(book.view().bids.is_empty(), "the wrong book is dropped");
        assert_eq!(
            book.on_update(event(116, 120, &[], &[])),
            Step::FetchSnapshot
        );
        assert_eq!(
            book.on_snapshot(snapshot(118)),
            Step::Publish { reset: true }
        );
    }

    #[test]
    fn a_snapshot_ahead_of_the_buffer_with_a_hole_is_a_gap() {
        let mut book = DepthBook::new(100);
        book.on_update(event(100, 101, &[], &[]));
        book.on_update(event(105, 110, &[], &[]));
        // Snapshot 102: 100..=101 dropped, but 105 does not cover 103.
        assert!(matches!(book.on_snapshot(snapshot(102)), Step::Gap { .. }));
    }

    #[test]
    fn buffering_is_bounded_and_depth_is_kept() {
        let mut book = DepthBook::new(1);
        for i in 0..MAX_BUFFERED as u64 {
            book.on_update(event(10 + i, 10 + i, &[], &[]));
        }
        assert!(matches!(
            book.on_update(event(5000, 5000, &[], &[])),
            Step::Gap { .. }
        ));
        book.on_update(event(6000, 6000, &[], &[]));
        assert_eq!(
            book.on_snapshot(snapshot(6000)),
            Step::Publish { reset: false }
        );
        assert_eq!(book.view().bids.len(), 1, "depth 1");
    }

    #[test]
    fn instruments_are_named_three_ways() {
        for text in ["BTC-USDT", "btc/usdt", "BTCUSDT", " btcusdt "] {
            let i = Instrument::parse(text).expect(text);
            assert_eq!(
                (i.symbol.as_str(), i.stream.as_str(), i.name.as_str()),
                ("BTCUSDT", "btcusdt", "BTC-USDT"),
                "{text}"
            );
        }
        assert_eq!(
            Instrument::parse("ETHFDUSD").map(|i| i.name),
            Some("ETH-FDUSD".into())
        );
        for bad in ["BTCXYZ", "USDT", "BTC-", "BTC-USD-T", "BT C/USDT", ""] {
            assert_eq!(Instrument::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert!(matches!(parse_update("{"), Err(BinanceError::Shape(_))));
        assert!(matches!(
            parse_update(r#"{"e":"trade","s":"X","U":1,"u":1,"b":[],"a":[]}"#),
            Err(BinanceError::Shape(_))
        ));
        assert!(matches!(
            parse_update(r#"{"e":"depthUpdate","s":"X","U":5,"u":1,"b":[],"a":[]}"#),
            Err(BinanceError::Shape(_))
        ));
        assert!(matches!(
            parse_update(r#"{"e":"depthUpdate","s":"X","U":1,"u":1,"b":[["1e3","1"]],"a":[]}"#),
            Err(BinanceError::Number(_))
        ));
        let trade = r#"{"stream":"bnbbtc@trade","data":{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}}"#;
        let Ok(Incoming::Trade(t)) = parse(trade) else {
            panic!("a trade")
        };
        assert_eq!(
            (t.trade.price, t.trade.size, t.trade.side, t.ts),
            (
                "0.001".parse().expect("p"),
                "100".parse().expect("q"),
                Side::Sell,
                1_672_515_782_136_000
            )
        );
        let ticker = r#"{"stream":"bnbbtc@ticker","data":{"e":"24hrTicker","E":123456789,"s":"BNBBTC","p":"0.0015","P":"250.00","w":"0.0018","x":"0.0009","c":"0.0025","Q":"10","b":"0.0024","B":"10","a":"0.0026","A":"100","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,"L":18150,"n":18151}}"#;
        let Ok(Incoming::Ticker(t)) = parse(ticker) else {
            panic!("a ticker")
        };
        assert_eq!(t.ticker.open.to_string(), "0.0010");
        assert_eq!(t.ticker.volume.to_string(), "10000");
        assert!(matches!(
            parse(
                r#"{"stream":"bnbbtc@trade","data":{"s":"X","p":"1e3","q":"1","T":1,"m":false}}"#
            ),
            Err(BinanceError::Number(_))
        ));
        let wrapped = r#"{"stream":"bnbbtc@depth","data":{"e":"depthUpdate","E":1,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}"#;
        let e = parse_update(wrapped).expect("combined-stream wrapper");
        assert_eq!((e.first, e.last, e.bids[0]), (157, 160, lv("0.0024", "10")));
    }
}
