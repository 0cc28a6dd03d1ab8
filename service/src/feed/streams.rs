//! What every live source does with what a venue sends once it holds it right: publish each
//! book change as the four book streams of its symbol, each trade on `trades` and on the
//! candles built from trades ([`super::candles`]), each ticker on `ticker` (contiguous `seq`
//! per stream, across reconnects); mark a symbol stale while its book is lost and live again
//! once the (reset) snapshot is out. The venue modules keep the books; this keeps the streams.

use std::sync::Arc;

use super::candles::Candles;
use crate::book::{Depths, MAX_DEPTH, View};
use crate::broker::Sink;
use crate::hub::Batch;
use crate::market::{Channel, Event, Micros, Payload, Ticker, Trade};
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Streams {
    sink: Arc<dyn Sink>,
    depths: Vec<Depths>,
    candles: Vec<Candles>,
    /// The last seq of each channel (by [`Channel::index`]), per symbol (0: nothing yet).
    seqs: Vec<[u64; Channel::ALL.len()]>,
    /// Symbols published since the last flush: told `live` after their messages are out.
    fresh: Vec<u16>,
    batch: Batch,
    events: Vec<Event>,
}

impl Streams {
    /// Streams for the hub's symbols `0..n`, every one stale until its first snapshot.
    pub fn new(sink: Arc<dyn Sink>, n: usize) -> Self {
        let mut streams = Self {
            sink,
            depths: vec![Depths::default(); n],
            candles: vec![Candles::default(); n],
            seqs: vec![[0; Channel::ALL.len()]; n],
            fresh: Vec::new(),
            batch: Batch::default(),
            events: Vec::new(),
        };
        streams.lose_all();
        streams
    }

    pub fn metrics(&self) -> &Metrics {
        self.sink.metrics()
    }

    /// Whether any symbol has published a book.
    pub fn any_published(&self) -> bool {
        (0..self.seqs.len()).any(|i| self.published(i))
    }

    /// Whether symbol `i` has published a book.
    pub fn published(&self, i: usize) -> bool {
        self.seqs[i][Channel::Book.index()] > 0
    }

    /// Queues symbol `i`'s book (its top [`MAX_DEPTH`] levels) after a change (`reset`: it replaces the one its clients hold).
    /// Nothing reaches clients before [`Self::flush`].
    /// `checksum`: the view's, when the source has computed it already.
    pub fn publish(
        &mut self,
        i: usize,
        view: &View,
        reset: bool,
        ts: crate::market::Micros,
        checksum: Option<u32>,
    ) {
        let top = view.top(MAX_DEPTH);
        let updates = match checksum {
            Some(sum) => self.depths[i].next_checked(top, reset, sum),
            None => self.depths[i].next(top, reset),
        };
        for (channel, update) in Channel::BOOKS.into_iter().zip(updates) {
            self.push(i, channel, ts, Payload::Book(update));
        }
        if reset || self.seqs[i][Channel::Book.index()] == 1 {
            self.fresh.push(i as u16);
        }
    }

    /// Queues a trade of symbol `i` at `ts` (the venue's time), and the candles it changes.
    pub fn trade(&mut self, i: usize, trade: Trade, ts: Micros) {
        for candle in self.candles[i].trade(ts, trade.price, trade.size) {
            self.push(i, candle.interval.channel(), ts, Payload::Candle(candle));
        }
        self.push(i, Channel::Trades, ts, Payload::Trade(trade));
    }

    /// Queues symbol `i`'s ticker.
    pub fn ticker(&mut self, i: usize, ticker: Ticker, ts: Micros) {
        self.push(i, Channel::Ticker, ts, Payload::Ticker(ticker));
    }

    /// Queues the candles of every symbol whose interval ended a grace period before `now`.
    pub fn close_candles(&mut self, now: Micros) {
        for i in 0..self.candles.len() {
            self.close_candles_of(i, now);
        }
    }

    /// The same for symbol `i` alone (a source with a connection per symbol).
    pub fn close_candles_of(&mut self, i: usize, now: Micros) {
        for candle in self.candles[i].close_before(now) {
            let ts = candle.start + candle.interval.micros();
            self.push(i, candle.interval.channel(), ts, Payload::Candle(candle));
        }
    }

    fn push(&mut self, i: usize, channel: Channel, ts: Micros, payload: Payload) {
        let seq = &mut self.seqs[i][channel.index()];
        *seq += 1;
        self.events.push(Event {
            channel,
            symbol: i as u16,
            seq: *seq,
            ts,
            payload,
        });
    }

    /// Sends what [`Self::publish`] queued, then tells the subscribers of books that came back
    /// that they are live: after their snapshot, so a client told `live` already holds it.
    pub fn flush(&mut self) {
        if !self.events.is_empty() {
            self.sink.publish(&mut self.events, &mut self.batch);
        }
        for i in self.fresh.drain(..) {
            self.sink.set_live(i, true);
        }
    }

    /// Symbol `i`'s book is lost: its subscribers are told it is stale until it is published
    /// again (as a reset).
    pub fn lose(&mut self, i: usize) {
        self.metrics().book_resyncs.inc();
        self.sink.set_live(i as u16, false);
    }

    /// Symbol `i`'s connection is gone: its book is stale until published again.
    pub fn disconnected(&mut self, i: usize) {
        self.sink.set_live(i as u16, false);
    }

    /// The connection is gone: every book is stale.
    pub fn lose_all(&mut self) {
        for i in 0..self.seqs.len() {
            self.disconnected(i);
        }
    }
}
