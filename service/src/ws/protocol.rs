//! The WebSocket protocol: every message a client may send and every message the server sends.
//! `docs/protocol.md` documents these types; keep the two in step.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::hub::DataMessage;
use crate::market::{Channel, Micros};

/// Close code sent when the server shuts down or restarts: reconnect (to another task) now.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// The client message exceeded the hard frame limit; nothing of it was read.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// The client fell behind and its queue overflowed: reconnect with backoff and resume.
pub const CLOSE_SLOW_CONSUMER: u16 = 4100;
/// The client stopped answering pings.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4101;
/// A write to the client did not complete in time.
pub const CLOSE_WRITE_TIMEOUT: u16 = 4102;
/// The client kept sending messages that had to be refused (over the rate, malformed, too
/// large) faster than its error allowance refills: RFC 6455's policy violation.
pub const CLOSE_POLICY: u16 = 1008;

/// A client's `id`, kept as the exact JSON text it sent and echoed back verbatim, as
/// docs/protocol.md promises for "any JSON value": `null` stays `null`, a 30-digit integer keeps
/// every digit (a parse into a number would round it).
#[derive(Debug, Clone)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    /// The `id` of the message `text`, as sent (`None` when absent or not a JSON object).
    pub fn of(text: &str) -> Option<RequestId> {
        let fields: std::collections::HashMap<String, &RawValue> =
            serde_json::from_str(text).ok()?;
        let raw = fields.get("id")?;
        RawValue::from_string(raw.get().to_string())
            .ok()
            .map(RequestId)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// For readers of server messages (tests, clients): through a JSON value, so it also works
/// inside the tagged enum (the server never reads these back).
impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        RawValue::from_string(value.to_string())
            .map(RequestId)
            .map_err(serde::de::Error::custom)
    }
}

/// A message from the client. Unknown fields are rejected so typos surface as errors. The
/// `id` fields are accepted here and read verbatim with [`RequestId::of`].
///
/// Read with [`ClientMessage::parse`]: the operation's name first, then its fields straight
/// from the text. (A serde internally tagged enum buffers every number as a machine number
/// first, and so refused an `id` such as `1e400`: valid JSON, which we promise to echo. The
/// fuzzer found it.)
#[derive(Debug)]
pub enum ClientMessage {
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeRequest),
    Ping,
    List,
}

const OPERATIONS: &[&str] = &["subscribe", "unsubscribe", "ping", "list"];

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, serde_json::Error> {
        use serde::de::Error as _;
        /// Only the name; every other field is skipped unparsed.
        #[derive(Deserialize)]
        struct Op<'a> {
            #[serde(borrow, default)]
            op: Option<std::borrow::Cow<'a, str>>,
        }
        let op = serde_json::from_str::<Op>(text)?
            .op
            .ok_or_else(|| serde_json::Error::missing_field("op"))?;
        match &*op {
            "subscribe" => serde_json::from_str(text).map(ClientMessage::Subscribe),
            "unsubscribe" => serde_json::from_str(text).map(ClientMessage::Unsubscribe),
            "ping" => serde_json::from_str::<Bare>(text).map(|_| ClientMessage::Ping),
            "list" => serde_json::from_str::<Bare>(text).map(|_| ClientMessage::List),
            other => Err(serde_json::Error::unknown_variant(other, OPERATIONS)),
        }
    }
}

/// An operation with no fields of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bare {
    #[serde(default, rename = "op")]
    _op: IgnoredAny,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// `"subscribe"`, checked by [`ClientMessage::parse`].
    #[serde(default, rename = "op")]
    _op: IgnoredAny,
    #[serde(default)]
    pub id: Option<IgnoredAny>,
    pub symbols: Vec<String>,
    /// Defaults to `["ticker"]`.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// The last `seq` the client holds per stream, keyed `channel:symbol`.
    #[serde(default)]
    pub resume: BTreeMap<String, u64>,
    /// The epoch the resume positions belong to; a different epoch means they cannot be honoured.
    #[serde(default)]
    pub epoch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    /// `"unsubscribe"`, checked by [`ClientMessage::parse`].
    #[serde(default, rename = "op")]
    _op: IgnoredAny,
    #[serde(default)]
    pub id: Option<IgnoredAny>,
    pub symbols: Vec<String>,
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

/// Machine-readable error codes, shared by WebSocket errors and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownSymbol,
    UnknownChannel,
    RateLimited,
    TooManySubscriptions,
    MessageTooLarge,
    SlowConsumer,
    Unauthorized,
    Forbidden,
    TooManyConnections,
    NotFound,
    ShuttingDown,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::UnknownChannel => "unknown_channel",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ShuttingDown => "shutting_down",
        }
    }
}

/// The acknowledgement of one stream in a subscribe.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamAck {
    pub channel: Channel,
    pub symbol: String,
    /// The stream's latest `seq`; the next update carries `seq + 1`. 0 when nothing was published yet.
    pub seq: u64,
    /// Present when the subscribe asked to resume this stream: whether every missed update follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// `"stale"` when the stream's source is down (a `status` message says when it is back).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
}

/// A stream named in an unsubscribe acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StreamRef {
    pub channel: Channel,
    pub symbol: String,
}

/// A message from the server other than market data.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<RequestId>,
        epoch: String,
        streams: Vec<StreamAck>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<RequestId>,
        streams: Vec<StreamRef>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<RequestId>,
        ts: Micros,
    },
    List {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        id: Option<RequestId>,
        symbols: Vec<String>,
        channels: Vec<Channel>,
        subscriptions: Vec<String>,
    },
    /// Sent every heartbeat interval: the last `seq` this client was sent per stream.
    Heartbeat {
        ts: Micros,
        streams: BTreeMap<String, u64>,
    },
    /// A stream's source went down (`stale`: nothing new until it is back) or came back
    /// (`live`); a book that comes back starts with a reset snapshot.
    Status {
        channel: Channel,
        symbol: String,
        status: &'static str,
    },
    /// The server is going away: reconnect (elsewhere) and resume from `streams`.
    Reconnect {
        reason: String,
        streams: BTreeMap<String, u64>,
    },
}

impl ServerMessage {
    pub fn error(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A data message as the hub shares it with WebSocket subscribers: one whole text frame
/// (the hub's [`crate::hub::Encode`]).
pub fn data_frame(msg: &DataMessage<'_>) -> bytes::Bytes {
    super::frame::text(&serde_json::to_string(msg).unwrap_or_default())
}

/// The name of a stream in resume maps and heartbeats.
pub fn stream_name(channel: Channel, symbol: &str) -> String {
    format!("{channel}:{symbol}")
}
