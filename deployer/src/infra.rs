//! The two `infra/` stacks as this environment wants them. The templates are compiled in, so the
//! binary deploys exactly the templates that CI linted alongside it.

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::stacks::StackSpec;

pub const NETWORK_TEMPLATE: &str = include_str!("../../infra/network.yaml");
pub const PLATFORM_TEMPLATE: &str = include_str!("../../infra/platform.yaml");

/// What the service needs from the stacks' outputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Platform {
    pub cluster: String,
    pub target_group_arn: String,
    pub task_subnets: Vec<String>,
    pub assign_public_ip: bool,
    pub task_security_group: String,
    pub execution_role_arn: String,
    pub task_role_arn: String,
    pub log_group: String,
    pub websocket_url: String,
    pub load_balancer_dns: String,
}

#[derive(Debug, thiserror::Error)]
#[error("stack {stack} has no output {key}: was it made from another template?")]
pub struct MissingOutput {
    pub stack: String,
    pub key: &'static str,
}

/// What the execution role may read or pull beyond its own repository and log group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// IAM resources for the secrets the task definition names (see [`crate::preflight`]).
    pub secrets: Vec<String>,
    /// ECR repositories of images given with `--image`.
    pub repositories: Vec<String>,
}

pub fn network(settings: &Settings) -> StackSpec {
    StackSpec {
        name: settings.network_stack.clone(),
        template_body: NETWORK_TEMPLATE.to_string(),
        parameters: BTreeMap::from([
            ("AppName".into(), settings.app.clone()),
            ("EnvironmentName".into(), settings.env.clone()),
            (
                "PrivateSubnets".into(),
                settings.private_subnets.to_string(),
            ),
        ]),
        named_iam: false,
    }
}

/// The platform stack. Every parameter is sent, the optional ones empty when unset: an omitted
/// parameter keeps its previous value, so removing a certificate or a secret would never reach
/// the stack.
pub fn platform(
    settings: &Settings,
    network: &BTreeMap<String, String>,
    grants: &Grants,
) -> Result<StackSpec, MissingOutput> {
    let get = |key: &'static str| {
        network.get(key).cloned().ok_or_else(|| MissingOutput {
            stack: settings.network_stack.clone(),
            key,
        })
    };
    let list = |items: &[String]| {
        let set: std::collections::BTreeSet<&str> = items.iter().map(String::as_str).collect();
        set.into_iter().collect::<Vec<_>>().join(",")
    };
    let parameters = BTreeMap::from([
        ("AppName".to_string(), settings.app.clone()),
        ("EnvironmentName".into(), settings.env.clone()),
        ("VpcId".into(), get("VpcId")?),
        ("PublicSubnetIds".into(), get("PublicSubnetIds")?),
        ("ContainerPort".into(), settings.port.to_string()),
        ("RepositoryName".into(), settings.repository.clone()),
        (
            "LogRetentionDays".into(),
            settings.log_retention_days.to_string(),
        ),
        (
            "CertificateArn".into(),
            settings.certificate_arn.clone().unwrap_or_default(),
        ),
        ("SecretArns".into(), list(&grants.secrets)),
        ("PullRepositoryArns".into(), list(&grants.repositories)),
        (
            "DeregistrationDelaySeconds".into(),
            settings.deregistration_delay_seconds.to_string(),
        ),
        // Well above the server's 15 s heartbeat, so quiet sockets are never cut.
        ("IdleTimeoutSeconds".into(), "300".into()),
    ]);
    Ok(StackSpec {
        name: settings.platform_stack.clone(),
        template_body: PLATFORM_TEMPLATE.to_string(),
        parameters,
        named_iam: false,
    })
}

