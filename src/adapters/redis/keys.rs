//! Every Redis key, channel and Lua script HemoStat uses, in one place.
//!
//! | what | key | notes |
//! |---|---|---|
//! | live events | `PUBLISH hemostat:<type>` | the exact JSON envelope, as the original |
//! | durable events | `XADD hemostat:stream:events MAXLEN ~ 10000` | fields `envelope` (JSON), `type` |
//! | history | `hemostat:events:<type>`, `hemostat:events:all` | lists, newest first, 100, TTL 3600 s; not written with `--external-alert-agent` |
//! | remediation | `hemostat:remediation:<container>` | `{last_action, count}`, TTL 3600 s |
//! | stats | `hemostat:stats:<container>` | TTL 300 s |
//! | monitor state | `hemostat:state:container:<short id>` | the original monitor's, TTL 300 s |
//! | safety | `hemostat:safety:<node>/<container>` | JSON [`SafetyState`](crate::model::safety::SafetyState), no TTL |
//! | in-flight lock | `hemostat:lock:engine:<engine id>/<container id>` | owner id, `PX` ttl |
//! | audit | `hemostat:audit` | list, newest first, 1000; a record identical to one of the newest 100 is not added again |
//! | fleet budget | `hemostat:fleet:budget:<policy>` | sorted set of recent actions |
//! | policies | `hemostat:policies`, `hemostat:policies:meta` | hashes: YAML per name, JSON meta per name |
//! | policy changes | `PUBLISH hemostat:policies:changed` | the changed policy's name |
//! | external requests | `SUBSCRIBE hemostat:remediation_needed` | validated, never trusted |
//!
//! Two nodes may run containers of the same name. The original's keys
//! (`hemostat:stats:<container>`, `hemostat:remediation:<container>`) are kept for its
//! dashboards and are *last writer wins* across nodes; each is also written per node, at
//! `hemostat:node:<node>:stats:<container>` and `hemostat:node:<node>:remediation:<container>`,
//! which are exact. HemoStat's own state (safety, locks) is always keyed by node.
//!
//! On a Redis Cluster (`redis+cluster://`) every key above starts with `{hemostat}:` instead
//! of `hemostat:` ([`tagged`]): the hash tag puts them all in one slot, so each `MULTI` and
//! each script with several keys stays on one node. Channels are not keys and keep their
//! names (a cluster delivers every `PUBLISH` to subscribers on any node). On one server and
//! behind Sentinels the names are exactly the original's.

use crate::model::wire::EventType;

/// The hash tag every HemoStat key carries on a Redis Cluster.
pub(crate) const CLUSTER_TAG: &str = "{hemostat}";

/// `key` as named on a Redis Cluster when `cluster`: a leading `hemostat:` becomes
/// `{hemostat}:`, so every key hashes to the one slot of `hemostat`; unchanged otherwise.
pub(crate) fn tagged(cluster: bool, key: &str) -> String {
    match key.strip_prefix("hemostat:") {
        Some(rest) if cluster => format!("{CLUSTER_TAG}:{rest}"),
        _ => key.to_owned(),
    }
}

/// `PUBLISH ARGV[1] ARGV[2]` from a script without keys: on a Redis Cluster a plain `PUBLISH`
/// is routed by its channel's slot, which would pull a `MULTI` across slots; from a script it
/// runs on the node of the transaction's keys and still reaches subscribers on every node.
pub(crate) const PUBLISH_LUA: &str = "return redis.call('PUBLISH', ARGV[1], ARGV[2])";

/// The durable stream every envelope is appended to.
pub const STREAM_KEY: &str = "hemostat:stream:events";
/// Approximate cap of the stream.
pub(crate) const STREAM_MAXLEN: usize = 10_000;
/// Cap of the `hemostat:events:*` lists (the original's).
pub const EVENTS_CAP: usize = 100;
/// TTL of the `hemostat:events:*` lists and remediation keys, seconds.
pub const EVENTS_TTL_SECS: u64 = 3600;
/// TTL of the stats keys, seconds.
pub const STATS_TTL_SECS: u64 = 300;
/// TTL of the monitor state keys `hemostat:state:container:<id>`, seconds (the original's).
pub const STATE_TTL_SECS: u64 = 300;
/// The audit list.
pub(crate) const AUDIT_KEY: &str = "hemostat:audit";
/// Cap of the audit list.
pub(crate) const AUDIT_CAP: usize = 1000;

/// The sorted set of recent actions under one policy's fleet-wide budget.
pub(crate) fn fleet_budget_key(policy: &str) -> String {
    format!("hemostat:fleet:budget:{policy}")
}

/// Atomically: forget actions older than the window (by the server's clock, so nodes with
/// skewed clocks agree), refuse when `max` remain, else count this one.
pub(crate) const FLEET_BUDGET_LUA: &str = r#"
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
pub(crate) fn lock_redis_key(key: &str) -> String {
    format!("hemostat:lock:{key}")
}

