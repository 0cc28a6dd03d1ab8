//! The result of a run, for people and as one JSON line for scripts.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::RunArgs;
use crate::proc_stat::CpuTime;
use crate::stats::Shared;

#[derive(Debug, Clone, Copy)]
pub struct ServerFigures {
    pub cpu: CpuTime,
    pub rss_before_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_end_kib: u64,
}

/// What was measured of the run itself, beside the server.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Seconds measured.
    pub elapsed: f64,
    /// Seconds the connections took to open.
    pub ramp_s: f64,
    pub steal_pct: f64,
    /// The load generator's own CPU time while measuring.
    pub own_cpu: CpuTime,
}

#[derive(Debug)]
pub struct Report {
    json: serde_json::Value,
}

impl Report {
    pub fn new(
        args: &RunArgs,
        shared: &Shared,
        window: Window,
        server: Option<ServerFigures>,
    ) -> Self {
        let Window {
            elapsed,
            ramp_s,
            steal_pct,
            own_cpu,
        } = window;
        let messages = shared.messages.load(Ordering::Relaxed);
        let rate = messages as f64 / elapsed;
        let h = shared.latency();
        let connected = shared.connected.load(Ordering::Relaxed);
        let mut json = json!({
            "label": args.label,
            "connections": args.connections,
            "connected": connected,
            "failed": shared.failed.load(Ordering::Relaxed),
            "dropped": shared.dropped.load(Ordering::Relaxed),
            "ramp_s": round(ramp_s, 2),
            "duration_s": round(elapsed, 2),
            "messages": messages,
            "msgs_per_s": rate.round(),
            "bytes_per_s": (shared.bytes.load(Ordering::Relaxed) as f64 / elapsed).round(),
            "gaps": shared.gaps.load(Ordering::Relaxed),
            "reconnects": shared.reconnects.load(Ordering::Relaxed),
            "resumes_lost": shared.resumes_lost.load(Ordering::Relaxed),
            "host_steal_pct": round(steal_pct, 2),
            // On one machine the load generator competes with the server for the same cores.
            "load_generator_cpu_cores": round(own_cpu.total() / elapsed, 3),
            "latency_ms": {
                "p50": round(h.value_at_quantile(0.5) as f64 / 1000.0, 3),
                "p99": round(h.value_at_quantile(0.99) as f64 / 1000.0, 3),
                "p999": round(h.value_at_quantile(0.999) as f64 / 1000.0, 3),
                "max": round(h.max() as f64 / 1000.0, 3),
            },
        });
        if let Some(offered) = args.offered_rate {
            json["delivered_pct"] = json!(round(100.0 * rate / offered, 2));
        }
        if let Some(s) = server {
            let per_million = |seconds: f64| {
                if messages > 0 {
                    round(seconds / (messages as f64 / 1e6), 3)
                } else {
                    0.0
                }
            };
            let per_conn = if connected > 0 {
                (s.rss_connected_kib.saturating_sub(s.rss_before_kib) * 1024) as f64
                    / connected as f64
            } else {
                0.0
            };
            json["server"] = json!({
                "cpu_s": round(s.cpu.total(), 2),
                "cpu_user_s": round(s.cpu.user, 2),
                "cpu_system_s": round(s.cpu.system, 2),
                "cpu_cores": round(s.cpu.total() / elapsed, 3),
                "cpu_s_per_million_msgs": per_million(s.cpu.total()),
                "cpu_user_s_per_million_msgs": per_million(s.cpu.user),
                "cpu_system_s_per_million_msgs": per_million(s.cpu.system),
                "rss_before_kib": s.rss_before_kib,
                "rss_connected_kib": s.rss_connected_kib,
                "rss_end_kib": s.rss_end_kib,
                "rss_per_connection_bytes": per_conn.round(),
            });
        }
        if let Some(e) = shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            json["first_error"] = json!(e);
        }
        Self { json }
    }

    pub fn print(&self) {
        let j = &self.json;
        eprintln!(
            "{}: {} of {} connected ({} failed, {} dropped); {} msgs/s; latency p50 {} ms p99 {} ms p99.9 {} ms max {} ms; gaps {}; host steal {} %; load generator {} cores",
            j["label"],
            j["connected"],
            j["connections"],
            j["failed"],
            j["dropped"],
            j["msgs_per_s"],
            j["latency_ms"]["p50"],
            j["latency_ms"]["p99"],
            j["latency_ms"]["p999"],
            j["latency_ms"]["max"],
            j["gaps"],
            j["host_steal_pct"],
            j["load_generator_cpu_cores"]
        );
        if let Some(s) = j.get("server") {
            eprintln!(
                "server: {} CPU-s ({} cores), {} CPU-s per million messages ({} user, {} kernel); RSS {} -> {} KiB ({} B per connection)",
                s["cpu_s"],
                s["cpu_cores"],
                s["cpu_s_per_million_msgs"],
                s["cpu_user_s_per_million_msgs"],
                s["cpu_system_s_per_million_msgs"],
                s["rss_before_kib"],
                s["rss_connected_kib"],
                s["rss_per_connection_bytes"]
            );
        }
        println!("{}", self.json);
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}
