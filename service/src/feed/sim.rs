//! The built-in market simulator.
//!
//! Every value is a pure function of `(seed, rate, symbol, tick index)`, so two processes started
//! at different times emit byte-identical events with identical sequence numbers for the same
//! wall-clock instants. That is what lets several tasks behind a load balancer serve one stream and
//! a client resume on any of them. Nothing accumulates state that a fresh process could not
//! recompute: prices come from multi-scale value noise evaluated at the tick's time, trades are
//! laid out in fixed blocks of ticks whose totals are known without walking them.

use crate::book::{Depths, Level, MAX_DEPTH, View};
use crate::market::{
    Candle, Channel, Decimal, Event, Interval, Micros, Payload, Side, Ticker, Trade,
};

/// Ticks per trade block. Each block holds exactly [`TRADES_PER_BLOCK`] trades, so the trade
/// sequence number of any tick is known in O(1).
const BLOCK: u64 = 64;
const TRADES_PER_BLOCK: u64 = 48;
/// Noise octaves: 50 ms up to about 3.6 hours. Bounding the slowest octave keeps prices from
/// wandering off over days while minutes and hours still trend.
const OCTAVES: u32 = 18;
const BASE_SCALE_US: f64 = 50_000.0;
const DAY_US: Micros = 86_400_000_000;
/// How long a book level keeps its size, as a power of two of microseconds (2^20: about a
/// second): each level changes at its own phase, so a tick changes a few levels rather than
/// all of them at once. A shift rather than a division: this runs 200 times per symbol-tick.
const BOOK_PERIOD_BITS: u32 = 20;
pub const MAX_RATE: u32 = 1000;

/// How a symbol trades: price level, tick size, lot size, volatility and spread.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    pub name: String,
    base_price: f64,
    price_scale: u8,
    /// Tick size in price units.
    tick: i64,
    lot_scale: u8,
    mean_lots: f64,
    /// Log-price volatility per square root of a second.
    vol: f64,
    spread_ticks: i64,
    key: u64,
    /// Price units between book levels behind the best (`book_step_for`).
    book_step: i64,
}

/// The default symbol set: well-known equities and crypto pairs.
pub const DEFAULT_SYMBOLS: &str = "AAPL,MSFT,NVDA,AMZN,GOOGL,TSLA,SPY,BTC-USD,ETH-USD,SOL-USD";

impl SymbolSpec {
    /// Parameters for a symbol: a table for well-known names, otherwise derived from the name so
    /// that any symbol list gives a stable, plausible market.
    pub fn for_name(name: &str) -> Self {
        let key = fnv1a(name.as_bytes());
        let (base_price, lot_scale, mean_lots, vol, spread_ticks) = match name {
            "AAPL" => (190.0, 0, 80.0, 0.0004, 1),
            "MSFT" => (420.0, 0, 60.0, 0.00035, 2),
            "NVDA" => (130.0, 0, 150.0, 0.0008, 1),
            "AMZN" => (185.0, 0, 70.0, 0.0005, 1),
            "GOOGL" => (170.0, 0, 70.0, 0.00045, 1),
            "TSLA" => (250.0, 0, 120.0, 0.001, 2),
            "SPY" => (560.0, 0, 200.0, 0.0002, 1),
            "BTC-USD" => (65_000.0, 4, 1_500.0, 0.0007, 5),
            "ETH-USD" => (3_400.0, 4, 20_000.0, 0.0009, 3),
            "SOL-USD" => (150.0, 3, 8_000.0, 0.0012, 1),
            _ => {
                let u = unit(mix(key ^ 0x5eed));
                (
                    10.0 + 490.0 * u,
                    0,
                    100.0,
                    0.0003 + 0.0007 * unit(mix(key)),
                    1,
                )
            }
        };
        let (price_scale, tick) = (2, 1);
        Self {
            name: name.to_string(),
            base_price,
            price_scale,
            tick,
            lot_scale,
            mean_lots,
            vol,
            spread_ticks,
            key,
            book_step: Self::book_step_for(base_price, vol, price_scale, tick),
        }
    }

    fn price(&self, units: i64) -> Decimal {
        Decimal::new(units, self.price_scale)
    }

    fn size(&self, lots: i64) -> Decimal {
        Decimal::new(lots, self.lot_scale)
    }

