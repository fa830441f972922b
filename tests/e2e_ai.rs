//! End to end: `analysis.mode: ai` with the real binary, real crashing containers on the real
//! engine, and local servers speaking the OpenAI chat-completions and Anthropic Messages APIs.
//! The model can only help: a valid answer is used, anything else leaves the rules in charge.

mod llm_support;
mod operator;
mod support;

use std::time::Duration;

use llm_support::{Behaviour, FakeLlm};
use operator::{Operator, policy_dir, policy_for_run};
use serde_json::{Value, json};
use support::{ContainerSpec, TestRun};

/// Crashes with code 3 in its first life, then stays up (a marker survives the restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";
/// A secret in the container's environment: it must never reach the model.
const ENV_SECRET: &str = "env-secret-value-5f1c";

fn target(spec: ContainerSpec) -> ContainerSpec {
    spec.label("role", "target").env("SECRET_TOKEN", ENV_SECRET)
}

async fn operator(
    dir: &tempfile::TempDir,
    run: &TestRun,
    spec_body: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Operator {
    let policies = policy_dir(dir.path(), &policy_for_run("ai", &run.run_id, spec_body));
    Operator::start_with_env(&policies, &run.label, &dir.path().join("state"), extra, env).await
}

fn key() -> String {
    format!("sk-test-{}", uuid::Uuid::new_v4().simple())
}

/// The key appears nowhere the operator writes or serves.
async fn assert_key_never_shown(op: &Operator, key: &str) {
    let log = op.log_text();
    assert!(!log.contains(key), "the key is in the log:\n{log}");
    for path in [
        "/api/v1/decisions?limit=1000",
        "/api/v1/audit?limit=1000",
        "/api/v1/containers",
        "/api/v1/policies",
        "/metrics",
    ] {
        let body = op.get_text(path).await;
        assert!(!body.contains(key), "the key is served on {path}");
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn needed(envelopes: &[Value]) -> Vec<Value> {
    envelopes.iter().map(|e| e["data"].clone()).collect()
}

#[tokio::test]
async fn a_valid_openai_answer_is_used_and_the_request_carries_the_key_and_the_findings_never_the_environment()
 {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let reason = "the process exits 3 on its first start only; a restart clears it";
    let root = "a first-run marker file is missing";
    let llm = FakeLlm::start(move |_| {
        Behaviour::After(
            Duration::from_millis(200),
            Box::new(Behaviour::answer("restart", 0.95, reason, root)),
        )
    })
    .await;
    let key = key();
    let base = llm.openai_base();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n  analysis: {mode: ai, timeout: 5s, includeLogs: 20}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &[],
        &[
            ("OPENAI_API_KEY", key.as_str()),
            ("OPENAI_BASE_URL", base.as_str()),
            ("AI_MODEL", "gpt-test"),
        ],
    )
    .await;
    let id = run
        .spawn(
            "crash",
            target(ContainerSpec::sh(&format!(
                "echo started; echo password=hunter2-{ENV_SECRET}x; {CRASH_ONCE}"
            ))),
        )
        .await;
    let name = run.name("crash");
    let record = op
        .wait_audit(&name, 40, "the crash is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    assert_eq!(record["action"], "restart");
    assert_eq!(record["analysis_method"], "ai", "{record}");
    assert_eq!(record["reason"], reason);
    assert_eq!(record["root_cause"], root);
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]),
        "running"
    );
    let data = needed(&op.decisions("remediation_needed", &name).await);
    assert_eq!(data.len(), 1, "{data:?}");
    assert_eq!(data[0]["analysis_method"], "ai");
    assert_eq!(data[0]["reason"], reason);
    assert_eq!(data[0]["root_cause"], root);
    assert_eq!(data[0]["ai"]["rules"]["action"], "restart");
    assert_eq!(data[0]["ai"]["answer"]["action"], "restart");
    let complete = needed(&op.decisions("remediation_complete", &name).await);
    assert_eq!(complete[0]["root_cause"], root, "{complete:?}");

    let asked = llm.requests_about(&name);
    assert_eq!(asked.len(), 1, "asked once");
    let request = &asked[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.headers["authorization"], format!("Bearer {key}"));
    assert_eq!(request.body["model"], "gpt-test");
    assert_eq!(request.body["response_format"]["type"], "json_schema");
    assert_eq!(
        request.body["response_format"]["json_schema"]["schema"]["properties"]["action"]["enum"],
        json!(["restart", "none"])
    );
    let user = request.body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("Exited with code 3"), "{user}");
    assert!(
        user.contains("\"started\""),
        "the allowed log lines are sent: {user}"
    );
    assert!(user.contains("password=[REDACTED]"), "{user}");
    assert!(
        !request.raw.contains(ENV_SECRET),
        "the environment reached the model"
    );
    assert!(
        !request.raw.contains("SECRET_TOKEN"),
        "the environment reached the model"
    );
    assert!(!request.raw.contains(&key), "the key is in the body");

    let metrics = op.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"hemostat_ai_requests_total{provider="openai",result="ok"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"hemostat_ai_tokens_total{provider="openai",kind="input"}"#
        ),
        321.0
    );
    assert!(metrics.contains("hemostat_ai_request_duration_seconds_bucket"));
    assert_key_never_shown(&op, &key).await;

    let explained = std::process::Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["explain", &name, "--api", &op.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(explained.status.success(), "{text}");
    assert!(text.contains("MODEL (openai gpt-test)"), "{text}");
    assert!(text.contains(root), "{text}");
    assert!(text.contains("Exited with code 3 (high)"), "{text}");
    assert!(text.contains("success: container is back"), "{text}");
}

