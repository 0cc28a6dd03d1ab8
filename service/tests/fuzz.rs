//! Property-based fuzzing of everything that parses client bytes: the frame parser, message
//! reassembly, the JSON operations and their `id`, the URL queries of `/ws` and the REST API,
//! and resume positions. Each property runs `PROPTEST_CASES` cases (default 1,000 here; the
//! figures in docs/fuzzing.md come from longer runs). A failure is shrunk to a minimal input
//! and its seed saved under `proptest-regressions/`; committed, it is replayed first on every
//! run: the regression test.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tickstream::config::Config;
use tickstream::hub::{Batch, Frame, Hub, HubLimits, Offer, Outlet, StreamId, Upcoming};
use tickstream::market::{Channel, Decimal, Event, Payload, Side, Trade};
use tickstream::metrics::Metrics;
use tickstream::ws::frame::{self, ClientFrame};
use tickstream::ws::message::{Input, Reassembly};
use tickstream::ws::protocol::{ClientMessage, RequestId};
use tickstream::{AppState, app};
use tower::ServiceExt;

fn config() -> ProptestConfig {
    config_of(1000)
}

/// `PROPTEST_CASES` cases, or `default` without it.
fn config_of(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Next to this file, committed: a shrunk failure is replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// A client frame's bytes, masked with `mask`.
fn encode(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Valid frames: data frames of any size up to 300 bytes, control frames whole and short.
fn valid_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (
            any::<bool>(),
            prop::sample::select(vec![0u8, 1, 2]),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(fin, opcode, payload)| ClientFrame {
                compressed: false,
                fin,
                opcode,
                payload
            }),
        (
            prop::sample::select(vec![8u8, 9, 10]),
            prop::collection::vec(any::<u8>(), 0..=125)
        )
            .prop_map(|(opcode, payload)| ClientFrame {
                compressed: false,
                fin: true,
                opcode,
                payload
            }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: an error, a need for more, or a frame no bigger than the limit; no panic,
    /// and never more bytes consumed than given.
    #[test]
    fn the_frame_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200), max in 0usize..300) {
        if let Ok(Some((f, used))) = frame::parse(&bytes, max) {
            prop_assert!(used <= bytes.len());
            prop_assert!(f.payload.len() <= max);
        }
    }

    /// A stream of valid frames cut at arbitrary points (a slow or pipelining client) parses
    /// to the same frames as sent.
    #[test]
    fn frames_parse_the_same_however_the_bytes_arrive(
        frames in prop::collection::vec(valid_frame(), 1..12),
        mask in any::<[u8; 4]>(),
        cuts in prop::collection::vec(1usize..64, 0..40),
    ) {
        let wire: Vec<u8> = frames.iter().flat_map(|f| encode(f.fin, f.opcode, &f.payload, mask)).collect();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        let mut at = 0;
        let mut sizes = cuts.into_iter().chain(std::iter::repeat(usize::MAX));
        while at < wire.len() {
            let n = sizes.next().unwrap_or(usize::MAX).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + n]);
            at += n;
            while let Some((f, used)) = frame::parse(&buf, 1 << 16).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(f);
                buf.drain(..used);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
    }

    /// A message cut into fragments, with pings and pongs between them, comes out whole, and
    /// every ping is answered in order.
    #[test]
    fn fragments_with_control_frames_between_reassemble(
        message in prop::collection::vec(any::<u8>(), 0..600),
        binary in any::<bool>(),
        cuts in prop::collection::btree_set(0usize..600, 0..8),
        pings in prop::collection::vec((0usize..10, prop::collection::vec(any::<u8>(), 0..20)), 0..4),
    ) {
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < message.len()).collect();
        bounds.push(message.len());
        let mut frames = Vec::new();
        let mut start = 0;
        for (i, &end) in bounds.iter().enumerate() {
            let opcode = if i > 0 { 0 } else if binary { 2 } else { 1 };
            frames.push(ClientFrame { fin: i + 1 == bounds.len(), opcode, payload: message[start..end].to_vec(), compressed: false });
            start = end;
        }
        // Control frames go between fragments (before data frame `at`), never after the
        // final one; they are answered in the order they arrive.
        let mut pings: Vec<(usize, Vec<u8>)> = pings.into_iter().map(|(at, p)| (at % frames.len(), p)).collect();
        pings.sort_by_key(|(at, _)| *at);
        let data = std::mem::take(&mut frames);
        for (i, f) in data.into_iter().enumerate() {
            for (_, p) in pings.iter().filter(|(at, _)| *at == i) {
                frames.push(ClientFrame { fin: true, opcode: 9, payload: p.clone(), compressed: false });
            }
            frames.push(f);
        }
        let mut r = Reassembly::new(1 << 16);
        let mut answered = Vec::new();
        let mut whole = Vec::new();
        for f in frames {
            match r.push(f) {
                Ok(Input::Ping(p)) => answered.push(p),
                Ok(Input::Message { opcode, payload, .. }) => whole.push((opcode, payload)),
                Ok(Input::Pending) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(answered, pings.into_iter().map(|(_, p)| p).collect::<Vec<_>>());
        prop_assert_eq!(whole, vec![(if binary { 2 } else { 1 }, message)]);
    }

    /// Any sequence of frames: no panic, no message over the limit, and once the connection
    /// must fail the error is a close code RFC 6455 names for it.
    #[test]
    fn reassembly_takes_any_frame_sequence(
        frames in prop::collection::vec(
            (any::<bool>(), prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]), prop::collection::vec(any::<u8>(), 0..100)),
            0..30),
        limit in 0usize..400,
    ) {
        let mut r = Reassembly::new(limit);
        for (fin, opcode, payload) in frames {
            match r.push(ClientFrame { fin, opcode, payload, compressed: false }) {
                Ok(Input::Message { payload, .. }) => prop_assert!(payload.len() <= limit || fin),
                Err(code) => {
                    prop_assert!(code == 1002 || code == 1009, "{}", code);
                    break;
                }
                Ok(_) => {}
            }
        }
    }

    /// Any text as a client message: parsed or refused, never a panic.
    #[test]
    fn any_text_is_parsed_or_refused(text in ".{0,200}") {
        let _ = ClientMessage::parse(&text);
        let _ = RequestId::of(&text);
    }

    /// Any JSON-looking text, mutated from real operations.
    #[test]
    fn mutated_operations_are_parsed_or_refused(
        base in prop::sample::select(vec![
            r#"{"op":"subscribe","id":1,"symbols":["AAPL"],"channels":["ticker"],"resume":{"ticker:AAPL":5},"epoch":"e"}"#,
            r#"{"op":"unsubscribe","id":"x","symbols":["AAPL"]}"#,
            r#"{"op":"ping","id":[1,{"a":null}]}"#,
            r#"{"op":"list"}"#,
        ]),
        edits in prop::collection::vec((0usize..120, any::<u8>()), 1..6),
    ) {
        let mut bytes = base.as_bytes().to_vec();
        for (at, b) in edits {
            let at = at % (bytes.len() + 1);
            if b % 3 == 0 && at < bytes.len() { bytes.remove(at); } else { bytes.insert(at, b); }
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = ClientMessage::parse(text);
            let _ = RequestId::of(text);
        }
    }

    /// Whatever JSON value the client's `id` is, it comes back as the very same text.
    #[test]
    fn any_json_id_is_echoed_verbatim(id in json_value()) {
        let text = format!(r#"{{"op":"ping","id":{id}}}"#);
        let got = RequestId::of(&text);
        prop_assert_eq!(got.as_ref().map(RequestId::get), Some(id.as_str()));
        prop_assert!(matches!(ClientMessage::parse(&text), Ok(ClientMessage::Ping)), "{}", text);
    }

    /// Resume from any position: a replay is contiguous from the position on and ends at the
    /// stream's seq; a position the window does not hold is said to be lost.
    #[test]
    fn resume_from_any_position(
        published in 0u64..300,
        history in 0usize..64,
        last in prop_oneof![any::<u64>(), 0u64..400],
    ) {
        let hub = Hub::new(vec!["AAA".into()], "e".into(), HubLimits { history, candles: 4, fanout_threads: 1 }, Arc::new(Metrics::new()), tickstream::ws::protocol::data_frame);
        hub.publish_batch(&mut (1..=published).map(trade).collect(), &mut Batch::default());
        let stream: StreamId = hub.stream(Channel::Trades, "AAA").ok_or_else(|| TestCaseError::fail("no stream"))?;
        let plausible = hub.plausible(stream, last);
        prop_assert_eq!(plausible, last <= published + history.max(1) as u64);
        let got = hub.subscribe(stream, Arc::new(Sink(1)), Some(last));
        prop_assert_eq!(got.seq, published);
        let oldest = published.saturating_sub(history as u64) + 1;
        if got.recovered == Some(true) {
            prop_assert!(last.saturating_add(1) >= oldest.min(published + 1));
            let seqs: Vec<u64> = got.replay.iter().map(|f| f.seq).collect();
            let want: Vec<u64> = (last.saturating_add(1)..=published).collect();
            prop_assert_eq!(seqs, want);
        } else {
            prop_assert!(got.replay.is_empty());
            prop_assert_eq!(got.recovered, Some(false));
        }
    }
}

