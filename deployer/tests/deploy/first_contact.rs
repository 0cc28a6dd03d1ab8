//! What a newcomer sees first when something is wrong: the exact lines, in text and in JSON,
//! for every mistake people make on their first deploy. A change of wording is a change here,
//! reviewed like code. Every case runs the real binary in an environment of its own (no AWS
//! credentials, no profile, no instance metadata, no container engine on PATH), and talks
//! only to 127.0.0.1.

use std::net::TcpListener;
use std::process::Command;

use crate::support::account_double::AccountDouble;
use serde_json::Value;
use sha1::Digest as _;

/// A directory standing for the user's machine: a home with an empty ~/.aws, an empty PATH.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new(deploy_toml: Option<&str>) -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home/.aws")).expect("home");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
        std::fs::create_dir_all(dir.path().join("work")).expect("work");
        if let Some(text) = deploy_toml {
            std::fs::write(dir.path().join("work/deploy.toml"), text).expect("deploy.toml");
        }
        Machine { dir }
    }

    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }

    /// Runs `deploy ARGS` with only `vars` (and the machine's bare essentials) set; returns the
    /// exit code, stdout, and stderr with the live view's clock blanked.
    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy"));
        cmd.args(args)
            .current_dir(self.dir.path().join("work"))
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", self.dir.path().join("bin"))
            .env("AWS_CONFIG_FILE", self.home().join(".aws/config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.home().join(".aws/credentials"),
            )
            // Never reach for an instance role: nothing but 127.0.0.1 is ever contacted.
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run deploy");
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(
                |l| match l.strip_prefix('[').and_then(|r| r.split_once("s] ")) {
                    Some((_, rest)) => format!("[t] {rest}"),
                    None => l.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    }

    /// The same, with `--output json`: the error document.
    fn json(&self, args: &[&str], vars: &[(&str, &str)]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let (_, stdout, _) = self.run(&all, vars);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }
}

/// Asserts the text and JSON forms of one failure.
fn expect(
    machine: &Machine,
    args: &[&str],
    vars: &[(&str, &str)],
    code: i32,
    stderr: &str,
    kind: &str,
) {
    let (got_code, stdout, got) = machine.run(args, vars);
    assert_eq!(got, stderr, "stderr of deploy {args:?}");
    assert_eq!(got_code, code, "exit code of deploy {args:?}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    let doc = machine.json(args, vars);
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["error"]["kind"], kind, "{doc}");
    assert_eq!(doc["error"]["exit_code"], code, "{doc}");
    // The JSON carries the same message and fix as the text.
    let message = doc["error"]["message"].as_str().expect("message");
    assert!(
        stderr.contains(&format!("error: {message}")),
        "{doc}\n{stderr}"
    );
    if let Some(fix) = doc["error"]["fix"].as_str() {
        assert!(stderr.contains(&format!("  fix: {fix}")), "{doc}\n{stderr}");
    }
    // Never the SDK's debug dump.
    for noise in [
        "DispatchFailure",
        "ConnectorError",
        "CredentialsNotLoaded",
        "Some(",
        "{ source",
    ] {
        assert!(!got.contains(noise), "{noise} in:\n{got}");
    }
}

/// A port nothing listens on, below the kernel's ephemeral range, so no test's double bound to
/// port 0 can be handed it meanwhile.
fn closed_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = (std::process::id() % 3000) as u16;
    for _ in 0..3000 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 24_000 + (start + n) % 3000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 24000..27000");
}

const DEV: &str = "[env.dev]\nregion = \"eu-west-1\"\n";

#[test]
fn no_deploy_toml() {
    let m = Machine::new(None);
    let work = m.dir.path().join("work");
    expect(
        &m,
        &["--env", "dev", "--dry-run"],
        &[],
        2,
        &format!(
            "error: no deploy.toml in {} or any directory above it\n  \
             fix: run from the repository (it has deploy.toml at its root), or pass --config PATH",
            work.display()
        ),
        "no_config_file",
    );
}

#[test]
fn an_unknown_environment() {
    let m = Machine::new(Some(
        "[env.dev]\nregion = \"eu-west-1\"\n[env.prod]\nregion = \"eu-west-1\"\n",
    ));
    expect(
        &m,
        &["--env", "staging", "--dry-run"],
        &[],
        2,
        "error: there is no environment `staging` in deploy.toml (it has dev, prod)\n  \
         fix: use one of them (--env dev), or add an [env.staging] table to deploy.toml",
        "unknown_environment",
    );
}

