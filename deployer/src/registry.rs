//! A small client for the OCI distribution API, enough to push and pull one image: ECR speaks it
//! at its proxy endpoint, and so does the local registry. Written for ECR as it really behaves,
//! not only for the reference registry (ADR-0011 says why this is ours and not `oci-client`):
//!
//! - Each blob goes up in one request (`POST` to open the session, then `PUT ?digest=` with the
//!   bytes). No `PATCH`: ECR answers it 201 where the spec says 202, may omit `Location`, and
//!   silently discards every chunk after the first.
//! - `Location` may be absolute or relative; both are resolved against the request's URL.
//! - Transient failures (connection errors, timeouts, 429, 5xx) are retried with exponential
//!   backoff and jitter; every body read is bounded; every digest is parsed, never sliced.
//! - Blobs the registry already holds are skipped, and a manifest is only written when its tag
//!   does not already name it. Tags are immutable in ECR: re-pushing a tag with other content
//!   is refused there, and said so here.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Client, StatusCode, Url, header};

use crate::oci::{Blob, DOCKER_MANIFEST_V2, Image, MANIFEST_V1};
use crate::reference::Digest;

/// Bounds every request; a blob of a few MiB takes well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A registry's error body is only read this far.
const MAX_ERROR_BODY: usize = 2048;
/// The distribution spec's recommended bound on a manifest.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// A pulled blob may not be larger than this.
pub const MAX_BLOB_BYTES: usize = 1 << 30;
/// Attempts per request, the first included.
const ATTEMPTS: usize = 5;

#[derive(Debug, Clone)]
pub struct Registry {
    /// `https://123456789012.dkr.ecr.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`.
    base: Url,
    user: String,
    password: String,
    client: Client,
    /// The first wait before a retry (tests shorten it).
    backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
        /// A connection or timeout failure: worth another attempt.
        retry: bool,
    },
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "the registry refused our credentials at {url} (HTTP {status}): the ECR token may have expired or be for another account"
    )]
    Unauthorized { url: String, status: u16 },
    #[error(
        "{url} asks for token authentication (a Bearer challenge); the deployer logs in with basic auth, as ECR and the local registry expect"
    )]
    TokenAuth { url: String },
    #[error("the registry answered digest {got} for {wanted}")]
    DigestMismatch { wanted: String, got: String },
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {why}")]
    Malformed { url: String, why: String },
    #[error(
        "tag {tag} already names other content in {repository}, and the repository's tags are immutable"
    )]
    ImmutableTag { repository: String, tag: String },
    #[error("`{base}` is not a registry URL: {why}")]
    BadBase { base: String, why: String },
}

