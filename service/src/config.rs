//! Command line and `TICKSTREAM_*` environment: one type, validated before anything starts.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::feed::sim::{DEFAULT_SYMBOLS, MAX_RATE};
use crate::market::valid_symbol;

#[derive(Debug, Parser)]
#[command(
    name = "tickstream",
    version,
    about = "Real-time market data over WebSocket and REST"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Serve market data (the default).
    Serve,
    /// Exit 0 when the local server's /readyz answers 200: a container health check without curl.
    Healthcheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting of the server. Flags win over `TICKSTREAM_*` variables, which win over defaults.
#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// Address to listen on [default: 0.0.0.0:$PORT, or 0.0.0.0:8080].
    #[arg(long, env = "TICKSTREAM_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Symbols the simulator trades.
    #[arg(long, env = "TICKSTREAM_SIM_SYMBOLS", value_delimiter = ',', default_value = DEFAULT_SYMBOLS)]
    pub sim_symbols: Vec<String>,

    /// Ticker updates per second per symbol (0: no events at all).
    #[arg(long, env = "TICKSTREAM_SIM_RATE", default_value_t = 10)]
    pub sim_rate: u32,

    /// Simulator seed: the same seed gives the same market on every process.
    #[arg(long, env = "TICKSTREAM_SIM_SEED", default_value_t = 42)]
    pub sim_seed: u64,

    /// Where events come from: `sim` (the simulator), `replay` (the file of --replay; giving
    /// --replay alone implies it), `kraken` (Kraken's public WebSocket v2), `binance` (Binance
    /// spot's public streams) or `coinbase` (Coinbase Advanced Trade's level2); the venues need
    /// --symbols and outbound internet.
    #[arg(long, env = "TICKSTREAM_SOURCE", value_enum, default_value_t = Source::Sim)]
    pub source: Source,

    /// A venue's instruments (`BTC/USD,ETH/USD` for Kraken; `BTCUSDT` or `BTC-USDT` for
    /// Binance; `BTC-USD` for Coinbase); served as `BTC-USD`, `BTC-USDT`.
    #[arg(long, env = "TICKSTREAM_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<String>,

    /// Kraken's WebSocket v2 endpoint (`ws://` for a local double or proxy).
    #[arg(
        long,
        env = "TICKSTREAM_KRAKEN_URL",
        default_value = "wss://ws.kraken.com/v2"
    )]
    pub kraken_url: String,

    /// Binance spot's WebSocket market-data endpoint (streams go in its path). Port 443 rather
    /// than the 9443 Binance also serves: the tasks' security group lets out 443 only.
    #[arg(
        long,
        env = "TICKSTREAM_BINANCE_URL",
        default_value = "wss://stream.binance.com:443"
    )]
    pub binance_url: String,

    /// Binance spot's REST endpoint, for book snapshots (`GET /api/v3/depth`).
    #[arg(
        long,
        env = "TICKSTREAM_BINANCE_REST_URL",
        default_value = "https://api.binance.com"
    )]
    pub binance_rest_url: String,

    /// Coinbase Advanced Trade's WebSocket market-data endpoint.
    #[arg(
        long,
        env = "TICKSTREAM_COINBASE_URL",
        default_value = "wss://advanced-trade-ws.coinbase.com"
    )]
    pub coinbase_url: String,

    /// PEM certificates trusted for venues' TLS in addition to the system's roots (a
    /// TLS-inspecting proxy's CA, or a test's).
    #[arg(long, env = "TICKSTREAM_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// Replay recorded events from an NDJSON file instead of simulating.
    #[arg(long, env = "TICKSTREAM_REPLAY")]
    pub replay: Option<PathBuf>,

    /// Replay pace: 1 is as recorded, 10 ten times faster, 0 as fast as possible.
    #[arg(long, env = "TICKSTREAM_REPLAY_SPEED", default_value_t = 1.0)]
    pub replay_speed: f64,

    /// Log lines as text for people or JSON for CloudWatch (RUST_LOG sets the level).
    #[arg(long, env = "TICKSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Updates kept per stream for resume (the resume window).
    #[arg(long, env = "TICKSTREAM_HISTORY", default_value_t = 1024)]
    pub history: usize,

    /// Closed candles kept per symbol and interval for the REST API.
    #[arg(long, env = "TICKSTREAM_CANDLE_HISTORY", default_value_t = 500)]
    pub candle_history: usize,

    /// WebSocket connections this process accepts at once.
    #[arg(long, env = "TICKSTREAM_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Threads that write one event to its subscribers at once, when a stream has at least 256
    /// per thread; 0: one per CPU, at most 4 (docs/benchmarks.md, "Two writers").
    #[arg(long, env = "TICKSTREAM_FANOUT_THREADS", default_value_t = 0)]
    pub fanout_threads: usize,

    /// Streams one connection may subscribe to.
    #[arg(long, env = "TICKSTREAM_MAX_SUBSCRIPTIONS", default_value_t = 200)]
    pub max_subscriptions: usize,

    /// Largest client message in bytes; larger ones get `message_too_large`.
    #[arg(long, env = "TICKSTREAM_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Client messages per second (bursts of twice as many are allowed).
    #[arg(long, env = "TICKSTREAM_MAX_MESSAGE_RATE", default_value_t = 10)]
    pub max_message_rate: u32,

    /// Frames queued per connection before it counts as a slow consumer.
    #[arg(long, env = "TICKSTREAM_QUEUE_CAPACITY", default_value_t = 2048)]
    pub queue_capacity: usize,

    /// Offer permessage-deflate (RFC 7692) to clients that ask for it: about 8x fewer bytes on
    /// the wire for 1.06-1.45x the CPU per message (ADR-0016).
    #[arg(long, env = "TICKSTREAM_WS_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub ws_compression: bool,

    /// Compressed connections at once; later clients are served uncompressed. An active one
    /// holds its streams' last positions (delta) or about 150 KiB (zlib); a quiet one nothing.
    #[arg(
        long,
        env = "TICKSTREAM_WS_COMPRESSION_MAX_CONNECTIONS",
        default_value_t = 2_000
    )]
    pub ws_compression_max_connections: usize,

    /// How updates are compressed: `delta` copies from the same stream's last update (cheapest,
    /// smallest at one or two streams per client); `zlib` searches the whole window (smaller
    /// with many streams per client, about 3x the CPU). Without context takeover: zlib.
    #[arg(long, env = "TICKSTREAM_WS_COMPRESSION_ENCODER", value_enum, default_value_t = crate::ws::deflate::Encoder::Delta)]
    pub ws_compression_encoder: crate::ws::deflate::Encoder,

    /// The compressor's window, log2 bytes (9-15): 12 keeps the last few dozen updates.
    #[arg(
        long,
        env = "TICKSTREAM_WS_COMPRESSION_WINDOW_BITS",
        default_value_t = 12
    )]
    pub ws_compression_window_bits: u8,

    /// zlib compression level (1 fastest - 9 smallest), for the zlib encoder.
    #[arg(long, env = "TICKSTREAM_WS_COMPRESSION_LEVEL", default_value_t = 1)]
    pub ws_compression_level: u8,

    /// zlib memory level (1-9): the compressor's symbol buffer; 1 suits small messages.
    #[arg(long, env = "TICKSTREAM_WS_COMPRESSION_MEM_LEVEL", default_value_t = 1)]
    pub ws_compression_mem_level: u8,

    /// Keep the compression context between messages (false: every message on its own,
    /// about 1.4x instead of 8x smaller, no state between messages).
    #[arg(long, env = "TICKSTREAM_WS_COMPRESSION_CONTEXT_TAKEOVER", default_value_t = true, action = clap::ArgAction::Set)]
    pub ws_compression_context_takeover: bool,

    /// Heartbeat and ping interval.
    #[arg(long, env = "TICKSTREAM_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "15s")]
    pub heartbeat_interval: Duration,

    /// A client silent (no pong, no message) this long is dropped.
    #[arg(long, env = "TICKSTREAM_CLIENT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "45s")]
    pub client_timeout: Duration,

    /// A write to a client that takes longer than this drops the client.
    #[arg(long, env = "TICKSTREAM_WRITE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub write_timeout: Duration,

    /// After SIGTERM, how long clients get to receive `reconnect` and close.
    #[arg(long, env = "TICKSTREAM_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain_timeout: Duration,

    /// Once ECS marks the task STOPPED (task metadata), clients are told to reconnect spread
    /// over this window, before the load balancer's deregistration delay ends.
    #[arg(long, env = "TICKSTREAM_DRAIN_WINDOW", value_parser = humantime::parse_duration, default_value = "15s")]
    pub drain_window: Duration,

    /// ECS's task metadata endpoint, watched for the task being stopped (ECS sets it).
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4")]
    pub ecs_metadata_uri: Option<String>,

    /// Browser origins allowed to open /ws (empty: any).
    #[arg(long, env = "TICKSTREAM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// API keys for /ws and /api (empty: open), presented as `Authorization: Bearer KEY` or, by
    /// browsers, in the `tickstream.key.*` WebSocket subprotocol.
    #[arg(
        long,
        env = "TICKSTREAM_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// A file of API keys, one per line (blank lines and `#` comments ignored), added to
    /// --api-keys: for keys mounted from a secret store.
    #[arg(long, env = "TICKSTREAM_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// What this process does: `all` runs the source and serves clients (no broker); `ingest`
    /// runs the source and publishes into --broker; `edge` serves clients from --broker.
    #[arg(long, env = "TICKSTREAM_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,

    /// Valkey or Redis for --role ingest and edge: `redis://HOST:PORT`, or `rediss://HOST:PORT`
    /// for TLS. Put the password in TICKSTREAM_BROKER_PASSWORD, not here.
    #[arg(long, env = "TICKSTREAM_BROKER")]
    pub broker: Option<String>,

    /// The broker's AUTH password (ECS injects it from Secrets Manager); never logged.
    #[arg(long, env = "TICKSTREAM_BROKER_PASSWORD", hide_env_values = true)]
    pub broker_password: Option<String>,

    /// The AUTH user name, for brokers with ACL users (ElastiCache RBAC).
    #[arg(long, env = "TICKSTREAM_BROKER_USER")]
    pub broker_user: Option<String>,

    /// Prefix (hash tag) of every broker key: deployments sharing a cache use different ones.
    #[arg(
        long,
        env = "TICKSTREAM_BROKER_NAMESPACE",
        default_value = "tickstream"
    )]
    pub broker_namespace: String,

    /// The ingest writer's lease: a standby takes over at most this long (plus one renewal
    /// interval, a third of it) after the writer stops renewing.
    #[arg(long, env = "TICKSTREAM_BROKER_LEASE", value_parser = humantime::parse_duration, default_value = "3s")]
    pub broker_lease: Duration,

    /// An edge whose broker is this far behind (or silent this long) reports not ready.
    #[arg(long, env = "TICKSTREAM_BROKER_MAX_LAG", value_parser = humantime::parse_duration, default_value = "5s")]
    pub broker_max_lag: Duration,
}

