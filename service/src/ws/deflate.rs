//! permessage-deflate (RFC 7692): the offer a client makes, the answer we give, and the two
//! directions of compression.
//!
//! Why: a fan-out service's largest bill is egress, and our updates are small JSON objects that
//! repeat their keys and most of their values from one message to the next. With the context
//! kept between messages a ticker update shrinks about eightfold (`docs/benchmarks.md`).
//!
//! - Server to client, with context takeover (the default): our own encoder ([`super::delta`])
//!   copies from the client's last message on the same stream, keeping only positions per
//!   connection. Without context takeover, or with `--ws-compression-encoder zlib`: one zlib
//!   compressor per connection, created on its first message. Either drops its state when the
//!   connection has been quiet for a heartbeat (RFC 7692 lets a sender start afresh at any
//!   message; the client's decompressor does not notice), so an idle client costs nothing.
//! - Client to server: we always answer `client_no_context_takeover`, so a client message is
//!   inflated on its own and no inflater outlives it. Its inflated size is bounded (a
//!   decompression bomb is refused with 1009, however small its frames).

use bytes::Bytes;

use super::delta::Delta;
use crate::hub::StreamId;
use zlib_rs::{
    Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status, Strategy,
};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The trailer a sync flush ends with, which the sender strips and the receiver puts back
/// (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How messages to clients are compressed when the context is kept between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoder {
    /// Copies from the same stream's last message, fixed codes: the cheapest, no state but
    /// positions.
    Delta,
    /// zlib at `level`: finds copies across streams too (smaller at several streams per
    /// client), for several times the CPU and ~150 KiB per active connection.
    Zlib,
}

/// The server's settings (`--ws-compression*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The largest LZ77 window we compress with, as log2 bytes (9-15). Smaller saves memory
    /// per compressing connection and costs little on messages this small.
    pub window_bits: u8,
    /// zlib's memory level (1-9): the size of the compressor's symbol buffer.
    pub mem_level: u8,
    /// zlib's compression level (1-9).
    pub level: u8,
    /// Keep the compression context from message to message (far better ratios); off answers
    /// every offer with `server_no_context_takeover`.
    pub context_takeover: bool,
    pub encoder: Encoder,
}

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub window_bits: u8,
    pub context_takeover: bool,
}

/// The first offer of `permessage-deflate` in `headers` (each a `Sec-WebSocket-Extensions`
/// value) that we can accept, and the response header that accepts it. Offers with unknown,
/// repeated or invalid parameters are declined (RFC 7692 5), as is one that asks for an 8-bit
/// window: zlib cannot compress with one.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    ours: &Settings,
) -> Option<(Agreed, String)> {
    headers
        .into_iter()
        .flat_map(split_offers)
        .find_map(|offer| accept(&offer, ours))
}

/// One extension offer: its name and parameters (values unquoted).
#[derive(Debug, PartialEq, Eq)]
struct Offer {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Splits a header value into offers: `ext *( ";" param [ "=" value ] )` separated by commas;
/// a value may be a quoted string (RFC 6455 9.1). A malformed element becomes an offer no one
/// accepts.
fn split_offers(value: &str) -> Vec<Offer> {
    let mut offers = Vec::new();
    let mut parts: Vec<String> = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    let mut push_offer = |parts: &mut Vec<String>| {
        let mut items = parts.drain(..).map(|p| p.trim().to_string());
        let name = items.next().unwrap_or_default();
        let params = items
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(unquote(v.trim()))),
                None => (p, None),
            })
            .collect();
        offers.push(Offer { name, params });
        parts.push(String::new());
    };
    for c in value.chars() {
        let current = parts.last_mut().expect("parts is never empty");
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            current.push(c);
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                current.push(c);
            }
            ';' => parts.push(String::new()),
            ',' => push_offer(&mut parts),
            _ => current.push(c),
        }
    }
    push_offer(&mut parts);
    offers.retain(|o| !o.name.is_empty());
    offers
}

/// A token or a quoted string's content. An unterminated quote keeps its quote, which no
/// parameter accepts.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace('\\', ""),
        None => v.to_string(),
    }
}

/// A window size: `1*DIGIT` from 8 to 15 without a leading zero (RFC 7692 7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.starts_with('0') || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

