//! A small tickstream client: subscribes, prints updates, and on disconnect reconnects with
//! capped exponential backoff and full jitter, resuming from the last seq of every stream.
//!
//! ```text
//! cargo run --example client -- ws://127.0.0.1:8080/ws AAPL,BTC-USD ticker,trades
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let symbols: Vec<String> = args
        .next()
        .unwrap_or_else(|| "AAPL".into())
        .split(',')
        .map(String::from)
        .collect();
    let channels: Vec<String> = args
        .next()
        .unwrap_or_else(|| "ticker".into())
        .split(',')
        .map(String::from)
        .collect();

    let mut positions: BTreeMap<String, u64> = BTreeMap::new();
    let mut epoch: Option<String> = None;
    let mut failures = 0u32;
    loop {
        match session(&url, &symbols, &channels, &mut positions, &mut epoch).await {
            Ok(()) => failures = 0,
            Err(e) => {
                eprintln!("disconnected: {e}");
                failures += 1;
            }
        }
        // Full jitter: a random wait between 0 and the capped exponential step.
        let cap =
            Duration::from_millis(250 * 2u64.pow(failures.min(7))).min(Duration::from_secs(30));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let wait = cap.mul_f64(f64::from(nanos % 1000) / 1000.0);
        eprintln!("reconnecting in {wait:?}");
        tokio::time::sleep(wait).await;
    }
}

async fn session(
    url: &str,
    symbols: &[String],
    channels: &[String],
    positions: &mut BTreeMap<String, u64>,
    epoch: &mut Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let resume: BTreeMap<_, _> = positions.clone();
    let mut sub = json!({"op": "subscribe", "id": 1, "symbols": symbols, "channels": channels, "resume": resume});
    if let Some(e) = epoch {
        sub["epoch"] = json!(e);
    }
    ws.send(Message::text(sub.to_string())).await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("update" | "snapshot") => {
                let key = format!(
                    "{}:{}",
                    v["channel"].as_str().unwrap_or(""),
                    v["symbol"].as_str().unwrap_or("")
                );
                let seq = v["seq"].as_u64().unwrap_or(0);
                if let Some(prev) = positions.insert(key.clone(), seq)
                    && v["type"] == "update"
                    && seq != prev + 1
                {
                    eprintln!("gap on {key}: {prev} -> {seq}");
                }
                println!("{key} #{seq} {}", v["data"]);
            }
            Some("subscribed") => {
                *epoch = v["epoch"].as_str().map(String::from);
                eprintln!("subscribed: {}", v["streams"]);
            }
            Some("reconnect") => eprintln!("server asks to reconnect: {}", v["reason"]),
            Some("heartbeat") => {}
            _ => eprintln!("{v}"),
        }
    }
    Ok(())
}