/// What a process does (see `--role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    All,
    Ingest,
    Edge,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--sim-rate must be 0..={MAX_RATE}, got {0}")]
    Rate(u32),
    #[error("--sim-symbols: {0:?} is not a symbol (A-Z, 0-9, '-', '.', '_'; 1-24 characters)")]
    Symbol(String),
    #[error("--sim-symbols: {0:?} appears twice")]
    DuplicateSymbol(String),
    #[error("--sim-symbols must name 1..=1000 symbols")]
    SymbolCount,
    #[error("--replay-speed must be a finite number >= 0, got {0}")]
    ReplaySpeed(f64),
    #[error("{flag} must be within {min}..={max}, got {value}")]
    Range {
        flag: &'static str,
        min: u64,
        max: u64,
        value: u64,
    },
    #[error("PORT={0:?} is not a port number")]
    Port(String),
    #[error("--source {0} needs --symbols (the venue's instruments, for example BTC/USD)")]
    NoVenueSymbols(&'static str),
    #[error(
        "--symbols: {0:?} is not an instrument this server can name, or is named twice (letters and digits around one '/' or '-', 1-24 characters; Binance also takes BTCUSDT)"
    )]
    VenueSymbol(String),
    #[error("--symbols: {venue} takes at most {max} instruments here")]
    VenueSymbolCount { venue: &'static str, max: usize },
    #[error("--source replay needs --replay FILE")]
    NoReplayFile,
    #[error("--role {0} needs --broker redis://HOST:PORT (TICKSTREAM_BROKER)")]
    NoBroker(&'static str),
    #[error("--broker is for --role ingest or edge; --role all keeps everything in one process")]
    BrokerWithoutRole,
    #[error("--broker-namespace {0:?}: 1-64 letters, digits, '-' or '_'")]
    BrokerNamespace(String),
    #[error("{flag} must be within {min:?}..={max:?}, got {value:?}")]
    DurationRange {
        flag: &'static str,
        min: Duration,
        max: Duration,
        value: Duration,
    },
    #[error("{flag} {url:?}: {why}")]
    VenueUrl {
        flag: &'static str,
        url: String,
        why: String,
    },
}

/// Where events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    Sim,
    Replay,
    Kraken,
    Binance,
    Coinbase,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Sim => "sim",
            Source::Replay => "replay",
            Source::Kraken => "kraken",
            Source::Binance => "binance",
            Source::Coinbase => "coinbase",
        }
    }
}