impl Platform {
    pub fn from_outputs(
        settings: &Settings,
        network: &BTreeMap<String, String>,
        platform: &BTreeMap<String, String>,
    ) -> Result<Platform, MissingOutput> {
        let get = |outputs: &BTreeMap<String, String>, stack: &String, key: &'static str| {
            outputs.get(key).cloned().ok_or_else(|| MissingOutput {
                stack: stack.clone(),
                key,
            })
        };
        let n = |key| get(network, &settings.network_stack, key);
        let p = |key| get(platform, &settings.platform_stack, key);
        Ok(Platform {
            cluster: p("ClusterName")?,
            target_group_arn: p("TargetGroupArn")?,
            task_subnets: n("TaskSubnetIds")?
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|s| s.trim().trim_matches('\'').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            assign_public_ip: n("TasksNeedPublicIp")? == "ENABLED",
            task_security_group: p("TaskSecurityGroupId")?,
            execution_role_arn: p("ExecutionRoleArn")?,
            task_role_arn: p("TaskRoleArn")?,
            log_group: p("LogGroupName")?,
            websocket_url: p("WebSocketUrl")?,
            load_balancer_dns: p("LoadBalancerDnsName")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Grants;
    use crate::config::{Layer, resolve};

    fn settings(toml: &str, env: &str) -> crate::config::Settings {
        resolve(
            toml,
            "deploy.toml",
            env,
            Layer::default(),
            Layer::default(),
            ".".into(),
        )
        .expect("valid")
    }

    fn network() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("VpcId".to_string(), "vpc-1".to_string()),
            (
                "PublicSubnetIds".to_string(),
                "subnet-a,subnet-b".to_string(),
            ),
        ])
    }

    #[test]
    fn the_execution_role_may_read_exactly_the_granted_secrets() {
        let s = settings("[env.prod]\nregion = \"eu-west-1\"\n", "prod");
        let grants = Grants {
            secrets: vec![
                "arn:aws:ssm:eu-west-1:123456789012:parameter/a".into(),
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b-AbCdEf".into(),
                "arn:aws:ssm:eu-west-1:123456789012:parameter/a".into(),
            ],
            repositories: vec![],
        };
        let spec = super::platform(&s, &network(), &grants).expect("spec");
        assert_eq!(
            spec.parameters["SecretArns"],
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b-AbCdEf,arn:aws:ssm:eu-west-1:123456789012:parameter/a"
        );
    }

    #[test]
    fn optional_parameters_are_always_sent_so_removing_a_setting_reaches_the_stack() {
        let with = settings(
            "[env.prod]\nregion = \"eu-west-1\"\npublic_url = \"wss://m.example.com/ws\"\ncertificate_arn = \"arn:aws:acm:eu-west-1:123456789012:certificate/x\"\n",
            "prod",
        );
        let without = settings("[env.prod]\nregion = \"eu-west-1\"\n", "prod");
        let a = super::platform(&with, &network(), &Grants::default()).expect("spec");
        let b = super::platform(&without, &network(), &Grants::default()).expect("spec");
        let keys = |s: &crate::stacks::StackSpec| s.parameters.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b), "the same parameters either way");
        assert_eq!(b.parameters["CertificateArn"], "");
        assert_eq!(b.parameters["SecretArns"], "");
        assert_eq!(b.parameters["PullRepositoryArns"], "");
        // Every parameter the template declares is sent.
        for declared in declared_parameters(super::PLATFORM_TEMPLATE) {
            assert!(
                b.parameters.contains_key(&declared),
                "{declared} is not sent"
            );
        }
        for declared in declared_parameters(super::NETWORK_TEMPLATE) {
            if declared.ends_with("Cidr") {
                continue; // layout constants with defaults, not settings
            }
            assert!(
                super::network(&without).parameters.contains_key(&declared),
                "{declared} is not sent"
            );
        }
    }

    /// The parameter names under `Parameters:` in a template.
    fn declared_parameters(template: &str) -> Vec<String> {
        template
            .lines()
            .skip_while(|l| *l != "Parameters:")
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .map(|l| l.trim().trim_end_matches(':').to_string())
            .collect()
    }
}
