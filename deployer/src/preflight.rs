//! What an environment needs before anything changes: its certificate exists in this region and
//! is issued; every secret the task definition will name exists; an image given with `--image`
//! can be pulled by the task. Metadata only: no secret value is read. Problems are
//! configuration problems (exit 2), reported together, each with its key and fix, like the
//! checks in `config`.
//!
//! It also works out what the execution role must be granted: a Secrets Manager reference may
//! carry a JSON key (`...:secret:db-AbCdEf:password::`) or be a partial ARN without the six
//! random characters AWS appends, and IAM matches neither as written. `DescribeSecret` gives the
//! full ARN; the role is granted exactly that, and the task definition names it too.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_acm::types::CertificateStatus;
use aws_sdk_ecr::types::ImageIdentifier;
use aws_sdk_ssm::types::ParameterStringFilter;

use crate::config::{ConfigError, Issue, Settings};
use crate::error::{self, DeployError};
use crate::infra::Grants;
use crate::reference::ImageRef;
use crate::report::Reporter;

/// The clients the checks need.
#[derive(Debug, Clone)]
pub struct Clients {
    pub acm: aws_sdk_acm::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub ecr: aws_sdk_ecr::Client,
}

/// What the checks found the task needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub grants: Grants,
    /// Variable name -> the `valueFrom` the task definition names (full ARNs where resolved).
    pub secrets: BTreeMap<String, String>,
}

/// `arn:aws:ssm:REGION:ACCOUNT:parameter/a/b` names `/a/b`; `parameter/name` names `name`.
fn parameter_name(arn: &str) -> Option<String> {
    let rest = arn.split_once(":parameter/")?.1;
    Some(if rest.contains('/') {
        format!("/{rest}")
    } else {
        rest.to_string()
    })
}

/// A Secrets Manager reference split into the secret's ARN (the first seven fields) and what
/// follows it (`:json-key:version-stage:version-id`, possibly empty).
pub fn split_secret(value_from: &str) -> (String, String) {
    let parts: Vec<&str> = value_from.split(':').collect();
    if parts.len() <= 7 {
        return (value_from.to_string(), String::new());
    }
    (parts[..7].join(":"), format!(":{}", parts[7..].join(":")))
}

pub async fn check(
    clients: &Clients,
    settings: &Settings,
    region: &str,
    account: &str,
    image: Option<&ImageRef>,
    report: &Reporter,
) -> Result<Needs, DeployError> {
    let mut issues = Vec::new();
    let mut needs = Needs::default();
    if let Some(arn) = &settings.certificate_arn {
        match clients.acm.describe_certificate().certificate_arn(arn).send().await {
            Ok(out) => {
                let status = out.certificate().and_then(|c| c.status()).cloned();
                if status != Some(CertificateStatus::Issued) {
                    issues.push(Issue::new(
                        "certificate_arn",
                        format!(
                            "the certificate is {}",
                            status.as_ref().map_or("of unknown status", |s| s.as_str())
                        ),
                        "finish its DNS validation in ACM, or name an ISSUED certificate",
                    ));
                }
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => issues.push(Issue::new(
                "certificate_arn",
                format!("no such certificate in {region}"),
                "a load balancer's certificate must be in its own region: request or import it there",
            )),
            Err(e) => return Err(error::aws("checking the certificate (acm:DescribeCertificate)")(e)),
        }
    }
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (key, value_from) in &settings.secrets {
        if value_from.contains(":secretsmanager:") {
            let (arn, rest) = split_secret(value_from);
            match clients
                .secrets
                .describe_secret()
                .secret_id(&arn)
                .send()
                .await
            {
                Ok(out) => {
                    let full = out.arn().unwrap_or(&arn).to_string();
                    needs.grants.secrets.push(full.clone());
                    needs.secrets.insert(key.clone(), format!("{full}{rest}"));
                }
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    issues.push(Issue::new(
                        &format!("secrets.{key}"),
                        format!("no such secret: {arn}"),
                        "create it in Secrets Manager (in this region), or fix the ARN",
                    ));
                }
                Err(e) => {
                    return Err(error::aws(format!(
                        "checking secret {key} (secretsmanager:DescribeSecret)"
                    ))(e));
                }
            }
        } else if let Some(name) = parameter_name(value_from) {
            wanted.push((key.clone(), name));
            needs.grants.secrets.push(value_from.clone());
            needs.secrets.insert(key.clone(), value_from.clone());
        }
    }
    if !wanted.is_empty() {
        let names: BTreeSet<&str> = wanted.iter().map(|(_, n)| n.as_str()).collect();
        let mut found = BTreeSet::new();
        for chunk in names.iter().copied().collect::<Vec<_>>().chunks(50) {
            let filter = ParameterStringFilter::builder()
                .key("Name")
                .option("Equals")
                .set_values(Some(chunk.iter().map(|s| s.to_string()).collect()))
                .build()
                .map_err(|e| DeployError::Build(e.to_string()))?;
            let mut pages = clients
                .ssm
                .describe_parameters()
                .parameter_filters(filter)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(error::aws(
                    "checking SSM parameters (ssm:DescribeParameters)",
                ))?;
                found.extend(
                    page.parameters()
                        .iter()
                        .filter_map(|p| p.name().map(str::to_string)),
                );
            }
        }
        for (key, name) in wanted {
            if !found.contains(&name) {
                issues.push(Issue::new(
                    &format!("secrets.{key}"),
                    format!("no SSM parameter {name} in {region}"),
                    format!("create it: aws ssm put-parameter --type SecureString --name {name} --value ..."),
                ));
            }
        }
    }
    if let Some(image) = image {
        check_image(
            clients,
            settings,
            account,
            image,
            &mut needs,
            &mut issues,
            report,
        )
        .await?;
    }
    if issues.is_empty() {
        Ok(needs)
    } else {
        Err(ConfigError::Invalid(issues).into())
    }
}

