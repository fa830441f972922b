//! The fallback store's tests: a remote that can be switched off, and the outage, merge and
//! journal behaviours.
#![cfg(test)]

use super::*;
use crate::model::decision::ActionKind;
use crate::model::safety::{ActionRecord, Outcome, merge_safety};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};

/// A remote that can be switched to fail with a Redis (I/O) error; state in memory.
#[derive(Debug)]
struct Switchable {
    inner: MemoryStore,
    down: AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
}

impl Switchable {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::ephemeral(),
            down: AtomicBool::new(false),
            calls: Default::default(),
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                op: "fake",
                source: "redis is down".into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl StateStore for Switchable {
    async fn safety(&self, key: &str) -> Result<SafetyState> {
        self.check()?;
        self.inner.safety(key).await
    }
    async fn update_safety(
        &self,
        key: &str,
        update: &mut (dyn for<'s> FnMut(&'s mut SafetyState) + Send),
    ) -> Result<SafetyState> {
        self.check()?;
        self.inner.update_safety(key, update).await
    }
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.check()?;
        self.inner.try_lock(key, owner, ttl).await
    }
    async fn unlock(&self, key: &str, owner: &str) -> Result<()> {
        self.check()?;
        self.inner.unlock(key, owner).await
    }
    async fn take_fleet_budget(
        &self,
        budget: &str,
        max: u32,
        per: Duration,
        id: &str,
    ) -> Result<bool> {
        self.check()?;
        self.inner.take_fleet_budget(budget, max, per, id).await
    }
    async fn append_audit(&self, record: AuditRecord) -> Result<()> {
        self.check()?;
        self.inner.append_audit(record).await
    }
    async fn audit_tail(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.check()?;
        self.inner.audit_tail(limit).await
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn rec(id: &str, at: i64, outcome: Outcome) -> ActionRecord {
    ActionRecord {
        decision_id: id.into(),
        at: t(at),
        action: ActionKind::Restart,
        finding: "exited".into(),
        outcome,
    }
}

fn actions(state: &SafetyState) -> Vec<(String, Outcome)> {
    state
        .actions
        .iter()
        .map(|a| (a.decision_id.clone(), a.outcome))
        .collect()
}

fn fixture() -> (Arc<Switchable>, FallbackStore) {
    let remote = Switchable::new();
    let store = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
        .with_probe_every(Duration::ZERO);
    (remote, store)
}

fn audit(id: &str) -> AuditRecord {
    crate::fixtures::audit(id, t(0))
}

#[test]
fn merge_rules() {
    use Outcome::{Failed, Pending, Succeeded};
    let state = |acts: Vec<ActionRecord>,
                 failures: Vec<i64>,
                 open: Option<i64>,
                 gave: Option<i64>| SafetyState {
        actions: acts,
        failures: failures.into_iter().map(t).collect(),
        open_until: open.map(t),
        gave_up_at: gave.map(t),
    };
    let empty = SafetyState::default();
    type Case = (&'static str, SafetyState, SafetyState, SafetyState);
    let cases: Vec<Case> = vec![
        (
            "empty with empty",
            empty.clone(),
            empty.clone(),
            empty.clone(),
        ),
        (
            "disjoint actions are united, oldest first",
            state(vec![rec("b", 20, Succeeded)], vec![], None, None),
            state(
                vec![rec("a", 10, Pending), rec("c", 30, Pending)],
                vec![],
                None,
                None,
            ),
            state(
                vec![
                    rec("a", 10, Pending),
                    rec("b", 20, Succeeded),
                    rec("c", 30, Pending),
                ],
                vec![],
                None,
                None,
            ),
        ),
        (
            "same decision once; pending then succeeded is succeeded",
            state(vec![rec("a", 10, Pending)], vec![], None, None),
            state(vec![rec("a", 10, Succeeded)], vec![], None, None),
            state(vec![rec("a", 10, Succeeded)], vec![], None, None),
        ),
        (
            "failed on the left stays failed",
            state(vec![rec("a", 10, Failed)], vec![], None, None),
            state(vec![rec("a", 10, Succeeded)], vec![], None, None),
            state(vec![rec("a", 10, Failed)], vec![], None, None),
        ),
        (
            "failed on the right stays failed",
            state(vec![rec("a", 10, Pending)], vec![], None, None),
            state(vec![rec("a", 10, Failed)], vec![], None, None),
            state(vec![rec("a", 10, Failed)], vec![], None, None),
        ),
        (
            "failures united, equal timestamps once",
            state(vec![], vec![5, 10], None, None),
            state(vec![], vec![10, 7], None, None),
            state(vec![], vec![5, 7, 10], None, None),
        ),
        (
            "the later open_until and gave_up_at win",
            state(vec![], vec![], Some(100), Some(1)),
            state(vec![], vec![], Some(200), Some(0)),
            state(vec![], vec![], Some(200), Some(1)),
        ),
        (
            "a breaker known on one side only is kept",
            state(vec![], vec![], None, None),
            state(vec![], vec![], Some(50), Some(2)),
            state(vec![], vec![], Some(50), Some(2)),
        ),
    ];
    for (name, a, b, expected) in cases {
        assert_eq!(merge_safety(&a, &b), expected, "{name}");
        assert_eq!(merge_safety(&b, &a), expected, "{name} (commutative)");
        assert_eq!(merge_safety(&expected, &b), expected, "{name} (idempotent)");
    }
}

#[tokio::test]
async fn while_redis_answers_updates_go_to_it_and_are_mirrored_locally() {
    let (remote, store) = fixture();
    store
        .update_safety("n1/web", &mut |s| {
            s.actions.push(rec("d1", 0, Outcome::Pending))
        })
        .await
        .unwrap();
    assert_eq!(
        actions(&remote.inner.safety("n1/web").await.unwrap()).len(),
        1
    );
    assert_eq!(
        store.local().safety("n1/web").await.unwrap(),
        remote.inner.safety("n1/web").await.unwrap()
    );
    assert!(store.dirty_keys().is_empty());
    assert!(!store.in_outage());
    // A state written before this store existed is mirrored when it is first read.
    remote
        .inner
        .update_safety("n1/old", &mut |s| s.open_until = Some(t(99)))
        .await
        .unwrap();
    store.safety("n1/old").await.unwrap();
    assert_eq!(
        store.local().safety("n1/old").await.unwrap().open_until,
        Some(t(99))
    );
}

#[tokio::test]
async fn during_an_outage_reads_and_updates_use_the_local_view_and_mark_the_key_dirty() {
    let (remote, store) = fixture();
    store
        .update_safety("n1/web", &mut |s| {
            s.actions.push(rec("d1", 0, Outcome::Succeeded))
        })
        .await
        .unwrap();
    remote.set_down(true);
    let read = store.safety("n1/web").await.unwrap();
    assert_eq!(
        read.actions.last().unwrap().decision_id,
        "d1",
        "cooldown input still known"
    );
    assert!(store.in_outage());
    let after = store
        .update_safety("n1/web", &mut |s| {
            s.actions.push(rec("d2", 60, Outcome::Pending))
        })
        .await
        .unwrap();
    assert_eq!(after.actions.len(), 2);
    assert_eq!(store.dirty_keys(), ["n1/web"]);
    assert_eq!(store.safety("n1/web").await.unwrap().actions.len(), 2);
    assert_eq!(
        remote.inner.safety("n1/web").await.unwrap().actions.len(),
        1
    );
}

#[tokio::test]
async fn the_first_successful_call_after_an_outage_merges_dirty_keys_into_the_remote() {
    let (remote, store) = fixture();
    store
        .update_safety("n1/web", &mut |s| {
            s.actions.push(rec("d1", 0, Outcome::Pending))
        })
        .await
        .unwrap();
    remote.set_down(true);
    store
        .update_safety("n1/web", &mut |s| {
            s.finish("d1", Outcome::Failed, t(30));
            s.actions.push(rec("d2", 60, Outcome::Pending));
        })
        .await
        .unwrap();
    // Meanwhile the remote learnt something else (another writer, or an update that
    // reached Redis before the connection broke).
    remote
        .inner
        .update_safety("n1/web", &mut |s| {
            s.actions[0].outcome = Outcome::Succeeded;
            s.actions.push(rec("d2", 60, Outcome::Pending));
            s.open_until = Some(t(500));
        })
        .await
        .unwrap();
    remote.set_down(false);
    // Any successful call pushes, here a lock on another key.
    assert!(
        store
            .try_lock("n1/other", "me", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(store.dirty_keys().is_empty());
    let merged = remote.inner.safety("n1/web").await.unwrap();
    assert_eq!(
        actions(&merged),
        [
            ("d1".to_owned(), Outcome::Failed),
            ("d2".to_owned(), Outcome::Pending)
        ]
    );
    assert_eq!(merged.failures, [t(30)]);
    assert_eq!(merged.open_until, Some(t(500)));
    assert_eq!(store.local().safety("n1/web").await.unwrap(), merged);
}

#[tokio::test]
async fn a_dirty_key_is_merged_before_the_remote_serves_or_updates_it() {
    for via_update in [false, true] {
        let (remote, store) = fixture();
        store
            .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
            .await
            .unwrap();
        remote.set_down(true);
        store
            .update_safety("k", &mut |s| {
                s.actions.push(rec("d2", 10, Outcome::Pending))
            })
            .await
            .unwrap();
        remote.set_down(false);
        let state = if via_update {
            store
                .update_safety("k", &mut |s| {
                    s.actions.push(rec("d3", 20, Outcome::Pending))
                })
                .await
                .unwrap()
        } else {
            store.safety("k").await.unwrap()
        };
        let expected: &[&str] = if via_update {
            &["d1", "d2", "d3"]
        } else {
            &["d1", "d2"]
        };
        let ids: Vec<_> = state
            .actions
            .iter()
            .map(|a| a.decision_id.as_str())
            .collect();
        assert_eq!(ids, expected, "via_update={via_update}");
        assert_eq!(remote.inner.safety("k").await.unwrap(), state);
        assert!(store.dirty_keys().is_empty());
    }
}

#[tokio::test]
async fn the_background_resync_pushes_without_any_call() {
    let remote = Switchable::new();
    let store = Arc::new(FallbackStore::new(remote.clone(), MemoryStore::ephemeral()));
    remote.set_down(true);
    store
        .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let task = store.spawn_resync(Duration::from_millis(10), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.dirty_keys(), ["k"], "nothing pushed while down");
    remote.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !store.dirty_keys().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "re-synced in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn an_operator_restarted_during_an_outage_still_merges_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let remote = Switchable::new();
    remote.set_down(true);
    {
        let store = FallbackStore::new(remote.clone(), MemoryStore::open(dir.path()).unwrap())
            .with_journal(dir.path())
            .unwrap();
        store
            .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
            .await
            .unwrap();
        store.append_audit(audit("a1")).await.unwrap();
    }
    let store = FallbackStore::new(remote.clone(), MemoryStore::open(dir.path()).unwrap())
        .with_journal(dir.path())
        .unwrap();
    assert_eq!(store.dirty_keys(), ["k"]);
    assert_eq!(store.audit_backlog_len(), 1);
    remote.set_down(false);
    store.resync().await.unwrap();
    assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
    assert_eq!(remote.inner.audit_tail(10).await.unwrap().len(), 1);
    let reopened = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
        .with_journal(dir.path())
        .unwrap();
    assert!(reopened.dirty_keys().is_empty(), "the journal was emptied");
    assert_eq!(reopened.audit_backlog_len(), 0);
    assert!(!dir.path().join("fallback.json.tmp").exists());
}

#[tokio::test]
async fn during_an_outage_redis_is_asked_once_per_probe_period() {
    let remote = Switchable::new();
    let store = FallbackStore::new(remote.clone(), MemoryStore::ephemeral())
        .with_probe_every(Duration::from_secs(3600));
    remote.set_down(true);
    store.safety("k").await.unwrap();
    let asked = remote.calls.load(Ordering::SeqCst);
    store
        .update_safety("k", &mut |s| s.actions.push(rec("d1", 0, Outcome::Pending)))
        .await
        .unwrap();
    assert!(
        store
            .try_lock("k", "me", Duration::from_secs(5))
            .await
            .unwrap()
    );
    store.unlock("k", "me").await.unwrap();
    store.append_audit(audit("a1")).await.unwrap();
    assert!(store.audit_tail(5).await.is_ok());
    assert!(
        store
            .take_fleet_budget("p", 5, Duration::from_secs(60), "x")
            .await
            .is_err()
    );
    assert_eq!(
        remote.calls.load(Ordering::SeqCst),
        asked,
        "not asked again"
    );
    assert_eq!(store.safety("k").await.unwrap().actions.len(), 1);
    // The re-sync always asks, and ends the outage.
    remote.set_down(false);
    store.resync().await.unwrap();
    assert!(!store.in_outage());
    assert_eq!(remote.inner.safety("k").await.unwrap().actions.len(), 1);
    assert_eq!(remote.inner.audit_tail(5).await.unwrap().len(), 1);
}

#[tokio::test]
async fn locks_fall_back_to_this_node_and_unlock_releases_both() {
    let (remote, store) = fixture();
    let ttl = Duration::from_secs(60);
    remote.set_down(true);
    assert!(store.try_lock("k", "a", ttl).await.unwrap());
    assert!(
        !store.try_lock("k", "b", ttl).await.unwrap(),
        "held locally"
    );
    store.unlock("k", "a").await.unwrap();
    assert!(store.try_lock("k", "b", ttl).await.unwrap());
    store.unlock("k", "b").await.unwrap();
    remote.set_down(false);
    assert!(store.try_lock("k", "a", ttl).await.unwrap());
    assert!(
        !remote.inner.try_lock("k", "b", ttl).await.unwrap(),
        "held in the remote"
    );
    store.unlock("k", "a").await.unwrap();
    assert!(remote.inner.try_lock("k", "b", ttl).await.unwrap());
}

#[tokio::test]
async fn the_fleet_budget_is_refused_during_an_outage() {
    let (remote, store) = fixture();
    let per = Duration::from_secs(60);
    assert!(store.take_fleet_budget("p", 5, per, "a").await.unwrap());
    remote.set_down(true);
    let err = store.take_fleet_budget("p", 5, per, "b").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    remote.set_down(false);
    assert!(store.take_fleet_budget("p", 5, per, "c").await.unwrap());
}

#[tokio::test]
async fn audit_records_of_an_outage_are_kept_locally_then_appended_in_order() {
    let (remote, store) = fixture();
    store.append_audit(audit("a1")).await.unwrap();
    remote.set_down(true);
    store.append_audit(audit("a2")).await.unwrap();
    store.append_audit(audit("a3")).await.unwrap();
    assert_eq!(store.audit_backlog_len(), 2);
    let local: Vec<_> = store
        .audit_tail(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.decision_id)
        .collect();
    assert_eq!(local, ["a2", "a3"]);
    remote.set_down(false);
    store.append_audit(audit("a4")).await.unwrap();
    assert_eq!(store.audit_backlog_len(), 0);
    let tail: Vec<_> = remote
        .inner
        .audit_tail(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.decision_id)
        .collect();
    assert_eq!(tail, ["a1", "a2", "a3", "a4"]);
}
