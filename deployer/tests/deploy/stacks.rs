//! CloudFormation as AWS answers it, with AWS's real wire errors (XML, as the query protocol
//! sends them) through the SDK's own mocks: a stack that does not exist, one left in
//! ROLLBACK_COMPLETE, a cosmetic template edit ("No updates are to be performed"), throttling
//! while waiting, a stack only a person can unstick, a rollback naming its failed resource, and
//! the events of an earlier operation (which are not this one's).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::support::query_error;
use aws_sdk_cloudformation::Client;
use aws_sdk_cloudformation::operation::create_stack::CreateStackOutput;
use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
use aws_sdk_cloudformation::types::{
    Output, Parameter, ResourceStatus, Stack, StackEvent, StackStatus,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use tickstream_deployer::error::{DeployError, exit};
use tickstream_deployer::report::Reporter;
use tickstream_deployer::stacks::{self, StackChange, StackError, StackSpec, Waiting};

const NAME: &str = "tickstream-dev-network";
const WAIT: Waiting = Waiting {
    timeout: Duration::from_secs(30),
    poll: Duration::from_millis(1),
};

fn spec() -> StackSpec {
    StackSpec {
        name: NAME.into(),
        template_body: "Resources: {}\n".into(),
        parameters: [("EnvironmentName", "dev"), ("CertificateArn", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        named_iam: false,
    }
}

fn stack(status: StackStatus) -> DescribeStacksOutput {
    DescribeStacksOutput::builder()
        .stacks(
            Stack::builder()
                .stack_name(NAME)
                .stack_status(status)
                .parameters(
                    Parameter::builder()
                        .parameter_key("EnvironmentName")
                        .parameter_value("dev")
                        .build(),
                )
                .parameters(
                    Parameter::builder()
                        .parameter_key("CertificateArn")
                        .parameter_value("")
                        .build(),
                )
                .outputs(
                    Output::builder()
                        .output_key("VpcId")
                        .output_value("vpc-1")
                        .build(),
                )
                .build(),
        )
        .build()
}

fn absent() -> aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    query_error(
        400,
        "ValidationError",
        &format!("Stack with id {NAME} does not exist"),
    )
}

fn no_events() -> aws_smithy_mocks::Rule {
    mock!(Client::describe_stack_events)
        .then_output(|| DescribeStackEventsOutput::builder().build())
}

#[tokio::test]
async fn an_absent_stack_is_created_with_every_parameter_and_a_request_token() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .http_response(absent)
        .output(|| stack(StackStatus::CreateComplete))
        .build();
    let create = mock!(Client::create_stack)
        .match_requests(|r| {
            r.client_request_token()
                .is_some_and(|t| t.starts_with("tickstream-create-"))
                && r.parameters().len() == 2
        })
        .then_output(|| CreateStackOutput::builder().stack_id("arn:stack").build());
    let events = no_events();
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &create, &events]
    );
    let done = stacks::deploy(&cfn, &spec(), WAIT, &Reporter::recording())
        .await
        .expect("created");
    assert_eq!(done.change, StackChange::Created);
    assert_eq!(done.outputs["VpcId"], "vpc-1");
    assert_eq!(create.num_calls(), 1);
}

#[tokio::test]
async fn a_stack_left_in_rollback_complete_is_deleted_and_created_again() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::RollbackComplete)) // the plan
        .output(|| stack(StackStatus::RollbackComplete)) // before deleting
        .output(|| stack(StackStatus::DeleteInProgress))
        .http_response(absent) // gone
        .output(|| stack(StackStatus::CreateComplete))
        .build();
    let delete = mock!(Client::delete_stack).then_output(|| DeleteStackOutput::builder().build());
    let create = mock!(Client::create_stack)
        .then_output(|| CreateStackOutput::builder().stack_id("arn:stack").build());
    let update = mock!(Client::update_stack).then_http_response(|| {
        query_error(
            400,
            "ValidationError",
            "Stack is in ROLLBACK_COMPLETE state and can not be updated.",
        )
    });
    let events = no_events();
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &delete, &create, &update, &events]
    );
    let plan = stacks::plan(&cfn, &spec()).await.expect("plan");
    assert_eq!(plan.action.as_str(), "replace", "{:?}", plan.action);
    let report = Reporter::recording();
    let done = stacks::apply(&cfn, plan, WAIT, &report)
        .await
        .expect("replaced");
    assert_eq!(done.change, StackChange::Replaced);
    assert_eq!(
        (delete.num_calls(), create.num_calls(), update.num_calls()),
        (1, 1, 0)
    );
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("ROLLBACK_COMPLETE")
                && l.contains("deleting it and creating it again")),
        "{:?}",
        report.lines()
    );
}

#[tokio::test]
async fn a_cosmetic_template_edit_is_unchanged() {
    let describe =
        mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    // The live template differs only by a comment.
    let template = mock!(Client::get_template).then_output(|| {
        GetTemplateOutput::builder()
            .template_body("# an older comment\nResources: {}\n")
            .build()
    });
    let update = mock!(Client::update_stack).then_http_response(|| {
        query_error(400, "ValidationError", "No updates are to be performed.")
    });
    let events = no_events();
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &template, &update, &events]
    );
    let done = stacks::deploy(&cfn, &spec(), WAIT, &Reporter::recording())
        .await
        .expect("unchanged, not an error");
    assert_eq!(done.change, StackChange::Unchanged);
    assert_eq!(done.outputs["VpcId"], "vpc-1");
    assert_eq!(update.num_calls(), 1);
    assert_eq!(describe.num_calls(), 1, "nothing to wait for");
}