/// `hemostat:events:<type>`.
pub(crate) fn events_key(event_type: Option<EventType>) -> String {
    match event_type {
        Some(t) => format!("hemostat:events:{}", t.as_str()),
        None => "hemostat:events:all".to_owned(),
    }
}

/// `hemostat:stats:<container>` (the original's, last writer wins across nodes).
pub(crate) fn stats_key(container: &str) -> String {
    format!("hemostat:stats:{container}")
}

/// `hemostat:node:<node>:stats:<container>` (exact per node).
pub(crate) fn node_stats_key(node: &str, container: &str) -> String {
    format!("hemostat:node:{node}:stats:{container}")
}

/// `hemostat:state:container:<short id>` (the original monitor's per-container state).
pub(crate) fn container_state_key(container_id: &str) -> String {
    format!(
        "hemostat:state:container:{}",
        crate::model::wire::short_id(container_id)
    )
}

/// `hemostat:remediation:<container>` (the original's, last writer wins across nodes).
pub(crate) fn remediation_key(container: &str) -> String {
    format!("hemostat:remediation:{container}")
}

/// `hemostat:node:<node>:remediation:<container>` (exact per node).
pub(crate) fn node_remediation_key(node: &str, container: &str) -> String {
    format!("hemostat:node:{node}:remediation:{container}")
}

/// Compare-and-set of a safety state: `ARGV[1]` = "1" if `ARGV[2]` is the expected current
/// value, "0" if the key is expected to be missing, "2" if it is expected to be of the
/// (non-string) type `ARGV[2]` (junk, replaced); `ARGV[3]` = the new value.
pub(crate) const CAS_LUA: &str = r"
local ty = redis.call('TYPE', KEYS[1]).ok
if ARGV[1] == '2' then
  if ty == ARGV[2] then
    redis.call('DEL', KEYS[1])
    redis.call('SET', KEYS[1], ARGV[3])
    return 1
  end
  return 0
end
if ty ~= 'none' and ty ~= 'string' then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and cur == false) or (ARGV[1] == '1' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3])
  return 1
end
return 0
";

/// Reads a safety key of any type: `{type, value}` (the value only for a string).
pub(crate) const READ_SAFETY_LUA: &str = r"
local ty = redis.call('TYPE', KEYS[1]).ok
if ty == 'string' then
  return {ty, redis.call('GET', KEYS[1])}
end
return {ty, ''}
";

/// Takes or refreshes a lock: free, or already held by the same owner.
/// A key of another type (junk written into it) is replaced by the lock (returns 2, reported
/// once): only one caller replaces it, so the junk never lets two operators act.
pub(crate) const LOCK_LUA: &str = r"
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
pub(crate) const UNLOCK_LUA: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Appends an audit record unless an identical one is among the newest [`AUDIT_DEDUP_WINDOW`]
/// (a retry whose first attempt did reach Redis, e.g. written into a connection a partition
/// had cut and delivered when it healed), then caps the list. `ARGV[1]` = record, `ARGV[2]` =
/// cap, `ARGV[3]` = window. One key, so it works on Redis Cluster.
pub(crate) const AUDIT_LUA: &str = r"
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
pub(crate) const AUDIT_DEDUP_WINDOW: usize = 100;

/// Bumps `{last_action, count}` of each key (TTL 3600 s); `ARGV[1]` = last_action.
pub(crate) const REMEDIATION_LUA: &str = r"
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

/// The hash of applied policies: field = name, value = YAML text of one document.
pub const POLICIES_KEY: &str = "hemostat:policies";
/// The hash of per-policy metadata: field = name, value = JSON [`PolicyMeta`](super::policies::PolicyMeta).
pub const META_KEY: &str = "hemostat:policies:meta";
/// Every change publishes the policy's name here.
pub const CHANGED_CHANNEL: &str = "hemostat:policies:changed";

/// Writes policies only if each is still what was read (KEYS: policies, meta; ARGV: channel,
/// then per policy: name, had-a-value flag, the value read, new text, new meta JSON).
pub(crate) const APPLY_SCRIPT: &str = r"
for i = 2, #ARGV, 5 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if ARGV[i + 1] == '1' then
    if current ~= ARGV[i + 2] then return 0 end
  elseif current then
    return 0
  end
end
for i = 2, #ARGV, 5 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 4])
  redis.call('PUBLISH', ARGV[1], ARGV[i])
end
return 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cluster_keys_carry_the_tag() {
        for (cluster, key, want) in [
            (false, "hemostat:stats:web", "hemostat:stats:web"),
            (true, "hemostat:stats:web", "{hemostat}:stats:web"),
            (true, "hemostat:stream:events", "{hemostat}:stream:events"),
            (true, "other:key", "other:key"),
            (false, "other:key", "other:key"),
        ] {
            assert_eq!(tagged(cluster, key), want, "{cluster} {key}");
        }
    }
}
