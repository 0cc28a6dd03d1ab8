//! Lambda events of the three kinds tickstream answers, as AWS sends them (trimmed to the
//! fields the services fill in for a GET without authorizers).

use serde_json::{Value, json};

fn split(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

fn query_map(query: &str) -> Value {
    let map: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Value::Object(map)
}

/// API Gateway HTTP API, payload format 2.0.
pub fn http_api(target: &str) -> Value {
    let (path, query) = split(target);
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"accept": "application/json", "host": "abc123.execute-api.eu-west-1.amazonaws.com",
                    "user-agent": "curl/8.5.0", "x-forwarded-proto": "https", "x-forwarded-port": "443"},
        "queryStringParameters": query_map(query),
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com", "domainPrefix": "abc123",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "curl/8.5.0"},
            "requestId": "req-http-api", "routeKey": "$default", "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000", "timeEpoch": 1_795_341_600_000_u64
        },
        "isBase64Encoded": false
    })
}

/// A Lambda function URL (the same 2.0 shape, with the URL's own domain).
pub fn function_url(target: &str) -> Value {
    let (path, query) = split(target);
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"accept": "*/*", "host": "xyz789.lambda-url.eu-west-1.on.aws",
                    "user-agent": "Mozilla/5.0", "x-forwarded-proto": "https", "x-forwarded-port": "443"},
        "queryStringParameters": query_map(query),
        "requestContext": {
            "accountId": "anonymous", "apiId": "xyz789",
            "domainName": "xyz789.lambda-url.eu-west-1.on.aws", "domainPrefix": "xyz789",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7", "userAgent": "Mozilla/5.0"},
            "requestId": "req-function-url", "routeKey": "$default", "stage": "$default",
            "time": "22/Nov/2026:10:00:00 +0000", "timeEpoch": 1_795_341_600_000_u64
        },
        "isBase64Encoded": false
    })
}

/// An Application Load Balancer target group (single-value headers).
pub fn alb(target: &str) -> Value {
    let (path, query) = split(target);
    json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/tickstream/abc"}},
        "httpMethod": "GET", "path": path, "queryStringParameters": query_map(query),
        "headers": {"accept": "application/json", "host": "tickstream-123.eu-west-1.elb.amazonaws.com",
                    "user-agent": "curl/8.5.0", "x-forwarded-proto": "http", "x-forwarded-port": "80"},
        "body": "", "isBase64Encoded": false
    })
}
