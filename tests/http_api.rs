//! The HTTP server over real HTTP: probes, metrics, and the JSON API on in-memory fakes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use hemostat::bus::EventSink;
use hemostat::bus::memory::MemorySink;
use hemostat::http::{ApiState, serve};
use hemostat::metrics::Metrics;
use hemostat::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
use hemostat::model::decision::ActionKind;
use hemostat::model::safety::safety_key;
use hemostat::model::safety::{ActionRecord, Outcome};
use hemostat::model::usage::UsagePoint;
use hemostat::model::wire::{Envelope, EventType};
use hemostat::observe::store::ObservedStore;
use hemostat::policy::builtin::{PROTECTED_LABEL, default_policy};
use hemostat::policy::registry::PolicyRegistry;
use hemostat::policy::{SecretRef, Selector};
use hemostat::store::StateStore;
use hemostat::store::memory::MemoryStore;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-a";

fn info(id: &str, name: &str, labels: &[(&str, &str)]) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        name: name.into(),
        image: "registry.example.com/app:1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        state: ContainerState::Running,
        exit_code: None,
        oom_killed: false,
        health: HealthStatus::Healthy,
        health_failing_streak: 0,
        health_output: None,
        restart_count: 2,
        started_at: Some(Utc::now()),
        finished_at: None,
        limits: ResourceLimits::default(),
        pid: Some(42),
    }
}

