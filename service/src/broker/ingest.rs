//! `--role ingest`: the sources publish into the broker.
//!
//! [`Ingest`] is the sources' [`Sink`]: it turns each event into its recorded message at once
//! (the source's thread pays for the JSON, as the hub's encoder does in one process) and
//! queues it; one writer task holds the lease and applies the queue in batches, each one
//! atomic script call ([`publish.lua`](publish.lua)) that numbers, stores and announces it. A
//! batch keeps its id until it is applied, so a call retried after a lost reply is not applied
//! twice.
//!
//! Nothing is lost silently. A standby (another writer holds the lease) queues nothing; when
//! it takes over, the script starts a new epoch and the writer sends every book whole first.
//! While the broker is away the queue is bounded ([`MAX_QUEUE_BYTES`]); past it the queue is
//! dropped, and once the broker is back the writer asks for a new epoch, with the books whole
//! again: clients are told (their positions belong to the old epoch) rather than given a gap.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Keys, Sink};
use crate::book::BookUpdate;
use crate::hub::{Batch, StreamId};
use crate::market::{Channel, Event, Payload};
use crate::metrics::Metrics;
use crate::recorded::Line;

/// Encoded events held while the broker is slow or away; past this the queue is dropped and a
/// new epoch follows.
pub const MAX_QUEUE_BYTES: usize = 32 << 20;

/// Items and bytes in one script call: large enough to amortize the round trip, small enough
/// that one call never holds the broker for long (Valkey runs scripts one at a time).
const MAX_BATCH_ITEMS: usize = 512;
const MAX_BATCH_BYTES: usize = 512 << 10;

#[derive(Debug)]
enum Item {
    Event {
        /// The stream's index (its key is [`Ingest::stream_keys`]).
        stream: usize,
        step: u64,
        body: String,
        checkpoint: Option<String>,
    },
    Status {
        symbol: u16,
        live: bool,
    },
}

impl Item {
    /// What it holds, for the queue's bound.
    fn bytes(&self) -> usize {
        match self {
            Item::Event {
                body, checkpoint, ..
            } => body.len() + checkpoint.as_ref().map_or(0, String::len),
            Item::Status { .. } => 0,
        }
    }
}

/// A book stream's latest update, its time and the source's seq.
#[derive(Debug, Clone)]
struct LastBook {
    update: BookUpdate,
    ts: i64,
    seq: u64,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Item>,
    bytes: usize,
    /// This task holds the lease: events are queued. A standby only keeps the books.
    leader: bool,
    /// The queue overflowed: the writer asks for a new epoch before sending more.
    new_epoch: bool,
    /// Per stream: the source's last seq (0: none yet in this epoch), and updates since the
    /// last checkpoint (books).
    last_seq: Vec<u64>,
    since_checkpoint: Vec<usize>,
    /// The latest update of each book stream, for sending it whole.
    books: Vec<Option<LastBook>>,
    /// Per symbol: whether its source is live.
    live: Vec<bool>,
}

#[derive(Debug)]
pub struct Ingest {
    symbols: Vec<String>,
    keys: Keys,
    /// Every stream's key, by stream index: named once, not per event.
    stream_keys: Vec<String>,
    metrics: Arc<Metrics>,
    window: usize,
    /// [`MAX_QUEUE_BYTES`], but for tests.
    max_queue: usize,
    state: Mutex<State>,
    wake: Notify,
}

impl Ingest {
    pub fn new(
        symbols: Vec<String>,
        namespace: &str,
        window: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let streams = symbols.len() * Channel::ALL.len();
        let n = symbols.len();
        let keys = Keys::new(namespace);
        let stream_keys = (0..streams)
            .map(|i| {
                let stream = StreamId::from_index(i);
                keys.stream(stream.channel(), &symbols[usize::from(stream.symbol())])
            })
            .collect();
        Self {
            symbols,
            keys,
            stream_keys,
            metrics,
            window,
            max_queue: MAX_QUEUE_BYTES,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                leader: false,
                new_epoch: false,
                last_seq: vec![0; streams],
                since_checkpoint: vec![0; streams],
                books: vec![None; streams],
                live: vec![true; n],
            }),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Book checkpoints are written every quarter window, so an edge starting mid-stream
    /// finds one within its window.
    fn checkpoint_every(&self) -> usize {
        (self.window / 4).max(1)
    }

