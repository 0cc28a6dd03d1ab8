//! The WebSocket endpoint: admission and handshake (`upgrade`), framing ([`frame`]), the socket
//! as the hub writes to it (`peer`) and one task per client (`connection`).

mod connection;
pub mod frame;
mod peer;
pub mod protocol;
mod upgrade;

pub use upgrade::ws_handler;
