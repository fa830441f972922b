//! The Redis bus: the original's wire protocol plus a durable stream, and the shared state store.
//!
//! # Keys and channels
//!
//! | what | key | notes |
//! |---|---|---|
//! | live events | `PUBLISH hemostat:<type>` | the exact JSON envelope, as the original |
//! | durable events | `XADD hemostat:stream:events MAXLEN ~ 10000` | fields `envelope` (JSON), `type` |
//! | history | `hemostat:events:<type>`, `hemostat:events:all` | lists, newest first, 100, TTL 3600 s |
//! | remediation | `hemostat:remediation:<container>` | `{last_action, count}`, TTL 3600 s |
//! | stats | `hemostat:stats:<container>` | TTL 300 s |
//! | safety | `hemostat:safety:<node>/<container>` | JSON [`SafetyState`], no TTL |
//! | in-flight lock | `hemostat:lock:engine:<engine id>/<container id>` | owner id, `PX` ttl |
//! | audit | `hemostat:audit` | list, newest first, 1000; a record identical to one of the newest 100 is not added again |
//!
//! Two nodes may run containers of the same name. The original's keys
//! (`hemostat:stats:<container>`, `hemostat:remediation:<container>`) are kept for its
//! dashboards and are *last writer wins* across nodes; each is also written per node, at
//! `hemostat:node:<node>:stats:<container>` and `hemostat:node:<node>:remediation:<container>`,
//! which are exact. HemoStat's own state (safety, locks) is always keyed by node.
//!
//! # Delivery
//!
//! [`EventSink::publish`] never waits for Redis: envelopes go to a bounded in-memory outbox
//! drained in order by a background task, in batches, each batch one `MULTI`/`EXEC` so the
//! publish, stream entry and list entries of an envelope go together. While Redis is down the
//! task retries with backoff and keeps the order. When the outbox is full the oldest waiting
//! envelope is dropped, counted ([`RedisBus::dropped`]) and logged. Delivery is at least once: a
//! batch whose `EXEC` reached Redis but whose reply was lost with the connection is sent again.

mod config;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, Script};
use tokio::sync::Notify;

pub use config::{DEFAULT_OUTBOX_CAPACITY, DEFAULT_PORT, RedisConfig};

use super::{AuditRecord, BusError, Envelope, EventSink, EventType, Result, StateStore};
use crate::respond::safety::SafetyState;

/// The durable stream every envelope is appended to.
pub const STREAM_KEY: &str = "hemostat:stream:events";
/// Approximate cap of the stream.
pub const STREAM_MAXLEN: usize = 10_000;
/// Cap of the `hemostat:events:*` lists (the original's).
pub const EVENTS_CAP: usize = 100;
/// TTL of the `hemostat:events:*` lists and remediation keys, seconds.
pub const EVENTS_TTL_SECS: u64 = 3600;
/// TTL of the stats keys, seconds.
pub const STATS_TTL_SECS: u64 = 300;
/// The audit list.
pub const AUDIT_KEY: &str = "hemostat:audit";
/// Cap of the audit list.
pub const AUDIT_CAP: usize = 1000;
/// How many envelopes are kept locally for [`EventSink::recent`] when Redis is down.
pub const LOCAL_RECENT: usize = 1000;

