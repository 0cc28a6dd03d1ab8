//! Optional API keys for `/ws` and `/api`: off unless keys are configured.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::http::error_response;
use crate::ws::protocol::ErrorCode;

/// Accepts `Authorization: Bearer KEY` or `?token=KEY` (browsers cannot set headers on a
/// WebSocket). Keys never reach the logs.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return next.run(request).await;
    }
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let presented = from_header.or(from_query);
    match presented {
        Some(key)
            if keys
                .iter()
                .any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) =>
        {
            next.run(request).await
        }
        Some(_) => {
            state.metrics.rejected(ErrorCode::Unauthorized);
            error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "invalid API key",
            )
        }
        None => {
            state.metrics.rejected(ErrorCode::Unauthorized);
            error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "an API key is required: Authorization: Bearer KEY or ?token=KEY",
            )
        }
    }
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
