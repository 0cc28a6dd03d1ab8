//! What the emulator cannot produce, with the SDK's own mocks (aws-smithy-mocks): a
//! circuit-breaker rollback, tasks that stop with an exit code, a deployment replaced by a
//! rollback, a wait that runs out of time, throttling and 5xx answers (retried), expired
//! credentials, and a stack that rolls back. Each must end as a failure with its reasons, with
//! the right exit code; none may be reported as success.

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{
    Container, Deployment, DeploymentRolloutState, Service, ServiceEvent, Task, TaskStopCode,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use tickstream_deployer::error::{DeployError, exit};
use tickstream_deployer::report::Reporter;
use tickstream_deployer::rollout::{self, Watch};

const TD1: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/tickstream-dev:1";
const TD2: &str = "arn:aws:ecs:eu-west-1:123456789012:task-definition/tickstream-dev:2";

fn watch(timeout: Duration) -> Watch {
    Watch {
        cluster: "dev-tickstream".into(),
        service: "tickstream-dev".into(),
        deployment_id: "ecs-svc/new".into(),
        task_definition: TD2.into(),
        timeout,
        poll: Duration::from_millis(5),
        logs: None,
    }
}

fn deployment(
    id: &str,
    status: &str,
    state: DeploymentRolloutState,
    td: &str,
    running: i32,
    failed: i32,
) -> Deployment {
    Deployment::builder()
        .id(id)
        .status(status)
        .rollout_state(state)
        .rollout_state_reason(match id {
            "ecs-svc/new" => "ECS deployment circuit breaker: tasks failed to start.",
            _ => "",
        })
        .task_definition(td)
        .desired_count(2)
        .running_count(running)
        .pending_count(2 - running)
        .failed_tasks(failed)
        .build()
}

fn service(td: &str, deployments: Vec<Deployment>, event: &str) -> DescribeServicesOutput {
    let svc = Service::builder()
        .service_name("tickstream-dev")
        .status("ACTIVE")
        .task_definition(td)
        .set_deployments(Some(deployments))
        .events(
            ServiceEvent::builder()
                .id(event)
                .created_at(DateTime::from(SystemTime::now()))
                .message(format!("(service tickstream-dev) {event}"))
                .build(),
        )
        .build();
    DescribeServicesOutput::builder().services(svc).build()
}

fn no_stopped_tasks() -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_ecs::Client::list_tasks).then_output(|| ListTasksOutput::builder().build())
}

#[tokio::test]
async fn a_circuit_breaker_rollback_is_a_failure_with_the_stopped_tasks_reasons() {
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(|| {
            service(
                TD2,
                vec![
                    deployment(
                        "ecs-svc/new",
                        "PRIMARY",
                        DeploymentRolloutState::InProgress,
                        TD2,
                        0,
                        0,
                    ),
                    deployment(
                        "ecs-svc/old",
                        "ACTIVE",
                        DeploymentRolloutState::Completed,
                        TD1,
                        2,
                        0,
                    ),
                ],
                "has started 2 tasks",
            )
        })
        .output(|| {
            service(
                TD1,
                vec![
                    deployment(
                        "ecs-svc/new",
                        "ACTIVE",
                        DeploymentRolloutState::Failed,
                        TD2,
                        0,
                        3,
                    ),
                    deployment(
                        "ecs-svc/old",
                        "PRIMARY",
                        DeploymentRolloutState::InProgress,
                        TD1,
                        2,
                        0,
                    ),
                ],
                "deployment failed: tasks failed to start; rolling back",
            )
        })
        .build();
    let list = mock!(aws_sdk_ecs::Client::list_tasks).then_output(|| {
        ListTasksOutput::builder()
            .task_arns("arn:aws:ecs:eu-west-1:1:task/dev-tickstream/abc123")
            .build()
    });
    let tasks = mock!(aws_sdk_ecs::Client::describe_tasks).then_output(|| {
        DescribeTasksOutput::builder()
            .tasks(
                Task::builder()
                    .task_arn("arn:aws:ecs:eu-west-1:1:task/dev-tickstream/abc123")
                    .started_by("ecs-svc/new")
                    .task_definition_arn(TD2)
                    .stopped_reason("Essential container in task exited")
                    .stop_code(TaskStopCode::EssentialContainerExited)
                    .containers(
                        Container::builder()
                            .name("tickstream")
                            .exit_code(2)
                            .reason("exec format error")
                            .build(),
                    )
                    .build(),
            )
            .build()
    });
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list, &tasks]);
    let report = Reporter::recording();
    let err = rollout::wait(&ecs, None, &watch(Duration::from_secs(30)), &report)
        .await
        .expect_err("a rolled-back deployment is not a success");
    assert_eq!(err.exit_code(), exit::ROLLOUT);
    let text = err.to_string();
    assert!(
        text.contains("FAILED") && text.contains("circuit breaker"),
        "{text}"
    );
    assert!(
        text.contains("abc123") && text.contains("exit 2") && text.contains("exec format error"),
        "{text}"
    );
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("event: (service tickstream-dev) deployment failed"),
        "{lines}"
    );
    assert!(lines.contains("task stopped: abc123"), "{lines}");
}

