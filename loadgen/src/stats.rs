//! What all clients measure together. Counters are atomics; latency samples are buffered per
//! client and merged into one histogram in batches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Shared {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Connections that ended before the run did.
    pub dropped: AtomicU64,
    /// With churn: reconnections made, and resumes the server could not honour.
    pub reconnects: AtomicU64,
    pub resumes_lost: AtomicU64,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Missing updates: the sum of every jump in `seq` beyond one.
    pub gaps: AtomicU64,
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    pub wake: Notify,
    /// Event-to-receive latency in microseconds, sharded so that clients rarely wait for
    /// each other when they hand in samples.
    pub latency: Vec<Mutex<Histogram<u64>>>,
    pub first_error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            resumes_lost: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            // 1 µs .. 100 s at 3 significant digits.
            latency: (0..SHARDS)
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, 100_000_000, 3)
                            .expect("valid histogram bounds"),
                    )
                })
                .collect(),
            first_error: Mutex::new(None),
        }
    }
}

impl Shared {
    pub fn record(&self, shard: usize, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.latency[shard % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for s in samples.drain(..) {
            h.saturating_record(s.max(1));
        }
    }

    pub fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(e);
    }
}

impl Shared {
    /// All shards merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all =
            Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds");
        for shard in &self.latency {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
        }
        all
    }
}
