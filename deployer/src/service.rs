//! The ECS service and its autoscaling, owned by the deployer (ADR-0005): created when missing
//! (update-only deployers cannot), updated only in the fields that differ, and with the
//! WebSocket-friendly defaults: circuit breaker with rollback, 100/200 percent, a grace period.
//! The desired count belongs to autoscaling once the service exists; the deployer only moves it
//! back inside the configured bounds.

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration,
    LaunchType, LoadBalancer, NetworkConfiguration, PropagateTags, Service,
};
use serde::Serialize;

use crate::config::Settings;
use crate::error::{self, DeployError};
use crate::infra::{BrokerLink, Platform};
use crate::report::Reporter;
use crate::roles::Part;
use crate::taskdef::{CONTAINER, Change};

/// Everything the deployer decides about the service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    pub cluster: String,
    pub name: String,
    pub task_definition: String,
    pub desired_count: i32,
    pub min_count: i32,
    pub max_count: i32,
    pub cpu_target_percent: f64,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    /// The load balancer's target group; `None` for the ingest service, which no client reaches.
    pub target_group_arn: Option<String>,
    pub container_port: i32,
    pub health_check_grace_seconds: i32,
    pub minimum_healthy_percent: i32,
    pub maximum_percent: i32,
}

impl ServiceSpec {
    /// `part`'s service; its tasks join the broker's client group when there is a broker.
    pub fn new(
        settings: &Settings,
        platform: &Platform,
        part: &Part,
        broker: Option<&BrokerLink>,
        task_definition: &str,
    ) -> ServiceSpec {
        let mut subnets = platform.task_subnets.clone();
        subnets.sort();
        let mut security_groups = vec![platform.task_security_group.clone()];
        security_groups.extend(broker.and_then(|b| b.client_security_group.clone()));
        security_groups.sort();
        let (desired, min, max) = if part.serves_clients() {
            (
                settings.desired_count,
                settings.min_count,
                settings.max_count,
            )
        } else {
            let n = settings.ingest_count;
            (n, n, n)
        };
        ServiceSpec {
            cluster: platform.cluster.clone(),
            name: part.service.clone(),
            task_definition: task_definition.to_string(),
            desired_count: desired as i32,
            min_count: min as i32,
            max_count: max as i32,
            cpu_target_percent: f64::from(settings.cpu_target_percent),
            subnets,
            security_groups,
            assign_public_ip: platform.assign_public_ip,
            target_group_arn: part
                .serves_clients()
                .then(|| platform.target_group_arn.clone()),
            container_port: i32::from(settings.port),
            // ECS applies a grace period to load balancer health checks; without one there is
            // nothing for it to delay.
            health_check_grace_seconds: if part.serves_clients() {
                settings.health_check_grace_seconds as i32
            } else {
                0
            },
            minimum_healthy_percent: 100,
            maximum_percent: 200,
        }
    }

