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
    // reqwest and the WebSocket probe share one TLS provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let code = tickstream_deployer::cli::run(tickstream_deployer::cli::Cli::parse()).await;
    std::process::exit(code);
}
