//! The `hemostat` subcommands (clap); `anyhow` errors live here and in `main` only.

pub mod run;
pub mod validate;

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
    Run(run::RunArgs),
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Validate(args) => Ok(validate::run(args)),
        Command::Run(args) => run::run(args).await,
        Command::Schema => {
            println!("{}", crate::schema::policy_schema_json());
            Ok(0)
        }
    }
}
