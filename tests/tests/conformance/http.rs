//! Section 10: the HTTP side. The opening handshake (RFC 6455 4.1, 4.2.1, 4.4; RFC 9112 3.2)
//! and the REST API's errors, which all have the documented JSON error shape.

use crate::Case;
use crate::wire::{HttpAnswer, http};

fn upgrade(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// The status, and the error code of a JSON error body.
fn expect_error(got: &HttpAnswer, status: u16, code: &str) -> Result<(), String> {
    let body = got.json();
    if got.status != status || body["type"] != "error" || body["code"] != code {
        return Err(format!(
            "expected {status} with error {code:?}, got {} {:?}",
            got.status, got.body
        ));
    }
    if !got
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"))
    {
        return Err(format!("not JSON: {:?}", got.head));
    }
    Ok(())
}

pub const CASES: &[Case] = &[
    (
        "10.1.1",
        "a correct upgrade gets 101 with the RFC's accept value",
        |a| {
            let got = http(a, &upgrade(KEY));
            if got.status != 101
                || got.header("sec-websocket-accept").as_deref()
                    != Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            {
                return Err(format!("{:?}", got.head));
            }
            Ok(())
        },
    ),
    (
        "10.1.2",
        "header values are case-insensitive and Connection may list other tokens",
        |a| {
            let req = format!(
                "GET /ws HTTP/1.1\r\nhost: t\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
             sec-websocket-version: 13\r\n{KEY}\r\n"
            );
            let got = http(a, &req);
            (got.status == 101)
                .then_some(())
                .ok_or(format!("{:?}", got.head))
        },
    ),
    ("10.2.1", "a key that is not base64 gets 400", |a| {
        expect_error(
            &http(a, &upgrade("Sec-WebSocket-Key: not base64!\r\n")),
            400,
            "bad_request",
        )
    }),
    ("10.2.2", "a key of 15 bytes gets 400", |a| {
        expect_error(
            &http(a, &upgrade("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n")),
            400,
            "bad_request",
        )
    }),
    ("10.2.3", "a key given twice gets 400", |a| {
        expect_error(
            &http(a, &upgrade(&format!("{KEY}{KEY}"))),
            400,
            "bad_request",
        )
    }),
    (
        "10.2.4",
        "an upgrade over HTTP/1.0 gets a 4xx, not 101",
        |a| {
            let req = upgrade(KEY).replace("HTTP/1.1", "HTTP/1.0");
            let got = http(a, &req);
            (400..500)
                .contains(&got.status)
                .then_some(())
                .ok_or(format!("{:?}", got.head))
        },
    ),
    ("10.2.5", "an HTTP/1.1 request without Host gets 400", |a| {
        let got = http(a, "GET /healthz HTTP/1.1\r\n\r\n");
        (got.status == 400)
            .then_some(())
            .ok_or(format!("{:?}", got.head))
    }),
    (
        "10.2.6",
        "WebSocket version 8 gets 426 naming version 13",
        |a| {
            let got = http(a, &upgrade(KEY).replace("Version: 13", "Version: 8"));
            expect_error(&got, 426, "bad_request")?;
            (got.header("sec-websocket-version").as_deref() == Some("13"))
                .then_some(())
                .ok_or(format!("{:?}", got.head))
        },
    ),
    ("10.2.7", "a plain GET of /ws gets 426", |a| {
        expect_error(
            &http(a, "GET /ws HTTP/1.1\r\nHost: t\r\n\r\n"),
            426,
            "bad_request",
        )
    }),
    ("10.3.1", "offered tickstream.v1 is selected", |a| {
        let got = http(
            a,
            &upgrade(&format!(
                "{KEY}Sec-WebSocket-Protocol: chat, tickstream.v1\r\n"
            )),
        );
        (got.status == 101
            && got.header("sec-websocket-protocol").as_deref() == Some("tickstream.v1"))
        .then_some(())
        .ok_or(format!("{:?}", got.head))
    }),
    (
        "10.3.2",
        "an unknown subprotocol is not selected (RFC 6455 4.2.2)",
        |a| {
            let got = http(
                a,
                &upgrade(&format!("{KEY}Sec-WebSocket-Protocol: chat\r\n")),
            );
            (got.status == 101 && got.header("sec-websocket-protocol").is_none())
                .then_some(())
                .ok_or(format!("{:?}", got.head))
        },
    ),
    (
        "10.4.1",
        "a URL subscription to an unknown symbol is refused before the upgrade",
        |a| {
            let req = upgrade(KEY).replace("GET /ws ", "GET /ws?symbols=NOPE ");
            expect_error(&http(a, &req), 400, "unknown_symbol")
        },
    ),
    (
        "10.5.1",
        "an unknown API path gets 404 not_found with a JSON body",
        |a| {
            expect_error(
                &http(a, "GET /api/v1/nope HTTP/1.1\r\nHost: t\r\n\r\n"),
                404,
                "not_found",
            )
        },
    ),
    (
        "10.5.2",
        "limit=abc, limit=-1, a huge limit and a repeated limit get 400 bad_request",
        |a| {
            for q in [
                "limit=abc",
                "limit=-1",
                "limit=99999999999999999999999",
                "limit=1&limit=2",
                "limit=0",
            ] {
                let req = format!("GET /api/v1/candles/AAPL?{q} HTTP/1.1\r\nHost: t\r\n\r\n");
                expect_error(&http(a, &req), 400, "bad_request")
                    .map_err(|e| format!("{q}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "10.5.3",
        "an unknown symbol over REST gets 404 unknown_symbol",
        |a| {
            expect_error(
                &http(a, "GET /api/v1/ticker/NOPE HTTP/1.1\r\nHost: t\r\n\r\n"),
                404,
                "unknown_symbol",
            )
        },
    ),
];