/// Arbitrary JSON values, printed compactly, including integers longer than any number type.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{18,40}",
        "-?[1-9](\\.[0-9]{1,5})?[eE][+-]?[0-9]{3,6}", // beyond any machine number
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        ".{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z]{0,5}", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> =
                    v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn trade(seq: u64) -> Event {
    Event {
        channel: Channel::Trades,
        symbol: 0,
        seq,
        ts: seq as i64,
        payload: Payload::Trade(Trade {
            price: Decimal::new(1, 0),
            size: Decimal::new(1, 0),
            side: Side::Buy,
        }),
    }
}

/// An outlet that takes everything.
#[derive(Debug)]
struct Sink(u64);

impl Outlet for Sink {
    fn id(&self) -> u64 {
        self.0
    }
    fn offer(&self, _: &Frame, _: Upcoming<'_>) -> Offer {
        Offer::Queued { first: false }
    }
    fn flush(&self) -> (usize, usize) {
        (0, 0)
    }
    fn interrupt(&self) {}
}

/// Query strings from arbitrary bytes, percent-encoded or not.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_=&,%0-9A-Z.-]{0,60}",
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        (
            "(symbols|channels|limit|interval)",
            "[A-Za-z0-9,_-]{0,30}",
            "(symbols|channels|limit|interval)",
            ".{0,10}"
        )
            .prop_map(|(k1, v1, k2, v2)| format!(
                "{k1}={v1}&{k2}={}",
                v2.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
            )),
    ]
}

proptest! {
    #![proptest_config(config_of(300))]

    /// The URL queries of `/ws` and the REST API: any query gets an answer that is not a
    /// server error, and every refusal has the JSON error shape.
    #[test]
    fn any_url_query_gets_a_typed_answer(q in query(), path in prop::sample::select(vec![
        "/ws", "/api/v1/candles/AAPL", "/api/v1/ticker/AAPL", "/api/v1/trades/AAPL", "/api/v1/symbols",
    ])) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let state = STATE.with(Clone::clone);
        let uri = format!("{path}?{q}");
        let Ok(req) = Request::get(uri.as_str()).body(Body::empty()) else {
            return Ok(()); // not a URI at all: hyper would refuse it before any handler
        };
        let res = rt.block_on(app(state).oneshot(req)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(!res.status().is_server_error(), "{} for {}", res.status(), uri);
        if res.status().is_client_error() {
            let body = rt.block_on(axum::body::to_bytes(res.into_body(), 1 << 20)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| TestCaseError::fail(format!("{uri}: {e}")))?;
            prop_assert_eq!(&v["type"], "error", "{}", uri);
        }
    }
}

thread_local! {
    static STATE: AppState = AppState::new(Config { sim_rate: 0, ..Config::default() }).expect("valid");
}
