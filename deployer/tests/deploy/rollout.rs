//! Rollouts as ECS runs them, which the emulator cannot show, with the SDK's own mocks
//! (aws-smithy-mocks): a circuit-breaker rollback, tasks that stop with an exit code, a
//! deployment replaced by a rollback, a wait that runs out of time, throttling and 5xx answers
//! (retried by the client, then ridden out by the wait), stopped tasks on later pages, and
//! events and tasks of earlier rollouts (which must not be reported as this one's). Each
//! failure must end as a failure with its reasons and the right exit code; none may be
//! reported as success.

use std::time::{Duration, SystemTime};

use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
use aws_sdk_ecs::primitives::DateTime;
use aws_sdk_ecs::types::{
    Container, Deployment, DeploymentRolloutState, Service, ServiceEvent, Task, TaskStopCode,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use tickstream_deployer::error::exit;
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

/// Waits with an ECS client that follows `rules`; the result and what a person was told.
async fn wait_on(
    rules: &[&aws_smithy_mocks::Rule],
    timeout: Duration,
) -> (
    Result<rollout::Completed, tickstream_deployer::error::DeployError>,
    Reporter,
) {
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, rules);
    let report = Reporter::recording();
    let result = rollout::wait(&ecs, None, &watch(timeout), &report).await;
    (result, report)
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
    let (result, _) = wait_on(&[&describe, &list], Duration::from_secs(30)).await;
    let err = result.expect_err("rolled back");
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
    let (result, _) = wait_on(&[&describe, &list], Duration::from_millis(50)).await;
    let err = result.expect_err("timeout");
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

/// A task as ECS lists it once stopped.
fn stopped(id: &str, started_by: &str, reason: &str) -> Task {
    Task::builder()
        .task_arn(format!("arn:aws:ecs:eu-west-1:1:task/dev-tickstream/{id}"))
        .started_by(started_by)
        .task_definition_arn(TD2)
        .stopped_reason(reason)
        .containers(Container::builder().name("tickstream").exit_code(1).build())
        .build()
}

#[tokio::test]
async fn stopped_tasks_are_read_across_pages_and_only_this_deployments_are_reported() {
    let failed = mock!(aws_sdk_ecs::Client::describe_services).then_output(|| {
        service(
            TD2,
            vec![deployment(
                "ecs-svc/new",
                "PRIMARY",
                DeploymentRolloutState::Failed,
                TD2,
                0,
                3,
            )],
            "deployment failed",
        )
    });
    // Page one holds a task an earlier deployment of the same task definition stopped; ours
    // is on page two.
    let list =
        mock!(aws_sdk_ecs::Client::list_tasks).then_compute_output(|req| match req.next_token() {
            None => ListTasksOutput::builder()
                .task_arns("arn:aws:ecs:eu-west-1:1:task/dev-tickstream/old1")
                .next_token("page-2")
                .build(),
            Some(_) => ListTasksOutput::builder()
                .task_arns("arn:aws:ecs:eu-west-1:1:task/dev-tickstream/new1")
                .build(),
        });
    let describe = mock!(aws_sdk_ecs::Client::describe_tasks).then_compute_output(|req| {
        let tasks = req
            .tasks()
            .iter()
            .map(|arn| {
                if arn.ends_with("old1") {
                    stopped("old1", "ecs-svc/earlier", "an earlier rollout's failure")
                } else {
                    stopped("new1", "ecs-svc/new", "Essential container in task exited")
                }
            })
            .collect::<Vec<_>>();
        DescribeTasksOutput::builder()
            .set_tasks(Some(tasks))
            .build()
    });
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&failed, &list, &describe]);
    let err = rollout::wait(
        &ecs,
        None,
        &watch(Duration::from_secs(30)),
        &Reporter::recording(),
    )
    .await
    .expect_err("failed");
    let text = err.to_string();
    assert!(text.contains("new1: Essential container"), "{text}");
    assert!(!text.contains("old1"), "an earlier rollout's task: {text}");
    assert_eq!(list.num_calls(), 2, "both pages were read");
}

