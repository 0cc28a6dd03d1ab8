//! Measures what the Lambda tier costs per request: a cold start's work (configuration, then the
//! market rebuilt for "now"), a warm request, and a request after an hour frozen. Run in release:
//!
//!   cargo run --release --example lambda_cost
//!
//! The numbers feed the README's "Lambda or Fargate" section.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tickstream::config::Config;
use tickstream::feed::now_micros;
use tickstream::lambda::{self, Market};

fn event(path: &str) -> lambda_http::Request {
    let json = format!(
        r#"{{"version":"2.0","routeKey":"$default","rawPath":"{path}","rawQueryString":"","headers":{{"host":"x.lambda-url.eu-west-1.on.aws"}},
        "requestContext":{{"accountId":"anonymous","apiId":"x","domainName":"x.lambda-url.eu-west-1.on.aws","domainPrefix":"x",
        "http":{{"method":"GET","path":"{path}","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"bench"}},
        "requestId":"r","routeKey":"$default","stage":"$default","time":"22/Nov/2026:10:00:00 +0000","timeEpoch":0}},"isBase64Encoded":false}}"#
    );
    lambda_http::request::from_str(&json).expect("event")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = Request::get("/").body(Body::empty());
    let paths = [
        "/api/v1/ticker/AAPL",
        "/api/v1/candles/MSFT?interval=1m",
        "/api/v1/symbols",
    ];
    let deep = "/api/v1/candles/MSFT?interval=1m&limit=300";

    let mut cold = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let market = Market::new(Config::default()).expect("config");
        let r = lambda::handle_at(&market, event(paths[0]), now_micros()).await;
        assert!(r.status().is_success());
        cold.push(t.elapsed());
    }
    cold.sort();

    let market = Market::new(Config::default()).expect("config");
    let start = now_micros();
    let mut warm = Vec::new();
    // One request every 100 ms of market time (one tick at the default rate) for 100 s.
    for i in 0..1000_i64 {
        let t = Instant::now();
        let r =
            lambda::handle_at(&market, event(paths[(i % 3) as usize]), start + i * 100_000).await;
        assert!(r.status().is_success());
        warm.push(t.elapsed());
    }
    warm.sort();

    let mut frozen = Vec::new();
    for i in 1..=10_i64 {
        let t = Instant::now();
        let r = lambda::handle_at(&market, event(paths[0]), start + i * 3_600_000_000).await;
        assert!(r.status().is_success());
        frozen.push(t.elapsed());
    }
    frozen.sort();

    // Five hours of 1 m candles (what the dashboard asks for), at a new minute each time, so the
    // history cache cannot help: the worst case.
    let mut history = Vec::new();
    for i in 0..20_i64 {
        let t = Instant::now();
        let at = start + 11 * 3_600_000_000 + i * 60_000_000;
        let r = lambda::handle_at(&market, event(deep), at).await;
        assert!(r.status().is_success());
        history.push(t.elapsed());
    }
    history.sort();

    for (name, list) in [
        ("300 x 1m candles, uncached", &history),
        ("cold (init + rebuild)", &cold),
        ("warm, 1 tick apart", &warm),
        ("after an hour frozen", &frozen),
    ] {
        println!(
            "{name:>24}: p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n={})",
            percentile(list, 0.5).as_secs_f64() * 1e3,
            percentile(list, 0.99).as_secs_f64() * 1e3,
            list.last().expect("samples").as_secs_f64() * 1e3,
            list.len()
        );
    }
}
