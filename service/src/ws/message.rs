//! Client frames into messages (RFC 6455 5.4). Data messages may arrive in fragments; control
//! frames may come between fragments but are never fragmented themselves (the frame parser
//! refuses that). Kept apart from the connection so that it can be fuzzed on its own.

use super::frame::{
    ClientFrame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, client_close_code,
};

/// What a frame amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Ping(Vec<u8>),
    Pong,
    /// The client's close code, or the code to fail the connection with.
    Close(Result<u16, u16>),
    /// A whole data message; `compressed` when its first frame had RSV1 set (its payload is
    /// still deflated).
    Message {
        opcode: u8,
        payload: Vec<u8>,
        compressed: bool,
    },
    /// A fragment of a message still being assembled.
    Pending,
}

/// The message being assembled, bounded by `limit` bytes.
#[derive(Debug)]
pub struct Reassembly {
    /// Opcode, compressed, bytes so far.
    partial: Option<(u8, bool, Vec<u8>)>,
    limit: usize,
}

/// Close codes for what the client broke.
const PROTOCOL_ERROR: u16 = 1002;
const TOO_BIG: u16 = 1009;

impl Reassembly {
    pub fn new(limit: usize) -> Self {
        Self {
            partial: None,
            limit,
        }
    }

    /// Takes the next frame. `Err` carries the close code that fails the connection: 1002 for
    /// a continuation without a start or a new message inside a fragmented one, 1009 for a
    /// message that grows past the limit.
    pub fn push(&mut self, f: ClientFrame) -> Result<Input, u16> {
        // RSV1 marks a compressed message on its first frame only (RFC 7692 6.1).
        if f.compressed && !matches!(f.opcode, OP_TEXT | OP_BINARY) {
            return Err(PROTOCOL_ERROR);
        }
        match (f.opcode, f.fin, self.partial.as_mut()) {
            (OP_PING, _, _) => Ok(Input::Ping(f.payload)),
            (OP_PONG, _, _) => Ok(Input::Pong),
            (OP_CLOSE, _, _) => Ok(Input::Close(client_close_code(&f.payload))),
            (OP_TEXT | OP_BINARY, true, None) => Ok(Input::Message {
                opcode: f.opcode,
                payload: f.payload,
                compressed: f.compressed,
            }),
            (OP_TEXT | OP_BINARY, false, None) => {
                if f.payload.len() > self.limit {
                    return Err(TOO_BIG);
                }
                self.partial = Some((f.opcode, f.compressed, f.payload));
                Ok(Input::Pending)
            }
            (OP_CONTINUATION, fin, Some((_, _, buf))) => {
                if buf.len() + f.payload.len() > self.limit {
                    return Err(TOO_BIG);
                }
                buf.extend_from_slice(&f.payload);
                if !fin {
                    return Ok(Input::Pending);
                }
                let (opcode, compressed, payload) = self.partial.take().ok_or(PROTOCOL_ERROR)?;
                Ok(Input::Message {
                    opcode,
                    payload,
                    compressed,
                })
            }
            _ => Err(PROTOCOL_ERROR),
        }
    }
}
