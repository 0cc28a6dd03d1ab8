//! A deflate encoder for a feed: each message copies what it shares with the last message the
//! same client received on the same stream, and spells out the rest.
//!
//! Why not zlib: a stream's updates differ from their predecessor in a few digits, and the
//! predecessor is already in the client's window (RFC 7692 with context takeover). zlib finds
//! those copies too, but each message costs it a hash-table search, a Huffman tree decision
//! and 128 KiB of state per connection. Here the copies are found by walking the two messages
//! side by side (they have the same shape), written with deflate's fixed codes, and the only
//! state is the position of each stream's last message: 5-15x less CPU per message than zlib
//! level 1, and a smaller output (`docs/adr/0016-permessage-deflate-encoder.md`).
//!
//! The output is plain deflate: fixed-Huffman blocks ending in a sync flush with its trailer
//! stripped, which any inflater reads; a copy never reaches further back than the window the
//! client was told (`server_max_window_bits`).

use std::collections::HashMap;

use bytes::Bytes;

use crate::hub::StreamId;

/// The shortest copy worth writing: 4 literal bytes cost 32 bits, a copy about 20.
const MIN_COPY: usize = 4;
/// Deflate's longest copy.
const MAX_COPY: usize = 258;
/// How far ahead a resynchronisation looks, in the message and either way in its base: a
/// changed number rarely changes length by more than a few digits.
const LOOK_AHEAD: usize = 16;
const DRIFT: usize = 8;
/// Streams remembered at most; beyond it, those out of the window are forgotten first.
const MAX_STREAMS: usize = 1024;

/// One connection's encoder state.
#[derive(Debug)]
pub struct Delta {
    /// The window the client was told, in bytes.
    window: u64,
    /// Bytes the client's inflater has produced so far.
    pos: u64,
    /// Each stream's last message and where it started.
    last: HashMap<StreamId, Sent>,
}

#[derive(Debug)]
struct Sent {
    payload: Bytes,
    at: u64,
}

impl Delta {
    pub fn new(window_bits: u8) -> Self {
        Self {
            window: 1 << window_bits,
            pos: 0,
            last: HashMap::new(),
        }
    }

    /// Appends `payload` (one whole message on `stream`) to `out` as raw deflate data ending in
    /// a sync flush, its `00 00 ff ff` trailer stripped (RFC 7692 7.2.1).
    pub fn encode(&mut self, stream: StreamId, payload: &Bytes, out: &mut Vec<u8>) {
        let base = self
            .last
            .get(&stream)
            .map(|s| (&s.payload[..], self.pos - s.at))
            .filter(|(b, back)| back - b.len() as u64 <= self.window);
        encode(payload, base, self.window, out);
        if self.last.len() >= MAX_STREAMS && !self.last.contains_key(&stream) {
            self.forget_out_of_window();
            if self.last.len() >= MAX_STREAMS {
                self.last.clear();
            }
        }
        self.last.insert(
            stream,
            Sent {
                payload: payload.clone(),
                at: self.pos,
            },
        );
        self.pos += payload.len() as u64;
    }

    /// Forgets every message the window no longer holds, and with `all` every message: the
    /// state a quiet connection keeps is then nothing but its position.
    pub fn forget(&mut self, all: bool) {
        if all {
            self.last = HashMap::new();
        } else {
            self.forget_out_of_window();
        }
    }

    fn forget_out_of_window(&mut self) {
        let (pos, window) = (self.pos, self.window);
        self.last
            .retain(|_, s| pos - s.at - s.payload.len() as u64 <= window);
    }

    pub fn streams_held(&self) -> usize {
        self.last.len()
    }
}

/// Encodes `msg`; `base` is an earlier message still in the client's window and how many bytes
/// before `msg` it starts.
pub fn encode(msg: &[u8], base: Option<(&[u8], u64)>, window: u64, out: &mut Vec<u8>) {
    let mut bits = Bits::new(out);
    // BFINAL 0, BTYPE 01: a block with the fixed codes.
    bits.put(0b010, 3);
    let (n, mut i, mut lit) = (msg.len(), 0usize, 0usize);
    if let Some((b, back)) = base {
        let mut j = 0usize;
        while i + MIN_COPY <= n && j + MIN_COPY <= b.len() {
            let len = common(&msg[i..], &b[j..], MAX_COPY);
            if len >= MIN_COPY {
                // back + i - j >= 1: the base ends before the message starts.
                let dist = back + i as u64 - j as u64;
                if dist <= window {
                    bits.literals(&msg[lit..i]);
                    bits.copy(len, dist as usize);
                    i += len;
                    j += len;
                    lit = i;
                    continue;
                }
            }
            match resync(msg, b, i, j) {
                Some((ni, nj)) => (i, j) = (ni, nj),
                None => (i, j) = (i + LOOK_AHEAD, j + LOOK_AHEAD),
            }
        }
    }
    bits.literals(&msg[lit..]);
    // End of block (7 zero bits), then the sync flush's empty stored block: its 3 header bits,
    // padding to a byte, and LEN/NLEN, which RFC 7692 strips.
    bits.put(0, 7 + 3);
    bits.finish();
}

