//! The Redis bus: the original's wire protocol plus a durable stream, and the shared state store.
//!
//! # Delivery
//!
//! [`EventSink::publish`] never waits for Redis: envelopes go to a bounded in-memory outbox
//! drained in order by a background task, in batches, each batch one `MULTI`/`EXEC` so the
//! publish, stream entry and list entries of an envelope go together. While Redis is down the
//! task retries with backoff and keeps the order. When the outbox is full the oldest waiting
//! envelope is dropped, counted ([`RedisBus::dropped`]) and logged. Delivery is at least once: a
//! batch whose `EXEC` reached Redis but whose reply was lost with the connection is sent again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Cmd, FromRedisValue, Pipeline};

use super::conn::{Conn, is_connection_error, is_wrong_type};
use crate::util::backoff::Backoff;
use tokio::sync::Notify;

use super::config::RedisConfig;

pub use super::keys::*;
use crate::bus::EventSink;
use crate::model::wire::{ContainerStateKey, Envelope, EventType};
use crate::store::Result;

/// How many envelopes are kept locally for [`EventSink::recent`] when Redis is down.
pub(crate) const LOCAL_RECENT: usize = 1000;

/// Stream entries read per `XREVRANGE` when serving recent envelopes from the stream.
const STREAM_PAGE: usize = 500;
/// Envelopes sent per `MULTI`/`EXEC`.
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Consecutive failures of a batch that are not connection errors (Redis answered with an
/// error, e.g. a key of the wrong type) before the batch is dropped and counted.
const MAX_SERVER_ERRORS: u32 = 20;

/// An envelope waiting for Redis, already serialised.
#[derive(Debug)]
struct Pending {
    json: String,
    event_type: String,
    /// Whether to append it to the `hemostat:events:*` lists (not when an external alert
    /// agent owns them).
    lists: bool,
    /// Keys to bump for a finished (success/failed) remediation, and its `last_action`.
    remediation: Option<(Vec<String>, String)>,
}

impl Pending {
    fn new(envelope: &Envelope, lists: bool) -> Self {
        let json = serde_json::to_string(envelope).expect("an envelope is always serialisable");
        let remediation = (envelope.kind() == Some(EventType::RemediationComplete))
            .then(|| {
                let status = envelope.result_status()?;
                if status != "success" && status != "failed" {
                    return None;
                }
                let container = envelope
                    .container()
                    .or_else(|| envelope.result_container())?;
                let mut keys = vec![remediation_key(container)];
                if let Some(node) = envelope.node() {
                    keys.push(node_remediation_key(node, container));
                }
                // The original's `last_action`: whole seconds, with the offset.
                let last_action = envelope.time().map_or_else(
                    || envelope.timestamp.clone(),
                    crate::model::wire::wire_timestamp_secs,
                );
                Some((keys, last_action))
            })
            .flatten();
        Self {
            json,
            event_type: envelope.event_type.clone(),
            lists,
            remediation,
        }
    }

    fn add_to(&self, pipe: &mut Pipeline, conn: &Conn) {
        let ttl = EVENTS_TTL_SECS;
        conn.publish_in(pipe, &format!("hemostat:{}", self.event_type), &self.json);
        pipe.cmd("XADD")
            .arg(conn.key(STREAM_KEY))
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("envelope")
            .arg(&self.json)
            .arg("type")
            .arg(&self.event_type)
            .ignore();
        let lists = if self.lists {
            vec![
                conn.key(&format!("hemostat:events:{}", self.event_type)),
                conn.key(&events_key(None)),
            ]
        } else {
            Vec::new()
        };
        for list in lists {
            pipe.cmd("LPUSH").arg(&list).arg(&self.json).ignore();
            pipe.cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(EVENTS_CAP - 1)
                .ignore();
            pipe.cmd("EXPIRE").arg(&list).arg(ttl).ignore();
        }
        if let Some((keys, last_action)) = &self.remediation {
            let keys: Vec<String> = keys.iter().map(|k| conn.key(k)).collect();
            pipe.cmd("EVAL")
                .arg(REMEDIATION_LUA)
                .arg(keys.len())
                .arg(&keys)
                .arg(last_action)
                .arg(ttl)
                .ignore();
        }
    }
}

/// What the publisher and the drain task share.
#[derive(Debug)]
struct Shared {
    conn: Conn,
    queue: Mutex<VecDeque<Pending>>,
    capacity: usize,
    wake: Notify,
    in_flight: AtomicUsize,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Drops not yet named in a warning (warnings are rate-limited).
    dropped_unreported: AtomicU64,
    last_drop_report: Mutex<Option<std::time::Instant>>,
    local: Mutex<VecDeque<Envelope>>,
    live: tokio::sync::broadcast::Sender<Envelope>,
}

/// The Redis [`StateStore`](crate::store::StateStore) and [`EventSink`]. Create it inside a Tokio runtime; dropping it
/// stops the outbox task (call [`RedisBus::flush`] first to deliver what waits).
#[derive(Debug)]
pub struct RedisBus {
    shared: Arc<Shared>,
    config: RedisConfig,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl RedisBus {
    /// A bus for `config`. It does not wait for Redis: the connection is made on first use and
    /// remade after failures, so HemoStat starts while Redis is still coming up (see
    /// [`RedisBus::ping`] for readiness).
    pub fn new(config: &RedisConfig) -> Result<Self> {
        let conn = super::conn::manager(config)?;
        let shared = Arc::new(Shared {
            conn,
            queue: Mutex::new(VecDeque::new()),
            capacity: config.outbox_capacity(),
            wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dropped_unreported: AtomicU64::new(0),
            last_drop_report: Mutex::new(None),
            local: Mutex::new(VecDeque::new()),
            live: tokio::sync::broadcast::channel(crate::bus::LIVE_CAPACITY).0,
        });
        let drain = tokio::spawn(drain(Arc::clone(&shared)));
        Ok(Self {
            shared,
            config: config.clone(),
            drain,
        })
    }

    /// The configuration (prints without the password).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<()> {
        self.query::<String>("ping", &redis::cmd("PING"))
            .await
            .map(|_| ())
    }

    /// Envelopes waiting for Redis (including the batch being sent).
    pub fn outbox_len(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
            + self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// Envelopes delivered to Redis so far.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::SeqCst)
    }

    /// Envelopes dropped so far (outbox full, or Redis kept refusing them).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Waits until the outbox is empty; false if it still is not after `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.outbox_len() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes a container's latest stats: `hemostat:stats:<container>` (the original's key, last
    /// writer wins when two nodes run a container of that name) and
    /// `hemostat:node:<node>:stats:<container>` (exact), both with TTL 300 s.
    pub async fn put_stats(
        &self,
        container: &str,
        node: &str,
        stats_json: serde_json::Value,
    ) -> Result<()> {
        let json = stats_json.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in [stats_key(container), node_stats_key(node, container)] {
            let key = self.key(&key);
            pipe.cmd("SET")
                .arg(key)
                .arg(&json)
                .arg("EX")
                .arg(STATS_TTL_SECS)
                .ignore();
        }
        self.query_pipe::<()>("put stats", &pipe).await
    }

    /// Writes a container's state as the original monitor kept it:
    /// `hemostat:state:container:<short id>`, TTL 300 s.
    pub async fn put_state(&self, state: &ContainerStateKey) -> Result<()> {
        let cmd = redis::cmd("SET")
            .arg(self.key(&container_state_key(&state.container_id)))
            .arg(state.to_json().to_string())
            .arg("EX")
            .arg(STATE_TTL_SECS)
            .clone();
        self.query::<()>("put state", &cmd).await
    }

    /// The newest envelopes of the `hemostat:events:*` lists, newest last.
    async fn recent_from_lists(
        &self,
        event_type: Option<EventType>,
        limit: usize,
    ) -> Result<Vec<Envelope>> {
        let cmd = redis::cmd("LRANGE")
            .arg(self.key(&events_key(event_type)))
            .arg(0)
            .arg(limit.min(EVENTS_CAP) - 1)
            .clone();
        let newest_first: Vec<String> = self.query("read events", &cmd).await?;
        Ok(newest_first
            .iter()
            .rev()
            .filter_map(|j| parse_envelope(j))
            .collect())
    }

    /// The newest envelopes of the stream, newest last (when the lists are someone else's).
    async fn recent_from_stream(
        &self,
        event_type: Option<EventType>,
        limit: usize,
    ) -> Result<Vec<Envelope>> {
        let mut newest_first = Vec::new();
        let mut end = "+".to_owned();
        // Read back in pages until `limit` envelopes of the type are found or the stream ends.
        loop {
            let cmd = redis::cmd("XREVRANGE")
                .arg(self.key(STREAM_KEY))
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(STREAM_PAGE)
                .clone();
            let page: Vec<(String, Vec<(String, String)>)> =
                self.query("read stream", &cmd).await?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            end = format!("({last_id}");
            let full = page.len() == STREAM_PAGE;
            for (_, fields) in page {
                let Some((_, json)) = fields.iter().find(|(k, _)| k == "envelope") else {
                    continue;
                };
                let Some(e) = parse_envelope(json) else {
                    continue;
                };
                if event_type.is_none_or(|t| e.kind() == Some(t)) {
                    newest_first.push(e);
                    if newest_first.len() == limit {
                        break;
                    }
                }
            }
            if newest_first.len() == limit || !full {
                break;
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Runs a command through [`super::conn::query`].
    pub(super) async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T> {
        super::conn::query(&self.shared.conn, op, cmd).await
    }

    /// Runs a pipeline through [`super::conn::query_pipe`].
    pub(super) async fn query_pipe<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T> {
        super::conn::query_pipe(&self.shared.conn, op, pipe).await
    }

    /// A handle on the shared connection.
    pub(super) fn conn(&self) -> Conn {
        self.shared.conn.clone()
    }

    /// The name of HemoStat key `key` on this Redis (tagged on a cluster).
    pub(crate) fn key(&self, key: &str) -> String {
        self.shared.conn.key(key)
    }

    fn local_recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope> {
        let local = self
            .shared
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let matching: Vec<&Envelope> = local
            .iter()
            .filter(|e| event_type.is_none_or(|t| e.kind() == Some(t)))
            .collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }
}

/// The outbox task: sends waiting envelopes in order, in batches, retrying with backoff.
async fn drain(shared: Arc<Shared>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut retry = Retry::new();
    loop {
        next_batch(&shared, &mut batch).await;
        match send_batch(&shared, &batch).await {
            Ok(()) => {
                retry.recovered(batch.len());
                settle(&shared, &mut batch, &shared.delivered);
            }
            Err(e) if is_wrong_type(&e) => {
                // MULTI/EXEC ran every other command of the batch (Redis does not roll back):
                // sending it again would publish every envelope again. Delivered, and the
                // wrong-typed key reported once.
                crate::store::report_bad_value(
                    &e.to_string(),
                    "a key of the envelopes' path has the wrong type",
                    "envelopes delivered everywhere else, never sent twice",
                );
                retry.reset();
                settle(&shared, &mut batch, &shared.delivered);
            }
            Err(e) => {
                if retry.gives_up(&e, batch.len()) {
                    settle(&shared, &mut batch, &shared.dropped);
                } else {
                    retry.wait(&e).await;
                }
            }
        }
    }
}

/// Waits until `batch` holds envelopes: takes up to [`BATCH`] from the queue, sleeping while
/// it is empty. A batch that failed to send is still there and is returned as is.
async fn next_batch(shared: &Shared, batch: &mut Vec<Pending>) {
    while batch.is_empty() {
        {
            let mut queue = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = queue.len().min(BATCH);
            batch.extend(queue.drain(..n));
            shared.in_flight.store(batch.len(), Ordering::SeqCst);
        }
        if batch.is_empty() {
            shared.wake.notified().await;
        }
    }
}

/// Sends `batch` as one `MULTI`/`EXEC`.
async fn send_batch(shared: &Shared, batch: &[Pending]) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for p in batch {
        p.add_to(&mut pipe, &shared.conn);
    }
    let mut conn = shared.conn.clone();
    pipe.query_async::<()>(&mut conn).await
}

/// Done with `batch`: counts it on `counter` (delivered or dropped) and empties it.
fn settle(shared: &Shared, batch: &mut Vec<Pending>, counter: &AtomicU64) {
    counter.fetch_add(batch.len() as u64, Ordering::SeqCst);
    batch.clear();
    shared.in_flight.store(0, Ordering::SeqCst);
}

/// The drain task's retry state: backoff between attempts, the run of server errors on the
/// current batch, and whether the outage has been logged.
struct Retry {
    backoff: Backoff,
    server_errors: u32,
    failing: bool,
}

impl Retry {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            server_errors: 0,
            failing: false,
        }
    }

    /// A batch of `waiting` envelopes went through: logs the recovery once, resets.
    fn recovered(&mut self, waiting: usize) {
        if self.failing {
            tracing::info!(waiting, "redis reachable again; delivering the outbox");
            self.failing = false;
        }
        self.reset();
    }

    /// Backoff and the server-error run start again.
    fn reset(&mut self) {
        self.backoff.reset();
        self.server_errors = 0;
    }

    /// Whether a batch of `envelopes` that failed with `e` is dropped: after
    /// [`MAX_SERVER_ERRORS`] consecutive errors that are not connection errors (logged).
    fn gives_up(&mut self, e: &redis::RedisError, envelopes: usize) -> bool {
        if is_connection_error(e) {
            return false;
        }
        self.server_errors += 1;
        if self.server_errors < MAX_SERVER_ERRORS {
            return false;
        }
        tracing::error!(
            error = %e,
            envelopes,
            "redis keeps refusing a batch of envelopes; dropping it"
        );
        self.server_errors = 0;
        true
    }

    /// Logs the outage once, then sleeps the next backoff delay.
    async fn wait(&mut self, e: &redis::RedisError) {
        if !self.failing {
            tracing::warn!(error = %e, "redis unavailable; envelopes wait in the outbox");
            self.failing = true;
        }
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

#[async_trait::async_trait]
impl EventSink for RedisBus {
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Envelope> {
        self.shared.live.subscribe()
    }

    async fn publish(&self, envelope: Envelope) {
        let pending = Pending::new(&envelope, !self.config.external_alert_agent());
        let _ = self.shared.live.send(envelope.clone());
        {
            let mut local = self
                .shared
                .local
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            local.push_back(envelope);
            while local.len() > LOCAL_RECENT {
                local.pop_front();
            }
        }
        let overflow = {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.push_back(pending);
            let mut overflow = Vec::new();
            while queue.len() > self.shared.capacity {
                overflow.extend(queue.pop_front());
            }
            overflow
        };
        if !overflow.is_empty() {
            let total = self
                .shared
                .dropped
                .fetch_add(overflow.len() as u64, Ordering::SeqCst)
                + overflow.len() as u64;
            // One warning per second at most, each naming what it reports on.
            let mut last = self
                .shared
                .last_drop_report
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let unreported = self
                .shared
                .dropped_unreported
                .fetch_add(overflow.len() as u64, Ordering::SeqCst)
                + overflow.len() as u64;
            if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                *last = Some(std::time::Instant::now());
                self.shared.dropped_unreported.store(0, Ordering::SeqCst);
                tracing::warn!(
                    dropped = unreported,
                    dropped_total = total,
                    oldest_dropped_type = %overflow[0].event_type,
                    capacity = self.shared.capacity,
                    "redis outbox full; dropped the oldest envelopes"
                );
            }
        }
        self.shared.wake.notify_one();
    }

    async fn recent(&self, event_type: Option<EventType>, limit: usize) -> Vec<Envelope> {
        if limit == 0 {
            return Vec::new();
        }
        let read = if self.config.external_alert_agent() {
            self.recent_from_stream(event_type, limit).await
        } else {
            self.recent_from_lists(event_type, limit).await
        };
        match read {
            Ok(envelopes) => envelopes,
            Err(e) => {
                tracing::warn!(error = %e, "redis unavailable; serving recent events from memory");
                self.local_recent(event_type, limit)
            }
        }
    }

    async fn put_stats(&self, container: &str, node: &str, stats: serde_json::Value) {
        if let Err(e) = RedisBus::put_stats(self, container, node, stats).await {
            tracing::debug!(error = %e, container, "could not write stats to Redis");
        }
    }

    async fn put_state(&self, state: &ContainerStateKey) {
        if let Err(e) = RedisBus::put_state(self, state).await {
            tracing::debug!(error = %e, container = %state.name, "could not write state to Redis");
        }
    }
}

/// An envelope read back from Redis; a malformed one is logged and skipped.
fn parse_envelope(json: &str) -> Option<Envelope> {
    match serde_json::from_str::<Envelope>(json) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(error = %err, "skipping a malformed envelope in redis");
            None
        }
    }
}