#[tokio::test]
async fn throttling_while_waiting_does_not_abort_the_stack() {
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .http_response(absent)
        .http_response(|| query_error(400, "Throttling", "Rate exceeded"))
        .times(3)
        .output(|| stack(StackStatus::CreateInProgress))
        .output(|| stack(StackStatus::CreateComplete))
        .build();
    let create = mock!(Client::create_stack)
        .then_output(|| CreateStackOutput::builder().stack_id("arn:stack").build());
    let events = no_events();
    // One attempt per call, so the throttling reaches the wait itself.
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &create, &events],
        |c| c.retry_config(
            aws_sdk_cloudformation::config::retry::RetryConfig::standard().with_max_attempts(1)
        )
    );
    let done = stacks::deploy(&cfn, &spec(), WAIT, &Reporter::recording())
        .await
        .expect("created despite throttling");
    assert_eq!(done.change, StackChange::Created);
    assert_eq!(describe.num_calls(), 6);
}

#[tokio::test]
async fn a_stack_only_a_person_can_unstick_is_refused_with_the_command() {
    let describe =
        mock!(Client::describe_stacks).then_output(|| stack(StackStatus::UpdateRollbackFailed));
    let cfn = mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, [&describe]);
    let err: DeployError = stacks::deploy(&cfn, &spec(), WAIT, &Reporter::recording())
        .await
        .expect_err("stuck")
        .into();
    assert!(
        matches!(err, DeployError::Stack(StackError::Stuck { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("UPDATE_ROLLBACK_FAILED"), "{err}");
    assert!(
        err.fix().is_some_and(|f| f.contains(
            "aws cloudformation continue-update-rollback --stack-name tickstream-dev-network"
        )),
        "{:?}",
        err.fix()
    );
}

#[tokio::test]
async fn a_stack_that_rolls_back_names_the_resource_that_failed_and_not_an_earlier_one() {
    let token: Arc<Mutex<String>> = Arc::default();
    let seen = token.clone();
    let describe = mock!(Client::describe_stacks)
        .sequence()
        .http_response(absent)
        .output(|| stack(StackStatus::RollbackInProgress))
        .output(|| {
            DescribeStacksOutput::builder()
                .stacks(
                    Stack::builder()
                        .stack_name(NAME)
                        .stack_status(StackStatus::RollbackComplete)
                        .stack_status_reason(
                            "The following resource(s) failed to create: [HttpsListener].",
                        )
                        .build(),
                )
                .build()
        })
        .build();
    let create = mock!(Client::create_stack).then_compute_output(move |req| {
        *seen.lock().expect("token") = req.client_request_token().unwrap_or_default().to_string();
        CreateStackOutput::builder().stack_id("arn:stack").build()
    });
    let ours = token.clone();
    let events = mock!(Client::describe_stack_events).then_compute_output(move |_| {
        let ours = ours.lock().expect("token").clone();
        let now = aws_sdk_cloudformation::primitives::DateTime::from(SystemTime::now());
        let event = |id: &str, token: &str, what: &str, status: ResourceStatus, reason: &str| {
            StackEvent::builder()
                .event_id(id)
                .client_request_token(token)
                .logical_resource_id(what)
                .resource_type("AWS::ElasticLoadBalancingV2::Listener")
                .resource_status(status)
                .resource_status_reason(reason)
                .timestamp(now)
                .build()
        };
        // Newest first: ours, then an earlier operation's failure.
        DescribeStackEventsOutput::builder()
            .stack_events(event(
                "3",
                &ours,
                "HttpsListener",
                ResourceStatus::CreateFailed,
                "Certificate 'arn:aws:acm:eu-west-1:1:certificate/x' not found",
            ))
            .stack_events(event(
                "2",
                &ours,
                NAME,
                ResourceStatus::CreateInProgress,
                "User Initiated",
            ))
            .stack_events(event(
                "1",
                "an-earlier-deploy",
                "LoadBalancer",
                ResourceStatus::CreateFailed,
                "an earlier failure",
            ))
            .build()
    });
    let cfn = mock_client!(
        aws_sdk_cloudformation,
        RuleMode::MatchAny,
        [&describe, &create, &events]
    );
    let report = Reporter::recording();
    let err: DeployError = stacks::deploy(&cfn, &spec(), WAIT, &report)
        .await
        .expect_err("rolled back")
        .into();
    assert_eq!(err.exit_code(), exit::ROLLOUT);
    let text = err.to_string();
    assert!(
        text.contains("ROLLBACK_COMPLETE") && text.contains("HttpsListener: Certificate"),
        "{text}"
    );
    let lines = report.lines().join("\n");
    assert!(
        lines.contains("HttpsListener") && lines.contains("CREATE_FAILED"),
        "{lines}"
    );
    assert!(!lines.contains("an earlier failure"), "{lines}");
}
