//! The WebSocket endpoint: admission and handshake (`upgrade`), framing ([`frame`]),
//! reassembly ([`message`]) and compression ([`deflate`]), the socket
//! as the hub writes to it (`peer`) and one task per client (`connection`).

mod connection;
pub mod deflate;
pub mod frame;
pub mod message;
mod peer;
pub mod protocol;
mod upgrade;

pub use upgrade::ws_handler;
