//! The hub owns every stream: its sequence, a bounded history, the latest state and the
//! subscribers. Each event is serialized and framed once; every subscriber gets the same
//! reference-counted bytes. Publishing is corked per client: an outlet is told which streams
//! still have events to come in the batch (one simulator tick), and writes as soon as none of
//! its own do. A client of one stream is written to while the hub offers it the event (its
//! state still in cache); a client of several gets one write per tick, at its last stream's
//! event. Outlets never block the hub.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use indexmap::IndexMap;
use serde::Serialize;

use crate::market::{Candle, Channel, Event, Interval, Micros, Payload};
use crate::metrics::Metrics;

/// Index of a (channel, symbol) stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    pub(crate) fn new(channel: Channel, symbol: u16) -> Self {
        Self(u32::from(symbol) * Channel::ALL.len() as u32 + channel.index() as u32)
    }

    pub fn channel(self) -> Channel {
        Channel::ALL[self.0 as usize % Channel::ALL.len()]
    }

    pub fn symbol(self) -> u16 {
        (self.0 as usize / Channel::ALL.len()) as u16
    }

    /// Its place in a table of every stream (`symbols x channels`).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn from_index(i: usize) -> Self {
        Self(i as u32)
    }
}

/// What a data message carries: an `update` as it happens or a `snapshot` of the latest state.
#[derive(Debug, Serialize)]
pub struct DataMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: Channel,
    pub symbol: &'a str,
    pub seq: u64,
    pub ts: Micros,
    pub data: &'a Payload,
}

/// Turns a data message into the bytes the transport writes. The hub calls it once per event
/// and shares the result with every subscriber; it does not know what the transport is (the
/// WebSocket layer passes one that makes a whole frame, `ws::protocol::data_frame`).
pub type Encode = fn(&DataMessage<'_>) -> Bytes;

/// One data message as it goes on the wire (made by the hub's [`Encode`]), shared by every
/// subscriber of its stream.
#[derive(Debug, Clone)]
pub struct Frame {
    pub stream: StreamId,
    pub seq: u64,
    pub ts: Micros,
    pub wire: Bytes,
}

/// What an outlet did with an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; `first` when it is the outlet's first frame of this batch (flush it afterwards).
    Queued { first: bool },
    /// Nothing more of the batch is for this outlet: it wrote what it held, these frames and
    /// bytes (what the socket could not take waits for the connection task).
    Sent { frames: usize, bytes: usize },
    /// Not news for this outlet (it already holds that seq); keep it subscribed.
    Skipped,
    /// The outlet's queue is full: it has been told, and leaves the stream.
    Full,
    /// The outlet is gone.
    Closed,
}

/// Where the hub delivers frames: in the server, one client connection. Implementations must
/// never block.
pub trait Outlet: Send + Sync + fmt::Debug {
    fn id(&self) -> u64;
    /// Takes `frame` if it is news for this outlet: queues it while `upcoming` holds more of
    /// the batch for one of the outlet's streams, and otherwise writes at once.
    fn offer(&self, frame: &Frame, upcoming: Upcoming<'_>) -> Offer;
    /// Writes what was queued without waiting; returns the frames and bytes that went out.
    fn flush(&self) -> (usize, usize);
    /// The stream broke its sequence (the feed skipped ahead): the position the outlet holds
    /// no longer continues. The hub has already dropped it from the stream; the outlet tells
    /// its client to resume, which gets it a fresh snapshot.
    fn interrupt(&self);
    /// The stream's source went down (`live` false: what the outlet holds is no longer being
    /// updated) or came back. The default ignores it.
    fn status(&self, _stream: StreamId, _symbol: &str, _live: bool) {}
}

pub type Subscriber = Arc<dyn Outlet>;

/// The streams that still have events to come in the batch being published.
#[derive(Debug, Clone, Copy)]
pub struct Upcoming<'a>(&'a [u32]);

impl Upcoming<'_> {
    /// Nothing to come: what a publisher of single events passes.
    pub const NONE: Upcoming<'static> = Upcoming(&[]);

    pub fn contains(self, stream: StreamId) -> bool {
        self.0.get(stream.0 as usize).is_some_and(|&n| n > 0)
    }
}

/// A publisher's scratch space, reused from batch to batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Outlets that queued frames to flush when the batch ends.
    touched: Vec<Subscriber>,
    /// Events still to come, by stream.
    upcoming: Vec<u32>,
}

