//! A real multi-node fleet on this engine: three operator containers from the image (`node-a`, `node-b`, `node-c`) and a Redis container on a private Docker network.
//!
//! On one engine the three nodes stand for three Docker hosts: each observes only "its"
//! containers (`--label-filter hst.fleet.node=<run>-<node>`), as a DaemonSet pod sees only its
//! node's engine. Everything else is shared as in a real fleet: one Redis (state, locks, fleet
//! budget, audit, the decision stream), and, with `--accept-external-requests`, every node
//! hears every other node's `remediation_needed` on pub/sub and must not carry it out. One
//! scenario also lets all three observe the same containers: the engine-keyed lock still
//! allows one repair per failure.
//! Scenarios run one at a time (each starts its own fleet), to stay gentle on a 2-core host.

mod deploy_support;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use deploy_support::{Network, OperatorContainer, RedisContainer, docker, restarts_since};
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_for, wait_until};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Exits 3 after a second the first time; sleeps when restarted (the file survives a restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";
/// Exits 3 two seconds after every start.
const CRASH_ALWAYS: &str = "sleep 2; exit 3";

static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fleet {
    // Field order is drop order: operators and Redis go with the run, then the network.
    nodes: Vec<OperatorContainer>,
    redis: RedisContainer,
    run: TestRun,
    net: Network,
    _dir: tempfile::TempDir,
    since: String,
}

impl Fleet {
    /// Starts Redis and three operators sharing it, all under one policy (`remediation` is
    /// the policy's `remediation:` body, indented 4).
    async fn start(remediation: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_with(remediation, extra_env, false).await
    }

    /// Like [`Fleet::start`]; with `shared_view` every node observes every container of the
    /// run (three operators on one engine, as when a DaemonSet is misconfigured or a host runs
    /// two), else each node only its own.
    async fn start_with(remediation: &str, extra_env: &[(&str, &str)], shared_view: bool) -> Self {
        let since = chrono::Utc::now().timestamp().to_string();
        let run = TestRun::new();
        let net = Network::new(&run, "fleet");
        let redis = RedisContainer::start(&run, &net.name, "redis").await;
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(
            policies.join("fleet.yaml"),
            format!(
                "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: fleet\nspec:\n  selector:\n    matchLabels: {{hemostat.test.run: \"{}\"}}\n  probes:\n    exit: {{}}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 15s\n{remediation}",
                run.run_id
            ),
        )
        .unwrap();
        let mut nodes = Vec::new();
        for node in NODES {
            let mut env = vec![
                ("HEMOSTAT_NODE_NAME", node),
                ("REDIS_URL", "redis://redis:6379/0"),
            ];
            env.extend_from_slice(extra_env);
            nodes.push(
                OperatorContainer::start(
                    &run,
                    node,
                    &policies,
                    &dir.path().join(node),
                    &if shared_view {
                        run.label.clone()
                    } else {
                        node_label(&run, node)
                    },
                    &env,
                    &[&net.name],
                )
                .await,
            );
        }
        for op in &nodes {
            wait_until(
                Duration::from_secs(20),
                "every node reaches Redis through the private network",
                || async {
                    op.container
                        .logs()
                        .contains("shared state and decisions go to Redis")
                },
            )
            .await;
        }
        Fleet {
            nodes,
            redis,
            run,
            net,
            _dir: dir,
            since,
        }
    }

    fn node(&self, name: &str) -> &OperatorContainer {
        &self.nodes[NODES.iter().position(|n| *n == name).unwrap()]
    }

    /// Starts a busybox container belonging to `node`; returns its full name.
    async fn spawn_on(&self, node: &str, suffix: &str, script: &str) -> String {
        let label = node_label(&self.run, node);
        let (k, v) = label.split_once('=').unwrap();
        self.run
            .spawn(suffix, ContainerSpec::sh(script).label(k, v))
            .await;
        self.run.name(suffix)
    }

    /// Fleet-wide audit records (from Redis) about `container`.
    async fn audit_for(&self, container: &str) -> Vec<Value> {
        self.redis
            .audit()
            .await
            .into_iter()
            .filter(|r| r["container"] == container)
            .collect()
    }

    /// Engine `restart` events of this run's containers since the fleet started.
    fn engine_restarts(&self) -> HashMap<String, usize> {
        restarts_since(&self.since, &self.run.label)
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.container.name, n.container.logs()))
            .collect()
    }
}

