//! Sources of market events: the deterministic simulator (default) and a recorded replay.

pub mod replay;
pub mod sim;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hub::Hub;
use crate::market::Micros;
use replay::{Replay, ReplayError};
use sim::{Sim, SymbolSpec};

/// Where events come from.
#[derive(Debug)]
pub enum Feed {
    Sim(Sim),
    Replay(Replay),
    /// `--sim-rate 0`: the symbols exist, nothing happens.
    Quiet(Vec<String>),
}

impl Feed {
    /// Builds the configured source; a replay file is read and checked completely here so that
    /// a bad file fails at start-up with its line number.
    pub fn from_config(config: &Config) -> Result<Self, ReplayError> {
        if let Some(path) = &config.replay {
            return Replay::open(path, config.replay_speed).map(Feed::Replay);
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
        }
    }

    pub fn epoch(&self) -> String {
        match self {
            Feed::Sim(sim) => sim.epoch(),
            Feed::Replay(r) => r.epoch(),
            Feed::Quiet(_) => "quiet".to_string(),
        }
    }

    /// Publishes events until `shutdown`. `on_ready` fires once the feed can serve clients.
    pub async fn run(self, hub: Arc<Hub>, shutdown: CancellationToken, on_ready: impl FnOnce()) {
        match self {
            Feed::Sim(sim) => run_sim(sim, hub, shutdown, on_ready).await,
            Feed::Replay(r) => {
                on_ready();
                if let Err(e) = r.run(&hub, &shutdown).await {
                    tracing::error!(error = %e, "replay stopped");
                }
            }
            Feed::Quiet(_) => on_ready(),
        }
    }
}

/// Steps the simulator in time with the wall clock. It starts a few seconds in the past so
/// that a task that has just started can resume the clients of one that stopped; it reports
/// ready once it has caught up, so no client ever receives the catch-up as a burst of old data.
async fn run_sim(sim: Sim, hub: Arc<Hub>, shutdown: CancellationToken, on_ready: impl FnOnce()) {
    let now_tick = sim.tick_at(now_micros());
    let prefill = (hub.history_limit() as u64).min(u64::from(sim.rate()) * PREFILL_SECONDS);
    let mut state = sim.state_before(now_tick.saturating_sub(prefill));
    let mut events = Vec::with_capacity(sim.specs().len() * 6);
    let mut touched = Vec::new();
    let mut on_ready = Some(on_ready);
    loop {
        let due = sim.tick_ts(state.next_tick());
        let wait = due - now_micros();
        if wait > 0
            && let Some(ready) = on_ready.take()
        {
            ready();
        }
        if wait > TIMER_SLACK_US {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_micros((wait - TIMER_SLACK_US) as u64)) => {}
            }
        }
        let wait = due - now_micros();
        if wait > 0 {
            // The runtime's timer fires on millisecond ticks, up to a millisecond late; the
            // last stretch is slept precisely so that an event leaves at its own time.
            std::thread::sleep(Duration::from_micros(wait as u64));
        } else if state.next_tick().is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
        state.step(&sim, &mut events);
        hub.publish_batch_parallel(events.drain(..), &mut touched)
            .await;
    }
}

/// How far back a starting simulator fills its history: the resume window of a fresh task.
const PREFILL_SECONDS: u64 = 5;

/// How much of a tick's wait is slept outside the runtime's timer.
const TIMER_SLACK_US: Micros = 1_500;

pub fn now_micros() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
    })
}