#[test]
fn a_misspelt_setting() {
    let m = Machine::new(Some("[env.dev]\nregoin = \"eu-west-1\"\n"));
    expect(
        &m,
        &["--env", "dev", "--dry-run"],
        &[],
        2,
        "error: deploy.toml line 2: unknown setting `regoin`\n  \
         fix: did you mean `region`? Every setting is listed in the README's Deploy section",
        "invalid_configuration",
    );
}

#[test]
fn no_region() {
    let m = Machine::new(Some("[env.dev]\ndesired_count = 1\nmin_count = 1\n"));
    expect(
        &m,
        &["--env", "dev", "--dry-run"],
        &[],
        2,
        "error: no AWS region for env dev\n  \
         fix: set region in [env.dev] of deploy.toml, or AWS_REGION, or --region (or region in your AWS profile)",
        "no_region",
    );
}

#[test]
fn a_leftover_emulator_endpoint_is_refused_without_a_network_call() {
    // Something that counts connections stands where the leftover variable points.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let m = Machine::new(Some(DEV));
    expect(
        &m,
        &["--env", "dev", "--dry-run"],
        &[("AWS_ENDPOINT_URL", &url), ("AWS_ENDPOINT_URL_ECS", &url)],
        2,
        &format!(
            "error: AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_ECS are set, so every AWS call of env dev would go to {url} instead of AWS\n  \
             fix: unset AWS_ENDPOINT_URL AWS_ENDPOINT_URL_ECS (left from a local session: `eval \"$(localstack/local-aws env)\"` sets it), or set endpoint_url in [env.dev] if you mean it"
        ),
        "leftover_endpoint",
    );
    assert!(listener.accept().is_err(), "no connection was made");
}

#[test]
fn no_credentials() {
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n",
        closed_port()
    )));
    expect(
        &m,
        &["--env", "dev", "plan", "--image-archive", "image.tar"],
        &[],
        2,
        "error: the image: image.tar: No such file or directory (os error 2)\n  \
         fix: --image-archive takes an OCI layout, a directory or its tar (`docker buildx build --output type=oci,dest=image.tar .`)",
        "image",
    );
    // Without an image to check first, the credentials are what fails.
    expect(
        &m,
        &["--env", "dev", "plan"],
        &[],
        3,
        "[t] image: not built for the plan: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n\
         error: checking the AWS identity (sts:GetCallerIdentity): no AWS credentials were found (environment variables, AWS_PROFILE and ~/.aws files, SSO, container and instance roles were all tried)\n  \
         fix: run `aws sso login --profile NAME` and set AWS_PROFILE=NAME, or `aws configure`; then run this command again",
        "no_credentials",
    );
}

#[test]
fn no_credentials_where_an_instance_metadata_service_refuses() {
    // What a container or CI runner without a role answers at the metadata address.
    let imds = crate::support::serve(axum::Router::new().route(
        "/latest/api/token",
        axum::routing::put(|| async { (axum::http::StatusCode::FORBIDDEN, "request forbidden") }),
    ));
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n",
        closed_port()
    )));
    expect(
        &m,
        &["--env", "dev", "plan"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url),
        ],
        3,
        "[t] image: not built for the plan: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n\
         error: checking the AWS identity (sts:GetCallerIdentity): no AWS credentials were found (environment variables, AWS_PROFILE and ~/.aws files, SSO and container roles were tried; the instance metadata service, tried last, answered: request forbidden: IMDS is disabled or the caller has insufficient permissions.)\n  \
         fix: run `aws sso login --profile NAME` and set AWS_PROFILE=NAME, or `aws configure`; then run this command again",
        "no_credentials",
    );
}

#[test]
fn an_expired_sso_session() {
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n",
        closed_port()
    )));
    std::fs::write(
        m.home().join(".aws/config"),
        "[profile dev]\nsso_session = corp\nsso_account_id = 123456789012\nsso_role_name = Deployer\nregion = eu-west-1\n\n\
         [sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\nsso_region = eu-west-1\n",
    )
    .expect("config");
    let cache = m.home().join(".aws/sso/cache");
    std::fs::create_dir_all(&cache).expect("cache");
    let name = format!("{:x}.json", sha1::Sha1::digest(b"corp"));
    std::fs::write(
        cache.join(name),
        r#"{"accessToken":"expired","expiresAt":"2025-01-01T00:00:00Z","region":"eu-west-1","startUrl":"https://corp.awsapps.com/start"}"#,
    )
    .expect("token");
    expect(
        &m,
        &["--env", "dev", "plan"],
        &[("AWS_PROFILE", "dev")],
        3,
        "[t] image: not built for the plan: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n\
         error: checking the AWS identity (sts:GetCallerIdentity): the SSO session has expired\n  \
         fix: run `aws sso login` (add `--profile NAME` if you use a profile), then run this command again",
        "expired_credentials",
    );
}

fn keys() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE00"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "not-a-real-secret-not-a-real-secret-0000",
        ),
    ]
}