#[tokio::test]
async fn a_deployment_replaced_by_a_rollback_is_a_failure_even_when_the_service_is_stable() {
    // What the SDK's services-stable waiter accepts: one PRIMARY deployment, COMPLETED, all
    // running. But it is the old task definition, and our deployment is gone.
    let describe = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            TD1,
            vec![deployment(
                "ecs-svc/rollback",
                "PRIMARY",
                DeploymentRolloutState::Completed,
                TD1,
                2,
                0,
            )],
            "has reached a steady state.",
        )
    });
    let list = no_stopped_tasks();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list]);
    let err = rollout::wait(
        &ecs,
        None,
        &watch(Duration::from_secs(30)),
        &Reporter::recording(),
    )
    .await
    .expect_err("rolled back");
    assert_eq!(err.exit_code(), exit::ROLLOUT);
    assert!(
        err.to_string().contains("rolled back") && err.to_string().contains("tickstream-dev:1"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rollout_that_never_finishes_times_out_saying_what_is_stuck() {
    let describe = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            TD2,
            vec![deployment(
                "ecs-svc/new",
                "PRIMARY",
                DeploymentRolloutState::InProgress,
                TD2,
                1,
                0,
            )],
            "unable to place a task because no container instance met all of its requirements",
        )
    });
    let list = no_stopped_tasks();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list]);
    let err = rollout::wait(
        &ecs,
        None,
        &watch(Duration::from_millis(50)),
        &Reporter::recording(),
    )
    .await
    .expect_err("timeout");
    assert_eq!(err.exit_code(), exit::ROLLOUT);
    let text = err.to_string();
    assert!(text.contains("still IN_PROGRESS after 50ms"), "{text}");
    assert!(
        text.contains("1 running of 2 desired") && text.contains("unable to place a task"),
        "{text}"
    );
    assert!(describe.num_calls() >= 2, "it polled until the deadline");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_status(503, None)
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .output(|| {
            service(
                TD2,
                vec![deployment(
                    "ecs-svc/new",
                    "PRIMARY",
                    DeploymentRolloutState::Completed,
                    TD2,
                    2,
                    0,
                )],
                "has reached a steady state.",
            )
        })
        .build();
    let list = no_stopped_tasks();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list], |c| c
        .retry_config(
            aws_sdk_ecs::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        ));
    let done = rollout::wait(
        &ecs,
        None,
        &watch(Duration::from_secs(30)),
        &Reporter::recording(),
    )
    .await
    .expect("retried to success");
    assert_eq!(done.running, 2);
    assert_eq!(describe.num_calls(), 3, "503, throttled, then the answer");
}

