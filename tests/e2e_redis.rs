//! End to end with Redis: the operator binary, the real engine and a real redis-server.

mod operator;
mod redis_support;
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use operator::{Operator, policy_dir, policy_for_run};
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_for, wait_until};

const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

fn target(spec: ContainerSpec) -> ContainerSpec {
    spec.label("role", "target")
}

async fn start(
    dir: &std::path::Path,
    run: &TestRun,
    redis: &RedisServer,
    body: &str,
    state: &str,
) -> Operator {
    let policies = policy_dir(dir, &policy_for_run("e2e", &run.run_id, body));
    Operator::start(
        &policies,
        &run.label,
        &dir.join(state),
        &["--redis-url", &redis.url()],
    )
    .await
}

#[tokio::test]
async fn a_crash_scenario_publishes_the_four_channels_with_the_exact_envelope_and_the_stream_holds_them()
 {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
    pubsub.psubscribe("hemostat:*").await.unwrap();
    let body = "  probes:\n    exit: {nonZeroOnly: false}\n    cpu: {abovePercent: 99, for: 1h}\n  remediation:\n    actions: [restart]\n    minConfidence: 0.8\n    cooldown: 1h\n";
    let op = start(dir.path(), &run, &redis, body, "state").await;
    run.spawn("crash", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    run.spawn("clean", target(ContainerSpec::sh("sleep 1; exit 0")))
        .await;
    let (crash, clean) = (run.name("crash"), run.name("clean"));

    let mut seen: Vec<(String, Value)> = Vec::new();
    let mut messages = pubsub.on_message();
    let deadline = Instant::now() + Duration::from_secs(40);
    let wanted = [
        "hemostat:health_alert",
        "hemostat:remediation_needed",
        "hemostat:false_alarm",
        "hemostat:remediation_complete",
    ];
    while !wanted.iter().all(|c| seen.iter().any(|(ch, _)| ch == c)) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, messages.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "channels seen: {:?}\nlog:\n{}",
                    seen.iter().map(|s| &s.0).collect::<Vec<_>>(),
                    op.log_text()
                )
            })
            .unwrap();
        let payload: String = msg.get_payload().unwrap();
        seen.push((
            msg.get_channel_name().to_owned(),
            serde_json::from_str(&payload).unwrap(),
        ));
    }
    drop(messages);
    for (channel, envelope) in &seen {
        let keys: Vec<&str> = envelope
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["agent", "data", "event_type", "timestamp", "type"],
            "{envelope}"
        );
        assert_eq!(envelope["event_type"], envelope["type"], "{envelope}");
        assert_eq!(
            format!("hemostat:{}", envelope["type"].as_str().unwrap()),
            *channel
        );
        let ts = envelope["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.6f%:z").is_ok()
                && ts.ends_with("+00:00"),
            "{ts}"
        );
        let agent = match envelope["type"].as_str().unwrap() {
            "health_alert" => "HemoStat-Monitor",
            "remediation_needed" | "false_alarm" => "HemoStat-Analyzer",
            _ => "HemoStat-Responder",
        };
        assert_eq!(envelope["agent"], agent);
        assert_eq!(envelope["data"]["node"], "test-node");
    }
    let on = |ch: &str, c: &str| {
        seen.iter()
            .find(|(k, e)| k == ch && e["data"]["container"] == c)
            .map(|(_, e)| e.clone())
    };
    let alert = on("hemostat:health_alert", &crash).unwrap();
    assert!(
        alert["data"]["issues"][0]
            .as_str()
            .unwrap()
            .contains("Exited with code 3")
    );
    assert!(alert["data"]["metrics"]["name"] == crash.as_str());
    let needed = on("hemostat:remediation_needed", &crash).unwrap();
    assert_eq!(needed["data"]["action"], "restart");
    assert!(needed["data"]["confidence"].as_f64().unwrap() >= 0.8);
    let complete = on("hemostat:remediation_complete", &crash).unwrap();
    assert_eq!(complete["data"]["result"]["status"], "success");
    assert_eq!(complete["data"]["result"]["container"], crash.as_str());
    let false_alarm = on("hemostat:false_alarm", &clean).unwrap();
    assert!(
        false_alarm["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("false alarm")
    );

    // The durable stream holds every one of them, as the same JSON.
    let mut conn = redis.connection().await;
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("hemostat:stream:events")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stream: Vec<Value> = entries
        .ids
        .iter()
        .map(|e| serde_json::from_str(&e.get::<String>("envelope").unwrap()).unwrap())
        .collect();
    for (_, envelope) in &seen {
        assert!(
            stream.contains(envelope),
            "missing from the stream: {envelope}"
        );
    }
    // The original keys.
    let key = format!("hemostat:stats:{crash}");
    wait_until(Duration::from_secs(15), "the stats key is written", || {
        let client = redis.client();
        let key = key.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.unwrap();
            let ttl: i64 = redis::cmd("TTL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            ttl > 0 && ttl <= 300
        }
    })
    .await;
    let stats: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["name"], crash.as_str());
    assert!(stats["cpu_pct"].is_number() && stats["memory_pct"].is_number());
    let history: String = redis::cmd("GET")
        .arg(format!("hemostat:remediation:{crash}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(history.contains("last_action"), "{history}");
    let listed: Vec<String> = redis::cmd("LRANGE")
        .arg("hemostat:events:remediation_complete")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!listed.is_empty());
}

