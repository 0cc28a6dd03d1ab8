//! Order books as clients follow them: a view of the top levels of each side, the difference
//! between two views (what an `update` carries), and the checksum a client verifies after
//! applying one.
//!
//! A source (the simulator, a replay, a venue) keeps its own book however it must; it hands
//! the top [`MAX_DEPTH`] levels to [`Depths`], which makes one message per depth tier. An
//! update lists every level whose size changed within that tier's view, and a level that left
//! the view (removed, or pushed below the depth) with size `"0"`: a client that applies it holds
//! exactly the new view, with no truncation rule to get wrong.
//!
//! Prices and sizes keep the text the source printed (Kraken's checksum depends on trailing
//! zeros), so levels are ordered by numeric value, not by `Decimal`'s derived order.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::market::Decimal;

/// The deepest view a client may ask for (`book_100`).
pub const MAX_DEPTH: usize = 100;

/// Levels per side that the checksum covers.
pub const CHECKSUM_LEVELS: usize = 10;

/// One price level: on the wire `["price","size"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Decimal,
    pub size: Decimal,
}

impl Level {
    pub const fn new(price: Decimal, size: Decimal) -> Self {
        Self { price, size }
    }

    /// A level from a venue's or a client's text: a positive price and a size of zero or more
    /// (zero removes the level). `None` for anything else.
    pub fn parse(price: &str, size: &str) -> Option<Self> {
        Self::checked(price.parse().ok()?, size.parse().ok()?)
    }

    /// A level from parsed decimals, with the same checks as [`Self::parse`].
    pub fn checked(price: Decimal, size: Decimal) -> Option<Self> {
        (price.units > 0 && size.units >= 0).then_some(Self { price, size })
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.price)?;
        t.serialize_element(&self.size)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (price, size) = <(Decimal, Decimal)>::deserialize(d)?;
        Self::checked(price, size).ok_or_else(|| {
            D::Error::custom("a level needs a positive price and a size of zero or more")
        })
    }
}

/// Which side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Bid,
    Ask,
}

impl Side {
    /// Whether `a` comes before `b` on this side: bids best (highest) first, asks lowest first.
    pub fn order(self, a: Decimal, b: Decimal) -> Ordering {
        match self {
            Side::Bid => cmp_value(b, a),
            Side::Ask => cmp_value(a, b),
        }
    }
}

/// Numeric order of two decimals whatever their scales (`1.5` and `1.50` are equal).
pub fn cmp_value(a: Decimal, b: Decimal) -> Ordering {
    if a.scale == b.scale {
        // The usual case: one venue prints one symbol's prices at one scale.
        return a.units.cmp(&b.units);
    }
    key(a).cmp(&key(b))
}

/// A decimal scaled to 18 places: exact for every `Decimal` (at most 18 fractional digits and
/// an `i64` of units, so below 2^63 * 10^18 < 2^127).
pub fn key(d: Decimal) -> i128 {
    i128::from(d.units) * 10i128.pow(18 - u32::from(d.scale.min(18)))
}

/// What a book message carries: the changed levels (an update) or every level of the view
/// (a snapshot), and the checksum of the view after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookData {
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    /// CRC32 of the top levels after this message (see [`checksum`]).
    pub checksum: u32,
    /// A snapshot that replaces the book within the stream: the source lost track of the
    /// venue's book and rebuilt it. Clients replace what they hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl BookData {
    /// A whole view as a snapshot.
    pub fn snapshot(view: &View, reset: bool) -> Self {
        Self::snapshot_to(view, usize::MAX, reset)
    }

    /// The top `depth` levels of a view as a snapshot.
    pub fn snapshot_to(view: &View, depth: usize, reset: bool) -> Self {
        Self {
            bids: prefix(&view.bids, depth).to_vec(),
            asks: prefix(&view.asks, depth).to_vec(),
            checksum: view.checksum(),
            reset,
        }
    }
}

/// The best `depth` levels of a side.
fn prefix(side: &[Level], depth: usize) -> &[Level] {
    &side[..side.len().min(depth)]
}

/// The top levels of a book: bids best first, asks best first, no zero sizes, no duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

impl View {
    /// The best `depth` levels of each side.
    pub fn top(&self, depth: usize) -> View {
        View {
            bids: self.bids.iter().take(depth).copied().collect(),
            asks: self.asks.iter().take(depth).copied().collect(),
        }
    }

