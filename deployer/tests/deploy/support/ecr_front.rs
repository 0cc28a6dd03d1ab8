//! A registry front that answers as ECR does where ECR differs from the reference registry
//! behind it (`../shared/notes/aws-behaviour.md`, "ECR's registry API"):
//!
//! - `/v2/` without credentials: 401 with `WWW-Authenticate: Basic realm=...`, as ECR's proxy
//!   endpoint answers.
//! - Upload sessions live at absolute URLs on the front, stable for the session.
//! - A blob `PATCH` answers 201 Created (not the spec's 202) and no `Location`; the first
//!   chunk of a session is kept, and the body of every later `PATCH` is accepted and silently
//!   discarded (aws/containers-roadmap#2831), so a chunked upload ends corrupt and its closing
//!   `PUT` fails the digest check.
//! - Tags are immutable: a manifest `PUT` under a tag that names other content is refused with
//!   400 `TAG_INVALID`.
//!
//! Everything else is passed to the real registry (Debian's `docker-registry`) unchanged. It
//! runs on its own thread and runtime, so a test may block on a child process meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use sha2::Digest as _;

#[derive(Debug)]
struct Session {
    /// Where the real registry expects the session's next request.
    upstream: String,
    patches: u32,
    received: u64,
}

#[derive(Debug)]
struct Front {
    upstream: String,
    /// The front's own base URL, set as soon as it listens.
    url: std::sync::OnceLock<String>,
    client: reqwest::Client,
    sessions: Mutex<HashMap<String, Session>>,
    next: AtomicU64,
    /// What the front did that the reference registry would not have: for the tests to check.
    log: Mutex<Vec<String>>,
}

/// The running front; stopped when dropped.
#[derive(Debug)]
pub struct EcrFront {
    pub url: String,
    front: Arc<Front>,
    _served: super::Served,
}

