//! A client that asks for permessage-deflate (RFC 7692), as browsers do. tungstenite has no
//! compression, so this one speaks the little of RFC 6455 a reading client needs: the
//! handshake, unmasked server frames, masked pongs. It keeps its inflater's window across
//! messages (context takeover) and counts the bytes as they came over the socket.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zlib_rs::{Inflate, InflateFlush};

use crate::client::Tally;
use crate::stats::Shared;

/// A frame's payload limit: far above any update.
const MAX_FRAME: usize = 1 << 20;

pub async fn connection(index: usize, url: String, shared: Arc<Shared>) {
    let mut tally = Tally::new(index);
    match session(index, &url, &shared, &mut tally).await {
        Ok(()) => {}
        Err(Failure::Connect(e)) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.note_error(format!("connect: {e}"));
        }
        Err(Failure::Dropped(e)) => {
            if !shared.stop.load(Ordering::Acquire) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                shared.note_error(format!("a connection ended before the run did: {e}"));
            }
        }
    }
    tally.finish(&shared, index);
}

enum Failure {
    Connect(String),
    Dropped(String),
}

async fn session(
    index: usize,
    url: &str,
    shared: &Shared,
    tally: &mut Tally,
) -> Result<(), Failure> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| Failure::Connect(format!("{url}: only ws:// URLs")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let connect = TcpStream::connect(host);
    let mut sock = tokio::time::timeout(std::time::Duration::from_secs(30), connect)
        .await
        .map_err(|_| Failure::Connect("timed out".into()))?
        .map_err(|e| Failure::Connect(e.to_string()))?;
    sock.set_nodelay(true).ok();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    sock.write_all(request.as_bytes())
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let mut buf = Vec::with_capacity(8 * 1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 || read(&mut sock, &mut buf).await? == 0 {
            return Err(Failure::Connect("no handshake response".into()));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") {
        let line = head.lines().next().unwrap_or_default().to_string();
        return Err(Failure::Connect(line));
    }
    if !head.contains("sec-websocket-extensions: permessage-deflate") {
        return Err(Failure::Connect(
            "the server did not agree to compression".into(),
        ));
    }
    buf.drain(..head_end);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut inflater = Inflate::new(false, 15);
    let mut text = Vec::with_capacity(1024);
    loop {
        while let Some((b0, payload, used)) = frame(&buf)? {
            let (rsv1, opcode) = (b0 & 0x40 != 0, b0 & 0x0F);
            match opcode {
                0x1 => {
                    text.clear();
                    if rsv1 {
                        inflate(&mut inflater, payload, &mut text)?;
                    } else {
                        text.extend_from_slice(payload);
                    }
                    let s = std::str::from_utf8(&text)
                        .map_err(|_| Failure::Dropped("a text message is not UTF-8".into()))?;
                    tally.text(s, used, shared, index);
                }
                0x8 => {
                    return Err(Failure::Dropped(format!(
                        "closed by the server: {payload:?}"
                    )));
                }
                0x9 => {
                    let pong = masked(0xA, payload);
                    sock.write_all(&pong)
                        .await
                        .map_err(|e| Failure::Dropped(e.to_string()))?;
                }
                _ => {}
            }
            buf.drain(..used);
        }
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let n = tokio::select! {
            n = read(&mut sock, &mut buf) => n?,
            () = shared.wake.notified() => return Ok(()),
        };
        if n == 0 {
            return Err(Failure::Dropped("the server closed the socket".into()));
        }
    }
}

async fn read(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Failure> {
    buf.reserve(8 * 1024);
    sock.read_buf(buf)
        .await
        .map_err(|e| Failure::Dropped(e.to_string()))
}

/// A whole server frame: its first byte, payload, and length on the wire.
type Whole<'a> = (u8, &'a [u8], usize);

/// One whole unfragmented server frame at the front of `buf`.
fn frame(buf: &[u8]) -> Result<Option<Whole<'_>>, Failure> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x80 == 0 || b1 & 0x80 != 0 {
        return Err(Failure::Dropped(
            "a fragmented or masked server frame".into(),
        ));
    }
    let (len, at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX),
                10,
            )
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_FRAME {
        return Err(Failure::Dropped(format!("a frame of {len} bytes")));
    }
    Ok(buf.get(at..at + len).map(|p| (b0, p, at + len)))
}

/// Inflates one message, keeping the window for the next (RFC 7692 7.2.2).
fn inflate(inflater: &mut Inflate, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Failure> {
    let corrupt = |_| Failure::Dropped("a compressed message does not inflate".into());
    for input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
        let mut at = 0;
        loop {
            let start = out.len();
            out.resize(start + 4096, 0);
            let (in0, out0) = (inflater.total_in(), inflater.total_out());
            inflater
                .decompress(&input[at..], &mut out[start..], InflateFlush::SyncFlush)
                .map_err(corrupt)?;
            at += (inflater.total_in() - in0) as usize;
            let produced = (inflater.total_out() - out0) as usize;
            out.truncate(start + produced);
            if out.len() > MAX_FRAME {
                return Err(Failure::Dropped("a message inflates past 1 MiB".into()));
            }
            if at == input.len() && produced < 4096 {
                break;
            }
        }
    }
    Ok(())
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x17, 0xc3, 0x29];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len().min(125) as u8];
    out.extend_from_slice(&mask);
    out.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    out
}