impl RegistryError {
    /// Whether another attempt may succeed.
    pub fn transient(&self) -> bool {
        match self {
            RegistryError::Transport { retry, .. } => *retry,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pushed {
    pub digest: String,
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub bytes_uploaded: usize,
    pub manifest_written: bool,
}

fn transport(method: &'static str, url: &Url) -> impl FnOnce(reqwest::Error) -> RegistryError {
    let url = url.to_string();
    move |e| RegistryError::Transport {
        method,
        retry: e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
        message: e.to_string(),
        url,
    }
}

/// Reads at most `limit` bytes of `response`, whatever its `Content-Length` claims.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    method: &'static str,
) -> Result<Vec<u8>, RegistryError> {
    let url = response.url().clone();
    if response.content_length().is_some_and(|l| l > limit as u64) {
        return Err(RegistryError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport(method, &url))? {
        if body.len() + chunk.len() > limit {
            return Err(RegistryError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error body, for the message.
async fn error_text(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

impl Registry {
    pub fn new(base: &str, user: &str, password: &str) -> Result<Registry, RegistryError> {
        crate::tls();
        let bad = |why: &str| RegistryError::BadBase {
            base: base.to_string(),
            why: why.to_string(),
        };
        let parsed = Url::parse(base.trim_end_matches('/')).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("it needs http:// or https:// and a host"));
        }
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tickstream-deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Registry {
            base: parsed,
            user: user.to_string(),
            password: password.to_string(),
            client,
            backoff: Duration::from_millis(500),
        })
    }

    /// Shortens the waits between attempts (tests).
    pub fn with_backoff(mut self, first: Duration) -> Registry {
        self.backoff = first;
        self
    }

    /// The registry's host (and port), as image references name it.
    pub fn host(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        }
    }

    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.base.join(path).map_err(|e| RegistryError::Malformed {
            url: format!("{}{path}", self.base),
            why: e.to_string(),
        })
    }

    /// Sends with basic auth; a 401 or 403 becomes [`RegistryError::Unauthorized`] (or
    /// [`RegistryError::TokenAuth`] when the registry wants a token).
    async fn send(
        &self,
        method: &'static str,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let response = request
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(transport(method, url))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let bearer = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("bearer"));
            return Err(if bearer {
                RegistryError::TokenAuth {
                    url: url.to_string(),
                }
            } else {
                RegistryError::Unauthorized {
                    url: url.to_string(),
                    status: status.as_u16(),
                }
            });
        }
        Ok(response)
    }

    async fn fail(method: &'static str, url: &Url, response: reqwest::Response) -> RegistryError {
        RegistryError::Status {
            method,
            url: url.to_string(),
            status: response.status().as_u16(),
            body: error_text(response).await,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or has had [`ATTEMPTS`] tries.
    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        op.retry(
            ExponentialBuilder::default()
                .with_min_delay(self.backoff)
                .with_max_delay(self.backoff * 16)
                .with_max_times(ATTEMPTS - 1)
                .with_jitter(),
        )
        .when(RegistryError::transient)
        .notify(|e, wait| tracing::warn!(%e, ?wait, "{what}: retrying"))
        .await
    }

    /// Pushes every blob the registry lacks, then the manifest under `tag`.
    pub async fn push(
        &self,
        repository: &str,
        image: &Image,
        tag: &str,
    ) -> Result<Pushed, RegistryError> {
        let mut pushed = Pushed {
            digest: image.manifest.digest.to_string(),
            ..Pushed::default()
        };
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if self.has_blob(repository, &blob.digest).await? {
                pushed.blobs_skipped += 1;
            } else {
                self.retrying("uploading a blob", || self.upload(repository, blob))
                    .await?;
                pushed.blobs_uploaded += 1;
                pushed.bytes_uploaded += blob.data.len();
            }
        }
        if self.manifest_digest(repository, tag).await?.as_ref() == Some(&image.manifest.digest) {
            return Ok(pushed);
        }
        self.retrying("writing the manifest", || {
            self.put_manifest(repository, image, tag)
        })
        .await?;
        pushed.manifest_written = true;
        Ok(pushed)
    }

    async fn put_manifest(
        &self,
        repository: &str,
        image: &Image,
        tag: &str,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{tag}"))?;
        let response = self
            .send(
                "PUT",
                &url,
                self.client
                    .put(url.clone())
                    .header(header::CONTENT_TYPE, &image.manifest.media_type)
                    .body(image.manifest.data.clone()),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::OK => {}
            StatusCode::BAD_REQUEST => {
                let body = error_text(response).await;
                if body.contains("TAG_INVALID") || body.contains("ImageTagAlreadyExists") {
                    return Err(RegistryError::ImmutableTag {
                        repository: repository.to_string(),
                        tag: tag.to_string(),
                    });
                }
                return Err(RegistryError::Status {
                    method: "PUT",
                    url: url.to_string(),
                    status: 400,
                    body,
                });
            }
            _ => return Err(Self::fail("PUT", &url, response).await),
        }
        if let Some(got) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && got != image.manifest.digest.as_str()
        {
            return Err(RegistryError::DigestMismatch {
                wanted: image.manifest.digest.to_string(),
                got: got.chars().take(100).collect(),
            });
        }
        Ok(())
    }

    async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"))?;
        self.retrying("checking a blob", || async {
            let response = self
                .send("HEAD", &url, self.client.head(url.clone()))
                .await?;
            match response.status() {
                StatusCode::OK => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(Self::fail("HEAD", &url, response).await),
            }
        })
        .await
    }

