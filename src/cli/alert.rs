//! `hemostat alert test --channel NAME`: sends one test notification through a channel of the
//! policies (or the operator-wide `operator/slack`), with the operator's retries, and says
//! whether it was delivered.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::alert::Alert;
use crate::alert::channels::{ChannelConfig, operator_alerts, policy_channels};
use crate::alert::metrics::AlertMetrics;
use crate::alert::notify::{Channel, Delivery};

/// `hemostat alert …`.
#[derive(Debug, Args)]
pub struct AlertArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AlertCommand,
}

/// The alert subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Send a test notification through one channel.
    Test {
        /// The channel: `<policy>/<kind>` (`web-api/slack`, `web-api/webhook-2`) or
        /// `operator/slack` (SLACK_WEBHOOK_URL).
        #[arg(long)]
        channel: String,
        /// Policy files or directories declaring the channels.
        #[arg(long, short = 'p', env = "HEMOSTAT_POLICIES", value_delimiter = ',')]
        policies: Vec<PathBuf>,
        /// This node's name in the test message.
        #[arg(long, env = "HEMOSTAT_NODE_NAME", default_value = "hemostat")]
        node_name: String,
        /// Give up after this long.
        #[arg(long, default_value = "30s")]
        timeout: crate::policy::HumanDuration,
    },
}

fn channels(paths: &[PathBuf]) -> anyhow::Result<Vec<ChannelConfig>> {
    let mut out = Vec::new();
    if !paths.is_empty() {
        let report = crate::policy::load_paths(paths);
        for d in &report.diagnostics {
            eprintln!("{}:{}:{}: error: {}", d.file, d.line, d.column, d.message);
        }
        out.extend(
            report
                .policies
                .iter()
                .flat_map(|p| policy_channels(&p.policy)),
        );
    }
    let operator = operator_alerts(|k| std::env::var(k).ok())?;
    out.extend(operator.channel);
    Ok(out)
}

/// Runs an alert subcommand.
pub(crate) async fn run(args: AlertArgs) -> anyhow::Result<i32> {
    let AlertCommand::Test {
        channel,
        policies,
        node_name,
        timeout,
    } = args.command;
    let all = channels(&policies)?;
    let Some(config) = all.iter().find(|c| c.name == channel) else {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        bail!(
            "no channel {channel:?}; known: {} (give --policies, or set SLACK_WEBHOOK_URL for operator/slack)",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        );
    };
    let per_attempt = Duration::from_secs(10).min(timeout.get());
    let client = crate::adapters::http_client(per_attempt);
    let notifier = crate::adapters::notifier_for(&config.spec, &client, per_attempt)
        .with_context(|| format!("channel {channel}"))?;
    let metrics = AlertMetrics::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ch = Channel::spawn(
        Delivery::new(channel.clone(), Duration::ZERO, config.spec.per_second()),
        notifier,
        metrics.clone(),
        shutdown.clone(),
    );
    ch.push(Alert::test(&node_name));
    let deadline = tokio::time::Instant::now() + timeout.get();
    while metrics.get(&channel, "sent") + metrics.get(&channel, "failed") == 0 {
        if tokio::time::Instant::now() >= deadline {
            shutdown.cancel();
            eprintln!("{channel}: not delivered within {timeout}");
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    if metrics.get(&channel, "sent") == 1 {
        println!("{channel}: test notification delivered");
        Ok(0)
    } else {
        eprintln!("{channel}: test notification NOT delivered (see the log above)");
        Ok(1)
    }
}