    /// The fields of `live` that differ from this spec (empty: nothing to do).
    pub fn diff(&self, live: &Service) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut check = |field: &str, from: String, to: String| {
            if from != to {
                changes.push(Change {
                    field: field.to_string(),
                    from: Some(from),
                    to: Some(to),
                });
            }
        };
        check(
            "taskDefinition",
            live.task_definition().unwrap_or_default().to_string(),
            self.task_definition.clone(),
        );
        let desired = live.desired_count();
        if desired < self.min_count || desired > self.max_count {
            check(
                "desiredCount",
                desired.to_string(),
                self.desired_count.to_string(),
            );
        }
        let dc = live.deployment_configuration();
        let cb = dc.and_then(|d| d.deployment_circuit_breaker());
        check(
            "circuitBreaker",
            format!(
                "enable={} rollback={}",
                cb.is_some_and(|c| c.enable()),
                cb.is_some_and(|c| c.rollback())
            ),
            "enable=true rollback=true".into(),
        );
        check(
            "minimumHealthyPercent",
            dc.and_then(|d| d.minimum_healthy_percent())
                .unwrap_or(100)
                .to_string(),
            self.minimum_healthy_percent.to_string(),
        );
        check(
            "maximumPercent",
            dc.and_then(|d| d.maximum_percent())
                .unwrap_or(200)
                .to_string(),
            self.maximum_percent.to_string(),
        );
        check(
            "healthCheckGracePeriodSeconds",
            live.health_check_grace_period_seconds()
                .unwrap_or(0)
                .to_string(),
            self.health_check_grace_seconds.to_string(),
        );
        let vpc = live
            .network_configuration()
            .and_then(|n| n.awsvpc_configuration());
        let mut subnets = vpc.map(|v| v.subnets().to_vec()).unwrap_or_default();
        subnets.sort();
        check("subnets", subnets.join(","), self.subnets.join(","));
        let mut groups = vpc
            .map(|v| v.security_groups().to_vec())
            .unwrap_or_default();
        groups.sort();
        check(
            "securityGroups",
            groups.join(","),
            self.security_groups.join(","),
        );
        check(
            "assignPublicIp",
            (vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled)).to_string(),
            self.assign_public_ip.to_string(),
        );
        let lb = live
            .load_balancers()
            .iter()
            .map(|l| {
                format!(
                    "{}:{}",
                    l.target_group_arn().unwrap_or_default(),
                    l.container_port().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        check(
            "loadBalancers",
            lb,
            self.target_group_arn
                .as_ref()
                .map(|tg| format!("{tg}:{}", self.container_port))
                .unwrap_or_default(),
        );
        changes
    }

    fn network(&self) -> Result<NetworkConfiguration, DeployError> {
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(self.subnets.clone()))
                    .set_security_groups(Some(self.security_groups.clone()))
                    .assign_public_ip(if self.assign_public_ip {
                        AssignPublicIp::Enabled
                    } else {
                        AssignPublicIp::Disabled
                    })
                    .build()
                    .map_err(|e| DeployError::Build(e.to_string()))?,
            )
            .build())
    }

    fn deployment(&self) -> Result<DeploymentConfiguration, DeployError> {
        Ok(DeploymentConfiguration::builder()
            .deployment_circuit_breaker(
                DeploymentCircuitBreaker::builder()
                    .enable(true)
                    .rollback(true)
                    .build(),
            )
            .minimum_healthy_percent(self.minimum_healthy_percent)
            .maximum_percent(self.maximum_percent)
            .build())
    }

    /// None for a service no client reaches. (An empty list on update detaches a load
    /// balancer; `None` leaves the service's as they are.)
    fn load_balancers(&self) -> Vec<LoadBalancer> {
        self.target_group_arn
            .iter()
            .map(|tg| {
                LoadBalancer::builder()
                    .target_group_arn(tg)
                    .container_name(CONTAINER)
                    .container_port(self.container_port)
                    .build()
            })
            .collect()
    }

    /// The grace period, for a service behind the load balancer only.
    fn grace(&self) -> Option<i32> {
        self.autoscaled().then_some(self.health_check_grace_seconds)
    }

    /// Whether autoscaling (target tracking on CPU) belongs to this service: the one clients
    /// reach. The ingest service keeps its count.
    pub fn autoscaled(&self) -> bool {
        self.target_group_arn.is_some()
    }

    /// The new deployment's id, which the wait follows.
    pub async fn create(&self, client: &Client, app: &str) -> Result<Service, DeployError> {
        let out = client
            .create_service()
            .cluster(&self.cluster)
            .service_name(&self.name)
            .task_definition(&self.task_definition)
            .desired_count(self.desired_count)
            .launch_type(LaunchType::Fargate)
            .platform_version("LATEST")
            .deployment_configuration(self.deployment()?)
            .network_configuration(self.network()?)
            .set_load_balancers(Some(self.load_balancers()))
            .set_health_check_grace_period_seconds(self.grace())
            .enable_ecs_managed_tags(true)
            .propagate_tags(PropagateTags::TaskDefinition)
            .tags(
                aws_sdk_ecs::types::Tag::builder()
                    .key("app")
                    .value(app)
                    .build(),
            )
            .send()
            .await
            .map_err(error::aws(format!("creating ECS service {}", self.name)))?;
        out.service()
            .cloned()
            .ok_or_else(|| DeployError::Build("CreateService returned no service".into()))
    }

    pub async fn update(&self, client: &Client, live: &Service) -> Result<Service, DeployError> {
        let desired = live.desired_count();
        let mut request = client
            .update_service()
            .cluster(&self.cluster)
            .service(&self.name)
            .task_definition(&self.task_definition)
            .deployment_configuration(self.deployment()?)
            .network_configuration(self.network()?)
            .set_load_balancers(Some(self.load_balancers()))
            .set_health_check_grace_period_seconds(self.grace());
        if desired < self.min_count || desired > self.max_count {
            request = request.desired_count(desired.clamp(self.min_count, self.max_count));
        }
        let out = request
            .send()
            .await
            .map_err(error::aws(format!("updating ECS service {}", self.name)))?;
        out.service()
            .cloned()
            .ok_or_else(|| DeployError::Build("UpdateService returned no service".into()))
    }
}

/// A service of that name, as ECS reports it.
#[derive(Debug, Clone)]
pub enum Found {
    Active(Box<Service>),
    /// Being deleted: not live, and its name cannot be reused until it is INACTIVE.
    Draining,
    Absent,
}

/// The service of that name and its state.
pub async fn lookup(client: &Client, cluster: &str, name: &str) -> Result<Found, DeployError> {
    let out = match client
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_cluster_not_found_exception()) =>
        {
            return Ok(Found::Absent);
        }
        Err(e) => return Err(error::aws(format!("describing ECS service {name}"))(e)),
    };
    let services = out.services();
    if let Some(active) = services.iter().find(|s| s.status() == Some("ACTIVE")) {
        return Ok(Found::Active(Box::new(active.clone())));
    }
    if services.iter().any(|s| s.status() == Some("DRAINING")) {
        return Ok(Found::Draining);
    }
    Ok(Found::Absent)
}

