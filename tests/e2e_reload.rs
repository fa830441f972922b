//! End to end: `hemostat run --policies DIR` hot-reloads its files on the real engine: a
//! ConfigMap `..data` swap, a git-sync link swap, a temp file renamed over, a deleted file, a
//! broken edit (last good kept, reported once with `file:line:col`), SIGHUP; and the CLI's
//! `get`, `describe` and `diff` against that operator's API given as `host:port`.

mod operator;
mod redis_support;
mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use operator::{Operator, policy_for_run};
use redis_support::RedisServer;
use serde_json::Value;
use support::{ContainerSpec, TestRun, wait_until};

/// Crashes with code 3 in its first life, then stays up (a marker survives the restart).
const CRASH_ONCE: &str =
    "if [ -f /tmp/ran ]; then exec sleep 600; fi; touch /tmp/ran; sleep 1; exit 3";
const RESTART_ON_CRASH: &str = "  probes:\n    exit: {nonZeroOnly: true}\n  remediation:\n    actions: [restart]\n    cooldown: 1h\n    verifyWithin: 10s\n";
/// The bound a change must be enforced within.
const ENFORCED_WITHIN: Duration = Duration::from_secs(2);

/// A policy named `name` selecting the run's containers with label `role`.
fn policy(name: &str, run: &TestRun, role: &str, priority: i32) -> String {
    policy_for_run(name, &run.run_id, RESTART_ON_CRASH)
        .replace("role: target", &format!("role: {role}"))
        .replace("spec:\n", &format!("spec:\n  priority: {priority}\n"))
}

/// No periodic rescan within a test: what is enforced within 2 s was seen by the watcher.
const NO_RESCAN: [&str; 2] = ["--policies-rescan-interval", "1h"];
/// Fast rescans, so that "reported once" is tested across several of them.
const FAST_RESCAN: [&str; 2] = ["--policies-rescan-interval", "1s"];

async fn start(policies: &Path, run: &TestRun, dir: &Path) -> Operator {
    Operator::start(policies, &run.label, &dir.join("state"), &NO_RESCAN).await
}

