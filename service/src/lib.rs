//! tickstream: real-time market data over WebSocket and REST.
//!
//! # Layout
//! The data path reads top to bottom: [`feed`] turns the world (the simulator or a replay) into
//! events; the [`hub`] numbers and keeps them, encodes each once, and offers it to every
//! subscriber (an `Outlet`), which writes it straight to its socket; a [`ws`] connection task
//! owns one client's requests, limits, heartbeats and whatever its socket could not take at
//! once. Dependencies point one way: `ws` uses the hub, never the reverse; the hub is given an
//! `Encode` function for the wire bytes and sees its subscribers as `Outlet`s. [`server`]
//! accepts HTTP/1.1 connections; [`http`] serves snapshots, health, readiness and [`metrics`];
//! [`history`] computes candle history off the runtime. [`config`] is the one settings type.
//!
//! Sources publish into a [`broker::Sink`]: in one process (`--role all`) that is the hub; with
//! a broker, `--role ingest` publishes into Valkey/Redis ([`broker::ingest`]), which numbers the
//! events, and each `--role edge` tails it into its own hub ([`broker::edge`]). [`recorded`] is
//! the form events take in replay files and in the broker's streams.
//!
//! [`app`] builds the router (used by `main`, the tests and later the Lambda entry point) and
//! [`run`] serves it on a listener until a shutdown future resolves, then drains.

pub mod auth;
pub mod book;
pub mod broker;
pub mod config;
pub mod drain;
pub mod feed;
pub mod history;
pub mod http;
pub mod hub;
pub mod lambda;
pub mod market;
pub mod metrics;
pub mod probe;
pub mod recorded;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod venue;
pub mod web;
pub mod ws;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::Config;
use feed::Feed;
use hub::{Hub, HubLimits};
use metrics::Metrics;

pub use feed::replay::ReplayError;

/// Why the server could not start: each says what failed, and [`StartError::fix`] what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Tls(#[from] feed::net::TlsError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("cannot read the API-key file {}: {message}", .path.display())]
    ApiKeysFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot listen on {addr}: {}", bind_cause(.source))]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn bind_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "the address is already in use".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address".into()
        }
        _ => e.to_string(),
    }
}

impl StartError {
    /// What to do about it.
    pub fn fix(&self) -> String {
        match self {
            StartError::Config(config::ConfigError::Port(_)) => {
                "set PORT to a number from 1 to 65535, or use --listen ADDRESS:PORT".into()
            }
            StartError::Config(_) => {
                "`tickstream --help` lists every flag, its variable and its range".into()
            }
            StartError::Replay(ReplayError::Io { .. }) => {
                "check the path given to --replay (TICKSTREAM_REPLAY)".into()
            }
            StartError::Replay(ReplayError::Line { .. }) => {
                "fix or remove that line: each line is one JSON event {\"channel\", \"symbol\", \"ts\", \"data\"} (docs/protocol.md, Replay files)".into()
            }
            StartError::Replay(ReplayError::Empty(_)) => {
                "record some events into the file first (docs/protocol.md, Replay files)".into()
            }
            StartError::Tls(feed::net::TlsError::CaFile { .. }) => {
                "give --tls-ca-file (TICKSTREAM_TLS_CA_FILE) a readable file of PEM certificates".into()
            }
            StartError::Tls(_) => {
                "install the system's CA bundle (Debian and Alpine: the ca-certificates package; SSL_CERT_FILE names another), or give --tls-ca-file".into()
            }
            StartError::Broker(_) => {
                "check --broker (TICKSTREAM_BROKER): redis://HOST:PORT or rediss://HOST:PORT, with TICKSTREAM_BROKER_PASSWORD when the broker requires AUTH".into()
            }
            StartError::ApiKeysFile { .. } => {
                "check --api-keys-file (TICKSTREAM_API_KEYS_FILE): one key per line, blank lines and # comments ignored".into()
            }
            StartError::Bind { addr, source } => match source.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "stop what listens there (`ss -ltnp 'sport = :{}'` shows it), or listen elsewhere: --listen 127.0.0.1:PORT (or PORT=...)",
                    addr.port()
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need privileges the container does not have: use 8080".into()
                }
                _ => "listen on an address of this machine: --listen 0.0.0.0:8080".into(),
            },
        }
    }
}

