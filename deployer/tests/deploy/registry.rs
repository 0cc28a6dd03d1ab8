//! The registry client against a registry that answers as ECR does (the front in
//! `support/ecr_front.rs`, over the real `docker-registry` that `localstack/local-aws` runs on
//! 127.0.0.1:5000), and against small servers that misbehave on purpose: transient failures,
//! answers too large to hold, malformed digests and locations, token challenges.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::ecr_front::EcrFront;
use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tickstream_deployer::config::Architecture;
use tickstream_deployer::oci::Image;
use tickstream_deployer::reference::Digest;
use tickstream_deployer::registry::{Registry, RegistryError};

const REGISTRY: &str = "http://127.0.0.1:5000";
const USER: &str = "AWS";
const PASSWORD: &str = "123456789012-auth-token";

fn registry_running() {
    let endpoint = std::env::var("TICKSTREAM_LOCAL_AWS").unwrap_or_else(|_| {
        panic!("TICKSTREAM_LOCAL_AWS is not set: run ./scripts/check, or `localstack/local-aws start` and set it to http://127.0.0.1:4566")
    });
    assert!(endpoint.starts_with("http://127.0.0.1:"));
}

/// An image of its own: `bytes` as the binary.
fn image(dir: &std::path::Path, bytes: &[u8]) -> Image {
    let path = dir.join("bin");
    std::fs::write(&path, bytes).expect("write");
    Image::from_binary(&path, Architecture::X86_64, 8080, &Default::default()).expect("image")
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_and_pulls_through_a_registry_that_answers_as_ecr_does() {
    registry_running();
    let front = EcrFront::start(REGISTRY);
    let dir = tempfile::tempdir().expect("tempdir");
    // Incompressible bytes, so the layer is larger than a chunked client's first chunk would be.
    let mut bytes = Vec::with_capacity(6 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < 6 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let img = image(dir.path(), &bytes);
    let repository = unique("ecr-front");
    let registry = Registry::new(&front.url, USER, PASSWORD).expect("client");
    let tag = img.manifest.digest.tag();

    let pushed = registry.push(&repository, &img, &tag).await.expect("push");
    assert_eq!(pushed.blobs_uploaded, 2, "config and layer");
    assert!(pushed.manifest_written);
    // One request per blob: ECR's PATCH never came into it.
    assert!(
        front.log().iter().all(|l| !l.starts_with("PATCH")),
        "{:?}",
        front.log()
    );
    let again = registry.push(&repository, &img, &tag).await.expect("again");
    assert_eq!((again.blobs_uploaded, again.manifest_written), (0, false));
    let pulled = registry
        .pull(&repository, &img.manifest.digest)
        .await
        .expect("pull");
    assert_eq!(pulled.layers[0].data, img.layers[0].data);

    // The tag is immutable: other content under it is refused, and said so.
    let other = image(dir.path(), b"another binary");
    let err = registry
        .push(&repository, &other, &tag)
        .await
        .expect_err("an immutable tag");
    assert!(matches!(err, RegistryError::ImmutableTag { .. }), "{err}");
}

/// The front is as strict as ECR: the chunked upload other clients make ends corrupt.
#[tokio::test(flavor = "multi_thread")]
async fn the_front_discards_later_chunks_as_ecr_does() {
    registry_running();
    let front = EcrFront::start(REGISTRY);
    tickstream_deployer::tls();
    let client = reqwest::Client::new();
    let repository = unique("chunked");
    let blob = vec![7u8; 1000];
    let digest = Digest::of(&blob);
    let opened = client
        .post(format!("{}/v2/{repository}/blobs/uploads/", front.url))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("post");
    assert_eq!(opened.status(), 202);
    let location = opened.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert!(
        location.starts_with("http://127.0.0.1:"),
        "absolute: {location}"
    );
    let mut answers = Vec::new();
    for (start, chunk) in [(0usize, &blob[..500]), (500, &blob[500..])] {
        let r = client
            .patch(&location)
            .basic_auth(USER, Some(PASSWORD))
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .expect("patch");
        answers.push((r.status().as_u16(), r.headers().contains_key("location")));
    }
    assert_eq!(answers, [(201, false), (201, false)], "201, no Location");
    let closed = client
        .put(format!("{location}?digest={digest}"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("put");
    assert_eq!(
        closed.status(),
        400,
        "the blob is short by the discarded chunk"
    );
    assert!(
        front.log().iter().any(|l| l.contains("discarded")),
        "{:?}",
        front.log()
    );
}

/// A registry that answers each request from a script.
struct Script {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(app: Router) -> Script {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Script { url, _stop: stop }
}

fn with_header(mut r: Response, name: &'static str, value: &str) -> Response {
    r.headers_mut()
        .insert(name, HeaderValue::from_str(value).expect("header value"));
    r
}

#[tokio::test]
async fn transient_failures_are_retried_and_the_rest_fail_cleanly() {
    const D: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let app = Router::new()
        // Two 503s, then the blob is there.
        .route(
            "/v2/flaky/blobs/{digest}",
            axum::routing::head(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        StatusCode::OK.into_response()
                    }
                }
            }),
        )
        // A manifest larger than any manifest may be, with no Content-Length to warn of it.
        .route(
            "/v2/huge/manifests/{reference}",
            axum::routing::get(|| async {
                let chunks = futures_util::stream::iter(
                    (0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])),
                );
                axum::body::Body::from_stream(chunks).into_response()
            }),
        )
        .route(
            "/v2/bad-digest/manifests/{reference}",
            axum::routing::head(|| async {
                with_header(
                    StatusCode::OK.into_response(),
                    "docker-content-digest",
                    "sha256:1",
                )
            }),
        )
        .route(
            "/v2/bad-location/blobs/uploads/",
            axum::routing::post(|| async {
                with_header(
                    StatusCode::ACCEPTED.into_response(),
                    "location",
                    "http://[not a host/v2/upload",
                )
            }),
        )
        .route(
            "/v2/bad-location/blobs/{digest}",
            axum::routing::head(|| async { StatusCode::NOT_FOUND }),
        )
        .route(
            "/v2/token/manifests/{reference}",
            axum::routing::head(|| async {
                with_header(
                    StatusCode::UNAUTHORIZED.into_response(),
                    "www-authenticate",
                    "Bearer realm=\"https://auth.example/token\",service=\"registry\"",
                )
            }),
        );
    let server = serve(app).await;
    let registry = Registry::new(&server.url, USER, PASSWORD)
        .expect("client")
        .with_backoff(Duration::from_millis(5));
    let dir = tempfile::tempdir().expect("tempdir");
    let img = image(dir.path(), b"small");

    // Retried through two 503s: the config blob is there (third try), then the layer (one try).
    let pushed = registry.push("flaky", &img, "t").await;
    assert_eq!(calls.load(Ordering::SeqCst), 4, "503, 503, 200; 200");
    // (the manifest HEAD then finds no route: a plain failure, not a retry loop)
    assert!(pushed.is_err());

    let digest = Digest::parse(D).expect("digest");
    match registry.pull("huge", &digest).await {
        Err(tickstream_deployer::registry::PullError::Registry(RegistryError::TooLarge {
            limit,
            ..
        })) => assert_eq!(limit, 4 << 20),
        other => panic!("a bounded read, got {other:?}"),
    }
    match registry.manifest_digest("bad-digest", "t").await {
        Err(RegistryError::Malformed { why, .. }) => assert!(why.contains("sha256:1"), "{why}"),
        other => panic!("a malformed digest is an error, got {other:?}"),
    }
    match registry.push("bad-location", &img, "t").await {
        Err(RegistryError::Malformed { why, .. }) => assert!(why.contains("Location"), "{why}"),
        other => panic!("a malformed Location is an error, got {other:?}"),
    }
    assert!(matches!(
        registry.manifest_digest("token", "t").await,
        Err(RegistryError::TokenAuth { .. })
    ));
}