/// The policies in force, by name.
async fn in_force(op: &Operator) -> Vec<Value> {
    op.get("/api/v1/policies")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn policy_view(op: &Operator, name: &str) -> Option<Value> {
    in_force(op).await.into_iter().find(|p| p["name"] == name)
}

/// Polls the API until `check` holds; returns how long it took, panicking after `within`.
async fn enforced(
    op: &Operator,
    within: Duration,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check(&in_force(op).await) {
            let took = start.elapsed();
            eprintln!("{what}: enforced after {took:?}");
            return took;
        }
        assert!(
            start.elapsed() < within,
            "not enforced within {within:?}: {what}; in force: {:#?}\nlog:\n{}",
            in_force(op).await,
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn priority_of(views: &[Value], name: &str) -> Option<i64> {
    views
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["priority"].as_i64())
}

async fn metric(op: &Operator, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", op.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// A Kubernetes ConfigMap volume as the kubelet writes it: the data in a timestamped
/// directory, `..data` pointing at it, each key a symlink through `..data`; an update writes
/// a new directory and swaps `..data` with one rename.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, generation: 0 }
    }

    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let data = format!(
            "..2026_12_01_00_00_{:02}.000{}",
            self.generation, self.generation
        );
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&data).join(name), text).unwrap();
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        symlink(&data, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let key = self.dir.join(name);
            if key.symlink_metadata().is_err() {
                symlink(format!("..data/{name}"), key).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_policy_swapped_in_through_a_configmap_data_symlink_is_enforced_within_two_seconds() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = ConfigMapVolume::new(dir.path().join("configmap"));
    // At first the policy governs other containers: the crash is left alone.
    volume.update(&[("policy.yaml", &policy("gitops", &run, "other", 0))]);
    let op = start(&volume.dir, &run, dir.path()).await;
    let id = run
        .spawn(
            "crash",
            ContainerSpec::sh(CRASH_ONCE).label("role", "target"),
        )
        .await;
    let name = run.name("crash");
    wait_until(Duration::from_secs(20), "the container has crashed", || {
        let out = run.docker_cli(&["inspect", "-f", "{{.State.Status}}", &id]);
        async move { out == "exited" }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(op.decisions("remediation_needed", &name).await.is_empty());

    volume.update(&[("policy.yaml", &policy("gitops", &run, "target", 0))]);
    let swapped = Instant::now();
    wait_until(
        ENFORCED_WITHIN,
        "the swapped-in policy decides to repair the crash",
        || async { !op.decisions("remediation_needed", &name).await.is_empty() },
    )
    .await;
    eprintln!("..data swap to repair decision: {:?}", swapped.elapsed());
    let view = policy_view(&op, "gitops").await.unwrap();
    assert_eq!(
        view["document"]["spec"]["selector"]["matchLabels"]["role"],
        "target"
    );
    assert!(
        view["source"]
            .as_str()
            .unwrap()
            .ends_with("configmap/policy.yaml:1:1"),
        "{view}"
    );
    let record = op
        .wait_audit(&name, 30, "the crash is repaired", |r| {
            r["status"] == "success"
        })
        .await;
    assert_eq!(record["action"], "restart");
    assert_eq!(record["policy"], "gitops", "{record}");
}

#[tokio::test]
async fn a_git_sync_link_swap_is_enforced_and_the_new_target_is_watched() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("git");
    let rev = |n: u32, priority: i32| {
        let d = root.join(format!(".worktrees/rev{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("policy.yaml"),
            policy("synced", &run, "target", priority),
        )
        .unwrap();
    };
    let point_at = |n: u32| {
        let tmp = root.join(".link-tmp");
        symlink(format!(".worktrees/rev{n}"), &tmp).unwrap();
        std::fs::rename(&tmp, root.join("link")).unwrap();
    };
    rev(1, 1);
    point_at(1);
    let op = start(&root.join("link"), &run, dir.path()).await;
    assert_eq!(priority_of(&in_force(&op).await, "synced"), Some(1));

    rev(2, 2);
    point_at(2);
    enforced(&op, ENFORCED_WITHIN, "git-sync link swapped", |v| {
        priority_of(v, "synced") == Some(2)
    })
    .await;
    std::fs::remove_dir_all(root.join(".worktrees/rev1")).unwrap();
    // Let the events of the swap settle, so that only the watch on the new target can see
    // the next edit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The watch followed the link: an edit inside the new target is seen too.
    let edited = policy("synced", &run, "target", 3);
    std::fs::write(root.join(".worktrees/rev2/policy.yaml"), edited).unwrap();
    enforced(&op, ENFORCED_WITHIN, "file edited in the new target", |v| {
        priority_of(v, "synced") == Some(3)
    })
    .await;
}

#[tokio::test]
async fn files_added_renamed_over_and_deleted_are_enforced_within_two_seconds() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("a.yaml"), policy("a", &run, "target", 1)).unwrap();
    std::fs::write(policies.join("b.yaml"), policy("b", &run, "other", 1)).unwrap();
    let op = start(&policies, &run, dir.path()).await;

    // An editor's save: a temp file (hidden, not *.yaml) renamed over the original.
    let tmp = policies.join(".a.yaml.swp");
    std::fs::write(&tmp, policy("a", &run, "target", 7)).unwrap();
    std::fs::rename(&tmp, policies.join("a.yaml")).unwrap();
    enforced(&op, ENFORCED_WITHIN, "a.yaml replaced by rename", |v| {
        priority_of(v, "a") == Some(7)
    })
    .await;

    std::fs::write(policies.join("c.yml"), policy("c", &run, "other", 2)).unwrap();
    enforced(&op, ENFORCED_WITHIN, "c.yml added", |v| {
        priority_of(v, "c") == Some(2)
    })
    .await;

    std::fs::remove_file(policies.join("b.yaml")).unwrap();
    enforced(&op, ENFORCED_WITHIN, "b.yaml deleted", |v| {
        priority_of(v, "b").is_none() && priority_of(v, "a") == Some(7)
    })
    .await;
    assert!(
        op.log_text().contains("policy removed"),
        "{}",
        op.log_text()
    );

    // The directory deleted and made again: the watch moves to the new one.
    std::fs::remove_dir_all(&policies).unwrap();
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("a.yaml"), policy("a", &run, "target", 8)).unwrap();
    enforced(&op, ENFORCED_WITHIN, "the directory made again", |v| {
        priority_of(v, "a") == Some(8) && priority_of(v, "c").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(policies.join("a.yaml"), policy("a", &run, "target", 9)).unwrap();
    enforced(&op, ENFORCED_WITHIN, "an edit in the new directory", |v| {
        priority_of(v, "a") == Some(9)
    })
    .await;
    // Quiet files, quiet watcher: its own rescans and re-watches do not wake it up again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let watch = "hemostat_policy_reloads_total{trigger=\"watch\"}";
    let settled = metric(&op, watch).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&op, watch).await, settled);
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_version_and_is_reported_once_with_its_position() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let file = policies.join("policy.yaml");
    let good = policy("repair", &run, "target", 1);
    let second = |priority| policy("second", &run, "other", priority);
    std::fs::write(&file, format!("{good}---\n{}", second(1))).unwrap();
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &FAST_RESCAN,
    )
    .await;
    assert_eq!(metric(&op, "hemostat_policy_problems_total").await, 0.0);

    // One save breaks the first document (an invalid boolean: a YAML-level error, so its
    // name cannot be read) and edits the second.
    let broken = good.replace("nonZeroOnly: true", "nonZeroOnly: maybe");
    let tmp = policies.join(".policy.yaml.tmp");
    std::fs::write(&tmp, format!("{broken}---\n{}", second(5))).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    enforced(
        &op,
        ENFORCED_WITHIN,
        "the good document's edit, beside a broken one",
        |v| priority_of(v, "second") == Some(5),
    )
    .await;

    // Where the problem is: exactly what `hemostat validate` says.
    let validate = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&validate.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&validate.stderr).lines())
        .find(|l| l.contains(": error: "))
        .map(str::to_owned)
        .expect("validate names the problem");
    assert!(
        expected.starts_with(&format!("{}:", file.display())),
        "{expected}"
    );
    let view = policy_view(&op, "repair")
        .await
        .expect("the last good version stays");
    assert_eq!(
        view["document"]["spec"]["probes"]["exit"]["nonZeroOnly"], true,
        "{view}"
    );
    let degraded = view["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .cloned()
        .unwrap();
    assert_eq!(degraded["status"], "True", "{view}");
    assert_eq!(degraded["reason"], "InvalidDocument");
    assert_eq!(degraded["message"], expected.as_str(), "{view}");
    assert_eq!(metric(&op, "hemostat_policy_problems_total").await, 1.0);
    assert_eq!(metric(&op, "hemostat_policies_last_good").await, 1.0);

    // Several rescans later it is still reported once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(metric(&op, "hemostat_policy_reloads_total{trigger=\"rescan\"}").await >= 2.0);
    let log = op.log_text();
    let reported: Vec<&str> = log.lines().filter(|l| l.contains(&expected)).collect();
    assert_eq!(reported.len(), 1, "{reported:#?}\nlog:\n{log}");
    assert!(reported[0].contains("WARN"), "{}", reported[0]);
    assert_eq!(metric(&op, "hemostat_policy_problems_total").await, 1.0);

    // And the last good version is what acts: a crash is repaired under it.
    run.spawn(
        "crash",
        ContainerSpec::sh(CRASH_ONCE).label("role", "target"),
    )
    .await;
    let name = run.name("crash");
    let record = op
        .wait_audit(
            &name,
            30,
            "the crash is repaired by the last good version",
            |r| r["status"] == "success",
        )
        .await;
    assert_eq!(record["policy"], "repair");

    // Fixed: the condition clears.
    std::fs::write(
        &file,
        format!("{}---\n{}", policy("repair", &run, "target", 4), second(5)),
    )
    .unwrap();
    enforced(&op, ENFORCED_WITHIN, "the fixed document", |v| {
        priority_of(v, "repair") == Some(4)
    })
    .await;
    assert_eq!(metric(&op, "hemostat_policies_last_good").await, 0.0);
}