/// Our name for a venue's instrument: `BTC/USD` and `btc-usd` are both `BTC-USD`.
pub fn normalize_symbol(venue: &str) -> Option<String> {
    let name = venue.trim().to_ascii_uppercase().replace('/', "-");
    valid_symbol(&name).then_some(name)
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["tickstream"])
    }
}

impl Config {
    /// The permessage-deflate settings, when compression is on.
    pub fn deflate(&self) -> Option<crate::ws::deflate::Settings> {
        self.ws_compression.then_some(crate::ws::deflate::Settings {
            window_bits: self.ws_compression_window_bits,
            mem_level: self.ws_compression_mem_level,
            level: self.ws_compression_level,
            context_takeover: self.ws_compression_context_takeover,
            encoder: self.ws_compression_encoder,
        })
    }

    /// Fan-out threads: the flag, or with 0 one per CPU the process may use, at most 4 (a
    /// one-vCPU task gets 1, and no helper threads).
    pub fn fanout_threads(&self) -> usize {
        match self.fanout_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        }
    }

    /// Where events come from, as the REST API names it (`--replay` alone means a replay).
    pub fn source_name(&self) -> &'static str {
        match (self.source, &self.replay) {
            (Source::Sim, Some(_)) => Source::Replay.as_str(),
            (source, _) => source.as_str(),
        }
    }

    /// The listen address: the flag or variable, else `$PORT`, else 8080.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        if let Some(addr) = self.listen {
            return Ok(addr);
        }
        let port = match std::env::var("PORT") {
            Ok(p) => p.parse().map_err(|_| ConfigError::Port(p))?,
            Err(_) => 8080,
        };
        Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sim_rate > MAX_RATE {
            return Err(ConfigError::Rate(self.sim_rate));
        }
        if self.sim_symbols.is_empty() || self.sim_symbols.len() > 1000 {
            return Err(ConfigError::SymbolCount);
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.sim_symbols {
            if !valid_symbol(s) {
                return Err(ConfigError::Symbol(s.clone()));
            }
            if !seen.insert(s) {
                return Err(ConfigError::DuplicateSymbol(s.clone()));
            }
        }
        if !self.replay_speed.is_finite() || self.replay_speed < 0.0 {
            return Err(ConfigError::ReplaySpeed(self.replay_speed));
        }
        match self.source {
            Source::Sim => {}
            Source::Replay if self.replay.is_none() => return Err(ConfigError::NoReplayFile),
            Source::Replay => {}
            Source::Kraken | Source::Binance | Source::Coinbase => self.validate_venue()?,
        }
        let ranges: [(&'static str, usize, usize, usize); 11] = [
            ("--history", self.history, 0, 100_000),
            ("--fanout-threads", self.fanout_threads, 0, 64),
            ("--candle-history", self.candle_history, 1, 100_000),
            ("--max-connections", self.max_connections, 1, 1_000_000),
            ("--max-subscriptions", self.max_subscriptions, 1, 100_000),
            ("--max-message-bytes", self.max_message_bytes, 64, 65_536),
            ("--queue-capacity", self.queue_capacity, 8, 1_000_000),
            (
                "--ws-compression-max-connections",
                self.ws_compression_max_connections,
                0,
                1_000_000,
            ),
            (
                "--ws-compression-window-bits",
                self.ws_compression_window_bits.into(),
                9,
                15,
            ),
            (
                "--ws-compression-level",
                self.ws_compression_level.into(),
                1,
                9,
            ),
            (
                "--ws-compression-mem-level",
                self.ws_compression_mem_level.into(),
                1,
                9,
            ),
        ];
        for (flag, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Range {
                    flag,
                    min: min as u64,
                    max: max as u64,
                    value: value as u64,
                });
            }
        }
        self.validate_broker()?;
        if !(1..=100_000).contains(&self.max_message_rate) {
            return Err(ConfigError::Range {
                flag: "--max-message-rate",
                min: 1,
                max: 100_000,
                value: u64::from(self.max_message_rate),
            });
        }
        Ok(())
    }
}

