//! The one way HemoStat connects to Redis, whatever its shape (one server, a Cluster, a
//! Sentinel-managed master): a lazy connection, queries retried once after a lost connection,
//! and subscriptions remade with the one [`Backoff`].

use std::time::Duration;

use futures::StreamExt;
use std::sync::Arc;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionInfo, FromRedisValue, Pipeline, RedisError, RedisFuture,
    RedisResult, TlsCertificates, Value,
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::{RedisConfig, Topology};
use crate::store::{Result, StoreError};
use crate::util::backoff::Backoff;

/// A Redis error as a [`StoreError`]: `Unavailable` when Redis could not be reached (the
/// outage path applies), `Refused` when it answered with an error.
pub(crate) fn redis_error(op: &'static str, source: RedisError) -> StoreError {
    if is_connection_error(&source) {
        StoreError::Unavailable {
            op,
            source: Box::new(source),
        }
    } else {
        StoreError::Refused {
            op,
            source: Box::new(source),
        }
    }
}

/// A `WRONGTYPE` reply: a key holds another type than HemoStat writes there.
pub(crate) fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE")
}

/// Connection errors (as opposed to Redis answering with an error): worth one more try.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || is_transient_server_error(e)
}

/// Server errors that mean "not now, ask again" (a failover in progress, a replica that was
/// the master, a cluster re-sharding): treated as an outage, never as a refusal.
pub(crate) fn is_transient_server_error(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("READONLY" | "MASTERDOWN" | "LOADING" | "CLUSTERDOWN" | "TRYAGAIN" | "EXECABORT")
    )
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

fn certificates(ca: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(ca.to_vec()),
    }
}

/// A client for one server, trusting the configured CA.
fn single_client(info: &ConnectionInfo, ca: Option<&[u8]>) -> RedisResult<redis::Client> {
    match ca {
        Some(ca) => redis::Client::build_with_tls(info.clone(), certificates(ca)),
        None => redis::Client::open(info.clone()),
    }
}

/// A connection to Redis of any topology; clones share it. Commands go through
/// [`ConnectionLike`], so every `redis` helper (pipelines, scripts, `AsyncCommands`) works.
/// It never waits for Redis: the connection is made on first use and remade after failures
/// (a Sentinel master is asked for again after a failover; a cluster follows its slots).
#[derive(Clone)]
pub struct Conn {
    kind: ConnKind,
}

#[derive(Clone)]
enum ConnKind {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            ConnKind::Single(_) => "Conn(single)",
            ConnKind::Cluster(_) => "Conn(cluster)",
            ConnKind::Sentinel(_) => "Conn(sentinel)",
        })
    }
}

impl Conn {
    /// The name of HemoStat key `key` on this Redis: with the `{hemostat}` hash tag on a
    /// cluster (see [`super::keys::tagged`]), unchanged otherwise.
    pub(crate) fn key(&self, key: &str) -> String {
        super::keys::tagged(self.cluster(), key)
    }

    /// Adds a `PUBLISH` to `pipe`: as is on one server; on a cluster from a script without
    /// keys ([`super::keys::PUBLISH_LUA`]), so the transaction stays in its keys' slot.
    pub(crate) fn publish_in(&self, pipe: &mut Pipeline, channel: &str, message: &str) {
        if self.cluster() {
            pipe.cmd("EVAL")
                .arg(super::keys::PUBLISH_LUA)
                .arg(0)
                .arg(channel)
                .arg(message)
                .ignore();
        } else {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn cluster(&self) -> bool {
        matches!(self.kind, ConnKind::Cluster(_))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            ConnKind::Single(c) => c.req_packed_command(cmd),
            ConnKind::Cluster(c) => c.req_packed_command(cmd),
            ConnKind::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move {
                    s.run(|mut c| async move { c.req_packed_command(cmd).await })
                        .await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            ConnKind::Single(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            ConnKind::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move {
                    s.run(
                        |mut c| async move { c.req_packed_commands(pipeline, offset, count).await },
                    )
                    .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            ConnKind::Single(c) => c.get_db(),
            ConnKind::Cluster(c) => c.get_db(),
            ConnKind::Sentinel(s) => s.db,
        }
    }
}

/// The master a group of Sentinels names: asked for on first use, and again after a
/// connection error or a `READONLY` reply (the old master became a replica).
struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
    db: i64,
}

impl SentinelConn {
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut sentinel = self.sentinel.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let asked = tokio::time::timeout(
            CONNECT_TIMEOUT * 3,
            sentinel.get_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the Sentinels did not name a reachable master in time",
            ))
        })??;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(asked.clone());
        Ok(asked)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn forget(&self) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Runs `op` on the master; after a connection error or a failover reply, asks the
    /// Sentinels again and runs it once more.
    async fn run<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let first = match self.connection().await {
            Ok(c) => op(c).await,
            Err(e) => Err(e),
        };
        match first {
            Err(e) if is_connection_error(&e) || is_transient_server_error(&e) => {
                self.forget();
                let again = op(self.connection().await?).await;
                if again
                    .as_ref()
                    .is_err_and(|e| is_connection_error(e) || is_transient_server_error(e))
                {
                    self.forget();
                }
                again
            }
            r => r,
        }
    }
}

/// A connection for `config` that does not wait for Redis: the connection is made on first
/// use and remade after failures.
pub(crate) fn manager(config: &RedisConfig) -> Result<Conn> {
    connect(config, 1, RESPONSE_TIMEOUT).map_err(|source| redis_error("connect", source))
}

