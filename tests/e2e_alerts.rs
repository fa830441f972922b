//! End to end on the real Docker engine with the real binary: crashing containers produce
//! Slack messages, signed webhook envelopes and Alertmanager alerts (resolved when healthy);
//! storms are grouped; a hung Slack never delays a repair; silences mute but never stop repairs;
//! no webhook token ever shows in logs, the API or metrics.

mod operator;
mod receiver;
mod redis_support;
mod support;

use std::time::Duration;

use hmac::{KeyInit, Mac};
use operator::{Operator, policy_dir, policy_for_run};
use receiver::{Alertmanager, Answer, Receiver, slack_text};
use support::{ContainerSpec, TestRun};

/// Crashes with code 3 in its first life, then stays up (a marker survives the restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";

const PROBES: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";

fn target(spec: ContainerSpec) -> ContainerSpec {
    spec.label("role", "target")
}

/// A file holding `value` (a secret reference `{file: …}` points at it).
fn secret_file(dir: &tempfile::TempDir, name: &str, value: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, value).unwrap();
    path.display().to_string()
}

fn token() -> String {
    format!("xtok{}", uuid::Uuid::new_v4().simple())
}

/// Seconds from the end of a container's previous life to its current start.
fn restart_gap(run: &TestRun, id: &str) -> f64 {
    let out = run.docker_cli(&[
        "inspect",
        "-f",
        "{{.State.FinishedAt}} {{.State.StartedAt}}",
        id,
    ]);
    let (finished, started) = out.split_once(' ').unwrap();
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    (t(started) - t(finished)).as_seconds_f64()
}

