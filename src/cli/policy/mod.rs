//! kubectl-style policy management: `apply`, `diff`, `get`, `describe`, `delete`, through
//! Redis or a running operator's API (`--api`).

mod apply;
mod delete;
mod describe;
mod diff;
mod get;
mod inputs;

pub(crate) use apply::{ApplyArgs, apply};
pub(crate) use delete::{DeleteArgs, delete};
pub(crate) use describe::{DescribeArgs, describe};
pub(crate) use diff::{DiffArgs, diff};
pub(crate) use get::{GetArgs, get};

use clap::ValueEnum;

use super::client::{DEFAULT_API, api_base, connect_redis};
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::{PolicyRepo, RemoteError, printable};
use crate::policy::HealthPolicy;

/// What `describe` and `delete` act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A HealthPolicy applied through Redis.
    #[value(alias = "policies", alias = "po", alias = "healthpolicy")]
    Policy,
}

/// The policy's actions, comma-separated (`-` for none).
fn actions(policy: &HealthPolicy) -> String {
    let names: Vec<&str> = policy
        .spec
        .remediation
        .actions
        .iter()
        .map(|a| a.as_str())
        .collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

/// The error line of a policy that is not in Redis.
fn not_in_redis(name: &str) {
    eprintln!(
        "error: healthpolicy/{} not found in Redis (hemostat:policies)",
        printable(name)
    );
}

/// Where `get policies` and `describe policy` read policies.
enum PolicySource {
    Redis(PolicyRepo),
    /// A running operator's API (the policies in force there).
    Api(String),
}

/// Redis when it answers; else the operator's API (`--api`, or the default address): an
/// operator without Redis takes its policies from its files.
async fn policy_source(api: &Option<String>, redis: &RedisArgs) -> PolicySource {
    match connect_redis(redis).await {
        Ok(repo) => PolicySource::Redis(repo),
        Err(e) => {
            let api = api.clone().unwrap_or_else(|| DEFAULT_API.to_owned());
            eprintln!(
                "note: {e:#}\nnote: reading the policies in force from the operator at {} instead",
                api_base(&api)
            );
            PolicySource::Api(api)
        }
    }
}

/// Prints the diagnostics of an invalid input (`Ok`), or returns any other error.
fn print_invalid(e: RemoteError) -> anyhow::Result<()> {
    match e {
        RemoteError::Invalid(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            eprintln!("nothing applied: {} error(s)", diagnostics.len());
            Ok(())
        }
        other => Err(other.into()),
    }
}