/// Reads the keys in `path`: one per line, blank lines and `#` comments skipped.
fn read_api_keys(path: &std::path::Path) -> Result<Vec<String>, StartError> {
    let fail = |message: String| StartError::ApiKeysFile {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > 1 << 20 {
        return Err(fail("it is larger than 1 MiB".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(format!("line {}: a key cannot contain spaces", n + 1)));
        }
        keys.push(key.to_string());
    }
    if keys.is_empty() {
        return Err(fail("it holds no keys".into()));
    }
    Ok(keys)
}

/// Checks `config` and adds the keys of `--api-keys-file`: every role's start.
fn prepare(config: &mut Config) -> Result<(), StartError> {
    config.validate()?;
    if let Some(path) = &config.api_keys_file {
        let keys = read_api_keys(path)?;
        config.api_keys.extend(keys);
    }
    Ok(())
}

/// The hub and metrics of a process serving `symbols` of `source` from `epoch` on.
fn hub_for(
    config: &Config,
    source: &str,
    symbols: Vec<String>,
    epoch: String,
) -> (Arc<Hub>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    metrics
        .source_info
        .get_or_create(&metrics::SourceLabel {
            source: source.to_string(),
        })
        .set(1);
    let limits = HubLimits {
        history: config.history,
        candles: config.candle_history,
        fanout_threads: config.fanout_threads(),
    };
    let hub = Hub::new(
        symbols,
        epoch,
        limits,
        metrics.clone(),
        ws::protocol::data_frame,
    );
    (Arc::new(hub), metrics)
}

/// What feeds this process: taken once by [`run`].
#[derive(Debug)]
enum Origin {
    /// `--role all`: the source publishes into the hub.
    Feed(Feed),
    /// `--role ingest`: the source publishes into the broker.
    Ingest(Box<IngestOrigin>),
    /// `--role edge`: the broker feeds the hub.
    Edge(Box<broker::edge::Edge>),
}

#[derive(Debug)]
struct IngestOrigin {
    feed: Feed,
    ingest: Arc<broker::ingest::Ingest>,
    client: redis::Client,
    writer: broker::ingest::WriterConfig,
}

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when shutdown begins: readiness fails, clients are told to reconnect.
    pub shutdown: CancellationToken,
    /// Cancelled when ECS starts stopping the task: readiness fails, and clients are told to
    /// reconnect spread over the drain window ([`drain`]).
    pub draining: CancellationToken,
    /// Every connection task, HTTP and WebSocket, so shutdown can wait for them with a deadline.
    pub tracker: TaskTracker,
    connections: Arc<AtomicUsize>,
    /// Connections with permessage-deflate, bounded by `--ws-compression-max-connections`.
    pub(crate) compressed: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    ready: Arc<AtomicBool>,
    origin: Arc<Mutex<Option<Origin>>>,
    /// An edge's view of its broker: not ready while it is away or behind.
    broker_health: Option<Arc<broker::edge::Health>>,
    /// The simulator's model, when it is the source: REST computes candle history from it.
    pub sim: Option<Arc<feed::sim::Sim>>,
    /// Computed closed candles per symbol and interval, reused until a new interval closes.
    pub history: Arc<history::HistoryCache>,
}

impl AppState {
    /// Validates the configuration and prepares the feed (a replay file is checked here).
    pub fn new(mut config: Config) -> Result<Self, StartError> {
        prepare(&mut config)?;
        let feed = Feed::from_config(&config)?;
        let symbols = feed.symbols();
        let (hub, metrics) = hub_for(&config, config.source_name(), symbols.clone(), feed.epoch());
        let sim = match &feed {
            Feed::Sim(sim) => Some(Arc::new(sim.clone())),
            _ => None,
        };
        let origin = match config.role {
            config::Role::Ingest => {
                let client =
                    broker::client(&config).map_err(|e| StartError::Broker(e.to_string()))?;
                let meta = serde_json::json!({
                    "source": config.source_name(),
                    "symbols": symbols,
                });
                let ingest = Arc::new(broker::ingest::Ingest::new(
                    symbols,
                    &config.broker_namespace,
                    config.history,
                    metrics.clone(),
                ));
                let writer = broker::ingest::WriterConfig {
                    lease: config.broker_lease,
                    meta: meta.to_string(),
                    source: config.source_name(),
                };
                Origin::Ingest(Box::new(IngestOrigin {
                    feed,
                    ingest,
                    client,
                    writer,
                }))
            }
            _ => Origin::Feed(feed),
        };
        Self::assemble(config, hub, metrics, sim, origin, None)
    }

    /// An edge's state: it serves what the broker's writer serves (`meta`) from `epoch` on.
    /// [`broker::edge::wait_for_meta`] gives both.
    pub fn for_edge(
        mut config: Config,
        client: redis::Client,
        meta: broker::edge::Meta,
        epoch: String,
    ) -> Result<Self, StartError> {
        prepare(&mut config)?;
        if let Ok(source) = <config::Source as clap::ValueEnum>::from_str(&meta.source, true) {
            config.source = source;
        }
        let (hub, metrics) = hub_for(&config, &meta.source, meta.symbols, epoch);
        let health = Arc::new(broker::edge::Health::default());
        let keys = broker::Keys::new(&config.broker_namespace);
        let edge = broker::edge::Edge::new(hub.clone(), client, keys, health.clone());
        Self::assemble(
            config,
            hub,
            metrics,
            None,
            Origin::Edge(Box::new(edge)),
            Some(health),
        )
    }

