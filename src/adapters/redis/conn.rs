//! The one way HemoStat connects to Redis: a lazy connection manager, queries retried once
//! after a lost connection, and subscriptions remade with the one [`Backoff`].

use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::config::RedisConfig;
use crate::store::{Result, StoreError};
use crate::util::backoff::Backoff;

/// A Redis error as a [`StoreError`]: `Unavailable` when Redis could not be reached (the
/// outage path applies), `Refused` when it answered with an error.
pub fn redis_error(op: &'static str, source: RedisError) -> StoreError {
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
pub fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE")
}

/// Connection errors (as opposed to Redis answering with an error): worth one more try.
pub fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// A client for `config`.
pub fn client(config: &RedisConfig) -> Result<redis::Client> {
    redis::Client::open(config.connection_info().clone()).map_err(|e| redis_error("client", e))
}

/// A connection manager that does not wait for Redis: the connection is made on first use
/// and remade after failures.
pub fn manager(config: &RedisConfig) -> Result<ConnectionManager> {
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client(config)?, manager_config)
        .map_err(|source| redis_error("connect", source))
}

/// Runs a command, once more after a connection error (the first command after a Redis
/// restart fails while the manager reconnects).
pub async fn query<T: FromRedisValue>(
    conn: &ConnectionManager,
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
pub async fn query_pipe<T: FromRedisValue>(
    conn: &ConnectionManager,
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
pub async fn subscribe_with_backoff<T, F, Fut>(
    client: &redis::Client,
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
