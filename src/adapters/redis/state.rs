//! The Redis [`StateStore`]: safety state by compare-and-set, in-flight locks, fleet budgets,
//! the audit list.

use std::time::Duration;

use redis::{RedisError, Script};

use super::conn::{is_connection_error, redis_error};
use super::keys::*;
use super::outbox::RedisBus;
use crate::model::safety::SafetyState;
use crate::store::{AuditRecord, Result, StateStore, StoreError};

/// Attempts of an optimistic safety update before giving up.
const CAS_ATTEMPTS: usize = 1000;
/// The longest expiry or window sent to Redis: a year, in milliseconds.
const MAX_EXPIRY_MS: u64 = 365 * 86_400 * 1_000;

#[async_trait::async_trait]
impl StateStore for RedisBus {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        let redis_key = self.key(&safety_redis_key(key));
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
        let redis_key = self.key(&safety_redis_key(key));
        let script = Script::new(CAS_LUA);
        for _ in 0..CAS_ATTEMPTS {
            let old: Option<String> = self
                .query("read safety state", redis::cmd("GET").arg(&redis_key))
                .await?;
            let mut state = parse_safety(&redis_key, old.as_deref())?;
            update(&mut state);
            let new = serde_json::to_string(&state).expect("safety state is always serialisable");
            let mut conn = self.conn();
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
                    return Err(redis_error("update safety state", source));
                }
            }
        }
        Err(redis_error(
            "update safety state",
            RedisError::from((
                redis::ErrorKind::Client,
                "too much contention",
                format!("{CAS_ATTEMPTS} attempts"),
            )),
        ))
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
            .arg(self.key(&fleet_budget_key(budget)))
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
            .arg(self.key(&lock_redis_key(key)))
            .arg(owner)
            .arg(ttl_ms)
            .clone();
        let redis_key = self.key(&lock_redis_key(key));
        let took: i64 = self.query("take lock", &cmd).await?;
        if took == 2 {
            crate::store::report_bad_value(
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
            .arg(self.key(&lock_redis_key(key)))
            .arg(owner)
            .clone();
        self.query::<i64>("release lock", &cmd).await.map(|_| ())
    }

    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        let json = serde_json::to_string(&record).expect("an audit record is always serialisable");
        let cmd = redis::cmd("EVAL")
            .arg(AUDIT_LUA)
            .arg(1)
            .arg(self.key(AUDIT_KEY))
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
            .arg(self.key(AUDIT_KEY))
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
                    crate::store::report_bad_value(
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
            crate::store::report_bad_value(
                redis_key,
                &format!("not a safety state: {source}"),
                "no action on this container until it is fixed or deleted; listings skip it",
            );
            StoreError::Corrupt {
                path: redis_key.to_owned(),
                source,
            }
        }),
    }
}
