//! Section 9: limits. What is too large or too fast is refused with a typed error while the
//! connection stays usable, or, past the hard bounds, closed with the documented code. The
//! server runs with `--max-message-rate 10` (bursts of 20) and `--max-subscriptions 3`.

use crate::Case;
use crate::wire::{CONT, Client, TEXT, ping_op};

fn expect_error(c: &mut Client, code: &str) -> Result<(), String> {
    let e = c.expect_json("error")?;
    if e["code"] != code {
        return Err(format!("expected {code}, got {e}"));
    }
    Ok(())
}

pub const CASES: &[Case] = &[
    (
        "9.1.1",
        "a message of 4,097 bytes gets message_too_large; the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(&ping_op("big", 4097))?;
            expect_error(&mut c, "message_too_large")?;
            c.expect_open()
        },
    ),
    (
        "9.1.2",
        "a frame of 65,536 bytes (64-bit length) gets message_too_large; the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(&ping_op("bigger", 65_536))?;
            expect_error(&mut c, "message_too_large")?;
            c.expect_open()
        },
    ),
    (
        "9.1.3",
        "a frame declaring 65,537 bytes is refused unread with 1009",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut f = vec![0x81, 0x80 | 127];
            f.extend_from_slice(&65_537u64.to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            c.raw(&f)?;
            c.expect_close(1009)
        },
    ),
    (
        "9.1.4",
        "fragments adding up to over 64 KiB close with 1009",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, TEXT, &[b' '; 16_000])?;
            for _ in 0..5 {
                c.send(false, 0, CONT, &[b' '; 16_000])?;
            }
            c.expect_close(1009)
        },
    ),
    (
        "9.2.1",
        "30 messages at once: a burst of 20 is answered, the rest get rate_limited; the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut bytes = Vec::new();
            for i in 0..30 {
                bytes.extend(crate::wire::encode(
                    true,
                    0,
                    TEXT,
                    &ping_op(&i.to_string(), 0),
                    true,
                ));
            }
            c.raw(&bytes)?;
            let (mut pongs, mut limited) = (0, 0);
            for _ in 0..30 {
                let v = c.next_reply()?.json();
                match (v["type"].as_str(), v["code"].as_str()) {
                    (Some("pong"), _) => pongs += 1,
                    (Some("error"), Some("rate_limited")) => limited += 1,
                    _ => return Err(format!("unexpected {v}")),
                }
            }
            // A message or two may be answered from the bucket's refill during the burst.
            if !(20..=22).contains(&pongs) || pongs + limited != 30 {
                return Err(format!("{pongs} answered, {limited} rate_limited"));
            }
            c.expect_open()
        },
    ),
    (
        "9.2.2",
        "a client that floods refused messages without reading is closed with 1008",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut bytes = Vec::new();
            for _ in 0..300 {
                bytes.extend(crate::wire::encode(true, 0, TEXT, b"not json", true));
            }
            c.raw(&bytes)?;
            c.expect_close(1008)
        },
    ),
    (
        "9.3",
        "subscribing past --max-subscriptions gets too_many_subscriptions; the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(br#"{"op":"subscribe","id":1,"symbols":["AAPL","MSFT"],"channels":["ticker","trades"]}"#)?;
            let e = c.expect_json("error")?;
            if e["code"] != "too_many_subscriptions" || e["id"] != 1 {
                return Err(format!("{e}"));
            }
            c.expect_open()
        },
    ),
];
