//! The broker's key names. Every key carries the same hash tag (`{namespace}`), so in a
//! clustered cache (ElastiCache Serverless is one) they all live in one slot and one script may
//! touch them together. The fixed names are made once; only a stream's name is per call.

use crate::market::Channel;

#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
    /// The current epoch: absent after the broker lost its data, which makes a new one.
    epoch: String,
    /// Each stream's position (field: the stream's key).
    positions: String,
    /// The id of the last batch applied: a retried publish is not applied twice.
    applied: String,
    /// Book checkpoints (field: the stream's key; value: `seq json`, the book before entry
    /// `seq`), from which an edge that starts mid-stream rebuilds a book.
    checkpoints: String,
    /// The ingest writer's lease: its id, with a time to live.
    lease: String,
    /// The last writer to hold the lease (no time to live): one that finds its own lease
    /// expired but no other writer since goes on in the same epoch.
    writer: String,
    /// What the writer serves: `{"source", "symbols"}`.
    meta: String,
    /// Symbols whose source is down (field: symbol).
    stale: String,
    /// The notification channel: every applied batch, as the edges apply it.
    events: String,
}

impl Keys {
    /// Keys under `namespace` (letters, digits, `-`, `_`; checked by the config).
    pub fn new(namespace: &str) -> Self {
        let tag = format!("{{{namespace}}}");
        let key = |name: &str| format!("{tag}:{name}");
        Self {
            epoch: key("epoch"),
            positions: key("seq"),
            applied: key("applied"),
            checkpoints: key("snap"),
            lease: key("lease"),
            writer: key("writer"),
            meta: key("meta"),
            stale: key("stale"),
            events: key("events"),
            tag,
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn positions(&self) -> &str {
        &self.positions
    }

    pub fn applied(&self) -> &str {
        &self.applied
    }

    pub fn checkpoints(&self) -> &str {
        &self.checkpoints
    }

    pub fn lease(&self) -> &str {
        &self.lease
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    pub fn meta(&self) -> &str {
        &self.meta
    }

    pub fn stale(&self) -> &str {
        &self.stale
    }

    pub fn events(&self) -> &str {
        &self.events
    }

    /// A stream's entries: id `seq-0`, field `d` the recorded message.
    pub fn stream(&self, channel: Channel, symbol: &str) -> String {
        format!("{}:s:{channel}:{symbol}", self.tag)
    }

    /// Adds the keys both scripts begin with, in their order: lease, epoch, positions,
    /// applied, checkpoints.
    pub fn state(&self, call: &mut redis::ScriptInvocation<'_>) {
        call.key(&self.lease)
            .key(&self.epoch)
            .key(&self.positions)
            .key(&self.applied)
            .key(&self.checkpoints);
    }
}

/// Whether `namespace` can name keys: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
