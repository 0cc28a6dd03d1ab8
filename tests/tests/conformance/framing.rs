//! Sections 1 (framing: lengths, masking, coalesced and trickled frames), 3 (reserved bits)
//! and 4 (opcodes).

use std::time::Duration;

use crate::Case;
use crate::wire::{BINARY, CLOSE, Client, PING, TEXT, encode, ping_op};

fn text_of(a: std::net::SocketAddr, len: usize) -> Result<(), String> {
    let mut c = Client::open(a, "")?;
    c.text(&ping_op("n", len))?;
    c.expect_pong_op("n")?;
    c.expect_open()
}

pub const CASES: &[Case] = &[
    (
        "1.1.1",
        "an empty text message is answered with an error, the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(b"")?;
            c.expect_json("error")?;
            c.expect_open()
        },
    ),
    ("1.1.2", "a text message of 125 bytes (7-bit length)", |a| {
        text_of(a, 125)
    }),
    (
        "1.1.3",
        "a text message of 126 bytes (16-bit length)",
        |a| text_of(a, 126),
    ),
    ("1.1.4", "a text message of 127 bytes", |a| text_of(a, 127)),
    (
        "1.1.5",
        "a text message of 4,096 bytes (the default message limit)",
        |a| text_of(a, 4096),
    ),
    (
        "1.2.1",
        "a binary message is refused with bad_request, the connection stays",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0, BINARY, &[0, 1, 2, 0xff])?;
            let e = c.expect_json("error")?;
            if e["code"] != "bad_request" {
                return Err(format!("{e}"));
            }
            c.expect_open()
        },
    ),
    (
        "1.3.1",
        "an unmasked client frame fails the connection with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.raw(&encode(true, 0, TEXT, &ping_op("u", 0), false))?;
            c.expect_close(1002)
        },
    ),
    (
        "1.3.2",
        "a 64-bit length with the most significant bit set fails with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut f = vec![0x81, 0x80 | 127];
            f.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            c.raw(&f)?;
            c.expect_close(1002)
        },
    ),
    (
        "1.4.1",
        "ten frames in one write are all answered, in order",
        |a| {
            let mut c = Client::open(a, "")?;
            let mut bytes = Vec::new();
            for i in 0..10 {
                bytes.extend(encode(true, 0, TEXT, &ping_op(&i.to_string(), 0), true));
            }
            c.raw(&bytes)?;
            for i in 0..10 {
                c.expect_pong_op(&i.to_string())?;
            }
            Ok(())
        },
    ),
    (
        "1.4.2",
        "a frame sent one byte at a time is answered",
        |a| {
            let mut c = Client::open(a, "")?;
            for b in encode(true, 0, TEXT, &ping_op("slow", 300), true) {
                c.raw(&[b])?;
                std::thread::sleep(Duration::from_millis(1));
            }
            c.expect_pong_op("slow")
        },
    ),
    (
        "1.4.3",
        "a frame split at every header boundary is answered",
        |a| {
            let mut c = Client::open(a, "")?;
            let f = encode(true, 0, TEXT, &ping_op("split", 200), true);
            for part in [&f[..1], &f[1..2], &f[2..4], &f[4..8], &f[8..]] {
                c.raw(part)?;
                std::thread::sleep(Duration::from_millis(20));
            }
            c.expect_pong_op("split")
        },
    ),
];

fn reserved(a: std::net::SocketAddr, rsv: u8, opcode: u8, payload: &[u8]) -> Result<(), String> {
    let mut c = Client::open(a, "")?;
    c.send(true, rsv, opcode, payload)?;
    c.expect_close(1002)
}

pub const RESERVED: &[Case] = &[
    ("3.1", "RSV1 on a text frame fails with 1002", |a| {
        reserved(a, 0b100, TEXT, b"{}")
    }),
    ("3.2", "RSV2 on a text frame fails with 1002", |a| {
        reserved(a, 0b010, TEXT, b"{}")
    }),
    ("3.3", "RSV3 on a text frame fails with 1002", |a| {
        reserved(a, 0b001, TEXT, b"{}")
    }),
    (
        "3.4",
        "all three RSV bits on a text frame fail with 1002",
        |a| reserved(a, 0b111, TEXT, b"{}"),
    ),
    ("3.5", "RSV bits on a binary frame fail with 1002", |a| {
        reserved(a, 0b110, BINARY, b"\x00")
    }),
    ("3.6", "RSV bits on a ping fail with 1002", |a| {
        reserved(a, 0b101, PING, b"p")
    }),
    ("3.7", "RSV bits on a close fail with 1002", |a| {
        reserved(a, 0b011, CLOSE, &[3, 232])
    }),
    (
        "3.8",
        "a valid frame then an RSV frame: answered, then failed with 1002",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(&ping_op("first", 0))?;
            c.send(true, 0b100, TEXT, b"{}")?;
            c.expect_pong_op("first")?;
            c.expect_close(1002)
        },
    ),
    (
        "4.1",
        "the reserved data opcodes 3 to 7 fail with 1002",
        |a| {
            for op in 3..=7 {
                reserved(a, 0, op, b"x").map_err(|e| format!("opcode {op}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "4.2",
        "the reserved control opcodes 11 to 15 fail with 1002",
        |a| {
            for op in 11..=15 {
                reserved(a, 0, op, b"x").map_err(|e| format!("opcode {op}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "4.3",
        "a reserved opcode with an empty payload fails with 1002",
        |a| reserved(a, 0, 5, b""),
    ),
];
