//! The load generator against a real server on loopback: it connects, measures, samples the
//! server's /proc figures and prints the JSON summary the benchmark script reads.

use std::process::Command;

use tickstream::config::Config;
use tickstream::{AppState, run};

/// A server in this process (so `--server-pid` is ours) at 50 updates a second per symbol.
async fn start_server() -> std::net::SocketAddr {
    let config = Config {
        sim_rate: 50,
        ..Config::default()
    };
    let state = AppState::new(config).expect("valid configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(run(listener, state, std::future::pending()));
    addr
}

/// `tickstream-load wait-ready` against `addr`: its JSON line, once the server is ready.
fn wait_ready(addr: std::net::SocketAddr) -> serde_json::Value {
    let ready = Command::new(env!("CARGO_BIN_EXE_tickstream-load"))
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
    serde_json::from_slice(&ready.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_reports_every_figure() {
    let addr = start_server().await;

    let bin = env!("CARGO_BIN_EXE_tickstream-load");
    let ready = wait_ready(addr);
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
    // Reported (its size is the machine's business: a 1 s run may fall under one clock tick).
    assert!(
        summary["load_generator_cpu_cores"].as_f64().is_some(),
        "{summary}"
    );
    let server = &summary["server"];
    let cpu = |key: &str| {
        server[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {summary}"))
    };
    let (total, user, system) = (cpu("cpu_s"), cpu("cpu_user_s"), cpu("cpu_system_s"));
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

/// With churn every client drops its socket and comes back with its resume positions, again
/// and again: none may miss an update, and the server must honour every resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_churn_resume_without_a_gap() {
    let addr = start_server().await;
    let bin = env!("CARGO_BIN_EXE_tickstream-load");
    wait_ready(addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["run", "--url", &format!("ws://{addr}/ws"), "-c", "20"])
            .args(["-d", "2s", "--warmup", "200ms", "--churn", "300ms"])
            .args(["--channels", "ticker,trades", "--sample-every", "1s"])
            .args(["--server-pid", &std::process::id().to_string()])
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
    // 20 clients living 150-450 ms each for over two seconds: well over 60 reconnections.
    assert!(
        summary["reconnects"].as_u64().is_some_and(|r| r >= 60),
        "{summary}"
    );
    // Data keeps flowing across reconnections: 20 clients x (50 ticker + about 37 trades)
    // updates/s x 2 s is about 3,500; a resubscription that failed would leave far fewer.
    assert!(
        summary["messages"].as_u64().is_some_and(|m| m >= 2_500),
        "{summary}"
    );
    assert_eq!(summary["gaps"], 0, "{summary}");
    assert_eq!(summary["resumes_lost"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["dropped"], 0, "{summary}");
    let samples = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("server_open_files"))
        .count();
    assert!(samples >= 1, "{}", String::from_utf8_lossy(&out.stderr));
}
