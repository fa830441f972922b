//! `hemostat run` at the edges a user meets first: no engine, bad policies, JSON logs.

mod operator;
mod support;

use std::process::Command;

use operator::{Operator, policy_dir, policy_for_run};
use support::TestRun;

fn run_hemostat(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_engine_is_a_clear_error_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (code, stderr) = run_hemostat(
        &["run", "--state-dir", state, "--listen", "127.0.0.1:0"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot reach the Docker engine"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
}

#[test]
fn a_policy_directory_with_no_valid_policy_refuses_to_start_and_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata: {name: x}\nspec:\n  selector: {}\n  probes: {exit: {}}\n").unwrap();
    let (code, stderr) = run_hemostat(
        &[
            "run",
            "--policies",
            dir.path().to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("empty selector"), "{stderr}");
    assert!(stderr.contains("no valid policy"), "{stderr}");
}

#[test]
fn a_too_short_sample_interval_is_refused() {
    let (code, stderr) = run_hemostat(&["run", "--sample-interval", "100ms"], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("minimum is 1s"), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("logs", &run.run_id, "  probes:\n    exit: {}\n"),
    );
    let mut op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--log-format", "json"],
    )
    .await;
    assert_eq!(op.terminate(), Some(0));
    let log = op.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
}

#[test]
fn accepting_external_requests_without_redis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let (code, stderr) = run_hemostat(
        &["run", "--state-dir", state, "--accept-external-requests"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--accept-external-requests needs Redis"),
        "{stderr}"
    );
    let (code, stderr) = run_hemostat(
        &["run", "--state-dir", state],
        &[
            ("HEMOSTAT_ACCEPT_EXTERNAL_REQUESTS", "true"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--accept-external-requests needs Redis"),
        "the environment variable turns it on too: {stderr}"
    );
}

#[test]
fn a_policy_directory_without_policy_files_means_the_built_in_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("README.md"), "not a policy").unwrap();
    let state = dir.path().join("state");
    let (code, stderr) = run_hemostat(
        &[
            "run",
            "--policies",
            policies.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    // It gets as far as the engine (absent here) with the built-in policy, instead of
    // refusing to start for want of a policy.
    assert_ne!(code, 0);
    assert!(
        stderr.contains("no policy file in --policies: the built-in default policy governs"),
        "{stderr}"
    );
    assert!(!stderr.contains("no valid policy"), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker engine"),
        "{stderr}"
    );
}

#[tokio::test]
async fn healthcheck_exits_0_when_the_operator_is_ready_and_1_when_nothing_answers() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("hc", &run.run_id, "  probes:\n    exit: {}\n"),
    );
    let op = Operator::start(&policies, &run.label, &dir.path().join("state"), &[]).await;
    let (ok, _) = run_hemostat(
        &["healthcheck", "--url", &format!("{}/readyz", op.base)],
        &[],
    );
    assert_eq!(ok, 0);
    // Without --url it asks /readyz on HEMOSTAT_LISTEN (an unspecified address on loopback).
    let port = op.base.rsplit(':').next().unwrap();
    let (ok, _) = run_hemostat(
        &["healthcheck"],
        &[("HEMOSTAT_LISTEN", &format!("0.0.0.0:{port}"))],
    );
    assert_eq!(ok, 0);
    let (code, stderr) = run_hemostat(
        &[
            "healthcheck",
            "--url",
            "http://127.0.0.1:1/readyz",
            "--timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("unhealthy: http://127.0.0.1:1/readyz did not answer"),
        "{stderr}"
    );
}

#[test]
fn an_external_alert_agent_without_redis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    for (args, envs) in [
        (
            vec!["run", "--state-dir", state, "--external-alert-agent"],
            vec![],
        ),
        (
            vec!["run", "--state-dir", state],
            vec![("HEMOSTAT_EXTERNAL_ALERT_AGENT", "true")],
        ),
    ] {
        let mut envs = envs;
        envs.push(("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
        let (code, stderr) = run_hemostat(&args, &envs);
        assert_ne!(code, 0);
        assert!(
            stderr.contains("--external-alert-agent needs Redis"),
            "{args:?} {envs:?}: {stderr}"
        );
    }
}