/// Polls `f` every 200 ms until it returns `Some`; panics naming `what`, with every node's
/// logs, after `timeout`.
async fn eventually<T, F, Fut>(fleet: &Fleet, timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting until {what}; logs:\n{}",
                fleet.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_label(run: &TestRun, node: &str) -> String {
    format!("hst.fleet.node={}-{node}", &run.run_id[..8])
}

fn executed(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["action"] == "restart" && (r["status"] == "success" || r["status"] == "failed")
        })
        .collect()
}

#[tokio::test]
async fn each_failure_is_repaired_exactly_once_across_the_fleet() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = Fleet::start("", &[("HEMOSTAT_ACCEPT_EXTERNAL_REQUESTS", "true")]).await;
    let mut owners = Vec::new();
    for node in NODES {
        for i in 0..2 {
            let name = fleet
                .spawn_on(node, &format!("{node}-crash{i}"), CRASH_ONCE)
                .await;
            owners.push((name, node));
        }
    }
    wait_until(
        Duration::from_secs(90),
        "all six crashes are repaired",
        || async {
            let audit = fleet.redis.audit().await;
            owners.iter().all(|(name, _)| {
                audit
                    .iter()
                    .any(|r| r["container"] == name.as_str() && r["status"] == "success")
            })
        },
    )
    .await;
    // Let late duplicates show up, if any node were to carry out another node's request.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarts = fleet.engine_restarts();
    for (name, node) in &owners {
        let audit = fleet.audit_for(name).await;
        let done = executed(&audit);
        assert_eq!(done.len(), 1, "{name}: {audit:?}\n{}", fleet.logs());
        assert_eq!(
            done[0]["node"], *node,
            "{name} was repaired by another node"
        );
        assert_eq!(
            restarts.get(name),
            Some(&1),
            "the engine restarted {name} other than once: {restarts:?}"
        );
    }
    let stream = fleet.redis.stream().await;
    for (name, _) in &owners {
        let complete = stream
            .iter()
            .filter(|e| {
                e["type"] == "remediation_complete" && e["data"]["container"] == name.as_str()
            })
            .count();
        assert_eq!(
            complete, 1,
            "{name}: one remediation_complete in the stream"
        );
    }
    // Each node heard all six requests on pub/sub: its own two ignored as its own, the four
    // of the others ignored as another node's.
    for op in &fleet.nodes {
        let wait = |result: &'static str, want: f64| async move {
            wait_until(Duration::from_secs(10), result, || async {
                op.metric(&format!(
                    "hemostat_external_requests_total{{result=\"{result}\"}}"
                ))
                .await
                    == Some(want)
            })
            .await
        };
        wait("ignored_own", 2.0).await;
        wait("ignored_other_node", 4.0).await;
    }
}

