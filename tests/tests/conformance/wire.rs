//! The release binary as a process, and a WebSocket client written from RFC 6455 on raw
//! sockets, so that nothing in the client hides or repairs what the server sends.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tickstream_e2e::static_binary;

/// How long any single expectation may wait: generous, for a loaded two-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `tickstream`, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let child = Command::new(static_binary())
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the release binary");
        // Owned by the guard from here on: a failed start still kills the process.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let stderr = server.child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        while server.addr.port() == 0 {
            assert!(
                Instant::now() < deadline,
                "the server did not log its address within 10 s"
            );
            let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "listening" {
                server.addr = v["addr"]
                    .as_str()
                    .expect("addr")
                    .parse()
                    .expect("socket address");
            }
        }
        while Instant::now() < deadline {
            if http(server.addr, "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n").status == 200 {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the server did not become ready within 10 s");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` as is and reads the answer: its head, and a body of `Content-Length`.
pub fn http(addr: SocketAddr, request: &str) -> HttpAnswer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(request.as_bytes()).expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return HttpAnswer {
                    status: 0,
                    head: String::from_utf8_lossy(&buf).into(),
                    body: String::new(),
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut answer = HttpAnswer {
        status,
        head,
        body: String::new(),
    };
    let len: usize = answer
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    answer.body = String::from_utf8_lossy(&body).into();
    answer
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or(Value::Null)
    }
}

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONT: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A client frame's bytes: masked (as RFC 6455 requires of clients) unless `masked` is false.
pub fn encode(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(bit | n as u8),
        n @ 126..=0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close frame's payload.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A JSON `ping` operation, padded with whitespace to exactly `len` bytes when `len` allows.
pub fn ping_op(id: &str, len: usize) -> Vec<u8> {
    let mut s = format!("{{\"op\":\"ping\",\"id\":\"{id}\"}}").into_bytes();
    if s.len() < len {
        s.resize(len, b' ');
    }
    s
}

#[derive(Debug)]
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    /// permessage-deflate was agreed: RSV1 may mark a compressed data message.
    rsv1: bool,
}

impl Client {
    /// Opens `/ws` + `query` with a correct handshake and checks the server's answer.
    pub fn open(addr: SocketAddr, query: &str) -> Result<Client, String> {
        Self::open_with(addr, query, "").map(|(c, _)| c)
    }

    /// [`Self::open`] with `extra` header lines (each ending in CRLF); also returns the
    /// server's response head.
    pub fn open_with(
        addr: SocketAddr,
        query: &str,
        extra: &str,
    ) -> Result<(Client, String), String> {
        let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = format!(
            "GET /ws{query} HTTP/1.1\r\nHost: conformance\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("closed during the handshake".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("expected 101, got {head:?}"));
        }
        // RFC 6455 4.2.2: base64(SHA-1(key + GUID)); for this key the RFC gives the answer.
        if !head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        {
            return Err(format!("wrong or missing Sec-WebSocket-Accept: {head:?}"));
        }
        let rsv1 = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions: permessage-deflate")
        });
        Ok((
            Client {
                s,
                buf: buf[end..].to_vec(),
                rsv1,
            },
            head,
        ))
    }

    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.s.write_all(bytes).map_err(|e| format!("send: {e}"))
    }

    pub fn send(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.raw(&encode(fin, rsv, opcode, payload, true))
    }

    pub fn text(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send(true, 0, TEXT, payload)
    }

    /// The next frame, or `None` when the server closed the connection (or reset it).
    pub fn next(&mut self) -> Result<Option<Frame>, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((frame, used)) = parse(&self.buf, self.rsv1)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            if Instant::now() > deadline {
                return Err("no frame within 10 s".into());
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("no frame within 10 s".into());
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The next frame that is not a heartbeat or a ping from the server.
    pub fn next_reply(&mut self) -> Result<Frame, String> {
        loop {
            let f = self.next()?.ok_or("the server closed the connection")?;
            if f.opcode == PING || (f.opcode == TEXT && f.json()["type"] == "heartbeat") {
                continue;
            }
            return Ok(f);
        }
    }

    /// Expects a JSON text message of `kind`, and returns it.
    pub fn expect_json(&mut self, kind: &str) -> Result<Value, String> {
        let f = self.next_reply()?;
        let v = f.json();
        if f.opcode != TEXT || v["type"] != kind {
            return Err(format!(
                "expected a {kind:?} message, got opcode {} {:?}",
                f.opcode,
                String::from_utf8_lossy(&f.payload)
            ));
        }
        Ok(v)
    }

    /// Expects the answer to a JSON `ping` with this id.
    pub fn expect_pong_op(&mut self, id: &str) -> Result<(), String> {
        let v = self.expect_json("pong")?;
        if v["id"] != id {
            return Err(format!("pong for {:?}, wanted {id:?}", v["id"]));
        }
        Ok(())
    }

    /// Expects a pong frame carrying `payload`.
    pub fn expect_pong(&mut self, payload: &[u8]) -> Result<(), String> {
        let f = self.next_reply()?;
        if f.opcode != PONG || f.payload != payload {
            return Err(format!(
                "expected a pong of {} bytes, got {f:?}",
                payload.len()
            ));
        }
        Ok(())
    }

    /// Checks that the connection still answers: a ping frame gets its pong.
    pub fn expect_open(&mut self) -> Result<(), String> {
        self.send(true, 0, PING, b"still there?")?;
        self.expect_pong(b"still there?")
    }

    /// Expects the server to fail or close the connection with `code` (skipping text messages
    /// before it), answers the close as a client should, and expects the TCP connection to end.
    pub fn expect_close(&mut self, code: u16) -> Result<(), String> {
        let f = loop {
            let f = self.next()?.ok_or("closed without a close frame")?;
            if f.opcode == CLOSE {
                break f;
            }
        };
        check_server_frame(&f, false)?;
        if f.close_code() != Some(code) {
            return Err(format!(
                "expected close {code}, got {:?} {:?}",
                f.close_code(),
                String::from_utf8_lossy(f.payload.get(2..).unwrap_or_default())
            ));
        }
        if std::str::from_utf8(&f.payload[2..]).is_err() {
            return Err("the close reason is not UTF-8".into());
        }
        let _ = self.send(true, 0, CLOSE, &close_payload(code, b""));
        self.expect_eof()
    }

    /// Expects the server to end the TCP connection, with no frame before it.
    pub fn expect_eof(&mut self) -> Result<(), String> {
        match self.next()? {
            None => Ok(()),
            Some(f) => Err(format!("expected the connection to end, got {f:?}")),
        }
    }
}

