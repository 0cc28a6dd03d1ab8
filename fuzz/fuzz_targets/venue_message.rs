//! Any text as a venue message, applied to the venue's book-keeping: a typed error or a book
//! step, never a panic. The venues are not ours; what they send is input like any other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream::venue::{binance, coinbase, kraken};

fuzz_target!(|text: &str| {
    if let Ok(kraken::Incoming::Book(msgs)) = kraken::parse(text) {
        let mut book = kraken::KrakenBook::new(100);
        for msg in &msgs {
            let _ = book.apply(msg);
        }
    }
    let mut depth = binance::DepthBook::new(1000);
    if let Ok(binance::Incoming::Depth(update)) = binance::parse(text) {
        let _ = depth.on_update(update.clone());
        let _ = depth.on_update(update);
    }
    if let Ok(snapshot) = binance::parse_snapshot(text) {
        let _ = depth.on_snapshot(snapshot);
    }
    if let Ok(msg) = coinbase::parse(text) {
        let mut book = coinbase::FullBook::default();
        for event in &msg.books {
            let _ = book.apply(event);
            let _ = book.top(100);
        }
    }
});
