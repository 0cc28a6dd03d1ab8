//! The deployer's library. Today: the one place that builds the AWS configuration ([`aws`]) and
//! CloudFormation stacks that change only when their template or parameters do ([`stacks`]).
//! The `deploy` command (issue #6) is built on these.

pub mod aws;
pub mod stacks;