#[tokio::test]
async fn three_nodes_watching_the_same_containers_repair_each_failure_once() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = Fleet::start_with("", &[], true).await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(
            fleet
                .spawn_on("node-a", &format!("shared{i}"), CRASH_ONCE)
                .await,
        );
    }
    wait_until(
        Duration::from_secs(60),
        "the three crashes are repaired",
        || async {
            let audit = fleet.redis.audit().await;
            names.iter().all(|n| {
                audit
                    .iter()
                    .any(|r| r["container"] == n.as_str() && r["status"] == "success")
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarts = fleet.engine_restarts();
    for name in &names {
        let audit = fleet.audit_for(name).await;
        assert_eq!(
            executed(&audit).len(),
            1,
            "{name}: {audit:?}\n{}",
            fleet.logs()
        );
        assert_eq!(restarts.get(name), Some(&1), "{name}: {restarts:?}");
    }
}

#[tokio::test]
async fn the_fleet_budget_holds_across_the_three_nodes() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = Fleet::start("    fleetBudget: {maxActions: 2, per: 1h}\n", &[]).await;
    let mut names = Vec::new();
    for node in NODES {
        names.push(
            fleet
                .spawn_on(node, &format!("{node}-budget"), CRASH_ONCE)
                .await,
        );
    }
    let audit = wait_for(
        Duration::from_secs(60),
        "the three crashes are decided",
        || async {
            let audit: Vec<Value> = fleet
                .redis
                .audit()
                .await
                .into_iter()
                .filter(|r| names.iter().any(|n| r["container"] == n.as_str()))
                .collect();
            let decided = audit
                .iter()
                .filter(|r| r["status"] == "success" || r["gate"] == "fleet_budget")
                .count();
            (decided >= 3).then_some(audit)
        },
    )
    .await;
    let successes: Vec<&Value> = audit.iter().filter(|r| r["status"] == "success").collect();
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|r| r["gate"] == "fleet_budget")
        .collect();
    assert_eq!(successes.len(), 2, "{audit:?}");
    assert_eq!(refused.len(), 1, "{audit:?}");
    let mut nodes: Vec<&str> = audit.iter().filter_map(|r| r["node"].as_str()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, NODES, "each node decided its own container");
    let restarts = fleet.engine_restarts();
    assert_eq!(restarts.values().sum::<usize>(), 2, "{restarts:?}");
    let mut c = fleet.redis.connection().await.unwrap();
    let counted: i64 = redis::cmd("ZCARD")
        .arg("hemostat:fleet:budget:fleet")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(counted, 2);
}

#[tokio::test]
async fn a_node_cut_off_from_redis_keeps_protecting_and_merges_back_when_reconnected() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = Fleet::start("", &[]).await;
    let c = fleet.node("node-c");
    docker(&["network", "disconnect", &fleet.net.name, &c.container.id]);

    // Cut off, node-c repairs its crashing container from its local view, and its cooldown
    // still refuses the second failure.
    let cut = fleet.spawn_on("node-c", "cut", CRASH_ALWAYS).await;
    let local = eventually(
        &fleet,
        Duration::from_secs(60),
        "node-c repairs, then refuses by cooldown, while cut off",
        || async {
            let audit: Vec<Value> = c
                .audit()
                .await
                .into_iter()
                .filter(|r| r["container"] == cut.as_str())
                .collect();
            (audit.iter().any(|r| r["status"] == "success")
                && audit.iter().any(|r| r["gate"] == "cooldown"))
            .then_some(audit)
        },
    )
    .await;
    // Meanwhile the rest of the fleet works as usual.
    let a_name = fleet.spawn_on("node-a", "a-during", CRASH_ONCE).await;
    wait_until(
        Duration::from_secs(40),
        "node-a repairs through Redis during node-c's partition",
        || async {
            fleet
                .audit_for(&a_name)
                .await
                .iter()
                .any(|r| r["status"] == "success")
        },
    )
    .await;
    assert!(
        fleet.audit_for(&cut).await.is_empty(),
        "node-c's records cannot be in Redis while it is cut off"
    );

    docker(&["network", "connect", &fleet.net.name, &c.container.id]);
    // Every envelope node-c published about its container while cut off reaches the stream:
    // a remediation_complete for each decision it recorded locally, after its alert and request.
    let decisions: Vec<String> = local
        .iter()
        .filter_map(|r| r["decision_id"].as_str().map(str::to_owned))
        .collect();
    let streamed = wait_for(
        Duration::from_secs(60),
        "node-c's outbox reaches the stream after reconnecting",
        || async {
            let mine: Vec<Value> = fleet
                .redis
                .stream()
                .await
                .into_iter()
                .filter(|e| e["data"]["container"] == cut.as_str())
                .collect();
            decisions
                .iter()
                .all(|d| {
                    mine.iter().any(|e| {
                        e["type"] == "remediation_complete"
                            && e["data"]["decision_id"] == d.as_str()
                    })
                })
                .then_some(mine)
        },
    )
    .await;
    // Delivery is at least once: retries written into the dead connection during the partition
    // may arrive too. Identical envelopes are one envelope.
    let mut unique: Vec<&Value> = Vec::new();
    for e in &streamed {
        if !unique.contains(&e) {
            unique.push(e);
        }
    }
    let types: Vec<&str> = unique.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        &types[..3],
        ["health_alert", "remediation_needed", "remediation_complete"],
        "{types:?}"
    );
    assert!(
        streamed.iter().all(|e| e["data"]["node"] == "node-c"),
        "{streamed:?}"
    );
    let first_complete = fleet
        .redis
        .stream()
        .await
        .into_iter()
        .find(|e| e["type"] == "remediation_complete" && e["data"]["container"] == cut.as_str())
        .unwrap();
    assert_eq!(first_complete["data"]["node"], "node-c");
    assert_eq!(first_complete["data"]["result"]["status"], "success");
    // The local safety state and audit are merged into Redis.
    let key = format!("hemostat:safety:node-c/{cut}");
    wait_until(
        Duration::from_secs(30),
        "node-c's safety state is merged into Redis",
        || async {
            fleet
                .redis
                .get(&key)
                .await
                .is_some_and(|s| s.contains("\"restart\""))
        },
    )
    .await;
    let merged = wait_for(
        Duration::from_secs(30),
        "node-c's audit records are merged into Redis",
        || async {
            let audit = fleet.audit_for(&cut).await;
            audit
                .iter()
                .any(|r| r["status"] == "success")
                .then_some(audit)
        },
    )
    .await;
    assert_eq!(executed(&merged).len(), 1, "{merged:?}\nlocal: {local:?}");
    assert_eq!(fleet.engine_restarts().get(&cut), Some(&1));
}