    pub fn checksum(&self) -> u32 {
        checksum(&self.bids, &self.asks)
    }

    /// Applies a message as a client does: a snapshot (`replace`) replaces the view; an update
    /// sets each level's size, `0` removing it. Returns whether the checksum then matches.
    pub fn apply(&mut self, data: &BookData, replace: bool) -> bool {
        if replace {
            self.bids.clear();
            self.asks.clear();
        }
        self.patch(&data.bids, &data.asks);
        self.checksum() == data.checksum
    }

    /// Sets each level in order (size zero removes it), then keeps at most `depth` a side.
    pub fn patch_to(&mut self, bids: &[Level], asks: &[Level], depth: usize) {
        self.patch(bids, asks);
        self.bids.truncate(depth);
        self.asks.truncate(depth);
    }

    /// Sets each level in order: size zero removes it.
    pub fn patch(&mut self, bids: &[Level], asks: &[Level]) {
        for level in bids {
            set_level(&mut self.bids, Side::Bid, *level);
        }
        for level in asks {
            set_level(&mut self.asks, Side::Ask, *level);
        }
    }
}

/// Sets one level in a side kept in order: size zero removes it.
pub fn set_level(levels: &mut Vec<Level>, side: Side, level: Level) {
    match levels.binary_search_by(|l| side.order(l.price, level.price)) {
        Ok(i) if level.size.units == 0 => {
            levels.remove(i);
        }
        Ok(i) => levels[i] = level,
        Err(_) if level.size.units == 0 => {}
        Err(i) => levels.insert(i, level),
    }
}

/// The changes that turn side `old` into side `new` (both in order): new or resized levels
/// with their size, vanished ones with size zero, in book order.
pub fn diff_side(old: &[Level], new: &[Level], side: Side) -> Vec<Level> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => side.order(a.price, b.price),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                out.push(Level::new(old[i].price, Decimal::new(0, old[i].size.scale)));
                i += 1;
            }
            Ordering::Greater => {
                out.push(new[j]);
                j += 1;
            }
            Ordering::Equal => {
                // Same value: a reprint (another scale) is a change too, so the client's
                // text, and with it the checksum, follows the source's.
                if old[i] != new[j] {
                    out.push(new[j]);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The book checksum: CRC32 (IEEE, as zlib's `crc32`) of one string made from the top
/// [`CHECKSUM_LEVELS`] asks from the lowest price up, then the top bids from the highest price
/// down; each level contributes its price then its size as printed, with the decimal point
/// and any leading zeros removed (`"0.0500"` gives `"500"`). Kraken's v2 book checksum.
pub fn checksum(bids: &[Level], asks: &[Level]) -> u32 {
    // A decimal printed at its scale, without its point and leading zeros, is the decimal
    // digits of its units (nothing for zero): no formatting needed. 20 levels of two numbers
    // of at most 20 digits each.
    let mut text = [0u8; 2 * CHECKSUM_LEVELS * 2 * 20];
    let mut len = 0;
    for level in asks
        .iter()
        .take(CHECKSUM_LEVELS)
        .chain(bids.iter().take(CHECKSUM_LEVELS))
    {
        for d in [level.price, level.size] {
            let mut n = d.units.unsigned_abs();
            let start = len;
            while n > 0 {
                text[len] = b'0' + (n % 10) as u8;
                n /= 10;
                len += 1;
            }
            text[start..len].reverse();
        }
    }
    crc32fast::hash(&text[..len])
}

/// The depth tiers a client can follow, smallest first; each is its own stream.
pub const TIERS: [usize; 4] = [10, 25, 50, 100];

/// One symbol's book as its tiers' streams see it: the last view (at the deepest tier; each
/// tier's is its top), so the next can be sent as a difference.
#[derive(Debug, Clone, Default)]
pub struct Depths {
    last: Option<Arc<View>>,
}

/// One tier's message: what goes on the wire, and the view after it (what a new subscriber's
/// snapshot shows): the top `depth` levels of `view`, which the four tiers of a message share
/// rather than each copying its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookUpdate {
    pub data: BookData,
    pub view: Arc<View>,
    pub depth: usize,
}

/// On the wire a book message is its data; the view stays with the server.
impl Serialize for BookUpdate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

/// Read back (a recording), a message has no view yet: the reader rebuilds it by applying the
/// messages in order (see [`View::apply`]).
impl<'de> Deserialize<'de> for BookUpdate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            data: BookData::deserialize(d)?,
            view: Arc::default(),
            depth: MAX_DEPTH,
        })
    }
}

