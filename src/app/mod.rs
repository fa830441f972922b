//! The composition root: builds every part of the running operator once, from a validated
//! [`Config`], and runs its tasks until the shutdown signal.

pub(crate) mod alerts;
pub(crate) mod restarts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::adapters::redis::{RedisBus, RedisConfig};
use crate::analyze::llm::{AiAnalyzer, AiLimits, AiMetrics, LlmClient};
use crate::bus::EventSink;
use crate::bus::memory::MemorySink;
use crate::controller::context::Context;
use crate::controller::queue::WorkQueue;
use crate::controller::{ControllerConfig, driver};
use crate::engine::{BollardEngine, ContainerEngine, EngineError};
use crate::model::container::HostInfo;
use crate::observe::acting::Acting;
use crate::observe::sampler::CgroupReader;
use crate::policy::HealthPolicy;
use crate::policy::registry::PolicyRegistry;
use crate::policy::source::files::{FileSource, Publish, Reload, ReloadReporter, Trigger};
use crate::respond::Responder;
use crate::store::fallback::{DEFAULT_RESYNC_EVERY, FallbackStore};
use crate::store::memory::MemoryStore;
use crate::store::{StateStore, StoreError};

/// Everything `run` needs, validated by the command line.
#[derive(Debug)]
pub(crate) struct Config {
    /// The policies from files (or the built-in one).
    pub policies: Vec<HealthPolicy>,
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where the local safety state is persisted.
    pub state_dir: PathBuf,
    /// This node's name.
    pub node: String,
    /// Full re-list period.
    pub resync: Duration,
    /// Resource sampling period.
    pub sample_interval: Duration,
    /// Operator-wide dry run.
    pub dry_run: bool,
    /// Reconciles deciding at once.
    pub max_concurrent: usize,
    /// Repairs (engine call and verification) running at once.
    pub max_concurrent_repairs: usize,
    /// Only containers with this label are observed.
    pub label_filter: Option<String>,
    /// Where the host's cgroup files are.
    pub cgroup_root: PathBuf,
    /// Redis, when configured.
    pub redis: Option<RedisConfig>,
    /// Honour external remediation requests (needs Redis).
    pub accept_external_requests: bool,
    /// Open HTTP connections at most.
    pub http_max_connections: usize,
    /// Who may call what on the HTTP server.
    pub access: crate::http::access::Access,
    /// One delivery attempt of a notification at most.
    pub alert_timeout: Duration,
    /// The `--policies` files, kept up to date by their own task (none for the built-in policy).
    pub files: Option<FileSource>,
    /// Notified on SIGHUP: the files are read again.
    pub reload: Arc<Notify>,
    /// The files' safety-net rescan period.
    pub policies_rescan: Duration,
    /// The model for `analysis.mode: ai`, when one is configured.
    pub ai: Option<AiModel>,
}

/// A configured model and the analyzer's limits.
pub(crate) struct AiModel {
    /// The client (OpenAI-compatible or Anthropic).
    pub client: Arc<dyn LlmClient>,
    /// Concurrency, breaker and cache limits.
    pub limits: AiLimits,
}

impl std::fmt::Debug for AiModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiModel")
            .field("provider", &self.client.provider())
            .field("model", &self.client.model())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The analyzer's costs, counted in the operator's Prometheus metrics.
struct PromAi(Arc<crate::metrics::Metrics>);

