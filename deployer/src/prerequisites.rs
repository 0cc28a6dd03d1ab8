//! One-time prerequisites of an AWS account, made on the first deploy so a brand-new account
//! works: ECS's service-linked role. Without it, creating a cluster with capacity providers
//! fails with "Unable to assume the service linked role".

use aws_sdk_iam::Client;

use crate::error::{self, DeployError};
use crate::report::Reporter;

pub const ECS_SERVICE_LINKED_ROLE: &str = "AWSServiceRoleForECS";

/// Whether the role exists. `None` when the caller may not look (it will try to create it).
pub async fn ecs_role_exists(iam: &Client) -> Result<Option<bool>, DeployError> {
    match iam
        .get_role()
        .role_name(ECS_SERVICE_LINKED_ROLE)
        .send()
        .await
    {
        Ok(_) => Ok(Some(true)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            Ok(Some(false))
        }
        Err(e) => {
            let problem = error::classify("looking up the ECS service-linked role".into(), &e);
            if problem.kind == error::Kind::AccessDenied {
                Ok(None)
            } else {
                Err(problem.into())
            }
        }
    }
}

/// Creates ECS's service-linked role unless it exists. "Already taken" (another deploy made it
/// a moment ago) is success.
pub async fn ensure_ecs_role(iam: &Client, report: &Reporter) -> Result<bool, DeployError> {
    if ecs_role_exists(iam).await? == Some(true) {
        return Ok(false);
    }
    report.line(format!(
        "account: creating ECS's service-linked role {ECS_SERVICE_LINKED_ROLE} (once per account; a new account has none)"
    ));
    match iam
        .create_service_linked_role()
        .aws_service_name("ecs.amazonaws.com")
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_invalid_input_exception()
                    && s.meta()
                        .message()
                        .is_some_and(|m| m.contains("has been taken"))
            }) =>
        {
            Ok(false)
        }
        Err(e) => {
            let mut problem = error::classify(
                "creating ECS's service-linked role (iam:CreateServiceLinkedRole)".into(),
                &e,
            );
            if problem.kind == error::Kind::AccessDenied {
                problem.fix = Some(
                    "an administrator runs, once for the account: aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com"
                        .into(),
                );
            }
            Err(problem.into())
        }
    }
}
