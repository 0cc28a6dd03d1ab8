//! What an environment needs before anything changes: its certificate exists in this region and
//! is issued, and every secret the task definition will name exists. Metadata only: no secret
//! value is read. Problems are configuration problems (exit 2), reported together, each with
//! its key and fix, like the checks in `config`.

use std::collections::BTreeSet;

use aws_sdk_acm::types::CertificateStatus;
use aws_sdk_ssm::types::ParameterStringFilter;

use crate::config::{ConfigError, Issue, Settings};
use crate::error::{self, DeployError};

/// The clients the checks need.
#[derive(Debug, Clone)]
pub struct Clients {
    pub acm: aws_sdk_acm::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
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

pub async fn check(
    clients: &Clients,
    settings: &Settings,
    region: &str,
) -> Result<(), DeployError> {
    let mut issues = Vec::new();
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
    for (key, arn) in &settings.secrets {
        if arn.contains(":secretsmanager:") {
            match clients
                .secrets
                .describe_secret()
                .secret_id(arn)
                .send()
                .await
            {
                Ok(_) => {}
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
        } else if let Some(name) = parameter_name(arn) {
            wanted.push((key.clone(), name));
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
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(issues).into())
    }
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
}
