//! How the venue doubles move their books, the same way for every venue: three sizes change
//! among the best bids, a new best bid appears a tick inside the spread (or, when the spread
//! is one tick, the best bid goes), and one of the ten best asks changes size. Sizes have eight
//! decimals; prices keep the book's own scale.

use tickstream::book::{Level, Side, View, set_level};
use tickstream::market::Decimal;

/// A xorshift generator: deterministic moves from a seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A size from 1 to `max` units of 1e-8.
    fn size(&mut self, max: u64) -> Decimal {
        Decimal::new(1 + (self.next() % max) as i64, 8)
    }
}

/// Moves `book` (at least 20 levels a side) one step, `tick` price units at a time; returns the
/// levels that changed, bids then asks, in the order they changed (size 0: removed).
pub fn step(book: &mut View, rng: &mut Rng, tick: i64, max_size: u64) -> (Vec<Level>, Vec<Level>) {
    let (mut bids, mut asks) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let i = (rng.next() % 20) as usize;
        let level = Level::new(book.bids[i].price, rng.size(max_size));
        book.bids[i] = level;
        bids.push(level);
    }
    let best = book.bids[0].price;
    let above = Decimal::new(best.units + tick, best.scale);
    if book.asks[0].price.units > above.units {
        let level = Level::new(above, rng.size(max_size));
        set_level(&mut book.bids, Side::Bid, level);
        bids.push(level);
    } else {
        let gone = Level::new(best, Decimal::new(0, 8));
        set_level(&mut book.bids, Side::Bid, gone);
        bids.push(gone);
    }
    let i = (rng.next() % 10) as usize;
    let ask = Level::new(book.asks[i].price, rng.size(max_size));
    book.asks[i] = ask;
    asks.push(ask);
    (bids, asks)
}
