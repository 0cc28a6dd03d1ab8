//! Book streams as a client holds them: every message applied and its checksum and `seq`
//! checked, resets and `status` messages recorded, per stream.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tickstream::book::{BookData, View};

use super::{Ws, key, recv};

/// One stream's book as a client holds it, checked at every message.
#[derive(Debug, Default)]
pub struct Client {
    view: View,
    seq: Option<u64>,
    resets: usize,
}

#[derive(Default)]
pub struct Clients(HashMap<String, Client>, HashMap<String, Vec<String>>);

impl Clients {
    /// The `status` messages received for a stream, in order.
    pub fn statuses(&self, key: &str) -> Vec<String> {
        self.1.get(key).cloned().unwrap_or_default()
    }

    pub fn apply(&mut self, msg: &Value) {
        let data: BookData = serde_json::from_value(msg["data"].clone()).expect("book data");
        let seq = msg["seq"].as_u64().expect("seq");
        let c = self.0.entry(key(msg)).or_default();
        let snapshot = msg["type"] == "snapshot";
        if let Some(last) = c.seq {
            assert_eq!(seq, last + 1, "contiguous seq: {msg}");
            if snapshot {
                assert!(data.reset, "a snapshot inside a stream is a reset: {msg}");
                c.resets += 1;
            }
        }
        assert!(c.view.apply(&data, snapshot), "checksum: {msg}");
        c.seq = Some(seq);
    }

    pub fn view(&self, key: &str) -> View {
        self.0.get(key).map(|c| c.view.clone()).unwrap_or_default()
    }

    pub fn resets(&self, key: &str) -> usize {
        self.0.get(key).map_or(0, |c| c.resets)
    }
}

/// Reads book messages until `done` holds (every message applied and checked on the way).
pub async fn until(
    ws: &mut Ws,
    clients: &mut Clients,
    what: &str,
    done: impl Fn(&Clients) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(clients) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let msg = tokio::time::timeout(left, recv(ws))
            .await
            .unwrap_or_else(|_| panic!("{what}: not within 10 s"));
        match msg["type"].as_str() {
            Some("update" | "snapshot") => clients.apply(&msg),
            Some("status") => clients
                .1
                .entry(key(&msg))
                .or_default()
                .push(msg["status"].as_str().unwrap_or("").to_string()),
            _ => {}
        }
    }
}