async fn assert_no_token(op: &Operator, token: &str) {
    let http = reqwest::Client::new();
    for path in [
        "/metrics",
        "/api/v1/policies",
        "/api/v1/alerts?limit=500",
        "/api/v1/silences",
        "/api/v1/decisions?limit=1000",
        "/api/v1/audit?limit=1000",
        "/api/v1/containers",
    ] {
        let body = http
            .get(format!("{}{path}", op.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(token), "{path} shows the webhook token");
    }
    assert!(
        !op.log_text().contains(token),
        "the log shows the webhook token"
    );
}

#[tokio::test]
async fn a_crash_sends_one_slack_message_after_a_429_and_signed_webhook_envelopes_without_leaking_the_token()
 {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::start(vec![Answer::RateLimited(2)], Answer::Ok).await;
    let hook = Receiver::ok().await;
    let tok = token();
    let slack_url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{tok}", slack.base),
    );
    let hook_url = secret_file(&dir, "hook", &format!("{}/hook/{tok}", hook.base));
    let key = "signing-key-for-the-test";
    let key_file = secret_file(&dir, "key", key);
    let alerts = format!(
        "  alerts:\n    groupWait: 1s\n    resolveAfter: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {slack_url}}}}}\n      - webhook: {{urlFrom: {{file: {hook_url}}}, secretFrom: {{file: {key_file}}}}}\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("alerts", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    run.spawn("crash", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    let name = run.name("crash");
    op.wait_audit(&name, 30, "the crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;

    let got = slack
        .wait(20, "Slack accepted a message", |r| {
            r.iter().any(|r| r.answer == "200")
        })
        .await;
    assert_eq!(got[0].answer, "429", "the first attempt was rate limited");
    let accepted = slack.accepted();
    let waited = accepted[0].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, before Retry-After: 2"
    );
    let text = slack_text(&accepted[0].body);
    for word in [name.as_str(), "restart", "success", "test-node", "alerts"] {
        assert!(
            text.contains(word),
            "the message does not name {word:?}: {text}"
        );
    }
    assert_eq!(accepted[0].body["attachments"][0]["color"], "#36a64f");
    assert!(
        accepted[0].path.ends_with(&tok),
        "posted to the configured webhook"
    );

    let posts = hook
        .wait(20, "the webhook received the outcome", |r| !r.is_empty())
        .await;
    let post = &posts[0];
    let ts = post.headers["x-hemostat-timestamp"].to_str().unwrap();
    let sig = post.headers["x-hemostat-signature"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&post.raw);
    assert_eq!(
        sig,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        "the signature verifies"
    );
    let alert = &post.body["alerts"][0];
    assert_eq!(post.body["kind"], "AlertGroup");
    assert_eq!(alert["container"], name.as_str());
    assert_eq!(alert["envelope"]["type"], "remediation_complete");
    assert_eq!(alert["envelope"]["data"]["result"]["status"], "success");

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(slack.accepted().len(), 1, "one message per crash");
    let metrics = reqwest::get(format!("{}/metrics", op.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"hemostat_notifications_total{channel="alerts/slack",result="sent"} 1"#,
        r#"hemostat_notifications_total{channel="alerts/webhook",result="sent"} 1"#,
        r#"hemostat_notification_retries_total{channel="alerts/slack"} 1"#,
        r#"hemostat_notification_queue_depth{channel="alerts/slack"} 0"#,
        r#"hemostat_notification_latency_seconds_count{channel="alerts/slack"} 1"#,
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}");
    }
    assert_no_token(&op, &tok).await;
}

#[tokio::test]
async fn six_containers_crashing_within_a_second_are_at_most_three_messages_naming_all_six() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let alerts = format!(
        "  alerts:\n    groupWait: 5s\n    resolveAfter: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("storm", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    let names: Vec<String> = (0..6).map(|i| run.name(&format!("storm{i}"))).collect();
    let suffixes: Vec<String> = (0..6).map(|i| format!("storm{i}")).collect();
    let spawns = suffixes
        .iter()
        .map(|s| run.spawn(s, target(ContainerSpec::sh(CRASH_ONCE))));
    futures::future::join_all(spawns).await;
    for n in &names {
        op.wait_audit(n, 40, "every crash is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    }
    let all_named = |got: &[receiver::Received]| {
        let text: String = got.iter().map(|r| slack_text(&r.body)).collect();
        names.iter().all(|n| text.contains(n.as_str()))
    };
    slack.wait(20, "the messages name all six", all_named).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = slack.accepted();
    assert!(got.len() <= 3, "{} messages for one storm", got.len());
}

#[tokio::test]
async fn a_hung_slack_endpoint_does_not_delay_the_repair_of_another_container() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::start(vec![], Answer::Hang).await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let alerts = format!(
        "  alerts:\n    groupWait: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("hung", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    let first = run
        .spawn("first", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    op.wait_audit(&run.name("first"), 30, "the first crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;
    slack
        .wait(10, "the Slack endpoint holds a request", |r| !r.is_empty())
        .await;
    let second = run
        .spawn("second", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    op.wait_audit(
        &run.name("second"),
        30,
        "the second crash is repaired",
        |r| r["status"] == "success",
    )
    .await;
    for (what, id) in [("first", &first), ("second", &second)] {
        let gap = restart_gap(&run, id);
        assert!(
            gap < 2.0,
            "{what}: restarted {gap:.2}s after its crash, with Slack hanging"
        );
    }
    assert!(slack.accepted().is_empty());
}

#[tokio::test]
async fn a_silenced_container_is_still_repaired_but_nothing_is_sent() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let slack = Receiver::ok().await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let alerts = format!(
        "  alerts:\n    groupWait: 1s\n    resolveAfter: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("quiet", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let muted = run.name("muted");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args([
            "silence",
            "add",
            "--container",
            &muted,
            "--for",
            "1h",
            "--comment",
            "maintenance",
        ])
        .arg("--state-dir")
        .arg(&state)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let op = Operator::start(&policies, &run.label, &state, &[]).await;
    let silences = op.get("/api/v1/silences").await;
    assert_eq!(silences[0]["id"], id.as_str(), "{silences}");

    run.spawn("muted", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    op.wait_audit(&muted, 30, "the silenced crash is still repaired", |r| {
        r["status"] == "success"
    })
    .await;
    let loud = run.name("loud");
    run.spawn("loud", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    op.wait_audit(&loud, 30, "the other crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;
    slack
        .wait(15, "the other container's message arrives", |r| {
            r.iter()
                .any(|r| slack_text(&r.body).contains(loud.as_str()))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for r in slack.received() {
        assert!(
            !slack_text(&r.body).contains(muted.as_str()),
            "a silenced container was announced"
        );
    }
    let routed = op.get("/api/v1/alerts?limit=500").await;
    let record = routed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"]["container"] == muted.as_str())
        .unwrap_or_else(|| panic!("no routing record for {muted}: {routed}"));
    assert_eq!(record["result"], "silenced");
    assert_eq!(record["silence"], id.as_str());
    // The decision's record says so too; the other container's does not.
    let done = op.decisions("remediation_complete", &muted).await;
    assert_eq!(done[0]["data"]["result"]["status"], "success");
    assert_eq!(done[0]["data"]["silenced"], id.as_str(), "{done:?}");
    let other = op.decisions("remediation_complete", &loud).await;
    assert!(other[0]["data"].get("silenced").is_none(), "{other:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["silence", "expire", &id, "--state-dir"])
        .arg(&state)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["silence", "list", "--state-dir"])
        .arg(&state)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("expired"),
        "{listed}"
    );
}

#[tokio::test]
async fn alertmanager_receives_the_alert_with_its_labels_and_the_resolve() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::ok().await;
    let am = Alertmanager::start(&format!("{}/am", hook.base)).await;
    let alerts = format!(
        "  alerts:\n    groupWait: 0s\n    resolveAfter: 3s\n    channels:\n      - alertmanager: {{url: \"{}\"}}\n",
        am.base
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("am", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    run.spawn("crash", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    let name = run.name("crash");
    op.wait_audit(&name, 30, "the crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;
    let status_of =
        |r: &receiver::Received| r.body["status"].as_str().unwrap_or_default().to_owned();
    let got = hook
        .wait(30, "Alertmanager notifies the firing alert", |r| {
            r.iter().any(|r| status_of(r) == "firing")
        })
        .await;
    let firing = got.iter().find(|r| status_of(r) == "firing").unwrap();
    let labels = &firing.body["alerts"][0]["labels"];
    let want = [
        ("alertname", "HemostatExited"),
        ("container", name.as_str()),
        ("node", "test-node"),
        ("policy", "am"),
        ("severity", "high"),
        ("action", "restart"),
        ("outcome", "success"),
    ];
    for (k, v) in want {
        assert_eq!(labels[k], v, "label {k}: {labels}");
    }
    hook.wait(30, "Alertmanager notifies the resolve", |r| {
        r.iter().any(|r| {
            status_of(r) == "resolved"
                && r.body["alerts"][0]["labels"]["container"] == name.as_str()
        })
    })
    .await;
}

#[tokio::test]
async fn with_redis_a_silence_added_from_the_cli_is_honoured_by_the_operator() {
    let redis = redis_support::RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let alerts = format!(
        "  alerts:\n    groupWait: 0s\n    resolveAfter: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("shared", &run.run_id, &format!("{PROBES}{alerts}")),
    );
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &redis.url()],
    )
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args([
            "silence",
            "add",
            "--policy",
            "shared",
            "--for",
            "10m",
            "--comment",
            "fleet-wide",
            "--redis-url",
            &redis.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let silences = op.get("/api/v1/silences").await;
    assert_eq!(
        silences[0]["id"],
        id.as_str(),
        "served from Redis: {silences}"
    );
    assert_eq!(silences[0]["policy"], "shared");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the router re-reads within 1 s
    let name = run.name("crash");
    run.spawn("crash", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    op.wait_audit(&name, 30, "the crash is repaired", |r| {
        r["status"] == "success"
    })
    .await;
    let routed = support::wait_for(Duration::from_secs(10), "the alert is routed", || async {
        let all = op.get("/api/v1/alerts?limit=500").await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|r| r["alert"]["container"] == name.as_str())
            .cloned()
    })
    .await;
    assert_eq!(routed["result"], "silenced");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(slack.received().is_empty(), "a silenced alert was sent");
}

#[tokio::test]
async fn a_crash_loop_that_opens_the_breaker_is_announced_as_a_refusal_in_orange() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let policy = format!(
        "  probes:\n    exit: {{}}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {{count: 20, per: 1h}}\n    circuitBreaker: {{failures: 2, within: 1h, openFor: 1h}}\n    verifyWithin: 5s\n  alerts:\n    groupWait: 0s\n    resolveAfter: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    let policies = policy_dir(dir.path(), &policy_for_run("loop", &run.run_id, &policy));
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    run.spawn("loop", target(ContainerSpec::sh("sleep 1; exit 1")))
        .await;
    let name = run.name("loop");
    op.wait_audit(&name, 60, "the breaker opens", |r| {
        r["gate"] == "circuit_open"
    })
    .await;
    let got = slack
        .wait(20, "the give-up is announced", |r| {
            r.iter().any(|r| {
                r.body["attachments"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["color"] == "#ff9900"))
            })
        })
        .await;
    let refusal = got
        .iter()
        .find(|r| {
            r.body["attachments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["color"] == "#ff9900")
        })
        .unwrap();
    let text = slack_text(&refusal.body);
    assert!(
        text.contains(&name)
            && text.contains("circuit_open")
            && text.contains("circuit breaker opened"),
        "{text}"
    );
}

#[tokio::test]
async fn the_operator_wide_slack_webhook_url_gets_an_observe_only_finding_and_alert_enabled_false_sends_nothing()
 {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = secret_file(
        &dir,
        "slack",
        &format!("{}/services/T01/B01/{}", slack.base, token()),
    );
    let policy = format!(
        "  probes:\n    exit: {{}}\n  remediation:\n    actions: []\n  alerts:\n    minSeverity: medium\n    groupWait: 0s\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {url}}}}}\n"
    );
    // No channel in the policy: the original's SLACK_WEBHOOK_URL is the operator-wide one.
    let no_channel = policy.split("    channels:").next().unwrap().to_owned();
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("watch", &run.run_id, &no_channel),
    );
    let env_url = format!("{}/services/T01/B01/{}", slack.base, token());
    let op = Operator::start_with_env(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &[],
        &[("SLACK_WEBHOOK_URL", &env_url), ("ALERT_DEDUPE_TTL", "60")],
    )
    .await;
    let name = run.name("crash");
    run.spawn("crash", target(ContainerSpec::sh("sleep 1; exit 3")))
        .await;
    let got = slack
        .wait(20, "the finding is announced", |r| {
            r.iter()
                .any(|r| slack_text(&r.body).contains(name.as_str()))
        })
        .await;
    let text = slack_text(&got[0].body);
    assert!(
        text.contains("problem found, nothing done") && text.contains("Exited with code 3"),
        "{text}"
    );
    drop(op);

    // The same with the original's kill switch: nothing is sent.
    let quiet = Receiver::ok().await;
    let url2 = format!("{}/services/T01/B01/{}", quiet.base, token());
    let run2 = TestRun::new();
    let dir2 = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir2.path(),
        &policy_for_run(
            "watch",
            &run2.run_id,
            &policy.replace(&url, &secret_file(&dir2, "slack", &url2)),
        ),
    );
    let op = Operator::start_with_env(
        &policies,
        &run2.label,
        &dir2.path().join("state"),
        &[],
        &[("ALERT_ENABLED", "false"), ("SLACK_WEBHOOK_URL", &url2)],
    )
    .await;
    let name2 = run2.name("crash");
    run2.spawn("crash", target(ContainerSpec::sh("sleep 1; exit 3")))
        .await;
    support::wait_for(
        Duration::from_secs(20),
        "the finding is decided",
        || async { (!op.decisions("false_alarm", &name2).await.is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        quiet.received().is_empty(),
        "ALERT_ENABLED=false, yet something was sent"
    );
    assert!(op.log_text().contains("ALERT_ENABLED=false"));
}
