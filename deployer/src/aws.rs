//! The AWS SDK configuration, built once. Credentials, profiles, SSO and regions come from the
//! SDK's standard chain; an endpoint override (or the SDK's own `AWS_ENDPOINT_URL`) points every
//! client at an emulator.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudformation::config::Credentials;

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

pub async fn load(target: &AwsTarget) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
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
            loader = loader.region(Region::new("us-east-1"));
        }
    }
    loader.load().await
}