impl BookUpdate {
    /// A message carrying the whole of `view`, at a tier's `depth`.
    pub fn whole(view: Arc<View>, depth: usize) -> Self {
        Self {
            data: BookData::snapshot_to(&view, depth, false),
            view,
            depth,
        }
    }

    /// The message a new subscriber gets: the whole view after this one.
    pub fn as_snapshot(&self) -> Self {
        Self {
            data: BookData::snapshot_to(&self.view, self.depth, false),
            view: self.view.clone(),
            depth: self.depth,
        }
    }

    /// The view after this message, at its tier's depth.
    pub fn view(&self) -> View {
        self.view.top(self.depth)
    }
}

impl Depths {
    /// Starts from `view` (the book before the first message), or from nothing.
    pub fn starting_at(view: Option<&View>) -> Self {
        Self {
            last: view.map(|v| Arc::new(v.top(MAX_DEPTH))),
        }
    }

    /// The messages, one per tier in [`TIERS`] order, that take each tier from its last view to
    /// the top of `book` (which must hold at least [`MAX_DEPTH`] levels per side where the
    /// source has them; more are dropped). `reset`, or no last view, sends whole views.
    pub fn next(&mut self, book: View, reset: bool) -> [BookUpdate; 4] {
        let checksum = book.checksum();
        self.next_checked(book, reset, checksum)
    }

