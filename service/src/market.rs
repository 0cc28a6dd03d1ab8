//! Market event types: what a feed produces and what clients receive.
//!
//! Prices and sizes are integers in units of `10^-scale` so that arithmetic is exact and
//! the wire format is a decimal string (clients never see binary floating point).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

pub use crate::book::BookUpdate;

/// Event time: integer microseconds since the Unix epoch.
pub type Micros = i64;

/// A fixed-point decimal: `units * 10^-scale`. Serialized as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal {
    pub units: i64,
    pub scale: u8,
}

impl Decimal {
    pub const fn new(units: i64, scale: u8) -> Self {
        Self { units, scale }
    }

    /// `self + other` at the finer of the two scales; `None` on overflow.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let a = self.rescaled(scale)?;
        let b = other.rescaled(scale)?;
        Some(Decimal::new(a.checked_add(b)?, scale))
    }

    /// `self - other` at the finer of the two scales; `None` on overflow.
    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(Decimal::new(other.units.checked_neg()?, other.scale))
    }

    /// The units at a finer `scale`.
    fn rescaled(self, scale: u8) -> Option<i64> {
        let pow = 10i64.checked_pow(u32::from(scale.checked_sub(self.scale)?))?;
        self.units.checked_mul(pow)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        if self.scale == 0 {
            return write!(f, "{sign}{abs}");
        }
        let pow = 10u64.pow(u32::from(self.scale));
        write!(
            f,
            "{sign}{}.{:0width$}",
            abs / pow,
            abs % pow,
            width = usize::from(self.scale)
        )
    }
}

impl Decimal {
    /// The decimal string, written into `buf` without the formatting machinery: every price
    /// and size of every message goes through here.
    pub fn write_str<'a>(&self, buf: &'a mut [u8; 48]) -> &'a str {
        let mut n = self.units.unsigned_abs();
        let scale = usize::from(self.scale.min(40));
        let mut i = buf.len();
        let mut digits = 0;
        while n > 0 || digits <= scale {
            if digits == scale && scale > 0 {
                i -= 1;
                buf[i] = b'.';
            }
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            digits += 1;
        }
        if self.units < 0 {
            i -= 1;
            buf[i] = b'-';
        }
        // Only ASCII digits, a point and a sign were written.
        std::str::from_utf8(&buf[i..]).unwrap_or_default()
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.write_str(&mut [0; 48]))
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Decimal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid decimal string {s:?}");
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty()
            || frac.len() > 18
            || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
        {
            return Err(bad());
        }
        let scale = u8::try_from(frac.len()).map_err(|_| bad())?;
        let units: i64 = format!("{int}{frac}").parse().map_err(|_| bad())?;
        Ok(Self::new(if neg { -units } else { units }, scale))
    }
}

/// The kinds of stream a symbol has. Each (channel, symbol) pair is one stream with its own `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    #[serde(rename = "ticker")]
    Ticker,
    #[serde(rename = "trades")]
    Trades,
    #[serde(rename = "candles_1s")]
    Candles1s,
    #[serde(rename = "candles_1m")]
    Candles1m,
    /// The order book's top 10 levels a side (see [`crate::book`]).
    #[serde(rename = "book")]
    Book,
    #[serde(rename = "book_25")]
    Book25,
    #[serde(rename = "book_50")]
    Book50,
    #[serde(rename = "book_100")]
    Book100,
}

impl Channel {
    pub const ALL: [Channel; 8] = [
        Channel::Ticker,
        Channel::Trades,
        Channel::Candles1s,
        Channel::Candles1m,
        Channel::Book,
        Channel::Book25,
        Channel::Book50,
        Channel::Book100,
    ];

    /// The book channels, in the order of [`crate::book::TIERS`].
    pub const BOOKS: [Channel; 4] = [
        Channel::Book,
        Channel::Book25,
        Channel::Book50,
        Channel::Book100,
    ];

