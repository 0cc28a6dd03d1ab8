//! One client: connect, subscribe through the URL, read until told to stop. With churn, it
//! drops its socket after a random lifetime and reconnects, resuming every stream from the last
//! `seq` it received, as a well-behaved client does; its gap count then says whether resume
//! kept the promise.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::RunArgs;
use crate::proc_stat::now_us;
use crate::stats::Shared;

const SAMPLE_BATCH: usize = 512;

/// The fields the load generator reads; the payload is skipped without being built.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    channel: &'a str,
    #[serde(default)]
    symbol: &'a str,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    ts: i64,
    #[serde(default)]
    epoch: Option<&'a str>,
}

/// Reconnecting now and then: the mean lifetime of a connection, and what to resubscribe.
#[derive(Debug, Clone)]
pub struct Churn {
    pub mean: std::time::Duration,
    /// The endpoint without a subscription: the resume goes in a message.
    pub base_url: String,
    pub symbols: Vec<String>,
    pub channels: Vec<String>,
}

impl Churn {
    /// Between half and one and a half times the mean, different for every client and session.
    fn lifetime(&self, index: usize, session: u64) -> std::time::Duration {
        let mut h = (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ session.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 29;
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        self.mean.mul_f64(0.5 + unit)
    }

    fn resubscribe(&self, epoch: Option<&str>, held: &[(u64, u64, String)]) -> String {
        let resume: serde_json::Map<String, serde_json::Value> = held
            .iter()
            .map(|(_, seq, name)| (name.clone(), serde_json::Value::from(*seq)))
            .collect();
        serde_json::json!({
            "op": "subscribe",
            "symbols": self.symbols,
            "channels": self.channels,
            "epoch": epoch,
            "resume": resume,
        })
        .to_string()
    }
}

/// The symbols connection `i` follows.
pub fn symbols_for(args: &RunArgs, i: usize) -> Vec<String> {
    let n = args.symbols.len();
    let k = args.symbols_per_connection.clamp(1, n);
    (0..k).map(|j| args.symbols[(i + j) % n].clone()).collect()
}

pub fn url_for(args: &RunArgs, i: usize) -> String {
    let symbols = symbols_for(args, i);
    let sep = if args.url.contains('?') { '&' } else { '?' };
    format!(
        "{}{sep}symbols={}&channels={}",
        args.url,
        symbols.join(","),
        args.channels
    )
}

fn key(channel: &str, symbol: &str) -> u64 {
    channel
        .bytes()
        .chain([0])
        .chain(symbol.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

pub async fn connection(index: usize, url: String, shared: Arc<Shared>, churn: Option<Churn>) {
    // Small buffers: thousands of clients share this process with the server under test.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let mut tally = Tally::new(index);
    let mut session = 0u64;
    'sessions: loop {
        let (target, hello) = match (&churn, session) {
            (Some(c), 1..) => (
                c.base_url.clone(),
                Some(c.resubscribe(tally.epoch.as_deref(), &tally.last)),
            ),
            _ => (url.clone(), None),
        };
        let connect = tokio_tungstenite::connect_async_with_config(&target, Some(config), false);
        let mut ws = match tokio::time::timeout(std::time::Duration::from_secs(30), connect).await {
            Ok(Ok((ws, _))) => ws,
            failed => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared.note_error(match failed {
                    Ok(Err(e)) => format!("connect: {e}"),
                    _ => "connect: timed out".into(),
                });
                break;
            }
        };
        if session == 0 {
            shared.connected.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(hello) = hello
            && ws.send(Message::text(hello)).await.is_err()
        {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let lifetime = churn.as_ref().map(|c| c.lifetime(index, session));
        let until =
            tokio::time::sleep(lifetime.unwrap_or(std::time::Duration::from_secs(86_400 * 365)));
        tokio::pin!(until);
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                () = shared.wake.notified() => None,
                () = &mut until, if lifetime.is_some() => {
                    // Gone without a close frame, as a phone going into a tunnel is.
                    drop(ws);
                    session += 1;
                    continue 'sessions;
                }
            };
            let msg = match msg {
                Some(Ok(msg)) => msg,
                ended => {
                    if !shared.stop.load(Ordering::Acquire) {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        shared.note_error(format!(
                            "a connection ended before the run did: {ended:?}"
                        ));
                    }
                    break 'sessions;
                }
            };
            if let Message::Close(frame) = &msg {
                if !shared.stop.load(Ordering::Acquire) {
                    shared.note_error(format!("closed by the server: {frame:?}"));
                }
                continue;
            }
            let Message::Text(text) = msg else { continue };
            tally.text(&text, wire_len(text.len()), &shared, index);
            if shared.stop.load(Ordering::Relaxed) {
                break 'sessions;
            }
        }
    }
    tally.finish(&shared, index);
}

/// The bytes of an unmasked server frame with this payload length.
pub fn wire_len(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        }
}

/// What one client has seen: its position per stream (for gaps and resume) and its share of
/// the counts and latency samples.
pub struct Tally {
    /// Per stream: key, last seq, and its name for a resume.
    pub last: Vec<(u64, u64, String)>,
    pub epoch: Option<String>,
    samples: Vec<u64>,
    batch: usize,
    messages: u64,
    bytes: u64,
    gaps: u64,
}

impl Tally {
    pub fn new(index: usize) -> Self {
        Self {
            last: Vec::with_capacity(4),
            epoch: None,
            samples: Vec::with_capacity(SAMPLE_BATCH),
            // Clients hand in samples at different counts so that they do not all do it on
            // one tick.
            batch: SAMPLE_BATCH / 2 + index * 7919 % SAMPLE_BATCH,
            messages: 0,
            bytes: 0,
            gaps: 0,
        }
    }

    /// One text message, `wire` bytes as it came over the socket.
    pub fn text(&mut self, text: &str, wire: usize, shared: &Shared, index: usize) {
        let now = now_us();
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            return;
        };
        if frame.kind == "subscribed" {
            self.epoch = frame.epoch.map(str::to_string);
            if text.contains("\"recovered\":false") {
                shared.resumes_lost.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if frame.kind != "update" && frame.kind != "snapshot" {
            return;
        }
        let k = key(frame.channel, frame.symbol);
        match self.last.iter_mut().find(|(key, _, _)| *key == k) {
            Some((_, prev, _)) => {
                // A snapshot of a stream already held comes only after a reconnection whose
                // resume failed: what it skips over was lost, as with a jump in updates.
                if frame.seq > *prev + 1 {
                    self.gaps += frame.seq - *prev - 1;
                }
                *prev = frame.seq.max(*prev);
            }
            None => self
                .last
                .push((k, frame.seq, format!("{}:{}", frame.channel, frame.symbol))),
        }
        if shared.measuring.load(Ordering::Relaxed) && frame.kind == "update" {
            self.messages += 1;
            self.bytes += wire as u64;
            self.samples.push((now - frame.ts).max(0) as u64);
            if self.samples.len() >= self.batch {
                shared.record(index, &mut self.samples);
            }
        }
    }

    pub fn finish(mut self, shared: &Shared, index: usize) {
        shared.record(index, &mut self.samples);
        shared.messages.fetch_add(self.messages, Ordering::Relaxed);
        shared.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        shared.gaps.fetch_add(self.gaps, Ordering::Relaxed);
    }
}