/// Coinbase products a process follows: each has its own connection.
pub const MAX_COINBASE_PRODUCTS: usize = 100;

/// Instruments a Kraken source follows (one connection; our symbol numbers are 16 bits).
pub const MAX_KRAKEN_PAIRS: usize = 1000;

impl Config {
    /// A live venue's instruments (there, at most what one process can follow, each named
    /// once in our form) and endpoints.
    fn validate_venue(&self) -> Result<(), ConfigError> {
        let venue = self.source.as_str();
        if self.symbols.is_empty() {
            return Err(ConfigError::NoVenueSymbols(venue));
        }
        let max = match self.source {
            // Three streams per instrument, and Binance takes 1024 per connection.
            Source::Binance => crate::feed::binance::MAX_INSTRUMENTS,
            Source::Coinbase => MAX_COINBASE_PRODUCTS,
            _ => MAX_KRAKEN_PAIRS,
        };
        if self.symbols.len() > max {
            return Err(ConfigError::VenueSymbolCount { venue, max });
        }
        let mut seen = std::collections::HashSet::new();
        for s in &self.symbols {
            let name = match self.source {
                Source::Binance => crate::venue::binance::Instrument::parse(s).map(|i| i.name),
                _ => normalize_symbol(s),
            };
            if !name.is_some_and(|name| seen.insert(name)) {
                return Err(ConfigError::VenueSymbol(s.clone()));
            }
        }
        match self.source {
            Source::Kraken => check_url("--kraken-url", &self.kraken_url, WEBSOCKET),
            Source::Coinbase => check_url("--coinbase-url", &self.coinbase_url, WEBSOCKET),
            _ => {
                check_url("--binance-url", &self.binance_url, WEBSOCKET)?;
                check_url("--binance-rest-url", &self.binance_rest_url, HTTP)
            }
        }
    }
}

