//! The Lambda tier's handler: the same answers as the HTTP server for the same request and
//! instant, whichever event source carries it; the market computed for "now" by a stateless
//! function equals the one a warm function stepped to; `/ws` and replays refused clearly.

mod events;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tickstream::config::Config;
use tickstream::feed::now_micros;
use tickstream::lambda::{self, LambdaError, Market};
use tower::ServiceExt;

const PATHS: [&str; 7] = [
    "/api/v1/symbols",
    "/api/v1/ticker/AAPL",
    "/api/v1/ticker/BTC-USD",
    "/api/v1/candles/MSFT?interval=1s&limit=3",
    "/api/v1/candles/MSFT?interval=1m",
    "/api/v1/ticker/NOPE",
    "/healthz",
];

async fn parts(response: axum::response::Response) -> (u16, String, Vec<u8>) {
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, kind, body.to_vec())
}

#[tokio::test]
async fn every_event_source_gets_what_the_http_server_answers() {
    let market = Market::new(Config::default()).expect("valid");
    let now = now_micros();
    for path in PATHS {
        let state = market.at(now).expect("state");
        let direct = tickstream::app(state)
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let expected = parts(direct).await;
        assert!(
            expected.0 == 200 || path.ends_with("NOPE"),
            "{path}: {}",
            expected.0
        );
        for (source, event) in [
            ("HTTP API", events::http_api(path)),
            ("function URL", events::function_url(path)),
            ("ALB", events::alb(path)),
        ] {
            let request = lambda_http::request::from_str(&event.to_string())
                .unwrap_or_else(|e| panic!("{source} event for {path}: {e}"));
            let answer = parts(lambda::handle_at(&market, request, now).await).await;
            assert_eq!(answer, expected, "{source} {path}");
        }
    }
}

#[tokio::test]
async fn a_cold_function_computes_the_same_market_a_warm_one_stepped_to() {
    let warm = Market::new(Config::default()).expect("valid");
    let t0 = now_micros();
    let t1 = t0 + 2_500_000;
    warm.at(t0).expect("state");
    let cold = Market::new(Config::default()).expect("valid");
    for path in [
        "/api/v1/ticker/AAPL",
        "/api/v1/ticker/ETH-USD",
        "/api/v1/candles/NVDA?interval=1m",
    ] {
        let ask = |m: &Market| {
            let state = m.at(t1).expect("state");
            async move {
                let r = tickstream::app(state)
                    .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                    .await
                    .expect("infallible");
                let body = axum::body::to_bytes(r.into_body(), 1 << 20)
                    .await
                    .expect("body");
                serde_json::from_slice::<Value>(&body).expect("json")
            }
        };
        let (w, c) = (ask(&warm).await, ask(&cold).await);
        if path.contains("candles") {
            // Only the open candle is comparable: the warm one has also seen older ones.
            assert_eq!(
                w["candles"].as_array().and_then(|a| a.last()),
                c["candles"].as_array().and_then(|a| a.last()),
                "{path}"
            );
        } else {
            assert_eq!(w, c, "{path}");
            assert!(w["seq"].as_u64().is_some_and(|s| s > 0), "{w}");
        }
    }
    // Much later (the function was frozen), the state is rebuilt, not stepped through hours.
    let later = t1 + 3_600_000_000;
    let started = std::time::Instant::now();
    let state = warm.at(later).expect("state");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "rebuilt, not replayed"
    );
    let r = tickstream::app(state)
        .oneshot(
            Request::get("/api/v1/ticker/AAPL")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body"),
    )
    .expect("json");
    assert!(
        body["ts"]
            .as_i64()
            .is_some_and(|ts| ts <= later && ts > later - 1_000_000),
        "{body}"
    );
}

#[tokio::test]
async fn streaming_and_replays_are_refused_with_the_reason() {
    let market = Market::new(Config::default()).expect("valid");
    let request =
        lambda_http::request::from_str(&events::function_url("/ws?symbols=AAPL").to_string())
            .expect("event");
    let (status, _, body) = parts(lambda::handle_at(&market, request, now_micros()).await).await;
    assert_eq!(status, 501);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Fargate")),
        "{body}"
    );

    let config = Config {
        replay: Some("recording.ndjson".into()),
        ..Config::default()
    };
    assert!(matches!(Market::new(config), Err(LambdaError::Replay)));
}
