//! Outbound connections to venues. `ws://` is a plain socket (a local double or a proxy);
//! `wss://` is TLS through rustls with graviola's crypto (pure Rust and assembly: the static
//! musl builds for x86_64 and arm64 need no C cross-compiler; ADR-0019), trusting the system's
//! root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` move them) and `--tls-ca-file`.
//!
//! The TLS settings are built once at start-up, so a missing CA bundle or a bad CA file stops
//! the process with a clear error instead of failing every reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_client::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A venue's WebSocket, plain or TLS.
pub type VenueSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// TCP connect, TLS and the WebSocket handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why outbound TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use --tls-ca-file {}: {why}", .path.display())]
    CaFile { path: PathBuf, why: String },
    #[error(
        "no trusted root certificates for {url}: the system's CA bundle is missing or empty{}",
        .errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    NoRoots { url: String, errors: Vec<String> },
    #[error("TLS settings: {0}")]
    Settings(String),
}

/// The TLS client settings for `urls`: `None` when none of them needs TLS (so a machine with
/// no CA bundle can still use `ws://` doubles).
pub fn client_config(
    urls: &[&str],
    ca_file: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let Some(url) = urls
        .iter()
        .find(|u| u.starts_with("wss://") || u.starts_with("https://"))
    else {
        return Ok(None);
    };
    let mut roots = rustls_client::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let bad = |why: String| TlsError::CaFile {
            path: path.to_path_buf(),
            why,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    } else if added == 0 {
        return Err(TlsError::NoRoots {
            url: (*url).to_string(),
            errors: native.errors.iter().map(ToString::to_string).collect(),
        });
    }
    let config = provider_builder()
        .map_err(TlsError::Settings)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// The HTTP client for a venue's REST API (`https://` with `tls`; `http://` needs none).
/// Redirects are not followed: a venue's API does not redirect, a proxy that does is wrong.
pub fn http_client(
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let tls = match tls {
        Some(tls) => (**tls).clone(),
        // reqwest wants TLS settings even for http:// alone: ones that trust nothing.
        None => provider_builder()?
            .with_root_certificates(rustls_client::RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tickstream/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

fn provider_builder()
-> Result<rustls_client::ConfigBuilder<ClientConfig, rustls_client::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// The start of a venue's message or error body, for a log line.
pub fn excerpt(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// Opens a venue's WebSocket with messages and frames bounded by `max_message` bytes. `tls`
/// is [`client_config`]'s answer for this URL.
pub async fn websocket(
    url: &str,
    max_message: usize,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<VenueSocket, String> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let connector = match (url.starts_with("wss://"), tls) {
        (false, _) => Connector::Plain,
        (true, Some(tls)) => Connector::Rustls(tls.clone()),
        (true, None) => return Err("wss:// without TLS settings".into()),
    };
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, Some(connector));
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connect timed out after {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connect: {e}"))?;
    Ok(ws)
}

const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What a venue feed does between two connections: count and log the loss, then wait a
/// capped exponential backoff with full jitter. A connection that had worked (published)
/// starts the backoff over.
#[derive(Debug)]
pub struct Retry<'a> {
    venue: &'static str,
    url: &'a str,
    metrics: &'a crate::metrics::Metrics,
    attempt: u32,
}

impl<'a> Retry<'a> {
    pub fn new(venue: &'static str, url: &'a str, metrics: &'a crate::metrics::Metrics) -> Self {
        Self {
            venue,
            url,
            metrics,
            attempt: 0,
        }
    }

    /// After a connection ended with `outcome` (`Ok`: it had worked). `false` on shutdown.
    pub async fn wait(
        &mut self,
        outcome: Result<(), String>,
        shutdown: &CancellationToken,
    ) -> bool {
        self.metrics.venue_up.set(0);
        match outcome {
            Ok(()) => self.attempt = 0,
            Err(e) => {
                tracing::warn!(venue = self.venue, error = %e, url = self.url, "venue connection lost");
            }
        }
        self.metrics.venue_reconnects.inc();
        let delay = backoff(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Full jitter: uniform in [0, min(cap, base * 2^attempt)).
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_CAP.min(BACKOFF_BASE.saturating_mul(1 << attempt.min(16)));
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    // The clock's low bits are jitter enough here: no two tasks retry in step.
    let noise = super::now_micros()
        .unsigned_abs()
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Duration::from_nanos(noise % nanos.max(1))
}

/// How often a live source closes the candles whose interval ended.
pub const CANDLE_CLOCK: Duration = Duration::from_millis(250);

/// What [`Reader::next`] saw.
#[derive(Debug)]
pub enum Read {
    Message(tokio_tungstenite::tungstenite::Message),
    /// The candle clock ticked: close the candles whose interval ended.
    CandleTick,
}

/// One connection's reads: the next message or candle-clock tick, with the silence wait
/// measured from the last message (so other wake-ups do not restart it), and whether the
/// connection has worked, which makes the venue closing it an orderly end.
#[derive(Debug)]
pub struct Reader {
    silence: Duration,
    heard: tokio::time::Instant,
    clock: tokio::time::Interval,
    worked: bool,
}

impl Reader {
    pub fn new(silence: Duration) -> Self {
        let mut clock = tokio::time::interval(CANDLE_CLOCK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self {
            silence,
            heard: tokio::time::Instant::now(),
            clock,
            worked: false,
        }
    }

    /// The next message (pings are answered by the read itself) or clock tick. `Err` ends the
    /// connection: `Ok(())` inside it when the venue closed a connection that had worked,
    /// else why it failed, closed or went silent. Cancel-safe: a `select!` may drop it.
    pub async fn next(&mut self, ws: &mut VenueSocket) -> Result<Read, Result<(), String>> {
        use futures_util::StreamExt;
        let msg = tokio::select! {
            msg = tokio::time::timeout_at(self.heard + self.silence, ws.next()) => msg,
            _ = self.clock.tick() => return Ok(Read::CandleTick),
        };
        self.heard = tokio::time::Instant::now();
        match msg {
            Err(_) => Err(Err(format!("silent for {:?}", self.silence))),
            Ok(None) if self.worked => Err(Ok(())),
            Ok(None) => Err(Err("closed by the venue".into())),
            Ok(Some(Err(e))) => Err(Err(format!("read: {e}"))),
            Ok(Some(Ok(msg))) => Ok(Read::Message(msg)),
        }
    }

    /// Marks the connection as having worked (it published); `true` the first time.
    pub fn worked(&mut self) -> bool {
        !std::mem::replace(&mut self.worked, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in [0, 3, 30, u32::MAX] {
            let d = backoff(attempt);
            assert!(d < BACKOFF_CAP, "{attempt}: {d:?}");
        }
        assert!(backoff(0) < BACKOFF_BASE);
    }

    #[test]
    fn plain_urls_need_no_tls_and_a_bad_ca_file_is_a_start_up_error() {
        let plain = client_config(&["ws://127.0.0.1:1/v2"], None);
        assert!(matches!(plain, Ok(None)));
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(&["wss://ws.kraken.com/v2"], Some(&empty)).map(|_| ());
        assert!(
            e.as_ref()
                .is_err_and(|e| e.to_string().contains("holds no PEM certificate")),
            "{e:?}"
        );
        let missing = dir.path().join("missing.pem");
        let e = client_config(&["wss://ws.kraken.com/v2"], Some(&missing)).map(|_| ());
        assert!(matches!(e, Err(TlsError::CaFile { .. })), "{e:?}");
    }
}
