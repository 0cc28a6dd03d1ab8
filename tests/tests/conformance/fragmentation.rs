//! Section 5: fragmentation. Messages in fragments are reassembled; control frames may come
//! between fragments but may not be fragmented themselves; continuations need a start.

use crate::Case;
use crate::wire::{BINARY, CONT, Client, PING, PONG, TEXT, ping_op};

fn in_fragments(a: std::net::SocketAddr, sizes: &[usize]) -> Result<(), String> {
    let mut c = Client::open(a, "")?;
    let msg = ping_op("frag", 400);
    let mut at = 0;
    for (i, n) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        let end = if last { msg.len() } else { at + n };
        c.send(last, 0, if i == 0 { TEXT } else { CONT }, &msg[at..end])?;
        at = end;
    }
    c.expect_pong_op("frag")?;
    c.expect_open()
}

pub const CASES: &[Case] = &[
    ("5.1", "a fragmented ping fails with 1002", |a| {
        let mut c = Client::open(a, "")?;
        c.send(false, 0, PING, b"frag")?;
        c.send(true, 0, CONT, b"ment")?;
        c.expect_close(1002)
    }),
    ("5.2", "a fragmented pong fails with 1002", |a| {
        let mut c = Client::open(a, "")?;
        c.send(false, 0, PONG, b"frag")?;
        c.send(true, 0, CONT, b"ment")?;
        c.expect_close(1002)
    }),
    (
        "5.3",
        "a text message in two fragments is reassembled",
        |a| in_fragments(a, &[10, 0]),
    ),
    (
        "5.4",
        "a text message in three fragments is reassembled",
        |a| in_fragments(a, &[7, 100, 0]),
    ),
    (
        "5.5",
        "a text message in one-byte fragments is reassembled",
        |a| in_fragments(a, &[1; 399]),
    ),
    ("5.6", "empty fragments around the data are fine", |a| {
        let mut c = Client::open(a, "")?;
        c.send(false, 0, TEXT, b"")?;
        c.send(false, 0, CONT, &ping_op("e", 0))?;
        c.send(true, 0, CONT, b"")?;
        c.expect_pong_op("e")
    }),
    (
        "5.7",
        "a ping between fragments is answered first, then the message",
        |a| {
            let mut c = Client::open(a, "")?;
            let msg = ping_op("around", 0);
            c.send(false, 0, TEXT, &msg[..5])?;
            c.send(true, 0, PING, b"between")?;
            c.send(true, 0, CONT, &msg[5..])?;
            c.expect_pong(b"between")?;
            c.expect_pong_op("around")
        },
    ),
    (
        "5.8",
        "a pong between fragments is ignored and the message answered",
        |a| {
            let mut c = Client::open(a, "")?;
            let msg = ping_op("pong-between", 0);
            c.send(false, 0, TEXT, &msg[..5])?;
            c.send(true, 0, PONG, b"between")?;
            c.send(true, 0, CONT, &msg[5..])?;
            c.expect_pong_op("pong-between")
        },
    ),
    (
        "5.9",
        "a final continuation without a start fails with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0, CONT, &ping_op("orphan", 0))?;
            c.expect_close(1002)
        },
    ),
    (
        "5.10",
        "a non-final continuation without a start fails with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, CONT, b"{\"op\"")?;
            c.expect_close(1002)
        },
    ),
    (
        "5.11",
        "a new text frame while a message is in fragments fails with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, TEXT, b"{\"op\"")?;
            c.send(true, 0, TEXT, &ping_op("x", 0))?;
            c.expect_close(1002)
        },
    ),
    (
        "5.12",
        "a binary frame while a text message is in fragments fails with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, TEXT, b"{\"op\"")?;
            c.send(true, 0, BINARY, b"\x00")?;
            c.expect_close(1002)
        },
    ),
    (
        "5.13",
        "a binary message in fragments is refused with bad_request, the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, BINARY, b"\x00\x01")?;
            c.send(true, 0, CONT, b"\x02")?;
            let e = c.expect_json("error")?;
            if e["code"] != "bad_request" {
                return Err(format!("{e}"));
            }
            c.expect_open()
        },
    ),
];
