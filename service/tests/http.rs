//! REST snapshots, health, readiness, metrics and access control over real sockets.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;
use tickstream::AppState;
use tickstream::config::Config;
use tower::ServiceExt;

#[tokio::test]
async fn rest_snapshots_answer_with_data_or_a_typed_error() {
    let server = start(|_| {}).await;
    let (status, body) = server.get("/api/v1/symbols").await;
    assert_eq!(status, 200);
    assert_eq!(body["symbols"].as_array().map(Vec::len), Some(10));
    assert_eq!(
        body["channels"],
        json!([
            "ticker",
            "trades",
            "candles_1s",
            "candles_1m",
            "book",
            "book_25",
            "book_50",
            "book_100"
        ])
    );

    // The book: the view of the depth asked for, its best levels the ticker's quote (both
    // from the same tick once the seqs agree), and a checksum that a client can verify.
    let (status, book) = server.get("/api/v1/book/BTC-USD?depth=25").await;
    assert_eq!(status, 200);
    let (bids, asks) = (&book["data"]["bids"], &book["data"]["asks"]);
    assert_eq!(bids.as_array().map(Vec::len), Some(25), "{book}");
    assert_eq!(asks.as_array().map(Vec::len), Some(25));
    assert!(book["data"]["checksum"].as_u64().is_some());
    assert!(book["data"].get("reset").is_none());
    let (status, _) = server.get("/api/v1/book/BTC-USD").await;
    assert_eq!(status, 200, "depth defaults to 10");
    for bad in ["depth=11", "depth=0", "depth=x"] {
        let (status, body) = server.get(&format!("/api/v1/book/BTC-USD?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["code"], "bad_request", "{bad}: {body}");
    }
    let (status, body) = server.get("/api/v1/book/NOPE").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_symbol"))
    );

    let (status, body) = server.get("/api/v1/ticker/BTC-USD").await;
    assert_eq!(status, 200);
    assert_eq!(body["symbol"], "BTC-USD");
    assert!(body["seq"].as_u64().is_some_and(|s| s > 0));
    let (bid, ask): (f64, f64) = (
        body["data"]["bid"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("bid"),
        body["data"]["ask"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("ask"),
    );
    assert!(bid < ask && bid > 1000.0, "{body}");

    let (status, body) = server.get("/api/v1/candles/AAPL?interval=1s&limit=5").await;
    assert_eq!(status, 200);
    let candles = body["candles"].as_array().expect("candles");
    assert!(!candles.is_empty() && candles.len() <= 5, "{body}");
    let starts: Vec<i64> = candles.iter().filter_map(|c| c["start"].as_i64()).collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == 1_000_000),
        "consecutive seconds: {starts:?}"
    );
    assert!(
        candles[..candles.len() - 1]
            .iter()
            .all(|c| c["closed"] == true)
    );

    for (path, status, code) in [
        ("/api/v1/ticker/NOPE", 404, "unknown_symbol"),
        ("/api/v1/candles/NOPE", 404, "unknown_symbol"),
        ("/api/v1/candles/AAPL?interval=5m", 400, "bad_request"),
        ("/api/v1/candles/AAPL?limit=0", 400, "bad_request"),
        ("/api/v1/candles/AAPL?limit=100000", 400, "bad_request"),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert_eq!(body["type"], "error");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = start(|_| {}).await;
    assert_eq!(server.get("/healthz").await, (200, json!({"status": "ok"})));
    assert_eq!(
        server.get("/readyz").await,
        (
            200,
            json!({"status": "ready", "source": "sim", "source_up": true, "stale": []})
        )
    );
    let mut ws = server.connect("?symbols=AAPL").await;
    recv(&mut ws).await;
    recv(&mut ws).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = body.as_str().expect("text exposition");
    for name in [
        "tickstream_connections_open 1",
        "tickstream_messages_sent_total",
        "tickstream_bytes_sent_total",
        "tickstream_frames_dropped_total",
        "tickstream_slow_consumer_disconnects_total",
        "tickstream_send_lag_seconds_bucket",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}

#[tokio::test]
async fn readiness_is_503_before_the_feed_runs_and_while_draining() {
    let state = AppState::new(Config::default()).expect("valid");
    let ask = |state: &AppState| {
        tickstream::app(state.clone()).oneshot(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
    };
    assert_eq!(
        ask(&state).await.expect("response").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.shutdown.cancel();
    assert_eq!(
        ask(&state).await.expect("response").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn api_keys_and_origins_guard_the_data_endpoints_only() {
    let server = start(|c| {
        c.api_keys = vec!["k-one".into(), "k-two".into()];
        c.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (status, body) = server.get("/api/v1/symbols").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(server.get("/api/v1/symbols?token=wrong").await.0, 401);
    assert_eq!(server.get("/api/v1/symbols?token=k-two").await.0, 200);

    let app = tickstream::app(server.state.clone());
    let req = Request::get("/api/v1/ticker/AAPL")
        .header("authorization", "Bearer k-one")
        .body(Body::empty());
    assert_eq!(
        app.oneshot(req.expect("request"))
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );

    let status_of = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected {e}"),
    };
    let url = server.ws_url("?symbols=AAPL");
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(&url).await.map(|_| ())),
        401
    );
    let url = server.ws_url("?symbols=AAPL&token=k-one");
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(&url).await.map(|_| ())),
        101
    );

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(req).await.map(|_| ())),
        403
    );
    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("origin", "https://app.example".parse().expect("header"));
    assert_eq!(
        status_of(tokio_tungstenite::connect_async(req).await.map(|_| ())),
        101
    );
}

#[tokio::test]
async fn the_dashboard_is_served_with_revalidation_long_caching_and_gzip() {
    let state = AppState::new(Config::default()).expect("valid");
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        tickstream::app(state.clone()).oneshot(req.body(Body::empty()).expect("request"))
    };
    let page = get("/", &[]).await.expect("response");
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("ascii")
            .contains("default-src 'self'")
    );
    let etag = h["etag"].to_str().expect("etag").to_string();
    let html = axum::body::to_bytes(page.into_body(), 1 << 20)
        .await
        .expect("body");
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("<title>tickstream</title>"), "{html}");

    let again = get("/", &[("if-none-match", &etag)])
        .await
        .expect("response");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // Every asset the page names is served, cached for a year, gzipped on request.
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    if tickstream::web::WEB_SOURCE == "dashboard" {
        assert!(assets.iter().any(|a| a.ends_with(".js")), "{html}");
    }
    for asset in assets {
        let plain = get(asset, &[]).await.expect("response");
        assert_eq!(plain.status(), StatusCode::OK, "{asset}");
        assert_eq!(
            plain.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let size = axum::body::to_bytes(plain.into_body(), 8 << 20)
            .await
            .expect("body")
            .len();
        let gz = get(asset, &[("accept-encoding", "br, gzip")])
            .await
            .expect("response");
        assert_eq!(gz.headers()["content-encoding"], "gzip", "{asset}");
        let gz_size = axum::body::to_bytes(gz.into_body(), 8 << 20)
            .await
            .expect("body")
            .len();
        assert!(gz_size < size / 2, "{asset}: {gz_size} of {size} bytes");
    }
    let missing = get("/assets/nope.js", &[]).await.expect("response");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_fresh_server_has_candle_history_computed_from_the_simulator() {
    let server = start(|_| {}).await;
    let (status, body) = server
        .get("/api/v1/candles/AAPL?interval=1m&limit=30")
        .await;
    assert_eq!(status, 200);
    let candles = body["candles"].as_array().expect("candles");
    assert_eq!(
        candles.len(),
        30,
        "half an hour of history a second after start"
    );
    let starts: Vec<i64> = candles.iter().filter_map(|c| c["start"].as_i64()).collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == 60_000_000),
        "{starts:?}"
    );
    assert!(candles[..29].iter().all(|c| c["closed"] == true));
    assert_eq!(candles[29]["closed"], false, "the last one is open");
    // Each closed candle opens where the previous one closed.
    for w in candles.windows(2) {
        assert_eq!(w[1]["open"], w[0]["close"], "{w:?}");
    }
}
