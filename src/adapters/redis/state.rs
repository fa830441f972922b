//! The Redis [`StateStore`]: safety state by compare-and-set, in-flight locks, fleet budgets,
//! the audit list.

use std::time::Duration;

use redis::{RedisError, Script};

use super::conn::{is_connection_error, redis_error};
use super::keys::*;
use super::outbox::RedisBus;
use crate::model::audit::AuditRecord;
use crate::model::decision::ActionKind;
use crate::model::safety::{ActionRecord, Outcome, SafetyState};
use crate::store::{Result, StateStore};

/// Attempts of an optimistic safety update before giving up.
const CAS_ATTEMPTS: usize = 1000;
/// The longest expiry or window sent to Redis: a year, in milliseconds.
const MAX_EXPIRY_MS: u64 = 365 * 86_400 * 1_000;

#[async_trait::async_trait]
impl StateStore for RedisBus {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        let redis_key = self.key(&safety_redis_key(key));
        let stored = self.read_safety(&redis_key).await?;
        match parse_safety(&stored) {
            Ok(state) => Ok(state),
            Err(problem) => {
                let state = self.rebuild_safety(key, &redis_key, &problem).await?;
                // Replaced only if the junk is still there: an update in between wins.
                let new =
                    serde_json::to_string(&state).expect("safety state is always serialisable");
                self.swap_safety(&redis_key, &stored, &new).await?;
                Ok(state)
            }
        }
    }

    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        let redis_key = self.key(&safety_redis_key(key));
        let script = Script::new(CAS_LUA);
        for _ in 0..CAS_ATTEMPTS {
            let old = self.read_safety(&redis_key).await?;
            let mut state = match parse_safety(&old) {
                Ok(state) => state,
                Err(problem) => self.rebuild_safety(key, &redis_key, &problem).await?,
            };
            update(&mut state);
            let new = serde_json::to_string(&state).expect("safety state is always serialisable");
            let mut conn = self.conn();
            let (flag, expected) = old.cas_args();
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

/// What a safety key holds: nothing, a string, or a value of another type (junk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoredSafety {
    /// No key.
    Missing,
    /// A string (a safety state, or junk text).
    Text(String),
    /// A key of another Redis type (`hash`, `list`, ...).
    WrongType(String),
}

impl StoredSafety {
    /// The compare-and-set arguments that expect this value (see [`CAS_LUA`]).
    fn cas_args(&self) -> (&'static str, &str) {
        match self {
            Self::Missing => ("0", ""),
            Self::Text(t) => ("1", t.as_str()),
            Self::WrongType(ty) => ("2", ty.as_str()),
        }
    }
}

impl RedisBus {
    /// Reads a safety key, of whatever type it is.
    async fn read_safety(&self, redis_key: &str) -> Result<StoredSafety> {
        let cmd = redis::cmd("EVAL")
            .arg(READ_SAFETY_LUA)
            .arg(1)
            .arg(redis_key)
            .clone();
        let (ty, value): (String, String) = self.query("read safety state", &cmd).await?;
        Ok(match ty.as_str() {
            "none" => StoredSafety::Missing,
            "string" => StoredSafety::Text(value),
            _ => StoredSafety::WrongType(ty),
        })
    }

    /// Puts `new` in place of the junk `old`, unless the key changed since it was read.
    async fn swap_safety(&self, redis_key: &str, old: &StoredSafety, new: &str) -> Result<()> {
        let (flag, expected) = old.cas_args();
        let cmd = redis::cmd("EVAL")
            .arg(CAS_LUA)
            .arg(1)
            .arg(redis_key)
            .arg(flag)
            .arg(expected)
            .arg(new)
            .clone();
        self.query::<i64>("replace a junk safety state", &cmd)
            .await
            .map(|_| ())
    }

    /// The safety state of `key` as the audit trail tells it, for a key holding junk: every
    /// audited action that ran (so the cooldown and the action window count from the last real
    /// one) and every failed repair (so the breaker counts them). Reported once (log, metric).
    async fn rebuild_safety(
        &self,
        key: &str,
        redis_key: &str,
        problem: &str,
    ) -> Result<SafetyState> {
        let audit = self.audit_tail(AUDIT_CAP).await?;
        let state = safety_from_audit(key, &audit);
        crate::store::report_bad_value(
            redis_key,
            &format!("not a safety state: {problem}"),
            &format!(
                "replaced by the state rebuilt from the audit trail ({} actions, {} failures); repairs go on, cooldowns count from the last audited action",
                state.actions.len(),
                state.failures.len()
            ),
        );
        Ok(state)
    }
}

