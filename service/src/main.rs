//! `tickstream`: parse the command line, start logging, bind, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tickstream::config::{Cli, Command, Config, LogFormat, Role};
use tickstream::{AppState, StartError, probe, run, shutdown, telemetry};

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
        Command::Serve => {
            let format = cli.config.log_format;
            match serve(cli.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(Failure::Start(e)) => {
                    report(format, &e.to_string(), Some(&e.fix()));
                    ExitCode::FAILURE
                }
                Err(Failure::Serving(e)) => {
                    report(format, &format!("serving failed: {e}"), None);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

enum Failure {
    Start(StartError),
    Serving(std::io::Error),
}

impl From<StartError> for Failure {
    fn from(e: StartError) -> Self {
        Failure::Start(e)
    }
}

/// Says it once: on stderr for a person, or as one JSON log line for CloudWatch.
fn report(format: LogFormat, message: &str, fix: Option<&str>) {
    match format {
        LogFormat::Json => match fix {
            Some(fix) => tracing::error!(fix, "{message}"),
            None => tracing::error!("{message}"),
        },
        LogFormat::Text => {
            eprintln!("tickstream: {message}");
            if let Some(fix) = fix {
                eprintln!("  fix: {fix}");
            }
        }
    }
}

#[tokio::main]
async fn serve(config: Config) -> Result<(), Failure> {
    telemetry::init(config.log_format);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(nofile = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let addr = config.listen_addr().map_err(StartError::from)?;
    let state = match config.role {
        Role::Edge => match edge_state(config).await? {
            Some(state) => state,
            None => return Ok(()),
        },
        _ => AppState::new(config)?,
    };
    let listener =
        tickstream::server::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(Failure::Serving)?;
    tracing::info!(addr = %local, version = env!("CARGO_PKG_VERSION"), "listening");
    run(listener, state, shutdown::signal())
        .await
        .map_err(Failure::Serving)
}

/// An edge serves what the broker's writer serves: it waits for one to have started (or for
/// a signal: `None`).
async fn edge_state(config: Config) -> Result<Option<AppState>, Failure> {
    config.validate().map_err(StartError::from)?;
    let client =
        tickstream::broker::client(&config).map_err(|e| StartError::Broker(e.to_string()))?;
    let keys = tickstream::broker::Keys::new(&config.broker_namespace);
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = stop.clone();
    let signal = tokio::spawn(async move {
        shutdown::signal().await;
        watch.cancel();
    });
    let found = tickstream::broker::edge::wait_for_meta(&client, &keys, &stop).await;
    signal.abort();
    let Some((meta, epoch)) = found else {
        return Ok(None);
    };
    tracing::info!(source = meta.source, symbols = meta.symbols.len(), %epoch, "serving the broker's streams");
    Ok(Some(AppState::for_edge(config, client, meta, epoch)?))
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