    /// Price units between book levels behind the best: the power of ten at or below the
    /// typical move in a second, so a tick shifts a level or two of a volatile symbol
    /// (BTC-USD: 10.00) rather than the whole book. Fixed per symbol: computed once.
    fn book_step_for(base_price: f64, vol: f64, price_scale: u8, tick: i64) -> i64 {
        let move_units = base_price * vol * 10f64.powi(i32::from(price_scale));
        let pow = if move_units >= 1.0 {
            10f64.powi(move_units.log10().floor() as i32) as i64
        } else {
            1
        };
        pow.max(1) * tick
    }
}

/// The stateless model: given a tick, what the market looks like.
#[derive(Debug, Clone)]
pub struct Sim {
    seed: u64,
    rate: u32,
    specs: Vec<SymbolSpec>,
}

#[derive(Debug, Clone, Copy)]
struct BlockTrade {
    offset: u64,
    lots: i64,
    side: Side,
}

impl Sim {
    /// `rate` is ticker updates per second per symbol, 1..=[`MAX_RATE`].
    pub fn new(seed: u64, rate: u32, specs: Vec<SymbolSpec>) -> Self {
        debug_assert!((1..=MAX_RATE).contains(&rate));
        Self { seed, rate, specs }
    }

    pub fn specs(&self) -> &[SymbolSpec] {
        &self.specs
    }

    /// Ticks per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// An identifier for this stream family: clients resuming elsewhere compare it.
    pub fn epoch(&self) -> String {
        let mut h = mix(self.seed ^ u64::from(self.rate).rotate_left(32));
        for s in &self.specs {
            h = mix(h ^ s.key);
        }
        format!("sim-{h:016x}")
    }

    /// Event time of tick `k`.
    pub fn tick_ts(&self, k: u64) -> Micros {
        let us = u128::from(k) * 1_000_000 / u128::from(self.rate);
        Micros::try_from(us).unwrap_or(Micros::MAX)
    }

    /// The latest tick at or before `now`.
    pub fn tick_at(&self, now: Micros) -> u64 {
        let now = u128::try_from(now.max(0)).unwrap_or(0);
        u64::try_from(now * u128::from(self.rate) / 1_000_000).unwrap_or(u64::MAX)
    }

