//! `deploy --target lambda`: the REST tier on AWS Lambda. The same static binary, as
//! `bootstrap` in a reproducible zip, uploaded content-addressed to the artifact bucket (so an
//! unchanged binary uploads nothing and leaves the stack alone), deployed through
//! `infra/lambda.yaml`, and verified by calling the API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, PublicAccessBlockConfiguration,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::commands::Context;
use crate::error::{self, DeployError};
use crate::report::Reporter;
use crate::stacks::{self, StackSpec};

pub const TEMPLATE: &str = include_str!("../../infra/lambda.yaml");

/// Zips `binary` as `bootstrap` (mode 0755, fixed timestamp): the same binary, the same bytes.
pub fn package(binary: &Path) -> Result<Vec<u8>, DeployError> {
    let bytes = std::fs::read(binary)
        .map_err(|e| DeployError::Build(format!("{}: {e}", binary.display())))?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755)
        .last_modified_time(zip::DateTime::default());
    let fail = |e: &dyn std::fmt::Display| DeployError::Build(format!("zipping bootstrap: {e}"));
    zip.start_file("bootstrap", options).map_err(|e| fail(&e))?;
    zip.write_all(&bytes).map_err(|e| fail(&e))?;
    Ok(zip.finish().map_err(|e| fail(&e))?.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct LambdaDeployed {
    pub stack: String,
    pub stack_change: &'static str,
    pub bucket: String,
    pub key: String,
    pub zip_bytes: usize,
    pub uploaded: bool,
    pub function: String,
    pub api_url: Option<String>,
    pub verified: String,
}

fn bucket_name(app: &str, account: &str, region: &str) -> String {
    format!("{app}-artifacts-{account}-{region}")
}

/// The artifact bucket: private (all public access blocked), created once.
async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    report: &Reporter,
) -> Result<(), DeployError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => {}
        Err(e) => return Err(error::aws(format!("checking the artifact bucket {bucket}"))(e)),
    }
    report.line(format!("artifact bucket {bucket}: creating (private)"));
    let mut create = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    create
        .send()
        .await
        .map_err(error::aws(format!("creating the artifact bucket {bucket}")))?;
    s3.put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(error::aws(format!("blocking public access to {bucket}")))?;
    Ok(())
}

/// Packages, uploads, deploys and verifies the Lambda tier.
pub async fn deploy(
    ctx: &Context,
    binary: &Path,
    account: &str,
) -> Result<LambdaDeployed, DeployError> {
    let s = &ctx.settings;
    let region = ctx.region.clone();
    let function_name = format!("{}-{}-api", s.app, s.env);
    if let Some(wanted) = s.lambda_concurrency
        && !s.emulator
    {
        let lambda = aws_sdk_lambda::Client::new(&ctx.sdk);
        check_concurrency(&lambda, &function_name, wanted).await?;
    }
    let zip = package(binary)?;
    let key = format!("lambda/{}/{}.zip", s.app, &hex(&zip)[..32]);
    let bucket = bucket_name(&s.app, account, &region);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&ctx.sdk)
            // Emulators serve buckets on paths, not subdomains.
            .force_path_style(s.emulator)
            .build(),
    );
    ensure_bucket(&s3, &bucket, &region, &ctx.report).await?;
    let exists = s3
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .is_ok();
    if !exists {
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(zip.clone().into())
            .send()
            .await
            .map_err(error::aws(format!("uploading s3://{bucket}/{key}")))?;
    }
    ctx.report.line(format!(
        "lambda: bootstrap.zip {} bytes at s3://{bucket}/{key} ({})",
        zip.len(),
        if exists { "already there" } else { "uploaded" }
    ));
    let endpoint = if s.emulator { "None" } else { "FunctionUrl" };
    let spec = StackSpec {
        name: s.lambda_stack.clone(),
        template_body: TEMPLATE.to_string(),
        parameters: BTreeMap::from([
            ("AppName".to_string(), s.app.clone()),
            ("EnvironmentName".into(), s.env.clone()),
            ("CodeS3Bucket".into(), bucket.clone()),
            ("CodeS3Key".into(), key.clone()),
            ("Architecture".into(), s.architecture.lambda().into()),
            ("MemorySize".into(), s.lambda_memory.to_string()),
            (
                "ReservedConcurrency".into(),
                s.lambda_concurrency.unwrap_or(0).to_string(),
            ),
            ("Endpoint".into(), endpoint.into()),
            ("LogRetentionDays".into(), s.log_retention_days.to_string()),
        ]),
        named_iam: false,
    };
    let deployed = stacks::deploy(&ctx.cfn, &spec, ctx.stack_waiting(), &ctx.report).await?;
    let function = deployed
        .outputs
        .get("FunctionName")
        .cloned()
        .unwrap_or_default();
    let api_url = deployed
        .outputs
        .get("ApiUrl")
        .filter(|u| !u.is_empty())
        .cloned();
    let verified = match &api_url {
        Some(url) => verify_url(url, Duration::from_secs(60), &ctx.report).await?,
        None => verify_artifact(ctx, &s3, &bucket, &key).await?,
    };
    Ok(LambdaDeployed {
        stack: spec.name,
        stack_change: deployed.change.as_str(),
        bucket,
        key,
        zip_bytes: zip.len(),
        uploaded: !exists,
        function,
        api_url,
        verified,
    })
}

/// Lambda refuses a reservation that leaves the account fewer than this many unreserved
/// executions.
pub const MIN_UNRESERVED: i32 = 100;

