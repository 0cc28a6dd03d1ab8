//! `tickstream-load storm`: a reconnect storm. Every client connects at once, subscribes
//! through the URL and waits for its first data message (the snapshot); then all of them drop
//! their sockets at the same moment and connect again, several rounds. Each round reports the
//! time until the last client was served and the spread of the clients' times.
//!
//! Aimed at one stream by default, the worst case for the hub: every subscribe and every
//! unsubscribe lands on the same subscriber list.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::proc_stat;

#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// The server's WebSocket endpoint, with the subscription in its query.
    #[arg(
        long,
        default_value = "ws://127.0.0.1:8080/ws?symbols=AAPL&channels=ticker"
    )]
    url: String,
    /// Clients in the storm.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    connections: usize,
    /// Rounds: the first connects everyone, each further one drops everyone and reconnects.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Handshakes in flight at once. Past the server's listen backlog a SYN is dropped and
    /// retried a second later, which would measure the kernel's retry timer, not the server.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// The server's process id, to report its CPU time per round.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "storm")]
    label: String,
}

/// Bound on one client's connect-and-first-message in a round.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(args: StormArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.rounds == 0 || args.in_flight == 0 {
        bail!("--connections, --rounds and --in-flight must be positive");
    }
    crate::raise_open_files(args.connections)?;
    let server = args.server_pid.map(proc_stat::Process::new);
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let mut held = Vec::new();
    for round in 1..=args.rounds {
        // Everyone lets go at once: the server sees the storm of closes, then of connects.
        drop(std::mem::take(&mut held));
        let cpu_before = server.as_ref().map(proc_stat::Process::cpu).transpose()?;
        let gate = Arc::new(Semaphore::new(args.in_flight));
        let start = Arc::new(Barrier::new(args.connections + 1));
        let clients: Vec<_> = (0..args.connections)
            .map(|_| {
                let (url, gate, start) = (args.url.clone(), gate.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let t0 = Instant::now();
                    let served = tokio::time::timeout(CLIENT_TIMEOUT, async {
                        let permit = gate.acquire().await.ok()?;
                        let (mut ws, _) =
                            tokio_tungstenite::connect_async_with_config(&url, Some(config), false)
                                .await
                                .ok()?;
                        drop(permit);
                        while let Some(Ok(msg)) = ws.next().await {
                            if let Message::Text(t) = &msg
                                && (t.contains("\"type\":\"snapshot\"")
                                    || t.contains("\"type\":\"update\""))
                            {
                                return Some(ws);
                            }
                        }
                        None
                    })
                    .await
                    .ok()
                    .flatten();
                    served.map(|ws| (t0.elapsed(), ws))
                })
            })
            .collect();
        start.wait().await;
        let t0 = Instant::now();
        let mut times =
            Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).context("histogram")?;
        let mut failed = 0usize;
        for c in clients {
            match c.await {
                Ok(Some((took, ws))) => {
                    times.saturating_record(took.as_micros() as u64);
                    held.push(ws);
                }
                _ => failed += 1,
            }
        }
        let all_served = t0.elapsed();
        let cpu = match (cpu_before, server.as_ref().map(proc_stat::Process::cpu)) {
            (Some(before), Some(after)) => Some(after? - before),
            _ => None,
        };
        let ms = |q: f64| times.value_at_quantile(q) as f64 / 1e3;
        let line = json!({
            "label": format!("{}-{round}", args.label),
            "scenario": "storm",
            "round": round,
            "kind": if round == 1 { "connect" } else { "reconnect" },
            "connections": args.connections,
            "in_flight": args.in_flight,
            "served": times.len(),
            "failed": failed,
            "all_served_s": (all_served.as_secs_f64() * 1e3).round() / 1e3,
            "first_data_p50_ms": ms(0.5),
            "first_data_p99_ms": ms(0.99),
            "first_data_max_ms": times.max() as f64 / 1e3,
            "server_cpu_s": cpu.map(|c| (c.total() * 1e3).round() / 1e3),
        });
        println!("{line}");
    }
    Ok(())
}
