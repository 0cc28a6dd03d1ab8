//! `tickstream`: parse the command line, start logging, bind, run.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tickstream::config::{Cli, Command, Config};
use tickstream::{AppState, probe, run, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Started by the Lambda runtime (provided.al2023): the REST tier, no listener.
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() && cli.command.is_none() {
        return match lambda(cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tickstream: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => healthcheck(&cli.config),
        Command::Serve => match serve(cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("tickstream: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

#[tokio::main]
async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(config.log_format);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let addr = config.listen_addr()?;
    let state = AppState::new(config).context("invalid configuration")?;
    let listener = tickstream::server::bind(addr).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(addr = %local, version = env!("CARGO_PKG_VERSION"), "listening");
    run(listener, state, shutdown::signal())
        .await
        .context("serving")
}

#[tokio::main]
async fn lambda(config: Config) -> Result<(), lambda_http::Error> {
    telemetry::init(config.log_format);
    tickstream::lambda::serve(config).await
}

fn healthcheck(config: &Config) -> ExitCode {
    let addr = match config.listen_addr() {
        Ok(a) => probe::local_addr(a),
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match probe::http_get(addr, "/readyz", Duration::from_secs(2)) {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((status, body)) => {
            eprintln!("healthcheck: /readyz answered {status}: {body}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