/// What a new subscription starts with.
#[derive(Debug, Default)]
pub struct Subscription {
    /// The stream's latest seq at the moment of subscribing.
    pub seq: u64,
    /// Set when a resume position was given.
    pub recovered: Option<bool>,
    /// Missed updates to send before anything queued.
    pub replay: Vec<Frame>,
    /// The latest state, when no (successful) resume applies.
    pub snapshot: Option<Frame>,
    /// The stream's source is down: nothing new will come until it is back.
    pub stale: bool,
}

#[derive(Debug, Default)]
struct StreamState {
    seq: u64,
    history: VecDeque<Frame>,
    latest: Option<Event>,
    /// By outlet id: subscribing and unsubscribing cost O(1), so a reconnect storm of N
    /// clients costs O(N) rather than O(N^2) under the stream lock.
    subscribers: IndexMap<u64, Subscriber>,
    closed_candles: VecDeque<Candle>,
    /// Its source is down (see [`Hub::set_live`]).
    stale: bool,
}

/// Sizes of the hub's bounded buffers.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Updates kept per stream for resume.
    pub history: usize,
    /// Closed candles kept per candle stream for the REST API.
    pub candles: usize,
    /// Threads one event's subscribers are written from at once (1: the publisher's alone).
    pub fanout_threads: usize,
}

/// Subscribers each fan-out thread takes at least: below it, starting a thread (~20-40 µs)
/// costs more than the writes it takes over (~5 µs each).
pub const FANOUT_MIN_PER_THREAD: usize = 256;

#[derive(Debug)]
pub struct Hub {
    symbols: Vec<String>,
    index: HashMap<String, u16>,
    /// Changes only when a broker starts a new epoch ([`Hub::restart`]).
    epoch: Mutex<Arc<str>>,
    streams: Box<[Mutex<StreamState>]>,
    limits: HubLimits,
    metrics: Arc<Metrics>,
    encode: Encode,
}