#[tokio::test]
async fn a_valid_anthropic_none_is_a_false_alarm_and_a_refusal_falls_back_to_the_rules() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let (batch, refuser) = (run.name("batch"), run.name("refuser"));
    let refuse_name = refuser.clone();
    let reason = "exit 3 is how this batch job reports there was nothing to do";
    let llm = FakeLlm::start(move |body| {
        if body.to_string().contains(&refuse_name) {
            Behaviour::Refuse
        } else {
            Behaviour::answer("none", 0.9, reason, "no work queued")
        }
    })
    .await;
    let key = key();
    let base = llm.anthropic_base();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n  analysis: {mode: ai}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &[],
        &[
            ("ANTHROPIC_API_KEY", key.as_str()),
            ("ANTHROPIC_BASE_URL", base.as_str()),
            ("AI_MODEL", "claude-test"),
        ],
    )
    .await;
    let batch_id = run
        .spawn("batch", target(ContainerSpec::sh("sleep 1; exit 3")))
        .await;
    run.spawn("refuser", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;

    let record = op
        .wait_audit(
            &refuser,
            40,
            "the refused one is repaired by the rules",
            |r| r["status"] == "success",
        )
        .await;
    assert_eq!(record["analysis_method"], "rule_based_fallback", "{record}");
    assert!(
        record["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{record}"
    );
    assert_eq!(record["reason"], "Exited with code 3", "the rules' reason");

    support::wait_until(Duration::from_secs(20), "the false alarm", || async {
        !op.decisions("false_alarm", &batch).await.is_empty()
    })
    .await;
    let alarm = needed(&op.decisions("false_alarm", &batch).await);
    assert_eq!(alarm[0]["analysis_method"], "ai", "{alarm:?}");
    assert_eq!(alarm[0]["reason"], format!("false alarm: {reason}"));
    assert_eq!(alarm[0]["root_cause"], "no work queued");
    tokio::time::sleep(Duration::from_secs(7)).await; // past a resync
    assert_eq!(
        run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &batch_id]),
        "exited",
        "the false alarm was acted on"
    );
    assert!(op.audit_for(&batch).await.is_empty());
    assert!(op.decisions("remediation_needed", &batch).await.is_empty());
    assert_eq!(
        llm.requests_about(&batch).len(),
        1,
        "asked once, not at every resync"
    );

    let request = &llm.requests_about(&batch)[0];
    assert_eq!(request.path, "/v1/messages");
    assert_eq!(request.headers["x-api-key"], key);
    assert!(request.headers.contains_key("anthropic-version"));
    assert_eq!(request.body["model"], "claude-test");
    assert_eq!(request.body["tool_choice"]["name"], "hemostat_decision");
    assert_eq!(
        request.body["tools"][0]["input_schema"]["properties"]["action"]["enum"],
        json!(["restart", "none"])
    );
    assert!(request.raw.contains("Exited with code 3"));
    assert!(!request.raw.contains(ENV_SECRET));
    assert!(
        !request.raw.contains("\"logs\""),
        "includeLogs defaults to 0"
    );
    let metrics = op.get_text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"hemostat_ai_requests_total{provider="anthropic",result="refusal"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_key_never_shown(&op, &key).await;
}

