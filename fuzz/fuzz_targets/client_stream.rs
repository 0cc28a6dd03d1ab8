//! A client's byte stream, as the connection reads it: frames parsed from a growing buffer,
//! reassembled into messages, each text message parsed as an operation. The first byte picks
//! the read sizes, so the same frames also arrive cut at different places.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream::ws::frame;
use tickstream::ws::message::{Input, Reassembly};
use tickstream::ws::protocol::{ClientMessage, RequestId};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let mut buf = Vec::new();
    let mut messages = Reassembly::new(LIMIT);
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match frame::parse(&buf, LIMIT) {
                Ok(Some((f, used))) => {
                    assert!(used <= buf.len());
                    buf.drain(..used);
                    match messages.push(f) {
                        Ok(Input::Message { payload, .. }) => {
                            assert!(payload.len() <= LIMIT);
                            if let Ok(text) = std::str::from_utf8(&payload) {
                                let _ = ClientMessage::parse(text);
                                let _ = RequestId::of(text);
                            }
                        }
                        Ok(Input::Close(Err(code))) | Err(code) => {
                            assert!(matches!(code, 1002 | 1007 | 1009), "{code}");
                            return;
                        }
                        Ok(_) => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1009));
                    return;
                }
            }
        }
    }
});