impl Hub {
    pub fn new(
        symbols: Vec<String>,
        epoch: String,
        limits: HubLimits,
        metrics: Arc<Metrics>,
        encode: Encode,
    ) -> Self {
        let index = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u16))
            .collect();
        let streams = (0..symbols.len() * Channel::ALL.len())
            .map(|_| Mutex::default())
            .collect();
        Self {
            symbols,
            index,
            epoch: Mutex::new(epoch.into()),
            streams,
            limits,
            metrics,
            encode,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Identifies the stream family: sequence numbers from another epoch mean nothing here.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts `epoch`: every stream's position, window and latest state are forgotten, and
    /// every subscriber is told to resume (its positions belong to the last epoch, so it gets
    /// a fresh start). Closed candles stay for the REST API: they are history, not positions.
    pub fn restart(&self, epoch: &str) {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = epoch.into();
        for i in 0..self.streams.len() {
            let mut st = self.lock(StreamId(i as u32));
            st.seq = 0;
            st.history.clear();
            st.latest = None;
            for (_, sub) in st.subscribers.drain(..) {
                sub.interrupt();
            }
        }
    }

    pub fn history_limit(&self) -> usize {
        self.limits.history
    }

    /// Whether `last` can be a position of `stream` in this epoch: at most one resume window
    /// ahead of where the stream stands (a client coming from a task a little ahead in time).
    /// Anything further (`2^64-1`, say) is treated as unrecoverable: a fresh start.
    pub fn plausible(&self, stream: StreamId, last: u64) -> bool {
        let seq = self.lock(stream).seq;
        last <= seq.saturating_add(self.limits.history.max(1) as u64)
    }

    pub fn stream(&self, channel: Channel, symbol: &str) -> Option<StreamId> {
        self.index.get(symbol).map(|&i| StreamId::new(channel, i))
    }

    pub fn symbol_name(&self, stream: StreamId) -> &str {
        &self.symbols[usize::from(stream.symbol())]
    }

    fn lock(&self, stream: StreamId) -> MutexGuard<'_, StreamState> {
        // A panic while holding a stream lock leaves plain data behind; keep serving it.
        self.streams[stream.0 as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn encode(&self, kind: &'static str, event: &Event) -> Frame {
        let msg = DataMessage {
            kind,
            channel: event.channel,
            symbol: &self.symbols[usize::from(event.symbol)],
            seq: event.seq,
            ts: event.ts,
            data: &event.payload,
        };
        Frame {
            stream: StreamId::new(event.channel, event.symbol),
            seq: event.seq,
            ts: event.ts,
            wire: (self.encode)(&msg),
        }
    }

    #[cfg(test)]
    fn publish(&self, event: Event) {
        self.publish_batch(&mut vec![event], &mut Batch::default());
    }

    /// Records `events` (draining them) and offers each to its subscribers. An outlet writes
    /// once none of its streams has more to come in the batch; any still holding frames at
    /// the end (none, unless a stream's last event left it) is flushed then.
    pub fn publish_batch(&self, events: &mut Vec<Event>, batch: &mut Batch) {
        batch.upcoming.clear();
        batch.upcoming.resize(self.streams.len(), 0);
        for event in events.iter() {
            batch.upcoming[StreamId::new(event.channel, event.symbol).0 as usize] += 1;
        }
        let mut oldest = None;
        let (mut frames, mut bytes) = (0, 0);
        for event in events.drain(..) {
            oldest.get_or_insert(event.ts);
            batch.upcoming[StreamId::new(event.channel, event.symbol).0 as usize] -= 1;
            let (f, b) =
                self.record_and_offer(event, Upcoming(&batch.upcoming), &mut batch.touched);
            frames += f;
            bytes += b;
        }
        for outlet in batch.touched.drain(..) {
            let (f, b) = outlet.flush();
            frames += f;
            bytes += b;
        }
        self.finish_batch(oldest, (frames, bytes));
    }

    fn finish_batch(&self, oldest: Option<Micros>, (frames, bytes): (usize, usize)) {
        self.metrics.messages_sent.inc_by(frames as u64);
        self.metrics.bytes_sent.inc_by(bytes as u64);
        // Only batches that reached someone: a catch-up with no subscribers is not lag.
        if let Some(ts) = oldest.filter(|_| frames > 0) {
            self.metrics
                .send_lag
                .observe_micros((crate::feed::now_micros() - ts).max(0) as u64);
        }
    }

    /// Returns the frames and bytes written while offering.
    fn record_and_offer(
        &self,
        event: Event,
        upcoming: Upcoming<'_>,
        touched: &mut Vec<Subscriber>,
    ) -> (usize, usize) {
        // A book the source had to rebuild goes out whole, in sequence: clients replace theirs.
        let kind = match &event.payload {
            Payload::Book(b) if b.data.reset => "snapshot",
            _ => "update",
        };
        let frame = self.encode(kind, &event);
        let stream = frame.stream;
        self.metrics.events_published.inc();
        let mut st = self.lock(stream);
        if st.seq != 0 && event.seq != st.seq + 1 {
            tracing::warn!(stream = %event.channel, symbol = self.symbol_name(stream), from = st.seq, to = event.seq, subscribers = st.subscribers.len(), "sequence jump; history reset, subscribers told to resume");
            st.history.clear();
            // A subscriber must never see a jump in `seq` without being told (docs/protocol.md).
            for (_, sub) in st.subscribers.drain(..) {
                sub.interrupt();
            }
        }
        st.seq = event.seq;
        if st.history.len() == self.limits.history {
            st.history.pop_front();
        }
        if self.limits.history > 0 {
            st.history.push_back(frame.clone());
        }
        if let Payload::Candle(c) = &event.payload
            && c.closed
        {
            if st.closed_candles.len() == self.limits.candles {
                st.closed_candles.pop_front();
            }
            st.closed_candles.push_back(c.clone());
        }
        st.latest = Some(event);
        let parts = (st.subscribers.len() / FANOUT_MIN_PER_THREAD)
            .clamp(1, self.limits.fanout_threads.max(1));
        let Offered {
            frames,
            bytes,
            mut gone,
        } = offer_all(
            st.subscribers.as_slice(),
            parts,
            &Offering {
                frame: &frame,
                upcoming,
                metrics: &self.metrics,
            },
            touched,
        );
        if !gone.is_empty() {
            // Sorted: thousands of slow clients leaving at once cost O(n log k), not O(n k).
            gone.sort_unstable();
            st.subscribers
                .retain(|id, _| gone.binary_search(id).is_err());
        }
        (frames, bytes)
    }

    /// Registers `sub` on `stream`. With `resume`, the updates after that seq are returned for
    /// replay when the history still holds them; otherwise the snapshot is.
    pub fn subscribe(
        &self,
        stream: StreamId,
        sub: Subscriber,
        resume: Option<u64>,
    ) -> Subscription {
        let mut st = self.lock(stream);
        st.subscribers.insert(sub.id(), sub);
        let mut out = Subscription {
            seq: st.seq,
            stale: st.stale,
            ..Subscription::default()
        };
        if let Some(last) = resume {
            let oldest = st.history.front().map_or(st.seq + 1, |f| f.seq);
            // `last` ahead of us (another task a little ahead in time) is fine: the connection
            // skips what the client already holds.
            if last.saturating_add(1) >= oldest {
                out.recovered = Some(true);
                out.replay = st
                    .history
                    .iter()
                    .filter(|f| f.seq > last)
                    .cloned()
                    .collect();
                return out;
            }
            out.recovered = Some(false);
        }
        let latest = match stream.channel() {
            Channel::Trades => None,
            _ => st.latest.as_ref().map(as_snapshot),
        };
        drop(st);
        out.snapshot = latest.map(|e| self.encode("snapshot", &e));
        out
    }

    /// Marks every stream of `symbol` as live or stale (its source is down) and tells their
    /// subscribers when that changes. Returns whether it changed.
    pub fn set_live(&self, symbol: u16, live: bool) -> bool {
        let mut changed = false;
        for channel in Channel::ALL {
            let stream = StreamId::new(channel, symbol);
            let subscribers: Vec<Subscriber> = {
                let mut st = self.lock(stream);
                if st.stale != live {
                    continue;
                }
                st.stale = !live;
                st.subscribers.values().cloned().collect()
            };
            changed = true;
            let name = self.symbol_name(stream);
            for sub in subscribers {
                sub.status(stream, name, live);
            }
        }
        if changed {
            let stale = &self.metrics().stale_symbols;
            if live {
                stale.dec()
            } else {
                stale.inc()
            };
        }
        changed
    }

    /// Symbols whose streams are stale.
    pub fn stale_symbols(&self) -> Vec<&str> {
        (0..self.symbols.len() as u16)
            .filter(|&i| self.lock(StreamId::new(Channel::Ticker, i)).stale)
            .map(|i| self.symbols[usize::from(i)].as_str())
            .collect()
    }

    pub fn unsubscribe(&self, stream: StreamId, conn: u64) {
        self.lock(stream).subscribers.swap_remove(&conn);
    }

    /// The latest state of a stream: its last event, or for a book the whole view after it.
    pub fn latest(&self, stream: StreamId) -> Option<Event> {
        self.lock(stream).latest.as_ref().map(as_snapshot)
    }

    /// Up to `limit` most recent candles, oldest first, the last one possibly still open.
    /// The open candle of a symbol and interval, if one is being built.
    pub fn open_candle(&self, symbol: &str, interval: Interval) -> Option<Option<Candle>> {
        let stream = self.stream(interval.channel(), symbol)?;
        let st = self.lock(stream);
        Some(match &st.latest {
            Some(Event {
                payload: Payload::Candle(c),
                ..
            }) => Some(c.clone()),
            _ => None,
        })
    }

    pub fn candles(&self, symbol: &str, interval: Interval, limit: usize) -> Option<Vec<Candle>> {
        let stream = self.stream(interval.channel(), symbol)?;
        let st = self.lock(stream);
        let mut out: Vec<Candle> = st.closed_candles.iter().cloned().collect();
        if let Some(Event {
            payload: Payload::Candle(c),
            ..
        }) = &st.latest
            && !c.closed
        {
            out.push(c.clone());
        }
        let skip = out.len().saturating_sub(limit);
        Some(out.split_off(skip))
    }

    /// Subscribers across all streams.
    #[cfg(test)]
    fn subscriber_count(&self) -> usize {
        (0..self.streams.len())
            .map(|i| self.lock(StreamId(i as u32)).subscribers.len())
            .sum()
    }
}

/// One event, as offered to each subscriber.
struct Offering<'a> {
    frame: &'a Frame,
    upcoming: Upcoming<'a>,
    metrics: &'a Metrics,
}

