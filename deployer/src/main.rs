//! `deploy`: see `tickstream_deployer::cli`.

use clap::Parser;
use tickstream_deployer::cli::{self, Cli};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let vars: Vec<(String, String)> = std::env::vars().collect();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(cli::log_filter(
            cli.log, &vars,
        )))
        .init();
    tickstream_deployer::tls();
    let code = cli::run(cli, vars).await;
    std::process::exit(code);
}
