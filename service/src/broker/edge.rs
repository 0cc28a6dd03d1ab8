//! `--role edge`: serves clients from the broker.
//!
//! One connection (RESP3) both queries the broker and receives its notifications. The edge
//! subscribes first, then reads every stream from where its hub stands (`XRANGE`), so nothing
//! published in between is missed; notifications it already holds are skipped by `seq`. A
//! notification that skips ahead of a stream is filled from the broker's stream before it is
//! applied; what the broker no longer holds reaches the hub as a jump, and the hub tells those
//! clients to resume. A book the edge does not hold (it started mid-stream) is rebuilt from
//! the broker's latest checkpoint. A new epoch (another writer, or a broker that lost its data)
//! empties the hub's windows and tells every client.
//!
//! Bounded everywhere: notifications wait in a queue of [`INBOX`] batches; when it is full they
//! are dropped and the edge reads the streams instead. The broker itself bounds a subscriber's
//! output buffer, and each stream to about one window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Keys;
use crate::hub::{Batch, Hub, StreamId};
use crate::market::{Channel, Event};
use crate::metrics::Metrics;
use crate::recorded::{Books, Recorded, parse};

/// Notification batches waiting to be applied.
pub const INBOX: usize = 1024;

/// Hands the broker's notifications to the edge without ever blocking the connection: past
/// [`INBOX`] they are dropped and `overflow` set, and the edge reads the streams instead.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: mpsc::Sender<PushInfo>,
    overflow: Arc<AtomicBool>,
}

impl redis::aio::AsyncPushSender for Inbox {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        if self.tx.try_send(info).is_err() {
            self.overflow.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// What the writer serves, as it wrote it with its epoch.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Meta {
    pub source: String,
    pub symbols: Vec<String>,
}

/// Whether the edge can serve: connected, caught up, hearing from the broker, and not behind.
#[derive(Debug, Default)]
pub struct Health {
    caught_up: AtomicBool,
    /// When the broker last answered (a notification or a ping), in microseconds.
    heard: AtomicI64,
    /// How old the last notification applied was (from the ingest's publish), microseconds.
    lag: AtomicI64,
}

impl Health {
    /// Ready when caught up, the broker answered within `max_lag`, and the last notification
    /// applied was at most `max_lag` old (a quiet source leaves that as it was: not behind).
    pub fn ok(&self, max_lag: Duration) -> bool {
        let bound = max_lag.as_micros() as i64;
        let quiet = crate::feed::now_micros() - self.heard.load(Ordering::Acquire);
        self.caught_up.load(Ordering::Acquire)
            && quiet <= bound
            && self.lag.load(Ordering::Acquire) <= bound
    }

    fn heard(&self) {
        self.heard
            .store(crate::feed::now_micros(), Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("broker: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the broker's {key} holds {why}")]
    Bad { key: String, why: String },
    #[error("the broker closed the connection")]
    Closed,
}

/// Reads what the writer serves, waiting (until `shutdown`) for a writer to have started.
pub async fn wait_for_meta(
    client: &redis::Client,
    keys: &Keys,
    shutdown: &CancellationToken,
) -> Option<(Meta, String)> {
    let mut attempt = 0u32;
    loop {
        let got = async {
            let mut conn = super::connect(client, keys, None).await?;
            let (meta, epoch): (Option<String>, Option<String>) = redis::pipe()
                .get(keys.meta())
                .get(keys.epoch())
                .query_async(&mut conn)
                .await?;
            Ok::<_, EdgeError>(meta.zip(epoch))
        }
        .await;
        match got {
            Ok(Some((meta, epoch))) => match serde_json::from_str::<Meta>(&meta) {
                Ok(meta) => return Some((meta, epoch)),
                Err(e) => tracing::error!(error = %e, "the broker's meta is not readable"),
            },
            Ok(None) => tracing::info!("waiting for an ingest task to publish into the broker"),
            Err(e) => tracing::warn!(error = %e, "cannot reach the broker"),
        }
        attempt = attempt.saturating_add(1);
        let pause = crate::feed::net::backoff(attempt).max(Duration::from_millis(200));
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(pause.min(Duration::from_secs(2))) => {}
        }
    }
}

/// An edge's reader: the hub it feeds and where each stream stands.
#[derive(Debug)]
pub struct Edge {
    hub: Arc<Hub>,
    client: redis::Client,
    keys: Keys,
    health: Arc<Health>,
    books: Books,
    /// The last seq applied, per stream.
    last: Vec<u64>,
    epoch: String,
    batch: Batch,
    events: Vec<Event>,
}

impl Edge {
    pub fn new(hub: Arc<Hub>, client: redis::Client, keys: Keys, health: Arc<Health>) -> Self {
        let streams = hub.symbols().len() * Channel::ALL.len();
        let epoch = hub.epoch().to_string();
        Self {
            hub,
            client,
            keys,
            health,
            books: Books::default(),
            last: vec![0; streams],
            epoch,
            batch: Batch::default(),
            events: Vec::new(),
        }
    }

    fn metrics(&self) -> &Metrics {
        self.hub.metrics()
    }