#[tokio::test]
async fn two_operators_on_one_engine_restart_a_failure_exactly_once() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let body =
        "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n";
    let a = start(dir.path(), &run, &redis, body, "a").await;
    let b = start(dir.path(), &run, &redis, body, "b").await;
    let id = run
        .spawn("twice", target(ContainerSpec::sh("sleep 2; exit 1")))
        .await;
    let name = run.name("twice");
    wait_until(
        Duration::from_secs(30),
        "one operator restarts it",
        || async {
            a.audit_for(&name)
                .await
                .iter()
                .any(|r| r["status"] == "success")
        },
    )
    .await;
    // It crashes again; both operators see it; the shared cooldown holds for both.
    wait_until(
        Duration::from_secs(20),
        "both have refused the second failure",
        || async {
            let audit = b.audit_for(&name).await;
            audit
                .iter()
                .filter(|r| r["gate"] == "cooldown" || r["gate"] == "in_flight")
                .count()
                >= 2
        },
    )
    .await;
    let audit = a.audit_for(&name).await;
    let restarts = audit
        .iter()
        .filter(|r| {
            r["action"] == "restart" && (r["status"] == "success" || r["status"] == "failed")
        })
        .count();
    assert_eq!(restarts, 1, "{audit:?}");
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]),
        "exited"
    );
}