/// The next place after a difference where message and base agree again for [`MIN_COPY`]
/// bytes: the nearest in the message first, and for each the nearest in the base.
fn resync(msg: &[u8], b: &[u8], i: usize, j: usize) -> Option<(usize, usize)> {
    for k in 1..=LOOK_AHEAD {
        let at = i + k;
        let want = msg.get(at..at + MIN_COPY)?;
        for d in 0..=DRIFT {
            for jj in [(j + k).checked_add(d), (j + k).checked_sub(d)]
                .into_iter()
                .flatten()
                .take(if d == 0 { 1 } else { 2 })
            {
                if b.get(jj..jj + MIN_COPY) == Some(want) {
                    return Some((at, jj));
                }
            }
        }
    }
    None
}

/// How many leading bytes `a` and `b` share, up to `max`: eight at a time.
fn common(a: &[u8], b: &[u8], max: usize) -> usize {
    let n = a.len().min(b.len()).min(max);
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Deflate's bit order: least significant first, Huffman codes reversed.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    /// At most 32 bits at once.
    fn put(&mut self, bits: u32, len: u32) {
        self.acc |= u64::from(bits) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    fn literals(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let (code, len) = LITERAL[usize::from(b)];
            self.put(u32::from(code), u32::from(len));
        }
    }

    fn copy(&mut self, len: usize, dist: usize) {
        let l = LENGTH[len];
        self.put(l & 0xFF_FFFF, l >> 24);
        // Distance codes: 1-4 have no extra bits; above, two codes per power of two.
        let d = dist - 1;
        let (code, extra_len, extra) = if d < 4 {
            (d as u32, 0, 0)
        } else {
            let e = 31 - (d as u32).leading_zeros();
            let code = 2 * e + ((d as u32 >> (e - 1)) & 1);
            (code, e - 1, d as u32 & ((1 << (e - 1)) - 1))
        };
        self.put(
            u32::from(reverse(code as u16, 5)) | (extra << 5),
            5 + extra_len,
        );
    }

    fn finish(mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
    }
}

const fn reverse(code: u16, len: u32) -> u16 {
    code.reverse_bits() >> (16 - len)
}

/// The fixed code (RFC 1951 3.2.6) of each literal/length symbol: (reversed code, length).
const fn fixed(sym: u16) -> (u16, u8) {
    let (code, len) = match sym {
        0..=143 => (0x30 + sym, 8),
        144..=255 => (0x190 + sym - 144, 9),
        256..=279 => (sym - 256, 7),
        _ => (0xC0 + sym - 280, 8),
    };
    (reverse(code, len as u32), len)
}

const LITERAL: [(u16, u8); 256] = {
    let mut t = [(0u16, 0u8); 256];
    let mut s = 0;
    while s < 256 {
        t[s] = fixed(s as u16);
        s += 1;
    }
    t
};

