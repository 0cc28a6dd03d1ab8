//! A stand-in for AWS on 127.0.0.1, for what a newcomer meets first: STS says who the caller is
//! (in an account the test chooses); every other call is denied by IAM with AWS's own wording,
//! naming the action (taken from the request's signature scope and operation) and a resource;
//! Lambda reports the limits of a brand-new account.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
struct Double {
    account: String,
}

/// The running double; stopped when dropped.
#[derive(Debug)]
pub struct AccountDouble {
    pub url: String,
    _served: super::Served,
}

impl AccountDouble {
    pub fn start(account: &str) -> AccountDouble {
        let served = super::serve(Router::new().fallback(handle).with_state(Arc::new(Double {
            account: account.to_string(),
        })));
        AccountDouble {
            url: served.url.clone(),
            _served: served,
        }
    }
}

/// The service the request was signed for: `.../REGION/SERVICE/aws4_request`.
fn signed_service(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_string()
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "text/xml")], body).into_response()
}

async fn handle(
    State(double): State<Arc<Double>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let service = signed_service(&headers);
    let caller = format!("arn:aws:iam::{}:user/newcomer", double.account);
    // Lambda (REST-JSON): the limits of a new account.
    if service == "lambda" {
        if uri.path().ends_with("/account-settings/") || uri.path().ends_with("/account-settings") {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                r#"{"AccountLimit":{"ConcurrentExecutions":10,"UnreservedConcurrentExecutions":10},"AccountUsage":{"FunctionCount":0}}"#,
            )
                .into_response();
        }
        return (
            StatusCode::NOT_FOUND,
            [
                ("content-type", "application/json"),
                ("x-amzn-errortype", "ResourceNotFoundException"),
            ],
            r#"{"Type":"User","Message":"Function not found"}"#,
        )
            .into_response();
    }
    // JSON protocol: the operation is in X-Amz-Target.
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let operation = target.rsplit('.').next().unwrap_or(target);
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "application/x-amz-json-1.1")],
            format!(
                r#"{{"__type":"AccessDeniedException","message":"User: {caller} is not authorized to perform: {service}:{operation} on resource: * because no identity-based policy allows the {service}:{operation} action"}}"#
            ),
        )
            .into_response();
    }
    // Query protocol: the operation is the form's Action.
    let form = String::from_utf8_lossy(&body);
    let action = form
        .split('&')
        .find_map(|p| p.strip_prefix("Action="))
        .unwrap_or("Unknown")
        .to_string();
    if method == Method::POST && action == "GetCallerIdentity" {
        return xml(
            StatusCode::OK,
            format!(
                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
                 <Arn>{caller}</Arn><UserId>AIDAEXAMPLE</UserId><Account>{}</Account></GetCallerIdentityResult>\
                 <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                double.account
            ),
        );
    }
    let resource = match service.as_str() {
        "cloudformation" => format!(
            "arn:aws:cloudformation:eu-west-1:{}:stack/tickstream-dev-network/*",
            double.account
        ),
        "iam" => format!(
            "arn:aws:iam::{}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
            double.account
        ),
        _ => "*".to_string(),
    };
    xml(
        StatusCode::FORBIDDEN,
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: {caller} is not authorized to perform: {service}:{action} on resource: {resource} because no identity-based policy allows the {service}:{action} action</Message></Error><RequestId>1</RequestId></ErrorResponse>"
        ),
    )
}
