//! Live venues (issue #15): each module turns one venue's public market-data messages into our
//! model and keeps what the venue makes its clients keep (its book, its sequence numbers), so it
//! can say when a symbol has lost track and must be rebuilt. No sockets here: the connection
//! that feeds a module, and the local doubles that test it, come separately.

pub mod binance;
pub mod coinbase;
pub mod kraken;

use crate::market::{Micros, Ticker, Trade};

/// A trade as a venue reported it: its instrument (the venue's name), and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueTrade {
    pub symbol: String,
    pub trade: Trade,
    /// When the venue says it happened.
    pub ts: Micros,
}

/// A ticker as a venue reported it, in our shape (see each venue for how fields map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueTicker {
    pub symbol: String,
    pub ticker: Ticker,
}

/// Microseconds since the Unix epoch of an RFC 3339 time in UTC (`2023-10-06T17:35:55.440295Z`,
/// up to nanoseconds).
pub fn rfc3339_micros(text: &str) -> Option<Micros> {
    let t = humantime::parse_rfc3339(text).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Micros::try_from(d.as_micros()).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_times_to_micros() {
        assert_eq!(
            super::rfc3339_micros("2023-10-06T17:35:55.440295Z"),
            Some(1_696_613_755_440_295)
        );
        assert_eq!(
            super::rfc3339_micros("2026-12-03T10:00:00.123456789Z"),
            Some(1_796_292_000_123_456)
        );
        assert_eq!(super::rfc3339_micros("yesterday"), None);
    }
}
