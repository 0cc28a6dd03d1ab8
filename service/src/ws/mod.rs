//! WebSocket endpoint: the upgrade (with admission checks) and one task per client.

mod connection;
pub mod protocol;

pub use connection::{Limits, ws_handler};
