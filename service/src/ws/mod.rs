//! The WebSocket endpoint: admission and handshake (`upgrade`), framing ([`frame`]),
//! reassembly ([`message`]) and compression ([`deflate`], with our own encoder in `delta`), the socket
//! as the hub writes to it (`peer`) and one task per client (`connection`).

mod connection;
pub mod deflate;
mod delta;
pub mod frame;
pub mod message;
mod peer;
pub mod protocol;
mod upgrade;

pub use upgrade::ws_handler;
