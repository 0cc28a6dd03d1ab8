//! Measures the read path's frame parser against tungstenite's `FrameHeader::parse` (already a
//! dependency) on the frames clients send: for ADR-0014. Run in release:
//!
//!     cargo run --release -p tickstream --example read_path_parsers
//!
//! Both parse the same masked frames from one buffer and produce the unmasked payload; for
//! tungstenite the checks RFC 6455 asks of a server that its header parser leaves to its codec
//! (reserved bits, masking required, control frames whole and short, the top bit of a 64-bit
//! length) are added, so the two do the same work.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use tickstream::ws::frame;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, OpCode};

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn ours(buf: &[u8]) -> usize {
    let (mut at, mut bytes) = (0, 0);
    while let Ok(Some((f, used))) = frame::parse(&buf[at..], 64 * 1024) {
        bytes += black_box(f.payload).len();
        at += used;
    }
    bytes
}

fn tungstenite_header(buf: &[u8]) -> usize {
    let mut cursor = Cursor::new(buf);
    let mut bytes = 0;
    while let Ok(Some((h, len))) = FrameHeader::parse(&mut cursor) {
        let Some(mask) = h.mask else { break };
        let control = matches!(h.opcode, OpCode::Control(_));
        if h.rsv1 || h.rsv2 || h.rsv3 || len >> 63 != 0 || len > 64 * 1024 {
            break;
        }
        if control
            && (!h.is_final
                || len > 125
                || matches!(h.opcode, OpCode::Control(Control::Reserved(_))))
        {
            break;
        }
        let start = cursor.position() as usize;
        let end = start + len as usize;
        let Some(data) = buf.get(start..end) else {
            break;
        };
        let payload: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        bytes += black_box(payload).len();
        cursor.set_position(end as u64);
    }
    bytes
}

fn main() {
    let subscribe =
        br#"{"op":"subscribe","id":1,"symbols":["AAPL","MSFT"],"channels":["ticker","trades"]}"#;
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "subscribe (84 B) x 1,000",
            (0..1000).flat_map(|_| masked(1, subscribe)).collect(),
        ),
        (
            "ping (0 B) x 1,000",
            (0..1000).flat_map(|_| masked(9, b"")).collect(),
        ),
        (
            "4 KiB text x 100",
            (0..100).flat_map(|_| masked(1, &[b' '; 4096])).collect(),
        ),
    ];
    for (name, buf) in &cases {
        assert_eq!(ours(buf), tungstenite_header(buf));
        let frames = if name.contains("x 100") { 100 } else { 1000 };
        let mut line = format!("{name:<26}");
        for (label, f) in [
            ("ours", ours as fn(&[u8]) -> usize),
            ("tungstenite FrameHeader", tungstenite_header),
        ] {
            let rounds = 2000;
            let t = Instant::now();
            for _ in 0..rounds {
                black_box(f(black_box(buf)));
            }
            let ns = t.elapsed().as_nanos() as f64 / f64::from(rounds) / f64::from(frames);
            line.push_str(&format!("  {label}: {ns:>7.1} ns/frame"));
        }
        println!("{line}");
    }
}