    /// [`Self::next`] when the book's checksum is known already (Kraken's, which the source
    /// has just verified equals ours): it covers the top ten levels, which every tier shares.
    pub fn next_checked(&mut self, mut book: View, reset: bool, checksum: u32) -> [BookUpdate; 4] {
        book.bids.truncate(MAX_DEPTH);
        book.asks.truncate(MAX_DEPTH);
        let view = Arc::new(book);
        let updates = TIERS.map(|depth| {
            let data = match (&self.last, reset) {
                (Some(last), false) => BookData {
                    bids: diff_side(
                        prefix(&last.bids, depth),
                        prefix(&view.bids, depth),
                        Side::Bid,
                    ),
                    asks: diff_side(
                        prefix(&last.asks, depth),
                        prefix(&view.asks, depth),
                        Side::Ask,
                    ),
                    checksum,
                    reset: false,
                },
                (_, reset) => BookData {
                    checksum,
                    ..BookData::snapshot_to(&view, depth, reset)
                },
            };
            BookUpdate {
                data,
                view: view.clone(),
                depth,
            }
        });
        self.last = Some(view);
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    fn lv(p: &str, s: &str) -> Level {
        Level::new(d(p), d(s))
    }

    /// The worked example of Kraken's "Book checksum (WebSocket v2)" guide: the BTC/USD
    /// snapshot's ten levels a side and the checksum Kraken prints for them.
    #[test]
    fn checksum_matches_krakens_documented_example() {
        let bids = [
            ("45283.5", "0.10000000"),
            ("45283.4", "1.54582015"),
            ("45282.1", "0.10000000"),
            ("45281.0", "0.10000000"),
            ("45280.3", "1.54592586"),
            ("45279.0", "0.07990000"),
            ("45277.6", "0.03310103"),
            ("45277.5", "0.30000000"),
            ("45277.3", "1.54602737"),
            ("45276.6", "0.15445238"),
        ];
        let asks = [
            ("45285.2", "0.00100000"),
            ("45286.4", "1.54571953"),
            ("45286.6", "1.54571109"),
            ("45289.6", "1.54560911"),
            ("45290.2", "0.15890660"),
            ("45291.8", "1.54553491"),
            ("45294.7", "0.04454749"),
            ("45296.1", "0.35380000"),
            ("45297.5", "0.09945542"),
            ("45299.5", "0.18772827"),
        ];
        let mut bids: Vec<_> = bids.iter().map(|(p, s)| lv(p, s)).collect();
        let mut asks: Vec<_> = asks.iter().map(|(p, s)| lv(p, s)).collect();
        assert_eq!(checksum(&bids, &asks), 3_310_070_434);
        // Levels below the top ten do not count; a changed digit does.
        bids.push(lv("45276.5", "1"));
        asks.push(lv("45299.6", "1"));
        assert_eq!(checksum(&bids, &asks), 3_310_070_434);
        asks[0] = lv("45285.2", "0.00100001");
        assert_ne!(checksum(&bids, &asks), 3_310_070_434);
    }

    #[test]
    fn the_checksum_string_drops_points_and_leading_zeros() {
        // One ask, one bid: "5005" "500" then "5000" "500".
        let want = crc32fast::hash(b"50055005000500");
        assert_eq!(
            checksum(
                &[lv("0.05000", "0.00000500")],
                &[lv("0.05005", "0.00000500")]
            ),
            want
        );
        assert_eq!(checksum(&[], &[]), crc32fast::hash(b""));
    }

    #[test]
    fn levels_order_by_value_whatever_the_scale() {
        let mut bids = vec![lv("101.5", "1"), lv("100", "2")];
        set_level(&mut bids, Side::Bid, lv("100.75", "3"));
        set_level(&mut bids, Side::Bid, lv("101.50", "4"));
        assert_eq!(
            bids,
            vec![lv("101.50", "4"), lv("100.75", "3"), lv("100", "2")]
        );
        set_level(&mut bids, Side::Bid, lv("100.00", "0"));
        set_level(&mut bids, Side::Bid, lv("99", "0"));
        assert_eq!(bids, vec![lv("101.50", "4"), lv("100.75", "3")]);
    }

    #[test]
    fn wire_shape() {
        let data = BookData {
            bids: vec![lv("192.19", "120")],
            asks: vec![lv("192.23", "0")],
            checksum: 7,
            reset: false,
        };
        assert_eq!(
            serde_json::to_string(&data).expect("json"),
            r#"{"bids":[["192.19","120"]],"asks":[["192.23","0"]],"checksum":7}"#
        );
        let reset: BookData =
            serde_json::from_str(r#"{"bids":[],"asks":[],"checksum":0,"reset":true}"#)
                .expect("parses");
        assert!(reset.reset);
        assert!(serde_json::from_str::<Level>(r#"["-1","1"]"#).is_err());
        assert!(serde_json::from_str::<Level>(r#"["1","-1"]"#).is_err());
    }

    /// A random book: up to 150 levels a side on a grid, prices in cents, bids below asks.
    fn book_strategy() -> impl Strategy<Value = View> {
        (
            prop::collection::btree_map(1i64..200, 1i64..50, 0..150),
            prop::collection::btree_map(201i64..400, 1i64..50, 0..150),
        )
            .prop_map(|(bids, asks)| View {
                bids: bids
                    .iter()
                    .rev()
                    .map(|(p, s)| Level::new(Decimal::new(*p, 2), Decimal::new(*s, 3)))
                    .collect(),
                asks: asks
                    .iter()
                    .map(|(p, s)| Level::new(Decimal::new(*p, 2), Decimal::new(*s, 3)))
                    .collect(),
            })
    }

    proptest! {
        /// For any sequence of source books (some of them resets), a client of each tier that
        /// starts from the first message and applies every later one holds exactly the top of
        /// the source's book, and the checksum matches at every step.
        #[test]
        fn snapshot_then_updates_reproduce_the_source(
            books in prop::collection::vec((book_strategy(), prop::bool::weighted(0.1)), 1..30),
        ) {
            let mut depths = Depths::starting_at(None);
            let mut clients: Vec<View> = vec![View::default(); TIERS.len()];
            for (i, (book, reset)) in books.iter().enumerate() {
                let updates = depths.next(book.clone(), *reset);
                for (t, update) in updates.iter().enumerate() {
                    let replace = i == 0 || update.data.reset;
                    prop_assert_eq!(replace, i == 0 || *reset);
                    prop_assert!(clients[t].apply(&update.data, replace), "checksum at step {} tier {}", i, TIERS[t]);
                    let want = book.top(TIERS[t]);
                    prop_assert_eq!(&clients[t], &want);
                    prop_assert_eq!(&update.view(), &want);
                    prop_assert!(update.data.bids.len() + update.data.asks.len() <= 4 * TIERS[t]);
                }
            }
        }

        /// The difference of two sides, applied to the first, gives the second.
        #[test]
        fn a_diff_applied_gives_the_new_side(a in book_strategy(), b in book_strategy()) {
            let mut side = a.bids.clone();
            for change in diff_side(&a.bids, &b.bids, Side::Bid) {
                set_level(&mut side, Side::Bid, change);
            }
            prop_assert_eq!(side, b.bids.clone());
            prop_assert!(diff_side(&b.asks, &b.asks, Side::Ask).is_empty());
        }
    }
}
