//! The `infra/` stacks as this environment wants them. The templates are compiled in, so the
//! binary deploys exactly the templates that CI linted alongside it.

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::stacks::StackSpec;

pub const NETWORK_TEMPLATE: &str = include_str!("../../infra/network.yaml");
pub const PLATFORM_TEMPLATE: &str = include_str!("../../infra/platform.yaml");
pub const BROKER_TEMPLATE: &str = include_str!("../../infra/broker.yaml");

/// The namespace every task uses (the service's default `--broker-namespace`); the broker's
/// user may touch nothing else.
pub const BROKER_NAMESPACE: &str = "tickstream";

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

/// How tasks reach the broker: the broker stack's outputs, or a local `redis-server`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokerLink {
    /// `rediss://HOST:PORT` (TICKSTREAM_BROKER); never carries credentials.
    pub url: String,
    pub user: Option<String>,
    /// The Secrets Manager secret whose `password` key is TICKSTREAM_BROKER_PASSWORD.
    pub password_secret_arn: Option<String>,
    /// The group tasks join to be admitted by the broker.
    pub client_security_group: Option<String>,
}

impl BrokerLink {
    pub fn from_outputs(
        settings: &Settings,
        outputs: &BTreeMap<String, String>,
    ) -> Result<BrokerLink, MissingOutput> {
        let get = |key: &'static str| {
            outputs.get(key).cloned().ok_or_else(|| MissingOutput {
                stack: settings.broker_stack.clone(),
                key,
            })
        };
        Ok(BrokerLink {
            url: get("BrokerUrl")?,
            user: Some(get("BrokerUser")?),
            password_secret_arn: Some(get("BrokerPasswordSecretArn")?),
            client_security_group: Some(get("BrokerClientSecurityGroupId")?),
        })
    }

    /// ECS's `valueFrom` for the password: one key of the JSON secret.
    pub fn password_value_from(&self) -> Option<String> {
        self.password_secret_arn
            .as_ref()
            .map(|arn| format!("{arn}:password::"))
    }
}

/// The broker stack, in the tasks' subnets. Deployed after the network and before the platform,
/// whose execution role is granted the password's secret.
pub fn broker(
    settings: &Settings,
    network: &BTreeMap<String, String>,
) -> Result<Option<StackSpec>, MissingOutput> {
    let Some(engine) = settings.broker else {
        return Ok(None);
    };
    let get = |key: &'static str| {
        network.get(key).cloned().ok_or_else(|| MissingOutput {
            stack: settings.network_stack.clone(),
            key,
        })
    };
    Ok(Some(StackSpec {
        name: settings.broker_stack.clone(),
        template_body: BROKER_TEMPLATE.to_string(),
        parameters: BTreeMap::from([
            ("AppName".to_string(), settings.app.clone()),
            ("EnvironmentName".into(), settings.env.clone()),
            ("VpcId".into(), get("VpcId")?),
            ("SubnetIds".into(), get("TaskSubnetIds")?),
            ("Engine".into(), engine.as_str().into()),
            ("Namespace".into(), BROKER_NAMESPACE.into()),
            ("MaxDataGigabytes".into(), "5".into()),
            ("MemoryDbNodeType".into(), "db.t4g.small".into()),
        ]),
        named_iam: false,
    }))
}

/// What the execution role may read or pull beyond its own repository and log group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// IAM resources for the secrets the task definition names (see [`crate::preflight`]).
    pub secrets: Vec<String>,
    /// ECR repositories of images given with `--image`.
    pub repositories: Vec<String>,
}

impl Grants {
    /// These grants and the broker's password, which ECS reads for the task.
    pub fn with_broker(&self, broker: Option<&BrokerLink>) -> Grants {
        let mut grants = self.clone();
        if let Some(arn) = broker.and_then(|b| b.password_secret_arn.clone())
            && !grants.secrets.contains(&arn)
        {
            grants.secrets.push(arn);
        }
        grants
    }
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
            ("TaskSubnetIds".to_string(), "subnet-c,subnet-d".to_string()),
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

    #[test]
    fn a_broker_stack_only_with_a_broker_and_every_parameter_sent() {
        let none = settings("[env.dev]\nregion = \"eu-west-1\"\n", "dev");
        assert!(super::broker(&none, &network()).expect("outputs").is_none());
        let with = settings(
            "[env.dev]\nregion = \"eu-west-1\"\nbroker = \"elasticache\"\n",
            "dev",
        );
        let spec = super::broker(&with, &network())
            .expect("outputs")
            .expect("a broker stack");
        assert_eq!(spec.name, "tickstream-dev-broker");
        assert_eq!(spec.parameters["Engine"], "elasticache");
        assert_eq!(spec.parameters["SubnetIds"], network()["TaskSubnetIds"]);
        for declared in declared_parameters(super::BROKER_TEMPLATE) {
            assert!(
                spec.parameters.contains_key(&declared),
                "{declared} is not sent"
            );
        }
        // The namespace the tasks use is the one the template's user is limited to.
        assert_eq!(spec.parameters["Namespace"], super::BROKER_NAMESPACE);
        let memorydb = settings(
            "[env.dev]\nregion = \"eu-west-1\"\nbroker = \"memorydb\"\n",
            "dev",
        );
        let spec = super::broker(&memorydb, &network())
            .expect("outputs")
            .expect("a broker stack");
        assert_eq!(spec.parameters["Engine"], "memorydb");
    }

    #[test]
    fn the_execution_role_is_granted_the_brokers_password_once() {
        let link = super::BrokerLink {
            url: "rediss://cache.example:6379".into(),
            user: Some("tickstream-dev".into()),
            password_secret_arn: Some(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-AbCdEf".into(),
            ),
            client_security_group: Some("sg-1".into()),
        };
        let granted = Grants::default().with_broker(Some(&link));
        assert_eq!(
            granted.secrets,
            vec![link.password_secret_arn.clone().expect("an ARN")]
        );
        assert_eq!(granted.with_broker(Some(&link)), granted);
        assert_eq!(Grants::default().with_broker(None), Grants::default());
        assert_eq!(
            link.password_value_from().as_deref(),
            Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-AbCdEf:password::")
        );
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