/// Each copy length's symbol and extra bits, packed as bits | (bit count << 24).
const LENGTH: [u32; MAX_COPY + 1] = {
    const BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const EXTRA: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    let mut t = [0u32; MAX_COPY + 1];
    let mut len = 3;
    while len <= MAX_COPY {
        let mut c = 28;
        while BASE[c] as usize > len {
            c -= 1;
        }
        let (code, clen) = fixed(257 + c as u16);
        let extra = (len - BASE[c] as usize) as u32;
        t[len] = code as u32 | (extra << clen) | ((clen as u32 + EXTRA[c]) << 24);
        len += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::Channel;
    use zlib_rs::{Inflate, InflateFlush};

    /// A client's inflater: keeps its window between messages, as browsers do. zlib-rs keeps
    /// 32 KiB whatever it is told, so the window bound itself is checked by the conformance
    /// suite's strict inflater (section 12.2.2) and, where nothing is in reach, by
    /// `interleaved_streams_copy_only_within_the_window` here.
    struct Client {
        inflater: Inflate,
        window_bits: u8,
    }

    impl Client {
        fn new(window_bits: u8) -> Self {
            Self {
                inflater: Inflate::new(false, window_bits),
                window_bits,
            }
        }

        fn read(&mut self, deflated: &[u8]) -> Vec<u8> {
            let mut input = deflated.to_vec();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut out = vec![0u8; 1 << 16];
            let before = self.inflater.total_out();
            let (in0, window) = (self.inflater.total_in(), self.window_bits);
            self.inflater
                .decompress(&input, &mut out, InflateFlush::SyncFlush)
                .unwrap_or_else(|e| panic!("window {window}: {e:?}"));
            assert_eq!(self.inflater.total_in() - in0, input.len() as u64);
            out.truncate((self.inflater.total_out() - before) as usize);
            out
        }
    }

    fn update(symbol: &str, seq: u64, bid: u64, volume: u64) -> Bytes {
        Bytes::from(format!(
            r#"{{"type":"update","channel":"ticker","symbol":"{symbol}","seq":{seq},"ts":{ts},"data":{{"bid":"{}.{:02}","ask":"{}.{:02}","volume":"{volume}"}}}}"#,
            bid / 100,
            bid % 100,
            (bid + 1) / 100,
            (bid + 1) % 100,
            ts = 1_796_202_222_010_000 + seq * 10_000,
        ))
    }

    fn stream(i: u16) -> StreamId {
        StreamId::new(Channel::Ticker, i)
    }

    #[test]
    fn a_stream_of_updates_round_trips_and_shrinks_fivefold() {
        let mut enc = Delta::new(12);
        let mut client = Client::new(12);
        let (mut raw, mut wire) = (0, 0);
        for seq in 1..500u64 {
            let msg = update("AAPL", seq, 18_954 + seq % 7, 195_548_144 + seq * 13);
            let mut out = Vec::new();
            enc.encode(stream(0), &msg, &mut out);
            assert_eq!(client.read(&out), &msg[..], "seq {seq}");
            raw += msg.len();
            wire += out.len();
        }
        assert!(wire * 5 < raw, "{wire} of {raw} bytes");
    }

    #[test]
    fn interleaved_streams_copy_only_within_the_window() {
        // 40 streams of ~170-byte messages: a stream's predecessor is ~6.8 KB back, outside a
        // 4 KiB window and inside a 32 KiB one.
        for bits in [9u8, 12, 15] {
            let mut enc = Delta::new(bits);
            let mut client = Client::new(bits);
            let (mut raw, mut wire) = (0, 0);
            for seq in 1..200u64 {
                for s in 0..40u16 {
                    let msg = update(&format!("S{s}"), seq, 100 + seq * u64::from(s), seq);
                    let mut out = Vec::new();
                    enc.encode(stream(s), &msg, &mut out);
                    assert_eq!(client.read(&out), &msg[..], "bits {bits} seq {seq}");
                    if bits < 15 {
                        let mut literal = Vec::new();
                        encode(&msg, None, 1 << bits, &mut literal);
                        assert_eq!(out, literal, "bits {bits}: a copy from out of reach");
                    }
                    raw += msg.len();
                    wire += out.len();
                }
            }
            if bits == 15 {
                assert!(wire * 4 < raw, "{wire} of {raw} bytes");
            } else {
                // Nothing in reach: literals, a byte each, plus two bytes of framing.
                assert!(wire <= raw + 2 * 40 * 199, "{wire} of {raw} bytes");
            }
        }
    }

    #[test]
    fn arbitrary_messages_round_trip() {
        // Random bytes (literals above 143 take 9 bits), empty messages, long repeats (copies of
        // 258 and chains of them), numbers that change length, and a base wholly unlike the
        // message.
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut enc = Delta::new(15);
        let mut client = Client::new(15);
        let mut prev: Vec<u8> = Vec::new();
        for round in 0..2000 {
            let mut msg = prev.clone();
            match next() % 6 {
                0 => msg = (0..next() % 600).map(|_| next() as u8).collect(),
                1 => msg.clear(),
                2 => msg = vec![b'x'; (next() % 2000) as usize],
                _ => {
                    for _ in 0..1 + next() % 8 {
                        if msg.is_empty() {
                            msg.push(b'a');
                        }
                        let at = (next() as usize) % msg.len();
                        match next() % 3 {
                            0 => msg[at] = next() as u8,
                            1 => msg.insert(at, b'0' + (next() % 10) as u8),
                            _ => {
                                msg.remove(at);
                            }
                        }
                    }
                }
            }
            let s = stream((next() % 3) as u16);
            let bytes = Bytes::from(msg.clone());
            let mut out = Vec::new();
            enc.encode(s, &bytes, &mut out);
            assert_eq!(client.read(&out), msg, "round {round}");
            prev = msg;
        }
    }

    #[test]
    fn the_empty_message_is_what_rfc_7692_shows_for_it() {
        // 7.2.3.6: an empty fixed block and the flush fit in two bytes; 0x02 0x00 is what zlib
        // writes for it too.
        let mut out = Vec::new();
        encode(b"", None, 4096, &mut out);
        assert_eq!(out, [0x02, 0x00]);
        let mut out = Vec::new();
        encode(b"Hello", None, 4096, &mut out);
        // RFC 7692 7.2.3.1's example, compressed with the fixed codes.
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn forgetting_keeps_the_client_in_step() {
        let mut enc = Delta::new(10);
        let mut client = Client::new(10);
        for seq in 1..50u64 {
            let msg = update("AAPL", seq, 100, 7);
            let mut out = Vec::new();
            enc.encode(stream(0), &msg, &mut out);
            assert_eq!(client.read(&out), &msg[..]);
            if seq % 10 == 0 {
                enc.forget(seq % 20 == 0);
            }
        }
        assert_eq!(enc.streams_held(), 1);
        enc.forget(true);
        assert_eq!(enc.streams_held(), 0);
    }
}
