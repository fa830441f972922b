//! `hemostat delete policy NAME`: remove a policy from Redis.

use clap::Args;

use super::{Kind, not_in_redis};
use crate::adapters::redis::config::RedisArgs;
use crate::adapters::redis::policies::printable;
use crate::cli::client::connect_redis;

/// Arguments of `hemostat delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// `policy`.
    pub kind: Kind,
    /// The policy's name.
    pub name: String,
    /// Redis connection.
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// `hemostat delete policy NAME`: 0 when deleted, 1 when there was none.
pub(crate) async fn delete(args: DeleteArgs) -> anyhow::Result<i32> {
    let Kind::Policy = args.kind;
    let mut repo = connect_redis(&args.redis).await?;
    if repo.delete(&args.name).await? {
        println!("healthpolicy/{} deleted", printable(&args.name));
        Ok(0)
    } else {
        not_in_redis(&args.name);
        Ok(1)
    }
}
