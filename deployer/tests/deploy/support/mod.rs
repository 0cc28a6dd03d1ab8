//! What the deployer's tests share: AWS's answers as they come over the wire, so the SDK's own
//! deserialisation and error classification run on them (a hand-built error value would skip
//! both), and a registry front that answers as ECR does.

#![allow(dead_code, unreachable_pub)]

pub mod account_double;
pub mod ecr_front;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use axum::Router;

fn response(status: u16, body: String, headers: &[(&'static str, String)]) -> HttpResponse {
    let mut r = HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(body),
    );
    for (name, value) in headers {
        r.headers_mut().insert(*name, value.clone());
    }
    r
}

/// An error from a query-protocol service (CloudFormation, IAM, STS) as AWS sends it.
pub fn query_error(status: u16, code: &str, message: &str) -> HttpResponse {
    response(
        status,
        format!(
            "<ErrorResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>5ccc7dcd-744c-11e5-be70-0123456789ab</RequestId></ErrorResponse>"
        ),
        &[("content-type", "text/xml".into())],
    )
}

/// An error from a JSON-protocol service (ECS, ECR, Secrets Manager, SSM) as AWS sends it.
pub fn json_error(status: u16, type_name: &str, message: &str) -> HttpResponse {
    response(
        status,
        format!("{{\"__type\":\"{type_name}\",\"message\":\"{message}\"}}"),
        &[("content-type", "application/x-amz-json-1.1".into())],
    )
}

/// An error from a REST-JSON service (Lambda): the type travels in a header.
pub fn rest_json_error(status: u16, type_name: &str, message: &str) -> HttpResponse {
    response(
        status,
        format!("{{\"Type\":\"User\",\"Message\":\"{message}\"}}"),
        &[
            ("content-type", "application/json".into()),
            (
                "x-amzn-errortype",
                format!("{type_name}:http://internal.amazon.com/coral/com.amazonaws.lambda/"),
            ),
        ],
    )
}

/// A successful REST-JSON answer.
pub fn rest_json_ok(body: &str) -> HttpResponse {
    response(
        200,
        body.to_string(),
        &[("content-type", "application/json".into())],
    )
}

/// An HTTP double on 127.0.0.1 on a thread and runtime of its own (so a test may block on a
/// child process meanwhile); it stops when the returned guard is dropped.
#[derive(Debug)]
pub struct Served {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub fn serve(app: Router) -> Served {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a double");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Served {
        url,
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
