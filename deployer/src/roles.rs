//! The services an environment runs. Without a broker, one: every task is a whole tickstream
//! (`--role all`) behind the load balancer. With a broker, two: the ingest service (a writer
//! and a standby that takes its lease over; no load balancer, no autoscaling) and the edge
//! service behind the load balancer, autoscaled. They roll out in that order, so new edges
//! never wait for a writer that is not there yet (docs/adr/0021-broker.md).

use serde::Serialize;

use crate::config::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    All,
    Ingest,
    Edge,
}

impl Role {
    /// The service's `--role` (TICKSTREAM_ROLE).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Edge => "edge",
        }
    }
}

/// One ECS service of the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub role: Role,
    /// The ECS service's name, and its task definition's family.
    pub service: String,
}

impl Part {
    /// Whether clients reach it: behind the load balancer, autoscaled, verified.
    pub fn serves_clients(&self) -> bool {
        self.role != Role::Ingest
    }
}

/// The services, in rollout order; the last serves clients.
pub fn parts(settings: &Settings) -> Vec<Part> {
    if settings.broker.is_none() {
        return vec![Part {
            role: Role::All,
            service: settings.service.clone(),
        }];
    }
    broker_parts(settings).into()
}

/// The ingest and edge services a broker environment runs (or ran, for what is left over).
pub fn broker_parts(settings: &Settings) -> [Part; 2] {
    [
        Part {
            role: Role::Ingest,
            service: settings.ingest_service.clone(),
        },
        Part {
            role: Role::Edge,
            service: settings.service.clone(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layer, resolve};

    fn settings(extra: &str) -> Settings {
        resolve(
            &format!("[env.dev]\nregion = \"eu-west-1\"\n{extra}"),
            "deploy.toml",
            "dev",
            Layer::default(),
            Layer::default(),
            ".".into(),
        )
        .expect("valid")
    }

    #[test]
    fn one_whole_service_without_a_broker_and_ingest_before_edge_with_one() {
        let one = parts(&settings(""));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].role, Role::All);
        assert_eq!(one[0].service, "tickstream-dev");
        let two = parts(&settings("broker = \"elasticache\"\n"));
        let roles: Vec<Role> = two.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Ingest, Role::Edge]);
        assert_eq!(two[0].service, "tickstream-dev-ingest");
        // The edge keeps the service's name: clients, alarms and dashboards stay pointed at it.
        assert_eq!(two[1].service, "tickstream-dev");
        assert!(!two[0].serves_clients() && two[1].serves_clients());
    }

    fn platform() -> crate::infra::Platform {
        crate::infra::Platform {
            cluster: "tickstream-dev".into(),
            target_group_arn: "arn:tg".into(),
            task_subnets: vec!["subnet-b".into(), "subnet-a".into()],
            assign_public_ip: false,
            task_security_group: "sg-task".into(),
            execution_role_arn: "arn:exec".into(),
            task_role_arn: "arn:task".into(),
            log_group: "/tickstream/dev/service".into(),
            websocket_url: "ws://lb/ws".into(),
            load_balancer_dns: "lb".into(),
        }
    }

    fn task(
        s: &Settings,
        platform: &crate::infra::Platform,
        part: &Part,
        broker: Option<&crate::infra::BrokerLink>,
    ) -> crate::taskdef::TaskSpec {
        crate::taskdef::TaskSpec::new(
            s,
            &crate::taskdef::Inputs {
                platform,
                image: "repo@sha256:aa",
                region: "eu-west-1",
                secrets: &std::collections::BTreeMap::new(),
                part,
                broker,
            },
        )
    }

    #[test]
    fn each_part_runs_its_role_and_reaches_the_broker_by_reference() {
        let s =
            settings("broker = \"elasticache\"\nmin_count = 2\nmax_count = 6\ndesired_count = 3\n");
        let link = crate::infra::BrokerLink {
            url: "rediss://cache.example:6379".into(),
            user: Some("tickstream-dev".into()),
            password_secret_arn: Some(
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-AbCdEf".into(),
            ),
            client_security_group: Some("sg-broker-client".into()),
        };
        let platform = platform();
        let [ingest, edge] = <[Part; 2]>::try_from(parts(&s)).expect("two parts");
        for part in [&ingest, &edge] {
            let task = task(&s, &platform, part, Some(&link));
            assert_eq!(task.family, part.service);
            assert_eq!(task.environment["TICKSTREAM_ROLE"], part.role.as_str());
            assert_eq!(task.environment["TICKSTREAM_BROKER"], link.url);
            assert_eq!(task.environment["TICKSTREAM_BROKER_USER"], "tickstream-dev");
            // The password is a reference ECS resolves; no value anywhere in the definition.
            assert_eq!(
                task.secrets["TICKSTREAM_BROKER_PASSWORD"],
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:broker-AbCdEf:password::"
            );
            assert!(!task.environment.keys().any(|k| k.contains("PASSWORD")));
        }
        let ingest = crate::service::ServiceSpec::new(&s, &platform, &ingest, Some(&link), "td:1");
        assert_eq!(ingest.name, "tickstream-dev-ingest");
        assert_eq!(
            ingest.target_group_arn, None,
            "no client reaches the ingest"
        );
        assert!(!ingest.autoscaled());
        assert_eq!(
            (ingest.desired_count, ingest.min_count, ingest.max_count),
            (2, 2, 2)
        );
        assert_eq!(ingest.security_groups, ["sg-broker-client", "sg-task"]);
        let edge = crate::service::ServiceSpec::new(&s, &platform, &edge, Some(&link), "td:1");
        assert_eq!(edge.target_group_arn.as_deref(), Some("arn:tg"));
        assert!(edge.autoscaled());
        assert_eq!(
            (edge.desired_count, edge.min_count, edge.max_count),
            (3, 2, 6)
        );
        assert_eq!(edge.security_groups, ["sg-broker-client", "sg-task"]);

        // Without a broker: one whole service, no role, no broker settings.
        let whole = settings("");
        let [all] = <[Part; 1]>::try_from(parts(&whole)).expect("one part");
        let task = task(&whole, &platform, &all, None);
        assert!(
            !task
                .environment
                .keys()
                .any(|k| k.starts_with("TICKSTREAM_BROKER") || k == "TICKSTREAM_ROLE")
        );
        let svc = crate::service::ServiceSpec::new(&whole, &platform, &all, None, "td:1");
        assert_eq!(svc.security_groups, ["sg-task"]);
    }
}
