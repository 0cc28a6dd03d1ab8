//! What all clients measure together. Counters are atomics; latency samples are buffered per
//! client and merged into one histogram in batches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Shared {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    /// Connections that ended before the run did.
    pub dropped: AtomicU64,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// Missing updates: the sum of every jump in `seq` beyond one.
    pub gaps: AtomicU64,
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    pub wake: Notify,
    /// Event-to-receive latency in microseconds.
    pub latency: Mutex<Histogram<u64>>,
    pub first_error: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: Notify::new(),
            // 1 µs .. 100 s at 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
            ),
            first_error: Mutex::new(None),
        }
    }
}

impl Shared {
    pub fn record(&self, samples: &mut Vec<u64>) {
        if samples.is_empty() {
            return;
        }
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        for s in samples.drain(..) {
            h.saturating_record(s.max(1));
        }
    }

    pub fn note_error(&self, e: String) {
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(e);
    }
}