#[tokio::test]
async fn an_applied_policy_is_enforced_within_two_seconds() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    // The file policy selects nothing of this run; the applied one selects the crashed container.
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("from-file", "nobody", "  probes:\n    exit: {}\n"),
    );
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &redis.url()],
    )
    .await;
    let id = run
        .spawn("late", target(ContainerSpec::sh("sleep 1; exit 4")))
        .await;
    wait_until(
        Duration::from_secs(20),
        "the container has crashed",
        || async { run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]) == "exited" },
    )
    .await;
    let name = run.name("late");
    assert!(op.decisions("remediation_needed", &name).await.is_empty());
    let applied = dir.path().join("applied.yaml");
    std::fs::write(
        &applied,
        policy_for_run(
            "applied",
            &run.run_id,
            "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["apply", "-f"])
        .arg(&applied)
        .env("REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "healthpolicy/applied created"
    );
    let needed = wait_for(
        Duration::from_secs(2),
        "the applied policy is enforced",
        || async {
            op.decisions("remediation_needed", &name)
                .await
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(needed["data"]["policy"], "applied");
    eprintln!("apply to remediation_needed: {:?}", started.elapsed());
}

#[tokio::test]
async fn an_operator_restart_keeps_the_cooldown_and_breaker_state_in_redis() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let body =
        "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n";
    // Different state dirs: only Redis can carry the state across.
    let mut first = start(dir.path(), &run, &redis, body, "first").await;
    let id = run
        .spawn("again", target(ContainerSpec::sh("sleep 2; exit 1")))
        .await;
    let name = run.name("again");
    wait_until(
        Duration::from_secs(30),
        "the first crash is restarted",
        || async {
            first
                .audit_for(&name)
                .await
                .iter()
                .any(|r| r["status"] == "success")
        },
    )
    .await;
    first.kill9();
    wait_until(Duration::from_secs(20), "it crashes again", || async {
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]) == "exited"
    })
    .await;
    let second = start(dir.path(), &run, &redis, body, "second").await;
    let refused = second
        .wait_audit(&name, 30, "the cooldown from Redis holds", |r| {
            r["gate"] == "cooldown"
        })
        .await;
    assert_eq!(refused["status"], "rejected");
    let mut conn = redis.connection().await;
    let state: String = redis::cmd("GET")
        .arg(format!("hemostat:safety:test-node/{name}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["actions"].as_array().unwrap().len(), 1, "{state}");
    assert_eq!(
        state["failures"].as_array().unwrap().len(),
        1,
        "the crash after the repair counts for the breaker: {state}"
    );
}

#[tokio::test]
async fn the_fleet_budget_holds_across_two_nodes() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = |role: &str| {
        format!(
            "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: fleet\nspec:\n  selector:\n    matchLabels: {{hemostat.test.run: \"{}\", role: {role}}}\n  probes:\n    exit: {{}}\n  remediation:\n    actions: [restart]\n    fleetBudget: {{maxActions: 1, per: 1h}}\n",
            run.run_id
        )
    };
    let mut ops = Vec::new();
    for node in ["node-a", "node-b"] {
        let node_dir = dir.path().join(node);
        let policies = policy_dir(&node_dir, &policy(node));
        ops.push(
            Operator::start(
                &policies,
                &run.label,
                &node_dir.join("state"),
                &["--redis-url", &redis.url(), "--node-name", node],
            )
            .await,
        );
    }
    run.spawn("a", ContainerSpec::sh(CRASH_ONCE).label("role", "node-a"))
        .await;
    run.spawn("b", ContainerSpec::sh(CRASH_ONCE).label("role", "node-b"))
        .await;
    let audit = wait_for(
        Duration::from_secs(40),
        "both crashes are decided",
        || async {
            let audit = ops[0].audit().await;
            let decided = audit
                .iter()
                .filter(|r| r["status"] == "success" || r["gate"] == "fleet_budget")
                .count();
            (decided >= 2).then_some(audit)
        },
    )
    .await;
    let successes: Vec<&Value> = audit.iter().filter(|r| r["status"] == "success").collect();
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|r| r["gate"] == "fleet_budget")
        .collect();
    assert_eq!(successes.len(), 1, "{audit:?}");
    assert_eq!(refused.len(), 1, "{audit:?}");
    assert_ne!(successes[0]["node"], refused[0]["node"]);
}

#[tokio::test]
async fn during_a_redis_outage_containers_are_still_repaired_and_no_envelope_is_lost() {
    let mut redis = RedisServer::start_durable();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let body =
        "  probes:\n    exit: {}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n";
    let op = start(dir.path(), &run, &redis, body, "state").await;
    redis.stop();
    let id = run
        .spawn("outage", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    let name = run.name("outage");
    // Repaired from the local view while Redis is down.
    wait_until(
        Duration::from_secs(40),
        "the crash is repaired during the outage",
        || async {
            run.docker_cli(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", &id])
                .starts_with("running")
                && op
                    .audit_for(&name)
                    .await
                    .iter()
                    .any(|r| r["status"] == "success")
        },
    )
    .await;
    redis.start_again();
    // Every envelope of the scenario reaches the durable stream, in order.
    let types = wait_for(Duration::from_secs(30), "the outbox is delivered", || {
        let client = redis.client();
        let name = name.clone();
        async move {
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg("hemostat:stream:events")
                .arg("-")
                .arg("+")
                .query_async(&mut c)
                .await
                .ok()?;
            let types: Vec<String> = entries
                .ids
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(&e.get::<String>("envelope")?).ok())
                .filter(|e| e["data"]["container"] == name.as_str())
                .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
                .collect();
            (types.len() >= 3).then_some(types)
        }
    })
    .await;
    assert_eq!(
        types,
        ["health_alert", "remediation_needed", "remediation_complete"]
    );
    // The safety state recorded during the outage was merged into Redis.
    let key = format!("hemostat:safety:test-node/{name}");
    wait_until(
        Duration::from_secs(15),
        "the local safety state is merged back",
        || {
            let client = redis.client();
            let key = key.clone();
            async move {
                let mut c = client.get_multiplexed_async_connection().await.unwrap();
                let state: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                state.is_some_and(|s| s.contains("\"restart\""))
            }
        },
    )
    .await;
}