/// Like [`manager`], with `retries` of the single-server manager and a response timeout.
pub(crate) fn connect(
    config: &RedisConfig,
    retries: usize,
    response: Duration,
) -> RedisResult<Conn> {
    let ca = config.ca_pem();
    let kind = match config.topology() {
        Topology::Single(info) => {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response))
                .set_number_of_retries(retries)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(1));
            ConnKind::Single(ConnectionManager::new_lazy_with_config(
                single_client(info, ca)?,
                manager_config,
            )?)
        }
        Topology::Cluster(seeds) => {
            let mut builder = ClusterClientBuilder::new(seeds.clone())
                .retries(6)
                .min_retry_wait(50)
                .max_retry_wait(1000);
            if let Some(ca) = ca {
                builder = builder.certs(certificates(ca));
            }
            let cluster_config = ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(response);
            ConnKind::Cluster(
                builder
                    .build()?
                    .get_pending_async_connection_with_config(cluster_config),
            )
        }
        Topology::Sentinel { .. } => ConnKind::Sentinel(Arc::new(SentinelConn {
            db: config_db(config),
            sentinel: tokio::sync::Mutex::new(sentinel_client(config)?),
            current: std::sync::Mutex::new(None),
        })),
    };
    Ok(Conn { kind })
}

fn config_db(config: &RedisConfig) -> i64 {
    match config.topology() {
        Topology::Single(info) => info.redis_settings().db(),
        Topology::Cluster(_) => 0,
        Topology::Sentinel { node, .. } => node.redis_settings().db(),
    }
}

fn sentinel_client(config: &RedisConfig) -> RedisResult<SentinelClient> {
    let Topology::Sentinel {
        sentinels,
        master,
        node,
    } = config.topology()
    else {
        unreachable!("sentinel_client on a topology without Sentinels");
    };
    let settings = node.redis_settings();
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|s| s.addr().clone()),
        master,
        SentinelServerType::Master,
    )?
    .set_client_to_redis_db(settings.db());
    if let Some(user) = settings.username() {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = settings.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if config.tls() {
        builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
        if let Some(ca) = config.ca_pem() {
            builder = builder
                .set_client_to_redis_certificates(certificates(ca))
                .set_client_to_sentinel_certificates(certificates(ca));
        }
    }
    builder.build()
}

/// Where subscriptions go: pub/sub reaches every node of a cluster and every replica of a
/// master, so any reachable node will do.
pub struct Target {
    config: RedisConfig,
    /// The Sentinel client, made on first use.
    sentinel: tokio::sync::Mutex<Option<SentinelClient>>,
    next_seed: std::sync::atomic::AtomicUsize,
}

impl From<redis::Client> for Target {
    fn from(client: redis::Client) -> Self {
        Self::new(&RedisConfig::from_info(
            client.get_connection_info().clone(),
        ))
    }
}

impl From<&RedisConfig> for Target {
    fn from(config: &RedisConfig) -> Self {
        Self::new(config)
    }
}

impl Target {
    /// The subscription side of `config`.
    pub(crate) fn new(config: &RedisConfig) -> Self {
        Self {
            config: config.clone(),
            sentinel: tokio::sync::Mutex::new(None),
            next_seed: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// A client for a node to subscribe on: the server; the next seed of a cluster (one per
    /// attempt, so a dead seed is passed over); the master the Sentinels name now.
    pub(crate) async fn pubsub_client(&self) -> RedisResult<redis::Client> {
        let ca = self.config.ca_pem();
        match self.config.topology() {
            Topology::Single(info) => single_client(info, ca),
            Topology::Cluster(seeds) => {
                let i = self
                    .next_seed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                single_client(&seeds[i % seeds.len()], ca)
            }
            Topology::Sentinel { .. } => {
                let mut sentinel = self.sentinel.lock().await;
                if sentinel.is_none() {
                    *sentinel = Some(sentinel_client(&self.config)?);
                }
                let Some(sentinel) = sentinel.as_mut() else {
                    unreachable!("set just above");
                };
                tokio::time::timeout(CONNECT_TIMEOUT * 3, sentinel.async_get_client())
                    .await
                    .map_err(|_| {
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the Sentinels did not name a master in time",
                        ))
                    })?
            }
        }
    }
}

/// Runs a command, once more after a connection error (the first command after a Redis
/// restart fails while the manager reconnects).
pub(crate) async fn query<T: FromRedisValue>(
    conn: &Conn,
    op: &'static str,
    cmd: &Cmd,
) -> Result<T> {
    let mut conn = conn.clone();
    match cmd.query_async(&mut conn).await {
        Err(e) if is_connection_error(&e) => cmd.query_async(&mut conn).await,
        r => r,
    }
    .map_err(|source| redis_error(op, source))
}

/// [`query`] for a pipeline.
pub(crate) async fn query_pipe<T: FromRedisValue>(
    conn: &Conn,
    op: &'static str,
    pipe: &Pipeline,
) -> Result<T> {
    let mut conn = conn.clone();
    match pipe.query_async(&mut conn).await {
        Err(e) if is_connection_error(&e) => pipe.query_async(&mut conn).await,
        r => r,
    }
    .map_err(|source| redis_error(op, source))
}

/// Subscribes to `channel` (and opens what `extra` opens) until it works, backing off between
/// attempts with the one [`Backoff`] and logging `what` at warn; `None` on `shutdown`.
pub(crate) async fn subscribe_with_backoff<T, F, Fut>(
    target: &Target,
    channel: &str,
    what: &str,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
    extra: F,
) -> Option<(futures::stream::BoxStream<'static, redis::Msg>, T)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, RedisError>>,
{
    loop {
        let connected = async {
            let client = target.pubsub_client().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            let more = extra().await?;
            Ok::<_, RedisError>((pubsub.into_on_message().boxed(), more))
        };
        let result = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = connected => r,
        };
        match result {
            Ok(ok) => {
                backoff.reset();
                return Some(ok);
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff.peek(), "{what}");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
    }
}