    /// The first tick at or after `ts`.
    fn first_tick_from(&self, ts: Micros) -> u64 {
        let ts = u128::try_from(ts.max(0)).unwrap_or(0);
        let r = u128::from(self.rate);
        u64::try_from((ts * r).div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    fn h(&self, spec: &SymbolSpec, parts: &[u64]) -> u64 {
        parts
            .iter()
            .fold(mix(self.seed ^ spec.key), |h, p| mix(h ^ p))
    }

    /// Mid price (in price units, unrounded) at event time `ts`.
    fn mid(&self, spec: &SymbolSpec, ts: Micros) -> f64 {
        let mut log = 0.0;
        let mut scale = BASE_SCALE_US;
        for octave in 0..OCTAVES {
            let x = ts as f64 / scale;
            let i = x.floor();
            let f = x - i;
            let i = i as i64 as u64;
            let a = unit(self.h(spec, &[u64::from(octave), i])) * 2.0 - 1.0;
            let b = unit(self.h(spec, &[u64::from(octave), i.wrapping_add(1)])) * 2.0 - 1.0;
            let s = f * f * (3.0 - 2.0 * f);
            log += (a + (b - a) * s) * spec.vol * 0.8 * (scale / 1e6).sqrt();
            scale *= 2.0;
        }
        spec.base_price * log.exp() * 10f64.powi(i32::from(spec.price_scale))
    }

    /// Best bid and ask at tick `k`, in price units.
    fn quote(&self, spec: &SymbolSpec, k: u64) -> (i64, i64) {
        let mid = self.mid(spec, self.tick_ts(k)) / spec.tick as f64;
        let spread = spec.spread_ticks + (self.h(spec, &[0x5b, k]) % 2) as i64;
        let bid = (mid - spread as f64 / 2.0).floor() as i64 * spec.tick;
        (bid, bid + spread * spec.tick)
    }

    /// The total extra lots of a block, known without laying out its trades.
    fn block_extra(&self, spec: &SymbolSpec, block: u64) -> i64 {
        let u = unit(self.h(spec, &[0xb1, block]));
        (TRADES_PER_BLOCK as f64 * (spec.mean_lots - 1.0).max(0.0) * (0.4 + 1.2 * u)) as i64
    }

    fn block_lots(&self, spec: &SymbolSpec, block: u64) -> i64 {
        TRADES_PER_BLOCK as i64 + self.block_extra(spec, block)
    }

    /// A block's trades in time order. Sizes split the block total at random cut points, so
    /// their sum is exactly [`Self::block_lots`].
    fn block_trades(&self, spec: &SymbolSpec, block: u64) -> Vec<BlockTrade> {
        let extra = self.block_extra(spec, block);
        let n = TRADES_PER_BLOCK as usize;
        let mut cuts: Vec<i64> = (1..n)
            .map(|j| (self.h(spec, &[0xc7, block, j as u64]) % (extra as u64 + 1)) as i64)
            .collect();
        cuts.push(0);
        cuts.push(extra);
        cuts.sort_unstable();
        let mut trades: Vec<BlockTrade> = (0..n)
            .map(|i| {
                let h = self.h(spec, &[0x7d, block, i as u64]);
                BlockTrade {
                    offset: h % BLOCK,
                    lots: 1 + cuts[i + 1] - cuts[i],
                    side: if (h >> 32) & 1 == 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                }
            })
            .collect();
        trades.sort_by_key(|t| t.offset);
        trades
    }

    fn trade_price(&self, spec: &SymbolSpec, k: u64, side: Side) -> i64 {
        let (bid, ask) = self.quote(spec, k);
        match side {
            Side::Buy => ask,
            Side::Sell => bid,
        }
    }

    /// Price of the last trade strictly before tick `k`.
    fn last_before(&self, spec: &SymbolSpec, k: u64) -> i64 {
        let mut block = k.saturating_sub(1) / BLOCK;
        loop {
            let trades = self.block_trades(spec, block);
            if let Some(t) = trades.iter().rev().find(|t| block * BLOCK + t.offset < k) {
                let tk = block * BLOCK + t.offset;
                return self.trade_price(spec, tk, t.side);
            }
            if block == 0 {
                let (bid, ask) = self.quote(spec, k);
                return (bid + ask) / 2;
            }
            block -= 1;
        }
    }

    /// Lots traded in ticks `[from, to)`.
    fn lots_between(&self, spec: &SymbolSpec, from: u64, to: u64) -> i64 {
        if from >= to {
            return 0;
        }
        let partial = |block: u64, lo: u64, hi: u64| -> i64 {
            self.block_trades(spec, block)
                .iter()
                .filter(|t| (lo..hi).contains(&(block * BLOCK + t.offset)))
                .map(|t| t.lots)
                .sum()
        };
        let (first, last) = (from / BLOCK, (to - 1) / BLOCK);
        if first == last {
            return partial(first, from, to);
        }
        let mut sum = partial(first, from, to) + partial(last, from, to);
        for block in first + 1..last {
            sum += self.block_lots(spec, block);
        }
        sum
    }

    /// The closed candles of one symbol that start in `[end - count * interval, end)`, oldest
    /// first, exactly as a running simulator would have closed them. Computed from the trades
    /// alone (a quote per trade), so a day of 1 m candles costs a few milliseconds: the chart
    /// history a fresh task or a Lambda function did not live through. `end` must not be after
    /// the start of the interval holding the current tick.
    pub fn history(
        &self,
        symbol: usize,
        interval: Interval,
        end: Micros,
        count: usize,
    ) -> Vec<Candle> {
        let Some(spec) = self.specs.get(symbol) else {
            return Vec::new();
        };
        let len = interval.micros();
        let end = floor_to(end, len);
        let first = end - len * count as Micros;
        let (k0, k_end) = (self.first_tick_from(first), self.first_tick_from(end));
        if count == 0 || k0 >= k_end {
            return Vec::new();
        }
        let mut ticked = vec![false; count];
        let slot_of = |k: u64| {
            usize::try_from((floor_to(self.tick_ts(k), len) - first) / len).unwrap_or(usize::MAX)
        };
        // Intervals with ticks exist; the rest (rates below one tick per interval) do not.
        let mut k = k0;
        while k < k_end {
            let slot = slot_of(k);
            if let Some(t) = ticked.get_mut(slot) {
                *t = true;
            }
            k = self
                .first_tick_from(first + (slot as Micros + 1) * len)
                .max(k + 1);
        }
        let mut trades: Vec<Vec<(i64, i64)>> = vec![Vec::new(); count];
        for block in k0 / BLOCK..=(k_end - 1) / BLOCK {
            for t in self.block_trades(spec, block) {
                let tk = block * BLOCK + t.offset;
                if (k0..k_end).contains(&tk) {
                    let price = self.trade_price(spec, tk, t.side);
                    if let Some(list) = trades.get_mut(slot_of(tk)) {
                        list.push((price, t.lots));
                    }
                }
            }
        }
        let mut last = self.last_before(spec, k0);
        let mut out = Vec::with_capacity(count);
        for (slot, prints) in trades.into_iter().enumerate() {
            if !ticked[slot] {
                continue;
            }
            let mut c = CandleAcc::opening(first + slot as Micros * len, last);
            for (price, lots) in prints {
                c.add(price, lots);
            }
            last = c.close;
            out.push(c.candle(spec, interval, true));
        }
        out
    }

    /// The state of every symbol just before tick `k`, ready for [`SimState::step`] at `k`.
    pub fn state_before(&self, k: u64) -> SimState {
        let symbols = self
            .specs
            .iter()
            .map(|spec| self.symbol_before(spec, k))
            .collect();
        let mut state = SimState { next: k, symbols };
        // Candles are rebuilt by walking the ticks of the current minute, which also covers
        // the current second because minute boundaries are second boundaries.
        if k > 0 {
            let minute_start = floor_to(self.tick_ts(k - 1), Interval::M1.micros());
            let k0 = self.first_tick_from(minute_start).min(k);
            state.next = k0;
            for (i, spec) in self.specs.iter().enumerate() {
                state.symbols[i] = self.symbol_before(spec, k0);
            }
            let mut scratch = Vec::new();
            while state.next < k {
                scratch.clear();
                state.advance(self, &mut scratch, false);
            }
            // The books depend on the tick alone: no need to walk them.
            for (spec, st) in self.specs.iter().zip(&mut state.symbols) {
                st.depths = Depths::starting_at(Some(&self.book(spec, k - 1)));
            }
        }
        state
    }

    fn symbol_before(&self, spec: &SymbolSpec, k: u64) -> SymbolState {
        let prev_ts = self.tick_ts(k.saturating_sub(1));
        let day = prev_ts.div_euclid(DAY_US);
        let d0 = self.first_tick_from(day * DAY_US);
        let open = if d0 < k { self.day_open(spec, d0) } else { 0 };
        SymbolState {
            block: k / BLOCK,
            trades: self.block_trades(spec, k / BLOCK),
            cursor: 0,
            last: self.last_before(spec, k),
            day,
            open,
            day_lots: self.lots_between(spec, d0.min(k), k),
            candles: [None, None],
            depths: Depths::starting_at(k.checked_sub(1).map(|p| self.book(spec, p)).as_ref()),
        }
        .with_cursor(k)
    }

    /// The book at tick `k`: [`MAX_DEPTH`] levels a side, one price tick apart from the best
    /// bid and ask of [`Self::quote`]. A level's size is a function of its side, its price and
    /// the time alone, so a book that moves keeps the sizes of the levels it keeps, and any
    /// process computes the same book for the same tick.
    pub fn book(&self, spec: &SymbolSpec, k: u64) -> View {
        self.book_at(spec, k, self.quote(spec, k))
    }

    /// [`Self::book`] given the tick's quote. Two hashes a level: it runs for every symbol
    /// at every tick, up to 1,000 times a second.
    fn book_at(&self, spec: &SymbolSpec, k: u64, (bid, ask): (i64, i64)) -> View {
        let step = spec.book_step;
        let ts = self.tick_ts(k);
        let key = mix(self.seed ^ spec.key ^ 0xb00c);
        let level = |side: u64, price: i64| {
            let h = mix(key ^ (price as u64).wrapping_mul(2).wrapping_add(side));
            let phase = (h >> (64 - BOOK_PERIOD_BITS)) as i64;
            let period = (ts + phase) >> BOOK_PERIOD_BITS;
            let u = unit(mix(h ^ period as u64));
            let lots = (spec.mean_lots * (1.0 + 9.0 * u)).round().max(1.0) as i64;
            Level::new(spec.price(price), spec.size(lots))
        };
        // The best levels are the quote; the others sit on a grid of `step` beyond it.
        let below = (bid - 1).div_euclid(step) * step;
        let above = (ask.div_euclid(step) + 1) * step;
        let mut bids = Vec::with_capacity(MAX_DEPTH);
        let mut asks = Vec::with_capacity(MAX_DEPTH);
        bids.push(level(0, bid));
        asks.push(level(1, ask));
        for i in 0..MAX_DEPTH as i64 - 1 {
            let price = below - i * step;
            if price > 0 {
                bids.push(level(0, price));
            }
            asks.push(level(1, above + i * step));
        }
        View { bids, asks }
    }

    fn day_open(&self, spec: &SymbolSpec, d0: u64) -> i64 {
        let (bid, ask) = self.quote(spec, d0);
        (bid + ask) / 2 / spec.tick * spec.tick
    }
}

#[derive(Debug, Clone)]
struct CandleAcc {
    start: Micros,
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    lots: i64,
    trades: u32,
}

/// One candle being built, the same way by the running simulator and by [`Sim::history`].
impl CandleAcc {
    /// A candle opens at the last price before its first tick.
    fn opening(start: Micros, last: i64) -> CandleAcc {
        CandleAcc {
            start,
            open: last,
            high: last,
            low: last,
            close: last,
            lots: 0,
            trades: 0,
        }
    }

    fn add(&mut self, price: i64, lots: i64) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.lots += lots;
        self.trades += 1;
    }

    fn candle(&self, spec: &SymbolSpec, interval: Interval, closed: bool) -> Candle {
        Candle {
            interval,
            start: self.start,
            open: spec.price(self.open),
            high: spec.price(self.high),
            low: spec.price(self.low),
            close: spec.price(self.close),
            volume: spec.size(self.lots),
            trades: self.trades,
            closed,
        }
    }
}

#[derive(Debug, Clone)]
struct SymbolState {
    block: u64,
    trades: Vec<BlockTrade>,
    cursor: usize,
    last: i64,
    day: i64,
    open: i64,
    day_lots: i64,
    candles: [Option<CandleAcc>; 2],
    /// The last book of each depth tier, which the next tick's book updates are relative to.
    depths: Depths,
}

impl SymbolState {
    fn with_cursor(mut self, k: u64) -> Self {
        let offset = k % BLOCK;
        self.cursor = self.trades.iter().take_while(|t| t.offset < offset).count();
        self
    }
}

/// The simulator's rolling state: advancing it one tick yields that tick's events.
#[derive(Debug, Clone)]
pub struct SimState {
    next: u64,
    symbols: Vec<SymbolState>,
}

const INTERVALS: [Interval; 2] = [Interval::S1, Interval::M1];

impl SimState {
    /// The tick the next [`Self::step`] emits.
    pub fn next_tick(&self) -> u64 {
        self.next
    }

