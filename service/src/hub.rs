//! The hub owns every stream: its sequence, a bounded history, the latest state and the
//! subscribers. Each event is serialized once; subscribers get a reference-counted copy of the
//! same bytes through their own bounded queue, and a full queue never blocks the hub.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::market::{Candle, Channel, Event, Interval, Micros, Payload};
use crate::metrics::Metrics;
use crate::ws::protocol::DataMessage;

/// Index of a (channel, symbol) stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    fn new(channel: Channel, symbol: u16) -> Self {
        Self(u32::from(symbol) * Channel::ALL.len() as u32 + channel.index() as u32)
    }

    pub fn channel(self) -> Channel {
        Channel::ALL[self.0 as usize % Channel::ALL.len()]
    }

    pub fn symbol(self) -> u16 {
        (self.0 as usize / Channel::ALL.len()) as u16
    }
}

/// One serialized data message, shared by every subscriber of its stream.
#[derive(Debug, Clone)]
pub struct Frame {
    pub stream: StreamId,
    pub seq: u64,
    pub ts: Micros,
    pub text: Utf8Bytes,
}

/// A connection's registration on a stream.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: u64,
    pub tx: mpsc::Sender<Frame>,
    /// Cancelled by the hub when the connection's queue overflows.
    pub kick: CancellationToken,
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
    pub snapshot: Option<Utf8Bytes>,
}

#[derive(Debug, Default)]
struct StreamState {
    seq: u64,
    history: VecDeque<Frame>,
    latest: Option<Event>,
    subscribers: Vec<Subscriber>,
    closed_candles: VecDeque<Candle>,
}

/// Sizes of the hub's bounded buffers.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Updates kept per stream for resume.
    pub history: usize,
    /// Closed candles kept per candle stream for the REST API.
    pub candles: usize,
}

#[derive(Debug)]
pub struct Hub {
    symbols: Vec<String>,
    index: HashMap<String, u16>,
    epoch: String,
    streams: Box<[Mutex<StreamState>]>,
    limits: HubLimits,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(
        symbols: Vec<String>,
        epoch: String,
        limits: HubLimits,
        metrics: Arc<Metrics>,
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
            epoch,
            streams,
            limits,
            metrics,
        }
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Identifies the stream family: sequence numbers from another epoch mean nothing here.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn history_limit(&self) -> usize {
        self.limits.history
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

    fn encode(&self, kind: &'static str, event: &Event) -> Utf8Bytes {
        let msg = DataMessage {
            kind,
            channel: event.channel,
            symbol: &self.symbols[usize::from(event.symbol)],
            seq: event.seq,
            ts: event.ts,
            data: &event.payload,
        };
        Utf8Bytes::from(serde_json::to_string(&msg).unwrap_or_default())
    }

    /// Records an event and offers it to every subscriber without waiting for any of them.
    pub fn publish(&self, event: Event) {
        let stream = StreamId::new(event.channel, event.symbol);
        let frame = Frame {
            stream,
            seq: event.seq,
            ts: event.ts,
            text: self.encode("update", &event),
        };
        self.metrics.events_published.inc();
        let mut st = self.lock(stream);
        if st.seq != 0 && event.seq != st.seq + 1 {
            tracing::warn!(stream = %event.channel, symbol = self.symbol_name(stream), from = st.seq, to = event.seq, "sequence jump; history reset");
            st.history.clear();
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
        let metrics = &self.metrics;
        st.subscribers
            .retain(|sub| match sub.tx.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.frames_dropped.inc();
                    sub.kick.cancel();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
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
        st.subscribers.retain(|s| s.conn != sub.conn);
        st.subscribers.push(sub);
        let mut out = Subscription {
            seq: st.seq,
            ..Subscription::default()
        };
        if let Some(last) = resume {
            let oldest = st.history.front().map_or(st.seq + 1, |f| f.seq);
            // `last` ahead of us (another task a little ahead in time) is fine: the connection
            // skips what the client already holds.
            if last + 1 >= oldest {
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
            _ => st.latest.clone(),
        };
        drop(st);
        out.snapshot = latest.map(|e| self.encode("snapshot", &e));
        out
    }

    pub fn unsubscribe(&self, stream: StreamId, conn: u64) {
        self.lock(stream).subscribers.retain(|s| s.conn != conn);
    }

    pub fn latest(&self, stream: StreamId) -> Option<Event> {
        self.lock(stream).latest.clone()
    }

    /// Up to `limit` most recent candles, oldest first, the last one possibly still open.
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

    /// Subscribers across all streams: a cheap consistency figure for tests and metrics.
    pub fn subscriber_count(&self) -> usize {
        (0..self.streams.len())
            .map(|i| self.lock(StreamId(i as u32)).subscribers.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{Decimal, Side, Trade};

    fn hub(history: usize) -> Hub {
        let limits = HubLimits {
            history,
            candles: 10,
        };
        Hub::new(
            vec!["AAA".into()],
            "e".into(),
            limits,
            Arc::new(Metrics::new()),
        )
    }

    fn trade(seq: u64) -> Event {
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

    fn sub(conn: u64, cap: usize) -> (Subscriber, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(cap);
        let kick = CancellationToken::new();
        (Subscriber { conn, tx, kick }, rx)
    }

    #[test]
    fn resume_inside_the_window_replays_and_outside_does_not() {
        let hub = hub(5);
        let stream = StreamId::new(Channel::Trades, 0);
        for seq in 1..=10 {
            hub.publish(trade(seq));
        }
        let (s, _rx) = sub(1, 8);
        let got = hub.subscribe(stream, s, Some(6));
        assert_eq!(got.recovered, Some(true));
        assert_eq!(
            got.replay.iter().map(|f| f.seq).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        let (s, _rx) = sub(2, 8);
        let got = hub.subscribe(stream, s, Some(2));
        assert_eq!(got.recovered, Some(false));
        assert!(got.replay.is_empty());
    }

    #[test]
    fn a_full_queue_kicks_only_that_subscriber() {
        let hub = hub(0);
        let stream = StreamId::new(Channel::Trades, 0);
        let (slow, _slow_rx) = sub(1, 2);
        let slow_kick = slow.kick.clone();
        let (fast, mut fast_rx) = sub(2, 64);
        hub.subscribe(stream, slow, None);
        hub.subscribe(stream, fast, None);
        for seq in 1..=10 {
            hub.publish(trade(seq));
        }
        assert!(slow_kick.is_cancelled());
        assert_eq!(hub.subscriber_count(), 1);
        let mut seqs = Vec::new();
        while let Ok(f) = fast_rx.try_recv() {
            seqs.push(f.seq);
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }
}
