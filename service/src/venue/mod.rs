//! Live venues (issue #15): each module turns one venue's public market-data messages into our
//! model and keeps what the venue makes its clients keep (its book, its sequence numbers), so it
//! can say when a symbol has lost track and must be rebuilt. No sockets here: the connection
//! that feeds a module, and the local doubles that test it, come separately.

pub mod binance;
pub mod coinbase;
pub mod kraken;
