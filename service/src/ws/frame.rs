//! WebSocket framing (RFC 6455) for our side of the protocol: server frames are built once per
//! event and shared by every subscriber; client frames are parsed from a byte buffer.

use bytes::{BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// An unmasked, unfragmented server frame: header and payload in one buffer.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Bytes {
    build(0x80 | opcode, payload)
}

/// [`server_frame`] with RSV1 set: a permessage-deflate message (RFC 7692 6).
pub fn compressed_frame(opcode: u8, payload: &[u8]) -> Bytes {
    build(0x80 | 0x40 | opcode, payload)
}

/// A frame from its first byte (FIN, RSV bits, opcode) and payload.
fn build(first: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.put_u8(first);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
    out.freeze()
}

/// The opcode and payload of a frame built by [`server_frame`].
pub fn server_payload(wire: &[u8]) -> Option<(u8, &[u8])> {
    let (&b0, rest) = wire.split_first()?;
    let (&b1, rest) = rest.split_first()?;
    let skip = match b1 & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    Some((b0 & 0x0F, rest.get(skip..)?))
}

pub fn text(payload: &str) -> Bytes {
    server_frame(OP_TEXT, payload.as_bytes())
}

pub fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    server_frame(OP_CLOSE, &payload)
}

/// Whether a close code may be sent on the wire (RFC 6455 7.4): the assigned codes
/// 1000-1003 and 1007-1014, and the ranges for libraries (3000-3999) and applications
/// (4000-4999). 1004-1006 and 1015 are reserved and never sent; the rest are unassigned.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code of a client's close frame, or the code to fail the connection with: a one-byte
/// payload or a code that may not be sent is a protocol error (1002), a reason that is not
/// UTF-8 is 1007 (RFC 6455 5.5.1, 7.4). An empty close is a normal one.
pub fn client_close_code(payload: &[u8]) -> Result<u16, u16> {
    match payload {
        [] => Ok(1000),
        [_] => Err(1002),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_allowed(code) {
                return Err(1002);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(1007);
            }
            Ok(code)
        }
    }
}

/// One frame from the client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
    /// RSV1: with permessage-deflate, the first frame of a compressed message.
    pub compressed: bool,
}

/// Why a client's bytes are not a valid frame; each maps to a close code.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("frame of {0} bytes exceeds the limit")]
    TooBig(u64),
}

impl FrameError {
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::TooBig(_) => 1009,
        }
    }
}

/// Parses one frame from the start of `buf`. `Ok(None)` means more bytes are needed; a
/// declared length over `max` is refused before its payload is read.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(ClientFrame, usize)>, FrameError> {
    parse_with(buf, max, false)
}

/// [`parse`] where `rsv1` says whether RSV1 may be set (permessage-deflate was agreed). It is
/// then accepted on data frames only; whether it starts a message is the reassembler's check.
pub fn parse_with(
    buf: &[u8],
    max: usize,
    rsv1: bool,
) -> Result<Option<(ClientFrame, usize)>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let allowed = if rsv1 { 0x40 } else { 0 };
    if b0 & 0x70 & !allowed != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let compressed = b0 & 0x40 != 0;
    if compressed && b0 & 0x08 != 0 {
        return Err(FrameError::Protocol("RSV1 on a control frame"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(FrameError::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            // RFC 6455 5.2: the most significant bit of a 64-bit length must be 0.
            if a[0] & 0x80 != 0 {
                return Err(FrameError::Protocol("64-bit length with its top bit set"));
            }
            (u64::from_be_bytes(a), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(FrameError::Protocol(
            "control frames must be whole and short",
        ));
    }
    if len > max as u64 {
        return Err(FrameError::TooBig(len));
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [mask[0], mask[1], mask[2], mask[3]];
    at += 4;
    let end = at + len as usize;
    let Some(data) = buf.get(at..end) else {
        return Ok(None);
    };
    let payload = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Ok(Some((
        ClientFrame {
            fin,
            opcode,
            payload,
            compressed,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![b0];
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

    #[test]
    fn parses_masked_frames_and_waits_for_more() {
        let bytes = masked(0x81, b"hello");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], 100), Ok(None), "cut at {cut}");
        }
        let (frame, used) = parse(&bytes, 100).expect("valid").expect("complete");
        assert_eq!(
            (frame.fin, frame.opcode, frame.payload.as_slice(), used),
            (true, OP_TEXT, &b"hello"[..], bytes.len())
        );
        let long = masked(0x82, &[7u8; 300]);
        let (frame, _) = parse(&long, 1000).expect("valid").expect("complete");
        assert_eq!(frame.payload, vec![7u8; 300]);
    }

    #[test]
    fn refuses_bad_frames() {
        assert_eq!(
            parse(&[0x81, 0x05, b'h'], 100),
            Err(FrameError::Protocol("client frames must be masked"))
        );
        assert!(matches!(
            parse(&masked(0xC1, b"x"), 100),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            parse(&masked(0x83, b"x"), 100),
            Err(FrameError::Protocol(_))
        ));
        assert!(
            matches!(
                parse(&masked(0x09, b"x"), 100),
                Err(FrameError::Protocol(_))
            ),
            "fragmented ping"
        );
        assert_eq!(
            parse(&masked(0x81, &[0u8; 200]), 100),
            Err(FrameError::TooBig(200))
        );
        assert_eq!(
            parse(&[0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0], 1 << 20),
            Err(FrameError::TooBig(1 << 32))
        );
        assert!(
            matches!(
                parse(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5], 1 << 20),
                Err(FrameError::Protocol(_))
            ),
            "a 64-bit length with its top bit set"
        );
    }

    #[test]
    fn server_frames_have_minimal_headers() {
        assert_eq!(&text("hi")[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(
            &server_frame(OP_TEXT, &[0u8; 200])[..4],
            &[0x81, 126, 0, 200]
        );
        assert_eq!(
            &close(1012, "bye")[..],
            &[0x88, 5, 0x03, 0xF4, b'b', b'y', b'e']
        );
    }
}
