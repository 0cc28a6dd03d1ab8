//! Errors as a person meets them: one short paragraph saying what failed, why (the root cause
//! once, not the chain), and the command or setting that fixes it. Each has a stable [`Kind`]
//! (`--output json` carries it) and an exit code by how the user must react: fix the
//! configuration or the command (2), look at AWS or the registry (3), look at the rollout (4),
//! look at the running service (5). The whole chain of causes is kept as `detail`, shown with
//! `--log debug` and never by default.

use std::fmt;

use aws_credential_types::provider::error::{CredentialsError, TokenError};
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::Serialize;

use crate::config::ConfigError;
use crate::oci::OciError;
use crate::registry::{PullError, RegistryError};
use crate::stacks::StackError;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OTHER: i32 = 1;
    pub const CONFIG: i32 = 2;
    pub const AWS: i32 = 3;
    pub const ROLLOUT: i32 = 4;
    pub const VERIFY: i32 = 5;
}

/// What went wrong, by what the user does about it. The names are stable: scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    NoConfigFile,
    UnknownEnvironment,
    InvalidConfiguration,
    NoRegion,
    LeftoverEndpoint,
    WrongAccount,
    NoContainerEngine,
    /// A local environment with a broker, and no valkey-server or redis-server here.
    NoLocalBroker,
    /// Asked for something this command cannot do as asked (a revision that does not exist).
    Usage,
    NoCredentials,
    ExpiredCredentials,
    InvalidCredentials,
    AccessDenied,
    LimitExceeded,
    Throttled,
    Unreachable,
    EmulatorUnreachable,
    /// Any other refusal from AWS.
    Aws,
    Registry,
    StackFailed,
    RolloutFailed,
    VerificationFailed,
    Image,
    Build,
    Local,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NoConfigFile => "no_config_file",
            Kind::UnknownEnvironment => "unknown_environment",
            Kind::InvalidConfiguration => "invalid_configuration",
            Kind::NoRegion => "no_region",
            Kind::LeftoverEndpoint => "leftover_endpoint",
            Kind::WrongAccount => "wrong_account",
            Kind::NoContainerEngine => "no_container_engine",
            Kind::NoLocalBroker => "no_local_broker",
            Kind::Usage => "usage",
            Kind::NoCredentials => "no_credentials",
            Kind::ExpiredCredentials => "expired_credentials",
            Kind::InvalidCredentials => "invalid_credentials",
            Kind::AccessDenied => "access_denied",
            Kind::LimitExceeded => "limit_exceeded",
            Kind::Throttled => "throttled",
            Kind::Unreachable => "unreachable",
            Kind::EmulatorUnreachable => "emulator_unreachable",
            Kind::Aws => "aws",
            Kind::Registry => "registry",
            Kind::StackFailed => "stack_failed",
            Kind::RolloutFailed => "rollout_failed",
            Kind::VerificationFailed => "verification_failed",
            Kind::Image => "image",
            Kind::Build => "build",
            Kind::Local => "local",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Kind::NoConfigFile
            | Kind::UnknownEnvironment
            | Kind::InvalidConfiguration
            | Kind::NoRegion
            | Kind::LeftoverEndpoint
            | Kind::WrongAccount
            | Kind::NoContainerEngine
            | Kind::NoLocalBroker
            | Kind::Usage => exit::CONFIG,
            Kind::NoCredentials
            | Kind::ExpiredCredentials
            | Kind::InvalidCredentials
            | Kind::AccessDenied
            | Kind::LimitExceeded
            | Kind::Throttled
            | Kind::Unreachable
            | Kind::EmulatorUnreachable
            | Kind::Aws
            | Kind::Registry => exit::AWS,
            Kind::StackFailed | Kind::RolloutFailed => exit::ROLLOUT,
            Kind::VerificationFailed => exit::VERIFY,
            // The image given (an archive, a layout) is input to fix, like the configuration.
            Kind::Image => exit::CONFIG,
            Kind::Build | Kind::Local => exit::OTHER,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AWS call that failed, classified: what we were doing, the root cause, and the fix.
#[derive(Debug, Clone)]
pub struct AwsProblem {
    pub kind: Kind,
    /// What we were doing: "checking the AWS identity (sts:GetCallerIdentity)".
    pub context: String,
    /// The root cause, once.
    pub cause: String,
    pub fix: Option<String>,
    /// The SDK's error code, when AWS answered.
    pub code: Option<String>,
    /// The whole chain, for `--log debug`.
    pub detail: String,
}

