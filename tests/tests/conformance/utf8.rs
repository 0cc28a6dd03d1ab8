//! Section 6: UTF-8. Text must be valid UTF-8 (RFC 6455 8.1): valid text of every length of
//! code point is read as sent, invalid text fails the connection with 1007, split or not.

use crate::Case;
use crate::wire::{CONT, Client, TEXT};

/// `{"op":"ping","id":"<bytes>"}`
fn op_with_id(id: &[u8]) -> Vec<u8> {
    let mut m = b"{\"op\":\"ping\",\"id\":\"".to_vec();
    m.extend_from_slice(id);
    m.extend_from_slice(b"\"}");
    m
}

/// Valid ids: one to four bytes per code point, the edges of each range, and a sentence.
const VALID: &[&str] = &[
    "\u{0}\u{7f}",
    "\u{80}\u{7ff}",
    "\u{800}\u{ffff}",
    "\u{d7ff}\u{e000}",
    "\u{10000}\u{10ffff}",
    "κόσμε",
    "Hello-µ@ßöäüàá-UTF-8!!",
];

/// Invalid sequences, after a valid prefix.
const INVALID: &[&[u8]] = &[
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", // a surrogate
    b"\xed\xbf\xbf",                                                   // the last surrogate
    b"\xc0\x80",                                                       // overlong NUL
    b"\xc1\xbf",                                                       // overlong
    b"\xe0\x80\xaf",                                                   // overlong '/'
    b"\xf0\x80\x80\xaf",                                               // overlong '/'
    b"\xf4\x90\x80\x80",                                               // beyond U+10FFFF
    b"\xf8\x88\x80\x80\x80",                                           // five bytes
    b"\x80",                                                           // a lone continuation
    b"\xbf",
    b"\xfe",
    b"\xff",
    b"\xe2\x82", // truncated
    b"\xce",     // truncated at the end
];

pub const CASES: &[Case] = &[
    (
        "6.1",
        "valid UTF-8 of every length comes back unchanged in the reply's id",
        |a| {
            let mut c = Client::open(a, "")?;
            for id in VALID {
                let escaped = serde_json::to_string(id).map_err(|e| e.to_string())?;
                c.text(format!("{{\"op\":\"ping\",\"id\":{escaped}}}").as_bytes())?;
                let v = c.expect_json("pong")?;
                if v["id"] != *id {
                    return Err(format!("sent {id:?}, got {}", v["id"]));
                }
            }
            Ok(())
        },
    ),
    (
        "6.2",
        "valid UTF-8 split inside a code point across fragments is reassembled",
        |a| {
            let mut c = Client::open(a, "")?;
            let msg = op_with_id("κόσμε".as_bytes());
            let cut = msg.iter().position(|&b| b == 0xce).ok_or("no multi-byte")? + 1;
            c.send(false, 0, TEXT, &msg[..cut])?;
            c.send(true, 0, CONT, &msg[cut..])?;
            let v = c.expect_json("pong")?;
            if v["id"] != "κόσμε" {
                return Err(format!("{v}"));
            }
            Ok(())
        },
    ),
    (
        "6.3",
        "each invalid sequence in a text message fails with 1007",
        |a| {
            for bad in INVALID {
                let mut c = Client::open(a, "")?;
                c.text(&op_with_id(bad))
                    .and_then(|()| c.expect_close(1007))
                    .map_err(|e| format!("{bad:x?}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "6.4",
        "each invalid sequence split across fragments fails with 1007",
        |a| {
            for bad in INVALID {
                let mut c = Client::open(a, "")?;
                let msg = op_with_id(bad);
                let cut = 19 + bad.len().div_ceil(2);
                c.send(false, 0, TEXT, &msg[..cut])
                    .and_then(|()| c.send(true, 0, CONT, &msg[cut..]))
                    .and_then(|()| c.expect_close(1007))
                    .map_err(|e| format!("{bad:x?}: {e}"))?;
            }
            Ok(())
        },
    ),
    (
        "6.5",
        "invalid UTF-8 in a ping payload is fine (control payloads are bytes)",
        |a| {
            let mut c = Client::open(a, "")?;
            c.send(true, 0, crate::wire::PING, b"\xff\xfe\xc0\x80")?;
            c.expect_pong(b"\xff\xfe\xc0\x80")
        },
    ),
];
