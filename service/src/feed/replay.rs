//! Replays recorded events from NDJSON: one data message per line, in the shape the server
//! sends (`{"channel","symbol","ts","data"}`; `seq` is ignored and renumbered so that every
//! stream is contiguous). A capture of `/ws` output is a valid recording.
//!
//! Book streams need `type` too: each starts with a `snapshot`, and the file is checked at
//! start-up by applying every message and verifying its checksum, so a recording that would
//! leave clients with a wrong book never starts. A snapshot later in a stream is replayed as a
//! reset (clients replace their book).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Sink;
use crate::market::{Channel, Event, Micros};
use crate::recorded::{Books, Recorded, parse};

/// Longest line accepted: recordings are data messages of a few hundred bytes.
const MAX_LINE: usize = 64 * 1024;
const MAX_SYMBOLS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read the replay file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}: no events")]
    Empty(PathBuf),
}

#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    speed: f64,
    symbols: Vec<String>,
    events: usize,
    fingerprint: u64,
}

impl Replay {
    /// Reads the whole file once to validate it and learn its symbols; memory stays bounded by
    /// one line.
    pub fn open(path: &Path, speed: f64) -> Result<Self, ReplayError> {
        let mut symbols = Vec::new();
        let mut events = 0;
        let mut last_ts = Micros::MIN;
        let mut fingerprint: u64 = 0xcbf2_9ce4_8422_2325;
        let mut books = Books::default();
        for_each_line(path, |line_no, line| {
            let mut rec = parse(line).map_err(|message| (line_no, message))?;
            books
                .apply(&mut rec)
                .map_err(|message| (line_no, message))?;
            if rec.ts < last_ts {
                return Err((
                    line_no,
                    format!("ts {} is before the previous line's {last_ts}", rec.ts),
                ));
            }
            last_ts = rec.ts;
            if !symbols.contains(&rec.symbol) {
                if symbols.len() == MAX_SYMBOLS {
                    return Err((line_no, format!("more than {MAX_SYMBOLS} symbols")));
                }
                symbols.push(rec.symbol);
            }
            events += 1;
            fingerprint = (fingerprint ^ rec.ts as u64).wrapping_mul(0x0100_0000_01b3);
            Ok(())
        })?;
        if events == 0 {
            return Err(ReplayError::Empty(path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            speed,
            symbols,
            events,
            fingerprint,
        })
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Replays are re-timed to the moment they start, so positions from another process are
    /// never comparable: the epoch includes this process's start.
    pub fn epoch(&self) -> String {
        format!("replay-{:016x}-{}", self.fingerprint, super::now_micros())
    }

    pub async fn run(
        self,
        sink: &dyn Sink,
        shutdown: &CancellationToken,
    ) -> Result<(), ReplayError> {
        let index: HashMap<&str, u16> = self
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i as u16))
            .collect();
        let mut seqs: HashMap<(Channel, u16), u64> = HashMap::new();
        let start = super::now_micros();
        let mut first_ts = None;
        let mut published = 0usize;
        let mut batch = crate::hub::Batch::default();
        let mut one = Vec::with_capacity(1);
        let path = self.path.clone();
        // Lines are read on a blocking thread and handed over through a small bounded channel.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Recorded>(256);
        let reader = tokio::task::spawn_blocking(move || {
            let mut books = Books::default();
            for_each_line(&path, |line_no, line| {
                let mut rec = parse(line).map_err(|m| (line_no, m))?;
                books.apply(&mut rec).map_err(|m| (line_no, m))?;
                tx.blocking_send(rec)
                    .map_err(|_| (line_no, "replay stopped".to_string()))
            })
        });
        while let Some(rec) = rx.recv().await {
            let t0 = *first_ts.get_or_insert(rec.ts);
            let offset = if self.speed > 0.0 {
                ((rec.ts - t0) as f64 / self.speed) as Micros
            } else {
                0
            };
            let due = start + offset;
            let wait = due - super::now_micros();
            if wait > 0 {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_micros(wait as u64)) => {}
                }
            } else if published.is_multiple_of(1024) {
                tokio::task::yield_now().await;
            }
            let Some(&symbol) = index.get(rec.symbol.as_str()) else {
                continue;
            };
            let seq = seqs.entry((rec.channel, symbol)).or_insert(0);
            *seq += 1;
            let event = Event {
                channel: rec.channel,
                symbol,
                seq: *seq,
                ts: if self.speed > 0.0 {
                    due
                } else {
                    super::now_micros()
                },
                payload: rec.data,
            };
            one.push(event);
            sink.publish(&mut one, &mut batch);
            published += 1;
        }
        drop(rx);
        match reader.await {
            Ok(Err(e)) if published < self.events => return Err(e),
            _ => {}
        }
        tracing::info!(
            events = published,
            "replay finished; serving the last state"
        );
        Ok(())
    }
}

