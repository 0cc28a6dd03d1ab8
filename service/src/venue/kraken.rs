//! Kraken's WebSocket v2 `book` channel: parsing its messages from the exact text of their
//! numbers, and keeping a symbol's book the way Kraken's "Book checksum (v2)" guide says:
//! apply every level in order (a price may appear twice; `qty` 0 deletes), truncate to the
//! subscribed depth (Kraken sends no removal for levels that fall below it), then compare the
//! CRC32 of the top ten with the message's `checksum`. A mismatch means our book is wrong: the
//! symbol must be subscribed again, and nothing is published until its new snapshot arrives.
//!
//! Prices and quantities are JSON numbers whose printed digits (trailing zeros included) enter
//! the checksum, so they are read from their raw text, never through `f64`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{VenueTicker, VenueTrade, rfc3339_micros};
use crate::book::{Level, View};
use crate::market::{Decimal, Side, Ticker, Trade};

/// What is wrong with a message from Kraken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrakenError {
    #[error("not a Kraken message: {0}")]
    Shape(String),
    #[error("{field} {text:?} is not a plain decimal number")]
    Number { field: &'static str, text: String },
}

/// Snapshot or update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Update,
}

/// One symbol's part of a `book` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookMessage {
    pub kind: Kind,
    pub symbol: String,
    /// In the order sent: applied in that order.
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    pub checksum: u32,
}

/// Any message Kraken sends, decoded once: its channel messages and its method answers share
/// one envelope.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    channel: Option<&'a str>,
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<&'a str>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

/// What a message from Kraken is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Book(Vec<BookMessage>),
    /// New trades (`trade` updates; the snapshot of past trades is not asked for).
    Trades(Vec<VenueTrade>),
    /// `ticker`: `last`, `bid`, `ask`, rolling 24 h `volume`; `open` is `last - change`.
    Tickers(Vec<VenueTicker>),
    /// A subscribe Kraken refused (an unknown pair, say), with its reason.
    Refused(String),
    /// Heartbeats, acknowledgements, other channels.
    Other,
}

/// Decodes any message.
pub fn parse(text: &str) -> Result<Incoming, KrakenError> {
    // Book messages are nearly all of the traffic: when the text says `"channel":"book"`,
    // decode the envelope and its entries in one pass (the general path below captures
    // `data` raw and reads it again).
    if text.contains(r#""channel":"book""#)
        && let Ok(book) = serde_json::from_str::<BookEnvelope<'_>>(text)
        && book.channel == "book"
    {
        let kind = match book.kind {
            "snapshot" => Kind::Snapshot,
            "update" => Kind::Update,
            other => return Err(KrakenError::Shape(format!("type {other:?}"))),
        };
        return book_messages(kind, book.data);
    }
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| KrakenError::Shape(e.to_string()))?;
    if env.method == Some("subscribe") && env.success == Some(false) {
        return Ok(Incoming::Refused(env.error.unwrap_or_default()));
    }
    match env.channel {
        Some("book") => {}
        Some("trade") if env.kind == Some("update") => {
            return trades(env.data).map(Incoming::Trades);
        }
        Some("ticker") => return tickers(env.data).map(Incoming::Tickers),
        _ => return Ok(Incoming::Other),
    }
    let kind = match env.kind {
        Some("snapshot") => Kind::Snapshot,
        Some("update") => Kind::Update,
        other => return Err(KrakenError::Shape(format!("type {other:?}"))),
    };
    let data = env
        .data
        .ok_or_else(|| KrakenError::Shape("a book message without data".into()))?;
    let entries: Vec<Entry<'_>> =
        serde_json::from_str(data.get()).map_err(|e| KrakenError::Shape(e.to_string()))?;
    book_messages(kind, entries)
}

#[derive(Deserialize)]
struct BookEnvelope<'a> {
    channel: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    data: Vec<Entry<'a>>,
}

fn book_messages(kind: Kind, entries: Vec<Entry<'_>>) -> Result<Incoming, KrakenError> {
    entries
        .into_iter()
        .map(|e| {
            Ok(BookMessage {
                kind,
                symbol: e.symbol,
                bids: levels(&e.bids)?,
                asks: levels(&e.asks)?,
                checksum: e.checksum,
            })
        })
        .collect::<Result<_, _>>()
        .map(Incoming::Book)
}

#[derive(Deserialize)]
struct Entry<'a> {
    symbol: String,
    #[serde(borrow, default)]
    bids: Vec<RawLevel<'a>>,
    #[serde(borrow, default)]
    asks: Vec<RawLevel<'a>>,
    checksum: u32,
}

#[derive(Deserialize)]
struct RawLevel<'a> {
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    qty: &'a RawValue,
}

#[derive(Deserialize)]
struct RawTrade<'a> {
    symbol: String,
    side: &'a str,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    qty: &'a RawValue,
    timestamp: &'a str,
}

