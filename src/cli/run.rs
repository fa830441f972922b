//! `hemostat run`: the operator itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::policy::source::files::FileSource;
use crate::policy::{HealthPolicy, HumanDuration, builtin, load_paths};

/// Arguments of `hemostat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy files or directories, watched and reloaded on change and on SIGHUP (the last good
    /// version of each document stays in force); without any, the built-in default policy
    /// governs containers labelled io.hemostat.enable=true.
    #[arg(long, short = 'p', env = "HEMOSTAT_POLICIES", value_delimiter = ',')]
    pub policies: Vec<PathBuf>,
    /// How often the --policies files are read again even without a file event (a safety net
    /// for filesystems where change notification does not work; at least 1s).
    #[arg(long, env = "HEMOSTAT_POLICIES_RESCAN_INTERVAL", default_value = "30s")]
    pub policies_rescan_interval: HumanDuration,
    /// Address of /healthz, /readyz, /metrics and /api/v1.
    #[arg(long, env = "HEMOSTAT_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax: info, hemostat=debug, ...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Where cooldowns, windows, breakers and the audit tail are persisted.
    #[arg(long, env = "HEMOSTAT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Full re-list period (the engine drops events under load): the list is compared with the
    /// last inspections and what changed (state, health, name, or an uptime that is not the
    /// inspected run's) is inspected at once; every container is inspected at least every 60
    /// resyncs.
    #[arg(long, env = "HEMOSTAT_RESYNC_INTERVAL", default_value = "30s")]
    pub resync_interval: HumanDuration,
    /// Resource sampling period (at least 1s).
    #[arg(long, env = "HEMOSTAT_SAMPLE_INTERVAL", default_value = "10s")]
    pub sample_interval: HumanDuration,
    /// This node's name in every payload (default: the host name).
    #[arg(long, env = "HEMOSTAT_NODE_NAME")]
    pub node_name: Option<String>,
    /// Decide and record, never touch a container (the original's RESPONDER_DRY_RUN).
    #[arg(long, env = "RESPONDER_DRY_RUN")]
    pub dry_run: bool,
    /// Reconciles running at once (they mostly wait on the engine: a repair holds one until
    /// it is verified).
    #[arg(long, env = "HEMOSTAT_MAX_CONCURRENT", default_value_t = 32)]
    pub max_concurrent: usize,
    /// Repairs running at once (an engine call and its verification, at least 1). A decision
    /// is announced and gated at once; only its repair waits for one of these places.
    #[arg(long, env = "HEMOSTAT_MAX_CONCURRENT_REPAIRS", default_value_t = crate::respond::responder::DEFAULT_MAX_REPAIRS)]
    pub max_concurrent_repairs: usize,
    /// Observe only containers with this label (key or key=value).
    #[arg(long, env = "HEMOSTAT_LABEL_FILTER")]
    pub label_filter: Option<String>,
    /// Where the host's cgroup files are visible (mount the host's /sys/fs/cgroup read-only
    /// there when HemoStat runs in a container).
    #[arg(long, env = "HEMOSTAT_CGROUP_ROOT", default_value = crate::observe::sampler::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// Where Redis is.
    #[command(flatten)]
    pub redis: crate::adapters::redis::config::RedisArgs,
    /// At most this many open HTTP connections; beyond it new ones are closed at once (idle
    /// ones close after 30 s, ones that send no request within 10 s sooner).
    #[arg(long, env = "HEMOSTAT_HTTP_MAX_CONNECTIONS", default_value_t = crate::http::limits::DEFAULT_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Envelopes kept while Redis is unreachable; beyond it the oldest are dropped and counted.
    #[arg(long, env = "HEMOSTAT_OUTBOX_CAPACITY", default_value_t = 10_000)]
    pub outbox_capacity: usize,
    /// Honour remediation requests other tools publish on hemostat:remediation_needed (the
    /// original's custom analyzer). Untrusted: validated, then subject to every policy limit and
    /// safety gate. Needs Redis.
    #[arg(long, env = "HEMOSTAT_ACCEPT_EXTERNAL_REQUESTS")]
    pub accept_external_requests: bool,
    /// A file holding the API token (at least 16 characters). Needed when --listen is not a
    /// loopback address; writes always need it. HEMOSTAT_API_TOKEN gives it directly.
    #[arg(long, env = "HEMOSTAT_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// The API token itself (prefer --api-token-file: the environment is visible to others).
    #[arg(
        long = "api-token",
        env = "HEMOSTAT_API_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub api_token: Option<String>,
    /// Serve the dashboard and API to anyone on a non-loopback --listen address, without a token.
    #[arg(long, env = "HEMOSTAT_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Serve /metrics without the token even when other reads need it (for a Prometheus that
    /// cannot send one).
    #[arg(long, env = "HEMOSTAT_METRICS_WITHOUT_TOKEN")]
    pub metrics_without_token: bool,
    /// The LLM analyzer's flags.
    #[command(flatten)]
    pub ai: super::ai::AiArgs,
    /// How long one delivery attempt of a notification may take (Slack, webhooks, Alertmanager).
    #[arg(long, env = "HEMOSTAT_ALERT_TIMEOUT", default_value = "10s")]
    pub alert_timeout: HumanDuration,
    /// Leave the hemostat:events:* lists to an external alert agent (the original's Alert
    /// agent, which fills them itself): HemoStat stops writing them, so no event is listed
    /// twice, and serves recent envelopes from hemostat:stream:events. Needs Redis.
    #[arg(long, env = "HEMOSTAT_EXTERNAL_ALERT_AGENT")]
    pub external_alert_agent: bool,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level.to_ascii_lowercase())
        .with_context(|| format!("invalid --log-level {level:?}"))?;
    // Colour codes only when a person reads stderr on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// `$XDG_STATE_HOME/hemostat`, else `~/.local/state/hemostat`, else `/var/lib/hemostat`.
