//! Sources of market events: the deterministic simulator (default), a recorded replay, and
//! live venues (Kraken, Binance, Coinbase) whose books are kept by [`crate::venue`].

pub mod binance;
mod candles;
mod clock;
pub mod coinbase;
pub mod kraken;
pub mod net;
pub mod replay;
pub mod sim;
mod streams;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::broker::Sink;
use crate::config::Config;
use crate::hub::Batch;
use crate::market::Micros;
use replay::Replay;
use sim::{Sim, SymbolSpec};

/// Where events come from.
#[derive(Debug)]
pub enum Feed {
    Sim(Sim),
    Replay(Replay),
    /// `--sim-rate 0`: the symbols exist, nothing happens.
    Quiet(Vec<String>),
    Kraken(kraken::Kraken),
    Binance(binance::Binance),
    Coinbase(coinbase::Coinbase),
}

impl Feed {
    /// Builds the configured source; a replay file is read and checked completely here so that
    /// a bad file fails at start-up with its line number, and so are a venue's TLS settings.
    pub fn from_config(config: &Config) -> Result<Self, crate::StartError> {
        use crate::config::Source;
        let tls = |urls: &[&str]| net::client_config(urls, config.tls_ca_file.as_deref());
        let (symbols, tls_ca) = (&config.symbols, &tls);
        match config.source {
            Source::Kraken => {
                let url = &config.kraken_url;
                return Ok(Feed::Kraken(kraken::Kraken::new(
                    url,
                    symbols,
                    tls_ca(&[url])?,
                )));
            }
            Source::Binance => {
                let (url, rest) = (&config.binance_url, &config.binance_rest_url);
                let tls = tls_ca(&[url, rest])?;
                return Ok(Feed::Binance(binance::Binance::new(
                    url, rest, symbols, tls,
                )));
            }
            Source::Coinbase => {
                let url = &config.coinbase_url;
                let tls = tls_ca(&[url])?;
                return Ok(Feed::Coinbase(coinbase::Coinbase::new(url, symbols, tls)));
            }
            Source::Sim | Source::Replay => {}
        }
        if let Some(path) = &config.replay {
            return Ok(Replay::open(path, config.replay_speed).map(Feed::Replay)?);
        }
        if config.sim_rate == 0 {
            return Ok(Feed::Quiet(config.sim_symbols.clone()));
        }
        let specs = config
            .sim_symbols
            .iter()
            .map(|s| SymbolSpec::for_name(s))
            .collect();
        Ok(Feed::Sim(Sim::new(config.sim_seed, config.sim_rate, specs)))
    }

    pub fn symbols(&self) -> Vec<String> {
        match self {
            Feed::Sim(sim) => sim.specs().iter().map(|s| s.name.clone()).collect(),
            Feed::Replay(r) => r.symbols().to_vec(),
            Feed::Quiet(symbols) => symbols.clone(),
            Feed::Kraken(k) => k.symbols(),
            Feed::Binance(b) => b.symbols(),
            Feed::Coinbase(c) => c.symbols(),
        }
    }

    pub fn epoch(&self) -> String {
        match self {
            Feed::Sim(sim) => sim.epoch(),
            Feed::Replay(r) => r.epoch(),
            Feed::Quiet(_) => "quiet".to_string(),
            Feed::Kraken(k) => k.epoch(),
            Feed::Binance(b) => b.epoch(),
            Feed::Coinbase(c) => c.epoch(),
        }
    }

    /// Publishes events until `shutdown`. `on_ready` fires once the feed can serve clients.
    pub async fn run(
        self,
        sink: Arc<dyn Sink>,
        shutdown: CancellationToken,
        on_ready: impl FnOnce(),
    ) {
        match self {
            Feed::Sim(sim) => run_sim(sim, sink, shutdown, on_ready).await,
            Feed::Replay(r) => {
                on_ready();
                if let Err(e) = r.run(&*sink, &shutdown).await {
                    tracing::error!(error = %e, "replay stopped");
                }
            }
            Feed::Quiet(_) => on_ready(),
            Feed::Kraken(k) => k.run(sink, shutdown, on_ready).await,
            Feed::Binance(b) => b.run(sink, shutdown, on_ready).await,
            Feed::Coinbase(c) => c.run(sink, shutdown, on_ready).await,
        }
    }
}