    /// Emits the events of the next tick for every symbol: its trades, then the ticker, the
    /// candle updates and the book of each depth tier.
    pub fn step(&mut self, sim: &Sim, out: &mut Vec<Event>) {
        self.advance(sim, out, true);
    }

    /// One tick; without `books` the book events are left out (and the book tiers fall
    /// behind: only for a walk that resets them after).
    fn advance(&mut self, sim: &Sim, out: &mut Vec<Event>, books: bool) {
        let k = self.next;
        self.next += 1;
        let ts = sim.tick_ts(k);
        let next_ts = sim.tick_ts(k + 1);
        for (idx, (spec, st)) in sim.specs.iter().zip(&mut self.symbols).enumerate() {
            let symbol = idx as u16;
            let (bid, ask) = sim.quote(spec, k);
            if k / BLOCK != st.block {
                st.block = k / BLOCK;
                st.trades = sim.block_trades(spec, st.block);
                st.cursor = 0;
            }
            let day = ts.div_euclid(DAY_US);
            if day != st.day {
                st.day = day;
                st.open = sim.day_open(spec, k);
                st.day_lots = 0;
            }
            for (slot, interval) in INTERVALS.iter().enumerate() {
                let start = floor_to(ts, interval.micros());
                if st.candles[slot].as_ref().is_none_or(|c| c.start != start) {
                    st.candles[slot] = Some(CandleAcc::opening(start, st.last));
                }
            }
            let offset = k % BLOCK;
            while let Some(t) = st
                .trades
                .get(st.cursor)
                .filter(|t| t.offset == offset)
                .copied()
            {
                let seq = st.block * TRADES_PER_BLOCK + st.cursor as u64 + 1;
                st.cursor += 1;
                let price = match t.side {
                    Side::Buy => ask,
                    Side::Sell => bid,
                };
                st.last = price;
                st.day_lots += t.lots;
                for c in st.candles.iter_mut().flatten() {
                    c.add(price, t.lots);
                }
                out.push(Event {
                    channel: Channel::Trades,
                    symbol,
                    seq,
                    ts,
                    payload: Payload::Trade(Trade {
                        price: spec.price(price),
                        size: spec.size(t.lots),
                        side: t.side,
                    }),
                });
            }
            out.push(Event {
                channel: Channel::Ticker,
                symbol,
                seq: k,
                ts,
                payload: Payload::Ticker(Ticker {
                    bid: spec.price(bid),
                    ask: spec.price(ask),
                    last: spec.price(st.last),
                    open: spec.price(st.open),
                    change: spec.price(st.last - st.open),
                    volume: spec.size(st.day_lots),
                }),
            });
            for (slot, interval) in INTERVALS.iter().enumerate() {
                let Some(c) = &st.candles[slot] else { continue };
                out.push(Event {
                    channel: interval.channel(),
                    symbol,
                    seq: k,
                    ts,
                    payload: Payload::Candle(c.candle(
                        spec,
                        *interval,
                        floor_to(next_ts, interval.micros()) != c.start,
                    )),
                });
            }
            if !books {
                continue;
            }
            let book = sim.book_at(spec, k, (bid, ask));
            for (channel, update) in Channel::BOOKS.into_iter().zip(st.depths.next(book, false)) {
                out.push(Event {
                    channel,
                    symbol,
                    seq: k,
                    ts,
                    payload: Payload::Book(update),
                });
            }
        }
    }
}

fn floor_to(ts: Micros, step: Micros) -> Micros {
    ts.div_euclid(step) * step
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(rate: u32) -> Sim {
        let specs = DEFAULT_SYMBOLS
            .split(',')
            .map(SymbolSpec::for_name)
            .collect();
        Sim::new(7, rate, specs)
    }

    fn run(sim: &Sim, from: u64, ticks: u64) -> Vec<Event> {
        let mut st = sim.state_before(from);
        let mut out = Vec::new();
        for _ in 0..ticks {
            st.step(sim, &mut out);
        }
        out
    }

    const NOW_K: u64 = 17_640_000_000; // 2025-11-24 at 10 Hz

    #[test]
    fn history_equals_the_candles_a_running_simulator_closes() {
        for rate in [10, 3] {
            let sim = sim(rate);
            let from = NOW_K / 10 * u64::from(rate);
            let events = run(&sim, from, u64::from(rate) * 200);
            for interval in [Interval::S1, Interval::M1] {
                for symbol in [0_u16, 7] {
                    let closed: Vec<Candle> = events
                        .iter()
                        .filter(|e| e.symbol == symbol)
                        .filter_map(|e| match &e.payload {
                            Payload::Candle(c) if c.interval == interval && c.closed => {
                                Some(c.clone())
                            }
                            _ => None,
                        })
                        // The first interval was entered part-way: its candle began late.
                        .skip(1)
                        .collect();
                    assert!(!closed.is_empty(), "rate {rate} {interval:?}");
                    let end = closed
                        .last()
                        .map(|c| c.start + interval.micros())
                        .expect("one");
                    let computed = sim.history(usize::from(symbol), interval, end, closed.len());
                    assert_eq!(computed, closed, "rate {rate} {interval:?} symbol {symbol}");
                }
            }
        }
    }

    #[test]
    fn a_late_start_emits_the_same_events() {
        let sim = sim(10);
        // One process starts 700 ticks earlier (across minute and block boundaries).
        let early = run(&sim, NOW_K - 700, 1_000);
        let late = run(&sim, NOW_K, 300);
        let tail: Vec<_> = early
            .iter()
            .filter(|e| e.ts >= sim.tick_ts(NOW_K))
            .cloned()
            .collect();
        assert_eq!(tail, late);
    }

    #[test]
    fn a_day_boundary_resets_open_and_volume_the_same_way() {
        let sim = sim(10);
        let midnight = sim.first_tick_from(20_000 * DAY_US);
        let early = run(&sim, midnight - 50, 100);
        let late = run(&sim, midnight + 10, 40);
        let tail: Vec<_> = early
            .iter()
            .filter(|e| e.ts >= sim.tick_ts(midnight + 10))
            .cloned()
            .collect();
        assert_eq!(tail, late);
    }

    #[test]
    fn sequences_are_contiguous_per_stream() {
        let sim = sim(50);
        let events = run(&sim, NOW_K * 5 + 3, 500);
        let mut last = std::collections::HashMap::new();
        for e in &events {
            if let Some(prev) = last.insert((e.channel, e.symbol), e.seq) {
                assert_eq!(e.seq, prev + 1, "{:?} {}", e.channel, e.symbol);
            }
        }
        let trades = events
            .iter()
            .filter(|e| e.channel == Channel::Trades)
            .count();
        assert!(
            trades > 500 * 10 / 2,
            "about 0.75 trades per tick, got {trades}"
        );
    }

    #[test]
    fn quotes_are_sane_and_move() {
        let sim = sim(10);
        let events = run(&sim, NOW_K, 600);
        let bids: Vec<_> = events
            .iter()
            .filter_map(|e| match (&e.payload, e.symbol) {
                (Payload::Ticker(t), 0) => {
                    assert!(t.bid < t.ask);
                    Some(t.bid)
                }
                _ => None,
            })
            .collect();
        let (lo, hi) = (bids.iter().min().copied(), bids.iter().max().copied());
        assert!(lo < hi, "a minute of AAPL should move");
        let lo = lo.map_or(0, |d| d.units);
        assert!(
            (10_000..40_000).contains(&lo),
            "AAPL near its base price: {lo}"
        );
    }

    /// A client of each book tier that starts from the book before the run and applies
    /// every update holds the simulator's book at each tick, checksum included; the book
    /// surrounds the ticker's quote and changes a few levels per tick, not all of them.
    #[test]
    fn book_updates_follow_the_book_and_the_quote() {
        let sim = sim(10);
        let from = NOW_K;
        let events = run(&sim, from, 300);
        for symbol in [0_u16, 7] {
            let spec = &sim.specs()[usize::from(symbol)];
            let start = sim.book(spec, from - 1);
            let mut clients: Vec<View> = crate::book::TIERS.map(|d| start.top(d)).to_vec();
            let mut changed = 0;
            for e in events.iter().filter(|e| e.symbol == symbol) {
                let book = sim.book(spec, e.seq);
                match &e.payload {
                    Payload::Ticker(t) => {
                        assert_eq!((book.bids[0].price, book.asks[0].price), (t.bid, t.ask));
                    }
                    Payload::Book(update) => {
                        let depth = e.channel.book_depth().expect("a book channel");
                        let t = Channel::BOOKS
                            .iter()
                            .position(|c| *c == e.channel)
                            .expect("tier");
                        assert!(!update.data.reset);
                        assert!(
                            clients[t].apply(&update.data, false),
                            "checksum, tick {}",
                            e.seq
                        );
                        assert_eq!(clients[t], book.top(depth));
                        assert_eq!(update.view(), book.top(depth));
                        if depth == 100 {
                            changed += update.data.bids.len() + update.data.asks.len();
                        }
                    }
                    _ => {}
                }
            }
            // 200 levels changing once a second on average, at 10 ticks a second (about 20
            // per tick), plus the moves of the quote: far from all 200.
            assert!(
                (300 * 10..300 * 60).contains(&changed),
                "{changed} level changes"
            );
            eprintln!("symbol {symbol}: {changed} level changes in 300 ticks at depth 100");
            assert_eq!(sim.book(spec, from).bids.len(), MAX_DEPTH);
        }
    }

    #[test]
    fn book_steps_suit_the_price() {
        let step = |name: &str| SymbolSpec::for_name(name).book_step;
        assert_eq!(
            [
                step("BTC-USD"),
                step("ETH-USD"),
                step("AAPL"),
                step("SOL-USD")
            ],
            [1000, 100, 1, 10]
        );
    }

    #[test]
    fn candles_close_on_boundaries_and_volume_matches_trades() {
        let sim = sim(10);
        let events = run(&sim, NOW_K, 1_200);
        let mut trade_lots = 0;
        for e in events.iter().filter(|e| e.symbol == 1) {
            match &e.payload {
                Payload::Trade(t) => trade_lots += t.size.units,
                Payload::Candle(c) if c.interval == Interval::S1 => {
                    assert_eq!(c.closed, (e.seq + 1) % 10 == 0);
                    assert!(
                        c.low <= c.open
                            && c.open <= c.high
                            && c.low <= c.close
                            && c.close <= c.high
                    );
                }
                _ => {}
            }
        }
        assert!(trade_lots > 0);
    }
}
