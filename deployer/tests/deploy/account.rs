//! What a real account answers before and around a deploy, with AWS's wire errors through the
//! SDK's own mocks: ECS's service-linked role in a brand-new account, Lambda's concurrency
//! limits, the preflight's certificate, secret and image checks (JSON keys and partial ARNs
//! included), and how credential and permission failures read.

use crate::support::{json_error, query_error, rest_json_error, rest_json_ok};
use aws_sdk_acm::operation::describe_certificate::DescribeCertificateOutput;
use aws_sdk_acm::types::{CertificateDetail, CertificateStatus};
use aws_sdk_ecr::operation::describe_images::DescribeImagesOutput;
use aws_sdk_iam::operation::create_service_linked_role::CreateServiceLinkedRoleOutput;
use aws_sdk_iam::operation::get_role::GetRoleOutput;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
use aws_sdk_ssm::operation::describe_parameters::DescribeParametersOutput;
use aws_sdk_ssm::types::ParameterMetadata;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use tickstream_deployer::config::{ConfigError, Layer, resolve};
use tickstream_deployer::error::{DeployError, Kind, exit};
use tickstream_deployer::preflight::{self, Clients};
use tickstream_deployer::reference::ImageRef;
use tickstream_deployer::report::Reporter;

const ACCOUNT: &str = "123456789012";

#[tokio::test]
async fn a_new_account_gets_ecs_service_linked_role_and_a_race_for_it_is_fine() {
    use tickstream_deployer::prerequisites::ensure_ecs_role;
    // Absent, then "taken" (another deploy made it a moment ago): success either way.
    let missing = mock!(aws_sdk_iam::Client::get_role).then_http_response(|| {
        query_error(
            404,
            "NoSuchEntity",
            "The role with name AWSServiceRoleForECS cannot be found.",
        )
    });
    let taken = mock!(aws_sdk_iam::Client::create_service_linked_role).then_http_response(|| {
        query_error(
            400,
            "InvalidInput",
            "Service role name AWSServiceRoleForECS has been taken in this account, please try a different suffix.",
        )
    });
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&missing, &taken]);
    assert!(
        !ensure_ecs_role(&iam, &Reporter::recording())
            .await
            .expect("taken is fine")
    );
    assert_eq!(taken.num_calls(), 1);

    let created = mock!(aws_sdk_iam::Client::create_service_linked_role)
        .match_requests(|r| r.aws_service_name() == Some("ecs.amazonaws.com"))
        .then_output(|| CreateServiceLinkedRoleOutput::builder().build());
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&missing, &created]);
    let report = Reporter::recording();
    assert!(ensure_ecs_role(&iam, &report).await.expect("created"));
    assert!(
        report.lines()[0].contains("AWSServiceRoleForECS"),
        "{:?}",
        report.lines()
    );

    // Present: nothing is created.
    let present =
        mock!(aws_sdk_iam::Client::get_role).then_output(|| GetRoleOutput::builder().build());
    let never = mock!(aws_sdk_iam::Client::create_service_linked_role)
        .then_output(|| CreateServiceLinkedRoleOutput::builder().build());
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&present, &never]);
    assert!(
        !ensure_ecs_role(&iam, &Reporter::recording())
            .await
            .expect("present")
    );
    assert_eq!(never.num_calls(), 0);

    // May not create it: the fix is the one command an administrator runs.
    let denied = mock!(aws_sdk_iam::Client::create_service_linked_role).then_http_response(|| {
        query_error(
            403,
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:CreateServiceLinkedRole on resource: arn:aws:iam::123456789012:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
        )
    });
    let iam = mock_client!(aws_sdk_iam, RuleMode::MatchAny, [&missing, &denied]);
    let err = ensure_ecs_role(&iam, &Reporter::recording())
        .await
        .expect_err("denied");
    assert_eq!(err.kind(), Kind::AccessDenied);
    assert!(
        err.to_string()
            .contains("IAM denies iam:CreateServiceLinkedRole"),
        "{err}"
    );
    assert!(
        err.fix().is_some_and(|f| f
            .contains("aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com")),
        "{:?}",
        err.fix()
    );
}