/// Calls `f` for every non-blank line with its 1-based number; lines over [`MAX_LINE`] are errors.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), (usize, String)>,
) -> Result<(), ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let err = |message: String| ReplayError::Line {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        if buf.len() > MAX_LINE {
            return Err(err(format!("line longer than {MAX_LINE} bytes")));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|_| err("not UTF-8".into()))?
            .trim();
        if text.is_empty() {
            continue;
        }
        f(line_no, text).map_err(|(line, message)| ReplayError::Line {
            path: path.to_path_buf(),
            line,
            message,
        })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// A tiny temp-file helper: std only.
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};

        #[derive(Debug)]
        pub struct TempPath(pub PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "tickstream-replay-{}-{}.ndjson",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).expect("write temp file");
            TempPath(path)
        }
    }

    const TRADE: &str = r#"{"channel":"trades","symbol":"X","ts":1,"data":{"price":"1.00","size":"2","side":"buy"}}"#;

    #[test]
    fn a_good_file_opens_with_its_symbols() {
        let f = file(&format!("{TRADE}\n\n{}\n", TRADE.replace("\"X\"", "\"Y\"")));
        let r = Replay::open(&f.0, 1.0).expect("valid");
        assert_eq!(r.symbols(), ["X", "Y"]);
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let cases = [
            (format!("{TRADE}\nnot json\n"), 2),
            (
                format!("{TRADE}\n{}\n", TRADE.replace("trades", "ticker")),
                2,
            ),
            (format!("{}\n", TRADE.replace("\"X\"", "\"x y\"")), 1),
            (
                format!("{}\n{TRADE}\n", TRADE.replace("\"ts\":1", "\"ts\":5")),
                2,
            ),
        ];
        for (text, want) in cases {
            let f = file(&text);
            match Replay::open(&f.0, 1.0) {
                Err(ReplayError::Line { line, .. }) => assert_eq!(line, want, "{text}"),
                other => panic!("expected a line error for {text}, got {other:?}"),
            }
        }
        let f = file("\n");
        assert!(matches!(
            Replay::open(&f.0, 1.0),
            Err(ReplayError::Empty(_))
        ));
    }

    /// A book line of `kind` with these levels and the checksum of the book `after` it.
    fn book_line(kind: &str, bids: &[(&str, &str)], after: &[(&str, &str)]) -> String {
        use crate::book::{Level, checksum};
        let level =
            |(p, s): &(&str, &str)| Level::new(p.parse().expect("price"), s.parse().expect("size"));
        let after: Vec<Level> = after.iter().map(level).collect();
        let ask = [Level::new(
            "9".parse().expect("price"),
            "1".parse().expect("size"),
        )];
        let asks = if kind == "snapshot" { &ask[..] } else { &[] };
        let bids: Vec<Level> = bids.iter().map(level).collect();
        format!(
            r#"{{"type":"{kind}","channel":"book","symbol":"X","ts":1,"data":{{"bids":{},"asks":{},"checksum":{}}}}}"#,
            serde_json::to_string(&bids).expect("json"),
            serde_json::to_string(asks).expect("json"),
            checksum(&after, &ask)
        )
    }

    #[test]
    fn book_lines_are_checked_by_applying_them() {
        let snap = book_line(
            "snapshot",
            &[("5", "1"), ("4", "2")],
            &[("5", "1"), ("4", "2")],
        );
        let update = book_line(
            "update",
            &[("5", "0"), ("3", "1")],
            &[("4", "2"), ("3", "1")],
        );
        let f = file(&format!("{snap}\n{update}\n{snap}\n"));
        assert!(Replay::open(&f.0, 1.0).is_ok());

        let wrong = book_line("update", &[("5", "0")], &[("5", "1")]);
        let eleven: Vec<(String, String)> = (1..=11)
            .rev()
            .map(|p| (p.to_string(), "1".to_string()))
            .collect();
        let eleven: Vec<(&str, &str)> = eleven.iter().map(|(p, s)| (&p[..], &s[..])).collect();
        let cases = [
            (format!("{update}\n"), 1, "starts with an update"),
            (format!("{snap}\n{wrong}\n"), 2, "checksum"),
            (
                format!("{}\n", snap.replace(r#""type":"snapshot","#, "")),
                1,
                "needs",
            ),
            (
                format!("{}\n", book_line("snapshot", &eleven, &eleven)),
                1,
                "more than 10",
            ),
        ];
        for (text, want, says) in cases {
            let f = file(&text);
            match Replay::open(&f.0, 1.0) {
                Err(ReplayError::Line { line, message, .. }) => {
                    assert_eq!(line, want, "{text}");
                    assert!(message.contains(says), "{message}");
                }
                other => panic!("expected a line error for {text}, got {other:?}"),
            }
        }
    }
}