pub(crate) fn default_state_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("hemostat");
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/hemostat"),
        _ => PathBuf::from("/var/lib/hemostat"),
    }
}

/// The built-in policy with the original system's environment overrides applied
/// (THRESHOLD_CPU_PERCENT, THRESHOLD_MEMORY_PERCENT, RESPONDER_COOLDOWN_SECONDS,
/// RESPONDER_MAX_RETRIES_PER_HOUR).
pub(crate) fn builtin_policy_from_env() -> anyhow::Result<HealthPolicy> {
    let mut policy = builtin::default_policy();
    let read = |name: &str| -> anyhow::Result<Option<f64>> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse::<f64>()
                .map(Some)
                .with_context(|| format!("{name}={v:?} is not a number")),
            Err(_) => Ok(None),
        }
    };
    if let (Some(cpu), Some(probe)) = (
        read("THRESHOLD_CPU_PERCENT")?,
        policy.spec.probes.cpu.as_mut(),
    ) {
        probe.above_percent = cpu;
    }
    if let (Some(mem), Some(probe)) = (
        read("THRESHOLD_MEMORY_PERCENT")?,
        policy.spec.probes.memory.as_mut(),
    ) {
        probe.above_percent = mem;
    }
    if let Some(secs) = read("RESPONDER_COOLDOWN_SECONDS")? {
        policy.spec.remediation.cooldown = HumanDuration::from_secs(secs.max(0.0) as u64);
    }
    if let Some(n) = read("RESPONDER_MAX_RETRIES_PER_HOUR")? {
        policy.spec.remediation.max_actions.count = n.max(0.0) as u32;
    }
    let problems = crate::policy::validate::validate(&policy);
    if let Some(v) = problems.first() {
        bail!(
            "the built-in policy is invalid after applying the environment: {}: {}",
            v.path,
            v.message
        );
    }
    Ok(policy)
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The policies to start with, and the file source that keeps them up to date (none for the
/// built-in policy: no `--policies`, or only directories without a policy file, as an empty
/// `deploy/policies/` mounted by compose).
fn load_policies(paths: Vec<PathBuf>) -> anyhow::Result<(Vec<HealthPolicy>, Option<FileSource>)> {
    if paths.is_empty() {
        info!(
            "no --policies given: the built-in default policy governs containers labelled io.hemostat.enable=true"
        );
        return Ok((vec![builtin_policy_from_env()?], None));
    }
    let report = load_paths(&paths);
    if report.files == 0 && report.diagnostics.is_empty() {
        info!(
            policies = %display_paths(&paths),
            "no policy file in --policies: the built-in default policy governs containers labelled io.hemostat.enable=true"
        );
        return Ok((vec![builtin_policy_from_env()?], None));
    }
    let source = FileSource::load(paths);
    let policies = source.policies();
    if policies.is_empty() {
        bail!(
            "no valid policy in {} (problems above); fix them, or check with `hemostat validate`",
            display_paths(source.paths()),
        );
    }
    Ok((policies, Some(source)))
}

/// Turns SIGHUP into a policy reload (without a handler, SIGHUP would end the process).
fn reload_on_sighup(files: bool) -> anyhow::Result<Arc<Notify>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let reload = Arc::new(Notify::new());
    let notify = reload.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if files {
                notify.notify_one();
            } else {
                info!("SIGHUP: no --policies to reload; the built-in policy stays in force");
            }
        }
    });
    Ok(reload)
}

