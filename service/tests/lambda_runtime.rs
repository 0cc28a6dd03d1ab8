//! The `tickstream` binary as a Lambda function, against a local implementation of the Lambda
//! Runtime API (next invocation, response, error): it serves several invocations of each event
//! kind, and reports an event it cannot handle as an invocation error, then carries on.

mod events;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the function sent back for one invocation.
#[derive(Debug, Clone)]
enum Outcome {
    Response(Value),
    Error { kind: String, body: Value },
}

#[derive(Default)]
struct Runtime {
    queue: Mutex<VecDeque<(String, Value)>>,
    outcomes: Mutex<Vec<(String, Outcome)>>,
    init_errors: Mutex<Vec<Value>>,
    arrived: Notify,
    done: Notify,
}

async fn next(State(rt): State<Arc<Runtime>>) -> impl IntoResponse {
    loop {
        let item = rt.queue.lock().expect("lock").pop_front();
        if let Some((id, event)) = item {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis()
                + 30_000;
            let headers = [
                ("lambda-runtime-aws-request-id", id),
                ("lambda-runtime-deadline-ms", deadline.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:eu-west-1:123456789012:function:tickstream".to_string(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-00000000-000000000000000000000000".to_string(),
                ),
                ("content-type", "application/json".to_string()),
            ];
            return (
                StatusCode::OK,
                headers.map(|(k, v)| (k, v)),
                event.to_string(),
            )
                .into_response();
        }
        rt.arrived.notified().await;
    }
}

async fn response(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    rt.outcomes
        .lock()
        .expect("lock")
        .push((id, Outcome::Response(value)));
    rt.done.notify_waiters();
    StatusCode::ACCEPTED
}

async fn error(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let kind = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    rt.outcomes
        .lock()
        .expect("lock")
        .push((id, Outcome::Error { kind, body }));
    rt.done.notify_waiters();
    StatusCode::ACCEPTED
}

async fn init_error(State(rt): State<Arc<Runtime>>, body: String) -> StatusCode {
    rt.init_errors
        .lock()
        .expect("lock")
        .push(Value::String(body));
    StatusCode::ACCEPTED
}

impl Runtime {
    fn invoke(&self, id: &str, event: Value) {
        self.queue
            .lock()
            .expect("lock")
            .push_back((id.to_string(), event));
        self.arrived.notify_waiters();
    }

    async fn outcome(&self, id: &str) -> Outcome {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.done.notified();
                if let Some((_, o)) = self
                    .outcomes
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|(i, _)| i == id)
                {
                    return o.clone();
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no outcome for invocation {id}"))
    }
}

fn body_json(response: &Value) -> Value {
    let body = response["body"].as_str().expect("a body");
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    serde_json::from_str(body).expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_invocations_and_reports_errors_through_the_runtime_api() {
    let rt = Arc::new(Runtime::default());
    let api = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, api).await });

    let mut function = tokio::process::Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tickstream")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/tickstream")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("TICKSTREAM_LOG_FORMAT", "json")
        .kill_on_drop(true)
        .spawn()
        .expect("start the function");

    rt.invoke("1", events::http_api("/api/v1/symbols"));
    rt.invoke("2", events::function_url("/api/v1/ticker/AAPL"));
    rt.invoke("3", events::alb("/api/v1/candles/MSFT?interval=1s&limit=2"));
    rt.invoke("4", json!({"hello": "not an HTTP event"}));
    rt.invoke("5", events::function_url("/ws"));
    rt.invoke("6", events::http_api("/api/v1/ticker/NOPE"));
    rt.invoke("7", events::alb("/api/v1/ticker/BTC-USD"));

    let Outcome::Response(r) = rt.outcome("1").await else {
        panic!("1 failed")
    };
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body_json(&r)["symbols"].as_array().map(Vec::len), Some(10));

    let Outcome::Response(r) = rt.outcome("2").await else {
        panic!("2 failed")
    };
    assert_eq!(r["statusCode"], 200, "{r}");
    let ticker = body_json(&r);
    assert_eq!(ticker["symbol"], "AAPL");
    let age = tickstream::feed::now_micros() - ticker["ts"].as_i64().expect("ts");
    assert!(
        (0..2_000_000).contains(&age),
        "the ticker is for now: {age} us old"
    );

    let Outcome::Response(r) = rt.outcome("3").await else {
        panic!("3 failed")
    };
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["statusDescription"], "200 OK", "an ALB answer: {r}");
    assert_eq!(body_json(&r)["candles"].as_array().map(Vec::len), Some(2));

    match rt.outcome("4").await {
        Outcome::Error { kind, body } => {
            assert!(!kind.is_empty(), "an error type header");
            assert!(
                body["errorType"].is_string() && body["errorMessage"].is_string(),
                "{body}"
            );
        }
        other => panic!("an unusable event must be an invocation error, got {other:?}"),
    }

    let Outcome::Response(r) = rt.outcome("5").await else {
        panic!("5 failed")
    };
    assert_eq!(r["statusCode"], 501, "{r}");
    assert!(
        body_json(&r)["message"]
            .as_str()
            .is_some_and(|m| m.contains("Fargate"))
    );

    let Outcome::Response(r) = rt.outcome("6").await else {
        panic!("6 failed")
    };
    assert_eq!(
        (r["statusCode"].as_u64(), body_json(&r)["code"].as_str()),
        (Some(404), Some("unknown_symbol"))
    );

    let Outcome::Response(r) = rt.outcome("7").await else {
        panic!("7 failed")
    };
    assert_eq!(body_json(&r)["symbol"], "BTC-USD");

    assert!(rt.init_errors.lock().expect("lock").is_empty());
    assert!(
        function.try_wait().expect("status").is_none(),
        "the function keeps serving"
    );
    function.kill().await.expect("kill");
}
