//! The `hemostat` subcommands (clap); `anyhow` errors live here and in `main` only.

pub(crate) mod ai;
pub(crate) mod alert;
pub(crate) mod client;
pub(crate) mod explain;
pub(crate) mod healthcheck;
pub(crate) mod policy;
pub mod run;
pub(crate) mod silence;
pub(crate) mod table;
pub(crate) mod validate;

use clap::{Parser, Subcommand};

/// HemoStat keeps Docker containers healthy, inside hard safety limits.
#[derive(Debug, Parser)]
#[command(name = "hemostat", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check HealthPolicy files; prints `path:line:col: error: message` per problem, exits 1 on any.
    Validate(validate::ValidateArgs),
    /// Print the JSON Schema (2020-12) of the HealthPolicy document.
    Schema,
    /// Run the operator: watch the engine, analyze, repair within the policies' limits.
    Run(Box<run::RunArgs>),
    /// Create or update policies in Redis from files (`healthpolicy/NAME created|configured|unchanged`).
    Apply(policy::ApplyArgs),
    /// Show what `apply` would change; exits 0 when nothing, 1 when something would change.
    Diff(policy::DiffArgs),
    /// List policies (Redis, or a running operator's with --api), or its containers and decisions.
    Get(policy::GetArgs),
    /// Show one policy with its matched containers and recent decisions.
    Describe(policy::DescribeArgs),
    /// Delete a policy from Redis.
    Delete(policy::DeleteArgs),
    /// Show a container's last decision: findings, the rules' verdict and the model's side by side.
    Explain(explain::ExplainArgs),
    /// Mute notifications (never repairs) for containers or a policy: add, list, expire.
    Silence(silence::SilenceArgs),
    /// Alert channels: `alert test --channel NAME` sends a test notification.
    Alert(alert::AlertArgs),
    /// Ask a running operator whether it is ready (`/readyz`); exit 0 if so, 1 if not (the
    /// image's HEALTHCHECK: a scratch image has no curl).
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Validate(args) => Ok(validate::run(args)),
        Command::Run(args) => run::run(*args).await,
        Command::Apply(args) => policy::apply(args).await,
        Command::Diff(args) => policy::diff(args).await,
        Command::Get(args) => policy::get(args).await,
        Command::Describe(args) => policy::describe(args).await,
        Command::Delete(args) => policy::delete(args).await,
        Command::Explain(args) => explain::run(args).await,
        Command::Silence(args) => silence::run(args).await,
        Command::Alert(args) => alert::run(args).await,
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Schema => {
            println!("{}", crate::schema::policy_schema_json());
            Ok(0)
        }
    }
}
