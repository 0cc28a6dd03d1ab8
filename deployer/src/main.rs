//! `deploy`: see `tickstream_deployer::cli`.

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DEPLOY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    tickstream_deployer::tls();
    let code = tickstream_deployer::cli::run(tickstream_deployer::cli::Cli::parse()).await;
    std::process::exit(code);
}
