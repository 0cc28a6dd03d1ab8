//! A small client for the OCI distribution API, enough to push and pull one image: ECR speaks it
//! at its proxy endpoint, and so does the local registry. Blobs the registry already holds are
//! skipped, and a manifest is only written when the tag does not already name it.

use std::time::Duration;

use reqwest::{Client, StatusCode, header};

use crate::oci::{Blob, DOCKER_MANIFEST_V2, Image, MANIFEST_V1};

/// Bounds every request; a blob of a few MiB takes well under this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// A registry's error body is only read this far.
const MAX_ERROR_BODY: usize = 2048;
/// A pulled manifest or blob may not be larger than this.
const MAX_PULL_BYTES: usize = 1 << 30;

#[derive(Debug, Clone)]
pub struct Registry {
    /// `https://123456789012.dkr.ecr.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`.
    base: String,
    user: String,
    password: String,
    client: Client,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
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
    #[error("the registry answered digest {got} for manifest {wanted}")]
    DigestMismatch { wanted: String, got: String },
    #[error("{url}: answer larger than {MAX_PULL_BYTES} bytes")]
    TooLarge { url: String },
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

impl Registry {
    pub fn new(base: &str, user: &str, password: &str) -> Result<Registry, RegistryError> {
        crate::tls();
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tickstream-deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Transport {
                method: "build",
                url: base.to_string(),
                message: e.to_string(),
            })?;
        Ok(Registry {
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            password: password.to_string(),
            client,
        })
    }

    /// The registry's host (and port), as image references name it.
    pub fn host(&self) -> &str {
        self.base
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    async fn send(
        &self,
        method: &'static str,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let response = request
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| RegistryError::Transport {
                method,
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        Ok(response)
    }

    async fn fail(method: &'static str, url: &str, response: reqwest::Response) -> RegistryError {
        let status = response.status().as_u16();
        let mut body = response.text().await.unwrap_or_default();
        body.truncate(MAX_ERROR_BODY);
        RegistryError::Status {
            method,
            url: url.to_string(),
            status,
            body,
        }
    }

    /// Pushes every blob the registry lacks, then the manifest under `tag`.
    pub async fn push(
        &self,
        repository: &str,
        image: &Image,
        tag: &str,
    ) -> Result<Pushed, RegistryError> {
        let mut pushed = Pushed {
            digest: image.manifest.digest.clone(),
            ..Pushed::default()
        };
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            if self.has_blob(repository, &blob.digest).await? {
                pushed.blobs_skipped += 1;
            } else {
                self.upload(repository, blob).await?;
                pushed.blobs_uploaded += 1;
                pushed.bytes_uploaded += blob.data.len();
            }
        }
        if self.manifest_digest(repository, tag).await?.as_deref()
            == Some(image.manifest.digest.as_str())
        {
            return Ok(pushed);
        }
        let url = self.url(&format!("/v2/{repository}/manifests/{tag}"));
        let response = self
            .send(
                "PUT",
                &url,
                self.client
                    .put(&url)
                    .header(header::CONTENT_TYPE, &image.manifest.media_type)
                    .body(image.manifest.data.clone()),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(Self::fail("PUT", &url, response).await);
        }
        if let Some(got) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && got != image.manifest.digest
        {
            return Err(RegistryError::DigestMismatch {
                wanted: image.manifest.digest.clone(),
                got: got.to_string(),
            });
        }
        pushed.manifest_written = true;
        Ok(pushed)
    }

    async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self.send("HEAD", &url, self.client.head(&url)).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(Self::fail("HEAD", &url, response).await),
        }
    }

    /// POST to open an upload, PATCH the bytes, PUT to close it with the digest: the chunked
    /// flow, which ECR and the reference registry both accept (one chunk: our blobs are small).
    async fn upload(&self, repository: &str, blob: &Blob) -> Result<(), RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let response = self.send("POST", &url, self.client.post(&url)).await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(Self::fail("POST", &url, response).await);
        }
        let location = self.location(&url, &response)?;
        let response = self
            .send(
                "PATCH",
                &location,
                self.client
                    .patch(&location)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(
                        "Content-Range",
                        format!("0-{}", blob.data.len().saturating_sub(1)),
                    )
                    .body(blob.data.clone()),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(Self::fail("PATCH", &location, response).await);
        }
        let location = self.location(&location, &response)?;
        let separator = if location.contains('?') { '&' } else { '?' };
        let close = format!("{location}{separator}digest={}", blob.digest);
        let response = self
            .send(
                "PUT",
                &close,
                self.client.put(&close).header(header::CONTENT_LENGTH, 0),
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(Self::fail("PUT", &close, response).await);
        }
        Ok(())
    }

    fn location(&self, url: &str, response: &reqwest::Response) -> Result<String, RegistryError> {
        response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| self.url(l))
            .ok_or_else(|| RegistryError::Status {
                method: "POST",
                url: url.to_string(),
                status: response.status().as_u16(),
                body: "no Location header".into(),
            })
    }

    /// The digest `reference` (a tag or digest) names in the registry, if it exists.
    pub async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let response = self
            .send(
                "HEAD",
                &url,
                self.client.head(&url).header(header::ACCEPT, accept()),
            )
            .await?;
        match response.status() {
            StatusCode::OK => Ok(response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::fail("HEAD", &url, response).await),
        }
    }

    async fn get(
        &self,
        url: &str,
        accept_header: Option<String>,
    ) -> Result<(String, Vec<u8>), RegistryError> {
        let mut request = self.client.get(url);
        if let Some(a) = accept_header {
            request = request.header(header::ACCEPT, a);
        }
        let response = self.send("GET", url, request).await?;
        if response.status() != StatusCode::OK {
            return Err(Self::fail("GET", url, response).await);
        }
        if response
            .content_length()
            .is_some_and(|l| l > MAX_PULL_BYTES as u64)
        {
            return Err(RegistryError::TooLarge {
                url: url.to_string(),
            });
        }
        let media = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(MANIFEST_V1)
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| RegistryError::Transport {
                method: "GET",
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok((media, bytes.to_vec()))
    }

    /// Pulls the image `digest` names, verifying every blob against its digest.
    pub async fn pull(&self, repository: &str, digest: &str) -> Result<Image, PullError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{digest}"));
        let (media, data) = self.get(&url, Some(accept())).await?;
        let manifest = Blob::new(&media, data);
        if manifest.digest != digest {
            return Err(RegistryError::DigestMismatch {
                wanted: digest.to_string(),
                got: manifest.digest,
            }
            .into());
        }
        let parsed: serde_json::Value = serde_json::from_slice(&manifest.data)
            .map_err(|e| crate::oci::OciError::Malformed(e.to_string()))?;
        let mut blobs = std::collections::HashMap::new();
        let descriptors = std::iter::once(&parsed["config"])
            .chain(parsed["layers"].as_array().into_iter().flatten());
        for d in descriptors {
            if let Some(blob_digest) = d["digest"].as_str() {
                let url = self.url(&format!("/v2/{repository}/blobs/{blob_digest}"));
                let (_, data) = self.get(&url, None).await?;
                blobs.insert(blob_digest.to_string(), data);
            }
        }
        Ok(Image::from_parts(manifest, |d| blobs.remove(d))?)
    }
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