impl fmt::Display for AwsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.cause)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command cannot go on as asked; `fix` says what to do instead.
    #[error("{message}")]
    Refused {
        kind: Kind,
        message: String,
        fix: String,
    },
    #[error("{0}")]
    Aws(Box<AwsProblem>),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("pushing the image: {0}")]
    Registry(#[from] RegistryError),
    #[error("the image: {0}")]
    Image(#[from] OciError),
    #[error("{0}")]
    Build(String),
    #[error("the rollout failed: {0}")]
    Rollout(String),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Local(String),
}

impl From<PullError> for DeployError {
    fn from(e: PullError) -> Self {
        match e {
            PullError::Registry(e) => DeployError::Registry(e),
            PullError::Image(e) => DeployError::Image(e),
        }
    }
}

impl From<AwsProblem> for DeployError {
    fn from(p: AwsProblem) -> Self {
        DeployError::Aws(Box::new(p))
    }
}

impl DeployError {
    pub fn refused(kind: Kind, message: impl Into<String>, fix: impl Into<String>) -> Self {
        DeployError::Refused {
            kind,
            message: message.into(),
            fix: fix.into(),
        }
    }

    /// A command-line mistake: the message says what, `fix` what to type instead.
    pub fn usage(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::refused(Kind::Usage, message, fix)
    }

    pub fn kind(&self) -> Kind {
        match self {
            DeployError::Config(e) => e.kind(),
            DeployError::Refused { kind, .. } => *kind,
            DeployError::Aws(p) => p.kind,
            DeployError::Stack(StackError::Aws(p)) => p.kind,
            DeployError::Stack(StackError::Failed { reason, .. }) if limit_refusal(reason) => {
                Kind::LimitExceeded
            }
            DeployError::Stack(_) => Kind::StackFailed,
            DeployError::Registry(_) => Kind::Registry,
            DeployError::Image(_) => Kind::Image,
            DeployError::Build(_) => Kind::Build,
            DeployError::Rollout(_) => Kind::RolloutFailed,
            DeployError::Verify(_) => Kind::VerificationFailed,
            DeployError::Local(_) => Kind::Local,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            // A stack that failed for a quota is still a failed rollout of that stack.
            DeployError::Stack(StackError::Failed { .. } | StackError::Timeout { .. }) => {
                exit::ROLLOUT
            }
            _ => self.kind().exit_code(),
        }
    }

    /// The command or setting that fixes it, when we know one.
    pub fn fix(&self) -> Option<String> {
        match self {
            DeployError::Config(e) => e.fix(),
            DeployError::Refused { fix, .. } => Some(fix.clone()),
            DeployError::Aws(p) | DeployError::Stack(StackError::Aws(p)) => p.fix.clone(),
            DeployError::Stack(StackError::Failed { reason, .. }) if limit_refusal(reason) => Some(
                "an account quota refused a resource: raise it in Service Quotas \
                 (`aws service-quotas list-service-quotas`), or delete unused resources; then deploy again"
                    .into(),
            ),
            DeployError::Stack(StackError::Failed { .. }) => Some(
                "fix what the failed resource names and deploy again (`deploy status` shows the stack; \
                 a stack whose creation failed is replaced on the next deploy)"
                    .into(),
            ),
            DeployError::Stack(StackError::Stuck { fix, .. }) => Some(fix.clone()),
            DeployError::Stack(StackError::Timeout { .. }) => Some(
                "CloudFormation is still working: `deploy status` shows the stack; raise stack_timeout if it is just slow"
                    .into(),
            ),
            DeployError::Registry(RegistryError::Unauthorized { .. }) => Some(
                "run the deploy again (it logs in afresh); if it persists, check that the credentials may push to this repository (ecr:InitiateLayerUpload, ecr:PutImage)"
                    .into(),
            ),
            DeployError::Rollout(_) => Some(
                "`deploy logs` shows the tasks' output; `deploy status` the service; `deploy rollback` returns to the previous revision"
                    .into(),
            ),
            DeployError::Image(OciError::Io { .. } | OciError::NotALayout(_)) => Some(
                "--image-archive takes an OCI layout, a directory or its tar (`docker buildx build --output type=oci,dest=image.tar .`)"
                    .into(),
            ),
            DeployError::Verify(_) => Some(
                "`deploy status` shows the tasks and targets; `deploy logs` their output".into(),
            ),
            _ => None,
        }
    }

    /// The whole chain of causes, when it says more than the message.
    pub fn detail(&self) -> Option<String> {
        match self {
            DeployError::Aws(p) | DeployError::Stack(StackError::Aws(p)) => Some(p.detail.clone()),
            _ => None,
        }
    }
}

/// A stack failure caused by an account quota, from the reason CloudFormation gave.
fn limit_refusal(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("limitexceeded")
        || r.contains("limit exceeded")
        || r.contains("quota")
        || r.contains("maximum number of")
}

/// Maps an SDK error to [`DeployError::Aws`] with what we were doing.
pub fn aws<E, R>(context: impl Into<String>) -> impl FnOnce(SdkError<E, R>) -> DeployError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let context = context.into();
    move |e| classify(context, &e).into()
}