    /// The depth of a book channel.
    pub const fn book_depth(self) -> Option<usize> {
        match self {
            Channel::Book => Some(10),
            Channel::Book25 => Some(25),
            Channel::Book50 => Some(50),
            Channel::Book100 => Some(100),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Ticker => "ticker",
            Channel::Trades => "trades",
            Channel::Candles1s => "candles_1s",
            Channel::Candles1m => "candles_1m",
            Channel::Book => "book",
            Channel::Book25 => "book_25",
            Channel::Book50 => "book_50",
            Channel::Book100 => "book_100",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Expands a client-facing channel name; `candles` is shorthand for both intervals and
    /// `book_10` another name for `book`.
    pub fn parse_many(name: &str) -> Option<&'static [Channel]> {
        match name {
            "ticker" => Some(&[Channel::Ticker]),
            "trades" => Some(&[Channel::Trades]),
            "candles_1s" => Some(&[Channel::Candles1s]),
            "candles_1m" => Some(&[Channel::Candles1m]),
            "candles" => Some(&[Channel::Candles1s, Channel::Candles1m]),
            "book" | "book_10" => Some(&[Channel::Book]),
            "book_25" => Some(&[Channel::Book25]),
            "book_50" => Some(&[Channel::Book50]),
            "book_100" => Some(&[Channel::Book100]),
            _ => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Candle intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Interval {
    #[serde(rename = "1s")]
    S1,
    #[serde(rename = "1m")]
    M1,
}

impl Interval {
    pub const fn micros(self) -> Micros {
        match self {
            Interval::S1 => 1_000_000,
            Interval::M1 => 60_000_000,
        }
    }

    pub const fn channel(self) -> Channel {
        match self {
            Interval::S1 => Channel::Candles1s,
            Interval::M1 => Channel::Candles1m,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1s" => Some(Interval::S1),
            "1m" => Some(Interval::M1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// Best bid and offer, last trade price, and the day's change and volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticker {
    pub bid: Decimal,
    pub ask: Decimal,
    pub last: Decimal,
    /// Price at the start of the UTC day.
    pub open: Decimal,
    /// `last - open`.
    pub change: Decimal,
    /// Traded size since the start of the UTC day.
    pub volume: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub price: Decimal,
    pub size: Decimal,
    pub side: Side,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    pub interval: Interval,
    /// Start of the interval, microseconds since the Unix epoch.
    pub start: Micros,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub trades: u32,
    /// True on the last update of the interval: the candle will not change again.
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Payload {
    Ticker(Ticker),
    Trade(Trade),
    Candle(Candle),
    Book(BookUpdate),
}

/// One event on one stream, as produced by a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub channel: Channel,
    pub symbol: u16,
    pub seq: u64,
    pub ts: Micros,
    pub payload: Payload,
}

/// Symbol names are short, upper-case and URL-safe so they can appear in query strings.
pub fn valid_symbol(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

/// Events for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The book message of symbol 0 with `seq` (at time `seq`) that takes `depths` to one
    /// level a side: `bid` and `bid + 1`.
    pub fn book(depths: &mut crate::book::Depths, seq: u64, bid: i64, reset: bool) -> Event {
        use crate::book::{Level, View};
        let level = |p| Level::new(Decimal::new(p, 0), Decimal::new(1, 0));
        let view = View {
            bids: vec![level(bid)],
            asks: vec![level(bid + 1)],
        };
        let [update, ..] = depths.next(view, reset);
        Event {
            channel: Channel::Book,
            symbol: 0,
            seq,
            ts: seq as i64,
            payload: Payload::Book(update),
        }
    }

    /// A trade of symbol 0 with `seq`, at time `seq`.
    pub fn trade(seq: u64) -> Event {
        Event {
            channel: Channel::Trades,
            symbol: 0,
            seq,
            ts: seq as i64,
            payload: Payload::Trade(Trade {
                price: Decimal::new(1, 0),
                size: Decimal::new(1, 0),
                side: Side::Buy,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_add_and_subtract_at_the_finer_scale() {
        let d = |s: &str| s.parse::<super::Decimal>().expect(s);
        assert_eq!(d("1.5").checked_add(d("0.25")), Some(d("1.75")));
        assert_eq!(d("0.00000001").checked_add(d("2")), Some(d("2.00000001")));
        assert_eq!(d("105944.2").checked_sub(d("120.35")), Some(d("105823.85")));
        assert_eq!(d("1").checked_sub(d("1.5")), Some(d("-0.5")));
        assert_eq!(super::Decimal::new(i64::MAX, 0).checked_add(d("1")), None);
        assert_eq!(
            super::Decimal::new(i64::MAX / 10 + 1, 0).checked_add(d("0.1")),
            None
        );
    }

    use super::*;

    #[test]
    fn decimal_formats_and_parses() {
        assert_eq!(Decimal::new(19012, 2).to_string(), "190.12");
        assert_eq!(Decimal::new(5, 4).to_string(), "0.0005");
        assert_eq!(Decimal::new(-105, 2).to_string(), "-1.05");
        assert_eq!(Decimal::new(42, 0).to_string(), "42");
        for s in ["190.12", "0.0005", "-1.05", "42"] {
            assert_eq!(
                s.parse::<Decimal>().map(|d| d.to_string()),
                Ok(s.to_string())
            );
        }
        assert!("1.2.3".parse::<Decimal>().is_err());
        assert!("".parse::<Decimal>().is_err());
        assert!("1e5".parse::<Decimal>().is_err());
    }

    #[test]
    fn decimal_strings_are_written_as_displayed() {
        let mut buf = [0; 48];
        for (units, scale) in [
            (19012, 2),
            (5, 4),
            (-105, 2),
            (42, 0),
            (0, 0),
            (0, 3),
            (-7, 1),
            (i64::MAX, 18),
            (i64::MIN, 18),
            (i64::MIN, 0),
            (1, 18),
        ] {
            let d = Decimal::new(units, scale);
            assert_eq!(d.write_str(&mut buf), d.to_string(), "{units} {scale}");
        }
    }

    #[test]
    fn channel_names_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse_many(c.as_str()), Some(&[c][..]));
            assert_eq!(serde_json::to_string(&c).ok(), Some(format!("\"{c}\"")));
        }
        assert_eq!(Channel::parse_many("candles").map(<[_]>::len), Some(2));
        assert_eq!(Channel::parse_many("book_10"), Some(&[Channel::Book][..]));
        for (c, depth) in Channel::BOOKS.iter().zip(crate::book::TIERS) {
            assert_eq!(c.book_depth(), Some(depth));
        }
        assert_eq!(Channel::parse_many("orderbook"), None);
    }

    #[test]
    fn symbol_names() {
        assert!(valid_symbol("BTC-USD"));
        assert!(valid_symbol("BRK.B"));
        assert!(!valid_symbol("btc"));
        assert!(!valid_symbol(""));
        assert!(!valid_symbol("A B"));
    }
}