impl Config {
    /// A broker exactly when the role needs one, with a URL, namespace and timings that work.
    fn validate_broker(&self) -> Result<(), ConfigError> {
        let role = match self.role {
            Role::All if self.broker.is_some() => return Err(ConfigError::BrokerWithoutRole),
            Role::All => return Ok(()),
            Role::Ingest => "ingest",
            Role::Edge => "edge",
        };
        let url = self.broker.as_deref().ok_or(ConfigError::NoBroker(role))?;
        check_url("--broker", url, ["rediss://", "redis://"])?;
        if url.contains('@') {
            return Err(ConfigError::VenueUrl {
                flag: "--broker",
                url: "(not shown: it holds credentials)".into(),
                why: "put the password in TICKSTREAM_BROKER_PASSWORD, not in the URL".into(),
            });
        }
        if !crate::broker::valid_namespace(&self.broker_namespace) {
            return Err(ConfigError::BrokerNamespace(self.broker_namespace.clone()));
        }
        let ranges = [
            ("--broker-lease", self.broker_lease, 1, 60),
            ("--broker-max-lag", self.broker_max_lag, 1, 600),
        ];
        for (flag, value, min, max) in ranges {
            let (min, max) = (Duration::from_secs(min), Duration::from_secs(max));
            if !(min..=max).contains(&value) {
                return Err(ConfigError::DurationRange {
                    flag,
                    min,
                    max,
                    value,
                });
            }
        }
        Ok(())
    }
}

/// The schemes a venue URL may have: the secure one (the default) and the plain one (a local
/// double or proxy).
const WEBSOCKET: [&str; 2] = ["wss://", "ws://"];
const HTTP: [&str; 2] = ["https://", "http://"];

