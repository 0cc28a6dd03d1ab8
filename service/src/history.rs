//! Closed candle history for the REST API, computed from the simulator (any depth, identical
//! to what the stream closed), so a fresh task or a Lambda function has the same history as
//! one that ran all day.
//!
//! Computing it walks every trade in the range: at `--sim-rate 1000` a day of 1 m candles is
//! tens of millions of trades. So it never runs on a runtime worker (it would stall every
//! connection queued there), identical concurrent requests share one computation, and as time
//! moves on only the newly closed intervals are computed and appended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::feed::sim::Sim;
use crate::market::{Candle, Interval, Micros};

/// One entry per symbol and interval, each holding at most `depth` candles: memory is bounded
/// by symbols x 2 x `--candle-history`, and computations in flight by symbols x 2.
#[derive(Debug)]
pub struct HistoryCache {
    depth: usize,
    /// Computations started, for tests and the single-flight promise.
    computations: std::sync::atomic::AtomicU64,
    entries: Mutex<HashMap<(usize, Interval), Slot>>,
}

/// One symbol and interval's candles; the async lock is what makes a computation single-flight.
type Slot = Arc<tokio::sync::Mutex<Option<Computed>>>;

/// The closed candles (oldest first) ending at `end`, the start of the interval in progress.
#[derive(Debug)]
struct Computed {
    end: Micros,
    candles: Arc<Vec<Candle>>,
}

impl HistoryCache {
    /// Keeps up to `depth` closed candles per symbol and interval.
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            computations: Default::default(),
            entries: Mutex::default(),
        }
    }

    /// The last `count` (at most the depth) closed candles of `symbol` before `end`. `None`
    /// if the computation failed (its thread panicked).
    pub async fn get(
        &self,
        sim: &Arc<Sim>,
        symbol: usize,
        interval: Interval,
        end: Micros,
        count: usize,
    ) -> Option<Vec<Candle>> {
        let slot = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((symbol, interval))
            .or_default()
            .clone();
        // Held across the computation: a second identical request waits for the first's
        // result instead of computing it again.
        let mut slot = slot.lock().await;
        let candles = match slot.as_ref() {
            Some(c) if c.end == end => c.candles.clone(),
            cached => {
                let len = interval.micros();
                let depth = self.depth;
                let (since, kept) = match cached {
                    Some(c) if c.end < end && (end - c.end) / len < depth as Micros => {
                        (c.end, Some(c.candles.clone()))
                    }
                    _ => (end - len * depth as Micros, None),
                };
                let sim = sim.clone();
                self.computations
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let candles = tokio::task::spawn_blocking(move || {
                    let new = ((end - since) / len) as usize;
                    let fresh = sim.history(symbol, interval, end, new);
                    let Some(kept) = kept else {
                        return fresh;
                    };
                    let keep = depth.saturating_sub(fresh.len()).min(kept.len());
                    let mut out = Vec::with_capacity(keep + fresh.len());
                    out.extend_from_slice(&kept[kept.len() - keep..]);
                    out.extend(fresh);
                    out
                })
                .await
                .ok()?;
                let candles = Arc::new(candles);
                *slot = Some(Computed {
                    end,
                    candles: candles.clone(),
                });
                candles
            }
        };
        drop(slot);
        let skip = candles.len().saturating_sub(count);
        Some(candles[skip..].to_vec())
    }

    /// How many computations have started since this cache was made.
    pub fn computations(&self) -> u64 {
        self.computations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::sim::SymbolSpec;

    #[tokio::test]
    async fn appending_new_intervals_gives_what_computing_afresh_gives() {
        let sim = Arc::new(Sim::new(7, 20, vec![SymbolSpec::for_name("AAA")]));
        let len = Interval::S1.micros();
        let end = 1_800_000_000 * 1_000_000;
        let cache = HistoryCache::new(50);
        let first = cache
            .get(&sim, 0, Interval::S1, end, 50)
            .await
            .expect("computed");
        assert_eq!(first, sim.history(0, Interval::S1, end, 50));
        for step in [1, 7, 49, 50, 51, 400] {
            let later = end + step * len;
            let got = cache
                .get(&sim, 0, Interval::S1, later, 50)
                .await
                .expect("computed");
            assert_eq!(got.len(), 50);
            assert_eq!(
                got,
                sim.history(0, Interval::S1, later, 50),
                "{step} intervals on"
            );
            let shorter = cache
                .get(&sim, 0, Interval::S1, later, 3)
                .await
                .expect("cached");
            assert_eq!(shorter, got[47..]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_concurrent_requests_share_one_computation() {
        let sim = Arc::new(Sim::new(7, 100, vec![SymbolSpec::for_name("AAA")]));
        let cache = Arc::new(HistoryCache::new(60));
        let end = 1_800_000_000 * 1_000_000;
        let requests: Vec<_> = (0..16)
            .map(|_| {
                let (cache, sim) = (cache.clone(), sim.clone());
                tokio::spawn(async move { cache.get(&sim, 0, Interval::M1, end, 60).await })
            })
            .collect();
        let mut answers = Vec::new();
        for r in requests {
            answers.push(r.await.expect("task").expect("computed"));
        }
        assert!(answers.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(answers[0].len(), 60);
        assert_eq!(cache.computations(), 1);
    }
}
