//! End to end, beside the original's consumers: the operator binary, the real engine and a real
//! redis-server. Stats and state keys for every governed container (running or not, without a
//! resource probe), and `--external-alert-agent` leaving `hemostat:events:*` alone.

mod operator;
mod redis_support;
mod support;

use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use redis::AsyncCommands;
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_for};

async fn json_key(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Value> {
    let raw: Option<String> = conn.get(key).await.unwrap();
    raw.map(|r| serde_json::from_str(&r).unwrap())
}

#[tokio::test]
async fn every_governed_container_has_its_keys_and_the_lists_are_left_to_the_alert_agent() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    // No resource probe: the original's dashboard still shows these containers.
    let body = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    dryRun: true\n";
    let policies = policy_dir(dir.path(), &policy_for_run("compat", &run.run_id, body));
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &redis.url(), "--external-alert-agent"],
    )
    .await;
    let target = |spec: ContainerSpec| spec.label("role", "target");
    let running_id = run.spawn("up", target(ContainerSpec::sleeper())).await;
    let exited_id = run.spawn("done", target(ContainerSpec::sh("exit 0"))).await;
    let crashed_id = run
        .spawn("crash", target(ContainerSpec::sh("sleep 1; exit 3")))
        .await;
    let mut conn = redis.connection().await;

    for (suffix, id, status) in [
        ("up", &running_id, "running"),
        ("done", &exited_id, "exited"),
        ("crash", &crashed_id, "exited"),
    ] {
        let name = run.name(suffix);
        let stats_key = format!("hemostat:stats:{name}");
        let state_key = format!("hemostat:state:container:{}", &id[..12]);
        let (stats, state) = wait_for(Duration::from_secs(30), &format!("{name}'s keys"), || {
            let (mut conn, stats_key, state_key) =
                (conn.clone(), stats_key.clone(), state_key.clone());
            async move {
                let stats = json_key(&mut conn, &stats_key).await?;
                let state = json_key(&mut conn, &state_key).await?;
                (stats["status"] == status && state["status"] == status).then_some((stats, state))
            }
        })
        .await;
        for v in [&stats, &state] {
            assert!(v["cpu_percent"].is_f64(), "{name}: {v}");
            assert!(v["memory_percent"].is_f64(), "{name}: {v}");
            assert!(v["timestamp"].as_str().unwrap().ends_with("+00:00"), "{v}");
        }
        assert!(
            stats["cpu_pct"].is_f64() && stats["memory_pct"].is_f64(),
            "{stats}"
        );
        assert_eq!(state["name"], name.as_str());
        assert!(state["memory_usage"].is_u64(), "{state}");
        if status == "running" {
            assert!(
                state["memory_usage"].as_u64().unwrap() > 0,
                "sampled: {state}"
            );
        } else {
            assert_eq!(state["memory_usage"], 0, "not running: {state}");
        }
        for key in [&stats_key, &state_key] {
            let ttl: i64 = conn.ttl(key).await.unwrap();
            assert!((1..=300).contains(&ttl), "{key} TTL {ttl}");
        }
    }

    // The crash is announced on the channels and in the stream, never in the lists.
    let crash = run.name("crash");
    let served = wait_for(Duration::from_secs(30), "the crash's dry run", || {
        let op = &op;
        let crash = crash.clone();
        async move {
            let d = op.decisions("remediation_complete", &crash).await;
            (!d.is_empty()).then_some(d)
        }
    })
    .await;
    assert_eq!(
        served[0]["data"]["result"]["status"], "dry_run",
        "{served:?}"
    );
    assert_eq!(served[0]["event_type"], "remediation_complete");
    let stream: usize = conn.xlen("hemostat:stream:events").await.unwrap();
    assert!(
        stream >= 3,
        "alert, decision and outcome are in the stream: {stream}"
    );
    let lists: Vec<String> = conn.keys("hemostat:events:*").await.unwrap();
    assert!(
        lists.is_empty(),
        "HemoStat wrote {lists:?}\n{}",
        op.log_text()
    );
    run.cleanup();
}