#[tokio::test]
async fn expired_credentials_say_what_to_do() {
    use aws_sdk_sts::error::ErrorMetadata;
    use aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError;
    let rule = mock!(aws_sdk_sts::Client::get_caller_identity).then_error(|| {
        GetCallerIdentityError::generic(
            ErrorMetadata::builder()
                .code("ExpiredToken")
                .message("The security token included in the request is expired")
                .build(),
        )
    });
    let sts = mock_client!(aws_sdk_sts, [&rule]);
    let err: DeployError = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(tickstream_deployer::error::aws("checking the AWS identity"))
        .expect_err("expired");
    assert_eq!(err.exit_code(), exit::AWS);
    let text = err.to_string();
    assert!(
        text.starts_with("checking the AWS identity: ExpiredToken: The security token"),
        "{text}"
    );
    assert!(text.contains("aws sso login"), "{text}");
}

#[tokio::test]
async fn a_stack_that_rolls_back_names_the_resource_that_failed() {
    use aws_sdk_cloudformation::operation::create_stack::CreateStackOutput;
    use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::operation::list_stacks::ListStacksOutput;
    use aws_sdk_cloudformation::types::{ResourceStatus, Stack, StackEvent, StackStatus};
    let now = || aws_sdk_cloudformation::primitives::DateTime::from(SystemTime::now());
    let list = mock!(aws_sdk_cloudformation::Client::list_stacks)
        .then_output(|| ListStacksOutput::builder().build());
    let create = mock!(aws_sdk_cloudformation::Client::create_stack).then_output(|| {
        CreateStackOutput::builder()
            .stack_id("arn:stack/dev-platform")
            .build()
    });
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .output(|| {
            DescribeStacksOutput::builder()
                .stacks(
                    Stack::builder()
                        .stack_name("dev-platform")
                        .stack_status(StackStatus::RollbackInProgress)
                        .build(),
                )
                .build()
        })
        .output(|| {
            DescribeStacksOutput::builder()
                .stacks(
                    Stack::builder()
                        .stack_name("dev-platform")
                        .stack_status(StackStatus::RollbackComplete)
                        .stack_status_reason(
                            "The following resource(s) failed to create: [HttpsListener].",
                        )
                        .build(),
                )
                .build()
        })
        .build();
    let events =
        mock!(aws_sdk_cloudformation::Client::describe_stack_events).then_output(move || {
            DescribeStackEventsOutput::builder()
                .stack_events(
                    StackEvent::builder()
                        .event_id("2")
                        .logical_resource_id("HttpsListener")
                        .resource_type("AWS::ElasticLoadBalancingV2::Listener")
                        .resource_status(ResourceStatus::CreateFailed)
                        .resource_status_reason(
                            "Certificate 'arn:aws:acm:eu-west-1:1:certificate/x' not found",
                        )
                        .timestamp(now())
                        .build(),
                )
                .build()
        });
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&list, &create, &describe, &events]
    );
    let spec = tickstream_deployer::stacks::StackSpec {
        name: "dev-platform".into(),
        template_body: "{}".into(),
        parameters: Default::default(),
        named_iam: true,
    };
    let report = Reporter::recording();
    let err: DeployError =
        tickstream_deployer::stacks::deploy(&cfn, &spec, Duration::from_secs(30), &report)
            .await
            .expect_err("rolled back")
            .into();
    assert_eq!(err.exit_code(), exit::ROLLOUT);
    let text = err.to_string();
    assert!(
        text.contains("ROLLBACK_COMPLETE") && text.contains("HttpsListener: Certificate"),
        "{text}"
    );
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("HttpsListener") && l.contains("CREATE_FAILED"))
    );
}

