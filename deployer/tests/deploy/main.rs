//! The deployer's integration tests, one binary (each test binary links the whole AWS SDK):
//!
//! - [`account`]: a new account's prerequisites, Lambda's limits, the preflight, credential and
//!   permission failures, with AWS's wire errors through the SDK's mocks;
//! - [`stacks`], [`rollout`], [`logs`]: CloudFormation, ECS rollouts and CloudWatch as AWS
//!   answers them;
//! - [`registry`]: the registry client against a front that answers as ECR does;
//! - [`verify`]: verification through a TLS load balancer as the public host, with a key;
//! - [`first_contact`]: the exact first lines a newcomer sees for each mistake;
//! - [`local_deploy`]: the `deploy` binary end to end in the local AWS.

mod support;

mod account;
mod first_contact;
mod local_deploy;
mod logs;
mod registry;
mod rollout;
mod stacks;
mod verify;