/// What offering one event did: frames and bytes written, outlets to drop (full or closed).
#[derive(Default)]
struct Offered {
    frames: usize,
    bytes: usize,
    gone: Vec<u64>,
}

impl Offered {
    fn add(&mut self, other: Offered) {
        self.frames += other.frames;
        self.bytes += other.bytes;
        self.gone.extend(other.gone);
    }
}

/// Offers the event to `subs` from `parts` threads at once (this one and `parts - 1` scoped
/// helpers, each on its own run of subscribers, so no outlet is offered twice and each sees its
/// events in order). With thousands of subscribers on a stream, one thread's writes are the
/// tick's latency: on two cores, two writers deliver a tick in about half the time, and the
/// receivers wake less often (docs/benchmarks.md, "Two writers"). A helper that cannot be
/// started leaves its run to this thread.
fn offer_all(
    subs: &indexmap::map::Slice<u64, Subscriber>,
    parts: usize,
    offering: &Offering<'_>,
    touched: &mut Vec<Subscriber>,
) -> Offered {
    if parts <= 1 {
        return offer_run(subs, offering, touched);
    }
    let size = subs.len().div_ceil(parts);
    let (mine, mut rest) = subs.split_at(size);
    std::thread::scope(|scope| {
        let mut helpers = Vec::with_capacity(parts - 1);
        let mut offered = Offered::default();
        while !rest.is_empty() {
            let (run, next) = rest.split_at(size.min(rest.len()));
            rest = next;
            let helper = std::thread::Builder::new()
                .name("fanout".into())
                .stack_size(256 * 1024)
                .spawn_scoped(scope, move || {
                    let mut touched = Vec::new();
                    (offer_run(run, offering, &mut touched), touched)
                });
            match helper {
                Ok(h) => helpers.push(h),
                Err(_) => offered.add(offer_run(run, offering, touched)),
            }
        }
        offered.add(offer_run(mine, offering, touched));
        for h in helpers {
            match h.join() {
                Ok((o, t)) => {
                    offered.add(o);
                    touched.extend(t);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        offered
    })
}

fn offer_run(
    subs: &indexmap::map::Slice<u64, Subscriber>,
    offering: &Offering<'_>,
    touched: &mut Vec<Subscriber>,
) -> Offered {
    let mut out = Offered::default();
    for (id, sub) in subs {
        match sub.offer(offering.frame, offering.upcoming) {
            Offer::Queued { first } => {
                if first {
                    touched.push(sub.clone());
                }
            }
            Offer::Sent { frames, bytes } => {
                out.frames += frames;
                out.bytes += bytes;
            }
            Offer::Skipped => {}
            Offer::Full => {
                offering.metrics.frames_dropped.inc();
                out.gone.push(*id);
            }
            Offer::Closed => out.gone.push(*id),
        }
    }
    out
}

/// What a snapshot of the stream whose latest event is `e` shows: the event itself, except
/// that a book's update carries only what changed and its snapshot the whole view.
fn as_snapshot(e: &Event) -> Event {
    match &e.payload {
        Payload::Book(b) => Event {
            payload: Payload::Book(b.as_snapshot()),
            ..e.clone()
        },
        _ => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Decimal;
    use crate::market::fixtures::{self, trade};

    /// An outlet with a fixed capacity that records what it was offered, following one stream
    /// as a client would: it queues while `upcoming` holds more of that stream, and otherwise
    /// "writes" (moves everything to `flushed`) at once.
    #[derive(Debug)]
    struct Probe {
        id: u64,
        cap: usize,
        queued: Mutex<Vec<u64>>,
        /// Per write, the seqs that went out together.
        writes: Mutex<Vec<Vec<u64>>>,
        flushed: Mutex<Vec<u64>>,
        interrupted: Mutex<bool>,
        /// The thread of the last offer.
        offered_on: Mutex<Option<std::thread::ThreadId>>,
    }

    impl Outlet for Probe {
        fn id(&self) -> u64 {
            self.id
        }
        fn offer(&self, frame: &Frame, upcoming: Upcoming<'_>) -> Offer {
            *self.offered_on.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(std::thread::current().id());
            let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() == self.cap {
                return Offer::Full;
            }
            q.push(frame.seq);
            if upcoming.contains(frame.stream) {
                return Offer::Queued {
                    first: q.len() == 1,
                };
            }
            drop(q);
            let (frames, bytes) = self.flush();
            Offer::Sent { frames, bytes }
        }
        fn flush(&self) -> (usize, usize) {
            let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.len();
            if n > 0 {
                self.writes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(q.clone());
            }
            self.flushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&mut q);
            (n, 0)
        }
        fn interrupt(&self) {
            *self.interrupted.lock().unwrap_or_else(|e| e.into_inner()) = true;
        }
    }

    fn probe(id: u64, cap: usize) -> Arc<Probe> {
        Arc::new(Probe {
            id,
            cap,
            queued: Mutex::default(),
            writes: Mutex::default(),
            flushed: Mutex::default(),
            interrupted: Mutex::default(),
            offered_on: Mutex::default(),
        })
    }

    /// The hub does not care what a message becomes on the wire; here, its JSON.
    fn json(m: &DataMessage<'_>) -> Bytes {
        Bytes::from(serde_json::to_vec(m).unwrap_or_default())
    }

    fn hub(history: usize) -> Hub {
        hub_of(&["AAA"], history, 1)
    }

    fn hub_of(symbols: &[&str], history: usize, fanout_threads: usize) -> Hub {
        let limits = HubLimits {
            history,
            candles: 10,
            fanout_threads,
        };
        Hub::new(
            symbols.iter().map(|s| s.to_string()).collect(),
            "e".into(),
            limits,
            Arc::new(Metrics::new()),
            json,
        )
    }

    fn book(seq: u64, bid: i64, reset: bool) -> Event {
        use crate::book::{Depths, Level, View};
        let start = View {
            bids: vec![Level::new(Decimal::new(1, 0), Decimal::new(1, 0))],
            asks: vec![Level::new(Decimal::new(2, 0), Decimal::new(1, 0))],
        };
        fixtures::book(&mut Depths::starting_at(Some(&start)), seq, bid, reset)
    }

    /// A book's update carries what changed; a new subscriber's snapshot the whole view; a
    /// reset goes out as a snapshot in sequence, marked as such.
    #[test]
    fn book_snapshots_show_the_whole_view_and_a_reset_is_a_snapshot_in_sequence() {
        let hub = hub(10);
        let stream = StreamId::new(Channel::Book, 0);
        hub.publish(book(1, 10, false));
        hub.publish(book(2, 20, true));
        let json = |f: &Frame| -> serde_json::Value {
            serde_json::from_slice(&f.wire).unwrap_or_default()
        };
        let sub = hub.subscribe(stream, probe(1, 10), None);
        let snap = json(&sub.snapshot.expect("a snapshot"));
        assert_eq!(snap["type"], "snapshot");
        assert_eq!(snap["data"]["bids"], serde_json::json!([["20", "1"]]));
        assert!(snap["data"].get("reset").is_none());
        let replay = hub.subscribe(stream, probe(2, 10), Some(0)).replay;
        let (first, second) = (json(&replay[0]), json(&replay[1]));
        assert_eq!(
            (&first["type"], &first["seq"]),
            (&"update".into(), &1.into())
        );
        assert_eq!(
            first["data"]["bids"],
            serde_json::json!([["10", "1"], ["1", "0"]])
        );
        assert_eq!(
            (&second["type"], &second["seq"]),
            (&"snapshot".into(), &2.into())
        );
        assert_eq!(second["data"]["reset"], true);
    }

    #[test]
    fn resume_inside_the_window_replays_and_outside_does_not() {
        let hub = hub(5);
        let stream = StreamId::new(Channel::Trades, 0);
        for seq in 1..=10 {
            hub.publish(trade(seq));
        }
        let got = hub.subscribe(stream, probe(1, 8), Some(6));
        assert_eq!(got.recovered, Some(true));
        assert_eq!(
            got.replay.iter().map(|f| f.seq).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        let got = hub.subscribe(stream, probe(2, 8), Some(2));
        assert_eq!(got.recovered, Some(false));
        assert!(got.replay.is_empty());
    }

    #[test]
    fn subscribing_again_replaces_and_unsubscribing_removes_only_that_outlet() {
        let hub = hub(0);
        let stream = StreamId::new(Channel::Trades, 0);
        let outlets: Vec<_> = (1..=5).map(|id| probe(id, 64)).collect();
        for o in &outlets {
            hub.subscribe(stream, o.clone(), None);
        }
        hub.subscribe(stream, outlets[2].clone(), None);
        assert_eq!(hub.subscriber_count(), 5);
        hub.unsubscribe(stream, 2);
        hub.unsubscribe(stream, 99);
        assert_eq!(hub.subscriber_count(), 4);
        hub.publish(trade(1));
        let got: Vec<usize> = outlets
            .iter()
            .map(|o| o.flushed.lock().expect("lock").len())
            .collect();
        assert_eq!(got, vec![1, 0, 1, 1, 1]);
    }

    #[test]
    fn a_sequence_jump_interrupts_every_subscriber_and_clears_the_window() {
        let hub = hub(8);
        let stream = StreamId::new(Channel::Trades, 0);
        let (a, b) = (probe(1, 64), probe(2, 64));
        hub.subscribe(stream, a.clone(), None);
        hub.subscribe(stream, b.clone(), None);
        for seq in 1..=3 {
            hub.publish(trade(seq));
        }
        hub.publish(trade(10));
        assert!(*a.interrupted.lock().expect("lock"));
        assert!(*b.interrupted.lock().expect("lock"));
        assert_eq!(*a.flushed.lock().expect("lock"), vec![1, 2, 3]);
        assert_eq!(hub.subscriber_count(), 0);
        let got = hub.subscribe(stream, probe(3, 64), Some(3));
        assert_eq!(
            got.recovered,
            Some(false),
            "3 is not resumable after the jump"
        );
    }

    #[test]
    fn a_batch_is_flushed_once_per_outlet_and_a_full_one_leaves() {
        let hub = hub(0);
        let stream = StreamId::new(Channel::Trades, 0);
        let (slow, fast) = (probe(1, 2), probe(2, 64));
        hub.subscribe(stream, slow.clone(), None);
        hub.subscribe(stream, fast.clone(), None);
        let mut batch = Batch::default();
        hub.publish_batch(&mut (1..=10).map(trade).collect(), &mut batch);
        assert_eq!(hub.subscriber_count(), 1, "the full outlet was dropped");
        assert_eq!(
            *fast.writes.lock().expect("lock"),
            vec![(1..=10).collect::<Vec<_>>()],
            "one write, at the stream's last event of the batch"
        );
        assert_eq!(*slow.flushed.lock().expect("lock"), vec![1, 2]);
        assert!(batch.touched.is_empty());
    }

    #[test]
    fn an_outlet_writes_as_soon_as_its_stream_has_nothing_more_in_the_batch() {
        let hub = hub_of(&["AAA", "BBB"], 0, 1);
        let (a, b) = (probe(1, 64), probe(2, 64));
        hub.subscribe(StreamId::new(Channel::Trades, 0), a.clone(), None);
        hub.subscribe(StreamId::new(Channel::Trades, 1), b.clone(), None);
        let on = |symbol: u16, seq: u64| Event {
            symbol,
            ..trade(seq)
        };
        // Each is written once, at its own stream's last event of the batch.
        let mut events = vec![on(0, 1), on(0, 2), on(1, 1), on(1, 2), on(1, 3)];
        let mut batch = Batch::default();
        hub.publish_batch(&mut events, &mut batch);
        assert_eq!(*a.writes.lock().expect("lock"), vec![vec![1, 2]]);
        assert_eq!(*b.writes.lock().expect("lock"), vec![vec![1, 2, 3]]);
        assert!(events.is_empty(), "the batch was drained");
        // A single event, as a replay publishes them, is written at once.
        hub.publish(on(0, 3));
        assert_eq!(*a.writes.lock().expect("lock"), vec![vec![1, 2], vec![3]]);
    }

    #[test]
    fn many_subscribers_are_written_from_several_threads_each_once_and_in_order() {
        let hub = hub_of(&["AAA"], 0, 3);
        let stream = StreamId::new(Channel::Trades, 0);
        let n = 3 * FANOUT_MIN_PER_THREAD + 50;
        // Every hundredth holds two frames only, and is dropped at the third.
        let probes: Vec<Arc<Probe>> = (0..n as u64)
            .map(|i| probe(i, if i % 100 == 0 { 2 } else { 64 }))
            .collect();
        for p in &probes {
            hub.subscribe(stream, p.clone(), None);
        }
        hub.publish_batch(&mut (1..=5).map(trade).collect(), &mut Batch::default());
        let full = probes.iter().filter(|p| p.cap == 2).count();
        assert_eq!(hub.subscriber_count(), n - full);
        for p in probes.iter().filter(|p| p.cap != 2) {
            assert_eq!(*p.flushed.lock().expect("lock"), vec![1, 2, 3, 4, 5]);
        }
        // The last event's offers (helpers are started per event).
        let threads: std::collections::HashSet<_> = probes
            .iter()
            .filter(|p| p.cap != 2)
            .filter_map(|p| *p.offered_on.lock().expect("lock"))
            .collect();
        assert_eq!(threads.len(), 3, "the publisher and two helpers");
    }
}