#[tokio::test]
async fn preflight_names_a_missing_certificate_and_missing_secrets_before_anything_changes() {
    use aws_sdk_acm::operation::describe_certificate::DescribeCertificateOutput;
    use aws_sdk_acm::types::{CertificateDetail, CertificateStatus};
    use aws_sdk_secretsmanager::operation::describe_secret::{
        DescribeSecretError, DescribeSecretOutput,
    };
    use aws_sdk_ssm::operation::describe_parameters::DescribeParametersOutput;
    use aws_sdk_ssm::types::ParameterMetadata;
    use tickstream_deployer::config::{ConfigError, Layer, resolve};
    use tickstream_deployer::preflight::{self, Clients};

    let toml = r#"
[env.prod]
region = "eu-west-1"
certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
[env.prod.secrets]
API_KEYS = "arn:aws:ssm:eu-west-1:123456789012:parameter/tickstream/api-keys"
FEED_TOKEN = "arn:aws:ssm:eu-west-1:123456789012:parameter/tickstream/feed-token"
DB = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
"#;
    let settings = resolve(
        toml,
        "deploy.toml",
        "prod",
        Layer::default(),
        Layer::default(),
        ".".into(),
    )
    .expect("valid");
    let pending = mock!(aws_sdk_acm::Client::describe_certificate).then_output(|| {
        DescribeCertificateOutput::builder()
            .certificate(
                CertificateDetail::builder()
                    .status(CertificateStatus::PendingValidation)
                    .build(),
            )
            .build()
    });
    let params = mock!(aws_sdk_ssm::Client::describe_parameters).then_output(|| {
        DescribeParametersOutput::builder()
            .parameters(
                ParameterMetadata::builder()
                    .name("/tickstream/api-keys")
                    .build(),
            )
            .build()
    });
    let missing_secret = mock!(aws_sdk_secretsmanager::Client::describe_secret).then_error(|| {
        DescribeSecretError::ResourceNotFoundException(
            aws_sdk_secretsmanager::types::error::ResourceNotFoundException::builder()
                .message("not found")
                .build(),
        )
    });
    let clients = Clients {
        acm: mock_client!(aws_sdk_acm, [&pending]),
        ssm: mock_client!(aws_sdk_ssm, [&params]),
        secrets: mock_client!(aws_sdk_secretsmanager, [&missing_secret]),
    };
    let err = preflight::check(&clients, &settings, "eu-west-1")
        .await
        .expect_err("three problems");
    assert_eq!(err.exit_code(), exit::CONFIG);
    let DeployError::Config(ConfigError::Invalid(issues)) = &err else {
        panic!("{err}")
    };
    let found: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.key.as_str(), i.problem.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("certificate_arn", "the certificate is PENDING_VALIDATION"),
            (
                "secrets.DB",
                "no such secret: arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"
            ),
            (
                "secrets.FEED_TOKEN",
                "no SSM parameter /tickstream/feed-token in eu-west-1"
            ),
        ],
        "{err}"
    );

    // Everything in place: no complaint, and no secret value was asked for.
    let issued = mock!(aws_sdk_acm::Client::describe_certificate).then_output(|| {
        DescribeCertificateOutput::builder()
            .certificate(
                CertificateDetail::builder()
                    .status(CertificateStatus::Issued)
                    .build(),
            )
            .build()
    });
    let both = mock!(aws_sdk_ssm::Client::describe_parameters).then_output(|| {
        DescribeParametersOutput::builder()
            .parameters(
                ParameterMetadata::builder()
                    .name("/tickstream/api-keys")
                    .build(),
            )
            .parameters(
                ParameterMetadata::builder()
                    .name("/tickstream/feed-token")
                    .build(),
            )
            .build()
    });
    let secret = mock!(aws_sdk_secretsmanager::Client::describe_secret)
        .then_output(|| DescribeSecretOutput::builder().build());
    let clients = Clients {
        acm: mock_client!(aws_sdk_acm, [&issued]),
        ssm: mock_client!(aws_sdk_ssm, [&both]),
        secrets: mock_client!(aws_sdk_secretsmanager, [&secret]),
    };
    preflight::check(&clients, &settings, "eu-west-1")
        .await
        .expect("all present");
}