/// A running server and the fakes behind it.
struct Harness {
    base: String,
    client: reqwest::Client,
    ready: Arc<AtomicBool>,
    sink: Arc<MemorySink>,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl Harness {
    async fn start() -> Self {
        let observed = Arc::new(ObservedStore::default());
        let now = Utc::now();
        observed.upsert(info("id-web-1", "web-1", &[("app", "web")]), now);
        let mut sick = info("id-api", "api", &[("io.hemostat.enable", "true")]);
        sick.health = HealthStatus::Unhealthy;
        observed.upsert(sick, now);
        observed.upsert(info("id-redis", "redis", &[(PROTECTED_LABEL, "true")]), now);
        observed.push_usage(
            "id-web-1",
            UsagePoint {
                at: now,
                cpu_percent: 12.5,
                memory_percent: 40.0,
                memory_used_bytes: 1 << 20,
            },
        );

        let mut web = default_policy();
        web.metadata.name = "web".into();
        web.spec.priority = 10;
        web.spec.selector = Selector {
            match_names: vec!["web-*".into()],
            ..Selector::default()
        };
        web.spec.remediation.actions = vec![ActionKind::Restart, ActionKind::Stop];
        web.spec.remediation.dry_run = true;
        web.spec.alerts.channels = vec![hemostat::policy::Channel::Slack(
            hemostat::policy::SlackChannel {
                webhook_url_from: SecretRef::Env("SLACK_WEBHOOK_URL".into()),
            },
        )];
        let policies = Arc::new(PolicyRegistry::new(vec![default_policy(), web]));

        let store = Arc::new(MemoryStore::ephemeral());
        let open_until = now + chrono::Duration::minutes(30);
        store
            .update_safety(&safety_key(NODE, "web-1"), &mut |s| {
                s.actions.push(ActionRecord {
                    decision_id: "d-1".into(),
                    at: now - chrono::Duration::minutes(5),
                    action: ActionKind::Restart,
                    finding: "unhealthy".into(),
                    outcome: Outcome::Failed,
                });
                s.failures.push(now - chrono::Duration::minutes(4));
                s.open_until = Some(open_until);
            })
            .await
            .unwrap();
        // Another node's container of the same name must not show up here.
        store
            .update_safety(&safety_key("node-b", "api"), &mut |s| {
                s.failures.push(now);
            })
            .await
            .unwrap();

        let sink = Arc::new(MemorySink::default());
        for (t, container) in [
            (EventType::HealthAlert, "web-1"),
            (EventType::RemediationNeeded, "web-1"),
            (EventType::HealthAlert, "api"),
            (EventType::FalseAlarm, "api"),
            (EventType::HealthAlert, "web-1"),
            (EventType::RemediationComplete, "web-1"),
        ] {
            sink.publish(Envelope::new(t, json!({"container": container})))
                .await;
        }

        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::new());
        metrics.action("restart", "success", 1.0);
        let state = ApiState {
            ready: ready.clone(),
            observed,
            sink: sink.clone(),
            store,
            policies,
            metrics,
            node: NODE.into(),
            events: Default::default(),
            access: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, state, shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            ready,
            sink,
            shutdown,
            server,
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
        (status, response.json().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("serve returns after the token is cancelled")
            .unwrap()
            .unwrap();
    }
}

fn containers_of(decisions: &Value) -> Vec<(&str, &str)> {
    decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"]["container"].as_str().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn liveness_is_always_ok_and_readiness_flips_once_ready() {
    let h = Harness::start().await;
    let live = h.get("/healthz").await;
    assert_eq!(live.status(), 200);
    assert_eq!(live.text().await.unwrap(), "ok");

    let before = h.get("/readyz").await;
    assert_eq!(before.status(), 503);
    assert_eq!(before.text().await.unwrap(), hemostat::http::NOT_READY);
    h.ready.store(true, Ordering::Release);
    let after = h.get("/readyz").await;
    assert_eq!(after.status(), 200);
    assert_eq!(after.text().await.unwrap(), "ready");
    h.stop().await;
}

#[tokio::test]
async fn decisions_filter_by_type_container_and_limit_oldest_first() {
    let h = Harness::start().await;
    let (status, all) = h.json("/api/v1/decisions").await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 6);
    assert_eq!(all[0]["agent"], "HemoStat-Monitor");
    assert!(all[0]["timestamp"].is_string());

    let (_, alerts) = h.json("/api/v1/decisions?type=health_alert").await;
    assert_eq!(
        containers_of(&alerts),
        [
            ("health_alert", "web-1"),
            ("health_alert", "api"),
            ("health_alert", "web-1")
        ]
    );

    let (_, web) = h.json("/api/v1/decisions?container=web-1&limit=2").await;
    assert_eq!(
        containers_of(&web),
        [("health_alert", "web-1"), ("remediation_complete", "web-1")],
        "the newest two of web-1's, not the newest two overall filtered"
    );

    let (_, both) = h
        .json("/api/v1/decisions?type=health_alert&container=api")
        .await;
    assert_eq!(containers_of(&both), [("health_alert", "api")]);

    let (_, empty_params) = h.json("/api/v1/decisions?type=&container=&limit=").await;
    assert_eq!(empty_params.as_array().unwrap().len(), 6);

    h.sink
        .publish(Envelope::new(
            EventType::FalseAlarm,
            json!({"container": "web-1"}),
        ))
        .await;
    let (_, newest) = h.json("/api/v1/decisions?limit=1").await;
    assert_eq!(containers_of(&newest), [("false_alarm", "web-1")]);
    h.stop().await;
}

#[tokio::test]
async fn bad_queries_are_400_with_a_json_error() {
    let h = Harness::start().await;
    for (path, needle) in [
        ("/api/v1/decisions?type=alert", "unknown type"),
        ("/api/v1/decisions?limit=0", "limit"),
        ("/api/v1/decisions?limit=1001", "limit"),
        ("/api/v1/decisions?limit=many", "limit"),
        ("/api/v1/audit?limit=-3", "limit"),
    ] {
        let (status, body) = h.json(path).await;
        assert_eq!(status, 400, "{path}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(needle), "{path}: {error}");
        assert_eq!(body.as_object().unwrap().len(), 1);
    }
    h.stop().await;
}

#[tokio::test]
async fn containers_show_their_policy_usage_and_this_nodes_safety_state() {
    let h = Harness::start().await;
    let (status, list) = h.json("/api/v1/containers").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "redis", "web-1"]);