/// The live (ACTIVE) service, if any: a DRAINING one is on its way out.
pub async fn find(
    client: &Client,
    cluster: &str,
    name: &str,
) -> Result<Option<Service>, DeployError> {
    Ok(match lookup(client, cluster, name).await? {
        Found::Active(s) => Some(*s),
        Found::Draining | Found::Absent => None,
    })
}

/// Waits (at most `timeout`) until no service of that name is DRAINING, so it can be created.
pub async fn wait_drained(
    client: &Client,
    cluster: &str,
    name: &str,
    timeout: std::time::Duration,
    poll: std::time::Duration,
    report: &Reporter,
) -> Result<Option<Service>, DeployError> {
    let started = tokio::time::Instant::now();
    let mut said = false;
    loop {
        match lookup(client, cluster, name).await? {
            Found::Active(s) => return Ok(Some(*s)),
            Found::Absent => return Ok(None),
            Found::Draining => {
                if !said {
                    report.line(format!(
                        "service {name}: DRAINING (an earlier delete); waiting for it to go before creating it again"
                    ));
                    said = true;
                }
                if started.elapsed() > timeout {
                    return Err(DeployError::Rollout(format!(
                        "service {name} is still DRAINING after {}",
                        humantime::format_duration(timeout)
                    )));
                }
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// The PRIMARY deployment's id: the one a rollout must see COMPLETED.
pub fn primary_deployment(service: &Service) -> Option<String> {
    service
        .deployments()
        .iter()
        .find(|d| d.status() == Some("PRIMARY"))
        .and_then(|d| d.id())
        .map(str::to_string)
}

/// Target tracking on average CPU between the configured bounds. Written only when different.
pub async fn ensure_autoscaling(
    client: &aws_sdk_applicationautoscaling::Client,
    spec: &ServiceSpec,
    report: &Reporter,
) -> Result<bool, DeployError> {
    let resource = format!("service/{}/{}", spec.cluster, spec.name);
    let dimension = ScalableDimension::EcsServiceDesiredCount;
    let same_bounds = scalable_target(client, &resource)
        .await?
        .is_some_and(|t| t.min_capacity() == spec.min_count && t.max_capacity() == spec.max_count);
    let policy_name = format!("{}-cpu", spec.name);
    let policies = client
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(dimension.clone())
        .policy_names(&policy_name)
        .send()
        .await
        .map_err(error::aws("describing the autoscaling policy"))?;
    let same_policy = policies.scaling_policies().first().is_some_and(|p| {
        p.target_tracking_scaling_policy_configuration()
            .is_some_and(|c| (c.target_value() - spec.cpu_target_percent).abs() < 1e-9)
    });
    if same_bounds && same_policy {
        return Ok(false);
    }
    report.line(format!(
        "autoscaling: {}..{} tasks, target {}% CPU",
        spec.min_count, spec.max_count, spec.cpu_target_percent
    ));
    client
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(dimension.clone())
        .min_capacity(spec.min_count)
        .max_capacity(spec.max_count)
        .send()
        .await
        .map_err(error::aws("registering the autoscaling target"))?;
    client
        .put_scaling_policy()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(dimension)
        .policy_name(&policy_name)
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(
            TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(spec.cpu_target_percent)
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
                        .build()
                        .map_err(|e| DeployError::Build(e.to_string()))?,
                )
                .scale_in_cooldown(300)
                .scale_out_cooldown(60)
                .build()
                .map_err(|e| DeployError::Build(e.to_string()))?,
        )
        .send()
        .await
        .map_err(error::aws("writing the autoscaling policy"))?;
    Ok(true)
}

/// The service's autoscaling target (`resource` is `service/CLUSTER/NAME`), if registered.
async fn scalable_target(
    client: &aws_sdk_applicationautoscaling::Client,
    resource: &str,
) -> Result<Option<aws_sdk_applicationautoscaling::types::ScalableTarget>, DeployError> {
    let out = client
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_ids(resource)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
        .map_err(error::aws("describing the autoscaling target"))?;
    Ok(out.scalable_targets().first().cloned())
}

/// Removes the autoscaling target (and with it the policy); absent is fine.
pub async fn remove_autoscaling(
    client: &aws_sdk_applicationautoscaling::Client,
    cluster: &str,
    name: &str,
) -> Result<(), DeployError> {
    let resource = format!("service/{cluster}/{name}");
    // Asked first: the emulator answers a target that was never registered (the ingest
    // service's) with ValidationException, where AWS says ObjectNotFoundException.
    if scalable_target(client, &resource).await?.is_none() {
        return Ok(());
    }
    match client
        .deregister_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&resource)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_object_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(error::aws("removing the autoscaling target")(e)),
    }
}
