//! The simulator's metronome: a thread of its own that wakes at each tick's due time and tells
//! the feed task which tick is due.
//!
//! Why a thread: the runtime's timer fires on millisecond ticks, up to a millisecond late, and a
//! tick at 1000 per second is shorter than that. Sleeping the last stretch precisely on a runtime
//! worker (what the feed once did) starves every task queued on that worker for as long as the
//! feed runs faster than the timer: clients went unserved for seconds and SIGTERM overran its
//! deadline. A plain thread may sleep precisely; the feed task only ever awaits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::now_micros;
use super::sim::Sim;
use crate::market::Micros;

/// The longest single sleep: the thread notices that the feed has gone (shutdown) and a
/// wall clock stepped backwards within this.
const MAX_NAP: Duration = Duration::from_millis(100);

/// Starts the metronome. The receiver holds the latest tick whose time has come; it changes
/// at each tick's time. Dropping the receiver stops the thread within [`MAX_NAP`].
pub fn start(sim: Arc<Sim>) -> std::io::Result<watch::Receiver<u64>> {
    let now = sim.tick_at(now_micros());
    let (tx, rx) = watch::channel(now);
    std::thread::Builder::new()
        .name("feed-clock".into())
        .spawn(move || beat(&sim, now, &tx))?;
    Ok(rx)
}

fn beat(sim: &Sim, mut announced: u64, tx: &watch::Sender<u64>) {
    while !tx.is_closed() {
        let next = announced.saturating_add(1);
        let wait: Micros = sim.tick_ts(next) - now_micros();
        if wait > 0 {
            std::thread::sleep(Duration::from_micros(wait as u64).min(MAX_NAP));
            continue;
        }
        // Everything due up to now, in one announcement: a late wake-up or a clock step
        // forward is the feed's to pace, not a burst of notifications.
        announced = sim.tick_at(now_micros()).max(next);
        if tx.send(announced).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::sim::SymbolSpec;

    #[tokio::test]
    async fn announces_every_tick_in_order_and_never_early() {
        let sim = Arc::new(Sim::new(1, 1000, vec![SymbolSpec::for_name("AAA")]));
        let mut rx = start(sim.clone()).expect("thread");
        let first = *rx.borrow_and_update();
        let mut last = first;
        for _ in 0..20 {
            tokio::time::timeout(Duration::from_secs(5), rx.changed())
                .await
                .expect("a tick within 5 s")
                .expect("the clock runs");
            let due = *rx.borrow_and_update();
            assert!(due > last, "ticks only move forward: {last} then {due}");
            assert!(
                sim.tick_ts(due) <= now_micros(),
                "announced no earlier than its time"
            );
            last = due;
        }
        assert!(last >= first + 20);
    }
}
