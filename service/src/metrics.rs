//! Prometheus metrics. The hot path only touches atomics: no label lookups per message.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ws::protocol::ErrorCode;

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
    pub connections_total: Counter,
    pub connections_rejected: Family<CodeLabel, Counter>,
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    pub events_published: Counter,
    pub frames_dropped: Counter,
    pub slow_consumer_disconnects: Counter,
    pub heartbeat_timeouts: Counter,
    pub client_errors: Family<CodeLabel, Counter>,
    pub send_lag: Histogram,
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
            connections_total: Counter::default(),
            connections_rejected: Family::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            events_published: Counter::default(),
            frames_dropped: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            heartbeat_timeouts: Counter::default(),
            client_errors: Family::default(),
            // 50 µs .. ~13 s
            send_lag: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "WebSocket connections now open",
            m.connections_open.clone(),
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
            "client_errors",
            "Error messages sent to clients, by code",
            m.client_errors.clone(),
        );
        registry.register(
            "send_lag_seconds",
            "Time from an event's timestamp to its write to a client (one sample per write batch)",
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
