//! The live view a person follows while a command runs: one line per thing that happened, with
//! the time since the start, on stderr (stdout is kept for the result, and for `--output json`).
//! Tests record the lines instead, to check what a user would have been told.

use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Reporter {
    started: Instant,
    recorded: Option<Arc<Mutex<Vec<String>>>>,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::stderr()
    }
}

impl Reporter {
    pub fn stderr() -> Reporter {
        Reporter {
            started: Instant::now(),
            recorded: None,
        }
    }

    /// Keeps the lines for [`Reporter::lines`] instead of printing them.
    pub fn recording() -> Reporter {
        Reporter {
            started: Instant::now(),
            recorded: Some(Arc::default()),
        }
    }

    pub fn line(&self, text: impl AsRef<str>) {
        let text = text.as_ref();
        match &self.recorded {
            Some(lines) => lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(text.to_string()),
            None => {
                let t = self.started.elapsed().as_secs_f64();
                eprintln!("[{t:6.1}s] {text}");
            }
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.recorded
            .as_ref()
            .map(|l| {
                l.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }
}
