//! Errors by how the user must react, each with its own exit code: fix the configuration (2),
//! look at AWS (3), look at the rollout (4), look at the running service (5).

use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::ConfigError;
use crate::oci::OciError;
use crate::registry::{PullError, RegistryError};
use crate::stacks::StackError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {message}{hint}")]
    Aws {
        context: String,
        message: String,
        hint: &'static str,
    },
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

/// Exit codes, documented in the README.
pub mod exit {
    pub const OTHER: i32 = 1;
    pub const CONFIG: i32 = 2;
    pub const AWS: i32 = 3;
    pub const ROLLOUT: i32 = 4;
    pub const VERIFY: i32 = 5;
}

impl DeployError {
    pub fn exit_code(&self) -> i32 {
        match self {
            DeployError::Config(_) | DeployError::Usage(_) => exit::CONFIG,
            DeployError::Aws { .. } | DeployError::Registry(_) => exit::AWS,
            DeployError::Stack(StackError::Aws { .. }) => exit::AWS,
            DeployError::Stack(_) | DeployError::Rollout(_) => exit::ROLLOUT,
            DeployError::Verify(_) => exit::VERIFY,
            DeployError::Image(_) | DeployError::Build(_) | DeployError::Local(_) => exit::OTHER,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.exit_code() {
            exit::CONFIG => "configuration",
            exit::AWS => "aws",
            exit::ROLLOUT => "rollout",
            exit::VERIFY => "verification",
            _ => "other",
        }
    }
}

/// The next step for the errors people meet most: no, expired or wrong credentials.
fn hint<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::ConstructionFailure(_) => {
            "\n  hint: no AWS credentials were found: run `aws configure` or `aws sso login`, or set AWS_PROFILE"
        }
        _ => match e.code() {
            Some("ExpiredToken" | "ExpiredTokenException" | "RequestExpired") => {
                "\n  hint: the AWS credentials have expired: run `aws sso login` (or refresh them) and deploy again"
            }
            Some(
                "InvalidClientTokenId" | "UnrecognizedClientException" | "SignatureDoesNotMatch",
            ) => "\n  hint: AWS does not know these credentials: check AWS_PROFILE and the keys",
            Some("AccessDenied" | "AccessDeniedException") => {
                "\n  hint: the caller lacks a permission; the message names it"
            }
            _ => "",
        },
    }
}

/// Maps an SDK error to [`DeployError::Aws`] with what we were doing.
pub fn aws<E, R>(context: impl Into<String>) -> impl FnOnce(SdkError<E, R>) -> DeployError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let context = context.into();
    move |e| DeployError::Aws {
        hint: hint(&e),
        message: describe(&e),
        context,
    }
}

/// `Code: message` for an answer from AWS; the whole chain for everything else (a connection
/// refused, a timeout), where the inner causes are the useful part.
pub fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match (e, e.code()) {
        (SdkError::ServiceError(_), Some(code)) => {
            format!("{code}: {}", e.message().unwrap_or("no message"))
        }
        _ => DisplayErrorContext(e).to_string(),
    }
}
