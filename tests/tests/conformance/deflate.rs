//! Section 12: permessage-deflate (RFC 7692), as the Autobahn|Testsuite's sections 12 and 13
//! exercise it: what is negotiated for each offer, that compressed updates inflate (with the
//! window kept between messages, as a browser keeps it, and no copy from past the window the
//! server announced: `strict_inflate`) into the same updates, that compressed
//! client messages are read, and that a decompression bomb is refused by its inflated size.

use zlib_rs::{Deflate, DeflateFlush};

use crate::Case;
use crate::strict_inflate::StrictInflater;
use crate::wire::{CONT, Client, TEXT};

fn extensions(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions"))
        })
        .map(|(_, v)| v.trim().to_string())
}

fn offer(
    a: std::net::SocketAddr,
    query: &str,
    ext: &str,
) -> Result<(Client, Option<String>), String> {
    let (c, head) = Client::open_with(a, query, &format!("Sec-WebSocket-Extensions: {ext}\r\n"))?;
    Ok((c, extensions(&head)))
}

fn expect_answer(got: Option<String>, want: Option<&str>) -> Result<(), String> {
    if got.as_deref() != want {
        return Err(format!("expected {want:?}, answered {got:?}"));
    }
    Ok(())
}

/// A client message compressed on its own (we are told client_no_context_takeover).
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Deflate::new(6, false, 15);
    let mut out = vec![0u8; payload.len() + 1024];
    let _ = d.compress(payload, &mut out, DeflateFlush::SyncFlush);
    out.truncate(d.total_out() as usize);
    out.truncate(out.len().saturating_sub(4));
    out
}

/// Reads 200 updates through an inflater with a `window_bits` window kept between messages,
/// checks each stream's seq is consecutive and every update compressed, and that the wire
/// carried at most 1/`shrink` of the bytes.
fn updates_inflate(mut c: Client, window_bits: u8, shrink: f64) -> Result<(), String> {
    let mut window = StrictInflater::new(window_bits);
    let (mut updates, mut raw, mut wire) = (0, 0, 0);
    let mut last = std::collections::HashMap::new();
    while updates < 200 {
        let f = c.next()?.ok_or("closed")?;
        if f.opcode != TEXT || f.masked || !f.fin || f.rsv & 0b011 != 0 {
            return Err(format!("unexpected frame {f:?}"));
        }
        let text = if f.rsv & 0b100 != 0 {
            window.message(&f.payload)?
        } else {
            f.payload.clone()
        };
        let v: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&text)))?;
        if v["type"] != "update" {
            continue;
        }
        let key = format!("{}:{}", v["channel"], v["symbol"]);
        let seq = v["seq"].as_u64().ok_or("no seq")?;
        if let Some(prev) = last.insert(key.clone(), seq)
            && seq != prev + 1
        {
            return Err(format!("{key}: {prev} then {seq}"));
        }
        if f.rsv & 0b100 == 0 {
            return Err("an update went out uncompressed".into());
        }
        updates += 1;
        raw += text.len();
        wire += f.payload.len();
    }
    if wire as f64 * shrink > raw as f64 {
        return Err(format!("200 updates: {wire} bytes compressed from {raw}"));
    }
    Ok(())
}

const BROWSER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; client_no_context_takeover";

