//! Our own WebSocket and HTTP conformance suite, organised like the Autobahn|Testsuite's
//! sections (the suite itself needs Python 2, which our machines do not have). Every case
//! runs against the release binary (`TICKSTREAM_STATIC_BIN`, the static musl build that
//! ships) through a client written from RFC 6455 on raw sockets (`wire.rs`), so neither a
//! client library's leniency nor our own code's is in the loop.
//!
//! Each section starts its own server, runs its cases one after another on fresh connections,
//! prints a report line per case and fails with every case that failed.
//!
//! 1 framing · 2 pings and pongs · 3 reserved bits · 4 opcodes · 5 fragmentation · 6 UTF-8 ·
//! 7 close handling · 9 limits · 10 the HTTP side of the handshake and the REST errors ·
//! 12 permessage-deflate.

mod close;
mod deflate;
mod fragmentation;
mod framing;
mod http;
mod limits;
mod pings;
mod strict_inflate;
mod utf8;
mod wire;

use std::net::SocketAddr;

use wire::Server;

/// A case: its number, what it checks, and the check.
pub type Case = (
    &'static str,
    &'static str,
    fn(SocketAddr) -> Result<(), String>,
);

/// Runs every case of a section against a server started with `args`.
fn section(name: &str, args: &[&str], cases: &[Case]) {
    let server = Server::start(args);
    let mut failed = Vec::new();
    for (id, what, check) in cases {
        let started = std::time::Instant::now();
        let result = check(server.addr);
        let ms = started.elapsed().as_millis();
        match &result {
            Ok(()) => println!("{id:<8} OK    {ms:>5} ms  {what}"),
            Err(why) => {
                println!("{id:<8} FAIL  {ms:>5} ms  {what}: {why}");
                failed.push(format!("{id} {what}: {why}"));
            }
        }
    }
    println!(
        "{name}: {} of {} cases passed",
        cases.len() - failed.len(),
        cases.len()
    );
    assert!(
        failed.is_empty(),
        "{name}: failed cases:\n{}",
        failed.join("\n")
    );
}

#[test]
fn s1_framing() {
    section("1 framing", &[], framing::CASES);
}

#[test]
fn s2_pings_and_pongs() {
    section("2 pings and pongs", &[], pings::CASES);
}

#[test]
fn s3_reserved_bits_and_s4_opcodes() {
    section("3 reserved bits, 4 opcodes", &[], framing::RESERVED);
}

#[test]
fn s5_fragmentation() {
    section("5 fragmentation", &[], fragmentation::CASES);
}

#[test]
fn s6_utf8() {
    section("6 UTF-8", &[], utf8::CASES);
}

#[test]
fn s7_close_handling() {
    section("7 close handling", &[], close::CASES);
}

#[test]
fn s9_limits() {
    section(
        "9 limits",
        &["--max-message-rate", "10", "--max-subscriptions", "3"],
        limits::CASES,
    );
}

#[test]
fn s12_permessage_deflate() {
    section(
        "12 permessage-deflate",
        &["--sim-rate", "100"],
        deflate::CASES,
    );
}

/// The check behind 12.2 can fail: zlib's dynamic blocks round-trip through the strict
/// inflater, and a copy from past the window it was told is refused.
#[test]
fn strict_inflater_reads_zlib_and_refuses_far_copies() {
    use zlib_rs::{Deflate, DeflateFlush};
    let text: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("{{\"seq\":{i},\"bid\":\"{}.{}\"}}", i % 97, i % 13).into_bytes())
        .collect();
    let deflated = |window: u8| {
        let mut d = Deflate::new(9, false, window);
        let mut out = vec![0u8; text.len() + 1024];
        let _ = d.compress(&text, &mut out, DeflateFlush::SyncFlush);
        out.truncate(d.total_out() as usize - 4);
        out
    };
    let mut wide = strict_inflate::StrictInflater::new(15);
    assert_eq!(wide.message(&deflated(15)).as_deref(), Ok(&text[..]));
    let mut narrow = strict_inflate::StrictInflater::new(9);
    let refused = narrow
        .message(&deflated(15))
        .expect_err("a 512-byte window");
    assert!(refused.contains("past the 512-byte window"), "{refused}");
    let mut narrow = strict_inflate::StrictInflater::new(9);
    assert_eq!(narrow.message(&deflated(9)).as_deref(), Ok(&text[..]));
}

/// The same cases with zlib compressing instead of our own encoder.
#[test]
fn s12_permessage_deflate_zlib() {
    section(
        "12 permessage-deflate (zlib encoder)",
        &["--sim-rate", "100", "--ws-compression-encoder", "zlib"],
        deflate::CASES,
    );
}

#[test]
fn s10_http() {
    section("10 HTTP", &[], http::CASES);
}
