//! `--replay`: recorded events are streamed with fresh, contiguous sequence numbers.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_recording_is_replayed_in_order() {
    let path = std::env::temp_dir().join(format!(
        "tickstream-replay-test-{}.ndjson",
        std::process::id()
    ));
    let mut lines = String::new();
    for i in 0..40i64 {
        let ts = 1_700_000_000_000_000 + i * 20_000;
        lines.push_str(&format!(
            "{{\"channel\":\"trades\",\"symbol\":\"XYZ\",\"seq\":{},\"ts\":{ts},\"data\":{{\"price\":\"10.{:02}\",\"size\":\"5\",\"side\":\"buy\"}}}}\n",
            1000 + i * 3,
            i
        ));
    }
    std::fs::write(&path, lines).expect("write recording");
    let replay = path.clone();
    let server = start(move |c| {
        c.replay = Some(replay);
        c.replay_speed = 1.0;
    })
    .await;
    let mut ws = server.connect("?symbols=XYZ&channels=trades").await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let frames = collect(&mut ws, Duration::from_millis(1500)).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        frames.len() > 20,
        "most of the 0.8 s recording arrives: {}",
        frames.len()
    );
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "renumbered contiguously: {seqs:?}"
    );
    let prices: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["data"]["price"].as_str())
        .collect();
    assert_eq!(
        prices.last(),
        Some(&"10.39"),
        "ends with the last recorded trade"
    );
    let (status, body) = server.get("/api/v1/symbols").await;
    assert_eq!(
        (status, body["symbols"].clone()),
        (200, serde_json::json!(["XYZ"]))
    );
}