    /// Starts the epoch's streams over: empties the queue and queues every book whole (a
    /// reset, which is also its checkpoint) and every symbol's status, so an edge can build
    /// everything from what follows.
    fn restart(&self, st: &mut State) {
        let dropped = st.queue.len();
        self.metrics.broker_dropped.inc_by(dropped as u64);
        st.queue.clear();
        st.last_seq.iter_mut().for_each(|s| *s = 0);
        st.since_checkpoint.iter_mut().for_each(|s| *s = 0);
        for i in 0..st.books.len() {
            let Some(LastBook { update, ts, seq }) = &st.books[i] else {
                continue;
            };
            let (ts, seq) = (*ts, *seq);
            let stream = StreamId::from_index(i);
            let mut whole = update.as_snapshot();
            whole.data.reset = true;
            let event = Event {
                channel: stream.channel(),
                symbol: stream.symbol(),
                seq,
                ts,
                payload: Payload::Book(whole),
            };
            let body = self.encode(&event);
            // The source's next update of this book follows the whole one.
            st.last_seq[i] = seq;
            st.queue.push_back(Item::Event {
                stream: i,
                step: 1,
                checkpoint: Some(self.checkpoint(&event, None)),
                body,
            });
        }
        for (i, &live) in st.live.iter().enumerate() {
            st.queue.push_back(Item::Status {
                symbol: i as u16,
                live,
            });
        }
        st.bytes = st.queue.iter().map(Item::bytes).sum();
    }

    /// Another writer holds the lease: what was queued will never be applied.
    fn stand_down(&self, st: &mut State) {
        st.leader = false;
        self.metrics.broker_dropped.inc_by(st.queue.len() as u64);
        st.queue.clear();
        st.bytes = 0;
        self.metrics.broker_lease_holder.set(0);
    }

