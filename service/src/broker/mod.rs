//! Where sources put events, and where the transport's hub gets them from.
//!
//! Sources know only a [`Sink`]. In one process (`--role all`) the sink is the [`Hub`] itself:
//! it numbers nothing (the source's `seq` is the stream position) and keeps the window in
//! memory. With a broker the same sources publish into Valkey or Redis (`--role ingest`,
//! [`ingest`]), which assigns each stream's position (offset + epoch) in one atomic script,
//! and every serving task (`--role edge`, [`edge`]) tails the broker into its own hub. The hub
//! does not know which of the two fed it; the WebSocket layer does not know there is a broker.

pub mod edge;
pub mod ingest;
mod keys;

use std::fmt;

use crate::hub::{Batch, Hub};
use crate::market::Event;
use crate::metrics::Metrics;

pub use keys::{Keys, valid_namespace};

/// What a source publishes into. Implementations never block: a sink that cannot deliver now
/// (its broker is down) bounds what it holds and says what it lost.
pub trait Sink: Send + Sync + fmt::Debug {
    /// Takes `events` (draining them): contiguous `seq` per stream, except where the source
    /// skipped ahead, which the sink passes on as a jump (clients are told to resume).
    fn publish(&self, events: &mut Vec<Event>, batch: &mut Batch);
    /// Symbol `symbol`'s source went down (`live` false) or came back.
    fn set_live(&self, symbol: u16, live: bool);
    fn metrics(&self) -> &Metrics;
    /// Updates kept per stream for resume: a starting source fills about this much.
    fn window(&self) -> usize;
}

/// The in-process backend: the hub keeps the window and numbers nothing.
impl Sink for Hub {
    fn publish(&self, events: &mut Vec<Event>, batch: &mut Batch) {
        self.publish_batch(events, batch);
    }

    fn set_live(&self, symbol: u16, live: bool) {
        Hub::set_live(self, symbol, live);
    }

    fn metrics(&self) -> &Metrics {
        Hub::metrics(self)
    }

    fn window(&self) -> usize {
        self.history_limit()
    }
}

/// How long a broker command may take before the connection counts as lost: a paused or
/// unreachable broker is noticed within this.
pub const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The one way to reach the broker: the URL of `--broker`, the credentials of
/// TICKSTREAM_BROKER_USER/PASSWORD, RESP3 (an edge reads notifications on the connection it
/// queries), and TLS for `rediss://` through rustls with graviola's crypto.
pub fn client(config: &crate::config::Config) -> Result<redis::Client, redis::RedisError> {
    let url = config.broker.as_deref().unwrap_or_default();
    if url.starts_with("rediss://") {
        // The provider rustls uses when a library builds its own settings; installing it twice
        // is harmless.
        let _ = rustls_client::crypto::CryptoProvider::install_default(
            rustls_graviola::default_provider(),
        );
    }
    let info = redis::IntoConnectionInfo::into_connection_info(url)?;
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    if let Some(user) = &config.broker_user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.broker_password {
        settings = settings.set_password(password);
    }
    redis::Client::open(info.set_redis_settings(settings))
}

/// Redirects followed to reach the node that holds our keys: one reaches the primary from any
/// node of a one-shard cluster; the others allow for a failover during the search.
const MAX_REDIRECTS: usize = 3;

/// A connection, with bounded connect and command times, to the node that holds `keys`; `push`
/// receives what that node pushes (an edge's notifications).
///
/// A clustered broker (MemoryDB is always clustered) may put the URL's host on a replica, which
/// answers a command on our keys with `MOVED <slot> <host>:<port>`. Every key of ours shares one
/// hash slot (the `{namespace}` tag), so there is one node to find and no slot map to keep: a
/// keyed read follows the redirect here, and a `MOVED` later (after a failover) ends the
/// connection like any other loss, and the next one finds the new primary. A standalone server
/// or ElastiCache Serverless answers the probe itself.
pub async fn connect(
    client: &redis::Client,
    keys: &Keys,
    push: Option<edge::Inbox>,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let mut node = client.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut conn = open(&node, None).await?;
        let probe: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(keys.epoch())
            .query_async(&mut conn)
            .await;
        match probe {
            Ok(_) => {
                return match push {
                    // Its own connection: a probe connection dropped later would tell the
                    // receiver it was disconnected.
                    Some(push) => open(&node, Some(push)).await,
                    None => Ok(conn),
                };
            }
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
                node = redirected(&node, &e)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "the broker redirected more than 3 times",
    )))
}

async fn open(
    client: &redis::Client,
    push: Option<edge::Inbox>,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let mut config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    if let Some(push) = push {
        config = config.set_push_sender(push);
    }
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// The client for the node a `MOVED` error names, with the same credentials and TLS settings.
/// An empty host (a node that does not know its own address) means the host we asked; a
/// hostname is kept as a name, so TLS verifies the certificate against it.
fn redirected(
    client: &redis::Client,
    moved: &redis::RedisError,
) -> redis::RedisResult<redis::Client> {
    let bad = || {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "the broker's redirect names no node",
            moved.to_string(),
        ))
    };
    let (to, _slot) = moved.redirect_node().ok_or_else(bad)?;
    let (host, port) = to.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let info = client.get_connection_info().clone();
    let host = |was: &str| if host.is_empty() { was } else { host }.to_string();
    let addr = match info.addr() {
        redis::ConnectionAddr::Tcp(was, _) => redis::ConnectionAddr::Tcp(host(was), port),
        redis::ConnectionAddr::TcpTls {
            host: was,
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host: host(was),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => return Err(bad()),
    };
    redis::Client::open(info.set_addr(addr))
}

/// A random 64-bit value (std's hasher keys are random per process).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(crate::feed::now_micros());
    h.finish()
}
