//! The fallback store against a real `redis-server`: the local view through an outage, then a merge without duplicates.

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use hemostat::adapters::redis::{RedisBus, RedisConfig, safety_redis_key};
use hemostat::model::audit::AuditRecord;
use hemostat::model::decision::ActionKind;
use hemostat::model::safety::{ActionRecord, Outcome, SafetyState};
use hemostat::store::StateStore;
use hemostat::store::fallback::FallbackStore;
use hemostat::store::memory::MemoryStore;
use redis::AsyncCommands;
use redis_support::RedisServer;

const KEY: &str = "n1/web";

fn record(id: &str, secs_ago: i64) -> ActionRecord {
    ActionRecord {
        decision_id: id.into(),
        at: chrono::Utc::now() - chrono::Duration::seconds(secs_ago),
        action: ActionKind::Restart,
        finding: "exited".into(),
        outcome: Outcome::Pending,
    }
}

fn audit(id: &str) -> AuditRecord {
    redis_support::audit_record(id, "")
}

async fn redis_state(server: &RedisServer) -> SafetyState {
    let mut conn = server.connection().await;
    let json: Option<String> = conn.get(safety_redis_key(KEY)).await.unwrap();
    json.map(|j| serde_json::from_str(&j).unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn actions_recorded_during_an_outage_reach_redis_once_after_it_returns() {
    let mut server = RedisServer::start_durable();
    let dir = tempfile::tempdir().unwrap();
    let bus = Arc::new(RedisBus::new(&RedisConfig::from_url(&server.url()).unwrap()).unwrap());
    let store = FallbackStore::new(bus.clone(), MemoryStore::open(dir.path()).unwrap());

    // Redis up: recorded there, mirrored locally.
    store
        .update_safety(KEY, &mut |s| s.actions.push(record("d1", 120)))
        .await
        .unwrap();
    store.append_audit(audit("a1")).await.unwrap();
    assert_eq!(redis_state(&server).await.actions.len(), 1);

    server.stop();

    // The outage: the cooldown's input (the last action) is still readable, updates work.
    let during = store.safety(KEY).await.unwrap();
    assert_eq!(during.actions.last().unwrap().decision_id, "d1");
    assert!(store.in_outage());
    store
        .update_safety(KEY, &mut |s| {
            s.finish("d1", Outcome::Succeeded, chrono::Utc::now());
            s.actions.push(record("d2", 0));
        })
        .await
        .unwrap();
    store.append_audit(audit("a2")).await.unwrap();
    let during = store.safety(KEY).await.unwrap();
    assert_eq!(during.actions.last().unwrap().decision_id, "d2");
    assert!(
        store
            .try_lock(KEY, "me", Duration::from_secs(30))
            .await
            .unwrap(),
        "the local lock"
    );
    store.unlock(KEY, "me").await.unwrap();
    assert!(
        store
            .take_fleet_budget("default", 10, Duration::from_secs(60), "d3")
            .await
            .is_err(),
        "no fleet budget without Redis"
    );
    assert_eq!(store.dirty_keys(), [KEY]);

    server.start_again();

    // Re-sync (what the background task or the next successful call does).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.resync().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.dirty_keys().is_empty());
    assert_eq!(store.audit_backlog_len(), 0);

    let state = redis_state(&server).await;
    let ids: Vec<_> = state
        .actions
        .iter()
        .map(|a| (a.decision_id.as_str(), a.outcome))
        .collect();
    assert_eq!(
        ids,
        [("d1", Outcome::Succeeded), ("d2", Outcome::Pending)],
        "both actions, once each"
    );
    assert_eq!(store.local().safety(KEY).await.unwrap(), state);

    // Another re-sync and a read through the store change nothing.
    store.resync().await.unwrap();
    assert_eq!(store.safety(KEY).await.unwrap(), state);
    assert_eq!(redis_state(&server).await, state);

    let audit: Vec<_> = bus
        .audit_tail(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.decision_id)
        .collect();
    assert_eq!(audit, ["a1", "a2"]);
}