#[tokio::test]
async fn every_unusable_answer_falls_back_to_the_rules_which_repair_and_nothing_outside_the_policy_runs()
 {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let answer = |v: Value| {
        let mut base = json!({"confidence": 0.95, "reason": "do it", "root_cause": "x"});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        Behaviour::json(base)
    };
    // container suffix → what the model does → what fallback_reason must say.
    let cases: Vec<(&str, Behaviour, &str)> = vec![
        (
            "execidx",
            answer(json!({"action": "exec", "command": 5})),
            "not on the policy's allow-list",
        ),
        (
            "execarr",
            answer(json!({"action": "exec", "command": ["/bin/sh", "-c", "touch /tmp/pwned"]})),
            "not on the policy's allow-list",
        ),
        (
            "cleanup",
            answer(json!({"action": "cleanup"})),
            "not an action HemoStat has",
        ),
        (
            "scale",
            answer(json!({"action": "scale"})),
            "not an action HemoStat has",
        ),
        (
            "extra",
            answer(json!({"action": "restart", "volumes": "delete"})),
            "unknown field",
        ),
        (
            "prose",
            Behaviour::Content("The container crashed, so I would restart it.".into()),
            "not a JSON object",
        ),
        (
            "cut",
            Behaviour::Content(r#"{"action": "restart", "confid"#.into()),
            "not a JSON object",
        ),
        ("hang", Behaviour::Hang, "did not answer within"),
        ("http500", Behaviour::Status(500), "HTTP 500"),
    ];
    let script: Vec<(String, Behaviour)> = cases
        .iter()
        .map(|(s, b, _)| (format!("\"{}\"", run.name(s)), b.clone()))
        .collect();
    let llm = FakeLlm::start(move |body| {
        let text = body.to_string().replace("\\\"", "\"");
        script
            .iter()
            .find(|(name, _)| text.contains(name.as_str()))
            .map(|(_, b)| b.clone())
            .unwrap_or(Behaviour::Status(404))
    })
    .await;
    let key = key();
    let base = llm.openai_base();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart, exec]\n    exec: {allowed: [[\"/bin/sh\", \"-c\", \"true\"]]}\n    cooldown: 1h\n    verifyWithin: 20s\n  analysis: {mode: ai, timeout: 8s}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &["--ai-max-concurrent", "16"],
        &[
            ("OPENAI_API_KEY", key.as_str()),
            ("OPENAI_BASE_URL", base.as_str()),
            ("AI_MODEL", "gpt-test"),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for (suffix, _, _) in &cases {
        ids.push(
            run.spawn(suffix, target(ContainerSpec::sh(CRASH_ONCE)))
                .await,
        );
    }
    let mut started = std::collections::HashMap::new();
    for ((suffix, _, fragment), id) in cases.iter().zip(&ids) {
        let name = run.name(suffix);
        let record = op
            .wait_audit(
                &name,
                60,
                &format!("{suffix} is repaired by the rules"),
                |r| r["status"] == "success",
            )
            .await;
        assert_eq!(record["action"], "restart", "{suffix}: {record}");
        assert_eq!(
            record["analysis_method"], "rule_based_fallback",
            "{suffix}: {record}"
        );
        let why = record["fallback_reason"].as_str().unwrap_or_default();
        assert!(
            why.contains(fragment),
            "{suffix}: {why:?} should say {fragment:?}"
        );
        assert!(record.get("root_cause").is_none(), "{suffix}: {record}");
        let data = needed(&op.decisions("remediation_needed", &name).await);
        assert_eq!(
            data[0]["analysis_method"], "rule_based_fallback",
            "{suffix}"
        );
        assert_eq!(data[0]["fallback_reason"], why, "{suffix}");
        let pwned = std::process::Command::new("docker")
            .args(["exec", id, "test", "-e", "/tmp/pwned"])
            .status()
            .unwrap();
        assert!(
            !pwned.success(),
            "{suffix}: a command outside the allow-list ran"
        );
        started.insert(
            *suffix,
            record["action_started_at"].as_str().unwrap().to_owned(),
        );
    }
    let all = op.audit().await;
    assert!(
        all.iter().all(|r| r["action"] == "restart"),
        "only the rules' restart ran: {all:?}"
    );
    // The hung model held up only its own container: the others were repaired meanwhile.
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(&started[s]).unwrap();
    assert!(
        at("hang") - at("http500") > chrono::Duration::seconds(4),
        "hang {} vs http500 {}",
        started["hang"],
        started["http500"]
    );
    let metrics = op.get_text("/metrics").await;
    for (result, n) in [
        ("not_allowed", 2.0),
        ("invalid", 5.0),
        ("timeout", 1.0),
        ("http_error", 1.0),
    ] {
        let series =
            format!(r#"hemostat_ai_requests_total{{provider="openai",result="{result}"}}"#);
        assert_eq!(metric(&metrics, &series), n, "{series}\n{metrics}");
    }
    assert_key_never_shown(&op, &key).await;
}

#[tokio::test]
async fn a_crash_loop_asks_the_model_once_per_failure_signature() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start(|_| {
        Behaviour::answer(
            "restart",
            0.9,
            "it crashes after 3 s; restart it",
            "unknown",
        )
    })
    .await;
    let key = key();
    let base = llm.openai_base();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1s\n    maxActions: {count: 50, per: 1h}\n    circuitBreaker: {failures: 50, within: 1h, openFor: 1h}\n    verifyWithin: 10s\n  analysis: {mode: ai}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &[],
        &[
            ("OPENAI_API_KEY", key.as_str()),
            ("OPENAI_BASE_URL", base.as_str()),
            ("AI_MODEL", "gpt-test"),
        ],
    )
    .await;
    run.spawn("loop", target(ContainerSpec::sh("sleep 3; exit 1")))
        .await;
    let name = run.name("loop");
    support::wait_until(Duration::from_secs(60), "three repairs", || async {
        op.audit_for(&name)
            .await
            .iter()
            .filter(|r| r["status"] == "success")
            .count()
            >= 3
    })
    .await;
    assert_eq!(
        llm.requests_about(&name).len(),
        1,
        "one question for one failure"
    );
    let data = needed(&op.decisions("remediation_needed", &name).await);
    assert!(data.len() >= 3, "{data:?}");
    assert!(
        data.iter().all(|d| d["analysis_method"] == "ai"),
        "{data:?}"
    );
    assert_eq!(data[0]["ai"]["cached"], false);
    assert!(
        data[1..].iter().all(|d| d["ai"]["cached"] == true),
        "{data:?}"
    );
    let metrics = op.get_text("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"hemostat_ai_requests_total{provider="openai",result="cached"}"#
        ) >= 2.0,
        "{metrics}"
    );
    assert_key_never_shown(&op, &key).await;
}

#[tokio::test]
async fn without_a_key_mode_ai_says_so_once_at_startup_and_the_rules_repair() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n  analysis: {mode: ai}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &[],
        &[
            ("OPENAI_API_KEY", ""),
            ("OPENAI_API_KEY_FILE", ""),
            ("ANTHROPIC_API_KEY", ""),
            ("ANTHROPIC_API_KEY_FILE", ""),
            ("AI_MODEL", ""),
        ],
    )
    .await;
    run.spawn("crash", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    let name = run.name("crash");
    let record = op
        .wait_audit(&name, 40, "the crash is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    assert_eq!(record["analysis_method"], "rule_based_fallback", "{record}");
    assert!(
        record["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("no model is configured"),
        "{record}"
    );
    let log = op.log_text();
    let said = log
        .lines()
        .filter(|l| l.contains("no model is configured"))
        .count();
    assert_eq!(said, 1, "said once, at startup:\n{log}");
}

#[tokio::test]
async fn repeated_failures_open_the_providers_breaker_and_requests_beyond_the_limit_are_not_queued()
{
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let hung = run.name("hung");
    let hung_name = format!("\\\"{hung}\\\"");
    // The hung container's question hangs; every other question fails with HTTP 503.
    let llm = FakeLlm::start(move |body| {
        if body.to_string().contains(&hung_name) {
            Behaviour::Hang
        } else {
            Behaviour::Status(503)
        }
    })
    .await;
    let key = key();
    let base = llm.openai_base();
    let policy = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n  analysis: {mode: ai, timeout: 6s}\n";
    let op = operator(
        &dir,
        &run,
        policy,
        &["--ai-max-concurrent", "1"],
        &[
            ("OPENAI_API_KEY", key.as_str()),
            ("OPENAI_BASE_URL", base.as_str()),
            ("AI_MODEL", "gpt-test"),
        ],
    )
    .await;
    // One request in flight at most: while the hung one waits, another crash is not queued.
    run.spawn("hung", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    support::wait_until(Duration::from_secs(20), "the hung question", || async {
        !llm.requests_about(&hung).is_empty()
    })
    .await;
    run.spawn("busy", target(ContainerSpec::sh(CRASH_ONCE)))
        .await;
    let busy = op
        .wait_audit(&run.name("busy"), 30, "the busy one is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    assert!(
        busy["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("already in flight"),
        "{busy}"
    );
    assert!(llm.requests_about(&run.name("busy")).is_empty());
    let hung_record = op
        .wait_audit(&hung, 30, "the hung one is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    assert!(
        hung_record["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("did not answer within 6s"),
        "{hung_record}"
    );
    // The timeout was the first failure; two HTTP errors make three: the breaker opens.
    for suffix in ["e1", "e2", "open"] {
        run.spawn(suffix, target(ContainerSpec::sh(CRASH_ONCE)))
            .await;
        op.wait_audit(
            &run.name(suffix),
            30,
            &format!("{suffix} is repaired"),
            |r| r["status"] == "success",
        )
        .await;
    }
    let open = op.audit_for(&run.name("open")).await;
    assert!(
        open[0]["fallback_reason"]
            .as_str()
            .unwrap()
            .contains("failed repeatedly"),
        "{open:?}"
    );
    assert!(
        llm.requests_about(&run.name("open")).is_empty(),
        "not asked"
    );
    let metrics = op.get_text("/metrics").await;
    for (result, n) in [
        ("busy", 1.0),
        ("timeout", 1.0),
        ("http_error", 2.0),
        ("circuit_open", 1.0),
    ] {
        let series =
            format!(r#"hemostat_ai_requests_total{{provider="openai",result="{result}"}}"#);
        assert_eq!(metric(&metrics, &series), n, "{series}\n{metrics}");
    }
    assert_key_never_shown(&op, &key).await;
}