/// `SCHEME://host[:port]/path` with one of `schemes`.
fn check_url(flag: &'static str, url: &str, schemes: [&str; 2]) -> Result<(), ConfigError> {
    let bad = |why: String| ConfigError::VenueUrl {
        flag,
        url: url.to_string(),
        why,
    };
    let rest = schemes
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| bad(format!("must start with {} or {}", schemes[0], schemes[1])))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("tickstream").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.sim_symbols.len(), 10);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert_eq!(
            parse(&["--sim-rate", "5000"]).validate(),
            Err(ConfigError::Rate(5000))
        );
        assert_eq!(
            parse(&["--sim-symbols", "AAPL,aapl"]).validate(),
            Err(ConfigError::Symbol("aapl".into()))
        );
        assert_eq!(
            parse(&["--sim-symbols", "AAPL,AAPL"]).validate(),
            Err(ConfigError::DuplicateSymbol("AAPL".into()))
        );
        let err = parse(&["--ws-compression-window-bits", "8"]).validate();
        assert!(err.is_err_and(|e| e.to_string().contains("--ws-compression-window-bits")));
        assert_eq!(parse(&["--ws-compression", "false"]).deflate(), None);
        let err = parse(&["--max-message-bytes", "10"]).validate();
        assert!(err.is_err_and(|e| e.to_string().contains("--max-message-bytes")));
        assert!(Config::try_parse_from(["tickstream", "--heartbeat-interval", "soon"]).is_err());
    }

    #[test]
    fn a_broker_goes_with_the_roles_that_use_it() {
        let broker = ["--broker", "redis://127.0.0.1:6379"];
        assert_eq!(
            parse(&["--role", "edge"]).validate(),
            Err(ConfigError::NoBroker("edge"))
        );
        assert_eq!(
            parse(&broker).validate(),
            Err(ConfigError::BrokerWithoutRole)
        );
        for role in ["ingest", "edge"] {
            let c = parse(&[&broker[..], &["--role", role]].concat());
            assert_eq!(c.validate(), Ok(()), "{role}");
        }
        let bad = |args: &[&str]| parse(&[&["--role", "edge"], args].concat()).validate();
        assert!(bad(&["--broker", "http://x:6379"]).is_err());
        let secret = bad(&["--broker", "redis://:hunter2@x:6379"]).expect_err("refused");
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
        assert!(
            bad(&[&broker[..], &["--broker-namespace", "a b"]].concat())
                .is_err_and(|e| e.to_string().contains("--broker-namespace"))
        );
        assert!(
            bad(&[&broker[..], &["--broker-lease", "100ms"]].concat())
                .is_err_and(|e| e.to_string().contains("--broker-lease"))
        );
    }

    #[test]
    fn sources_and_venue_symbols() {
        let kraken = ["--source", "kraken", "--kraken-url", "ws://127.0.0.1:9/v2"];
        assert_eq!(
            parse(&kraken).validate(),
            Err(ConfigError::NoVenueSymbols("kraken"))
        );
        let with = |symbols: &str| {
            let mut args = kraken.to_vec();
            args.extend(["--symbols", symbols]);
            parse(&args).validate()
        };
        assert_eq!(with("BTC/USD,ETH/USD"), Ok(()));
        assert_eq!(
            with("BTC/USD,btc-usd"),
            Err(ConfigError::VenueSymbol("btc-usd".into()))
        );
        assert_eq!(
            with("BTC USD"),
            Err(ConfigError::VenueSymbol("BTC USD".into()))
        );
        assert_eq!(normalize_symbol("xbt/usd").as_deref(), Some("XBT-USD"));
        assert_eq!(
            parse(&["--source", "kraken", "--symbols", "BTC/USD"]).validate(),
            Ok(()),
            "the default endpoint is Kraken's wss://"
        );
        let http = parse(&[
            "--source",
            "kraken",
            "--symbols",
            "BTC/USD",
            "--kraken-url",
            "https://ws.kraken.com",
        ])
        .validate();
        assert!(http.is_err_and(|e| e.to_string().contains("must start with wss:// or ws://")));
        assert_eq!(
            parse(&["--source", "replay"]).validate(),
            Err(ConfigError::NoReplayFile)
        );
        let binance = |symbols: &str, rest: &str| {
            parse(&[
                "--source",
                "binance",
                "--symbols",
                symbols,
                "--binance-rest-url",
                rest,
            ])
            .validate()
        };
        assert_eq!(
            binance("BTCUSDT,eth-usdt", "https://api.binance.com"),
            Ok(())
        );
        assert_eq!(
            binance("BTCUSDT,BTC/USDT", "http://127.0.0.1:1"),
            Err(ConfigError::VenueSymbol("BTC/USDT".into()))
        );
        assert_eq!(
            binance("BTCXYZ", "http://127.0.0.1:1"),
            Err(ConfigError::VenueSymbol("BTCXYZ".into()))
        );
        assert!(
            binance("BTCUSDT", "ws://127.0.0.1:1")
                .is_err_and(|e| e.to_string().contains("https:// or http://"))
        );
        let many: Vec<String> = (0..342).map(|i| format!("C{i}-USDT")).collect();
        assert_eq!(
            binance(&many.join(","), "http://127.0.0.1:1"),
            Err(ConfigError::VenueSymbolCount {
                venue: "binance",
                max: 341
            })
        );
    }
}