/// Whether retrying later may help: throttling, 5xx, timeouts, a connection that failed.
/// Waits (rollouts, stacks) keep going through these until their own deadline.
pub fn transient<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(_) => credentials_error(e as &dyn std::error::Error).is_none(),
        SdkError::ServiceError(_) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500
                || status == 429
                || matches!(
                    e.code(),
                    Some(
                        "Throttling"
                            | "ThrottlingException"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                            | "ServiceUnavailable"
                            | "InternalFailure"
                    )
                )
        }
        _ => false,
    }
}

fn credentials_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CredentialsError> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(c) = err.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        next = err.source();
    }
    None
}

fn chain_has_expired_sso_token(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(TokenError::ProviderError(_) | TokenError::TokenNotLoaded(_)) =
            err.downcast_ref::<TokenError>()
        {
            return true;
        }
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("sso") && (text.contains("expired") || text.contains("refresh")) {
            return true;
        }
        next = err.source();
    }
    false
}

/// Whether any error in the chain says `word`.
fn chain_mentions(e: &(dyn std::error::Error + 'static), word: &str) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.to_string().contains(word) {
            return true;
        }
        next = err.source();
    }
    false
}

/// `User: ARN is not authorized to perform: ACTION on resource: RESOURCE ...` as (action,
/// resource), the shape IAM denials take across services.
pub fn denied_action(message: &str) -> Option<(String, Option<String>)> {
    let after = message.split("not authorized to perform: ").nth(1)?;
    let action: String = after
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ';')
        .collect();
    if action.is_empty() {
        return None;
    }
    let resource = after.split(" on resource: ").nth(1).map(|r| {
        r.chars()
            .take_while(|c| !c.is_whitespace() && *c != ',' && *c != ';')
            .collect::<String>()
    });
    Some((action, resource.filter(|r| !r.is_empty())))
}

const SSO_FIX: &str =
    "run `aws sso login` (add `--profile NAME` if you use a profile), then run this command again";

