//! Leaving a load balancer: ECS marks the task STOPPED in its metadata (served here by a local
//! double of the task metadata endpoint) long before SIGTERM. The server must stop being ready
//! and tell every client to reconnect, spread over the drain window, while it still can.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;

/// A task metadata endpoint: `/v4/<id>/task` answering RUNNING until `stopped` is set, and
/// counting the requests it answered.
async fn metadata_double(stopped: Arc<AtomicBool>, served: Arc<AtomicUsize>) -> String {
    let app = Router::new().route(
        "/v4/9f0e/task",
        get(move || {
            let stopped = stopped.clone();
            served.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if stopped.load(Ordering::SeqCst) {
                    "STOPPED"
                } else {
                    "RUNNING"
                };
                axum::Json(serde_json::json!({
                    "Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/tickstream-dev",
                    "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/tickstream-dev/9f0e",
                    "Family": "tickstream-dev",
                    "Revision": "7",
                    "DesiredStatus": status,
                    "KnownStatus": "RUNNING",
                    "LaunchType": "FARGATE",
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v4/9f0e")
}

#[tokio::test]
async fn clients_are_told_to_reconnect_over_the_window_once_ecs_stops_the_task() {
    let stopped = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let uri = metadata_double(stopped.clone(), served.clone()).await;
    let window = Duration::from_secs(3);
    let mut server = start(|c| {
        c.ecs_metadata_uri = Some(uri);
        c.drain_window = window;
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut ws = server.connect("?symbols=AAPL&channels=ticker").await;
        recv(&mut ws).await;
        clients.push(ws);
    }
    // Polls that answer RUNNING change nothing.
    let waited = Instant::now();
    while served.load(Ordering::SeqCst) < 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the metadata was not polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.get("/readyz").await.0, 200);

    stopped.store(true, Ordering::SeqCst);
    let flipped = Instant::now();
    let waited = Instant::now();
    while server.get("/readyz").await.0 != 503 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "readiness did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("tickstream_draining 1")),
        "{metrics}"
    );

    // Every client hears `reconnect` and 1012, at moments spread over the window.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (texts, code) = until_close(&mut ws).await;
                (flipped.elapsed(), texts, code)
            })
        })
        .collect();
    let mut told = Vec::new();
    for reader in readers {
        let (at, texts, code) = reader.await.expect("reader");
        expect_reconnect(&texts, code, "ticker:AAPL");
        told.push(at);
    }
    told.sort();
    eprintln!("told to reconnect, after ECS marked the task STOPPED: {told:?}");
    let last = told.iter().max().copied().unwrap_or_default();
    assert!(
        last <= window + Duration::from_secs(2) + Duration::from_millis(500),
        "everyone was told within a poll plus the window: {told:?}"
    );
    // Spread, not all at once: at least half the window between the first and the last.
    let first = told.iter().min().copied().unwrap_or_default();
    assert!(
        last - first >= window / 2,
        "reconnects were spread over the window: {told:?}"
    );
    // The process itself waits for SIGTERM: still alive and serving health checks.
    assert_eq!(server.get("/healthz").await.0, 200);
    server.stop().await.expect("stops");
}
