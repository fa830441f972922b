//! `hemostat silence add|list|expire`: silences in the state store (Redis when configured, so a
//! whole fleet honours them; the state dir otherwise), read by every running operator within 1 s.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use crate::adapters::redis::alert_state::RedisAlertState;
use crate::alert::silence::Silence;
use crate::alert::state::{AlertState, FileAlertState};
use crate::policy::HumanDuration;

/// Where silences are kept: the same settings as `hemostat run`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Redis URL; with any Redis setting, silences are kept in Redis.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis host, when no URL is given.
    #[arg(long, global = true, env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port (default 6379).
    #[arg(long, global = true, env = "REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// Redis password (never printed).
    #[arg(long, global = true, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// A PEM file of the CA to trust for rediss:// (a private CA).
    #[arg(long, global = true, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// The operator's state dir, used without Redis.
    #[arg(long, global = true, env = "HEMOSTAT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// Opens the store these settings name.
    pub(crate) fn open(self) -> anyhow::Result<Arc<dyn AlertState>> {
        let redis = crate::adapters::redis::config::RedisArgs {
            redis_url: self.redis_url,
            redis_host: self.redis_host,
            redis_port: self.redis_port,
            redis_password: self.redis_password,
            redis_ca_file: self.redis_ca_file,
            ..Default::default()
        }
        .config()
        .context("invalid Redis settings")?;
        Ok(match redis {
            Some(config) => Arc::new(RedisAlertState::from_config(&config)?),
            None => Arc::new(FileAlertState::new(
                &self.state_dir.unwrap_or_else(super::run::default_state_dir),
            )),
        })
    }
}

/// `hemostat silence …`.
#[derive(Debug, Args)]
pub struct SilenceArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SilenceCommand,
    /// Where silences are kept.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The silence subcommands.
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Mute notifications about matching containers (repairs still happen); prints the id.
    Add {
        /// Glob on container names (`web-*`).
        #[arg(long, required_unless_present = "policy")]
        container: Option<String>,
        /// A policy's name: every container it governs.
        #[arg(long)]
        policy: Option<String>,
        /// Only on this node.
        #[arg(long)]
        node: Option<String>,
        /// For how long (`30m`, `2h`).
        #[arg(long = "for")]
        duration: HumanDuration,
        /// Why (required).
        #[arg(long)]
        comment: String,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        author: String,
    },
    /// List silences (active, pending, and expired within a day).
    List {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// End a silence now.
    Expire {
        /// Its id (from `silence list`).
        id: String,
    },
}

/// Output formats of `silence list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns.
    Table,
    /// JSON.
    Json,
}

/// Runs a silence subcommand.
pub(crate) async fn run(args: SilenceArgs) -> anyhow::Result<i32> {
    let store = args.store.open()?;
    let now = chrono::Utc::now();
    match args.command {
        SilenceCommand::Add {
            container,
            policy,
            node,
            duration,
            comment,
            author,
        } => {
            let silence = Silence::new(
                container,
                policy,
                node,
                duration.get(),
                comment,
                author,
                now,
            )?;
            store.add_silence(silence.clone()).await?;
            println!("{}", silence.id);
            eprintln!(
                "silenced until {} ({duration})",
                silence.ends_at.to_rfc3339()
            );
        }
        SilenceCommand::List { output } => {
            let silences = store.silences().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&silences)?),
                Output::Table => print_table(&silences, now),
            }
        }
        SilenceCommand::Expire { id } => match store.expire_silence(&id, now).await? {
            Some(_) => println!("silence {id} expired"),
            None => {
                eprintln!("no silence {id}: see `hemostat silence list`");
                return Ok(1);
            }
        },
    }
    Ok(0)
}

fn print_table(silences: &[Silence], now: chrono::DateTime<chrono::Utc>) {
    println!(
        "{:<12}  {:<8}  {:<20}  {:<16}  {:<10}  {:<20}  {:<10}  COMMENT",
        "ID", "STATE", "CONTAINER", "POLICY", "NODE", "ENDS", "BY"
    );
    for s in silences {
        let state = if s.is_active(now) {
            "active"
        } else if s.starts_at > now {
            "pending"
        } else {
            "expired"
        };
        println!(
            "{:<12}  {:<8}  {:<20}  {:<16}  {:<10}  {:<20}  {:<10}  {}",
            s.id,
            state,
            s.container.as_deref().unwrap_or("*"),
            s.policy.as_deref().unwrap_or("*"),
            s.node.as_deref().unwrap_or("*"),
            s.ends_at.format("%Y-%m-%dT%H:%M:%SZ"),
            s.created_by,
            s.comment
        );
    }
}
