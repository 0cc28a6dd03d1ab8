//! The edges an independent client finds, over raw sockets: closing handshakes that break RFC
//! 6455 (5.5.1, 7.4), opening handshakes that break it (4.1, 4.2.1) or HTTP/1.1 (RFC 9112 3.2),
//! HTTP errors that must keep the documented JSON shape, and `id`s that must come back
//! verbatim.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `request` as written and returns the status line's code and the whole answer.
async fn exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = Vec::new();
    // Read until the head and a body of the announced length (or the close) arrived.
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if n == 0 {
            break;
        }
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if head.starts_with("HTTP/1.1 101") || length.is_some_and(|l| body.len() >= l) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn upgrade(addr: SocketAddr, extra: &str) -> String {
    format!(
        "GET /ws?symbols=AAPL HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked client frame.
fn frame(fin_op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![fin_op];
    assert!(payload.len() < 126);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opens a WebSocket by hand, sends `close_payload` in a close frame, and returns the code of
/// the server's close frame.
async fn close_code_for(addr: SocketAddr, close_payload: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(upgrade(addr, &format!("Sec-WebSocket-Key: {KEY}\r\n")).as_bytes())
        .await
        .expect("handshake");
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    // The 101 head.
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the handshake");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let head_len = text.find("\r\n\r\n").expect("head") + 4;
    let mut frames = got[head_len..].to_vec();
    s.write_all(&frame(0x88, close_payload))
        .await
        .expect("close");
    // Frames until the server's close.
    loop {
        while frames.len() >= 2 {
            let (op, len) = (frames[0] & 0x0f, (frames[1] & 0x7f) as usize);
            let (start, len) = match len {
                126 if frames.len() >= 4 => {
                    (4, u16::from_be_bytes([frames[2], frames[3]]) as usize)
                }
                126 => break,
                127 => panic!("no frame here is that large"),
                n => (2, n),
            };
            if frames.len() < start + len {
                break;
            }
            if op == 0x8 {
                return u16::from_be_bytes([frames[start], frames[start + 1]]);
            }
            frames.drain(..start + len);
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("the server's close in time")
            .expect("read");
        assert!(n > 0, "the connection ended without a close frame");
        frames.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn closing_handshakes_that_break_the_rfc_fail_the_connection() {
    let server = start(|_| {}).await;
    let code = |c: u16| c.to_be_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty: a normal close", vec![], 1000),
        ("1000 echoed", code(1000), 1000),
        ("an application's code echoed", code(4001), 4001),
        ("a library's code echoed", code(3000), 3000),
        ("1014 (assigned) echoed", code(1014), 1014),
        ("one byte", vec![0x03], 1002),
        ("999", code(999), 1002),
        ("1004 (reserved)", code(1004), 1002),
        ("1005 (never on the wire)", code(1005), 1002),
        ("1006 (never on the wire)", code(1006), 1002),
        ("1015 (never on the wire)", code(1015), 1002),
        ("1016 (unassigned)", code(1016), 1002),
        ("2999 (unassigned)", code(2999), 1002),
        ("5000", code(5000), 1002),
        (
            "a reason that is not UTF-8",
            [code(1000), vec![0xce, 0xba, 0xff]].concat(),
            1007,
        ),
    ];
    for (what, payload, expected) in cases {
        assert_eq!(
            close_code_for(server.addr, &payload).await,
            expected,
            "{what}"
        );
    }
}

#[tokio::test]
async fn opening_handshakes_that_break_the_rfcs_are_refused_with_400() {
    let server = start(|_| {}).await;
    let a = server.addr;
    let good = exchange(a, &upgrade(a, &format!("Sec-WebSocket-Key: {KEY}\r\n"))).await;
    assert_eq!(good.0, 101, "{}", good.1);
    for (what, request) in [
        (
            "a key of 3 bytes",
            upgrade(a, "Sec-WebSocket-Key: YWJj\r\n"),
        ),
        (
            "a key that is not base64",
            upgrade(a, "Sec-WebSocket-Key: not base64 at all!!\r\n"),
        ),
        (
            "a key of 17 bytes",
            upgrade(a, "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZmc=\r\n"),
        ),
        (
            "two keys",
            upgrade(
                a,
                &format!("Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Key: {KEY}\r\n"),
            ),
        ),
        (
            "HTTP/1.0",
            upgrade(a, &format!("Sec-WebSocket-Key: {KEY}\r\n"))
                .replacen("HTTP/1.1", "HTTP/1.0", 1),
        ),
        (
            "HTTP/1.1 without Host",
            upgrade(a, &format!("Sec-WebSocket-Key: {KEY}\r\n")).replacen(
                &format!("Host: {a}\r\n"),
                "",
                1,
            ),
        ),
        (
            "two Hosts",
            upgrade(a, &format!("Sec-WebSocket-Key: {KEY}\r\nHost: {a}\r\n")),
        ),
    ] {
        let (status, answer) = exchange(a, &request).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer.contains("\"code\":\"bad_request\""),
            "{what}: {answer}"
        );
    }
    let (status, answer) = exchange(a, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "a plain request without Host too: {answer}");
}

#[tokio::test]
async fn every_http_error_has_the_documented_shape() {
    let server = start(|_| {}).await;
    for (path, status, code) in [
        ("/api/v1/nope", 404, "not_found"),
        ("/nowhere", 404, "not_found"),
        ("/api/v1/candles/AAPL?limit=abc", 400, "bad_request"),
        ("/api/v1/candles/AAPL?limit=-1", 400, "bad_request"),
        (
            "/api/v1/candles/AAPL?limit=99999999999999999999999",
            400,
            "bad_request",
        ),
        ("/api/v1/candles/AAPL?limit=1&limit=2", 400, "bad_request"),
        (
            "/api/v1/candles/AAPL?interval=1s&interval=1m",
            400,
            "bad_request",
        ),
        ("/api/v1/ticker/%FF", 400, "bad_request"),
    ] {
        let (got, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["type"], "error", "{path}: {body}");
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn ids_come_back_exactly_as_sent() {
    let server = start(|_| {}).await;
    let mut ws = server.connect("").await;
    for id in [
        "null",
        "123456789012345678901234567890",
        "-0.000000000000000000000000001",
        "\"text\"",
        "{\"nested\":[1,2,{\"deep\":true}]}",
        // Beyond any machine number: found by cargo-fuzz (fuzz/regressions/client_message),
        // once refused as bad_request.
        "1e400",
        "193029e872345678901234563945061728394450617283945",
    ] {
        ws.send(Message::text(format!(r#"{{"op":"ping","id":{id}}}"#)))
            .await
            .expect("send");
        ws.send(Message::text(format!(r#"{{"op":"nope","id":{id}}}"#)))
            .await
            .expect("send");
        for expected in ["pong", "error"] {
            let text = loop {
                match tokio::time::timeout(Duration::from_secs(5), ws.next())
                    .await
                    .expect("an answer")
                    .expect("open")
                    .expect("frame")
                {
                    Message::Text(t) if !t.contains("\"heartbeat\"") => break t.to_string(),
                    _ => {}
                }
            };
            assert!(text.contains(&format!("\"type\":\"{expected}\"")), "{text}");
            assert!(text.contains(&format!("\"id\":{id}")), "{id} in {text}");
        }
    }
}

#[tokio::test]
async fn a_client_flooding_refused_messages_is_closed_with_1008() {
    let server = start(|c| c.max_message_rate = 5).await;
    let mut ws = server.connect("").await;
    // Garbage as fast as it goes, reading nothing meanwhile.
    for _ in 0..200 {
        if ws.send(Message::text("not json")).await.is_err() {
            break;
        }
    }
    let (texts, code) = until_close(&mut ws).await;
    assert_eq!(
        code,
        Some(1008),
        "{} messages before the close",
        texts.len()
    );
    // Each refusal was answered, up to the allowance (five seconds of the message rate).
    let errors = texts.iter().filter(|t| t["type"] == "error").count();
    assert!((25..=30).contains(&errors), "{errors} error replies");
    assert_eq!(server.state.metrics.abuse_disconnects.get(), 1);
}