#[derive(Deserialize)]
struct RawTicker<'a> {
    symbol: String,
    #[serde(borrow)]
    bid: &'a RawValue,
    #[serde(borrow)]
    ask: &'a RawValue,
    #[serde(borrow)]
    last: &'a RawValue,
    #[serde(borrow)]
    volume: &'a RawValue,
    #[serde(borrow)]
    change: &'a RawValue,
}

fn entries<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Result<Vec<T>, KrakenError> {
    let data = data.ok_or_else(|| KrakenError::Shape("a message without data".into()))?;
    serde_json::from_str(data.get()).map_err(|e| KrakenError::Shape(e.to_string()))
}

fn trades(data: Option<&RawValue>) -> Result<Vec<VenueTrade>, KrakenError> {
    entries::<RawTrade<'_>>(data)?
        .into_iter()
        .map(|t| {
            let side = match t.side {
                "buy" => Side::Buy,
                "sell" => Side::Sell,
                other => return Err(KrakenError::Shape(format!("trade side {other:?}"))),
            };
            let ts = rfc3339_micros(t.timestamp)
                .ok_or_else(|| KrakenError::Shape(format!("timestamp {:?}", t.timestamp)))?;
            Ok(VenueTrade {
                symbol: t.symbol,
                trade: Trade {
                    price: decimal("price", t.price)?,
                    size: decimal("qty", t.qty)?,
                    side,
                },
                ts,
            })
        })
        .collect()
}

fn tickers(data: Option<&RawValue>) -> Result<Vec<VenueTicker>, KrakenError> {
    entries::<RawTicker<'_>>(data)?
        .into_iter()
        .map(|t| {
            let last = decimal("last", t.last)?;
            let change = decimal("change", t.change)?;
            let open = last
                .checked_sub(change)
                .ok_or_else(|| KrakenError::Number {
                    field: "change",
                    text: change.to_string(),
                })?;
            Ok(VenueTicker {
                symbol: t.symbol,
                ticker: Ticker {
                    bid: decimal("bid", t.bid)?,
                    ask: decimal("ask", t.ask)?,
                    last,
                    open,
                    change,
                    volume: decimal("volume", t.volume)?,
                },
            })
        })
        .collect()
}

/// Parses a `book` message (one entry per symbol in `data`); anything else is an error.
pub fn parse_book(text: &str) -> Result<Vec<BookMessage>, KrakenError> {
    match parse(text)? {
        Incoming::Book(msgs) => Ok(msgs),
        other => Err(KrakenError::Shape(format!("not a book message: {other:?}"))),
    }
}

fn levels(raw: &[RawLevel<'_>]) -> Result<Vec<Level>, KrakenError> {
    raw.iter()
        .map(|l| {
            let (price, size) = (decimal("price", l.price)?, decimal("qty", l.qty)?);
            Level::checked(price, size).ok_or_else(|| KrakenError::Number {
                field: "price",
                text: format!("{price} x {size}"),
            })
        })
        .collect()
}

/// A JSON number as Kraken prints it (`45283.5`, `0.10000000`), or the same in a string, read
/// from its text (its digits, trailing zeros included, enter the checksum): parsed once.
fn decimal(field: &'static str, raw: &RawValue) -> Result<Decimal, KrakenError> {
    let text = raw.get();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map_err(|_| KrakenError::Number {
        field,
        text: text.chars().take(40).collect(),
    })
}

/// What the caller does after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The book is right: publish it (`reset`: it replaces one clients already hold).
    Publish { reset: bool },
    /// The book is wrong (or was never right): subscribe to the symbol again.
    Resync { why: String },
    /// An update for a book being rebuilt: dropped until the snapshot comes.
    Waiting,
}

/// One symbol's book, at the depth it was subscribed with.
#[derive(Debug, Clone)]
pub struct KrakenBook {
    depth: usize,
    view: View,
    synced: bool,
    published: bool,
}