/// A reservation of `wanted` must leave the account [`MIN_UNRESERVED`] executions; new
/// accounts often have 10-50 in all. Checked before anything changes, so a stack never fails
/// half-way for it.
pub async fn check_concurrency(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    wanted: u32,
) -> Result<(), DeployError> {
    let settings = lambda
        .get_account_settings()
        .send()
        .await
        .map_err(error::aws(
            "reading Lambda's account limits (lambda:GetAccountSettings)",
        ))?;
    let limit = settings.account_limit();
    let total = limit.map_or(0, |l| l.concurrent_executions());
    let unreserved = limit
        .and_then(|l| l.unreserved_concurrent_executions())
        .unwrap_or(0);
    // What this function already holds comes back to the pool when its reservation changes.
    let ours = match lambda
        .get_function_concurrency()
        .function_name(function)
        .send()
        .await
    {
        Ok(out) => out.reserved_concurrent_executions().unwrap_or(0),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            0
        }
        Err(e) => {
            return Err(error::aws(format!(
                "reading {function}'s reserved concurrency (lambda:GetFunctionConcurrency)"
            ))(e));
        }
    };
    let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
    let left = unreserved + ours - wanted;
    if left >= MIN_UNRESERVED {
        return Ok(());
    }
    let most = (unreserved + ours - MIN_UNRESERVED).max(0);
    Err(DeployError::refused(
        crate::error::Kind::LimitExceeded,
        format!(
            "lambda_concurrency = {wanted} would leave the account {left} unreserved executions; Lambda requires at least {MIN_UNRESERVED} (this account allows {total} in all, {unreserved} unreserved)"
        ),
        if most > 0 {
            format!(
                "lower lambda_concurrency to at most {most}, or remove it to reserve none; or raise \"Concurrent executions\" in Service Quotas (Lambda)"
            )
        } else {
            "remove lambda_concurrency to reserve none, or raise \"Concurrent executions\" in Service Quotas (Lambda)".to_string()
        },
    ))
}

/// Calls the public API until it answers a ticker (a new function version may take seconds).
async fn verify_url(
    base: &str,
    within: Duration,
    report: &Reporter,
) -> Result<String, DeployError> {
    crate::tls();
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| DeployError::Verify(e.to_string()))?;
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        let t = tokio::time::Instant::now();
        match ticker(&client, base).await {
            Ok(url) => {
                let text = format!(
                    "GET {url} answered a ticker in {} ms",
                    t.elapsed().as_millis()
                );
                report.line(format!("verified: {text}"));
                return Ok(text);
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(DeployError::Verify(format!(
        "{base} did not answer a ticker within {}: {last}",
        humantime::format_duration(within)
    )))
}

/// The first listed symbol's ticker; the URL that answered it.
async fn ticker(client: &reqwest::Client, base: &str) -> Result<String, String> {
    let json = |url: String| async move {
        let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", r.status()));
        }
        r.json::<serde_json::Value>()
            .await
            .map_err(|e| format!("GET {url}: {e}"))
    };
    let list = json(format!("{base}/api/v1/symbols")).await?;
    let symbol = list["symbols"][0]
        .as_str()
        .ok_or_else(|| format!("GET {base}/api/v1/symbols listed no symbols"))?
        .to_string();
    let url = format!("{base}/api/v1/ticker/{symbol}");
    let body = json(url.clone()).await?;
    if body["seq"].as_u64().is_some() {
        Ok(url)
    } else {
        Err(format!("GET {url}: unexpected body {body}"))
    }
}

/// Emulators create the function but cannot run it: the uploaded zip itself is fetched back,
/// its `bootstrap` started as a plain HTTP server, and asked for a ticker. (The Lambda adapter
/// is tested against a local Runtime API in the service's tests.)
async fn verify_artifact(
    ctx: &Context,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<String, DeployError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(error::aws(format!("downloading s3://{bucket}/{key}")))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| DeployError::Verify(format!("reading s3://{bucket}/{key}: {e}")))?
        .into_bytes();
    let dir = ctx
        .settings
        .root
        .join(".local-aws")
        .join("lambda")
        .join(&ctx.settings.lambda_stack);
    std::fs::create_dir_all(&dir).map_err(|e| DeployError::Local(e.to_string()))?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec()))
        .map_err(|e| DeployError::Verify(format!("the uploaded zip: {e}")))?;
    archive
        .extract(&dir)
        .map_err(|e| DeployError::Verify(format!("unpacking the uploaded zip: {e}")))?;
    let bootstrap = dir.join("bootstrap");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DeployError::Local(e.to_string()))?
        .port();
    let mut child = tokio::process::Command::new(&bootstrap)
        .env_clear()
        .env("TICKSTREAM_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DeployError::Verify(format!("starting {}: {e}", bootstrap.display())))?;
    let result = verify_url(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(10),
        &Reporter::recording(),
    )
    .await;
    let _ = child.kill().await;
    let text = result?;
    let note = format!(
        "the emulator runs no functions: the uploaded bootstrap, started here, {}",
        text.trim_start_matches("GET ")
    );
    ctx.report.line(format!("verified: {note}"));
    Ok(note)
}

/// Deletes the Lambda stack (the artifact bucket is kept).
pub async fn destroy(ctx: &Context) -> Result<bool, DeployError> {
    Ok(stacks::delete(
        &ctx.cfn,
        &ctx.settings.lambda_stack,
        ctx.stack_waiting(),
        &ctx.report,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_binary_zips_to_the_same_bytes_with_an_executable_bootstrap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("tickstream");
        std::fs::write(&bin, b"\x7fELF pretend").expect("write");
        let a = super::package(&bin).expect("zip");
        assert_eq!(a, super::package(&bin).expect("zip"));
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(a)).expect("a zip");
        let entry = archive.by_name("bootstrap").expect("bootstrap");
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o755));
    }
}
