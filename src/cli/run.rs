//! `hemostat run`: the operator itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bus::fallback::{DEFAULT_RESYNC_EVERY, FallbackStore};
use crate::bus::memory::{MemorySink, MemoryStore};
use crate::bus::{EventSink, StateStore};
use crate::controller::context::Context;
use crate::controller::queue::WorkQueue;
use crate::controller::{ControllerConfig, driver};
use crate::docker::BollardDocker;
use crate::docker::DockerApi;
use crate::observe::sampler::CgroupReader;
use crate::policy::registry::PolicyRegistry;
use crate::policy::{HealthPolicy, HumanDuration, builtin, load_paths};
use crate::respond::Responder;
use crate::respond::acting::Acting;

/// Arguments of `hemostat run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy files or directories; without any, the built-in default policy governs
    /// containers labelled io.hemostat.enable=true.
    #[arg(long, short = 'p', env = "HEMOSTAT_POLICIES", value_delimiter = ',')]
    pub policies: Vec<PathBuf>,
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
    /// Full re-list period (the engine drops events under load).
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
    /// Observe only containers with this label (key or key=value).
    #[arg(long, env = "HEMOSTAT_LABEL_FILTER")]
    pub label_filter: Option<String>,
    /// Where the host's cgroup files are visible (mount the host's /sys/fs/cgroup read-only
    /// there when HemoStat runs in a container).
    #[arg(long, env = "HEMOSTAT_CGROUP_ROOT", default_value = crate::observe::sampler::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
    /// Redis URL (redis://[user:password@]host:port[/db], rediss:// for TLS). Without any Redis
    /// setting, the embedded in-memory store is used.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Redis host, when no URL is given (the original's REDIS_HOST).
    #[arg(long, env = "REDIS_HOST")]
    pub redis_host: Option<String>,
    /// Redis port (default 6379).
    #[arg(long, env = "REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// Redis password (never logged). On the command line it is readable by every user in
    /// `ps`: prefer REDIS_PASSWORD_FILE or --redis-url-file.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// A file holding the Redis URL (with its password), instead of --redis-url.
    #[arg(long, env = "REDIS_URL_FILE", conflicts_with = "redis_url")]
    pub redis_url_file: Option<PathBuf>,
    /// A file holding the Redis password, instead of --redis-password.
    #[arg(long, env = "REDIS_PASSWORD_FILE", conflicts_with = "redis_password")]
    pub redis_password_file: Option<PathBuf>,
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn default_state_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(xdg).join("hemostat");
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".local/state/hemostat"),
        _ => PathBuf::from("/var/lib/hemostat"),
    }
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The built-in policy with the original system's environment overrides applied
/// (THRESHOLD_CPU_PERCENT, THRESHOLD_MEMORY_PERCENT, RESPONDER_COOLDOWN_SECONDS,
/// RESPONDER_MAX_RETRIES_PER_HOUR).
pub fn builtin_policy_from_env() -> anyhow::Result<HealthPolicy> {
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

fn load_policies(paths: &[PathBuf]) -> anyhow::Result<Vec<HealthPolicy>> {
    if paths.is_empty() {
        info!(
            "no --policies given: the built-in default policy governs containers labelled io.hemostat.enable=true"
        );
        return Ok(vec![builtin_policy_from_env()?]);
    }
    let report = load_paths(paths);
    if report.files == 0 && report.diagnostics.is_empty() {
        info!(
            policies = %display_paths(paths),
            "no policy file in --policies: the built-in default policy governs containers labelled io.hemostat.enable=true"
        );
        return Ok(vec![builtin_policy_from_env()?]);
    }
    for d in &report.diagnostics {
        error!(file = %d.file, line = d.line, column = d.column, "{}", d.message);
    }
    if report.policies.is_empty() {
        bail!(
            "no valid policy in {} ({} problem(s) above); fix them, or check with `hemostat validate`",
            display_paths(paths),
            report.diagnostics.len()
        );
    }
    if !report.diagnostics.is_empty() {
        warn!(
            valid = report.policies.len(),
            invalid = report.diagnostics.len(),
            "running with the valid policies only"
        );
    }
    for p in &report.policies {
        info!(policy = %p.policy.metadata.name, source = %p.source, "policy loaded");
    }
    Ok(report.policies.into_iter().map(|p| p.policy).collect())
}

pub use crate::observe::host::own_container_id;

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

/// Runs the operator until SIGTERM/SIGINT.
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

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let RunArgs {
        policies,
        listen,
        log_format,
        log_level,
        state_dir,
        resync_interval,
        sample_interval,
        node_name: node,
        dry_run,
        max_concurrent,
        label_filter,
        cgroup_root,
        redis_url,
        redis_host,
        redis_port,
        redis_password,
        redis_url_file,
        redis_password_file,
        http_max_connections,
        outbox_capacity,
        accept_external_requests,
    } = args;
    init_logging(log_format, &log_level)?;
    let argv: Vec<String> = std::env::args().collect();
    if let Some(flag) = password_on_command_line(&argv) {
        warn!(
            flag,
            "a Redis password is on the command line, readable by every user in `ps`: put it in a file and use REDIS_PASSWORD_FILE or --redis-url-file"
        );
    }
    let redis_url = match redis_url_file {
        Some(path) => Some(secret_from_file(&path, "--redis-url-file")?),
        None => redis_url,
    };
    let redis_password = match redis_password_file {
        Some(path) => Some(secret_from_file(&path, "--redis-password-file")?),
        None => redis_password,
    };
    if sample_interval.get() < Duration::from_secs(1) {
        bail!("--sample-interval {sample_interval} is too short: the minimum is 1s");
    }
    if resync_interval.get() < Duration::from_secs(1) {
        bail!("--resync-interval {resync_interval} is too short: the minimum is 1s");
    }
    let policies = load_policies(&policies)?;
    let node = node.unwrap_or_else(node_name);
    let redis = crate::bus::redis::RedisConfig::from_parts(
        redis_url,
        redis_host,
        redis_port,
        redis_password,
    )
    .context("invalid Redis settings")?
    .map(|c| c.with_outbox_capacity(outbox_capacity));
    if accept_external_requests && redis.is_none() {
        bail!(
            "--accept-external-requests needs Redis: external requests arrive on hemostat:remediation_needed (set --redis-url or REDIS_HOST)"
        );
    }

    let docker = BollardDocker::connect()
        .await
        .context("cannot reach the Docker engine")?;
    let docker: Arc<dyn DockerApi> = Arc::new(docker);
    let host = docker
        .host_info()
        .await
        .context("cannot read the Docker host's info")?;
    info!(node = %node, engine = %host.server_version, cpus = host.cpus, cgroup = %host.cgroup_version, "connected to the Docker engine");

    let mut redis_bus = None;
    let mut fallback = None;
    let state_dir = state_dir.unwrap_or_else(default_state_dir);
    let local = MemoryStore::open(&state_dir)
        .with_context(|| format!("cannot use --state-dir {}", state_dir.display()))?;
    let (store, sink): (Arc<dyn StateStore>, Arc<dyn EventSink>) = match &redis {
        Some(config) => {
            let bus = Arc::new(
                crate::bus::redis::RedisBus::new(config)
                    .context("cannot set up the Redis client")?,
            );
            match tokio::time::timeout(Duration::from_secs(5), bus.ping()).await {
                Ok(Ok(())) => {
                    info!(redis = %config, state_dir = %state_dir.display(), "shared state and decisions go to Redis; safety state also kept locally for outages")
                }
                _ => {
                    warn!(redis = %config, state_dir = %state_dir.display(), "Redis does not answer yet: envelopes wait in the outbox; safety state, locks and audit use this node's local view (persisted in the state dir) and are merged into Redis when it answers; fleet budgets are refused until then")
                }
            }
            redis_bus = Some(bus.clone());
            let store = Arc::new(
                FallbackStore::new(bus.clone(), local)
                    .with_journal(&state_dir)
                    .with_context(|| format!("cannot use --state-dir {}", state_dir.display()))?,
            );
            fallback = Some(store.clone());
            (store, bus)
        }
        None => {
            info!(state_dir = %state_dir.display(), "no Redis configured: safety state persisted here, decisions kept in memory");
            (Arc::new(local), Arc::new(MemorySink::default()))
        }
    };

    let registry = Arc::new(PolicyRegistry::new(policies.clone()));
    let own = own_container_id();
    if let Some(id) = &own {
        info!(container = %&id[..12], "running in a container: it is never acted on");
    }
    let cgroups = cgroup_root.exists().then(|| CgroupReader::new(cgroup_root));
    let acting = Arc::new(Acting::default());
    let (queue, receiver) = WorkQueue::new();
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let ctx = Arc::new(Context {
        docker: docker.clone(),
        store: store.clone(),
        sink: sink.clone(),
        policies: registry.clone(),
        observed: Default::default(),
        responder: Responder {
            docker: docker.clone(),
            store: store.clone(),
            sink: sink.clone(),
            acting: acting.clone(),
            node: node.clone(),
            engine_id: host.engine_id.clone(),
            owner: format!("{node}/{}", uuid::Uuid::new_v4()),
            own_container_id: own,
            global_dry_run: dry_run,
            metrics: metrics.clone(),
            action_started: Default::default(),
        },
        acting,
        queue,
        ready: ready.clone(),
        config: ControllerConfig {
            node: node.clone(),
            resync: resync_interval.get(),
            sample_interval: sample_interval.get(),
            max_concurrent,
            label_filter,
        },
        handled: Default::default(),
        metrics: metrics.clone(),
        own_decisions: Default::default(),
    });

    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(address = %listener.local_addr()?, "serving /healthz, /readyz, /metrics, /api/v1");
    let api = crate::http::ApiState {
        ready,
        observed: ctx.observed.clone(),
        sink,
        store,
        policies: ctx.policies.clone(),
        metrics,
        node,
    };
    let server = tokio::spawn(crate::http::serve_limited(
        listener,
        api,
        http_max_connections,
        shutdown.clone(),
    ));
    if let Some(config) = &redis {
        let client = redis::Client::open(config.connection_info().clone())
            .context("cannot set up the Redis client for policies")?;
        tokio::spawn(crate::policy::remote::watch_policies(
            client,
            registry.clone(),
            policies,
            shutdown.clone(),
        ));
        if accept_external_requests {
            let client = redis::Client::open(config.connection_info().clone())
                .context("cannot set up the Redis client for external requests")?;
            tokio::spawn(crate::controller::external::run_subscriber(
                client,
                ctx.clone(),
                shutdown.clone(),
            ));
        }
    }
    if let Some(store) = &fallback {
        store.spawn_resync(DEFAULT_RESYNC_EVERY, shutdown.clone());
    }
    tokio::spawn(crate::controller::watch::requeue_on_policy_change(
        ctx.clone(),
        shutdown.clone(),
    ));
    driver::run_controller(ctx, receiver, host, cgroups, shutdown.clone()).await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "HTTP server stopped with an error"),
        Err(e) => warn!(error = %e, "HTTP server task failed"),
    }
    if let Some(bus) = redis_bus
        && !bus.flush(Duration::from_secs(5)).await
    {
        warn!(
            left = bus.outbox_len(),
            "Redis did not take every envelope before shutdown"
        );
    }
    info!("stopped");
    Ok(0)
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
