//! Section 2: pings and pongs.

use std::time::Duration;

use crate::Case;
use crate::wire::{Client, PING, PONG, encode};

fn ping_of(a: std::net::SocketAddr, payload: &[u8]) -> Result<(), String> {
    let mut c = Client::open(a, "")?;
    c.send(true, 0, PING, payload)?;
    c.expect_pong(payload)?;
    c.expect_open()
}

pub const CASES: &[Case] = &[
    (
        "2.1",
        "a ping without payload gets a pong without payload",
        |a| ping_of(a, b""),
    ),
    ("2.2", "a ping with a text payload gets it back", |a| {
        ping_of(a, b"Hello, world!")
    }),
    ("2.3", "a ping with a binary payload gets it back", |a| {
        ping_of(a, &[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff])
    }),
    (
        "2.4",
        "a ping with 125 bytes (the most a control frame holds) gets them back",
        |a| ping_of(a, &[0xfe; 125]),
    ),
    ("2.5", "a ping with 126 bytes fails with 1002", |a| {
        let mut c = Client::open(a, "")?;
        c.send(true, 0, PING, &[0xfe; 126])?;
        c.expect_close(1002)
    }),
    (
        "2.6",
        "a ping of 125 bytes sent one byte at a time gets them back",
        |a| {
            let mut c = Client::open(a, "")?;
            let payload = [0x2a; 125];
            for b in encode(true, 0, PING, &payload, true) {
                c.raw(&[b])?;
                std::thread::sleep(Duration::from_millis(1));
            }
            c.expect_pong(&payload)
        },
    ),
    ("2.7", "an unsolicited pong is ignored", |a| {
        let mut c = Client::open(a, "")?;
        c.send(true, 0, PONG, b"unsolicited")?;
        c.expect_open()
    }),
    (
        "2.8",
        "an unsolicited pong, then a ping: one pong comes back, for the ping",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0, PONG, b"unsolicited")?;
            ping_of_on(&mut c, b"solicited")
        },
    ),
    (
        "2.9",
        "ten pings in one write get ten pongs, in order",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut bytes = Vec::new();
            for i in 0..10u8 {
                bytes.extend(encode(true, 0, PING, &[b'p', i], true));
            }
            c.raw(&bytes)?;
            for i in 0..10u8 {
                c.expect_pong(&[b'p', i])?;
            }
            Ok(())
        },
    ),
    (
        "2.10",
        "ten pings one after the other each get their pong",
        |a| {
            let mut c = Client::open(a, "")?;
            for i in 0..10u8 {
                ping_of_on(&mut c, &[b'q', i])?;
            }
            Ok(())
        },
    ),
];

fn ping_of_on(c: &mut Client, payload: &[u8]) -> Result<(), String> {
    c.send(true, 0, PING, payload)?;
    c.expect_pong(payload)
}