async fn shutdown_signal(token: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            token.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    token.cancel();
}

/// The flag that put a Redis password on the command line (`--redis-password`, or a
/// `--redis-url` whose authority has `:password@`), if any.
fn password_on_command_line(argv: &[String]) -> Option<&'static str> {
    let url_has_password = |url: &str| {
        url.split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?']).next())
            .and_then(|authority| authority.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| !userinfo.is_empty())
    };
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--redis-password" || arg.starts_with("--redis-password=") {
            return Some("--redis-password");
        }
        let url = if arg == "--redis-url" {
            args.next().map(String::as_str)
        } else {
            arg.strip_prefix("--redis-url=")
        };
        if url.is_some_and(url_has_password) {
            return Some("--redis-url");
        }
    }
    None
}

/// The Redis settings with `--redis-url-file` / `--redis-password-file` read into the URL and
/// the password (shared by `run` and the policy commands).
pub(crate) fn redis_secrets_from_files(
    mut redis: crate::adapters::redis::config::RedisArgs,
) -> anyhow::Result<crate::adapters::redis::config::RedisArgs> {
    if let Some(path) = redis.redis_url_file.take() {
        redis.redis_url = Some(secret_from_file(&path, "--redis-url-file")?);
    }
    if let Some(path) = redis.redis_password_file.take() {
        redis.redis_password = Some(secret_from_file(&path, "--redis-password-file")?);
    }
    Ok(redis)
}

/// A secret read from a file (one line; surrounding whitespace and the newline dropped).
fn secret_from_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read the file", path.display()))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        bail!("{flag} {}: the file is empty", path.display());
    }
    Ok(secret)
}

/// Runs the operator until SIGTERM/SIGINT.
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<i32> {
    init_logging(args.log_format, &args.log_level)?;
    let config = app_config(args)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    crate::app::run(config, shutdown).await?;
    info!("stopped");
    Ok(0)
}

/// The composition root's settings from the flags: checked, with the secrets and the policies
/// read (errors in the order the flags are looked at).
fn app_config(args: RunArgs) -> anyhow::Result<crate::app::Config> {
    let access = crate::http::access::Access::resolve(
        args.listen,
        args.api_token_file.as_deref(),
        args.api_token,
        args.insecure_no_auth,
        args.metrics_without_token,
    )?;
    let listen = args.listen;
    if !listen.ip().is_loopback() && !access.has_token() {
        warn!(%listen, "--insecure-no-auth: the dashboard and API are open to anyone who reaches this address");
    }
    warn_of_password_on_command_line();
    let redis = redis_secrets_from_files(args.redis)?;
    check_intervals(
        args.sample_interval,
        args.max_concurrent_repairs,
        args.resync_interval,
        args.policies_rescan_interval,
    )?;
    let reload = reload_on_sighup(!args.policies.is_empty())?;
    let (policies, files) = load_policies(args.policies)?;
    let node = args
        .node_name
        .unwrap_or_else(crate::observe::host::node_name);
    let redis = redis_config(
        &redis,
        args.outbox_capacity,
        args.external_alert_agent,
        args.accept_external_requests,
    )?;
    let ai = super::ai::model(&args.ai, &policies)?;
    Ok(crate::app::Config {
        ai,
        policies,
        listen,
        state_dir: args.state_dir.unwrap_or_else(default_state_dir),
        node,
        resync: args.resync_interval.get(),
        sample_interval: args.sample_interval.get(),
        dry_run: args.dry_run,
        max_concurrent: args.max_concurrent,
        max_concurrent_repairs: args.max_concurrent_repairs,
        label_filter: args.label_filter,
        cgroup_root: args.cgroup_root,
        redis,
        accept_external_requests: args.accept_external_requests,
        http_max_connections: args.http_max_connections,
        access,
        alert_timeout: args.alert_timeout.get(),
        files,
        reload,
        policies_rescan: args.policies_rescan_interval.get(),
    })
}