fn accept(offer: &Offer, ours: &Settings) -> Option<(Agreed, String)> {
    if !offer.name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut server_no_context = false;
    let mut server_max: Option<u8> = None;
    for (key, value) in &offer.params {
        if seen.contains(&key.as_str()) {
            return None;
        }
        seen.push(key);
        match (key.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => server_no_context = true,
            ("client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => server_max = Some(window_bits(v)?),
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    let window = match server_max {
        // zlib's raw deflate turns a window of 8 into 9: it cannot honour this offer.
        Some(8) => return None,
        Some(max) => max.min(ours.window_bits),
        None => ours.window_bits,
    };
    let agreed = Agreed {
        window_bits: window,
        context_takeover: ours.context_takeover && !server_no_context,
    };
    let mut response = NAME.to_string();
    if !agreed.context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    // Every client must support this (RFC 7692 7.1.1.2): no inflater outlives its message.
    response.push_str("; client_no_context_takeover");
    if server_max.is_some() {
        response.push_str(&format!("; server_max_window_bits={window}"));
    }
    Some((agreed, response))
}

/// One connection's compressor: each message becomes one compressed frame (RSV1 set).
pub struct Compressor {
    agreed: Agreed,
    settings: Settings,
    engine: Engine,
    /// Scratch output, reused.
    out: Vec<u8>,
    /// A message was compressed since the last [`Self::release_if_idle`].
    used: bool,
}

enum Engine {
    Delta(Delta),
    /// Created on the first message; dropped by [`Compressor::release_if_idle`].
    Zlib(Option<Deflate>),
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = match &self.engine {
            Engine::Delta(d) => format!("delta ({} streams held)", d.streams_held()),
            Engine::Zlib(z) => format!("zlib (allocated: {})", z.is_some()),
        };
        f.debug_struct("Compressor")
            .field("agreed", &self.agreed)
            .field("engine", &engine)
            .finish()
    }
}

/// The compressor refused its input: zlib reported an error it never reports for valid
/// settings. The connection should end.
#[derive(Debug, thiserror::Error)]
#[error("compression failed: {0}")]
pub struct CompressError(&'static str);

/// A compressed frame, the size of its payload and of the message it came from.
#[derive(Debug)]
pub struct Compressed {
    pub frame: Bytes,
    pub payload_len: usize,
    pub raw_len: usize,
}

impl Compressor {
    pub fn new(agreed: Agreed, settings: Settings) -> Self {
        let engine = if agreed.context_takeover && settings.encoder == Encoder::Delta {
            Engine::Delta(Delta::new(agreed.window_bits))
        } else {
            Engine::Zlib(None)
        };
        Self {
            agreed,
            settings,
            engine,
            out: Vec::new(),
            used: false,
        }
    }

    /// Compresses the message in `wire` (a whole uncompressed frame) on `stream`; `None` for a
    /// frame that is not a message.
    pub fn compress(
        &mut self,
        wire: &Bytes,
        stream: StreamId,
    ) -> Result<Option<Compressed>, CompressError> {
        let Some((opcode, payload)) = super::frame::server_payload(wire) else {
            return Ok(None);
        };
        self.used = true;
        self.out.clear();
        match &mut self.engine {
            Engine::Delta(delta) => {
                let payload = wire.slice(wire.len() - payload.len()..);
                delta.encode(stream, &payload, &mut self.out);
            }
            Engine::Zlib(state) => {
                let deflate = state.get_or_insert_with(|| zlib(self.agreed, self.settings));
                zlib_sync_flush(deflate, payload, &mut self.out)?;
                if !self.agreed.context_takeover {
                    deflate.reset();
                }
            }
        }
        let raw_len = payload.len();
        let frame = super::frame::compressed_frame(opcode, &self.out);
        let payload_len = self.out.len();
        // A burst (a replay) must not leave a large buffer behind.
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(Some(Compressed {
            frame,
            payload_len,
            raw_len,
        }))
    }

    /// Drops the compressor's state if no message went through it since the last call: a
    /// quiet connection keeps none. Returns whether state is held.
    pub fn release_if_idle(&mut self) -> bool {
        let idle = !self.used;
        if idle {
            self.out = Vec::new();
        }
        self.used = false;
        match &mut self.engine {
            Engine::Delta(delta) => {
                delta.forget(idle);
                delta.streams_held() > 0
            }
            Engine::Zlib(state) => {
                if idle {
                    *state = None;
                }
                state.is_some()
            }
        }
    }
}

fn zlib(agreed: Agreed, settings: Settings) -> Deflate {
    Deflate::new_with_config(DeflateConfig {
        level: i32::from(settings.level),
        method: Method::Deflated,
        // Negative: a raw deflate stream, no zlib header.
        window_bits: -i32::from(agreed.window_bits),
        mem_level: i32::from(settings.mem_level),
        // Messages this small rarely pay for a dynamic Huffman table, and deciding costs a
        // third of zlib's time per message (docs/benchmarks.md).
        strategy: Strategy::Fixed,
    })
}

/// Compresses `payload` into `out` and flushes, stripping the flush's trailer.
fn zlib_sync_flush(
    deflate: &mut Deflate,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    // Deflate never grows data by more than a few bytes per block: one pass, one flush.
    out.resize(payload.len() + payload.len() / 64 + 64, 0);
    let (mut read, mut written) = (0usize, 0usize);
    loop {
        let (in0, out0) = (deflate.total_in(), deflate.total_out());
        let status = deflate
            .compress(
                &payload[read..],
                &mut out[written..],
                DeflateFlush::SyncFlush,
            )
            .map_err(|e| CompressError(e.as_str()))?;
        read += (deflate.total_in() - in0) as usize;
        written += (deflate.total_out() - out0) as usize;
        // The flush is complete once all input is taken and room was left over.
        if read == payload.len() && written < out.len() {
            break;
        }
        if status == Status::BufError && written < out.len() && read < payload.len() {
            return Err(CompressError("no progress"));
        }
        let grow = out.len();
        out.resize(grow * 2, 0);
    }
    if !out[..written].ends_with(&TAIL) {
        return Err(CompressError("sync flush without its trailer"));
    }
    out.truncate(written - TAIL.len());
    Ok(())
}

/// Why a compressed client message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message limit: 1009.
    #[error("the message inflates past {0} bytes")]
    TooBig(usize),
    /// Not a valid deflate stream: 1007.
    #[error("the message is not valid deflate data")]
    Corrupt,
}

impl InflateError {
    pub fn close_code(&self) -> u16 {
        match self {
            InflateError::TooBig(_) => 1009,
            InflateError::Corrupt => 1007,
        }
    }
}

/// Inflates one client message, refusing to produce more than `limit` bytes: the output is
/// grown in steps and checked before each, so a bomb costs at most `limit` bytes of memory.
pub fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Inflate::new(false, 15);
    let mut out = vec![0u8; (payload.len() * 4).clamp(256, limit.saturating_add(1))];
    let mut written = 0usize;
    // The stripped trailer goes back at the end of the input (RFC 7692 7.2.2).
    for input in [payload, &TAIL[..]] {
        let mut at = 0;
        loop {
            let (in0, out0) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(&input[at..], &mut out[written..], InflateFlush::SyncFlush)
                .map_err(|_| InflateError::Corrupt)?;
            at += (inflater.total_in() - in0) as usize;
            written += (inflater.total_out() - out0) as usize;
            if written > limit {
                return Err(InflateError::TooBig(limit));
            }
            if status == Status::StreamEnd {
                // A final block: whatever follows is not ours to read.
                return if at == input.len() || input == &TAIL[..] {
                    out.truncate(written);
                    Ok(out)
                } else {
                    Err(InflateError::Corrupt)
                };
            }
            if written == out.len() {
                let grow = (out.len() * 2).min(limit.saturating_add(1));
                if grow <= out.len() {
                    return Err(InflateError::TooBig(limit));
                }
                out.resize(grow, 0);
                continue;
            }
            if at == input.len() {
                break;
            }
            if inflater.total_in() == in0 && inflater.total_out() == out0 {
                return Err(InflateError::Corrupt);
            }
        }
    }
    out.truncate(written);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Settings = Settings {
        window_bits: 10,
        mem_level: 1,
        level: 6,
        context_takeover: true,
        encoder: Encoder::Delta,
    };

    /// Compresses one message of `opcode` on an arbitrary stream.
    fn frame(c: &mut Compressor, opcode: u8, payload: &[u8]) -> Bytes {
        let wire = crate::ws::frame::server_frame(opcode, payload);
        let stream = StreamId::new(crate::market::Channel::Ticker, 0);
        let out = c
            .compress(&wire, stream)
            .expect("compresses")
            .expect("a message");
        let body = crate::ws::frame::server_payload(&out.frame).map(|(_, b)| b.len());
        assert_eq!(body, Some(out.payload_len));
        out.frame
    }

    fn agree(header: &str) -> Option<String> {
        negotiate([header], &OURS).map(|(_, r)| r)
    }

    #[test]
    fn offers_are_accepted_declined_or_skipped_as_rfc_7692_says() {
        let plain = "permessage-deflate; client_no_context_takeover";
        // What browsers send.
        assert_eq!(
            agree("permessage-deflate; client_max_window_bits").as_deref(),
            Some(plain)
        );
        assert_eq!(agree("permessage-deflate").as_deref(), Some(plain));
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=12").as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
        );
        assert_eq!(
            agree("permessage-deflate; server_max_window_bits=\"9\"").as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9")
        );
        assert_eq!(
            agree("permessage-deflate; server_no_context_takeover").as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        // Declined: unknown, repeated, valueless or out-of-range parameters, an 8-bit window.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(agree(bad), None, "{bad}");
        }
        // A declined offer falls through to the next one, in order.
        assert_eq!(
            agree("permessage-deflate; foo=1, permessage-deflate; server_max_window_bits=11")
                .as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
        );
        assert_eq!(
            negotiate(["foo", "permessage-deflate"], &OURS).map(|(a, _)| a),
            Some(Agreed {
                window_bits: 10,
                context_takeover: true
            })
        );
        let off = Settings {
            context_takeover: false,
            ..OURS
        };
        assert_eq!(
            negotiate(["permessage-deflate"], &off)
                .map(|(_, r)| r)
                .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
    }

    /// A decoder that keeps its window between messages, as a browser does.
    fn client_inflate(inflater: &mut Inflate, frame: &[u8]) -> Vec<u8> {
        assert_eq!(frame[0] & 0x40, 0x40, "RSV1 marks a compressed message");
        let (len, at) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        let mut input = frame[at..at + len].to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = vec![0u8; 4096];
        let before = inflater.total_out();
        inflater
            .decompress(&input, &mut out, InflateFlush::SyncFlush)
            .expect("inflates");
        out.truncate((inflater.total_out() - before) as usize);
        out
    }

    #[test]
    fn messages_round_trip_with_and_without_context_and_shrink_with_it() {
        let msg = |i: u32| {
            format!(
                r#"{{"type":"update","channel":"ticker","symbol":"AAPL","seq":{i},"ts":1764000000{i:06},"data":{{"bid":"192.{i}","ask":"192.22","last":"192.20","volume":"1503952{i}"}}}}"#
            )
        };
        for (context_takeover, encoder) in [
            (true, Encoder::Delta),
            (true, Encoder::Zlib),
            (false, Encoder::Delta),
        ] {
            let agreed = Agreed {
                window_bits: 10,
                context_takeover,
            };
            let mut c = Compressor::new(agreed, Settings { encoder, ..OURS });
            let mut client = Inflate::new(false, 10);
            let mut wire = 0;
            for i in 0..50 {
                let frame = frame(&mut c, 0x1, msg(i).as_bytes());
                wire += frame.len();
                assert_eq!(client_inflate(&mut client, &frame), msg(i).as_bytes());
            }
            let raw: usize = (0..50).map(|i| msg(i).len() + 4).sum();
            if context_takeover {
                assert!(wire * 4 < raw, "{encoder:?}: {wire} of {raw} bytes");
            } else {
                assert!(wire < raw, "without context: {wire} of {raw} bytes");
            }
        }
        // An empty message: zlib writes one byte, 0x00 (RFC 7692 7.2.3.6), our encoder an
        // empty fixed block, 0x02 0x00.
        for (encoder, empty) in [
            (Encoder::Zlib, &[0xC1, 0x01, 0x00][..]),
            (Encoder::Delta, &[0xC1, 0x02, 0x02, 0x00]),
        ] {
            let agreed = Agreed {
                window_bits: 9,
                context_takeover: true,
            };
            let mut c = Compressor::new(agreed, Settings { encoder, ..OURS });
            assert_eq!(&frame(&mut c, 0x1, b"")[..], empty, "{encoder:?}");
        }
    }

    #[test]
    fn a_quiet_compressor_is_released_and_starts_afresh_without_the_client_noticing() {
        let agreed = Agreed {
            window_bits: 10,
            context_takeover: true,
        };
        for encoder in [Encoder::Delta, Encoder::Zlib] {
            let mut c = Compressor::new(agreed, Settings { encoder, ..OURS });
            let mut client = Inflate::new(false, 10);
            let text = br#"{"type":"update","channel":"ticker","symbol":"AAPL"}"#;
            client_inflate(&mut client, &frame(&mut c, 0x1, text));
            assert!(c.release_if_idle(), "used since the last check: kept");
            assert!(!c.release_if_idle(), "quiet for a whole period: released");
            let again = frame(&mut c, 0x1, text);
            assert_eq!(client_inflate(&mut client, &again), text);
        }
    }

    #[test]
    fn inflation_is_bounded_and_corrupt_input_is_refused() {
        let mut c = Compressor::new(
            Agreed {
                window_bits: 15,
                context_takeover: false,
            },
            OURS,
        );
        let body = |f: &Bytes| f[if f[1] == 126 { 4 } else { 2 }..].to_vec();
        let hello = frame(&mut c, 0x1, b"{\"op\":\"ping\"}");
        assert_eq!(
            inflate(&body(&hello), 1024),
            Ok(b"{\"op\":\"ping\"}".to_vec())
        );
        // 1 MiB of zeros compresses to a few kilobytes: refused at the limit, not after.
        let zeros = vec![0u8; 1 << 20];
        let bomb = frame(&mut c, 0x1, &zeros);
        assert!(bomb.len() < 8192, "{} bytes", bomb.len());
        let payload = body(&bomb);
        assert_eq!(inflate(&payload, 65_536), Err(InflateError::TooBig(65_536)));
        assert_eq!(inflate(&payload, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0xff], 1024),
            Err(InflateError::Corrupt)
        );
    }
}