#[test]
fn credentials_for_another_account() {
    let aws = AccountDouble::start("210987654321");
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\naccount_id = \"123456789012\"\nendpoint_url = \"{}\"\n",
        aws.url
    )));
    expect(
        &m,
        &["--env", "dev", "plan"],
        &keys(),
        2,
        &format!(
            "[t] image: not built for the plan: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n\
             [t] env dev -> account 210987654321 in eu-west-1 at {0} as arn:aws:iam::210987654321:user/newcomer\n\
             error: env dev lives in account 123456789012, but these credentials are for account 210987654321 (arn:aws:iam::210987654321:user/newcomer)\n  \
             fix: switch to credentials for 123456789012 (AWS_PROFILE, or `aws sso login --profile NAME`), or correct account_id in [env.dev]",
            aws.url
        ),
        "wrong_account",
    );
}

#[test]
fn a_permission_iam_denies_names_the_action_and_the_resource() {
    let aws = AccountDouble::start("123456789012");
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\n",
        aws.url
    )));
    expect(
        &m,
        &["--env", "dev", "plan"],
        &keys(),
        3,
        &format!(
            "[t] image: not built for the plan: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n\
             [t] env dev -> account 123456789012 in eu-west-1 at {} as arn:aws:iam::123456789012:user/newcomer\n\
             error: describing stack tickstream-dev-network: IAM denies cloudformation:DescribeStacks on arn:aws:cloudformation:eu-west-1:123456789012:stack/tickstream-dev-network/*\n  \
             fix: allow cloudformation:DescribeStacks on arn:aws:cloudformation:eu-west-1:123456789012:stack/tickstream-dev-network/* to the identity you deploy with (README, \"Deploying to a real account\", lists every permission the deployer uses), or deploy with a role that has it",
            aws.url
        ),
        "access_denied",
    );
}

#[test]
fn a_quota_the_account_cannot_meet() {
    let aws = AccountDouble::start("123456789012");
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nlambda_concurrency = 50\nendpoint_url = \"{}\"\n",
        aws.url
    )));
    // A file that passes for a static x86-64 executable: the check never runs it.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18] = 62;
    std::fs::write(m.dir.path().join("work/bootstrap"), elf).expect("binary");
    expect(
        &m,
        &[
            "--env",
            "dev",
            "--target",
            "lambda",
            "--binary",
            "bootstrap",
        ],
        &keys(),
        3,
        &format!(
            "[t] env dev -> account 123456789012 in eu-west-1 at {} as arn:aws:iam::123456789012:user/newcomer\n\
             error: lambda_concurrency = 50 would leave the account -40 unreserved executions; Lambda requires at least 100 (this account allows 10 in all, 10 unreserved)\n  \
             fix: remove lambda_concurrency to reserve none, or raise \"Concurrent executions\" in Service Quotas (Lambda)",
            aws.url
        ),
        "limit_exceeded",
    );
}

#[test]
fn no_container_engine_for_a_real_environment() {
    let m = Machine::new(Some(DEV));
    expect(
        &m,
        &["--env", "dev"],
        &keys(),
        2,
        "error: env dev builds the image from the Dockerfile, and no container engine answers (`docker info` and `podman info` both failed)\n  \
         fix: start Docker (or install podman), or pass --image-archive PATH (an OCI layout) or --image REF@sha256:DIGEST",
        "no_container_engine",
    );
}

#[test]
fn the_emulator_not_running() {
    let port = closed_port();
    let m = Machine::new(Some(&format!(
        "[env.local]\nemulator = true\nendpoint_url = \"http://127.0.0.1:{port}\"\n"
    )));
    expect(
        &m,
        &["--env", "local", "status"],
        &[],
        3,
        &format!(
            "error: the local AWS does not answer at http://127.0.0.1:{port}\n  \
             fix: start it (`localstack/local-aws start` in the repository), or correct endpoint_url for this environment in deploy.toml"
        ),
        "emulator_unreachable",
    );
}

#[test]
fn the_full_chain_is_there_with_log_debug() {
    let m = Machine::new(Some(&format!(
        "[env.dev]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n",
        closed_port()
    )));
    let (_, _, plain) = m.run(&["--env", "dev", "plan"], &[]);
    assert!(!plain.contains("detail:"), "{plain}");
    let (code, _, debug) = m.run(&["--env", "dev", "plan", "--log", "debug"], &[]);
    assert_eq!(code, 3);
    let detail = debug
        .lines()
        .find(|l| l.starts_with("  detail: "))
        .unwrap_or_else(|| panic!("a detail line in:\n{debug}"));
    assert!(detail.contains("no credentials found in chain"), "{detail}");
}
