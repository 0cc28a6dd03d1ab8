//! Section 7: the closing handshake (RFC 6455 5.5.1, 7.1-7.4).

use crate::Case;
use crate::wire::{CLOSE, Client, PING, TEXT, close_payload, encode, ping_op};

/// Sends a close with `payload` and expects the server's close with `code`, then the end.
fn close_with(a: std::net::SocketAddr, payload: &[u8], code: u16) -> Result<(), String> {
    let mut c = Client::open(a, "")?;
    c.send(true, 0, CLOSE, payload)?;
    c.expect_close(code)
}

pub const CASES: &[Case] = &[
    (
        "7.1.1",
        "a close without payload is answered with a close, and the server ends the TCP connection",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0, CLOSE, b"")?;
            let f = c.next_reply()?;
            if f.opcode != CLOSE || !matches!(f.close_code(), None | Some(1000)) {
                return Err(format!("expected an empty close or 1000, got {f:?}"));
            }
            c.expect_eof()
        },
    ),
    (
        "7.1.2",
        "a close with 1000 and a reason is echoed with 1000",
        |a| close_with(a, &close_payload(1000, b"bye"), 1000),
    ),
    (
        "7.1.3",
        "nothing is answered after the client's close",
        |a| {
            let mut c = Client::open(a, "")?;
            // In one write: the server has them all before it can close.
            let mut bytes = encode(true, 0, CLOSE, &close_payload(1000, b""), true);
            bytes.extend(encode(true, 0, TEXT, &ping_op("late", 0), true));
            bytes.extend(encode(true, 0, PING, b"late", true));
            c.raw(&bytes)?;
            let f = c.next_reply()?;
            if f.close_code() != Some(1000) {
                return Err(format!("expected the close echo, got {f:?}"));
            }
            c.expect_eof()
        },
    ),
    (
        "7.1.4",
        "a message before the close is answered, then the close echoed",
        |a| {
            let mut c = Client::open(a, "")?;
            c.text(&ping_op("before", 0))?;
            c.send(true, 0, CLOSE, &close_payload(1000, b""))?;
            c.expect_pong_op("before")?;
            c.expect_close(1000)
        },
    ),
    (
        "7.1.5",
        "a close in the middle of a fragmented message is echoed",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(false, 0, TEXT, b"{\"op\"")?;
            c.send(true, 0, CLOSE, &close_payload(1000, b""))?;
            c.expect_close(1000)
        },
    ),
    (
        "7.3.1",
        "a close with a one-byte payload fails with 1002",
        |a| close_with(a, &[0x03], 1002),
    ),
    (
        "7.3.2",
        "a close with a 123-byte reason (the most that fits) is echoed",
        |a| close_with(a, &close_payload(1000, &[b'r'; 123]), 1000),
    ),
    (
        "7.3.3",
        "a close with 124 bytes of reason (126 in all) fails with 1002",
        |a| close_with(a, &close_payload(1000, &[b'r'; 124]), 1002),
    ),
    (
        "7.5.1",
        "a close reason that is not UTF-8 fails with 1007",
        |a| close_with(a, &close_payload(1000, b"\xce\xba\xed\xa0\x80"), 1007),
    ),
    (
        "7.7",
        "every code that may be sent is echoed: 1000-1003, 1007-1014, 3000, 3999, 4000, 4999",
        |a| {
            for code in [
                1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
                4000, 4999,
            ] {
                close_with(a, &close_payload(code, b""), code)
                    .map_err(|e| format!("{code}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "7.9",
        "every code that may not be sent fails with 1002: 0, 999, 1004-1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535",
        |a| {
            for code in [
                0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
            ] {
                close_with(a, &close_payload(code, b""), 1002)
                    .map_err(|e| format!("{code}: {e}"))?;
            }
            Ok(())
        },
    ),
];