/// Classifies an SDK error: the kind, the root cause once, and the fix.
pub fn classify<E, R>(context: String, e: &SdkError<E, R>) -> AwsProblem
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(e).to_string();
    let problem = |kind, cause: String, fix: Option<&str>| AwsProblem {
        kind,
        context: context.clone(),
        cause,
        fix: fix.map(str::to_string),
        code: e.code().map(str::to_string),
        detail: detail.clone(),
    };
    if let SdkError::ServiceError(_) = e {
        let code = e.code().unwrap_or("");
        let message = e.message().unwrap_or("no message");
        return match code {
            "ExpiredToken"
            | "ExpiredTokenException"
            | "RequestExpired"
            | "TokenRefreshRequired" => problem(
                Kind::ExpiredCredentials,
                "the AWS credentials have expired".into(),
                Some(SSO_FIX),
            ),
            "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "InvalidSignatureException"
            | "AuthFailure"
            | "InvalidAccessKeyId" => problem(
                Kind::InvalidCredentials,
                format!("AWS does not recognise these credentials ({code})"),
                Some(
                    "check AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: they are wrong or were deleted",
                ),
            ),
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "UnauthorizedException"
            | "AuthorizationError"
            | "AuthorizationErrorException"
            | "Forbidden" => {
                let (cause, fix) = match denied_action(message) {
                    Some((action, Some(resource))) => (
                        format!("IAM denies {action} on {resource}"),
                        format!(
                            "allow {action} on {resource} to the identity you deploy with (README, \"Deploying to a real account\", lists every permission the deployer uses), or deploy with a role that has it"
                        ),
                    ),
                    Some((action, None)) => (
                        format!("IAM denies {action}"),
                        format!(
                            "allow {action} to the identity you deploy with (README, \"Deploying to a real account\", lists every permission the deployer uses)"
                        ),
                    ),
                    None => (
                        format!("access denied: {message}"),
                        "grant the permission named above to the identity you deploy with".into(),
                    ),
                };
                let mut p = problem(Kind::AccessDenied, cause, None);
                p.fix = Some(fix);
                p
            }
            "Throttling"
            | "ThrottlingException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded" => problem(
                Kind::Throttled,
                format!(
                    "AWS kept throttling the account ({code}) through {} attempts",
                    crate::aws::MAX_ATTEMPTS
                ),
                Some(
                    "wait a minute and run it again; something else in the account is calling the same API hard",
                ),
            ),
            c if c.contains("LimitExceeded")
                || c.contains("QuotaExceeded")
                || c == "TooManyBuckets" =>
            {
                problem(
                    Kind::LimitExceeded,
                    format!("an account quota refused it: {message}"),
                    Some(
                        "raise the quota in Service Quotas (`aws service-quotas list-service-quotas --service-code SERVICE`), or delete unused resources",
                    ),
                )
            }
            "" => problem(Kind::Aws, message.to_string(), None),
            _ => problem(Kind::Aws, format!("{code}: {message}"), None),
        };
    }
    let source: &(dyn std::error::Error + 'static) = e;
    if let Some(c) = credentials_error(source) {
        return match c {
            CredentialsError::CredentialsNotLoaded(_) | CredentialsError::ProviderTimedOut(_) => {
                problem(
                    Kind::NoCredentials,
                    "no AWS credentials were found (environment variables, AWS_PROFILE and ~/.aws files, SSO, container and instance roles were all tried)".into(),
                    Some("run `aws sso login --profile NAME` and set AWS_PROFILE=NAME, or `aws configure`; then run this command again"),
                )
            }
            // The chain got to the last provider, the instance metadata service, and it failed
            // (no instance, or one that refuses): on a person's machine that means no
            // credentials anywhere.
            CredentialsError::ProviderError(_) if chain_mentions(source, "IMDS") => problem(
                Kind::NoCredentials,
                format!(
                    "no AWS credentials were found (environment variables, AWS_PROFILE and ~/.aws files, SSO and container roles were tried; the instance metadata service, tried last, answered: {})",
                    innermost(source)
                ),
                Some("run `aws sso login --profile NAME` and set AWS_PROFILE=NAME, or `aws configure`; then run this command again"),
            ),
            _ if chain_has_expired_sso_token(source) => problem(
                Kind::ExpiredCredentials,
                "the SSO session has expired".into(),
                Some(SSO_FIX),
            ),
            CredentialsError::InvalidConfiguration(_) => problem(
                Kind::InvalidCredentials,
                format!("the AWS profile configuration is invalid: {}", innermost(source)),
                Some("fix the profile in ~/.aws/config (`aws configure list` shows what is used)"),
            ),
            _ => problem(
                Kind::NoCredentials,
                format!("the AWS credentials could not be loaded: {}", innermost(source)),
                Some("check the profile in ~/.aws/config (`aws configure list`), or run `aws sso login`"),
            ),
        };
    }
    match e {
        SdkError::TimeoutError(_) => problem(
            Kind::Unreachable,
            "AWS did not answer in time".into(),
            Some("check the network and any proxy (HTTPS_PROXY), then run it again"),
        ),
        SdkError::DispatchFailure(_) => problem(
            Kind::Unreachable,
            format!("cannot reach the AWS endpoint: {}", innermost(source)),
            Some(
                "check the network and any proxy (HTTPS_PROXY); for an emulator environment, `localstack/local-aws start`",
            ),
        ),
        _ => problem(Kind::Aws, innermost(source), None),
    }
}

/// The deepest cause's text: usually the one that says what actually happened.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_denials_name_the_action_and_resource() {
        let m = "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecs:CreateService on resource: arn:aws:ecs:eu-west-1:123456789012:service/dev/tickstream-dev because no identity-based policy allows the ecs:CreateService action";
        assert_eq!(
            denied_action(m),
            Some((
                "ecs:CreateService".into(),
                Some("arn:aws:ecs:eu-west-1:123456789012:service/dev/tickstream-dev".into())
            ))
        );
        assert_eq!(
            denied_action("User: x is not authorized to perform: iam:PassRole"),
            Some(("iam:PassRole".into(), None))
        );
        assert_eq!(denied_action("Access Denied"), None);
    }

    #[test]
    fn quota_failures_are_recognised_in_stack_reasons() {
        assert!(limit_refusal(
            "The maximum number of VPCs has been reached. (Service: Ec2, Status Code: 400, Error Code: VpcLimitExceeded)"
        ));
        assert!(!limit_refusal("Certificate not found"));
    }
}
