//! The ECR repository the images go to: created on first use with scanning on push, immutable
//! tags and a lifecycle policy, and the registry login from `GetAuthorizationToken`.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability, Tag,
};
use base64::Engine;

use crate::error::{self, DeployError};
use crate::registry::Registry;
use crate::report::Reporter;

/// Keep the last 30 images: enough to roll back weeks, bounded storage.
pub const LIFECYCLE_POLICY: &str = r#"{"rules":[{"rulePriority":1,"description":"keep the last 30 images","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":30},"action":{"type":"expire"}}]}"#;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Repository {
    pub name: String,
    pub uri: String,
    pub created: bool,
}

/// Finds or creates the repository; the lifecycle policy is written only when it differs.
pub async fn ensure(
    client: &Client,
    name: &str,
    app: &str,
    report: &Reporter,
) -> Result<Repository, DeployError> {
    let found = match client
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
    {
        Ok(out) => out.repositories().first().cloned(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception()) =>
        {
            None
        }
        Err(e) => return Err(error::aws(format!("describing ECR repository {name}"))(e)),
    };
    let (repo, created) = match found {
        Some(repo) => (repo, false),
        None => {
            report.line(format!(
                "ECR repository {name}: creating (scan on push, immutable tags)"
            ));
            let out = client
                .create_repository()
                .repository_name(name)
                .image_tag_mutability(ImageTagMutability::Immutable)
                .image_scanning_configuration(
                    ImageScanningConfiguration::builder()
                        .scan_on_push(true)
                        .build(),
                )
                .encryption_configuration(
                    EncryptionConfiguration::builder()
                        .encryption_type(EncryptionType::Aes256)
                        .build()
                        .map_err(|e| DeployError::Build(e.to_string()))?,
                )
                .tags(
                    Tag::builder()
                        .key("app")
                        .value(app)
                        .build()
                        .map_err(|e| DeployError::Build(e.to_string()))?,
                )
                .send()
                .await
                .map_err(error::aws(format!("creating ECR repository {name}")))?;
            let repo = out.repository().cloned().ok_or_else(|| {
                DeployError::Build("CreateRepository returned no repository".into())
            })?;
            (repo, true)
        }
    };
    if !created && repo.image_tag_mutability() != Some(&ImageTagMutability::Immutable) {
        report.line(format!(
            "warning: ECR repository {name} has mutable tags; images are pinned by digest anyway"
        ));
    }
    let current = match client
        .get_lifecycle_policy()
        .repository_name(name)
        .send()
        .await
    {
        Ok(out) => out.lifecycle_policy_text().map(str::to_string),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_lifecycle_policy_not_found_exception()) =>
        {
            None
        }
        Err(e) => {
            return Err(error::aws(format!(
                "reading the lifecycle policy of {name}"
            ))(e));
        }
    };
    let same = current
        .as_deref()
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        == serde_json::from_str::<serde_json::Value>(LIFECYCLE_POLICY).ok();
    if !same {
        client
            .put_lifecycle_policy()
            .repository_name(name)
            .lifecycle_policy_text(LIFECYCLE_POLICY)
            .send()
            .await
            .map_err(error::aws(format!(
                "setting the lifecycle policy of {name}"
            )))?;
    }
    Ok(Repository {
        name: name.to_string(),
        uri: repo.repository_uri().unwrap_or_default().to_string(),
        created,
    })
}

/// The repository's URI, if it exists (read-only: `deploy plan` uses it).
pub async fn uri(client: &Client, name: &str) -> Result<Option<String>, DeployError> {
    match client
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .repositories()
            .first()
            .and_then(|r| r.repository_uri())
            .map(str::to_string)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_repository_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(error::aws(format!("describing ECR repository {name}"))(e)),
    }
}

/// Logs in to the account's registry. `endpoint` replaces ECR's own proxy endpoint: emulators
/// answer the API but serve the registry elsewhere.
pub async fn login(client: &Client, endpoint: Option<&str>) -> Result<Registry, DeployError> {
    let out = client
        .get_authorization_token()
        .send()
        .await
        .map_err(error::aws("getting an ECR login (GetAuthorizationToken)"))?;
    let data = out.authorization_data().first().ok_or_else(|| {
        DeployError::Build("GetAuthorizationToken returned no authorization".into())
    })?;
    let token = data.authorization_token().unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| DeployError::Build("the ECR token is not base64 user:password".into()))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| DeployError::Build("the ECR token is not user:password".into()))?;
    let base = match endpoint {
        Some(e) => e.to_string(),
        None => data.proxy_endpoint().unwrap_or_default().to_string(),
    };
    Ok(Registry::new(&base, user, password)?)
}