#[tokio::test]
async fn a_lambda_reservation_the_account_cannot_afford_is_refused_before_anything_changes() {
    use tickstream_deployer::lambda::check_concurrency;
    // A new account: 10 executions in all.
    let small = mock!(aws_sdk_lambda::Client::get_account_settings).then_http_response(|| {
        rest_json_ok(
            r#"{"AccountLimit":{"TotalCodeSize":80530636800,"CodeSizeUnzipped":262144000,"CodeSizeZipped":52428800,"ConcurrentExecutions":10,"UnreservedConcurrentExecutions":10},"AccountUsage":{"TotalCodeSize":0,"FunctionCount":0}}"#,
        )
    });
    let no_function = mock!(aws_sdk_lambda::Client::get_function_concurrency).then_http_response(|| {
        rest_json_error(404, "ResourceNotFoundException", "Function not found: arn:aws:lambda:eu-west-1:123456789012:function:tickstream-dev-api")
    });
    let lambda = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, [&small, &no_function]);
    let err = check_concurrency(&lambda, "tickstream-dev-api", 5)
        .await
        .expect_err("no room for a reservation");
    assert_eq!(err.kind(), Kind::LimitExceeded);
    assert!(err.to_string().contains("allows 10 in all"), "{err}");
    assert!(
        err.fix()
            .is_some_and(|f| f.contains("remove lambda_concurrency")),
        "{:?}",
        err.fix()
    );

    // A grown account: 1000, of which this function already holds 50.
    let large = mock!(aws_sdk_lambda::Client::get_account_settings).then_http_response(|| {
        rest_json_ok(r#"{"AccountLimit":{"ConcurrentExecutions":1000,"UnreservedConcurrentExecutions":100}}"#)
    });
    let holds = mock!(aws_sdk_lambda::Client::get_function_concurrency)
        .then_http_response(|| rest_json_ok(r#"{"ReservedConcurrentExecutions":50}"#));
    let lambda = mock_client!(aws_sdk_lambda, RuleMode::MatchAny, [&large, &holds]);
    check_concurrency(&lambda, "tickstream-dev-api", 50)
        .await
        .expect("its own 50 come back to the pool: 100 + 50 - 50 leaves 100");
    let err = check_concurrency(&lambda, "tickstream-dev-api", 51)
        .await
        .expect_err("one too many");
    assert!(
        err.fix().is_some_and(|f| f.contains("at most 50")),
        "{:?}",
        err.fix()
    );
}

fn clients(
    acm: &[&aws_smithy_mocks::Rule],
    ssm: &[&aws_smithy_mocks::Rule],
    secrets: &[&aws_smithy_mocks::Rule],
    ecr: &[&aws_smithy_mocks::Rule],
) -> Clients {
    Clients {
        acm: mock_client!(aws_sdk_acm, RuleMode::MatchAny, acm),
        ssm: mock_client!(aws_sdk_ssm, RuleMode::MatchAny, ssm),
        secrets: mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, secrets),
        ecr: mock_client!(aws_sdk_ecr, RuleMode::MatchAny, ecr),
    }
}

fn prod(extra: &str) -> tickstream_deployer::config::Settings {
    let toml = format!(
        "[env.prod]\nregion = \"eu-west-1\"\npublic_url = \"wss://markets.example.com/ws\"\n\
         certificate_arn = \"arn:aws:acm:eu-west-1:123456789012:certificate/abc\"\n{extra}"
    );
    resolve(
        &toml,
        "deploy.toml",
        "prod",
        Layer::default(),
        Layer::default(),
        ".".into(),
    )
    .expect("valid")
}

fn issued() -> aws_smithy_mocks::Rule {
    mock!(aws_sdk_acm::Client::describe_certificate).then_output(|| {
        DescribeCertificateOutput::builder()
            .certificate(
                CertificateDetail::builder()
                    .status(CertificateStatus::Issued)
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn preflight_names_a_missing_certificate_and_missing_secrets_before_anything_changes() {
    let settings = prod(
        "[env.prod.secrets]\n\
         API_KEYS = \"arn:aws:ssm:eu-west-1:123456789012:parameter/tickstream/api-keys\"\n\
         FEED_TOKEN = \"arn:aws:ssm:eu-west-1:123456789012:parameter/tickstream/feed-token\"\n\
         DB = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf\"\n",
    );
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
    let missing_secret =
        mock!(aws_sdk_secretsmanager::Client::describe_secret).then_http_response(|| {
            json_error(
                400,
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            )
        });
    let c = clients(&[&pending], &[&params], &[&missing_secret], &[]);
    let err = preflight::check(
        &c,
        &settings,
        "eu-west-1",
        ACCOUNT,
        None,
        &Reporter::recording(),
    )
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
}

#[tokio::test]
async fn secrets_with_a_json_key_or_a_partial_arn_are_granted_by_their_full_arn() {
    let settings = prod(
        "[env.prod.secrets]\n\
         DB_PASSWORD = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf:password::\"\n\
         FEED = \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:feed\"\n",
    );
    // DescribeSecret answers the full ARN (AWS appends six random characters to every name).
    let describe =
        mock!(aws_sdk_secretsmanager::Client::describe_secret).then_compute_output(|req| {
            let id = req.secret_id().unwrap_or_default();
            let full = if id.ends_with(":feed") {
                format!("{id}-Zx9Qw1")
            } else {
                id.to_string()
            };
            DescribeSecretOutput::builder().arn(full).build()
        });
    let c = clients(&[&issued()], &[], &[&describe], &[]);
    let needs = preflight::check(
        &c,
        &settings,
        "eu-west-1",
        ACCOUNT,
        None,
        &Reporter::recording(),
    )
    .await
    .expect("both exist");
    let mut grants = needs.grants.secrets.clone();
    grants.sort();
    assert_eq!(
        grants,
        [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:feed-Zx9Qw1",
        ],
        "IAM resources are the secrets themselves, without the JSON key"
    );
    assert_eq!(
        needs.secrets["DB_PASSWORD"],
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf:password::"
    );
    assert_eq!(
        needs.secrets["FEED"],
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:feed-Zx9Qw1"
    );
}

#[tokio::test]
async fn an_image_from_another_repository_is_granted_or_refused_before_anything_changes() {
    const D: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let settings = prod("");
    let other = ImageRef::parse(&format!(
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/api@{D}"
    ))
    .expect("ref");
    let found = mock!(aws_sdk_ecr::Client::describe_images)
        .match_requests(|r| r.repository_name() == Some("team/api"))
        .then_output(|| DescribeImagesOutput::builder().build());
    let c = clients(&[&issued()], &[], &[], &[&found]);
    let needs = preflight::check(
        &c,
        &settings,
        "eu-west-1",
        ACCOUNT,
        Some(&other),
        &Reporter::recording(),
    )
    .await
    .expect("found");
    assert_eq!(
        needs.grants.repositories,
        ["arn:aws:ecr:eu-west-1:123456789012:repository/team/api"]
    );

    let missing = mock!(aws_sdk_ecr::Client::describe_images).then_http_response(|| {
        json_error(
            400,
            "ImageNotFoundException",
            "The image with imageId {imageDigest:'sha256:9f86'} does not exist within the repository with name 'team/api' in the registry with id '123456789012'",
        )
    });
    let c = clients(&[&issued()], &[], &[], &[&missing]);
    let err = preflight::check(
        &c,
        &settings,
        "eu-west-1",
        ACCOUNT,
        Some(&other),
        &Reporter::recording(),
    )
    .await
    .expect_err("no such image");
    let DeployError::Config(ConfigError::Invalid(issues)) = &err else {
        panic!("{err}")
    };
    assert_eq!(issues[0].key, "--image");

    // Another account's repository cannot be looked into: granted on our side, said so.
    let foreign = ImageRef::parse(&format!(
        "210987654321.dkr.ecr.us-east-1.amazonaws.com/shared/tickstream@{D}"
    ))
    .expect("ref");
    let denied = mock!(aws_sdk_ecr::Client::describe_images).then_http_response(|| {
        json_error(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:DescribeImages on resource: arn:aws:ecr:us-east-1:210987654321:repository/shared/tickstream",
        )
    });
    let c = clients(&[&issued()], &[], &[], &[&denied]);
    let report = Reporter::recording();
    let needs = preflight::check(&c, &settings, "eu-west-1", ACCOUNT, Some(&foreign), &report)
        .await
        .expect("granted on our side");
    assert_eq!(
        needs.grants.repositories,
        ["arn:aws:ecr:us-east-1:210987654321:repository/shared/tickstream"]
    );
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains("repository policy must allow")),
        "{:?}",
        report.lines()
    );
}

#[tokio::test]
async fn credential_and_permission_failures_read_as_one_cause_and_one_fix() {
    let expired = mock!(aws_sdk_sts::Client::get_caller_identity).then_http_response(|| {
        query_error(
            403,
            "ExpiredToken",
            "The security token included in the request is expired",
        )
    });
    let sts = mock_client!(aws_sdk_sts, [&expired]);
    let err: DeployError = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(tickstream_deployer::error::aws("checking the AWS identity"))
        .expect_err("expired");
    assert_eq!(
        (err.kind(), err.exit_code()),
        (Kind::ExpiredCredentials, exit::AWS)
    );
    assert_eq!(
        err.to_string(),
        "checking the AWS identity: the AWS credentials have expired"
    );
    assert!(err.fix().is_some_and(|f| f.contains("aws sso login")));

    let denied = mock!(aws_sdk_ecs::Client::create_service).then_http_response(|| {
        json_error(
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecs:CreateService on resource: arn:aws:ecs:eu-west-1:123456789012:service/tickstream-dev/tickstream-dev because no identity-based policy allows the ecs:CreateService action",
        )
    });
    let ecs = mock_client!(aws_sdk_ecs, [&denied]);
    let err: DeployError = ecs
        .create_service()
        .service_name("tickstream-dev")
        .send()
        .await
        .map_err(tickstream_deployer::error::aws(
            "creating ECS service tickstream-dev",
        ))
        .expect_err("denied");
    assert_eq!(err.kind(), Kind::AccessDenied);
    assert_eq!(
        err.to_string(),
        "creating ECS service tickstream-dev: IAM denies ecs:CreateService on arn:aws:ecs:eu-west-1:123456789012:service/tickstream-dev/tickstream-dev"
    );

    let quota = mock!(aws_sdk_cloudformation::Client::create_stack).then_http_response(|| {
        query_error(
            400,
            "LimitExceededException",
            "Limit for number of stacks exceeded: 2000",
        )
    });
    let cfn = mock_client!(aws_sdk_cloudformation, [&quota]);
    let err: DeployError = cfn
        .create_stack()
        .stack_name("x")
        .send()
        .await
        .map_err(tickstream_deployer::error::aws("creating stack x"))
        .expect_err("quota");
    assert_eq!(err.kind(), Kind::LimitExceeded);
    assert!(err.fix().is_some_and(|f| f.contains("Service Quotas")));
}