/// What every server frame must be: unmasked, no reserved bits (but RSV1 on a data frame when
/// permessage-deflate was agreed), control frames whole and short.
pub fn check_server_frame(f: &Frame, rsv1: bool) -> Result<(), String> {
    let allowed = if rsv1 && f.opcode < CLOSE { 0b100 } else { 0 };
    if f.masked || f.rsv & !allowed != 0 {
        return Err(format!("server frame masked or with reserved bits: {f:?}"));
    }
    if f.opcode >= CLOSE && (!f.fin || f.payload.len() > 125) {
        return Err(format!(
            "server control frame fragmented or too long: {f:?}"
        ));
    }
    Ok(())
}

fn parse(buf: &[u8], rsv1: bool) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as usize, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                (
                    usize::try_from(u64::from_be_bytes(a)).map_err(|e| e.to_string())?,
                    10,
                )
            }
            None => return Ok(None),
        },
        n => (usize::from(n), 2),
    };
    let mut mask = None;
    if masked {
        let Some(m) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        mask = Some([m[0], m[1], m[2], m[3]]);
        at += 4;
    }
    let Some(data) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let payload = match mask {
        Some(m) => data.iter().enumerate().map(|(i, b)| b ^ m[i % 4]).collect(),
        None => data.to_vec(),
    };
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        masked,
        payload,
    };
    check_server_frame(&frame, rsv1)?;
    Ok(Some((frame, at + len)))
}
