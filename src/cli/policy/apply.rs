//! `hemostat apply -f PATH`: create or update policies in Redis.

use std::path::PathBuf;

use clap::Args;

use super::inputs::read_inputs;
use super::print_invalid;
use crate::adapters::redis::config::RedisArgs;
use crate::cli::client::connect_redis;

/// Arguments of `hemostat apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Policy files or directories (searched recursively for *.yaml, *.yml); `-` reads stdin.
    #[arg(long = "filename", short = 'f', required = true)]
    pub paths: Vec<PathBuf>,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// `hemostat apply -f PATH`: 0 when applied, 1 on invalid input (nothing written).
pub(crate) async fn apply(args: ApplyArgs) -> anyhow::Result<i32> {
    let Some((source, text)) = read_inputs(&args.paths)? else {
        eprintln!("nothing applied");
        return Ok(1);
    };
    let mut repo = connect_redis(&args.redis).await?;
    match repo.apply(&source, &text).await {
        Ok(outcomes) => {
            for (name, outcome) in outcomes {
                println!("healthpolicy/{name} {}", outcome.as_str());
            }
            Ok(0)
        }
        Err(e) => print_invalid(e).map(|()| 1),
    }
}
