//! The dashboard's files, embedded at build time (`build.rs`): `/` is revalidated on every load
//! (its ETag changes with each build), `/assets/*` are content-hashed names cached for a year.
//! Compressed copies are made at build time, so serving costs a lookup and a write.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub etag: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The page's own server is the only origin it talks to.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self' 'unsafe-inline'; script-src 'self'; base-uri 'none'; \
                   frame-ancestors 'none'; form-action 'none'";

fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &'static Asset, cache: &'static str, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let accepts_gzip = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|e| e.trim().split(';').next() == Some("gzip"))
        });
    match asset.gzip {
        Some(gz) if accepts_gzip => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (headers, gz).into_response()
        }
        _ => (headers, asset.body).into_response(),
    }
}

pub async fn index(request: HeaderMap) -> Response {
    match find("/index.html") {
        Some(asset) => serve(asset, "no-cache", &request),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub async fn asset(Path(rest): Path<String>, request: HeaderMap) -> Response {
    match find(&format!("/assets/{rest}")) {
        Some(asset) => serve(asset, "public, max-age=31536000, immutable", &request),
        None => {
            let shown: String = rest.chars().take(64).collect();
            crate::http::error_response(
                StatusCode::NOT_FOUND,
                crate::ws::protocol::ErrorCode::NotFound,
                &format!("no asset /assets/{shown}"),
            )
        }
    }
}
