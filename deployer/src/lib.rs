//! The deployer: `cargo run --bin deploy` takes tickstream from source to a verified Fargate
//! service (or, with `--env local`, to the local emulator and a task running on this machine).
//!
//! Layout: [`config`] resolves and checks the settings; [`aws`] builds the one SDK
//! configuration; [`prerequisites`] makes what a new account lacks; [`stacks`] and [`infra`]
//! own the CloudFormation stacks (network, broker, platform); [`oci`], [`reference`],
//! [`registry`] and [`ecr`] make, name and push the image; [`roles`] says which services an
//! environment runs (one whole service, or ingest and edge around a broker); [`taskdef`] and
//! [`service`] describe what ECS should run; [`rollout`] waits for it, [`verify`] proves it
//! over a WebSocket; [`local`] and [`local_broker`] play the part of Fargate and ElastiCache on
//! one machine; [`commands`] ties them into the CLI's commands.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod ecr;
pub mod error;
pub mod image;
pub mod infra;
pub mod lambda;
pub mod local;
pub mod local_broker;
pub mod oci;
pub mod output;
pub mod preflight;
pub mod prerequisites;
pub mod reference;
pub mod registry;
pub mod report;
pub mod roles;
pub mod rollout;
pub mod service;
pub mod stacks;
pub mod taskdef;
pub mod verify;

/// Installs the TLS crypto provider (aws-lc-rs, the one the AWS SDK already links) for reqwest
/// and the WebSocket probe. Idempotent; every HTTP client here is built after calling it.
pub fn tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
