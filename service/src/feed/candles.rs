//! Candles built from a live source's trades, at the venue's trade times: a trade in the open
//! interval updates its candle; one in a later interval closes it (`closed: true`) and opens
//! the next; the clock closes a candle whose interval ended [`GRACE`] ago with no later trade.
//! A trade older than the open candle (late, or out of order) is still published as a trade
//! but changes no candle: a closed candle never changes again.

use crate::book::cmp_value;
use crate::market::{Candle, Decimal, Interval, Micros};

/// How long after its interval's end a candle waits for late trades before the clock closes
/// it: venues' clocks and ours differ by some milliseconds, and trades arrive after they happen.
pub const GRACE: Micros = 500_000;

/// The open candles of one symbol, one per interval.
#[derive(Debug, Clone, Default)]
pub struct Candles {
    open: [Option<Candle>; 2],
}

const INTERVALS: [Interval; 2] = [Interval::S1, Interval::M1];

impl Candles {
    /// A trade at `ts` (the venue's time): the candles to publish, in order (a closed one
    /// first when the trade opens a new interval).
    pub fn trade(&mut self, ts: Micros, price: Decimal, size: Decimal) -> Vec<Candle> {
        let mut out = Vec::new();
        for (slot, interval) in INTERVALS.into_iter().enumerate() {
            let start = ts - ts.rem_euclid(interval.micros());
            match &mut self.open[slot] {
                Some(c) if start < c.start => {}
                Some(c) if start == c.start => {
                    if cmp_value(price, c.high).is_gt() {
                        c.high = price;
                    }
                    if cmp_value(price, c.low).is_lt() {
                        c.low = price;
                    }
                    c.close = price;
                    // A volume beyond i64 units stops growing rather than wrapping.
                    c.volume = c.volume.checked_add(size).unwrap_or(c.volume);
                    c.trades = c.trades.saturating_add(1);
                    out.push(c.clone());
                }
                open => {
                    if let Some(mut done) = open.take() {
                        done.closed = true;
                        out.push(done);
                    }
                    let c = Candle {
                        interval,
                        start,
                        open: price,
                        high: price,
                        low: price,
                        close: price,
                        volume: size,
                        trades: 1,
                        closed: false,
                    };
                    out.push(c.clone());
                    *open = Some(c);
                }
            }
        }
        out
    }

    /// The clock reads `now`: the candles whose interval ended [`GRACE`] ago, closed.
    pub fn close_before(&mut self, now: Micros) -> Vec<Candle> {
        let mut out = Vec::new();
        for open in &mut self.open {
            if open
                .as_ref()
                .is_some_and(|c| c.start + c.interval.micros() + GRACE <= now)
                && let Some(mut done) = open.take()
            {
                done.closed = true;
                out.push(done);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect(s)
    }

    #[test]
    fn trades_build_candles_and_a_later_interval_or_the_clock_closes_them() {
        let mut c = Candles::default();
        let t0 = 1_700_000_000_000_000; // a whole minute
        let first = c.trade(t0 + 100, d("10.5"), d("1"));
        assert_eq!(first.len(), 2, "a 1 s and a 1 m candle open");
        let second = c.trade(t0 + 200_000, d("11"), d("0.25"));
        assert_eq!(second[0].high, d("11"));
        assert_eq!(second[0].volume, d("1.25"));
        let third = c.trade(t0 + 300_000, d("9.75"), d("2"));
        let s1 = &third[0];
        assert_eq!(
            (s1.open, s1.high, s1.low, s1.close, s1.volume, s1.trades),
            (d("10.5"), d("11"), d("9.75"), d("9.75"), d("3.25"), 3)
        );
        // A trade in the next second closes the first one and opens another; the minute goes on.
        let next = c.trade(t0 + 1_000_001, d("10"), d("1"));
        assert_eq!(next.len(), 3);
        assert!(next[0].closed && next[0].start == t0 && next[0].trades == 3);
        assert!(!next[1].closed && next[1].start == t0 + 1_000_000);
        assert!(!next[2].closed && next[2].trades == 4);
        // A late trade (before the open second) changes no candle.
        assert!(
            c.trade(t0 + 900_000, d("50"), d("1"))
                .iter()
                .all(|c| c.interval == Interval::M1)
        );
        // The clock: nothing before the grace, then the second closes, later the minute.
        assert!(c.close_before(t0 + 2_000_000 + GRACE - 1).is_empty());
        let closed = c.close_before(t0 + 2_000_000 + GRACE);
        assert_eq!(closed.len(), 1);
        assert!(closed[0].closed && closed[0].interval == Interval::S1);
        let minute = c.close_before(t0 + 60_000_000 + GRACE);
        assert_eq!(minute.len(), 1);
        assert_eq!((minute[0].high, minute[0].trades), (d("50"), 5));
    }
}