impl AiMetrics for PromAi {
    fn ai_request(&self, provider: &str, result: &str, latency: Option<Duration>) {
        self.0.ai_request(provider, result, latency);
    }
    fn ai_tokens(&self, provider: &str, kind: &str, n: u64) {
        self.0.ai_tokens(provider, kind, n);
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// The engine does not answer.
    #[error(transparent)]
    Engine(EngineError),
    /// Another operator uses the state directory (or it cannot be locked).
    #[error(transparent)]
    StateDirLock(crate::store::dir_lock::DirLockError),
    /// The engine answered, but not its host's info.
    #[error("cannot read the Docker host's info")]
    HostInfo(#[source] EngineError),
    /// The state directory cannot be used.
    #[error("cannot use --state-dir {path}")]
    StateDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The Redis client cannot be set up.
    #[error("cannot set up the Redis client{what}")]
    Redis {
        /// For what (empty, ` for policies`, ` for external requests`).
        what: &'static str,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Alerting cannot be set up (its environment or the silence store).
    #[error("cannot set up alerting")]
    Alerts(#[source] alerts::AlertingError),
    /// The HTTP listener cannot be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where state and envelopes go, and the Redis parts to drive or drain.
struct Stores {
    store: Arc<dyn StateStore>,
    sink: Arc<dyn EventSink>,
    bus: Option<Arc<RedisBus>>,
    fallback: Option<Arc<FallbackStore>>,
}

/// Runs the operator until `shutdown`.
pub(crate) async fn run(mut config: Config, shutdown: CancellationToken) -> Result<(), AppError> {
    // Held until the operator stops; the kernel releases it however the process ends.
    let _state_dir = crate::store::dir_lock::DirLock::acquire(&config.state_dir)
        .map_err(AppError::StateDirLock)?;
    let (docker, host) = connect_engine(&config).await?;
    let stores = stores(&config).await?;
    // Envelopes about silenced containers say so (data.silenced); see alert::mark.
    let alert_state =
        alerts::state(config.redis.as_ref(), &config.state_dir).map_err(AppError::Alerts)?;
    let stores = Stores {
        sink: alerts::marking(stores.sink.clone(), alert_state.clone(), shutdown.clone()),
        ..stores
    };
    let registry = Arc::new(PolicyRegistry::new(config.policies.clone()));
    if let Some(files) = &config.files {
        registry.set_provenance(files.provenance());
    }
    let mut metrics = crate::metrics::Metrics::new();
    let alert_metrics = crate::alert::metrics::AlertMetrics::register(metrics.registry_mut());
    let (ctx, receiver, ready) = context(
        &config,
        docker,
        &host,
        &stores,
        registry.clone(),
        Arc::new(metrics),
    );
    // Subscribed before the loop starts, so no envelope is missed.
    let alerts = alerts::start(
        alert_state,
        registry.clone(),
        stores.sink.as_ref(),
        alert_metrics,
        config.alert_timeout,
        shutdown.clone(),
    )
    .map_err(AppError::Alerts)?;
    let server = serve_http(&config, &ctx, &stores, ready, alerts, &shutdown).await?;
    spawn_background_tasks(&mut config, &ctx, &stores, registry, &shutdown)?;
    let cgroups = config
        .cgroup_root
        .exists()
        .then(|| CgroupReader::new(config.cgroup_root.clone()));
    let restarts =
        restarts::spawn_keeper(ctx.observed.clone(), &config.state_dir, shutdown.clone());
    driver::run_controller(ctx, receiver, host, cgroups, shutdown.clone()).await;
    if let Err(e) = restarts.await {
        warn!(error = %e, "the restart counts' keeper failed");
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "HTTP server stopped with an error"),
        Err(e) => warn!(error = %e, "HTTP server task failed"),
    }
    drain(stores.bus).await;
    Ok(())
}

/// The Docker engine, and its host's info (logged).
async fn connect_engine(config: &Config) -> Result<(Arc<dyn ContainerEngine>, HostInfo), AppError> {
    let docker = BollardEngine::connect().await.map_err(AppError::Engine)?;
    let docker: Arc<dyn ContainerEngine> = Arc::new(docker);
    let host = docker.host_info().await.map_err(AppError::HostInfo)?;
    info!(node = %config.node, engine = %host.server_version, cpus = host.cpus, cgroup = %host.cgroup_version, "connected to the Docker engine");
    Ok((docker, host))
}

/// Binds the listener and serves the dashboard, the probes, `/metrics`, the API and the alert
/// routes until `shutdown` (the returned task).
async fn serve_http(
    config: &Config,
    ctx: &Arc<Context>,
    stores: &Stores,
    ready: Arc<AtomicBool>,
    alerts: crate::alert::api::AlertsApi,
    shutdown: &CancellationToken,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, AppError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Listen {
            address: config.listen,
            source,
        })?;
    if let Ok(address) = listener.local_addr() {
        info!(%address, token = config.access.has_token(), reads_need_token = config.access.reads_need_token(), "serving the dashboard, /healthz, /readyz, /metrics, /api/v1");
    }
    let events = Arc::new(crate::http::dashboard::events::EventLog::new());
    events.spawn(stores.sink.clone(), shutdown.clone());
    read_stores_at_scrape(&ctx.metrics, stores);
    let api = crate::http::ApiState {
        events,
        access: Arc::new(config.access.clone()),
        ready,
        observed: ctx.observed.clone(),
        sink: stores.sink.clone(),
        store: stores.store.clone(),
        policies: ctx.policies.clone(),
        metrics: ctx.metrics.clone(),
        node: config.node.clone(),
    };
    // The alert routes sit behind the same access guard and headers.
    let routes = crate::http::router_with(api, crate::alert::api::routes(alerts));
    Ok(tokio::spawn(crate::http::serve_router_limited(
        listener,
        routes,
        config.http_max_connections,
        shutdown.clone(),
    )))
}

/// The tasks beside the loop: the policy files, the Redis watchers, the outage store's resync
/// and the requeue on policy change.
fn spawn_background_tasks(
    config: &mut Config,
    ctx: &Arc<Context>,
    stores: &Stores,
    registry: Arc<PolicyRegistry>,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    let base = spawn_file_source(config, ctx, registry.clone(), shutdown);
    spawn_redis_tasks(config, ctx, registry, base, shutdown)?;
    if let Some(store) = &stores.fallback {
        store.spawn_resync(DEFAULT_RESYNC_EVERY, shutdown.clone());
    }
    tokio::spawn(crate::controller::watch::requeue_on_policy_change(
        ctx.clone(),
        shutdown.clone(),
    ));
    Ok(())
}

/// The local store (persisted in the state dir) and, with Redis, the bus in front of it.
async fn stores(config: &Config) -> Result<Stores, AppError> {
    let state_dir = &config.state_dir;
    let state_dir_error = |source| AppError::StateDir {
        path: state_dir.display().to_string(),
        source,
    };
    let local = MemoryStore::open(state_dir).map_err(state_dir_error)?;
    let Some(redis) = &config.redis else {
        info!(state_dir = %state_dir.display(), "no Redis configured: safety state persisted here, decisions kept in memory");
        return Ok(Stores {
            store: Arc::new(local),
            sink: Arc::new(MemorySink::default()),
            bus: None,
            fallback: None,
        });
    };
    let bus =
        Arc::new(RedisBus::new(redis).map_err(|source| AppError::Redis { what: "", source })?);
    match tokio::time::timeout(Duration::from_secs(5), bus.ping()).await {
        Ok(Ok(())) => {
            info!(redis = %redis, state_dir = %state_dir.display(), "shared state and decisions go to Redis; safety state also kept locally for outages")
        }
        _ => {
            warn!(redis = %redis, state_dir = %state_dir.display(), "Redis does not answer yet: envelopes wait in the outbox; safety state, locks and audit use this node's local view (persisted in the state dir) and are merged into Redis when it answers; fleet budgets are refused until then")
        }
    }
    let fallback = Arc::new(
        FallbackStore::new(bus.clone(), local)
            .with_journal(state_dir)
            .map_err(state_dir_error)?,
    );
    Ok(Stores {
        store: fallback.clone(),
        sink: bus.clone(),
        bus: Some(bus),
        fallback: Some(fallback),
    })
}

/// With Redis, `/metrics` reads the outbox and the outage store at every scrape.
fn read_stores_at_scrape(metrics: &crate::metrics::Metrics, stores: &Stores) {
    let Some(bus) = stores.bus.clone() else {
        return;
    };
    let fallback = stores.fallback.clone();
    metrics.set_store_reader(Box::new(move || crate::metrics::StoreReading {
        outbox_length: bus.outbox_len(),
        outbox_dropped: bus.dropped(),
        outage: fallback.as_ref().is_some_and(|f| f.in_outage()),
        dirty_keys: fallback.as_ref().map_or(0, |f| f.dirty_keys().len()),
    }));
}

/// The one context the loop, the watcher, the sampler and the API share.
fn context(
    config: &Config,
    docker: Arc<dyn ContainerEngine>,
    host: &HostInfo,
    stores: &Stores,
    registry: Arc<PolicyRegistry>,
    metrics: Arc<crate::metrics::Metrics>,
) -> (
    Arc<Context>,
    crate::controller::queue::WorkReceiver<String>,
    Arc<AtomicBool>,
) {
    let own = crate::observe::host::own_container_id();
    if let Some(id) = &own {
        info!(container = %&id[..12], "running in a container: it is never acted on");
    }
    let node = config.node.clone();
    let acting = Arc::new(Acting::default());
    let (queue, receiver) = WorkQueue::new();
    let ready = Arc::new(AtomicBool::new(false));
    let responder = Responder {
        docker: docker.clone(),
        store: stores.store.clone(),
        sink: stores.sink.clone(),
        acting: acting.clone(),
        node: node.clone(),
        engine_id: host.engine_id.clone(),
        owner: format!("{node}/{}", uuid::Uuid::new_v4()),
        own_container_id: own,
        global_dry_run: config.dry_run,
        metrics: metrics.clone(),
        action_started: Default::default(),
        repairs: tokio::sync::Semaphore::new(config.max_concurrent_repairs),
    };
    let ctx = Arc::new(Context {
        docker,
        store: stores.store.clone(),
        sink: stores.sink.clone(),
        policies: registry,
        observed: Arc::new(crate::observe::store::ObservedStore::resuming(
            restarts::load(&config.state_dir),
        )),
        responder,
        acting,
        queue,
        ready: ready.clone(),
        config: ControllerConfig {
            node,
            resync: config.resync,
            sample_interval: config.sample_interval,
            max_concurrent: config.max_concurrent,
            label_filter: config.label_filter.clone(),
        },
        handled: Default::default(),
        metrics: metrics.clone(),
        own_decisions: Default::default(),
        ai: config.ai.as_ref().map(|m| {
            Arc::new(AiAnalyzer::new(
                m.client.clone(),
                Arc::new(PromAi(metrics)),
                m.limits.clone(),
            ))
        }),
    });
    (ctx, receiver, ready)
}

/// The `--policies` files' task: it feeds the registry, or with Redis the base set the policy
/// watcher composes with the applied policies (returned).
fn spawn_file_source(
    config: &mut Config,
    ctx: &Arc<Context>,
    registry: Arc<PolicyRegistry>,
    shutdown: &CancellationToken,
) -> watch::Receiver<Vec<HealthPolicy>> {
    let (base, base_rx) = watch::channel(config.policies.clone());
    let Some(files) = config.files.take() else {
        return base_rx;
    };
    let publish: Publish = if config.redis.is_some() {
        Box::new(move |set| {
            let _ = base.send(set);
        })
    } else {
        let registry = registry.clone();
        Box::new(move |set| registry.replace(set))
    };
    let reporter: Arc<dyn ReloadReporter> = ctx.metrics.clone();
    tokio::spawn(files.run(
        publish,
        registry,
        reporter,
        config.reload.clone(),
        Reload {
            rescan: config.policies_rescan,
            watch: true,
        },
        shutdown.clone(),
    ));
    base_rx
}

/// The file source reports into the operator's metrics.
impl ReloadReporter for crate::metrics::Metrics {
    fn scanned(&self, trigger: Trigger) {
        self.policy_reload(trigger.as_str());
    }

    fn problems_found(&self, count: usize) {
        self.policy_problems(count);
    }

    fn kept_last_good(&self, count: usize) {
        self.set_policies_last_good(count);
    }
}

/// With Redis: the policy watcher, and the external request subscriber when accepted.
fn spawn_redis_tasks(
    config: &Config,
    ctx: &Arc<Context>,
    registry: Arc<PolicyRegistry>,
    base: watch::Receiver<Vec<HealthPolicy>>,
    shutdown: &CancellationToken,
) -> Result<(), AppError> {
    let Some(redis) = &config.redis else {
        return Ok(());
    };
    let client = |_what: &'static str| crate::adapters::redis::conn::Target::new(redis);
    tokio::spawn(crate::adapters::redis::policies::watch_policies_with(
        client(" for policies"),
        registry,
        base,
        shutdown.clone(),
    ));
    if config.accept_external_requests {
        tokio::spawn(crate::adapters::redis::requests::run_subscriber(
            client(" for external requests"),
            crate::controller::external::handle::Intake::new(ctx.clone()),
            shutdown.clone(),
        ));
    }
    Ok(())
}

/// Gives the outbox a last chance to reach Redis.
async fn drain(bus: Option<Arc<RedisBus>>) {
    if let Some(bus) = bus
        && !bus.flush(Duration::from_secs(5)).await
    {
        warn!(
            left = bus.outbox_len(),
            "Redis did not take every envelope before shutdown"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reload_trigger_is_a_pre_created_metric_label() {
        let names: Vec<&str> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, crate::metrics::POLICY_RELOAD_TRIGGERS);
    }
}