impl EcrFront {
    /// Starts a front for the registry at `upstream` (`http://127.0.0.1:5000`).
    pub fn start(upstream: &str) -> EcrFront {
        tickstream_deployer::tls();
        // The front's address is known once it listens; it is set before the first request.
        let front = Arc::new(Front {
            upstream: upstream.trim_end_matches('/').to_string(),
            url: std::sync::OnceLock::new(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            sessions: Mutex::default(),
            next: AtomicU64::new(1),
            log: Mutex::default(),
        });
        let served = super::serve(
            Router::new()
                .fallback(handle)
                .layer(DefaultBodyLimit::max(256 << 20))
                .with_state(front.clone()),
        );
        let _ = front.url.set(served.url.clone());
        EcrFront {
            url: served.url.clone(),
            front,
            _served: served,
        }
    }

    /// The host and port, as image references name it.
    pub fn host(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// What the front did that the registry behind it would not have.
    pub fn log(&self) -> Vec<String> {
        self.front.log.lock().expect("log").clone()
    }
}

fn reply(status: StatusCode, headers: &[(&'static str, String)], body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    r
}

impl Front {
    fn base(&self) -> &str {
        self.url.get().map_or("", String::as_str)
    }

    fn note(&self, what: String) {
        self.log.lock().expect("log").push(what);
    }

    /// Sends the request on to the real registry.
    async fn forward(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, Response> {
        let mut request = self.client.request(method, url);
        for name in [
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::CONTENT_RANGE,
        ] {
            if let Some(v) = headers.get(&name) {
                request = request.header(name, v);
            }
        }
        request.body(body).send().await.map_err(|e| {
            reply(
                StatusCode::BAD_GATEWAY,
                &[],
                format!("the front could not reach the registry: {e}").into_bytes(),
            )
        })
    }

    /// An upstream `Location` made absolute against the upstream.
    fn upstream_location(&self, response: &reqwest::Response) -> Option<String> {
        let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
        Some(if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.upstream)
        })
    }

    /// The upstream answer, with any `Location` moved onto the front (absolute, as ECR's are).
    async fn pass(&self, response: reqwest::Response) -> Response {
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers: Vec<(&'static str, String)> = Vec::new();
        for name in [
            "content-type",
            "docker-content-digest",
            "range",
            "www-authenticate",
            "docker-upload-uuid",
        ] {
            if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
                headers.push((name, v.to_string()));
            }
        }
        if let Some(location) = self.upstream_location(&response) {
            headers.push((
                "location",
                location.replacen(&self.upstream, self.base(), 1),
            ));
        }
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        // A HEAD answer has no body but says how long the GET's would be.
        if body.is_empty()
            && let Some(length) = length
        {
            headers.push(("content-length", length));
        }
        reply(status, &headers, body)
    }
}

async fn handle(
    State(front): State<Arc<Front>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if (path == "/v2/" || path == "/v2") && !headers.contains_key(header::AUTHORIZATION) {
        return reply(
            StatusCode::UNAUTHORIZED,
            &[(
                "www-authenticate",
                "Basic realm=\"https://123456789012.dkr.ecr.us-east-1.amazonaws.com/\",service=\"ecr.amazonaws.com\"".into(),
            )],
            br#"Not Authorized"#.to_vec(),
        );
    }
    let upload = path.contains("/blobs/uploads/");
    // Opening an upload: the session gets a stable, absolute URL on the front.
    if upload && method == Method::POST {
        let response = match front
            .forward(
                method,
                &format!("{}{path}{query}", front.upstream),
                &headers,
                body,
            )
            .await
        {
            Ok(r) => r,
            Err(r) => return r,
        };
        if response.status() != reqwest::StatusCode::ACCEPTED {
            return front.pass(response).await;
        }
        let Some(upstream) = front.upstream_location(&response) else {
            return front.pass(response).await;
        };
        let id = format!("ecr-{}", front.next.fetch_add(1, Ordering::Relaxed));
        front.sessions.lock().expect("sessions").insert(
            id.clone(),
            Session {
                upstream,
                patches: 0,
                received: 0,
            },
        );
        let location = format!("{}{path}{id}", front.base());
        return reply(
            StatusCode::ACCEPTED,
            &[
                ("location", location),
                ("docker-upload-uuid", id),
                ("range", "0-0".into()),
            ],
            Vec::new(),
        );
    }
    if upload {
        let id = path.rsplit('/').next().unwrap_or_default().to_string();
        let Some((upstream, patches, received)) = front
            .sessions
            .lock()
            .expect("sessions")
            .get(&id)
            .map(|s| (s.upstream.clone(), s.patches, s.received))
        else {
            return reply(
                StatusCode::NOT_FOUND,
                &[("content-type", "application/json".into())],
                br#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}"#.to_vec(),
            );
        };
        if method == Method::PATCH {
            if patches >= 1 {
                // ECR accepts every later chunk with 201 and throws its bytes away.
                front.note(format!(
                    "PATCH {id} #{}: {} bytes accepted with 201 and discarded",
                    patches + 1,
                    body.len()
                ));
                if let Some(s) = front.sessions.lock().expect("sessions").get_mut(&id) {
                    s.patches += 1;
                }
                return reply(
                    StatusCode::CREATED,
                    &[("range", format!("0-{}", received.saturating_sub(1)))],
                    Vec::new(),
                );
            }
            let n = body.len() as u64;
            let response = match front.forward(method, &upstream, &headers, body).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            if !response.status().is_success() {
                return front.pass(response).await;
            }
            let next = front.upstream_location(&response).unwrap_or(upstream);
            if let Some(s) = front.sessions.lock().expect("sessions").get_mut(&id) {
                s.upstream = next;
                s.patches = 1;
                s.received = n;
            }
            front.note(format!("PATCH {id} #1: answered 201 without Location"));
            return reply(
                StatusCode::CREATED,
                &[("range", format!("0-{}", n.saturating_sub(1)))],
                Vec::new(),
            );
        }
        if method == Method::PUT {
            let separator = if upstream.contains('?') { '&' } else { '?' };
            let url = format!("{upstream}{separator}{}", uri.query().unwrap_or_default());
            let response = match front.forward(method, &url, &headers, body).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            front.sessions.lock().expect("sessions").remove(&id);
            return front.pass(response).await;
        }
    }
    // Immutable tags: the tag may only ever name one manifest.
    if method == Method::PUT && path.contains("/manifests/") {
        let reference = path.rsplit('/').next().unwrap_or_default();
        if !reference.starts_with("sha256:") {
            let digest = format!("sha256:{:x}", sha2::Sha256::digest(&body));
            let existing = front
                .client
                .head(format!("{}{path}", front.upstream))
                .header(
                    header::ACCEPT,
                    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
                )
                .headers(
                    headers
                        .get(header::AUTHORIZATION)
                        .map(|v| {
                            let mut h = reqwest::header::HeaderMap::new();
                            h.insert(reqwest::header::AUTHORIZATION, v.clone());
                            h
                        })
                        .unwrap_or_default(),
                )
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| {
                    r.headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                });
            if existing.as_deref().is_some_and(|e| e != digest) {
                let repository = path
                    .trim_start_matches("/v2/")
                    .split("/manifests/")
                    .next()
                    .unwrap_or_default();
                front.note(format!(
                    "PUT manifest {reference}: refused, the tag is immutable"
                ));
                return reply(
                    StatusCode::BAD_REQUEST,
                    &[("content-type", "application/json".into())],
                    format!(
                        r#"{{"errors":[{{"code":"TAG_INVALID","message":"The image tag '{reference}' already exists in the '{repository}' repository and cannot be overwritten because the repository is immutable."}}]}}"#
                    )
                    .into_bytes(),
                );
            }
        }
    }
    match front
        .forward(
            method,
            &format!("{}{path}{query}", front.upstream),
            &headers,
            body,
        )
        .await
    {
        Ok(r) => front.pass(r).await,
        Err(r) => r,
    }
}