/// An image from elsewhere (`--image`): an ECR image must exist and be pullable by the task,
/// which this environment's execution role is then granted; any other registry must serve it
/// without credentials.
async fn check_image(
    clients: &Clients,
    settings: &Settings,
    account: &str,
    image: &ImageRef,
    needs: &mut Needs,
    issues: &mut Vec<Issue>,
    report: &Reporter,
) -> Result<(), DeployError> {
    let Some(repo) = image.ecr() else {
        report.line(format!(
            "image: {} is not in ECR: the task pulls it without credentials, so it must be public (a private registry needs repositoryCredentials, which the deployer does not set)",
            image.registry.as_deref().unwrap_or("Docker Hub")
        ));
        return Ok(());
    };
    let ours = repo.account == account && repo.name == settings.repository;
    if !ours {
        needs.grants.repositories.push(repo.arn());
    }
    let found = clients
        .ecr
        .describe_images()
        .registry_id(&repo.account)
        .repository_name(&repo.name)
        .image_ids(
            ImageIdentifier::builder()
                .image_digest(image.digest.as_str())
                .build(),
        )
        .send()
        .await;
    match found {
        Ok(_) => {}
        Err(e)
            if e.as_service_error().is_some_and(|e| {
                e.is_image_not_found_exception() || e.is_repository_not_found_exception()
            }) =>
        {
            issues.push(Issue::new(
                "--image",
                format!("{} has no image {}", repo.arn(), image.digest),
                "push it first, or name an image that exists (`aws ecr describe-images`)",
            ));
        }
        Err(e) if repo.account != account => {
            // Another account's repository: its own policy decides; we cannot look from here.
            report.line(format!(
                "image: cannot look into account {}'s repository {} from here ({}); its repository policy must allow this environment's execution role to pull",
                repo.account,
                repo.name,
                error::classify(String::new(), &e).cause
            ));
        }
        Err(e) => return Err(error::aws("checking the image (ecr:DescribeImages)")(e)),
    }
    if !ours {
        report.line(format!(
            "image: from {}: the execution role is granted pull on it",
            repo.arn()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameter_names_from_arns() {
        assert_eq!(
            super::parameter_name("arn:aws:ssm:eu-west-1:1:parameter/tickstream/api-keys")
                .as_deref(),
            Some("/tickstream/api-keys")
        );
        assert_eq!(
            super::parameter_name("arn:aws:ssm:eu-west-1:1:parameter/flat").as_deref(),
            Some("flat")
        );
    }

    #[test]
    fn secret_references_split_into_the_secret_and_its_key() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
        assert_eq!(super::split_secret(arn), (arn.to_string(), String::new()));
        assert_eq!(
            super::split_secret(&format!("{arn}:password::")),
            (arn.to_string(), ":password::".to_string())
        );
    }
}
