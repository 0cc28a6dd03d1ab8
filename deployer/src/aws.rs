//! The AWS SDK configuration, built once: every client the deployer makes comes from [`load`].
//! Credentials, profiles, SSO and regions come from the SDK's standard chain; retries are
//! adaptive (a shared account throttles: the client slows itself down instead of failing), and
//! every attempt and every operation has a time bound.
//!
//! An endpoint override points every client at an emulator. The SDK also honours
//! `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` on its own, so a variable left over from a
//! local session would quietly send a "real" deploy to the emulator: [`leftover_endpoints`] finds
//! them, and environments that are not the emulator refuse to start while any is set.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudformation::config::Credentials;

/// Attempts per call, the first included. Adaptive mode also waits for its token bucket, so a
/// throttled account is slowed rather than failed.
pub const MAX_ATTEMPTS: u32 = 8;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// One HTTP attempt; the deployer's calls are small (image blobs go through [`crate::registry`]).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// One call, every retry included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find AWS, when the standard chain should not decide alone.
#[derive(Debug, Clone, Default)]
pub struct AwsTarget {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// An emulator such as `http://127.0.0.1:4566`.
    pub endpoint_url: Option<String>,
    /// Use the emulators' fixed credentials (`test`/`test`) instead of the standard chain, so a
    /// local run can never pick up, or need, real credentials.
    pub emulator_credentials: bool,
}

/// The retry policy every client uses.
pub fn retry_config() -> RetryConfig {
    RetryConfig::adaptive()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(500))
        .with_max_backoff(MAX_BACKOFF)
}

/// The time bounds every client uses.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

pub async fn load(target: &AwsTarget) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(region) = &target.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &target.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &target.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if target.emulator_credentials {
        loader =
            loader.credentials_provider(Credentials::new("test", "test", None, None, "emulator"));
        if target.region.is_none() {
            // The emulator serves any region: the standard chain's, else us-east-1.
            loader = loader.region(
                aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else(Region::new("us-east-1")),
            );
        }
    }
    loader.load().await
}

/// `AWS_ENDPOINT_URL` and every `AWS_ENDPOINT_URL_<SERVICE>` set (non-empty) in `vars`, sorted.
pub fn leftover_endpoints(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut found: Vec<String> = vars
        .into_iter()
        .filter(|(name, value)| {
            (name == "AWS_ENDPOINT_URL" || name.starts_with("AWS_ENDPOINT_URL_"))
                && !value.trim().is_empty()
        })
        .map(|(name, _)| name)
        .collect();
    found.sort();
    found
}

/// Where the calls go, for the identity line: the override, or AWS's own regional endpoints.
pub fn endpoint_in_use(sdk: &SdkConfig) -> String {
    match sdk.endpoint_url() {
        Some(url) => url.to_string(),
        None => format!(
            "AWS ({}.amazonaws.com endpoints)",
            sdk.region().map_or("?", |r| r.as_ref())
        ),
    }
}

#[cfg(test)]
mod tests {
    use aws_config::retry::RetryMode;

    use super::*;

    #[tokio::test]
    async fn every_client_gets_adaptive_retries_and_time_bounds() {
        let sdk = load(&AwsTarget {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            emulator_credentials: true,
            ..AwsTarget::default()
        })
        .await;
        let retry = sdk.retry_config().expect("a retry policy");
        assert_eq!(retry.mode(), RetryMode::Adaptive);
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(retry.max_backoff(), MAX_BACKOFF);
        let timeouts = sdk.timeout_config().expect("time bounds");
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        // A client built from it carries the same policy.
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        assert_eq!(
            ecs.config().retry_config().map(|r| r.mode()),
            Some(RetryMode::Adaptive)
        );
        assert_eq!(endpoint_in_use(&sdk), "http://127.0.0.1:9");
    }

    #[test]
    fn leftover_endpoint_variables_are_found_by_name() {
        let vars = [
            ("AWS_ENDPOINT_URL_ECS", "http://127.0.0.1:4566"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL_S3", ""),
            ("MY_AWS_ENDPOINT_URL", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            leftover_endpoints(vars),
            ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ECS"]
        );
    }
}