#[tokio::test]
async fn sighup_reloads_the_policies_instead_of_ending_the_process() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("p.yaml"), policy("hup", &run, "target", 1)).unwrap();
    let op = start(&policies, &run, dir.path()).await;
    // Reading the files is no change: idle, the watcher does not wake itself up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        metric(&op, "hemostat_policy_reloads_total{trigger=\"watch\"}").await,
        0.0,
        "{}",
        op.log_text()
    );
    let pid = op.pid().to_string();
    for _ in 0..2 {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_until(
        Duration::from_secs(2),
        "both SIGHUPs are handled",
        || async { metric(&op, "hemostat_policy_reloads_total{trigger=\"sighup\"}").await >= 2.0 },
    )
    .await;
    let ready = reqwest::get(format!("{}/readyz", op.base)).await.unwrap();
    assert!(ready.status().is_success(), "still running after SIGHUP");
    assert!(
        op.log_text().contains("SIGHUP: reloading the policy files"),
        "{}",
        op.log_text()
    );
    assert_eq!(priority_of(&in_force(&op).await, "hup"), Some(1));
    // The rescans opened the files: that is no change either.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        metric(&op, "hemostat_policy_reloads_total{trigger=\"watch\"}").await,
        0.0
    );
}

fn hemostat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hemostat"))
        .args(args)
        // No Redis there: `get` and `describe` read the operator instead.
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env_remove("REDIS_HOST")
        .env_remove("HEMOSTAT_API")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn get_describe_and_diff_work_against_the_api_given_as_host_and_port() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let first = policy("first", &run, "target", 3);
    let broken_later = policy("second", &run, "other", 1);
    std::fs::write(policies.join("a.yaml"), &first).unwrap();
    std::fs::write(policies.join("b.yaml"), &broken_later).unwrap();
    let op = start(&policies, &run, dir.path()).await;
    let api = op.base.strip_prefix("http://").unwrap().to_owned();
    run.spawn("sleeper", ContainerSpec::sleeper().label("role", "target"))
        .await;
    // A broken edit of b.yaml: its last good version stays, flagged.
    std::fs::write(
        policies.join("b.yaml"),
        broken_later.replace("cooldown: 1h", "cooldown: soon"),
    )
    .unwrap();
    enforced(&op, ENFORCED_WITHIN, "b.yaml flagged", |v| {
        v.iter()
            .any(|p| p["name"] == "second" && p["status"]["conditions"][1]["status"] == "True")
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "the sleeper is matched",
        || async { policy_view(&op, "first").await.unwrap()["status"]["matchedContainers"] == 1 },
    )
    .await;

    let (code, out, err) = hemostat(&["get", "policies", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    let row = |name: &str| lines.iter().find(|l| l.starts_with(name)).copied().unwrap();
    assert!(
        row("first").contains("current") && row("first").contains("a.yaml:1:1"),
        "{out}"
    );
    assert!(row("second").contains("last-good"), "{out}");
    assert!(
        err.contains("healthpolicy/second keeps its last good version"),
        "{err}"
    );
    assert!(err.contains("b.yaml:"), "{err}");

    let (code, out, _) = hemostat(&["get", "policies", "first", "-o", "json", "--api", &api]);
    assert_eq!(code, 0);
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["metadata"]["name"], "first");
    assert_eq!(doc["status"]["matchedContainers"], 1);

    let (code, out, err) = hemostat(&["describe", "policy", "second", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("State:        last good version kept"),
        "{out}"
    );
    assert!(
        out.contains("cooldown: 1h"),
        "the enforced version is shown: {out}"
    );
    let (code, out, err) = hemostat(&["describe", "policy", "first", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Matched containers: 1"), "{out}");
    assert!(out.contains(&run.name("sleeper")), "{out}");
    let (code, _, err) = hemostat(&["describe", "policy", "nope", "--api", &api]);
    assert_eq!(code, 1);
    assert!(err.contains("not in force"), "{err}");

    // diff: a set equal to what is in force, then one that edits, adds and deletes.
    let same = dir.path().join("same");
    std::fs::create_dir_all(&same).unwrap();
    std::fs::write(same.join("a.yaml"), &first).unwrap();
    std::fs::write(same.join("b.yaml"), &broken_later).unwrap();
    let (code, out, err) = hemostat(&["diff", "-f", same.to_str().unwrap(), "--api", &api]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let next = dir.path().join("next");
    std::fs::create_dir_all(&next).unwrap();
    std::fs::write(next.join("a.yaml"), policy("first", &run, "target", 9)).unwrap();
    std::fs::write(next.join("c.yaml"), policy("third", &run, "other", 1)).unwrap();
    let (code, out, err) = hemostat(&["diff", "-f", next.to_str().unwrap(), "--api", &api]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("--- live/first\n+++ files/first\n"), "{out}");
    assert!(out.contains("-  priority: 3\n+  priority: 9\n"), "{out}");
    assert!(
        out.contains("--- live/second\n+++ files/second\n"),
        "deleted: {out}"
    );
    assert!(
        out.contains("--- live/third\n+++ files/third\n"),
        "created: {out}"
    );
    let (code, _, err) = hemostat(&["diff", "-f", policies.to_str().unwrap(), "--api", &api]);
    assert_eq!(code, 2, "invalid files are refused: {err}");
    assert!(err.contains("b.yaml:"), "{err}");
}

#[tokio::test]
async fn with_redis_a_file_edit_is_enforced_within_two_seconds_and_an_applied_policy_still_wins() {
    let redis = RedisServer::start();
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("a.yaml"),
        policy("files-only", &run, "other", 1),
    )
    .unwrap();
    std::fs::write(policies.join("b.yaml"), policy("shared", &run, "other", 1)).unwrap();
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &["--redis-url", &redis.url(), NO_RESCAN[0], NO_RESCAN[1]],
    )
    .await;
    let applied = dir.path().join("applied.yaml");
    std::fs::write(&applied, policy("shared", &run, "other", 50)).unwrap();
    let (code, out, err) = hemostat(&[
        "apply",
        "-f",
        applied.to_str().unwrap(),
        "--redis-url",
        &redis.url(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    enforced(&op, ENFORCED_WITHIN, "the applied policy", |v| {
        priority_of(v, "shared") == Some(50)
    })
    .await;

    std::fs::write(
        policies.join("a.yaml"),
        policy("files-only", &run, "other", 2),
    )
    .unwrap();
    std::fs::write(policies.join("b.yaml"), policy("shared", &run, "other", 3)).unwrap();
    enforced(&op, ENFORCED_WITHIN, "a file edit with Redis", |v| {
        priority_of(v, "files-only") == Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(priority_of(&in_force(&op).await, "shared"), Some(50));
    // Only the file policy is said to come from a file.
    let files_only = policy_view(&op, "files-only").await.unwrap();
    assert!(
        files_only["source"]
            .as_str()
            .unwrap()
            .ends_with("a.yaml:1:1")
    );
    assert_eq!(
        policy_view(&op, "shared").await.unwrap()["source"],
        Value::Null
    );
}

#[tokio::test]
async fn sighup_without_policy_files_keeps_the_builtin_policy_and_the_process() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("operator.log");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_hemostat"))
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--label-filter", &run.label])
            .arg("--state-dir")
            .arg(dir.path())
            .env_remove("HEMOSTAT_POLICIES")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = || async {
        reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    };
    wait_until(Duration::from_secs(20), "the operator is ready", ready).await;
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(2), "SIGHUP is logged", || async {
        text().contains("SIGHUP: no --policies to reload")
    })
    .await;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the process"
    );
    assert!(ready().await);
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_broken_document_at_start_up_is_reported_and_counted_once_and_never_enforced() {
    let run = TestRun::new();
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("a.yaml"), policy("good", &run, "target", 1)).unwrap();
    let broken = policy("broken", &run, "other", 1).replace("cooldown: 1h", "cooldown: soon");
    std::fs::write(policies.join("b.yaml"), broken).unwrap();
    let op = Operator::start(
        &policies,
        &run.label,
        &dir.path().join("state"),
        &FAST_RESCAN,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let names: Vec<Value> = in_force(&op)
        .await
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, ["good"]);
    assert_eq!(metric(&op, "hemostat_policy_problems_total").await, 1.0);
    let log = op.log_text();
    let b = policies.join("b.yaml").display().to_string();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("invalid policy document") && l.contains(&b))
            .count(),
        1,
        "{log}"
    );
}