impl KrakenBook {
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            view: View::default(),
            synced: false,
            published: false,
        }
    }

    /// The book as it stands (right whenever the last outcome was `Publish`).
    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn apply(&mut self, msg: &BookMessage) -> Outcome {
        match msg.kind {
            Kind::Snapshot => {
                self.view = View::default();
                self.synced = true;
            }
            Kind::Update if !self.synced => return Outcome::Waiting,
            Kind::Update => {}
        }
        self.view.patch_to(&msg.bids, &msg.asks, self.depth);
        let ours = self.view.checksum();
        if ours != msg.checksum {
            self.synced = false;
            return Outcome::Resync {
                why: format!(
                    "checksum mismatch on {}: Kraken says {}, our book gives {ours}",
                    msg.symbol, msg.checksum
                ),
            };
        }
        let reset = msg.kind == Kind::Snapshot && self.published;
        self.published = true;
        Outcome::Publish { reset }
    }

    /// Forgets the book (the connection dropped): the next snapshot starts it again.
    pub fn unsync(&mut self) {
        self.synced = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::checksum;

    /// Kraken's worked example ("Book checksum (WebSocket v2)"), prices and quantities as the
    /// JSON numbers Kraken sends.
    const SNAPSHOT: &str = r#"{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",
        "bids":[{"price":45283.5,"qty":0.10000000},{"price":45283.4,"qty":1.54582015},
                {"price":45282.1,"qty":0.10000000},{"price":45281.0,"qty":0.10000000},
                {"price":45280.3,"qty":1.54592586},{"price":45279.0,"qty":0.07990000},
                {"price":45277.6,"qty":0.03310103},{"price":45277.5,"qty":0.30000000},
                {"price":45277.3,"qty":1.54602737},{"price":45276.6,"qty":0.15445238}],
        "asks":[{"price":45285.2,"qty":0.00100000},{"price":45286.4,"qty":1.54571953},
                {"price":45286.6,"qty":1.54571109},{"price":45289.6,"qty":1.54560911},
                {"price":45290.2,"qty":0.15890660},{"price":45291.8,"qty":1.54553491},
                {"price":45294.7,"qty":0.04454749},{"price":45296.1,"qty":0.35380000},
                {"price":45297.5,"qty":0.09945542},{"price":45299.5,"qty":0.18772827}],
        "checksum":3310070434,"timestamp":"2023-10-06T17:35:55.440295Z"}]}"#;

    fn lv(p: &str, q: &str) -> Level {
        Level::new(p.parse().expect("price"), q.parse().expect("qty"))
    }

    /// An update message whose checksum is that of `after` (what Kraken would send).
    fn update(bids: &str, asks: &str, after: &View) -> String {
        format!(
            r#"{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":[{bids}],"asks":[{asks}],"checksum":{}}}]}}"#,
            checksum(&after.bids, &after.asks)
        )
    }

    fn one(text: &str) -> BookMessage {
        let mut msgs = parse_book(text).expect("parses");
        assert_eq!(msgs.len(), 1);
        msgs.remove(0)
    }

    #[test]
    fn the_documented_snapshot_parses_exactly_and_passes_its_checksum() {
        let msg = one(SNAPSHOT);
        assert_eq!(msg.kind, Kind::Snapshot);
        assert_eq!(msg.bids[0], lv("45283.5", "0.10000000"));
        assert_eq!(
            msg.asks[0].size.to_string(),
            "0.00100000",
            "trailing zeros kept"
        );
        let mut book = KrakenBook::new(10);
        assert_eq!(book.apply(&msg), Outcome::Publish { reset: false });
        assert_eq!(book.view().bids.len(), 10);
    }

    #[test]
    fn updates_apply_in_order_truncate_to_depth_and_delete_at_zero() {
        let mut book = KrakenBook::new(10);
        book.apply(&one(SNAPSHOT));
        // A new best bid pushes the tenth bid out (no removal is sent for it); a price listed
        // twice takes its last size; qty 0 deletes an ask.
        let mut want = book.view().clone();
        want.bids.insert(0, lv("45284.0", "2.00000000"));
        want.bids.truncate(10);
        want.asks.remove(1);
        let text = update(
            r#"{"price":45284.0,"qty":1.0},{"price":45284.0,"qty":2.00000000}"#,
            r#"{"price":45286.4,"qty":0}"#,
            &want,
        );
        assert_eq!(book.apply(&one(&text)), Outcome::Publish { reset: false });
        assert_eq!(book.view(), &want);
    }

    #[test]
    fn a_wrong_checksum_asks_for_a_resync_and_the_next_snapshot_is_a_reset() {
        let mut book = KrakenBook::new(10);
        book.apply(&one(SNAPSHOT));
        let wrong = update(r#"{"price":45283.5,"qty":0.2}"#, "", &View::default());
        let Outcome::Resync { why } = book.apply(&one(&wrong)) else {
            panic!("a mismatch must resync");
        };
        assert!(why.contains("checksum mismatch on BTC/USD"), "{why}");
        // Until the snapshot, updates are not applied.
        let good_looking = update("", "", book.view());
        assert_eq!(book.apply(&one(&good_looking)), Outcome::Waiting);
        assert_eq!(book.apply(&one(SNAPSHOT)), Outcome::Publish { reset: true });
    }

    #[test]
    fn an_update_before_any_snapshot_waits() {
        let mut book = KrakenBook::new(10);
        assert_eq!(
            book.apply(&one(&update("", "", &View::default()))),
            Outcome::Waiting
        );
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        let exp = SNAPSHOT.replace("0.00100000", "1e-3");
        assert!(matches!(
            parse_book(&exp),
            Err(KrakenError::Number { field: "qty", .. })
        ));
        let negative = SNAPSHOT.replace("45283.5", "-45283.5");
        assert!(matches!(
            parse_book(&negative),
            Err(KrakenError::Number { .. })
        ));
        assert!(matches!(
            parse_book(r#"{"channel":"trade","type":"update","data":[]}"#),
            Err(KrakenError::Shape(_))
        ));
        assert!(matches!(parse_book("{"), Err(KrakenError::Shape(_))));
        assert!(matches!(
            parse_book(&SNAPSHOT.replace(r#""checksum":3310070434,"#, "")),
            Err(KrakenError::Shape(_))
        ));
    }
}
