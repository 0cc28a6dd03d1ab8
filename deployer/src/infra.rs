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

pub fn network(settings: &Settings) -> StackSpec {
    StackSpec {
        name: settings.network_stack.clone(),
        template_body: NETWORK_TEMPLATE.to_string(),
        parameters: BTreeMap::from([
            ("EnvironmentName".into(), settings.env.clone()),
            (
                "PrivateSubnets".into(),
                settings.private_subnets.to_string(),
            ),
        ]),
        named_iam: false,
    }
}

pub fn platform(
    settings: &Settings,
    network: &BTreeMap<String, String>,
) -> Result<StackSpec, MissingOutput> {
    let get = |key: &'static str| {
        network.get(key).cloned().ok_or_else(|| MissingOutput {
            stack: settings.network_stack.clone(),
            key,
        })
    };
    let mut parameters = BTreeMap::from([
        ("EnvironmentName".to_string(), settings.env.clone()),
        ("VpcId".into(), get("VpcId")?),
        ("PublicSubnetIds".into(), get("PublicSubnetIds")?),
        ("ContainerPort".into(), settings.port.to_string()),
        ("RepositoryName".into(), settings.repository.clone()),
        (
            "LogRetentionDays".into(),
            settings.log_retention_days.to_string(),
        ),
    ]);
    if let Some(arn) = &settings.certificate_arn {
        parameters.insert("CertificateArn".into(), arn.clone());
    }
    if !settings.secrets.is_empty() {
        // The execution role reads exactly these when it starts a task.
        let arns: std::collections::BTreeSet<&str> =
            settings.secrets.values().map(String::as_str).collect();
        parameters.insert(
            "SecretArns".into(),
            arns.into_iter().collect::<Vec<_>>().join(","),
        );
    }
    Ok(StackSpec {
        name: settings.platform_stack.clone(),
        template_body: PLATFORM_TEMPLATE.to_string(),
        parameters,
        named_iam: true,
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

    use crate::config::{Layer, resolve};

    #[test]
    fn the_execution_role_may_read_exactly_the_configured_secrets() {
        let toml = r#"
[env.prod]
region = "eu-west-1"
[env.prod.secrets]
A = "arn:aws:ssm:eu-west-1:123456789012:parameter/a"
B = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b"
C = "arn:aws:ssm:eu-west-1:123456789012:parameter/a"
[env.dev]
region = "eu-west-1"
"#;
        let network = BTreeMap::from([
            ("VpcId".to_string(), "vpc-1".to_string()),
            (
                "PublicSubnetIds".to_string(),
                "subnet-a,subnet-b".to_string(),
            ),
        ]);
        let prod = resolve(
            toml,
            "deploy.toml",
            "prod",
            Layer::default(),
            Layer::default(),
            ".".into(),
        )
        .expect("valid");
        let spec = super::platform(&prod, &network).expect("spec");
        assert_eq!(
            spec.parameters["SecretArns"],
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:b,arn:aws:ssm:eu-west-1:123456789012:parameter/a"
        );
        let dev = resolve(
            toml,
            "deploy.toml",
            "dev",
            Layer::default(),
            Layer::default(),
            ".".into(),
        )
        .expect("valid");
        assert!(
            !super::platform(&dev, &network)
                .expect("spec")
                .parameters
                .contains_key("SecretArns")
        );
    }
}