/// Envelopes sent per `MULTI`/`EXEC`.
/// The longest expiry or window sent to Redis: a year, in milliseconds.
const MAX_EXPIRY_MS: u64 = 365 * 86_400 * 1_000;
const BATCH: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Consecutive failures of a batch that are not connection errors (Redis answered with an
/// error, e.g. a key of the wrong type) before the batch is dropped and counted.
const MAX_SERVER_ERRORS: u32 = 20;
/// Attempts of an optimistic safety update before giving up.
const CAS_ATTEMPTS: usize = 1000;

/// The sorted set of recent actions under one policy's fleet-wide budget.
pub fn fleet_budget_key(policy: &str) -> String {
    format!("hemostat:fleet:budget:{policy}")
}

/// Atomically: forget actions older than the window (by the server's clock, so nodes with
/// skewed clocks agree), refuse when `max` remain, else count this one.
const FLEET_BUDGET_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"#;

/// `hemostat:safety:<key>`.
pub fn safety_redis_key(key: &str) -> String {
    format!("hemostat:safety:{key}")
}

/// `hemostat:lock:<key>`.
pub fn lock_redis_key(key: &str) -> String {
    format!("hemostat:lock:{key}")
}

/// `hemostat:events:<type>`.
pub fn events_key(event_type: Option<EventType>) -> String {
    match event_type {
        Some(t) => format!("hemostat:events:{}", t.as_str()),
        None => "hemostat:events:all".to_owned(),
    }
}

/// `hemostat:stats:<container>` (the original's, last writer wins across nodes).
pub fn stats_key(container: &str) -> String {
    format!("hemostat:stats:{container}")
}

/// `hemostat:node:<node>:stats:<container>` (exact per node).
pub fn node_stats_key(node: &str, container: &str) -> String {
    format!("hemostat:node:{node}:stats:{container}")
}

/// `hemostat:remediation:<container>` (the original's, last writer wins across nodes).
pub fn remediation_key(container: &str) -> String {
    format!("hemostat:remediation:{container}")
}

/// `hemostat:node:<node>:remediation:<container>` (exact per node).
pub fn node_remediation_key(node: &str, container: &str) -> String {
    format!("hemostat:node:{node}:remediation:{container}")
}

/// Compare-and-set of a safety state: ARGV[1] = "1" if ARGV[2] is the expected current value,
/// "0" if the key is expected to be missing; ARGV[3] = the new value.
const CAS_LUA: &str = r"
local cur = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and cur == false) or (ARGV[1] == '1' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Takes or refreshes a lock: free, or already held by the same owner.
/// A key of another type (junk written into it) is replaced by the lock (returns 2, reported
/// once): only one caller replaces it, so the junk never lets two operators act.
const LOCK_LUA: &str = r"
local ty = redis.call('TYPE', KEYS[1]).ok
if ty ~= 'none' and ty ~= 'string' then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Deletes a lock only if the owner holds it.
const UNLOCK_LUA: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Appends an audit record unless an identical one is among the newest [`AUDIT_DEDUP_WINDOW`]
/// (a retry whose first attempt did reach Redis, e.g. written into a connection a partition
/// had cut and delivered when it healed), then caps the list. ARGV[1] = record, ARGV[2] = cap,
/// ARGV[3] = window. One key, so it works on Redis Cluster.
const AUDIT_LUA: &str = r"
for _, seen in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  if seen == ARGV[1] then
    return 0
  end
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
";

/// How many of the newest audit records an append compares with.
pub const AUDIT_DEDUP_WINDOW: usize = 100;

/// Bumps `{last_action, count}` of each key (TTL 3600 s); ARGV[1] = last_action.
const REMEDIATION_LUA: &str = r"
for _, key in ipairs(KEYS) do
  local count = 0
  local cur = redis.call('GET', key)
  if cur then
    local ok, doc = pcall(cjson.decode, cur)
    if ok and type(doc) == 'table' and tonumber(doc['count']) then
      count = tonumber(doc['count'])
    end
  end
  redis.call('SET', key, cjson.encode({last_action = ARGV[1], count = count + 1}), 'EX', ARGV[2])
end
return 1
";

/// An envelope waiting for Redis, already serialised.
#[derive(Debug)]
struct Pending {
    json: String,
    event_type: String,
    /// Keys to bump for a finished (success/failed) remediation, and its `last_action`.
    remediation: Option<(Vec<String>, String)>,
}

impl Pending {
    fn new(envelope: &Envelope) -> Self {
        let json = serde_json::to_string(envelope).expect("an envelope is always serialisable");
        let remediation = (envelope.kind() == Some(EventType::RemediationComplete))
            .then(|| {
                let status = envelope.data["result"]["status"].as_str()?;
                if status != "success" && status != "failed" {
                    return None;
                }
                let container = envelope.data["container"]
                    .as_str()
                    .or_else(|| envelope.data["result"]["container"].as_str())?;
                let mut keys = vec![remediation_key(container)];
                if let Some(node) = envelope.data["node"].as_str() {
                    keys.push(node_remediation_key(node, container));
                }
                // The original's `last_action`: whole seconds.
                let last_action: String = envelope.timestamp.chars().take(19).collect();
                Some((keys, last_action))
            })
            .flatten();
        Self {
            json,
            event_type: envelope.event_type.clone(),
            remediation,
        }
    }

    fn add_to(&self, pipe: &mut Pipeline) {
        let ttl = EVENTS_TTL_SECS;
        pipe.cmd("PUBLISH")
            .arg(format!("hemostat:{}", self.event_type))
            .arg(&self.json)
            .ignore();
        pipe.cmd("XADD")
            .arg(STREAM_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("envelope")
            .arg(&self.json)
            .arg("type")
            .arg(&self.event_type)
            .ignore();
        for list in [
            format!("hemostat:events:{}", self.event_type),
            events_key(None),
        ] {
            pipe.cmd("LPUSH").arg(&list).arg(&self.json).ignore();
            pipe.cmd("LTRIM")
                .arg(&list)
                .arg(0)
                .arg(EVENTS_CAP - 1)
                .ignore();
            pipe.cmd("EXPIRE").arg(&list).arg(ttl).ignore();
        }
        if let Some((keys, last_action)) = &self.remediation {
            pipe.cmd("EVAL")
                .arg(REMEDIATION_LUA)
                .arg(keys.len())
                .arg(keys)
                .arg(last_action)
                .arg(ttl)
                .ignore();
        }
    }
}

/// What the publisher and the drain task share.
#[derive(Debug)]
struct Shared {
    conn: ConnectionManager,
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

/// The Redis [`StateStore`] and [`EventSink`]. Create it inside a Tokio runtime; dropping it
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

/// Connection errors (as opposed to Redis answering with an error): worth one more try.
/// A `WRONGTYPE` reply: a key holds another type than HemoStat writes there.
pub(crate) fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE") || e.to_string().contains("WRONGTYPE")
}

pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl RedisBus {
    /// A bus for `config`. It does not wait for Redis: the connection is made on first use and
    /// remade after failures, so HemoStat starts while Redis is still coming up (see
    /// [`RedisBus::ping`] for readiness).
    pub fn new(config: &RedisConfig) -> Result<Self> {
        let client = redis::Client::open(config.connection_info().clone()).map_err(|source| {
            BusError::Redis {
                op: "client",
                source,
            }
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn =
            ConnectionManager::new_lazy_with_config(client, manager_config).map_err(|source| {
                BusError::Redis {
                    op: "connect",
                    source,
                }
            })?;
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
            live: tokio::sync::broadcast::channel(super::LIVE_CAPACITY).0,
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
            pipe.cmd("SET")
                .arg(key)
                .arg(&json)
                .arg("EX")
                .arg(STATS_TTL_SECS)
                .ignore();
        }
        self.query_pipe::<()>("put stats", &pipe).await
    }

    /// Runs a command, once more after a connection error (the first command after a Redis
    /// restart fails while the manager reconnects).
    async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.shared.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if is_connection_error(&e) => cmd.query_async(&mut conn).await,
            r => r,
        }
        .map_err(|source| BusError::Redis { op, source })
    }

    async fn query_pipe<T: FromRedisValue>(&self, op: &'static str, pipe: &Pipeline) -> Result<T> {
        let mut conn = self.shared.conn.clone();
        match pipe.query_async(&mut conn).await {
            Err(e) if is_connection_error(&e) => pipe.query_async(&mut conn).await,
            r => r,
        }
        .map_err(|source| BusError::Redis { op, source })
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
    let mut backoff = BACKOFF_MIN;
    let mut server_errors = 0u32;
    let mut failing = false;
    loop {
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
        let mut pipe = redis::pipe();
        pipe.atomic();
        for p in &batch {
            p.add_to(&mut pipe);
        }
        let mut conn = shared.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if failing {
                    tracing::info!(
                        waiting = batch.len(),
                        "redis reachable again; delivering the outbox"
                    );
                    failing = false;
                }
                shared
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.clear();
                shared.in_flight.store(0, Ordering::SeqCst);
                backoff = BACKOFF_MIN;
                server_errors = 0;
            }
            Err(e) if is_wrong_type(&e) => {
                // MULTI/EXEC ran every other command of the batch (Redis does not roll back):
                // sending it again would publish every envelope again. Delivered, and the
                // wrong-typed key reported once.
                super::report_bad_value(
                    &e.to_string(),
                    "a key of the envelopes' path has the wrong type",
                    "envelopes delivered everywhere else, never sent twice",
                );
                shared
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::SeqCst);
                batch.clear();
                shared.in_flight.store(0, Ordering::SeqCst);
                backoff = BACKOFF_MIN;
                server_errors = 0;
            }
            Err(e) => {
                if !is_connection_error(&e) {
                    server_errors += 1;
                    if server_errors >= MAX_SERVER_ERRORS {
                        tracing::error!(
                            error = %e,
                            envelopes = batch.len(),
                            "redis keeps refusing a batch of envelopes; dropping it"
                        );
                        shared
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::SeqCst);
                        batch.clear();
                        shared.in_flight.store(0, Ordering::SeqCst);
                        server_errors = 0;
                        continue;
                    }
                }
                if !failing {
                    tracing::warn!(error = %e, "redis unavailable; envelopes wait in the outbox");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[async_trait::async_trait]
impl EventSink for RedisBus {
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Envelope> {
        self.shared.live.subscribe()
    }

    async fn publish(&self, envelope: Envelope) {
        let pending = Pending::new(&envelope);
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
        let cmd = redis::cmd("LRANGE")
            .arg(events_key(event_type))
            .arg(0)
            .arg(limit.min(EVENTS_CAP) - 1)
            .clone();
        match self.query::<Vec<String>>("read events", &cmd).await {
            Ok(newest_first) => newest_first
                .iter()
                .rev()
                .filter_map(|json| match serde_json::from_str::<Envelope>(json) {
                    Ok(e) => Some(e),
                    Err(err) => {
                        tracing::warn!(error = %err, "skipping a malformed envelope in redis");
                        None
                    }
                })
                .collect(),
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
}

#[async_trait::async_trait]
impl StateStore for RedisBus {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        let redis_key = safety_redis_key(key);
        let json: Option<String> = self
            .query("read safety state", redis::cmd("GET").arg(&redis_key))
            .await?;
        parse_safety(&redis_key, json.as_deref())
    }

    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let redis_key = safety_redis_key(key);
        let script = Script::new(CAS_LUA);
        for _ in 0..CAS_ATTEMPTS {
            let old: Option<String> = self
                .query("read safety state", redis::cmd("GET").arg(&redis_key))
                .await?;
            let mut state = parse_safety(&redis_key, old.as_deref())?;
            update(&mut state);
            let new = serde_json::to_string(&state).expect("safety state is always serialisable");
            let mut conn = self.shared.conn.clone();
            let (flag, expected) = match &old {
                Some(o) => ("1", o.as_str()),
                None => ("0", ""),
            };
            let swapped: std::result::Result<i64, RedisError> = script
                .key(&redis_key)
                .arg(flag)
                .arg(expected)
                .arg(&new)
                .invoke_async(&mut conn)
                .await;
            match swapped {
                Ok(1) => return Ok(state),
                Ok(_) => continue,
                Err(e) if is_connection_error(&e) => {
                    // The swap may have happened before the connection broke: if the key now
                    // holds our value, it did (re-applying the update would apply it twice).
                    let now: Option<String> = self
                        .query("read safety state", redis::cmd("GET").arg(&redis_key))
                        .await?;
                    if now.as_deref() == Some(new.as_str()) {
                        return Ok(state);
                    }
                }
                Err(source) => {
                    return Err(BusError::Redis {
                        op: "update safety state",
                        source,
                    });
                }
            }
        }
        Err(BusError::Redis {
            op: "update safety state",
            source: RedisError::from((
                redis::ErrorKind::Client,
                "too much contention",
                format!("{CAS_ATTEMPTS} attempts"),
            )),
        })
    }

    async fn take_fleet_budget(
        &self,
        budget: &str,
        max: u32,
        per: Duration,
        id: &str,
    ) -> Result<bool> {
        let window_ms = u64::try_from(per.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_EXPIRY_MS);
        let cmd = redis::cmd("EVAL")
            .arg(FLEET_BUDGET_LUA)
            .arg(1)
            .arg(fleet_budget_key(budget))
            .arg(max)
            .arg(window_ms)
            .arg(id)
            .clone();
        let took: i64 = self.query("take fleet budget", &cmd).await?;
        Ok(took == 1)
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        // Redis refuses an expiry it cannot add to its clock: at most a year.
        let ttl_ms = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_EXPIRY_MS);
        let cmd = redis::cmd("EVAL")
            .arg(LOCK_LUA)
            .arg(1)
            .arg(lock_redis_key(key))
            .arg(owner)
            .arg(ttl_ms)
            .clone();
        let redis_key = lock_redis_key(key);
        let took: i64 = self.query("take lock", &cmd).await?;
        if took == 2 {
            super::report_bad_value(
                &redis_key,
                "not a string (wrong type)",
                "replaced by the lock",
            );
        }
        Ok(took >= 1)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
        let cmd = redis::cmd("EVAL")
            .arg(UNLOCK_LUA)
            .arg(1)
            .arg(lock_redis_key(key))
            .arg(owner)
            .clone();
        self.query::<i64>("release lock", &cmd).await.map(|_| ())
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        let json = serde_json::to_string(&record).expect("an audit record is always serialisable");
        let cmd = redis::cmd("EVAL")
            .arg(AUDIT_LUA)
            .arg(1)
            .arg(AUDIT_KEY)
            .arg(json)
            .arg(AUDIT_CAP)
            .arg(AUDIT_DEDUP_WINDOW)
            .clone();
        self.query::<i64>("append audit", &cmd).await.map(|_| ())
    }

    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("LRANGE")
            .arg(AUDIT_KEY)
            .arg(0)
            .arg(limit.min(AUDIT_CAP) - 1)
            .clone();
        let newest_first: Vec<String> = self.query("read audit", &cmd).await?;
        // One junk entry never breaks the listing: it is skipped and reported.
        Ok(newest_first
            .iter()
            .rev()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(record) => Some(record),
                Err(e) => {
                    super::report_bad_value(
                        AUDIT_KEY,
                        &format!("an entry is not an audit record: {e}"),
                        "skipped in listings",
                    );
                    None
                }
            })
            .collect())
    }
}

/// A safety state that is not one (junk written into the key) is an error, never a reset that
/// would forget cooldowns and breakers; it is reported once (log, metric) so a person fixes it,
/// and listings show the container without it.
fn parse_safety(redis_key: &str, json: Option<&str>) -> Result<SafetyState> {
    match json {
        None => Ok(SafetyState::default()),
        Some(json) => serde_json::from_str(json).map_err(|source| {
            super::report_bad_value(
                redis_key,
                &format!("not a safety state: {source}"),
                "no action on this container until it is fixed or deleted; listings skip it",
            );
            BusError::Corrupt {
                path: redis_key.to_owned(),
                source,
            }
        }),
    }
}
