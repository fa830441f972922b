//! Alert delivery over real HTTP against local servers speaking Slack's webhook API: retries on
//! 500 and on a server that never answers, a full queue while the endpoint hangs, the router's
//! grouping of a storm of alerts, `hemostat alert test`, and silences kept in a real Redis.

mod receiver;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hemostat::alert::channels::ChannelSpec;
use hemostat::alert::metrics::AlertMetrics;
use hemostat::alert::notify::{Channel, Delivery};
use hemostat::alert::router::{AlertRouter, BuildNotifier, History, RouterOptions};
use hemostat::alert::silence::Silence;
use hemostat::alert::state::{AlertState, FileAlertState};
use hemostat::alert::{Alert, AlertKind};
use hemostat::model::wire::{Envelope, EventType};
use hemostat::policy::registry::PolicyRegistry;
use hemostat::policy::{Channel as PolicyChannel, HumanDuration, SecretRef, SlackChannel};
use receiver::{Answer, Receiver, slack_text};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn url_file(dir: &tempfile::TempDir, url: &str) -> SecretRef {
    let path = dir.path().join(format!("url-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, url).unwrap();
    SecretRef::File(path.display().to_string())
}

fn outcome(container: &str) -> Alert {
    let mut a = Alert::test("n1");
    a.kind = AlertKind::Outcome;
    a.container = container.into();
    a.action = Some("restart".into());
    a.outcome = "success".into();
    a
}

fn slack_channel(
    dir: &tempfile::TempDir,
    base: &str,
    delivery: Delivery,
    metrics: &AlertMetrics,
) -> Channel {
    let spec = ChannelSpec::Slack {
        url: url_file(dir, &format!("{base}/services/T/B/x")),
    };
    let client = hemostat::adapters::http_client(delivery.timeout);
    let notifier = hemostat::adapters::notifier_for(&spec, &client, delivery.timeout).unwrap();
    Channel::spawn(
        delivery,
        notifier,
        metrics.clone(),
        CancellationToken::new(),
    )
}

fn quick(name: &str) -> Delivery {
    Delivery {
        timeout: Duration::from_millis(500),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        ..Delivery::new(name, Duration::ZERO, 100)
    }
}

async fn until(metrics: &AlertMetrics, channel: &str, result: &str, n: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while metrics.get(channel, result) < n {
        assert!(
            Instant::now() < deadline,
            "{channel}: {result} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_500_and_a_server_that_never_answers_are_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::start(vec![Answer::ServerError, Answer::Hang], Answer::Ok).await;
    let metrics = AlertMetrics::default();
    let ch = slack_channel(&dir, &slack.base, quick("s"), &metrics);
    ch.push(outcome("web-1"));
    until(&metrics, "s", "sent", 1, 10).await;
    let answers: Vec<String> = slack.received().into_iter().map(|r| r.answer).collect();
    assert_eq!(answers, ["500", "hang", "200"]);
    assert!(slack_text(&slack.accepted()[0].body).contains("web-1 on n1: restart success"));
}

#[tokio::test]
async fn a_hung_endpoint_never_blocks_the_caller_and_a_full_queue_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::start(vec![], Answer::Hang).await;
    let metrics = AlertMetrics::default();
    let ch = slack_channel(
        &dir,
        &slack.base,
        Delivery {
            queue_capacity: 10,
            timeout: Duration::from_secs(30),
            ..quick("h")
        },
        &metrics,
    );
    ch.push(outcome("first"));
    slack
        .wait(5, "the endpoint holds the first request", |r| !r.is_empty())
        .await;
    let started = Instant::now();
    for i in 0..100 {
        ch.push(outcome(&format!("c{i}")));
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "pushing waited {:?}",
        started.elapsed()
    );
    assert_eq!(ch.depth(), 10);
    assert_eq!(metrics.get("h", "dropped"), 90);
}

#[tokio::test]
async fn a_slack_channel_sends_at_most_one_message_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let metrics = AlertMetrics::default();
    let ch = slack_channel(
        &dir,
        &slack.base,
        Delivery {
            per_second: std::num::NonZeroU32::new(1).unwrap(),
            ..quick("rl")
        },
        &metrics,
    );
    for i in 0..3 {
        ch.push(outcome(&format!("c{i}")));
        until(&metrics, "rl", "sent", i + 1, 10).await;
    }
    let at: Vec<Instant> = slack.accepted().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 3);
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(900),
            "two messages {gap:?} apart"
        );
    }
}

fn policy_with_slack(
    name: &str,
    url: SecretRef,
    group_wait: u64,
) -> hemostat::policy::HealthPolicy {
    let mut p = hemostat::policy::builtin::default_policy();
    p.metadata.name = name.into();
    p.spec.alerts.group_wait = HumanDuration::from_secs(group_wait);
    p.spec.alerts.resolve_after = HumanDuration::from_secs(0);
    p.spec.alerts.channels = vec![PolicyChannel::Slack(SlackChannel {
        webhook_url_from: url,
    })];
    p
}

fn completion(container: &str, policy: &str) -> Envelope {
    Envelope::new(
        EventType::RemediationComplete,
        json!({"container": container, "action": "restart", "node": "n1", "policy": policy,
               "decision_id": uuid::Uuid::new_v4().to_string(), "reason": "Exited with code 3",
               "result": {"status": "success", "details": "container is back"}}),
    )
}

