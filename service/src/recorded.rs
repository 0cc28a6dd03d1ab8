//! The recorded form of a data message: what the server sends without its `seq`
//! (`{"type","channel","symbol","ts","data"}`). Replay files are lines of it, and so are the
//! broker's streams, which number the lines themselves. Reading one back checks it: the data
//! must fit the channel, and a book line is applied to the book it changes and its checksum
//! verified, so neither a bad file nor a bad broker entry can leave a client with a wrong book.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::book::{MAX_DEPTH, View};
use crate::market::{Channel, Event, Micros, Payload, valid_symbol};

/// A recorded message, borrowed for writing.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: Channel,
    pub symbol: &'a str,
    pub ts: Micros,
    pub data: &'a Payload,
}

impl<'a> Line<'a> {
    /// `event` as a `snapshot` line: what a reader starts a book from.
    pub fn whole(event: &'a Event, symbol: &'a str) -> Self {
        Self {
            kind: "snapshot",
            ..Self::of(event, symbol)
        }
    }

    /// `event` as recorded, its symbol named `symbol`. A book reset is a `snapshot`.
    pub fn of(event: &'a Event, symbol: &'a str) -> Self {
        let kind = match &event.payload {
            Payload::Book(b) if b.data.reset => "snapshot",
            _ => "update",
        };
        Self {
            kind,
            channel: event.channel,
            symbol,
            ts: event.ts,
            data: &event.payload,
        }
    }
}

#[derive(Debug)]
pub struct Recorded {
    pub channel: Channel,
    pub symbol: String,
    pub ts: Micros,
    /// `type`: `snapshot` or `update` (books need it).
    pub kind: Option<String>,
    pub data: Payload,
}

/// The books of a recording, rebuilt line by line: by symbol, then channel (looked up by
/// `&str`: no key is made per line).
#[derive(Debug, Default)]
pub struct Books(HashMap<String, HashMap<Channel, Arc<View>>>);

impl Books {
    /// Applies a book line and returns what to publish: the message (a snapshot marked as a
    /// reset) with the view after it. Other lines pass through.
    pub fn apply(&mut self, rec: &mut Recorded) -> Result<(), String> {
        let Payload::Book(update) = &mut rec.data else {
            return Ok(());
        };
        let snapshot = match rec.kind.as_deref() {
            Some("snapshot") => true,
            Some("update") => false,
            _ => return Err("a book line needs \"type\": \"snapshot\" or \"update\"".into()),
        };
        let held = self.0.get(&rec.symbol).and_then(|b| b.get(&rec.channel));
        let mut view = match held {
            Some(view) => View::clone(view),
            None if snapshot => View::default(),
            None => {
                return Err(format!(
                    "book {}:{} starts with an update, not a snapshot",
                    rec.channel, rec.symbol
                ));
            }
        };
        if !view.apply(&update.data, snapshot) {
            return Err(format!(
                "the checksum {} does not match the book after this line",
                update.data.checksum
            ));
        }
        let depth = rec.channel.book_depth().unwrap_or(MAX_DEPTH);
        if view.bids.len() > depth || view.asks.len() > depth {
            return Err(format!(
                "the {} book holds more than {depth} levels a side",
                rec.channel
            ));
        }
        update.data.reset = snapshot;
        update.view = Arc::new(view);
        update.depth = depth;
        let view = update.view.clone();
        match self.0.get_mut(&rec.symbol) {
            Some(books) => {
                books.insert(rec.channel, view);
            }
            None => {
                self.0
                    .insert(rec.symbol.clone(), HashMap::from([(rec.channel, view)]));
            }
        }
        Ok(())
    }
}

/// Reads one recorded message. The data is decoded as its channel's payload (one pass, where
/// trying each payload shape in turn cost buffering and an error per miss).
pub fn parse(line: &str) -> Result<Recorded, String> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        channel: Channel,
        symbol: String,
        ts: Micros,
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let raw: Raw<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if !valid_symbol(&raw.symbol) {
        return Err(format!("{:?} is not a valid symbol", raw.symbol));
    }
    let text = raw.data.get();
    let data = match raw.channel {
        Channel::Ticker => serde_json::from_str(text).map(Payload::Ticker),
        Channel::Trades => serde_json::from_str(text).map(Payload::Trade),
        Channel::Candles1s | Channel::Candles1m => serde_json::from_str(text).map(Payload::Candle),
        Channel::Book | Channel::Book25 | Channel::Book50 | Channel::Book100 => {
            serde_json::from_str(text).map(Payload::Book)
        }
    }
    .map_err(|e| format!("data does not match channel {}: {e}", raw.channel))?;
    Ok(Recorded {
        channel: raw.channel,
        symbol: raw.symbol,
        ts: raw.ts,
        kind: raw.kind,
        data,
    })
}

impl Books {
    /// Forgets every book: what comes next must start with snapshots.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Forgets one book: it is rebuilt from its next snapshot.
    pub fn forget(&mut self, channel: Channel, symbol: &str) {
        if let Some(books) = self.0.get_mut(symbol) {
            books.remove(&channel);
        }
    }

    /// Whether the book of `channel` and `symbol` is held.
    pub fn holds(&self, channel: Channel, symbol: &str) -> bool {
        self.0.get(symbol).is_some_and(|b| b.contains_key(&channel))
    }
}