#[tokio::test]
async fn service_events_before_our_deployment_are_history() {
    let created = SystemTime::now();
    let describe = mock!(aws_sdk_ecs::Client::describe_services).then_output(move || {
        let ours = Deployment::builder()
            .id("ecs-svc/new")
            .status("PRIMARY")
            .rollout_state(DeploymentRolloutState::Completed)
            .task_definition(TD2)
            .desired_count(2)
            .running_count(2)
            .created_at(DateTime::from(created))
            .build();
        let event = |id: &str, at: SystemTime, text: &str| {
            ServiceEvent::builder()
                .id(id)
                .created_at(DateTime::from(at))
                .message(text)
                .build()
        };
        let svc = Service::builder()
            .service_name("tickstream-dev")
            .status("ACTIVE")
            .task_definition(TD2)
            .deployments(ours)
            .events(event(
                "e2",
                created + Duration::from_secs(30),
                "has reached a steady state.",
            ))
            .events(event(
                "e1",
                created - Duration::from_secs(600),
                "an hour-old failure of another deploy",
            ))
            .build();
        DescribeServicesOutput::builder().services(svc).build()
    });
    let list = no_stopped_tasks();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list]);
    let report = Reporter::recording();
    rollout::wait(&ecs, None, &watch(Duration::from_secs(30)), &report)
        .await
        .expect("completed");
    let lines = report.lines().join("\n");
    assert!(lines.contains("steady state"), "{lines}");
    assert!(!lines.contains("hour-old"), "{lines}");
}

#[tokio::test]
async fn a_wait_rides_out_throttling_that_outlasts_the_clients_retries() {
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .http_response(|| crate::support::json_error(400, "ThrottlingException", "Rate exceeded"))
        .times(3)
        .http_response(|| {
            crate::support::json_error(503, "ServiceUnavailableException", "Service unavailable")
        })
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
    // One attempt per call: every throttled answer reaches the wait itself.
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe, &list], |c| c
        .retry_config(
            aws_sdk_ecs::config::retry::RetryConfig::standard().with_max_attempts(1)
        ));
    let report = Reporter::recording();
    let done = rollout::wait(&ecs, None, &watch(Duration::from_secs(30)), &report)
        .await
        .expect("the rollout completed in ECS whatever we failed to read");
    assert_eq!(done.running, 2);
    assert_eq!(describe.num_calls(), 5);
    assert!(
        report.lines().iter().any(|l| l.contains("still waiting")),
        "{:?}",
        report.lines()
    );
}

#[tokio::test]
async fn a_draining_service_is_not_live_and_is_waited_for_before_it_is_created_again() {
    use tickstream_deployer::service::{self, Found};
    let with_status = |status: &'static str| {
        move || {
            DescribeServicesOutput::builder()
                .services(
                    Service::builder()
                        .service_name("tickstream-dev")
                        .status(status)
                        .build(),
                )
                .build()
        }
    };
    let describe = mock!(aws_sdk_ecs::Client::describe_services)
        .sequence()
        .output(with_status("DRAINING"))
        .output(with_status("DRAINING"))
        .output(with_status("DRAINING"))
        .output(with_status("INACTIVE"))
        .build();
    let ecs = mock_client!(aws_sdk_ecs, RuleMode::MatchAny, [&describe]);
    assert!(matches!(
        service::lookup(&ecs, "c", "tickstream-dev")
            .await
            .expect("lookup"),
        Found::Draining
    ));
    assert!(
        service::find(&ecs, "c", "tickstream-dev")
            .await
            .expect("find")
            .is_none(),
        "a DRAINING service is not live"
    );
    let report = Reporter::recording();
    let live = service::wait_drained(
        &ecs,
        "c",
        "tickstream-dev",
        Duration::from_secs(30),
        Duration::from_millis(1),
        &report,
    )
    .await
    .expect("drained");
    assert!(live.is_none(), "gone: free to create");
    assert!(
        report.lines()[0].contains("DRAINING"),
        "{:?}",
        report.lines()
    );
    assert_eq!(describe.num_calls(), 4);
}
