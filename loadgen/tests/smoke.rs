//! The load generator against a real server on loopback: it connects, measures, samples the
//! server's /proc figures and prints the JSON summary the benchmark script reads.

use std::process::Command;

use tickstream::config::Config;
use tickstream::{AppState, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_every_figure() {
    let config = Config {
        sim_rate: 50,
        ..Config::default()
    };
    let state = AppState::new(config).expect("valid configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(run(listener, state.clone(), std::future::pending()));

    let bin = env!("CARGO_BIN_EXE_tickstream-load");
    let ready = Command::new(bin)
        .args([
            "wait-ready",
            "--addr",
            &addr.to_string(),
            "--timeout",
            "10s",
        ])
        .output()
        .expect("run wait-ready");
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let ready: serde_json::Value = serde_json::from_slice(&ready.stdout).expect("JSON");
    assert!(ready["ready_ms"].as_f64().is_some());

    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args([
                "run",
                "--url",
                &format!("ws://{addr}/ws"),
                "-c",
                "20",
                "-d",
                "1s",
                "--warmup",
                "200ms",
            ])
            .args([
                "--server-pid",
                &std::process::id().to_string(),
                "--offered-rate",
                "1000",
            ])
            .output()
            .expect("run the load generator")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(summary["connected"], 20, "{summary}");
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["dropped"], 0);
    assert_eq!(summary["gaps"], 0);
    // 20 clients x 50 updates/s for about a second.
    let messages = summary["messages"].as_u64().expect("messages");
    assert!((700..1300).contains(&messages), "{summary}");
    assert!(
        summary["latency_ms"]["p99"]
            .as_f64()
            .is_some_and(|p| p > 0.0)
    );
    assert!(
        summary["server"]["rss_connected_kib"]
            .as_u64()
            .is_some_and(|r| r > 0)
    );
    assert!(
        summary["host_steal_pct"]
            .as_f64()
            .is_some_and(|p| (0.0..=100.0).contains(&p)),
        "{summary}"
    );
    assert!(
        summary["load_generator_cpu_cores"]
            .as_f64()
            .is_some_and(|c| c >= 0.0),
        "{summary}"
    );
    let server = &summary["server"];
    let cpu = |key: &str| {
        server[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {summary}"))
    };
    let (total, user, system) = (cpu("cpu_s"), cpu("cpu_user_s"), cpu("cpu_system_s"));
    assert!(user >= 0.0 && system >= 0.0, "{summary}");
    assert!(
        (user + system - total).abs() < 0.015,
        "the split adds up: {summary}"
    );
    let per_million = cpu("cpu_user_s_per_million_msgs") + cpu("cpu_system_s_per_million_msgs");
    assert!(
        (per_million - cpu("cpu_s_per_million_msgs")).abs() < 0.01,
        "{summary}"
    );
}
