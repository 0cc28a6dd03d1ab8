//! Any text as a client operation: parsed or refused; an `id` found is echoed verbatim and
//! never makes an operation fail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream::ws::protocol::{ClientMessage, RequestId};

fuzz_target!(|text: &str| {
    let parsed = ClientMessage::parse(text);
    if let Some(id) = RequestId::of(text) {
        // What we echo is itself JSON by the grammar (numbers of any size included).
        assert!(serde_json::from_str::<Box<serde_json::value::RawValue>>(id.get()).is_ok());
        // A ping is a ping whatever its id: no valid id makes the operation fail.
        let ping = format!("{{\"op\":\"ping\",\"id\":{}}}", id.get());
        assert!(
            matches!(ClientMessage::parse(&ping), Ok(ClientMessage::Ping)),
            "{ping}"
        );
    }
    let _ = parsed;
});
