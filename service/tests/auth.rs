//! API keys as every client can present them: `Authorization: Bearer` in any case, the
//! WebSocket subprotocol browsers can set (the key never echoed back), a challenge on 401, and
//! keys read from a file.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceExt;

async fn status(server: &Server, authorization: Option<&str>) -> (StatusCode, Option<String>) {
    let mut req = Request::get("/api/v1/symbols");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = tickstream::app(server.state.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    (resp.status(), challenge)
}

#[tokio::test]
async fn bearer_is_case_insensitive_and_a_refusal_carries_a_challenge() {
    let server = start(|c| c.api_keys = vec!["k-one".into()]).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        assert_eq!(
            status(&server, Some(&format!("{scheme} k-one"))).await.0,
            StatusCode::OK,
            "{scheme}"
        );
    }
    assert_eq!(
        status(&server, None).await,
        (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="tickstream""#.into())
        )
    );
    assert_eq!(
        status(&server, Some("Bearer nope")).await,
        (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="tickstream", error="invalid_token""#.into())
        )
    );
    assert_eq!(
        status(&server, Some("Basic k-one")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_browser_presents_its_key_in_a_subprotocol_that_is_never_echoed() {
    let key = "k/with+odd=chars";
    let server = start(|c| c.api_keys = vec![key.into()]).await;
    let url = server.ws_url("?symbols=AAPL&channels=ticker");
    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!(
            "tickstream.v1, tickstream.key.{}",
            URL_SAFE_NO_PAD.encode(key)
        )
        .parse()
        .expect("header"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("accepted with the key in a subprotocol");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "tickstream.v1");
    assert_eq!(recv(&mut ws).await["type"], "subscribed");

    // A wrong key in the subprotocol is refused like a wrong header.
    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!(
            "tickstream.v1, tickstream.key.{}",
            URL_SAFE_NO_PAD.encode("wrong")
        )
        .parse()
        .expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn keys_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys");
    std::fs::write(
        &path,
        "# mounted from the secret store\n\nk-file-1\n  k-file-2  \n",
    )
    .expect("write");
    let server = start(|c| c.api_keys_file = Some(path.clone())).await;
    assert_eq!(
        status(&server, Some("Bearer k-file-2")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status(&server, Some("Bearer # mounted")).await.0,
        StatusCode::UNAUTHORIZED
    );
}