/// A safety key's value as a safety state, or why it is none (junk written into the key).
fn parse_safety(stored: &StoredSafety) -> std::result::Result<SafetyState, String> {
    match stored {
        StoredSafety::Missing => Ok(SafetyState::default()),
        StoredSafety::Text(json) => serde_json::from_str(json).map_err(|e| e.to_string()),
        StoredSafety::WrongType(ty) => Err(format!("a {ty}, not a string")),
    }
}

/// Pure: the safety state of `key` (`<node>/<container>`) that the audit records (oldest
/// first) tell: each action that ran (`action_started_at` set; refused, dry-run and unknown
/// actions are no actions) with its outcome, and each failed repair.
pub(crate) fn safety_from_audit(key: &str, audit: &[AuditRecord]) -> SafetyState {
    let mut state = SafetyState::default();
    let Some((node, container)) = key.rsplit_once('/') else {
        return state;
    };
    for r in audit
        .iter()
        .filter(|r| r.node == node && r.container == container)
    {
        let outcome = match r.status.as_str() {
            "success" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            _ => continue,
        };
        let (Some(at), Ok(action)) = (
            r.action_started_at,
            serde_json::from_value::<ActionKind>(serde_json::Value::String(r.action.clone())),
        ) else {
            continue;
        };
        if state.actions.iter().any(|a| a.decision_id == r.decision_id) {
            continue;
        }
        state.actions.push(ActionRecord {
            decision_id: r.decision_id.clone(),
            at,
            action,
            finding: String::new(),
            outcome,
        });
        if outcome == Outcome::Failed {
            state.failures.push(r.timestamp);
        }
    }
    state.actions.sort_by_key(|a| a.at);
    state.failures.sort();
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, container: &str, id: &str, status: &str, secs: i64) -> AuditRecord {
        let at = chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
        AuditRecord {
            decision_id: id.into(),
            timestamp: at + chrono::Duration::seconds(2),
            node: node.into(),
            container: container.into(),
            container_id: "c".into(),
            policy: "p".into(),
            action: "restart".into(),
            status: status.into(),
            reason: "exited".into(),
            details: String::new(),
            action_started_at: (status == "success" || status == "failed").then_some(at),
            gate: None,
            analysis_method: None,
            root_cause: None,
            fallback_reason: None,
        }
    }

    #[test]
    fn the_audit_trail_tells_the_actions_that_ran_and_the_failed_repairs_of_one_container() {
        let audit = vec![
            record("n", "web", "d1", "success", 0),
            record("n", "web", "d2", "failed", 10),
            record("n", "web", "d3", "rejected", 20),
            record("n", "web", "d4", "dry_run", 30),
            record("other", "web", "d5", "success", 40),
            record("n", "db", "d6", "success", 50),
            record("n", "web", "d2", "failed", 10),
        ];
        let state = safety_from_audit("n/web", &audit);
        let ids: Vec<(&str, Outcome)> = state
            .actions
            .iter()
            .map(|a| (a.decision_id.as_str(), a.outcome))
            .collect();
        assert_eq!(
            ids,
            [("d1", Outcome::Succeeded), ("d2", Outcome::Failed)],
            "{state:?}"
        );
        assert_eq!(state.failures, [audit[1].timestamp]);
        assert_eq!(state.open_until, None);
        for (key, actions) in [("n/db", 1), ("other/web", 1), ("n/none", 0), ("junk", 0)] {
            assert_eq!(
                safety_from_audit(key, &audit).actions.len(),
                actions,
                "{key}"
            );
        }
    }

    #[test]
    fn junk_of_any_type_is_no_safety_state_and_a_missing_key_an_empty_one() {
        assert_eq!(
            parse_safety(&StoredSafety::Missing),
            Ok(SafetyState::default())
        );
        assert!(parse_safety(&StoredSafety::Text("junk".into())).is_err());
        assert!(parse_safety(&StoredSafety::Text("{\"actions\": 3}".into())).is_err());
        let err = parse_safety(&StoredSafety::WrongType("hash".into())).unwrap_err();
        assert!(err.contains("hash"), "{err}");
        let valid = serde_json::to_string(&SafetyState::default()).unwrap();
        assert!(parse_safety(&StoredSafety::Text(valid)).is_ok());
    }
}