/// Steps the simulator in time with the wall clock. It starts a few seconds in the past so
/// that a task that has just started can resume the clients of one that stopped; it reports
/// ready once it has caught up, so no client ever receives the catch-up as a burst of old data.
///
/// The loop never blocks its worker: it waits for the [`clock`] thread, publishes at most
/// [`MAX_BATCH_TICKS`] ticks per batch and yields between batches, so no feed rate the flags
/// accept can starve connection tasks or the shutdown deadline.
async fn run_sim(
    sim: Sim,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) {
    let sim = Arc::new(sim);
    let mut clock = match clock::start(sim.clone()) {
        Ok(clock) => clock,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the feed clock thread; the feed stays quiet");
            return;
        }
    };
    let now_tick = *clock.borrow_and_update();
    let prefill = (sink.window() as u64).min(u64::from(sim.rate()) * PREFILL_SECONDS);
    let Some(mut state) = state_before(&sim, now_tick.saturating_sub(prefill)).await else {
        return;
    };
    let catch_up_limit = u64::from(sim.rate()) * MAX_CATCH_UP_SECONDS;
    let mut events = Vec::with_capacity(sim.specs().len() * 6);
    let mut batch = Batch::default();
    let mut on_ready = Some(on_ready);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let due = *clock.borrow_and_update();
        match next_step(due, state.next_tick(), catch_up_limit, on_ready.is_none()) {
            Step::Wait => {
                if let Some(ready) = on_ready.take() {
                    ready();
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = clock.changed() => if changed.is_err() { return },
                }
            }
            Step::Skip { ticks } => {
                // The wall clock stepped forward (or the process was frozen). Publishing
                // every missed tick would be a burst no client can take and no one can resume
                // from: skip to now. The hub sees the sequence jump and tells each subscriber
                // to resume, which gets it a fresh snapshot.
                tracing::warn!(
                    skipped_ticks = ticks,
                    skipped_s = ticks as f64 / f64::from(sim.rate()),
                    "the wall clock jumped forward; the feed skips to now"
                );
                let Some(skipped) = state_before(&sim, due + 1).await else {
                    return;
                };
                state = skipped;
            }
            Step::Publish { through } => {
                while state.next_tick() <= through {
                    state.step(&sim, &mut events);
                }
                sink.publish(&mut events, &mut batch);
                tokio::task::yield_now().await;
            }
        }
    }
}

/// What the feed loop does next.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Caught up: wait for the clock.
    Wait,
    /// Publish the ticks from the next one through `through`, then yield.
    Publish { through: u64 },
    /// Too far behind to catch up: jump to now, skipping `ticks`.
    Skip { ticks: u64 },
}

/// Given the latest due tick and the next tick to publish. Before the feed is live (`live`
/// false) it always catches up: that is the start-up prefill, which no client sees.
fn next_step(due: u64, next: u64, catch_up_limit: u64, live: bool) -> Step {
    if due < next {
        return Step::Wait;
    }
    let behind = due - next + 1;
    if live && behind > catch_up_limit {
        return Step::Skip { ticks: behind };
    }
    Step::Publish {
        through: due.min(next + MAX_BATCH_TICKS - 1),
    }
}

/// The simulator's state before tick `k`, computed off the runtime: it walks up to a minute
/// of ticks (60,000 at the highest rate). `None` only if that thread panicked.
async fn state_before(sim: &Arc<Sim>, k: u64) -> Option<sim::SimState> {
    let sim = sim.clone();
    match tokio::task::spawn_blocking(move || sim.state_before(k)).await {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::error!(error = %e, "the simulator failed; the feed stays quiet");
            None
        }
    }
}

/// How far back a starting simulator fills its history: the resume window of a fresh task.
const PREFILL_SECONDS: u64 = 5;

/// Ticks published in one batch while catching up: with ten symbols about 600 events, under a
/// third of a client's default queue.
const MAX_BATCH_TICKS: u64 = 16;

/// How far behind the feed catches up tick by tick; further than this (a step of the wall
/// clock) it skips to now.
const MAX_CATCH_UP_SECONDS: u64 = 5;

pub fn now_micros() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_waits_publishes_in_bounded_batches_and_skips_a_clock_step() {
        let limit = 5_000;
        assert_eq!(next_step(99, 100, limit, true), Step::Wait);
        assert_eq!(
            next_step(100, 100, limit, true),
            Step::Publish { through: 100 }
        );
        assert_eq!(
            next_step(4_000, 100, limit, true),
            Step::Publish {
                through: 100 + MAX_BATCH_TICKS - 1
            }
        );
        assert_eq!(
            next_step(100 + limit - 1, 100, limit, true),
            Step::Publish {
                through: 100 + MAX_BATCH_TICKS - 1
            },
            "within the limit: caught up tick by tick"
        );
        assert_eq!(
            next_step(100 + limit, 100, limit, true),
            Step::Skip { ticks: limit + 1 }
        );
        assert_eq!(
            next_step(100 + 10 * limit, 100, limit, false),
            Step::Publish {
                through: 100 + MAX_BATCH_TICKS - 1
            },
            "the start-up prefill is always published"
        );
    }
}