fn router(
    policies: Vec<hemostat::policy::HealthPolicy>,
    state: Arc<dyn AlertState>,
    metrics: &AlertMetrics,
) -> (AlertRouter, Arc<History>) {
    let client = hemostat::adapters::http_client(Duration::from_secs(5));
    let build: Arc<BuildNotifier> = Arc::new(move |spec| {
        hemostat::adapters::notifier_for(spec, &client, Duration::from_secs(5))
    });
    let history = Arc::new(History::default());
    let r = AlertRouter::new(
        Arc::new(PolicyRegistry::new(policies)),
        None,
        build,
        state,
        metrics.clone(),
        history.clone(),
        RouterOptions::default(),
        CancellationToken::new(),
    );
    (r, history)
}

#[tokio::test]
async fn a_storm_of_200_alerts_is_one_slack_message_naming_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = url_file(&dir, &format!("{}/services/T/B/x", slack.base));
    let metrics = AlertMetrics::default();
    let state: Arc<dyn AlertState> = Arc::new(FileAlertState::new(dir.path()));
    let (mut r, _) = router(vec![policy_with_slack("storm", url, 1)], state, &metrics);
    let started = Instant::now();
    for i in 0..200 {
        r.handle(&completion(&format!("c{i:03}"), "storm")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "routing 200 alerts took {:?}",
        started.elapsed()
    );
    until(&metrics, "storm/slack", "sent", 200, 10).await;
    let got = slack.accepted();
    assert_eq!(got.len(), 1, "one message for the storm");
    let text = slack_text(&got[0].body);
    for i in 0..200 {
        assert!(text.contains(&format!("c{i:03}")), "c{i:03} is not named");
    }
}

#[tokio::test]
async fn a_silence_in_redis_mutes_the_alert_and_the_record_says_so() {
    let server = redis_support::RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let state =
        Arc::new(hemostat::adapters::redis::alert_state::RedisAlertState::new(client).unwrap());
    let now = chrono::Utc::now();
    let s = Silence::new(
        Some("web-*".into()),
        None,
        None,
        Duration::from_secs(3600),
        "deploy".into(),
        "ops".into(),
        now,
    )
    .unwrap();
    state.add_silence(s.clone()).await.unwrap();
    assert_eq!(state.silences().await.unwrap(), vec![s.clone()]);

    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url = url_file(&dir, &format!("{}/services/T/B/x", slack.base));
    let metrics = AlertMetrics::default();
    let (mut r, history) = router(
        vec![policy_with_slack("p", url, 0)],
        state.clone(),
        &metrics,
    );
    r.handle(&completion("web-1", "p")).await;
    r.handle(&completion("db-1", "p")).await;
    until(&metrics, "p/slack", "sent", 1, 10).await;
    assert_eq!(metrics.get("p/slack", "silenced"), 1);
    let records = history.recent(10);
    let results: Vec<(&str, &str)> = records
        .iter()
        .map(|x| (x.alert.container.as_str(), x.result))
        .collect();
    assert_eq!(results, [("web-1", "silenced"), ("db-1", "queued")]);
    assert_eq!(records[0].silence.as_deref(), Some(s.id.as_str()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slack.accepted().len(), 1);
    assert!(!slack_text(&slack.accepted()[0].body).contains("web-1"));

    let expired = state
        .expire_silence(&s.id, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(!expired.is_active(chrono::Utc::now()));
    // The CLI reads the same hash.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args([
            "silence",
            "list",
            "-o",
            "json",
            "--redis-url",
            &server.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], s.id.as_str());
}

#[tokio::test]
async fn alert_test_sends_a_test_notification_through_the_named_channel() {
    let dir = tempfile::tempdir().unwrap();
    let slack = Receiver::ok().await;
    let url_path = dir.path().join("slack-url");
    std::fs::write(&url_path, format!("{}/services/T/B/x", slack.base)).unwrap();
    let policy = format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: web\nspec:\n  selector: {{matchAll: true}}\n  probes: {{exit: {{}}}}\n  alerts:\n    channels:\n      - slack: {{webhookUrlFrom: {{file: {}}}}}\n",
        url_path.display()
    );
    std::fs::write(dir.path().join("p.yaml"), policy).unwrap();
    let policy_file = dir.path().join("p.yaml");
    let run = move |channel: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
            .args(["alert", "test", "--channel", channel, "--policies"])
            .arg(&policy_file)
            .env_remove("SLACK_WEBHOOK_URL")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run("web/slack"), run("web/webhook")))
        .await
        .unwrap();
    assert!(
        out.0.status.success(),
        "{}",
        String::from_utf8_lossy(&out.0.stderr)
    );
    assert!(String::from_utf8_lossy(&out.0.stdout).contains("delivered"));
    let got = slack.accepted();
    assert_eq!(got.len(), 1);
    assert!(slack_text(&got[0].body).contains("test notification"));
    assert!(!out.1.status.success());
    assert!(
        String::from_utf8_lossy(&out.1.stderr).contains("known: web/slack"),
        "{}",
        String::from_utf8_lossy(&out.1.stderr)
    );
}

#[tokio::test]
async fn a_transport_error_never_carries_the_webhook_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = ChannelSpec::Slack {
        url: url_file(
            &dir,
            &format!("http://127.0.0.1:{port}/services/T/B/SECRETTOKEN"),
        ),
    };
    let client = hemostat::adapters::http_client(Duration::from_secs(2));
    let notifier =
        hemostat::adapters::notifier_for(&spec, &client, Duration::from_secs(2)).unwrap();
    let err = notifier.send(&[outcome("web-1")]).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("transport"), "{shown}");
    assert!(
        !shown.contains("SECRETTOKEN") && !shown.contains("/services/"),
        "{shown}"
    );
}

#[test]
fn a_malformed_alert_environment_stops_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["run", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .env("ALERT_DEDUPE_TTL", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ALERT_DEDUPE_TTL=\"soon\": seconds (60) or a duration (1m)"),
        "{err}"
    );
}
