//! The broker's key names. Every key carries the same hash tag (`{namespace}`), so in a
//! clustered cache (ElastiCache Serverless is one) they all live in one slot and one script may
//! touch them together.

use crate::market::Channel;

#[derive(Debug, Clone)]
pub struct Keys {
    tag: String,
}

impl Keys {
    /// Keys under `namespace` (letters, digits, `-`, `_`; checked by the config).
    pub fn new(namespace: &str) -> Self {
        Self {
            tag: format!("{{{namespace}}}"),
        }
    }

    /// The current epoch: absent after the broker lost its data, which makes a new one.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.tag)
    }

    /// Each stream's position (field: the stream's key).
    pub fn positions(&self) -> String {
        format!("{}:seq", self.tag)
    }

    /// The id of the last batch applied: a retried publish is not applied twice.
    pub fn applied(&self) -> String {
        format!("{}:applied", self.tag)
    }

    /// Book checkpoints (field: the stream's key; value: `seq json`), from which an edge that
    /// starts mid-stream rebuilds a book.
    pub fn checkpoints(&self) -> String {
        format!("{}:snap", self.tag)
    }

    /// The ingest writer's lease: its id, with a time to live.
    pub fn lease(&self) -> String {
        format!("{}:lease", self.tag)
    }

    /// The last writer to hold the lease (no time to live): one that finds its own lease
    /// expired but no other writer since goes on in the same epoch.
    pub fn writer(&self) -> String {
        format!("{}:writer", self.tag)
    }

    /// What the writer serves: `{"source", "symbols"}`.
    pub fn meta(&self) -> String {
        format!("{}:meta", self.tag)
    }

    /// Symbols whose source is down (field: symbol).
    pub fn stale(&self) -> String {
        format!("{}:stale", self.tag)
    }

    /// The notification channel: every applied batch, as the edges apply it.
    pub fn events(&self) -> String {
        format!("{}:events", self.tag)
    }

    /// A stream's entries: id `seq-0`, field `d` the recorded message.
    pub fn stream(&self, channel: Channel, symbol: &str) -> String {
        format!("{}:s:{channel}:{symbol}", self.tag)
    }
}

/// Whether `namespace` can name keys: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_namespace(namespace: &str) -> bool {
    (1..=64).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