#[tokio::test]
async fn a_killed_node_restarts_and_resumes_without_double_actions() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let fleet = Fleet::start("", &[]).await;
    let a = fleet.node("node-a");
    let name = fleet.spawn_on("node-a", "flaky", CRASH_ALWAYS).await;
    wait_until(
        Duration::from_secs(40),
        "node-a repairs the first crash",
        || async {
            fleet
                .audit_for(&name)
                .await
                .iter()
                .any(|r| r["status"] == "success")
        },
    )
    .await;
    docker(&["kill", &a.container.id]);
    // While node-a is down, the container crashes again (two seconds after its restart).
    wait_until(
        Duration::from_secs(20),
        "the container exits again",
        || async { docker(&["inspect", "-f", "{{.State.Status}}", &name]) == "exited" },
    )
    .await;
    docker(&["start", &a.container.id]);
    // The published port may change across a restart.
    let a = OperatorContainer::attach(a.container.clone()).await;
    a.wait_ready(Duration::from_secs(30)).await;

    // It resumes: the old failure is refused by the cooldown kept in Redis...
    let audit = wait_for(
        Duration::from_secs(40),
        "the restarted node refuses the second crash by cooldown",
        || async {
            let audit = fleet.audit_for(&name).await;
            audit
                .iter()
                .any(|r| r["gate"] == "cooldown" && r["node"] == "node-a")
                .then_some(audit)
        },
    )
    .await;
    // ...and a new failure is repaired.
    let fresh = fleet.spawn_on("node-a", "fresh", CRASH_ONCE).await;
    wait_until(
        Duration::from_secs(40),
        "the restarted node repairs a new crash",
        || async {
            fleet
                .audit_for(&fresh)
                .await
                .iter()
                .any(|r| r["status"] == "success")
        },
    )
    .await;
    assert_eq!(executed(&audit).len(), 1, "{audit:?}\n{}", fleet.logs());
    let restarts = fleet.engine_restarts();
    assert_eq!(restarts.get(&name), Some(&1), "{restarts:?}");
    assert_eq!(restarts.get(&fresh), Some(&1), "{restarts:?}");
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Status}}", &name]),
        "exited",
        "the crashing container stays down under the cooldown"
    );
}