    /// One blob in one request: `POST` opens the session, `PUT ?digest=` carries every byte.
    async fn upload(&self, repository: &str, blob: &Blob) -> Result<(), RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/"))?;
        let response = self
            .send(
                "POST",
                &url,
                self.client
                    .post(url.clone())
                    .header(header::CONTENT_LENGTH, 0),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(Self::fail("POST", &url, response).await);
        }
        let mut close = location(&url, &response)?;
        close
            .query_pairs_mut()
            .append_pair("digest", blob.digest.as_str());
        let response = self
            .send(
                "PUT",
                &close,
                self.client
                    .put(close.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, blob.data.len())
                    .body(blob.data.clone()),
            )
            .await?;
        if !matches!(
            response.status(),
            StatusCode::CREATED | StatusCode::NO_CONTENT
        ) {
            return Err(Self::fail("PUT", &close, response).await);
        }
        Ok(())
    }

    /// The digest `reference` (a tag or digest) names in the registry, if it exists.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"))?;
        self.retrying("checking a manifest", || async {
            let response = self
                .send(
                    "HEAD",
                    &url,
                    self.client
                        .head(url.clone())
                        .header(header::ACCEPT, accept()),
                )
                .await?;
            match response.status() {
                StatusCode::OK => {
                    let header = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    Digest::parse(header)
                        .map(Some)
                        .map_err(|e| RegistryError::Malformed {
                            url: url.to_string(),
                            why: format!("Docker-Content-Digest: {e}"),
                        })
                }
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(Self::fail("HEAD", &url, response).await),
            }
        })
        .await
    }

    async fn get(
        &self,
        url: &Url,
        accept_header: Option<String>,
        limit: usize,
    ) -> Result<(String, Vec<u8>), RegistryError> {
        self.retrying("downloading", || async {
            let mut request = self.client.get(url.clone());
            if let Some(a) = &accept_header {
                request = request.header(header::ACCEPT, a);
            }
            let response = self.send("GET", url, request).await?;
            if response.status() != StatusCode::OK {
                return Err(Self::fail("GET", url, response).await);
            }
            let media = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(MANIFEST_V1)
                .to_string();
            Ok((media, read_capped(response, limit, "GET").await?))
        })
        .await
    }

    /// Pulls the image `digest` names, verifying every blob against its digest.
    pub async fn pull(&self, repository: &str, digest: &Digest) -> Result<Image, PullError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{digest}"))?;
        let (media, data) = self.get(&url, Some(accept()), MAX_MANIFEST_BYTES).await?;
        let manifest = Blob::new(&media, data);
        if &manifest.digest != digest {
            return Err(RegistryError::DigestMismatch {
                wanted: digest.to_string(),
                got: manifest.digest.to_string(),
            }
            .into());
        }
        let parsed: serde_json::Value = serde_json::from_slice(&manifest.data)
            .map_err(|e| crate::oci::OciError::Malformed(e.to_string()))?;
        let mut blobs = std::collections::HashMap::new();
        let descriptors = std::iter::once(&parsed["config"])
            .chain(parsed["layers"].as_array().into_iter().flatten());
        for d in descriptors {
            let named = d["digest"].as_str().unwrap_or_default();
            let blob_digest =
                Digest::parse(named).map_err(|e| crate::oci::OciError::Malformed(e.to_string()))?;
            let url = self.url(&format!("/v2/{repository}/blobs/{blob_digest}"))?;
            let (_, data) = self.get(&url, None, MAX_BLOB_BYTES).await?;
            blobs.insert(blob_digest, data);
        }
        Ok(Image::from_parts(manifest, |d| blobs.remove(d))?)
    }
}

/// The upload session's URL from `Location`, absolute or relative to the request.
fn location(url: &Url, response: &reqwest::Response) -> Result<Url, RegistryError> {
    let value = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Malformed {
            url: url.to_string(),
            why: format!(
                "HTTP {} without a Location header for the upload",
                response.status().as_u16()
            ),
        })?;
    url.join(value).map_err(|e| RegistryError::Malformed {
        url: url.to_string(),
        why: format!(
            "Location `{}`: {e}",
            value.chars().take(200).collect::<String>()
        ),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Image(#[from] crate::oci::OciError),
}

fn accept() -> String {
    format!("{MANIFEST_V1}, {DOCKER_MANIFEST_V2}")
}
