//! What every live source does with a venue's books once it holds them right: publish each
//! change as the four book streams of its symbol (contiguous `seq` per stream, across
//! reconnects), mark a symbol stale while its book is lost and live again once the (reset)
//! snapshot is out. The venue modules keep the books; this keeps the streams.

use std::sync::Arc;

use crate::book::{Depths, MAX_DEPTH, View};
use crate::hub::{Batch, Hub};
use crate::market::{Channel, Event, Payload};
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct BookStreams {
    hub: Arc<Hub>,
    depths: Vec<Depths>,
    /// The last seq of each book channel, per symbol (0: nothing published yet).
    seqs: Vec<[u64; 4]>,
    /// Symbols published since the last flush: told `live` after their messages are out.
    fresh: Vec<u16>,
    batch: Batch,
    events: Vec<Event>,
}

impl BookStreams {
    /// Streams for the hub's symbols `0..n`, every one stale until its first snapshot.
    pub fn new(hub: Arc<Hub>, n: usize) -> Self {
        let mut streams = Self {
            hub,
            depths: vec![Depths::default(); n],
            seqs: vec![[0; 4]; n],
            fresh: Vec::new(),
            batch: Batch::default(),
            events: Vec::new(),
        };
        streams.lose_all();
        streams
    }

    pub fn metrics(&self) -> &Metrics {
        self.hub.metrics()
    }

    /// Whether any symbol has published a book.
    pub fn any_published(&self) -> bool {
        self.seqs.iter().any(|s| s[0] > 0)
    }

    /// Whether symbol `i` has published a book.
    pub fn published(&self, i: usize) -> bool {
        self.seqs[i][0] > 0
    }

    /// Queues symbol `i`'s book (its top [`MAX_DEPTH`] levels) after a change (`reset`: it replaces the one its clients hold).
    /// Nothing reaches clients before [`Self::flush`].
    pub fn publish(&mut self, i: usize, view: &View, reset: bool, ts: crate::market::Micros) {
        let updates = self.depths[i].next(view.top(MAX_DEPTH), reset);
        for (t, (channel, update)) in Channel::BOOKS.into_iter().zip(updates).enumerate() {
            self.seqs[i][t] += 1;
            self.events.push(Event {
                channel,
                symbol: i as u16,
                seq: self.seqs[i][t],
                ts,
                payload: Payload::Book(update),
            });
        }
        if reset || self.seqs[i][0] == 1 {
            self.fresh.push(i as u16);
        }
    }

    /// Sends what [`Self::publish`] queued, then tells the subscribers of books that came back
    /// that they are live: after their snapshot, so a client told `live` already holds it.
    pub fn flush(&mut self) {
        if !self.events.is_empty() {
            self.hub.publish_batch(&mut self.events, &mut self.batch);
        }
        for i in self.fresh.drain(..) {
            self.hub.set_live(i, true);
        }
    }

    /// Symbol `i`'s book is lost: its subscribers are told it is stale until it is published
    /// again (as a reset).
    pub fn lose(&mut self, i: usize) {
        self.metrics().book_resyncs.inc();
        self.hub.set_live(i as u16, false);
    }

    /// Symbol `i`'s connection is gone: its book is stale until published again.
    pub fn disconnected(&mut self, i: usize) {
        self.hub.set_live(i as u16, false);
    }

    /// The connection is gone: every book is stale.
    pub fn lose_all(&mut self) {
        for i in 0..self.seqs.len() {
            self.disconnected(i);
        }
    }
}
