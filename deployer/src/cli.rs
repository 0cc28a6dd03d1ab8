//! The command line: flags, the settings layers, and dispatch to [`crate::commands`].

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands::{self, Context, DeployOptions};
use crate::config::{self, Layer};
use crate::error::DeployError;
use crate::image::ImageOptions;
use crate::output::{self, Format};
use crate::report::Reporter;

/// Ship tickstream to ECS Fargate and prove it is live. Without a command: the full rollout.
///
/// Exit codes: 0 success, 2 bad configuration or usage, 3 AWS or registry error, 4 rollout
/// failed or rolled back, 5 verification failed, 1 anything else.
#[derive(Debug, Parser)]
#[command(name = "deploy", version, about)]
pub struct Cli {
    /// The environment in deploy.toml (local, dev, prod).
    #[arg(
        long,
        short,
        env = "DEPLOY_ENV",
        default_value = "local",
        global = true
    )]
    pub env: String,
    /// deploy.toml [default: the nearest one from the current directory up].
    #[arg(long, env = "DEPLOY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[arg(
        long,
        value_enum,
        env = "DEPLOY_OUTPUT",
        default_value = "text",
        global = true
    )]
    pub output: Format,
    /// How much to log on stderr: error, warn, info, debug (with the full chain of an error's
    /// causes), trace. RUST_LOG, when set, wins.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log: Option<LogLevel>,
    #[arg(long, global = true)]
    pub region: Option<String>,
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Point every AWS call at an emulator (the SDK's AWS_ENDPOINT_URL works too).
    #[arg(long, global = true)]
    pub endpoint_url: Option<String>,
    /// What to deploy: the streaming service on Fargate, or the REST tier on Lambda.
    #[arg(
        long,
        value_enum,
        env = "DEPLOY_TARGET",
        default_value = "fargate",
        global = true
    )]
    pub target: Target,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Roll out this image (NAME@sha256:DIGEST) instead of building one.
    #[arg(long, conflicts_with_all = ["image_archive", "binary"], global = true)]
    pub image: Option<String>,
    /// Roll out the image in this OCI layout (a directory or a tar archive).
    #[arg(long, conflicts_with = "binary", global = true)]
    pub image_archive: Option<PathBuf>,
    /// Package this static binary instead of building it (emulator environments).
    #[arg(long, global = true)]
    pub binary: Option<PathBuf>,
    #[arg(long, global = true)]
    pub desired_count: Option<u32>,
    /// Give up waiting for the rollout after this long (e.g. 15m).
    #[arg(long, global = true)]
    pub rollout_timeout: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The log filter: RUST_LOG (or DEPLOY_LOG) when set; else `--log` for everything; else only