    let (status, web) = h.json("/api/v1/containers/web-1").await;
    assert_eq!(status, 200);
    assert_eq!(web, list[2]);
    assert_eq!(web["id"], "id-web-1");
    assert_eq!(web["image"], "registry.example.com/app:1");
    assert_eq!(web["state"], "running");
    assert_eq!(web["health"], "healthy");
    assert_eq!(web["exit_code"], Value::Null);
    assert_eq!(web["oom_killed"], false);
    assert_eq!(web["restart_count"], 2);
    assert_eq!(web["labels"], json!({"app": "web"}));
    assert_eq!(web["manual_stop"], false);
    assert_eq!(web["protected"], false);
    assert_eq!(web["policy"], "web");
    assert_eq!(web["cpu_percent"], 12.5);
    assert_eq!(web["memory_percent"], 40.0);
    assert_eq!(web["restarts_seen"], 0);
    assert_eq!(web["unhealthy_since"], Value::Null);
    let safety = &web["safety"];
    assert!(safety["last_action_at"].is_string());
    assert_eq!(safety["actions_in_window"], 1);
    assert_eq!(safety["failures"], 1);
    assert!(safety["breaker_open_until"].is_string());

    let (_, api) = h.json("/api/v1/containers/api").await;
    assert_eq!(api["policy"], "hemostat-default");
    assert_eq!(api["health"], "unhealthy");
    assert!(api["unhealthy_since"].is_string());
    assert_eq!(api["cpu_percent"], Value::Null);
    assert_eq!(
        api["safety"],
        json!({"last_action_at": null, "actions_in_window": 0, "failures": 0, "breaker_open_until": null}),
        "another node's state for a container of the same name is not this one's"
    );

    let (_, redis) = h.json("/api/v1/containers/redis").await;
    assert_eq!(redis["protected"], true);
    assert_eq!(redis["policy"], Value::Null);

    let (_, by_id) = h.json("/api/v1/containers/id-redis").await;
    assert_eq!(by_id["name"], "redis");

    let (status, missing) = h.json("/api/v1/containers/nope").await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("nope"));

    let (status, _) = h.json("/api/v1/no-such-route").await;
    assert_eq!(status, 404);
    h.stop().await;
}

#[tokio::test]
async fn policies_are_listed_by_precedence_with_secret_references_only() {
    let h = Harness::start().await;
    let (status, policies) = h.json("/api/v1/policies").await;
    assert_eq!(status, 200);
    let summary: Vec<Value> = policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            json!({"name": p["name"], "priority": p["priority"], "selector": p["selector"],
                   "actions": p["actions"], "dryRun": p["dryRun"]})
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!({"name": "web", "priority": 10, "selector": {"matchNames": ["web-*"]},
             "actions": ["restart", "stop"], "dryRun": true}),
            json!({"name": "hemostat-default", "priority": i32::MIN,
             "selector": {"matchLabels": {"io.hemostat.enable": "true"}},
             "actions": ["restart"], "dryRun": false}),
        ]
    );
    let web = &policies[0];
    assert_eq!(
        web["document"]["spec"]["alerts"]["channels"][0]["slack"]["webhookUrlFrom"],
        json!({"env": "SLACK_WEBHOOK_URL"}),
        "only the reference to the secret: {web}"
    );
    // Not from a file: no source; in force; governing the one web container observed.
    assert_eq!(web["source"], Value::Null);
    assert_eq!(
        web["status"],
        json!({"matchedContainers": 1, "conditions": [{"type": "Ready", "status": "True", "reason": "InForce"}]})
    );
    h.stop().await;
}

#[tokio::test]
async fn audit_is_served_from_the_store() {
    let h = Harness::start().await;
    let (status, audit) = h.json("/api/v1/audit?limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(audit, json!([]));
    h.stop().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text_with_gauges_read_at_scrape_time() {
    let h = Harness::start().await;
    let response = h.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("hemostat_reconciles_total 0"), "{text}");
    assert!(text.contains("hemostat_containers_observed 3\n"), "{text}");
    assert!(text.contains("hemostat_ready 0\n"), "{text}");
    assert!(text.contains(r#"hemostat_actions_total{action="restart",status="success"} 1"#));
    assert!(text.ends_with("# EOF\n"));

    h.ready.store(true, Ordering::Release);
    let text = h.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("hemostat_ready 1\n"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn cancelling_the_token_makes_serve_return_and_stop_listening() {
    let h = Harness::start().await;
    // An open keep-alive connection must not hold the shutdown up.
    assert_eq!(h.get("/healthz").await.status(), 200);
    let base = h.base.clone();
    h.stop().await;
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "still serving after shutdown");
}
