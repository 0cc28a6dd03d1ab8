//! Prometheus metrics. The hot path only touches atomics: no label lookups per message.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::ws::protocol::ErrorCode;

/// The configured source (`sim`, `replay`, `kraken`, `binance`, `coinbase`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: CodeValue,
}

/// An [`ErrorCode`] as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub struct CodeValue(pub ErrorCode);

impl EncodeLabelValue for CodeValue {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    /// Connections that agreed permessage-deflate.
    pub connections_compressed: Gauge,
    /// Bytes of messages before and after compression.
    pub deflate_in_bytes: Counter,
    pub deflate_out_bytes: Counter,
    /// 1 once ECS has started stopping this task.
    pub draining: Gauge,
    pub connections_total: Counter,
    pub connections_rejected: Family<CodeLabel, Counter>,
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    pub events_published: Counter,
    pub frames_dropped: Counter,
    pub writes_blocked: Counter,
    pub slow_consumer_disconnects: Counter,
    pub heartbeat_timeouts: Counter,
    /// Connections closed with 1008 for refused messages past their allowance.
    pub abuse_disconnects: Counter,
    pub client_errors: Family<CodeLabel, Counter>,
    pub send_lag: LagHistogram,
    /// 1 while the live venue's connection is up and subscribed (0 with no venue).
    pub venue_up: Gauge,
    pub venue_reconnects: Counter,
    /// Books rebuilt from a new snapshot after a gap or checksum mismatch, per symbol.
    pub book_resyncs: Counter,
    /// 1, labelled with the source: says which source the `venue_*` figures are about.
    pub source_info: Family<SourceLabel, Gauge>,
    /// Symbols whose source is down (their streams are stale).
    pub stale_symbols: Gauge,
    /// 1 while the broker answers (`--role ingest` or `edge`).
    pub broker_up: Gauge,
    /// Connections to the broker lost (and tried again).
    pub broker_reconnects: Counter,
    /// Microseconds from the ingest's publish to this edge applying it, at the last batch.
    pub broker_lag_micros: Gauge,
    /// 1 while this ingest task holds the writer's lease.
    pub broker_lease_holder: Gauge,
    /// Epochs this task has started (ingest) or followed (edge).
    pub broker_epochs: Counter,
    /// Events written into the broker (ingest) or read from it (edge).
    pub broker_events: Counter,
    /// Events an ingest task dropped: it was standby, or its queue overflowed while the broker
    /// was away (a new epoch follows, so clients are told).
    pub broker_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tickstream");
        let m = Self {
            connections_open: Gauge::default(),
            connections_compressed: Gauge::default(),
            deflate_in_bytes: Counter::default(),
            deflate_out_bytes: Counter::default(),
            draining: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Family::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            events_published: Counter::default(),
            frames_dropped: Counter::default(),
            writes_blocked: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            heartbeat_timeouts: Counter::default(),
            abuse_disconnects: Counter::default(),
            client_errors: Family::default(),
            send_lag: LagHistogram::default(),
            venue_up: Gauge::default(),
            venue_reconnects: Counter::default(),
            book_resyncs: Counter::default(),
            source_info: Family::default(),
            stale_symbols: Gauge::default(),
            broker_up: Gauge::default(),
            broker_reconnects: Counter::default(),
            broker_lag_micros: Gauge::default(),
            broker_lease_holder: Gauge::default(),
            broker_epochs: Counter::default(),
            broker_events: Counter::default(),
            broker_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "venue_up",
            "1 while the live venue's connection is up and subscribed",
            m.venue_up.clone(),
        );
        registry.register(
            "venue_reconnects",
            "Connections to the live venue lost (and tried again)",
            m.venue_reconnects.clone(),
        );
        registry.register(
            "source_info",
            "1, labelled with the configured source (sim, replay, kraken, binance, coinbase)",
            m.source_info.clone(),
        );
        registry.register(
            "stale_symbols",
            "Symbols whose source is down: their streams are stale",
            m.stale_symbols.clone(),
        );
        for (name, help, gauge) in [
            ("broker_up", "1 while the broker answers", &m.broker_up),
            (
                "broker_lag_micros",
                "Microseconds from the ingest's publish to this edge applying it (last batch)",
                &m.broker_lag_micros,
            ),
            (
                "broker_lease_holder",
                "1 while this ingest task holds the writer's lease",
                &m.broker_lease_holder,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        for (name, help, counter) in [
            (
                "broker_reconnects",
                "Connections to the broker lost (and tried again)",
                &m.broker_reconnects,
            ),
            (
                "broker_epochs",
                "Epochs this task started (ingest) or followed (edge)",
                &m.broker_epochs,
            ),
            (
                "broker_events",
                "Events written into the broker (ingest) or read from it (edge)",
                &m.broker_events,
            ),
            (
                "broker_dropped",
                "Events an ingest task dropped as standby or while the broker was away",
                &m.broker_dropped,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "book_resyncs",
            "Books rebuilt from a new snapshot after a sequence gap or checksum mismatch",
            m.book_resyncs.clone(),
        );
        registry.register(
            "connections_open",
            "WebSocket connections now open",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_compressed",
            "WebSocket connections now open with permessage-deflate",
            m.connections_compressed.clone(),
        );
        registry.register(
            "deflate_in_bytes",
            "Message bytes given to the compressor (server to client)",
            m.deflate_in_bytes.clone(),
        );
        registry.register(
            "deflate_out_bytes",
            "Compressed message bytes it produced (without frame headers)",
            m.deflate_out_bytes.clone(),
        );
        registry.register(
            "draining",
            "1 once ECS has started stopping this task: clients are being told to reconnect",
            m.draining.clone(),
        );
        registry.register(
            "connections",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "connections_rejected",
            "WebSocket upgrades refused, by reason",
            m.connections_rejected.clone(),
        );
        registry.register(
            "messages_sent",
            "WebSocket messages written to clients",
            m.messages_sent.clone(),
        );
        registry.register(
            "bytes_sent",
            "Payload bytes written to clients",
            m.bytes_sent.clone(),
        );
        registry.register(
            "events_published",
            "Events published by the feed",
            m.events_published.clone(),
        );
        registry.register(
            "frames_dropped",
            "Frames not queued because a client's queue was full",
            m.frames_dropped.clone(),
        );
        registry.register(
            "writes_blocked",
            "Write attempts a client's socket refused (back-pressure); its connection task retries when it drains",
            m.writes_blocked.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "Clients disconnected because their queue overflowed",
            m.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "heartbeat_timeouts",
            "Clients disconnected because they stopped answering pings",
            m.heartbeat_timeouts.clone(),
        );
        registry.register(
            "abuse_disconnects",
            "Connections closed with 1008: refused messages faster than their allowance refills",
            m.abuse_disconnects.clone(),
        );
        registry.register(
            "client_errors",
            "Error messages sent to clients, by code",
            m.client_errors.clone(),
        );
        registry.register(
            "send_lag_seconds",
            "Time from an event's timestamp to the end of its fan-out (one sample per published batch)",
            m.send_lag.clone(),
        );
        Self { registry, ..m }
    }

    pub fn client_error(&self, code: ErrorCode) {
        self.client_errors
            .get_or_create(&CodeLabel {
                code: CodeValue(code),
            })
            .inc();
    }

    pub fn rejected(&self, code: ErrorCode) {
        self.connections_rejected
            .get_or_create(&CodeLabel {
                code: CodeValue(code),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Upper bounds of the lag buckets in microseconds: 50 µs doubling up to about 13 s.
const LAG_BOUNDS_US: [u64; 19] = {
    let mut b = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        b[i] = 50 << i;
        i += 1;
    }
    b
};

/// A latency histogram on atomics. The client library's histogram takes a lock per
/// observation, which every connection task would contend for on every write batch.
#[derive(Debug, Clone, Default)]
pub struct LagHistogram {
    inner: Arc<LagInner>,
}

#[derive(Debug, Default)]
struct LagInner {
    buckets: [AtomicU64; 20],
    sum_us: AtomicU64,
}

impl LagHistogram {
    pub fn observe_micros(&self, us: u64) {
        let i = LAG_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LAG_BOUNDS_US.len());
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

impl TypedMetric for LagHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LagHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let mut total = 0;
        let mut buckets = Vec::with_capacity(LAG_BOUNDS_US.len() + 1);
        for (i, count) in self.inner.buckets.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            total += count;
            let bound = LAG_BOUNDS_US.get(i).map_or(f64::MAX, |&b| b as f64 / 1e6);
            buckets.push((bound, count));
        }
        let sum = self.inner.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_histogram_is_cumulative() {
        let m = Metrics::new();
        m.send_lag.observe_micros(10);
        m.send_lag.observe_micros(120);
        m.send_lag.observe_micros(u64::MAX / 4);
        let text = m.render();
        assert!(
            text.contains("tickstream_send_lag_seconds_bucket{le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tickstream_send_lag_seconds_bucket{le=\"0.0002\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tickstream_send_lag_seconds_count 3"),
            "{text}"
        );
    }
}