/// the deployer's own warnings, so the SDK's (a credential chain dumped as debug text) stay
/// below the default level.
pub fn log_filter(flag: Option<LogLevel>, vars: &[(String, String)]) -> String {
    let var = |name: &str| {
        vars.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    var("RUST_LOG")
        .or_else(|| var("DEPLOY_LOG"))
        .or_else(|| flag.map(|l| l.as_str().to_string()))
        .unwrap_or_else(|| "tickstream_deployer=warn".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Fargate,
    Lambda,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What a deploy would change, without changing anything.
    Plan,
    /// Stacks, service, deployments, tasks and the public URL.
    Status,
    /// Back to the previous task definition (or --to REVISION), waited and verified.
    Rollback {
        #[arg(long)]
        to: Option<String>,
    },
    /// The service's logs.
    Logs {
        #[arg(long, short)]
        follow: bool,
        /// How far back to start (CloudWatch).
        #[arg(long, default_value = "10m")]
        since: humantime::Duration,
        /// How many lines without --follow.
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Remove the service and the stacks (the ECR repository is kept).
    Destroy {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

impl Cli {
    fn flags(&self) -> Layer {
        Layer {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
            desired_count: self.desired_count,
            rollout_timeout: self.rollout_timeout.clone(),
            ..Layer::default()
        }
    }
}

fn confirm(question: &str) -> Result<bool, DeployError> {
    if !std::io::stdin().is_terminal() {
        return Err(DeployError::usage(
            format!("{question} needs a confirmation, and there is no terminal to ask on"),
            "pass --yes to confirm",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| DeployError::Local(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Runs the command with the process's environment `vars` and returns the exit code.
pub async fn run(cli: Cli, vars: Vec<(String, String)>) -> i32 {
    let format = cli.output;
    let filter = log_filter(cli.log, &vars);
    let verbose = filter.contains("debug") || filter.contains("trace");
    match dispatch(cli, vars).await {
        Ok(()) => 0,
        Err(e) => {
            output::emit_error(format, &e, verbose);
            e.exit_code()
        }
    }
}

async fn dispatch(cli: Cli, env_vars: Vec<(String, String)>) -> Result<(), DeployError> {
    let cwd = std::env::current_dir().map_err(|e| DeployError::Local(e.to_string()))?;
    let (path, shown) = match &cli.config {
        Some(p) => (p.clone(), p.display().to_string()),
        None => {
            let found = config::find_file(&cwd)
                .ok_or_else(|| config::ConfigError::NotFound { start: cwd.clone() })?;
            let shown = config::shown(&found, &cwd);
            (found, shown)
        }
    };
    let vars = Layer::from_env(env_vars.iter().cloned())?;
    let settings = config::load(&path, &shown, &cli.env, vars, cli.flags())?;
    let options = DeployOptions {
        image: ImageOptions {
            reference: cli.image.clone(),
            archive: cli.image_archive.clone(),
            binary: cli.binary.clone(),
        },
        verify_within: None,
    };
    if let Some(Command::Destroy { yes: false }) = &cli.command
        && !confirm(&format!(
            "destroy env {} (service {} and its stacks)?",
            settings.env, settings.service
        ))?
    {
        return Err(DeployError::usage(
            "destroy was not confirmed; nothing changed",
            "answer y, or pass --yes",
        ));
    }
    let ctx = Context::new(settings, Reporter::stderr(), env_vars).await?;
    let format = cli.output;
    if cli.target == Target::Lambda {
        return lambda(&ctx, cli, format).await;
    }
    match cli.command {
        None if cli.dry_run => output::emit(format, &commands::plan(&ctx, &options).await?),
        None => output::emit(format, &commands::deploy(&ctx, &options).await?),
        Some(Command::Plan) => output::emit(format, &commands::plan(&ctx, &options).await?),
        Some(Command::Status) => output::emit(format, &commands::status(&ctx).await?),
        Some(Command::Rollback { to }) => output::emit(
            format,
            &commands::rollback(&ctx, to.as_deref(), &options).await?,
        ),
        Some(Command::Logs {
            follow,
            since,
            lines,
        }) => {
            commands::logs(
                &ctx,
                follow,
                Duration::from(since),
                lines,
                format == Format::Json,
            )
            .await?
        }
        Some(Command::Destroy { .. }) => output::emit(format, &commands::destroy(&ctx).await?),
    }
    Ok(())
}

/// `--target lambda`: deploy, status and destroy of the REST tier.
async fn lambda(ctx: &Context, cli: Cli, format: Format) -> Result<(), DeployError> {
    let s = &ctx.settings;
    match cli.command {
        None if cli.dry_run => Err(DeployError::usage(
            "--dry-run is not available for --target lambda yet",
            "`deploy --target lambda status` shows what is deployed",
        )),
        None => {
            let binary = match &cli.binary {
                Some(b) => b.clone(),
                None => crate::image::build_static(&s.root, s.architecture, &ctx.report)?,
            };
            crate::image::check_static(&binary, s.architecture)?;
            let identity = ctx.preflight().await?;
            output::emit(
                format,
                &crate::lambda::deploy(ctx, &binary, &identity.account).await?,
            );
            Ok(())
        }
        Some(Command::Status) => {
            let stack = crate::stacks::describe(&ctx.cfn, &s.lambda_stack).await?;
            let status = LambdaStatus {
                stack: s.lambda_stack.clone(),
                status: stack.as_ref().map_or("absent".into(), |(st, _)| st.clone()),
                outputs: stack.map(|(_, o)| o).unwrap_or_default(),
            };
            output::emit(format, &status);
            Ok(())
        }
        Some(Command::Destroy { .. }) => {
            ctx.preflight().await?;
            let deleted = crate::lambda::destroy(ctx).await?;
            output::emit(
                format,
                &LambdaStatus {
                    stack: s.lambda_stack.clone(),
                    status: if deleted {
                        "deleted".into()
                    } else {
                        "absent".into()
                    },
                    outputs: Default::default(),
                },
            );
            Ok(())
        }
        Some(_) => Err(DeployError::usage(
            "--target lambda supports deploy, status and destroy; plan, rollback and logs are for the Fargate service",
            "drop --target lambda, or use deploy, status or destroy",
        )),
    }
}

/// The Lambda stack as `status` and `destroy` report it.
#[derive(Debug, serde::Serialize)]
pub struct LambdaStatus {
    pub stack: String,
    pub status: String,
    pub outputs: std::collections::BTreeMap<String, String>,
}

impl output::Human for LambdaStatus {
    fn print(&self) {
        println!("lambda stack {}: {}", self.stack, self.status);
        for (k, v) in &self.outputs {
            println!("  {k}: {v}");
        }
    }
}
