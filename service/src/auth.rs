//! Optional API keys for `/ws` and `/api`: off unless keys are configured.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::AppState;
use crate::http::error_response;
use crate::ws::protocol::ErrorCode;

/// The subprotocol a WebSocket client offers to carry its key: `tickstream.key.` and the key in
/// unpadded base64url (browsers cannot set headers on a WebSocket; a subprotocol they can).
pub const KEY_PROTOCOL_PREFIX: &str = "tickstream.key.";
/// The subprotocol the server selects; a client carrying its key in a subprotocol offers it too,
/// so the key itself is never echoed back.
pub const PROTOCOL: &str = "tickstream.v1";

/// The key a request presents, from (in order) `Authorization: Bearer KEY` (the scheme in any
/// case, RFC 9110), the `tickstream.key.*` subprotocol, or `?token=KEY` (kept for old clients;
/// query strings end up in access logs).
pub fn presented_key(request: &Request) -> Option<String> {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string());
    let from_protocol = || {
        request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find_map(|p| p.strip_prefix(KEY_PROTOCOL_PREFIX))
            .and_then(|encoded| URL_SAFE_NO_PAD.decode(encoded).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
    };
    let from_query = || {
        request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")))
            .map(str::to_string)
    };
    from_header.or_else(from_protocol).or_else(from_query)
}

/// Guards `/ws` and `/api` when keys are configured. Keys never reach the logs.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return next.run(request).await;
    }
    let (challenge, message) = match presented_key(&request) {
        Some(key)
            if keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
        {
            return next.run(request).await;
        }
        Some(_) => (
            r#"Bearer realm="tickstream", error="invalid_token""#,
            "invalid API key",
        ),
        None => (
            r#"Bearer realm="tickstream""#,
            "an API key is required: Authorization: Bearer KEY, or (browsers) the WebSocket subprotocols tickstream.v1 and tickstream.key.BASE64URL(KEY)",
        ),
    };
    state.metrics.rejected(ErrorCode::Unauthorized);
    let mut response = error_response(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(challenge),
    );
    response
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
