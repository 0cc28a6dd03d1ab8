//! `tickstream-load`: opens many WebSocket clients against a tickstream server, measures what
//! they receive, and samples the server's CPU time and memory from `/proc`.

mod client;
mod deflate_client;
mod kraken_double;
mod proc_stat;
mod report;
mod stats;
mod storm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use stats::Shared;

#[derive(Debug, Parser)]
#[command(name = "tickstream-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open connections, measure for a while, print a report and a JSON summary line.
    Run(RunArgs),
    /// A reconnect storm: every client connects at once, then drops and reconnects at once.
    Storm(storm::StormArgs),
    /// A Kraken WebSocket v2 book feed on loopback, for `--source kraken` benchmarks.
    KrakenDouble(kraken_double::Args),
    /// Poll /readyz until it answers 200; print the milliseconds since --since-ns (or since this started).
    WaitReady {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Wall-clock start, nanoseconds since the Unix epoch (`date +%s%N` before the server started).
        #[arg(long)]
        since_ns: Option<u128>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        timeout: Duration,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Concurrent connections to open.
    #[arg(long, short = 'c', default_value_t = 1000)]
    connections: usize,
    /// New connections per second while ramping up.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    /// Measurement time after every connection is open.
    #[arg(long, short = 'd', value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Settling time between the last connect and the measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Symbols, spread round-robin: connection i subscribes to symbols[i % n] ...
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "AAPL,MSFT,NVDA,AMZN,GOOGL,TSLA,SPY,BTC-USD,ETH-USD,SOL-USD"
    )]
    symbols: Vec<String>,
    /// ... this many of them per connection.
    #[arg(long, default_value_t = 1)]
    symbols_per_connection: usize,
    #[arg(long, default_value = "ticker")]
    channels: String,
    /// The server's process id, to sample its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Messages per second the server offers in total, to report the share delivered.
    #[arg(long)]
    offered_rate: Option<f64>,
    /// Churn: each connection drops its socket after a random lifetime (half to one and a half
    /// times this) and reconnects, resuming its streams from the last seq it received.
    #[arg(long, value_parser = humantime::parse_duration)]
    churn: Option<Duration>,
    /// Print the server's RSS and open files, and the churn so far, every this long while
    /// measuring (one JSON line each, on stderr).
    #[arg(long, value_parser = humantime::parse_duration)]
    sample_every: Option<Duration>,
    /// Ask for permessage-deflate and inflate what arrives (a connection the server does not
    /// compress counts as failed). Not with --churn.
    #[arg(long, conflicts_with = "churn")]
    compression: bool,
    /// A label for the result line.
    #[arg(long, default_value = "run")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Storm(args) => storm::run(args).await,
        Command::KrakenDouble(args) => kraken_double::run(args).await,
        Command::WaitReady {
            addr,
            since_ns,
            timeout,
        } => wait_ready(addr, since_ns, timeout).await,
    }
}

/// Raises the open-files limit as far as the hard limit allows, and fails if `connections`
/// sockets (and a few more files) would not fit.
pub fn raise_open_files(connections: usize) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-files limit")?;
    if (limit as usize) < connections + 64 {
        bail!("the open-files limit is {limit}; {connections} connections need more (ulimit -Hn)");
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.symbols.is_empty() || args.connect_rate == 0 {
        bail!("--connections, --symbols and --connect-rate must be non-empty / positive");
    }
    raise_open_files(args.connections)?;
    let server = args.server_pid.map(proc_stat::Process::new);
    let rss_before = server
        .as_ref()
        .map(proc_stat::Process::rss_kib)
        .transpose()?;

    let shared = Arc::new(Shared::default());
    let mut tasks = Vec::with_capacity(args.connections);
    let ramp = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate));
    let mut next = tokio::time::Instant::now();
    for i in 0..args.connections {
        let url = client::url_for(&args, i);
        let churn = args.churn.map(|mean| client::Churn {
            mean,
            base_url: args.url.clone(),
            symbols: client::symbols_for(&args, i),
            channels: args.channels.split(',').map(str::to_string).collect(),
        });
        tasks.push(if args.compression {
            tokio::spawn(deflate_client::connection(i, url, shared.clone()))
        } else {
            tokio::spawn(client::connection(i, url, shared.clone(), churn))
        });
        next += gap;
        tokio::time::sleep_until(next).await;
    }
    let connect_bound = Duration::from_secs(30);
    while shared.connected.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < args.connections as u64
    {
        if ramp.elapsed() > gap * args.connections as u32 + connect_bound {
            eprintln!("connect phase timed out");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp_s = ramp.elapsed().as_secs_f64();
    tokio::time::sleep(args.warmup).await;

    let rss_connected = server
        .as_ref()
        .map(proc_stat::Process::rss_kib)
        .transpose()?;
    let cpu_start = server.as_ref().map(proc_stat::Process::cpu).transpose()?;
    let host_before = proc_stat::HostTicks::read()?;
    let this = proc_stat::Process::new(std::process::id());
    let own_before = this.cpu()?;
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Release);
    match (args.sample_every, args.server_pid) {
        (Some(every), Some(pid)) => {
            let end = tokio::time::Instant::now() + args.duration;
            while tokio::time::Instant::now() < end {
                tokio::time::sleep(every.min(end - tokio::time::Instant::now())).await;
                let p = proc_stat::Process::new(pid);
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "t_s": started.elapsed().as_secs(),
                        "server_rss_kib": p.rss_kib().ok(),
                        "server_open_files": p.open_files().ok(),
                        "reconnects": shared.reconnects.load(Ordering::Relaxed),
                        "resumes_lost": shared.resumes_lost.load(Ordering::Relaxed),
                        "dropped": shared.dropped.load(Ordering::Relaxed),
                        "failed": shared.failed.load(Ordering::Relaxed),
                    })
                );
            }
        }
        _ => tokio::time::sleep(args.duration).await,
    }
    shared.measuring.store(false, Ordering::Release);
    let elapsed = started.elapsed().as_secs_f64();
    let steal_pct = host_before.steal_pct_until(proc_stat::HostTicks::read()?);
    let own_cpu = this.cpu()? - own_before;
    let cpu_end = server.as_ref().map(proc_stat::Process::cpu).transpose()?;
    let rss_end = server
        .as_ref()
        .map(proc_stat::Process::rss_kib)
        .transpose()?;

    shared.stop.store(true, Ordering::Release);
    shared.wake.notify_waiters();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let server_figures = match (cpu_start, cpu_end, rss_before, rss_connected, rss_end) {
        (Some(c0), Some(c1), Some(r0), Some(r1), Some(r2)) => Some(report::ServerFigures {
            cpu: c1 - c0,
            rss_before_kib: r0,
            rss_connected_kib: r1,
            rss_end_kib: r2,
        }),
        _ => None,
    };
    let report = report::Report::new(
        &args,
        &shared,
        report::Window {
            elapsed,
            ramp_s,
            steal_pct,
            own_cpu,
        },
        server_figures,
    );
    report.print();
    Ok(())
}

async fn wait_ready(
    addr: SocketAddr,
    since_ns: Option<u128>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start_ns = since_ns.unwrap_or_else(proc_stat::now_ns);
    let deadline = Instant::now() + timeout;
    loop {
        if proc_stat::ready(addr).await {
            let ms = (proc_stat::now_ns().saturating_sub(start_ns)) as f64 / 1e6;
            println!("{{\"ready_ms\":{ms:.1}}}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}