pub const CASES: &[Case] = &[
    (
        "12.1.1",
        "a browser's offer is accepted; the client is told not to keep its context",
        |a| expect_answer(offer(a, "", BROWSER)?.1, Some(ANSWER)),
    ),
    (
        "12.1.2",
        "server_max_window_bits=10 is answered with at most 10",
        |a| {
            let (_, got) = offer(a, "", "permessage-deflate; server_max_window_bits=10")?;
            expect_answer(
                got,
                Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10"),
            )
        },
    ),
    (
        "12.1.3",
        "server_no_context_takeover is honoured and said back",
        |a| {
            let (_, got) = offer(a, "", "permessage-deflate; server_no_context_takeover")?;
            expect_answer(
                got,
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            )
        },
    ),
    (
        "12.1.4",
        "offers with unknown, repeated or invalid parameters are declined: no extension",
        |a| {
            for bad in [
                "permessage-deflate; foo=1",
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                "permessage-deflate; server_max_window_bits=16",
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; client_max_window_bits=0",
            ] {
                let (mut c, got) = offer(a, "", bad)?;
                expect_answer(got, None).map_err(|e| format!("{bad}: {e}"))?;
                c.expect_open()?;
            }
            Ok(())
        },
    ),
    (
        "12.1.5",
        "a declined offer falls through to the next acceptable one",
        |a| {
            let (_, got) = offer(
                a,
                "",
                "permessage-deflate; foo, permessage-deflate; server_max_window_bits=12",
            )?;
            expect_answer(
                got,
                Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=12"),
            )
        },
    ),
    (
        "12.2.1",
        "200 compressed updates inflate, window kept, into consecutive updates",
        |a| {
            let (c, got) = offer(a, "?symbols=AAPL,MSFT&channels=ticker,trades", BROWSER)?;
            expect_answer(got, Some(ANSWER))?;
            updates_inflate(c, 15, 3.0)
        },
    ),
    (
        "12.2.2",
        "with server_max_window_bits=9, no copy reaches past 512 bytes (5 streams interleaved)",
        |a| {
            // A stream's last update is ~1 KB back: in reach of the default window, not of 9.
            let query = "?symbols=AAPL,MSFT,NVDA,AMZN,GOOGL&channels=ticker";
            let (c, got) = offer(a, query, "permessage-deflate; server_max_window_bits=9")?;
            expect_answer(
                got,
                Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9"),
            )?;
            // An inflater told 9 bits refuses a copy from further back: it is the check. With
            // nothing in reach the updates go out as literals, a little over their size.
            updates_inflate(c, 9, 0.9)
        },
    ),
    (
        "12.3.1",
        "a compressed client message is read and answered",
        |a| {
            let (mut c, _) = offer(a, "", BROWSER)?;
            c.send(true, 0b100, TEXT, &deflate(br#"{"op":"ping","id":"z"}"#))?;
            c.expect_pong_op("z")
        },
    ),
    (
        "12.3.2",
        "a compressed message in two fragments, RSV1 on the first only",
        |a| {
            let (mut c, _) = offer(a, "", BROWSER)?;
            let z = deflate(br#"{"op":"ping","id":"frag"}"#);
            let (one, two) = z.split_at(z.len() / 2);
            c.send(false, 0b100, TEXT, one)?;
            c.send(true, 0, CONT, two)?;
            c.expect_pong_op("frag")
        },
    ),
    (
        "12.3.3",
        "RSV1 on a continuation frame fails the connection with 1002",
        |a| {
            let (mut c, _) = offer(a, "", BROWSER)?;
            let z = deflate(br#"{"op":"ping"}"#);
            c.send(false, 0b100, TEXT, &z[..2])?;
            c.send(true, 0b100, CONT, &z[2..])?;
            c.expect_close(1002)
        },
    ),
    (
        "12.3.4",
        "RSV1 without the extension agreed fails the connection with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0b100, TEXT, &deflate(br#"{"op":"ping"}"#))?;
            c.expect_close(1002)
        },
    ),
    (
        "12.4.1",
        "a 1 KiB frame inflating to 1 MiB (a bomb) is refused with 1009",
        |a| {
            let (mut c, _) = offer(a, "", BROWSER)?;
            let bomb = deflate(&vec![b' '; 1 << 20]);
            if bomb.len() > 4096 {
                return Err(format!("the bomb is {} bytes", bomb.len()));
            }
            c.send(true, 0b100, TEXT, &bomb)?;
            c.expect_close(1009)
        },
    ),
    (
        "12.4.2",
        "compressed bytes that do not inflate fail the connection with 1007",
        |a| {
            let (mut c, _) = offer(a, "", BROWSER)?;
            c.send(true, 0b100, TEXT, &[0xff, 0xff, 0xff, 0xff, 0xff])?;
            c.expect_close(1007)
        },
    ),
];