    /// Tails the broker until `shutdown`, reconnecting with backoff. `on_ready` fires once,
    /// after the first catch-up; readiness afterwards is [`Health`].
    pub async fn run(mut self, shutdown: CancellationToken, on_ready: impl FnOnce()) {
        let mut on_ready = Some(on_ready);
        let mut attempt = 0u32;
        loop {
            let outcome = self.session(&shutdown, &mut on_ready).await;
            // A connection that got as far as serving starts the backoff again.
            if self.health.caught_up.swap(false, Ordering::AcqRel) {
                attempt = 0;
            }
            self.metrics().broker_up.set(0);
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "broker connection lost");
            }
            self.metrics().broker_reconnects.inc();
            attempt = attempt.saturating_add(1);
            let pause = crate::feed::net::backoff(attempt).min(Duration::from_secs(1));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One connection: subscribe, catch up, then apply notifications until it fails (or
    /// `shutdown`: `Ok`).
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        on_ready: &mut Option<impl FnOnce()>,
    ) -> Result<(), EdgeError> {
        let (tx, mut rx) = mpsc::channel(INBOX);
        let overflow = Arc::new(AtomicBool::new(false));
        let inbox = Inbox {
            tx,
            overflow: overflow.clone(),
        };
        let mut conn = super::connect(&self.client, &self.keys, Some(inbox)).await?;
        conn.subscribe(self.keys.events()).await?;
        self.metrics().broker_up.set(1);
        let epoch: Option<String> = redis::cmd("GET")
            .arg(self.keys.epoch())
            .query_async(&mut conn)
            .await?;
        if let Some(epoch) = epoch {
            self.follow(&epoch);
        }
        self.catch_up_all(&mut conn).await?;
        self.health.heard();
        self.health.lag.store(0, Ordering::Release);
        self.health.caught_up.store(true, Ordering::Release);
        if let Some(ready) = on_ready.take() {
            ready();
        }
        let mut ping = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                push = rx.recv() => match push {
                    Some(PushInfo { kind: PushKind::Message, data }) => {
                        self.on_message(&data, &mut conn).await?;
                    }
                    Some(PushInfo { kind: PushKind::Disconnection, .. }) | None => {
                        return Err(EdgeError::Closed);
                    }
                    Some(_) => {}
                },
                _ = ping.tick() => {
                    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
                    self.health.heard();
                    if overflow.swap(false, Ordering::AcqRel) {
                        tracing::warn!("notifications came faster than this edge applies them; reading the streams");
                        while rx.try_recv().is_ok() {}
                        self.catch_up_all(&mut conn).await?;
                    }
                }
            }
        }
    }

    /// Follows `epoch` if it is not the current one: every window empties and every client is
    /// told (their positions belong to the last epoch).
    fn follow(&mut self, epoch: &str) {
        if epoch == self.epoch {
            return;
        }
        tracing::warn!(from = %self.epoch, to = %epoch, "a new epoch: every stream starts again");
        self.epoch = epoch.to_string();
        self.hub.restart(epoch);
        self.books.clear();
        self.last.iter_mut().for_each(|s| *s = 0);
        self.metrics().broker_epochs.inc();
    }

    /// One notification: `epoch time` then lines of `seq message` or `! symbol live|stale`.
    async fn on_message(
        &mut self,
        data: &[Value],
        conn: &mut MultiplexedConnection,
    ) -> Result<(), EdgeError> {
        let Some(Value::BulkString(payload)) = data.get(1) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(payload);
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or_default();
        let (epoch, sent) = header.split_once(' ').unwrap_or((header, "0"));
        self.health.heard();
        if let Ok(sent) = sent.parse::<i64>() {
            let lag = (crate::feed::now_micros() - sent).max(0);
            self.metrics().broker_lag_micros.set(lag);
            self.health.lag.store(lag, Ordering::Release);
        }
        if epoch != self.epoch {
            // Ask the broker which epoch is current: this notification may be an old one that
            // waited in the inbox while the edge moved on. The current epoch's streams hold
            // everything such a notification carried, and more.
            let current: Option<String> = redis::cmd("GET")
                .arg(self.keys.epoch())
                .query_async(conn)
                .await?;
            if let Some(current) = current.filter(|c| *c != self.epoch) {
                self.follow(&current);
                return self.catch_up_all(conn).await;
            }
            return Ok(());
        }
        for line in lines {
            if let Some(status) = line.strip_prefix("! ") {
                self.flush();
                let (symbol, state) = status.split_once(' ').unwrap_or((status, ""));
                if let Some(stream) = self.hub.stream(Channel::Ticker, symbol) {
                    self.hub.set_live(stream.symbol(), state == "live");
                }
                continue;
            }
            let Some((seq, body)) = line.split_once(' ') else {
                continue;
            };
            let Ok(seq) = seq.parse::<u64>() else {
                continue;
            };
            self.take(seq, body, conn).await?;
        }
        self.flush();
        Ok(())
    }

    /// Applies one notified entry: skipped when already held; after filling any gap from the
    /// broker's stream.
    async fn take(
        &mut self,
        seq: u64,
        body: &str,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), EdgeError> {
        let rec = match parse(body) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::warn!(error = %e, seq, "an unreadable broker entry skipped");
                return Ok(());
            }
        };
        let Some(stream) = self.hub.stream(rec.channel, &rec.symbol) else {
            return Ok(());
        };
        let last = self.last[stream.index()];
        if seq <= last {
            return Ok(());
        }
        if seq > last + 1 {
            self.flush();
            self.catch_up(stream, conn).await?;
            if seq <= self.last[stream.index()] {
                return Ok(());
            }
        }
        if !self.apply(stream, seq, rec) {
            self.flush();
            let symbol = self.hub.symbol_name(stream).to_string();
            self.books.forget(stream.channel(), &symbol);
            self.catch_up(stream, conn).await?;
        }
        Ok(())
    }

    /// Queues one decoded entry; `false` when it cannot be applied (a book update the edge
    /// holds no book for, or whose checksum fails): the caller rebuilds that book.
    fn apply(&mut self, stream: StreamId, seq: u64, mut rec: Recorded) -> bool {
        if self.books.apply(&mut rec).is_err() {
            return false;
        }
        self.last[stream.index()] = seq;
        self.metrics().broker_events.inc();
        self.events.push(Event {
            channel: rec.channel,
            symbol: stream.symbol(),
            seq,
            ts: rec.ts,
            payload: rec.data,
        });
        true
    }

    /// Hands what was decoded to the hub, as one batch.
    fn flush(&mut self) {
        if !self.events.is_empty() {
            self.hub.publish_batch(&mut self.events, &mut self.batch);
        }
    }

    async fn catch_up_all(&mut self, conn: &mut MultiplexedConnection) -> Result<(), EdgeError> {
        for i in 0..self.last.len() {
            self.catch_up(StreamId::from_index(i), conn).await?;
        }
        let stale: std::collections::HashSet<String> = redis::cmd("HKEYS")
            .arg(self.keys.stale())
            .query_async(conn)
            .await?;
        for (i, symbol) in self.hub.symbols().iter().enumerate() {
            self.hub.set_live(i as u16, !stale.contains(symbol));
        }
        Ok(())
    }

    /// Reads `stream` from the broker after where it stands and applies it. A book the edge
    /// does not hold is rebuilt from the broker's latest checkpoint (the book before entry S)
    /// and the entries from S on; those the hub already has only rebuild the book.
    async fn catch_up(
        &mut self,
        stream: StreamId,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), EdgeError> {
        let (channel, symbol) = (stream.channel(), self.hub.symbol_name(stream).to_string());
        let key = self.keys.stream(channel, &symbol);
        let mut from = self.last[stream.index()] + 1;
        if channel.book_depth().is_some() && !self.books.holds(channel, &symbol) {
            let checkpoint: Option<String> = redis::cmd("HGET")
                .arg(self.keys.checkpoints())
                .arg(&key)
                .query_async(conn)
                .await?;
            let Some(checkpoint) = checkpoint else {
                return Ok(());
            };
            let start = checkpoint.split_once(' ').and_then(|(seq, body)| {
                let seq = seq.parse::<u64>().ok()?;
                let mut rec = parse(body).ok()?;
                self.books.apply(&mut rec).ok()?;
                Some(seq)
            });
            let Some(seq) = start else {
                tracing::warn!(
                    key,
                    "the broker's checkpoint of this book does not apply; waiting for the next"
                );
                return Ok(());
            };
            from = seq;
        }
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg(format!("{from}-0"))
            .arg("+")
            .query_async(conn)
            .await?;
        for entry in reply.ids {
            let Some(seq) = entry
                .id
                .split_once('-')
                .and_then(|(s, _)| s.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(body) = entry.get::<String>("d") else {
                continue;
            };
            let applies = match parse(&body) {
                Ok(rec) if seq > self.last[stream.index()] => self.apply(stream, seq, rec),
                // Held already: it only rebuilds the book.
                Ok(mut rec) => self.books.apply(&mut rec).is_ok(),
                Err(e) => {
                    tracing::warn!(error = %e, seq, "an unreadable broker entry skipped");
                    true
                }
            };
            if !applies {
                tracing::warn!(stream = %channel, symbol, seq, "a book entry the broker holds does not apply; waiting for the next checkpoint");
                self.books.forget(channel, &symbol);
                break;
            }
        }
        self.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_is_ready_only_caught_up_hearing_the_broker_and_not_behind() {
        let bound = Duration::from_secs(5);
        let health = Health::default();
        health.heard();
        assert!(!health.ok(bound), "not caught up yet");
        health.caught_up.store(true, Ordering::Release);
        assert!(health.ok(bound));
        health.lag.store(6_000_000, Ordering::Release);
        assert!(!health.ok(bound), "the last notification was 6 s old");
        health.lag.store(1_000, Ordering::Release);
        health
            .heard
            .store(crate::feed::now_micros() - 6_000_000, Ordering::Release);
        assert!(!health.ok(bound), "the broker has been silent for 6 s");
    }
}