    fn assemble(
        config: Config,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        sim: Option<Arc<feed::sim::Sim>>,
        origin: Origin,
        broker_health: Option<Arc<broker::edge::Health>>,
    ) -> Result<Self, StartError> {
        Ok(Self {
            sim,
            history: Arc::new(history::HistoryCache::new(config.candle_history)),
            config: Arc::new(config),
            hub,
            metrics,
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: Arc::new(AtomicUsize::new(0)),
            compressed: Arc::new(AtomicUsize::new(0)),
            next_id: Arc::new(AtomicU64::new(1)),
            ready: Arc::new(AtomicBool::new(false)),
            origin: Arc::new(Mutex::new(Some(origin))),
            broker_health,
        })
    }

    /// The feed, for a caller that drives it itself (Lambda mode), instead of [`run`].
    pub fn take_feed(&self) -> Option<Feed> {
        let mut origin = self.origin.lock().unwrap_or_else(|e| e.into_inner());
        match origin.take() {
            Some(Origin::Feed(feed)) => Some(feed),
            other => {
                *origin = other;
                None
            }
        }
    }

    /// Readiness for a state whose feed is driven by its caller.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self
                .broker_health
                .as_ref()
                .is_none_or(|h| h.ok(self.config.broker_max_lag))
            && !self.shutdown.is_cancelled()
            && !self.draining.is_cancelled()
    }

    /// Starts the spread-out drain: readiness fails now, and each connection says goodbye at
    /// its own moment within the drain window.
    pub fn begin_drain(&self, why: &str) {
        if self.draining.is_cancelled() {
            return;
        }
        tracing::info!(
            why,
            connections = self.connections(),
            window_ms = self.config.drain_window.as_millis() as u64,
            "draining: telling clients to reconnect over the window"
        );
        self.metrics.draining.set(1);
        self.draining.cancel();
    }

    /// WebSocket connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    if state.config.role == config::Role::Ingest {
        return Router::new()
            .route("/healthz", get(http::healthz))
            .route("/readyz", get(http::readyz))
            .route("/metrics", get(http::metrics))
            .fallback(http::ingest_only)
            .with_state(state);
    }
    let guarded = Router::new()
        .route("/ws", get(ws::ws_handler))
        .route("/api/v1/symbols", get(http::symbols))
        .route("/api/v1/ticker/{symbol}", get(http::ticker))
        .route("/api/v1/book/{symbol}", get(http::book))
        .route("/api/v1/candles/{symbol}", get(http::candles))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/", get(web::index))
        .route("/assets/{*rest}", get(web::asset))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .merge(guarded)
        .fallback(http::not_found)
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves; then readiness fails, every client
/// gets `reconnect` and close code 1012, and the drain is bounded by the configured deadline.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = state.shutdown.clone();
    let origin = state
        .origin
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let ready = state.ready.clone();
    let started = std::time::Instant::now();
    let on_ready = move || {
        ready.store(true, Ordering::Release);
        tracing::info!(
            after_ms = started.elapsed().as_secs_f64() * 1e3,
            "feed live; ready"
        );
    };
    // An ingest task's writer, awaited at shutdown: it hands its lease over.
    let mut writer_task = None;
    match origin {
        Some(Origin::Feed(feed)) => {
            tokio::spawn(feed.run(state.hub.clone(), token.clone(), on_ready));
        }
        Some(Origin::Ingest(origin)) => {
            let IngestOrigin {
                feed,
                ingest,
                client,
                writer,
            } = *origin;
            // The source starts once this task is the writer: a standby neither loads a
            // venue nor publishes anything, and takes over with a new epoch.
            let (sink, stop) = (ingest.clone(), token.clone());
            let (mut feed, mut on_ready) = (Some(feed), Some(on_ready));
            let on_lease = move |holding: bool| {
                // An ingest task is ready once it knows its part: writer or standby.
                if let Some(ready) = on_ready.take() {
                    ready();
                }
                if holding && let Some(feed) = feed.take() {
                    tokio::spawn(feed.run(sink.clone(), stop.clone(), || {}));
                }
            };
            writer_task = Some(tokio::spawn(broker::ingest::write(
                ingest,
                client,
                writer,
                token.clone(),
                on_lease,
            )));
        }
        Some(Origin::Edge(edge)) => {
            tokio::spawn(edge.run(token.clone(), on_ready));
        }
        None => {}
    }
    if let Some(uri) = state.config.ecs_metadata_uri.clone() {
        tokio::spawn(drain::watch(uri, state.clone()));
    }
    let watcher = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => watcher.cancel(),
            () = watcher.cancelled() => {}
        }
    });
    let accept = tokio::spawn(server::accept_loop(
        listener,
        app(state.clone()),
        token.clone(),
        state.tracker.clone(),
    ));
    token.cancelled().await;
    let drain = state.config.drain_timeout;
    let deadline = tokio::time::Instant::now() + drain;
    tracing::info!(
        connections = state.connections(),
        drain_ms = drain.as_millis() as u64,
        "shutting down"
    );
    let _ = accept.await;
    state.tracker.close();
    if tokio::time::timeout_at(deadline, state.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = state.connections(),
            "drain deadline reached; closing the rest"
        );
    }
    if let Some(task) = writer_task {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    tracing::info!("stopped");
    Ok(())
}
