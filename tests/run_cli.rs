//! `hemostat run` at the edges a user meets first: no engine, bad policies, JSON logs.

mod operator;
mod support;

use std::process::Command;

use std::time::Duration;

use operator::{Operator, policy_dir, policy_for_run};
use support::{ContainerSpec, TestRun};

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

/// Like [`run_hemostat`], but a process still running after `limit` is killed (exit -1), so a
/// command that should have refused to start cannot hang the test.
fn run_hemostat_within(limit: Duration, args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
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
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    let error = errors[0];
    // Said once, with what to do: the engine's error is not repeated by its causes.
    for (text, times) in [
        (
            "cannot reach the Docker engine at unix:///nonexistent/docker.sock",
            1,
        ),
        ("Socket not found: /nonexistent/docker.sock", 1),
        ("start the Docker daemon, or set DOCKER_HOST", 1),
    ] {
        assert_eq!(error.matches(text).count(), times, "{text:?} in {error}");
    }
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

#[tokio::test]
async fn a_second_operator_on_the_same_state_dir_is_refused_until_the_first_is_gone() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(
        dir.path(),
        &policy_for_run("lock", &run.run_id, "  probes:\n    exit: {}\n"),
    );
    let state = dir.path().join("state");
    let mut first = Operator::start(&policies, &run.label, &state, &[]).await;
    let started = std::time::Instant::now();
    let (code, stderr) = run_hemostat_within(
        Duration::from_secs(15),
        &[
            "run",
            "--policies",
            policies.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--label-filter",
            &run.label,
        ],
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    let expected = format!(
        "another HemoStat operator (pid {}) is already using --state-dir {}",
        first.pid(),
        state.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // The first one still runs, untouched.
    assert!(first.get_text("/readyz").await.contains("ready"));
    // SIGKILL leaves no chance to clean up: the kernel releases the lock anyway.
    first.kill9();
    let second = Operator::start(&policies, &run.label, &state, &[]).await;
    assert!(second.pid() > 0);
}

/// The RESTARTS column of `hemostat get containers` for one container.
fn restarts_shown(base: &str, name: &str) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(["get", "containers", "--api", base])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().next()?.split_whitespace().collect();
    let column = header.iter().position(|h| *h == "RESTARTS")?;
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name))
        .and_then(|cells| cells.get(column).map(|c| (*c).to_owned()))
}

async fn wait_restarts_shown(op: &Operator, name: &str, want: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = restarts_shown(&op.base, name);
        if shown.as_deref() == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}: RESTARTS shows {shown:?}, not {want}; log:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The container's state as the engine tells it (`running`, `exited`, ...).
fn engine_state(run: &TestRun, name: &str) -> String {
    run.docker_cli(&["inspect", "-f", "{{.State.Status}}", name])
}

/// Waits until the count shown stops changing (for 3 s) at `at_least` or more, and returns it.
async fn settled_restarts(op: &Operator, name: &str, at_least: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut since = std::time::Instant::now();
    loop {
        let shown = restarts_shown(&op.base, name).and_then(|s| s.parse::<u64>().ok());
        if shown != last {
            last = shown;
            since = std::time::Instant::now();
        } else if let Some(n) = shown.filter(|n| *n >= at_least)
            && since.elapsed() >= Duration::from_secs(3)
        {
            return n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the count never settled at {at_least} or more (last {last:?}); log:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn restart_counts_shown_by_get_containers_survive_an_operator_restart() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    // Observe only: nothing but the test restarts the container.
    let policies = policy_dir(
        dir.path(),
        &policy_for_run(
            "counts",
            &run.run_id,
            "  probes:\n    exit: {}\n  remediation:\n    actions: []\n",
        ),
    );
    let state = dir.path().join("state");
    let mut op = Operator::start(&policies, &run.label, &state, &[]).await;
    // Crashes at its first two runs, then stays up. Restarted by the test (with `docker start`,
    // as a person would), not by the engine's restart policy, whose back-off on a busy engine is
    // unbounded.
    let script = "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; \
                  if [ $n -gt 2 ]; then exec sleep 600; fi; sleep 1; exit 1";
    run.spawn("flaky", ContainerSpec::sh(script).label("role", "target"))
        .await;
    let name = run.name("flaky");
    for _ in 0..2 {
        let mut waited = 0;
        while engine_state(&run, &name) != "exited" {
            assert!(waited < 300, "the container never crashed");
            waited += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.docker_cli(&["start", &name]);
    }
    // Two restarts (more only if the engine logged a start event late: the count is whatever
    // this operator settled on).
    let shown = settled_restarts(&op, &name, 2).await;

    // A clean stop and a new operator on the same state dir: the same count, plus one for a
    // restart by hand while no operator ran (its events older than the new one's subscription).
    assert_eq!(op.terminate(), Some(0));
    run.docker_cli(&["restart", "-t", "1", &name]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    op = Operator::start(&policies, &run.label, &state, &[]).await;
    let want = (shown + 1).to_string();
    wait_restarts_shown(
        &op,
        &name,
        &want,
        "the restarts and the one in between are shown",
    )
    .await;

    // SIGKILL (the counts are kept within a second) and a new operator: the same, and it stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.kill9();
    let op = Operator::start(&policies, &run.label, &state, &[]).await;
    wait_restarts_shown(&op, &name, &want, "the count survives a SIGKILL").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        restarts_shown(&op.base, &name).as_deref(),
        Some(want.as_str()),
        "no restart counted twice; log:\n{}",
        op.log_text()
    );
}
