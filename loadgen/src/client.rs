//! One client: connect, subscribe through the URL, read until told to stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
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
}

pub fn url_for(args: &RunArgs, i: usize) -> String {
    let n = args.symbols.len();
    let k = args.symbols_per_connection.clamp(1, n);
    let symbols: Vec<&str> = (0..k).map(|j| args.symbols[(i + j) % n].as_str()).collect();
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

pub async fn connection(index: usize, url: String, shared: Arc<Shared>) {
    // Clients hand in samples at different counts so that they do not all do it on one tick.
    let batch = SAMPLE_BATCH / 2 + index * 7919 % SAMPLE_BATCH;
    // Small buffers: thousands of clients share this process with the server under test.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(&url, Some(config), false);
    let mut ws = match tokio::time::timeout(std::time::Duration::from_secs(30), connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.note_error(format!("connect: {e}"));
            return;
        }
        Err(_) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.note_error("connect: timed out".into());
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut last: Vec<(u64, u64)> = Vec::with_capacity(4);
    let mut samples = Vec::with_capacity(SAMPLE_BATCH);
    let (mut messages, mut bytes, mut gaps) = (0u64, 0u64, 0u64);
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = shared.wake.notified() => None,
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            ended => {
                if !shared.stop.load(Ordering::Acquire) {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                    shared.note_error(format!("a connection ended before the run did: {ended:?}"));
                }
                break;
            }
        };
        if let Message::Close(frame) = &msg {
            if !shared.stop.load(Ordering::Acquire) {
                shared.note_error(format!("closed by the server: {frame:?}"));
            }
            continue;
        }
        let Message::Text(text) = msg else { continue };
        let now = now_us();
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        if frame.kind != "update" && frame.kind != "snapshot" {
            continue;
        }
        let k = key(frame.channel, frame.symbol);
        match last.iter_mut().find(|(key, _)| *key == k) {
            Some((_, prev)) => {
                if frame.kind == "update" && frame.seq > *prev + 1 {
                    gaps += frame.seq - *prev - 1;
                }
                *prev = frame.seq.max(*prev);
            }
            None => last.push((k, frame.seq)),
        }
        if shared.measuring.load(Ordering::Relaxed) && frame.kind == "update" {
            messages += 1;
            bytes += text.len() as u64;
            samples.push((now - frame.ts).max(0) as u64);
            if samples.len() >= batch {
                shared.record(index, &mut samples);
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    shared.record(index, &mut samples);
    shared.messages.fetch_add(messages, Ordering::Relaxed);
    shared.bytes.fetch_add(bytes, Ordering::Relaxed);
    shared.gaps.fetch_add(gaps, Ordering::Relaxed);
}