/// Warns when a Redis password is on this process's command line.
fn warn_of_password_on_command_line() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(flag) = password_on_command_line(&argv) {
        warn!(
            flag,
            "a Redis password is on the command line, readable by every user in `ps`: put it in a file and use REDIS_PASSWORD_FILE or --redis-url-file"
        );
    }
}

/// Refuses periods under a second and a repair limit of zero.
fn check_intervals(
    sample_interval: HumanDuration,
    max_concurrent_repairs: usize,
    resync_interval: HumanDuration,
    policies_rescan_interval: HumanDuration,
) -> anyhow::Result<()> {
    if sample_interval.get() < Duration::from_secs(1) {
        bail!("--sample-interval {sample_interval} is too short: the minimum is 1s");
    }
    if max_concurrent_repairs == 0 {
        bail!("--max-concurrent-repairs 0 would never repair anything: give at least 1");
    }
    if resync_interval.get() < Duration::from_secs(1) {
        bail!("--resync-interval {resync_interval} is too short: the minimum is 1s");
    }
    if policies_rescan_interval.get() < Duration::from_secs(1) {
        bail!(
            "--policies-rescan-interval {policies_rescan_interval} is too short: the minimum is 1s"
        );
    }
    Ok(())
}

/// The Redis connection settings, if Redis is configured, with the outbox capacity and the
/// external alert agent; the flags that need Redis are refused without it.
fn redis_config(
    redis: &crate::adapters::redis::config::RedisArgs,
    outbox_capacity: usize,
    external_alert_agent: bool,
    accept_external_requests: bool,
) -> anyhow::Result<Option<crate::adapters::redis::config::RedisConfig>> {
    let redis = redis.config().context("invalid Redis settings")?.map(|c| {
        c.with_outbox_capacity(outbox_capacity)
            .with_external_alert_agent(external_alert_agent)
    });
    if external_alert_agent && redis.is_none() {
        bail!(
            "--external-alert-agent needs Redis: it leaves the hemostat:events:* lists in Redis to another agent (set --redis-url or REDIS_HOST)"
        );
    }
    if accept_external_requests && redis.is_none() {
        bail!(
            "--accept-external-requests needs Redis: external requests arrive on hemostat:remediation_needed (set --redis-url or REDIS_HOST)"
        );
    }
    Ok(redis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_on_the_command_line_is_noticed() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["hemostat", "run"], None),
            (
                &["hemostat", "run", "--redis-password", "pw"],
                Some("--redis-password"),
            ),
            (
                &["hemostat", "run", "--redis-password=pw"],
                Some("--redis-password"),
            ),
            (
                &["hemostat", "run", "--redis-url", "redis://:pw@h:6379/0"],
                Some("--redis-url"),
            ),
            (
                &["hemostat", "run", "--redis-url=redis://u:pw@h"],
                Some("--redis-url"),
            ),
            (
                &["hemostat", "run", "--redis-url", "redis://h:6379/0"],
                None,
            ),
            (
                &["hemostat", "run", "--redis-url", "redis://h/0?x=a@b"],
                None,
            ),
            (
                &["hemostat", "run", "--redis-url-file", "/run/secrets/url"],
                None,
            ),
        ];
        for (argv, want) in cases {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            assert_eq!(password_on_command_line(&argv), *want, "{argv:?}");
        }
    }

    #[test]
    fn secrets_are_read_from_files_trimmed_and_an_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            secret_from_file(&file, "--redis-password-file").unwrap(),
            "s3cret"
        );
        std::fs::write(&file, "\n").unwrap();
        let err = secret_from_file(&file, "--redis-password-file").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(secret_from_file(&dir.path().join("none"), "--redis-url-file").is_err());
    }
}