    fn encode(&self, event: &Event) -> String {
        let line = Line::of(event, &self.symbols[usize::from(event.symbol)]);
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// The checkpoint at book `event`: the whole book before it (`before`; empty before the
    /// stream's first), from which a reader applies the stream's entries from this one on.
    fn checkpoint(&self, event: &Event, before: Option<&LastBook>) -> String {
        let whole = match (before, &event.payload) {
            (Some(b), _) => b.update.as_snapshot(),
            (None, Payload::Book(b)) => BookUpdate::whole(Arc::default(), b.depth),
            (None, _) => return String::new(),
        };
        let event = Event {
            channel: event.channel,
            symbol: event.symbol,
            seq: event.seq,
            ts: before.map_or(event.ts, |b| b.ts),
            payload: Payload::Book(whole),
        };
        let line = Line::whole(&event, &self.symbols[usize::from(event.symbol)]);
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Takes up to one batch from the queue.
    fn take_batch(&self) -> Vec<Item> {
        let mut st = self.lock();
        let mut bytes = 0;
        let mut out = Vec::new();
        while out.len() < MAX_BATCH_ITEMS && bytes < MAX_BATCH_BYTES {
            let Some(item) = st.queue.pop_front() else {
                break;
            };
            bytes += item.bytes();
            out.push(item);
        }
        st.bytes -= bytes.min(st.bytes);
        out
    }
}

impl Sink for Ingest {
    fn publish(&self, events: &mut Vec<Event>, _batch: &mut Batch) {
        let every = self.checkpoint_every();
        let mut st = self.lock();
        for mut event in events.drain(..) {
            let stream = StreamId::new(event.channel, event.symbol);
            let i = stream.index();
            // A book's first update here changes a book no reader holds (the simulator's starts
            // from a book it never published): it goes out whole, as a reset.
            if let Payload::Book(b) = &mut event.payload
                && st.leader
                && st.last_seq[i] == 0
                && !b.data.reset
            {
                *b = b.as_snapshot();
                b.data.reset = true;
            }
            // A book's view before this event: what a checkpoint at this event holds.
            let mut before = None;
            let reset = if let Payload::Book(b) = &event.payload {
                let last = LastBook {
                    update: b.clone(),
                    ts: event.ts,
                    seq: event.seq,
                };
                before = Some(st.books[i].replace(last));
                b.data.reset
            } else {
                false
            };
            if !st.leader {
                self.metrics.broker_dropped.inc();
                continue;
            }
            let last = std::mem::replace(&mut st.last_seq[i], event.seq);
            let step = if last == 0 {
                1
            } else {
                event.seq.saturating_sub(last).max(1)
            };
            let body = self.encode(&event);
            let checkpoint = match before {
                Some(before) => {
                    st.since_checkpoint[i] += 1;
                    if reset || last == 0 || st.since_checkpoint[i] >= every {
                        st.since_checkpoint[i] = 0;
                        Some(self.checkpoint(&event, before.as_ref()))
                    } else {
                        None
                    }
                }
                None => None,
            };
            let item = Item::Event {
                stream: i,
                step,
                body,
                checkpoint,
            };
            st.bytes += item.bytes();
            st.queue.push_back(item);
            if st.bytes > self.max_queue {
                tracing::warn!(
                    bytes = st.bytes,
                    "the broker is not keeping up: queue dropped, a new epoch follows"
                );
                self.restart(&mut st);
                st.new_epoch = true;
            }
        }
        drop(st);
        self.wake.notify_one();
    }

    fn set_live(&self, symbol: u16, live: bool) {
        let mut st = self.lock();
        st.live[usize::from(symbol)] = live;
        if st.leader {
            st.queue.push_back(Item::Status { symbol, live });
            drop(st);
            self.wake.notify_one();
        }
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn window(&self) -> usize {
        self.window
    }
}

/// What the writer needs besides the sink.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub lease: Duration,
    /// `{"source", "symbols"}`, written with each new epoch for the edges.
    pub meta: String,
    /// Names the new epochs: `{source}-{random}`.
    pub source: &'static str,
}

/// What the lease script answered.
enum Lease {
    /// Another writer holds it.
    Held(String),
    /// Renewed, or taken back with nothing written since: the epoch goes on.
    Kept,
    /// Taken with a new epoch.
    NewEpoch(String),
}

/// The writer's connection, identity and scripts.
struct Writer {
    id: String,
    keys: Keys,
    config: WriterConfig,
    publish: redis::Script,
    lease: redis::Script,
    conn: MultiplexedConnection,
}

impl Writer {
    async fn lease(&mut self, new_epoch: bool) -> redis::RedisResult<Lease> {
        let keys = &self.keys;
        let epoch = format!("{}-{:016x}", self.config.source, super::random_u64());
        let mut call = self.lease.prepare_invoke();
        keys.state(&mut call);
        call.key(keys.meta())
            .key(keys.stale())
            .key(keys.writer())
            .arg(&self.id)
            .arg(self.config.lease.as_millis() as u64)
            .arg(&epoch)
            .arg(&self.config.meta)
            .arg(if new_epoch { "1" } else { "0" })
            .arg(keys.events())
            .arg(crate::feed::now_micros());
        let (code, text): (u8, String) = call.invoke_async(&mut self.conn).await?;
        Ok(match code {
            0 => Lease::Held(text),
            1 => Lease::Kept,
            _ => Lease::NewEpoch(text),
        })
    }

    /// Applies one batch of `ingest`'s; `Ok(events)` once the broker holds it (now or from an
    /// earlier try).
    async fn apply(
        &mut self,
        id: &str,
        previous: &str,
        items: &[Item],
        ingest: &Ingest,
    ) -> redis::RedisResult<u64> {
        let keys = &self.keys;
        let mut call = self.publish.prepare_invoke();
        keys.state(&mut call);
        call.key(keys.stale())
            .arg(&self.id)
            .arg(id)
            .arg(keys.events())
            .arg(ingest.window.max(1))
            .arg(crate::feed::now_micros())
            .arg(previous);
        let mut events = 0u64;
        for item in items {
            match item {
                Item::Event {
                    stream,
                    step,
                    body,
                    checkpoint,
                } => {
                    events += 1;
                    call.key(&ingest.stream_keys[*stream])
                        .arg(step)
                        .arg(body)
                        .arg(checkpoint.as_deref().unwrap_or(""))
                }
                Item::Status { symbol, live } => call
                    .key(keys.stale())
                    .arg(if *live { "L" } else { "S" })
                    .arg(&ingest.symbols[usize::from(*symbol)])
                    .arg(""),
            };
        }
        let _: u64 = call.invoke_async(&mut self.conn).await?;
        Ok(events)
    }
}

/// Applies the queue of `ingest` until `shutdown`, holding the lease or standing by for it.
/// `on_lease(true)` is called each time this task becomes the writer, `on_lease(false)` each
/// time it finds another writer holding the lease.
pub async fn write(
    ingest: Arc<Ingest>,
    client: redis::Client,
    config: WriterConfig,
    shutdown: CancellationToken,
    mut on_lease: impl FnMut(bool) + Send,
) {
    let id = format!("{:016x}", super::random_u64());
    let metrics = ingest.metrics.clone();
    let renew_every = config.lease / 3;
    let mut writer: Option<Writer> = None;
    let mut attempt = 0u32;
    let mut next_batch = 0u64;
    // The batch being applied: its id and items stay until the broker holds it.
    let mut inflight: Option<(String, Vec<Item>)> = None;
    // The last batch the broker acknowledged in this epoch: a broker that no longer holds it
    // lost acknowledged writes (see publish.lua's LOST).
    let mut acknowledged = String::new();
    // When to ask for the lease again: now when unsure that this task holds it.
    let mut lease_due = tokio::time::Instant::now();
    let pause = |attempt: u32| crate::feed::net::backoff(attempt).min(Duration::from_secs(1));
    while !shutdown.is_cancelled() {
        let Some(w) = writer.as_mut() else {
            match super::connect(&client, &ingest.keys, None).await {
                Ok(conn) => {
                    writer = Some(Writer {
                        id: id.clone(),
                        keys: ingest.keys.clone(),
                        config: config.clone(),
                        publish: redis::Script::new(include_str!("publish.lua")),
                        lease: redis::Script::new(include_str!("lease.lua")),
                        conn,
                    });
                    metrics.broker_up.set(1);
                    attempt = 0;
                }
                Err(e) => {
                    // Counted as an edge counts a session that failed: a refusal (NOPERM on
                    // our keys) shows here as well as an unreachable broker.
                    metrics.broker_up.set(0);
                    metrics.broker_reconnects.inc();
                    tracing::warn!(error = %e, "cannot reach the broker");
                    attempt = attempt.saturating_add(1);
                    if !sleep(pause(attempt), &shutdown).await {
                        break;
                    }
                }
            }
            continue;
        };
        let new_epoch = ingest.lock().new_epoch;
        if new_epoch || tokio::time::Instant::now() >= lease_due {
            match w.lease(new_epoch).await {
                Ok(Lease::NewEpoch(epoch)) => {
                    {
                        let mut st = ingest.lock();
                        // What was queued or in flight belonged to the last epoch.
                        ingest.restart(&mut st);
                        st.leader = true;
                        st.new_epoch = false;
                    }
                    inflight = None;
                    acknowledged.clear();
                    metrics.broker_epochs.inc();
                    metrics.broker_lease_holder.set(1);
                    tracing::info!(%epoch, writer = id, "holding the writer's lease: a new epoch");
                    on_lease(true);
                    lease_due = tokio::time::Instant::now() + renew_every;
                }
                Ok(Lease::Kept) => lease_due = tokio::time::Instant::now() + renew_every,
                Ok(Lease::Held(holder)) => {
                    let was_leader = {
                        let mut st = ingest.lock();
                        let was = st.leader;
                        ingest.stand_down(&mut st);
                        was
                    };
                    if was_leader {
                        tracing::warn!(holder, "another writer holds the lease; standing by");
                    }
                    on_lease(false);
                    inflight = None;
                    lease_due = tokio::time::Instant::now() + renew_every;
                }
                Err(e) => {
                    lost(&mut writer, &metrics, &e);
                    attempt = attempt.saturating_add(1);
                    if !sleep(pause(attempt), &shutdown).await {
                        break;
                    }
                }
            }
            continue;
        }
        if inflight.is_none() && ingest.lock().leader {
            let items = ingest.take_batch();
            if !items.is_empty() {
                next_batch += 1;
                inflight = Some((format!("{id}:{next_batch}"), items));
            }
        }
        let Some((batch, items)) = &inflight else {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = ingest.wake.notified() => {}
                () = tokio::time::sleep_until(lease_due) => {}
            }
            continue;
        };
        match w.apply(batch, &acknowledged, items, &ingest).await {
            Ok(events) => {
                metrics.broker_events.inc_by(events);
                acknowledged.clone_from(batch);
                inflight = None;
            }
            Err(e) if e.code() == Some("LOST") => {
                // Never a silent gap or a position numbered twice: a new epoch, every book
                // whole again, clients told.
                tracing::warn!(
                    error = %e,
                    "the broker lost writes it had acknowledged (a failover?): a new epoch"
                );
                ingest.lock().new_epoch = true;
                lease_due = tokio::time::Instant::now();
            }
            Err(e) if e.code() == Some("NOTLEADER") || e.code() == Some("NOEPOCH") => {
                // The lease ran out (the broker was paused, say) or the broker lost its data:
                // ask again; the batch waits for the answer.
                tracing::warn!(error = %e, "the broker refused the batch; asking for the lease");
                lease_due = tokio::time::Instant::now();
            }
            Err(e) => {
                lost(&mut writer, &metrics, &e);
                attempt = attempt.saturating_add(1);
                if !sleep(pause(attempt), &shutdown).await {
                    break;
                }
            }
        }
    }
    if let Some(w) = writer.as_mut()
        && ingest.lock().leader
    {
        // Stopping (a deploy): hand the lease over now rather than after its time to live.
        let release = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let released: redis::RedisResult<u8> = release
            .key(w.keys.lease())
            .arg(&w.id)
            .invoke_async(&mut w.conn)
            .await;
        tracing::info!(
            released = released.is_ok_and(|n| n == 1),
            "stopping: the writer's lease released"
        );
    }
    metrics.broker_lease_holder.set(0);
}

fn lost(writer: &mut Option<Writer>, metrics: &Metrics, e: &redis::RedisError) {
    tracing::warn!(error = %e, "broker connection lost");
    *writer = None;
    metrics.broker_up.set(0);
    metrics.broker_reconnects.inc();
}

/// Sleeps `d`; `false` when shutdown came first.
async fn sleep(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Depths;
    use crate::market::fixtures::{book, trade};

    fn ingest(max_queue: usize) -> Ingest {
        let mut ingest = Ingest::new(vec!["AAA".into()], "t", 8, Arc::new(Metrics::new()));
        ingest.max_queue = max_queue;
        ingest.lock().leader = true;
        ingest
    }

    fn steps(ingest: &Ingest) -> Vec<(u64, bool)> {
        ingest
            .lock()
            .queue
            .iter()
            .filter_map(|item| match item {
                Item::Event {
                    step, checkpoint, ..
                } => Some((*step, checkpoint.is_some())),
                Item::Status { .. } => None,
            })
            .collect()
    }

    /// The broker numbers by the source's steps, so a source that skipped ahead is a jump
    /// there too (clients are told), never a silent renumbering.
    #[test]
    fn a_source_jump_is_a_jump_in_the_broker() {
        let ingest = ingest(MAX_QUEUE_BYTES);
        ingest.publish(
            &mut vec![trade(7), trade(8), trade(12)],
            &mut Batch::default(),
        );
        assert_eq!(steps(&ingest), vec![(1, false), (1, false), (4, false)]);
    }

    /// A book gets a checkpoint at its first event and every quarter window after.
    #[test]
    fn books_get_checkpoints_every_quarter_window() {
        let ingest = ingest(MAX_QUEUE_BYTES);
        let mut depths = Depths::default();
        let mut events: Vec<Event> = (1..=5)
            .map(|s| book(&mut depths, s, 10 + s as i64, false))
            .collect();
        ingest.publish(&mut events, &mut Batch::default());
        let got: Vec<bool> = steps(&ingest).into_iter().map(|(_, c)| c).collect();
        assert_eq!(got, vec![true, false, true, false, true]);
        let st = ingest.lock();
        let Some(Item::Event { body, .. }) = st.queue.front() else {
            panic!("an event first");
        };
        assert!(
            body.contains(r#""type":"snapshot""#),
            "the first update of a book no reader holds goes out whole: {body}"
        );
    }

    #[test]
    fn a_standby_queues_nothing_but_keeps_the_books() {
        let ingest = ingest(MAX_QUEUE_BYTES);
        ingest.lock().leader = false;
        let mut depths = Depths::default();
        ingest.publish(
            &mut vec![book(&mut depths, 1, 10, false), trade(1)],
            &mut Batch::default(),
        );
        assert!(steps(&ingest).is_empty());
        assert_eq!(ingest.metrics.broker_dropped.get(), 2);
        // Taking over sends the book whole, as a reset, with its checkpoint.
        ingest.restart(&mut ingest.lock());
        assert_eq!(steps(&ingest), vec![(1, true)]);
    }

    /// Past its bound the queue is dropped, and what follows starts a new epoch with every
    /// book whole: memory stays bounded and clients are told.
    #[test]
    fn an_overflowing_queue_is_dropped_for_a_new_epoch() {
        let ingest = ingest(4096);
        let mut depths = Depths::default();
        let mut seq = 0;
        while !ingest.lock().new_epoch {
            seq += 1;
            assert!(seq < 1000, "the queue never overflowed");
            ingest.publish(
                &mut vec![
                    book(&mut depths, seq, 10 + seq as i64 % 7, false),
                    trade(seq),
                ],
                &mut Batch::default(),
            );
        }
        let st = ingest.lock();
        assert!(st.bytes <= 4096, "{} bytes held", st.bytes);
        let Some(Item::Event { body, .. }) = st.queue.front() else {
            panic!("the book comes first, whole");
        };
        assert!(body.contains(r#""type":"snapshot""#), "{body}");
        drop(st);
        assert!(ingest.metrics.broker_dropped.get() > 0);
    }
}
