//! kubectl-style policy management against a real `redis-server`: the CLI as a user runs it, and the watcher.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hemostat::adapters::redis::policies::{PolicyRepo, watch_policies};
use hemostat::policy::registry::PolicyRegistry;
use hemostat::policy::{HealthPolicy, load_str};
use tokio_util::sync::CancellationToken;

/// A private `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian: apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    fn hemostat(&self, args: &[&str]) -> (i32, String, String) {
        hemostat_env(args, &[("REDIS_URL", &self.url())])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hemostat_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hemostat"));
    cmd.args(args)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("REDIS_PASSWORD")
        .env_remove("HEMOSTAT_API");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn policy_yaml(name: &str, priority: i32) -> String {
    format!(
        "# applied by the test\napiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchNames: [\"{name}-*\"]\n  priority: {priority}\n  probes:\n    exit: {{nonZeroOnly: true}}\n  remediation:\n    actions: [restart]\n"
    )
}

fn parse(text: &str) -> HealthPolicy {
    let report = load_str("test", text);
    assert!(report.is_clean(), "{:?}", report.diagnostics);
    report.policies[0].policy.clone()
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn apply_get_describe_diff_delete_as_a_user_runs_them() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let web = write(dir.path(), "web.yaml", &policy_yaml("web", 10));

    let (code, out, err) = redis.hemostat(&["apply", "-f", &web]);
    assert_eq!(
        (code, out.as_str()),
        (0, "healthpolicy/web created\n"),
        "{err}"
    );
    let (code, out, _) = redis.hemostat(&["apply", "-f", &web]);
    assert_eq!((code, out.as_str()), (0, "healthpolicy/web unchanged\n"));

    // Semantically equal (reformatted, explicit default) is still unchanged.
    let same = policy_yaml("web", 10).replace(
        "  priority: 10\n",
        "  priority: 10\n  analysis: {mode: rules}\n",
    );
    let same_path = write(dir.path(), "same.yaml", &same);
    assert_eq!(parse(&same), parse(&policy_yaml("web", 10)));
    let (_, out, _) = redis.hemostat(&["apply", "-f", &same_path]);
    assert_eq!(out, "healthpolicy/web unchanged\n");

    // diff: no changes → 0; a change → 1 with a unified diff.
    let (code, out, _) = redis.hemostat(&["diff", "-f", &web]);
    assert_eq!((code, out.as_str()), (0, ""));
    let changed = write(dir.path(), "web2.yaml", &policy_yaml("web", 20));
    let (code, out, _) = redis.hemostat(&["diff", "-f", &changed]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("--- live/web\n+++ applied/web\n@@ "),
        "{out}"
    );
    assert!(
        out.contains("\n-  priority: 10\n+  priority: 20\n"),
        "{out}"
    );

    // A directory with a new policy and the modified one.
    let sub = dir.path().join("set");
    std::fs::create_dir(&sub).unwrap();
    write(&sub, "a-web.yaml", &policy_yaml("web", 20));
    write(&sub, "b-db.yml", &policy_yaml("db", 5));
    write(&sub, "notes.txt", "not a policy");
    let sub_arg = sub.to_str().unwrap();
    let (code, out, _) = redis.hemostat(&["diff", "-f", sub_arg]);
    assert_eq!(code, 1);
    assert!(
        out.contains("--- live/db\n+++ applied/db\n@@ -0,0 +1,"),
        "{out}"
    );
    let (code, out, err) = redis.hemostat(&["apply", "-f", sub_arg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "healthpolicy/web configured\nhealthpolicy/db created\n"
    );

    // `status` is the operator's: stripped before storing, and ignored when comparing.
    let with_status = format!("{}status: {{matchedContainers: 3}}\n", policy_yaml("db", 5));
    let status_path = write(dir.path(), "status.yaml", &with_status);
    let (_, out, _) = redis.hemostat(&["apply", "-f", &status_path]);
    assert_eq!(out, "healthpolicy/db unchanged\n");
    let mut conn = redis.client().get_connection().unwrap();
    let stored: String = redis::cmd("HGET")
        .arg("hemostat:policies")
        .arg("db")
        .query(&mut conn)
        .unwrap();
    assert!(stored.contains("# applied by the test"), "{stored}");
    let (_, out, _) = redis.hemostat(&["delete", "policy", "db"]);
    assert_eq!(out, "healthpolicy/db deleted\n");
    let (_, out, _) = redis.hemostat(&["apply", "-f", &status_path]);
    assert_eq!(out, "healthpolicy/db created\n");
    let stored: String = redis::cmd("HGET")
        .arg("hemostat:policies")
        .arg("db")
        .query(&mut conn)
        .unwrap();
    assert!(!stored.contains("status"), "{stored}");
    assert_eq!(parse(&stored), parse(&policy_yaml("db", 5)));

    // get -o json / yaml / table
    let (code, out, _) = redis.hemostat(&["get", "policies", "-o", "json"]);
    assert_eq!(code, 0);
    let items: Vec<HealthPolicy> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = items.iter().map(|p| p.metadata.name.as_str()).collect();
    assert_eq!(names, ["db", "web"]);
    assert_eq!(items[1].spec.priority, 20);
    let (_, out, _) = redis.hemostat(&["get", "policies", "-o", "yaml"]);
    assert!(
        out.contains("# applied by the test"),
        "stored text as applied: {out}"
    );
    let report = load_str("get", &out);
    assert!(report.is_clean(), "{:?}", report.diagnostics);
    assert_eq!(report.policies.len(), 2);
    let (_, out, _) = redis.hemostat(&["get", "policy", "web", "-o", "json"]);
    let one: HealthPolicy = serde_json::from_str(&out).unwrap();
    assert_eq!(one.metadata.name, "web");
    let (code, out, _) = redis.hemostat(&["get", "policies"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("GENERATION"),
        "{out}"
    );
    assert!(lines[1].starts_with("db ") && lines[1].contains("restart"));
    let web_row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &web_row[..5],
        ["web", "20", "restart", "false", "2"],
        "{out}"
    );

    // describe, with the operator unreachable: said clearly.
    let (code, out, _) =
        redis.hemostat(&["describe", "policy", "web", "--api", "http://127.0.0.1:9"]);
    assert_eq!(code, 0);
    assert!(out.contains("Name:         web\n"), "{out}");
    assert!(out.contains("Generation:   2\n"), "{out}");
    assert!(out.contains("not reachable"), "{out}");
    let (code, _, err) = redis.hemostat(&["describe", "policy", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("healthpolicy/nope not found"), "{err}");

    // delete, then get shows it gone.
    let (code, out, _) = redis.hemostat(&["delete", "policy", "web"]);
    assert_eq!((code, out.as_str()), (0, "healthpolicy/web deleted\n"));
    let (code, _, err) = redis.hemostat(&["delete", "policy", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("healthpolicy/web not found"), "{err}");
    let (_, out, _) = redis.hemostat(&["get", "policies", "-o", "json"]);
    let items: Vec<HealthPolicy> = serde_json::from_str(&out).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].metadata.name, "db");
    let (code, _, _) = redis.hemostat(&["get", "policy", "web"]);
    assert_eq!(code, 1);
}

#[test]
fn invalid_apply_writes_nothing_and_names_file_line_col() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}---\napiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: broken\nspec:\n  selector: {{matchNames: [\"x-*\"]}}\n  probes:\n    cpu: {{abovePercent: 250}}\n",
        policy_yaml("good", 1)
    );
    let path = write(dir.path(), "mixed.yaml", &text);
    let (code, out, err) = redis.hemostat(&["apply", "-f", &path]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.contains(&format!(
            "{path}:22:11: error: percentage 250 is out of range"
        )),
        "{err}"
    );
    let mut conn = redis.client().get_connection().unwrap();
    let n: u64 = redis::cmd("HLEN")
        .arg("hemostat:policies")
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 0, "nothing may be written");
    let (code, _, err) = redis.hemostat(&["diff", "-f", &path]);
    assert_eq!(code, 2);
    assert!(err.contains(":22:11: error:"), "{err}");
}

#[test]
fn an_unreachable_redis_is_named_without_its_password() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let (code, out, err) = hemostat_env(&["get", "policies"], &[("REDIS_URL", &url)]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{err}"
    );
    assert!(err.contains("REDIS_URL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let port_s = port.to_string();
    let (code, _, err) = hemostat_env(
        &["get", "policies"],
        &[
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port_s),
            ("REDIS_PASSWORD", "hunter2"),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains(&format!("redis://127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

async fn wait_for(
    registry: &PolicyRegistry,
    within: Duration,
    what: &str,
    check: impl Fn(&[HealthPolicy]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check(&registry.snapshot()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what} not seen within {within:?}: {:?}",
            registry
                .snapshot()
                .iter()
                .map(|p| (&p.metadata.name, p.spec.priority))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn priority_of(set: &[HealthPolicy], name: &str) -> Option<i32> {
    set.iter()
        .find(|p| p.metadata.name == name)
        .map(|p| p.spec.priority)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_enforces_applies_quickly_and_never_takes_garbage() {
    let redis = Redis::start();
    let client = redis.client();
    let mut repo = PolicyRepo::connect(client.clone()).await.unwrap();
    repo.apply("pre", &policy_yaml("early", 1)).await.unwrap();

    let base = vec![
        parse(&policy_yaml("from-file", 3)),
        parse(&policy_yaml("web", 99)),
    ];
    let registry = Arc::new(PolicyRegistry::new(base.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch_policies(
        client.clone(),
        registry.clone(),
        base,
        shutdown.clone(),
    ));

    // The initial read: base ∪ remote.
    wait_for(&registry, Duration::from_secs(2), "initial load", |s| {
        priority_of(s, "early") == Some(1) && priority_of(s, "from-file") == Some(3)
    })
    .await;
    // Give the subscription a moment so the next apply is seen via pub/sub, not the poll.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // apply → in force within 2 s; a remote policy wins over a file one of the same name.
    repo.apply("t", &policy_yaml("web", 7)).await.unwrap();
    let took = wait_for(&registry, Duration::from_secs(2), "applied web", |s| {
        priority_of(s, "web") == Some(7)
    })
    .await;
    assert!(took < Duration::from_secs(2));
    assert_eq!(
        registry
            .snapshot()
            .iter()
            .filter(|p| p.metadata.name == "web")
            .count(),
        1
    );

    // Garbage written directly (and announced) never replaces the last good version,
    // and a garbage new name never enters.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let other = policy_yaml("other", 1);
    let garbage: [(&str, &[u8]); 4] = [
        ("web", b"apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata: {name: web}\nspec: {selector: {matchAll: true}, probes: {cpu: {abovePercent: 900}}}\n"),
        ("early", b"\xff\xfe not yaml at all"),
        ("sneaky", b"{{{{"),
        ("renamed", other.as_bytes()),
    ];
    for (name, value) in garbage {
        let () = redis::cmd("HSET")
            .arg("hemostat:policies")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: u64 = redis::cmd("PUBLISH")
            .arg("hemostat:policies:changed")
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A later valid apply proves the garbage has been read and processed.
    repo.apply("t", &policy_yaml("marker", 4)).await.unwrap();
    wait_for(&registry, Duration::from_secs(2), "marker", |s| {
        priority_of(s, "marker") == Some(4)
    })
    .await;
    let snapshot = registry.snapshot();
    assert_eq!(priority_of(&snapshot, "web"), Some(7), "last good web kept");
    assert_eq!(
        priority_of(&snapshot, "early"),
        Some(1),
        "last good early kept"
    );
    assert_eq!(priority_of(&snapshot, "sneaky"), None);
    assert_eq!(priority_of(&snapshot, "renamed"), None);
    assert_eq!(priority_of(&snapshot, "other"), None);

    // A valid apply over the garbage is taken again; a delete removes it (and the file
    // version of the same name comes back).
    repo.apply("t", &policy_yaml("web", 8)).await.unwrap();
    wait_for(&registry, Duration::from_secs(2), "web 8", |s| {
        priority_of(s, "web") == Some(8)
    })
    .await;
    assert!(repo.delete("web").await.unwrap());
    assert!(repo.delete("marker").await.unwrap());
    wait_for(&registry, Duration::from_secs(2), "deletes", |s| {
        priority_of(s, "web") == Some(99) && priority_of(s, "marker").is_none()
    })
    .await;

    // A valid value written without any announcement is picked up by the periodic poll.
    let quiet = policy_yaml("quiet", 6);
    let () = redis::cmd("HSET")
        .arg("hemostat:policies")
        .arg("quiet")
        .arg(&quiet)
        .query_async(&mut conn)
        .await
        .unwrap();
    wait_for(
        &registry,
        Duration::from_secs(7),
        "unannounced quiet",
        |s| priority_of(s, "quiet") == Some(6),
    )
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("watcher stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_survives_a_redis_restart() {
    let mut redis = Redis::start();
    let port = redis.port;
    let client = redis.client();
    let registry = Arc::new(PolicyRegistry::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch_policies(
        client.clone(),
        registry.clone(),
        Vec::new(),
        shutdown.clone(),
    ));
    let mut repo = PolicyRepo::connect(client.clone()).await.unwrap();
    repo.apply("t", &policy_yaml("one", 1)).await.unwrap();
    wait_for(&registry, Duration::from_secs(2), "one", |s| {
        priority_of(s, "one") == Some(1)
    })
    .await;

    // Redis goes away: what is in force stays in force.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(priority_of(&registry.snapshot(), "one"), Some(1));

    // It comes back (empty, on the same port): the watcher reconnects and re-reads.
    redis.child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut repo = PolicyRepo::connect(client.clone()).await.unwrap();
    repo.apply("t", &policy_yaml("two", 2)).await.unwrap();
    wait_for(
        &registry,
        Duration::from_secs(40),
        "two after reconnect",
        |s| priority_of(s, "two") == Some(2) && priority_of(s, "one").is_none(),
    )
    .await;

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
}

/// A stand-in for a running operator's `/api/v1` (the real one is tested in `http_api.rs`).
async fn fake_operator() -> (String, tokio::task::JoinHandle<()>) {
    use axum::Json;
    use axum::routing::get;
    let container = |name: &str, policy: &str| {
        serde_json::json!({
            "name": name, "id": format!("{name}-id"), "image": "busybox", "state": "running",
            "health": "unhealthy", "exit_code": null, "oom_killed": false, "restart_count": 2,
            "labels": {"app": "web"}, "manual_stop": false, "protected": false,
            "policy": policy, "cpu_percent": 12.5, "memory_percent": 40.0, "restarts_seen": 1,
            "unhealthy_since": null,
            "safety": {"last_action_at": null, "actions_in_window": 0, "failures": 0,
                       "breaker_open_until": null}
        })
    };
    let containers = serde_json::json!([container("web-1", "web"), container("db-1", "db")]);
    // The CLI reads the real types: make sure the fake matches them.
    let _: Vec<hemostat::http::views::ContainerView> =
        serde_json::from_value(containers.clone()).unwrap();
    let decisions = serde_json::json!([
        {"timestamp": "2026-01-01T00:00:00.000001", "agent": "HemoStat-Analyzer",
         "type": "remediation_needed",
         "data": {"container": "web-1", "action": "restart", "reason": "health check failing", "confidence": 0.9}},
        {"timestamp": "2026-01-01T00:00:01.000001", "agent": "HemoStat-Analyzer",
         "type": "remediation_needed",
         "data": {"container": "db-1", "action": "restart", "reason": "db reason", "confidence": 0.9}},
        {"event_type": "remediation_complete", "timestamp": "2026-01-01T02:00:02.5+02:00",
         "agent": "responder",
         "data": {"container": "db-1", "action": "restart", "result": {"status": "success"}}}
    ]);
    let app = axum::Router::new()
        .route(
            "/api/v1/containers",
            get(move || {
                let c = containers.clone();
                async move { Json(c) }
            }),
        )
        .route(
            "/api/v1/decisions",
            get(move || {
                let d = decisions.clone();
                async move { Json(d) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_get_read_a_running_operator() {
    let redis = Redis::start();
    let (api, server) = fake_operator().await;
    let mut repo = PolicyRepo::connect(redis.client()).await.unwrap();
    repo.apply("t", &policy_yaml("web", 10)).await.unwrap();
    let url = redis.url();
    let run = move |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hemostat_env(&args, &[("REDIS_URL", &url)])
        })
    };
    let strings = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (code, out, err) = run(strings(&["describe", "policy", "web", "--api", &api]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Matched containers: 1\n"), "{out}");
    assert!(out.contains("web-1") && !out.contains("db-1"), "{out}");
    assert!(out.contains("Recent decisions: 1\n"), "{out}");
    assert!(out.contains("health check failing"), "{out}");
    assert!(!out.contains("not reachable"), "{out}");

    let (code, out, _) = run(strings(&["get", "containers", "--api", &api]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("HEALTH"),
        "{out}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["web-1", "running", "unhealthy", "web", "12.5", "40.0"],
        "{out}"
    );
    let (_, out, _) = run(strings(&["get", "containers", "--api", &api, "-o", "json"]))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["name"], "db-1");
    let (_, out, _) = run(strings(&["get", "decisions", "--api", &api, "-o", "yaml"]))
        .await
        .unwrap();
    assert!(out.contains("reason: db reason"), "{out}");
    let (_, out, _) = run(strings(&["get", "decisions", "--api", &api]))
        .await
        .unwrap();
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "2026-01-01T00:00:00.000001+00:00",
            "remediation_needed",
            "web-1",
            "restart",
            "-",
            "-",
            "health",
            "check",
            "failing"
        ],
        "{out}"
    );
    // An original agent's envelope: `event_type` only, a time with another offset.
    let row: Vec<&str> = out.lines().nth(3).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "2026-01-01T00:00:02.500000+00:00",
            "remediation_complete",
            "db-1",
            "restart",
            "success",
            "-",
            "-"
        ],
        "{out}"
    );

    let (code, _, err) = run(strings(&[
        "get",
        "decisions",
        "--api",
        "http://127.0.0.1:9",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("not reachable at http://127.0.0.1:9"), "{err}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_each_see_a_consistent_outcome_and_generation() {
    use hemostat::adapters::redis::policies::Outcome;
    let redis = Redis::start();
    let repo = PolicyRepo::connect(redis.client()).await.unwrap();
    let tasks: Vec<_> = (1..=10)
        .map(|priority| {
            let mut repo = repo.clone();
            tokio::spawn(async move {
                repo.apply("t", &policy_yaml("race", priority))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap()[0].1);
    }
    let created = outcomes.iter().filter(|o| **o == Outcome::Created).count();
    let configured = outcomes
        .iter()
        .filter(|o| **o == Outcome::Configured)
        .count();
    assert_eq!((created, configured), (1, 9), "{outcomes:?}");
    let mut repo = repo;
    let stored = repo.get("race").await.unwrap().unwrap();
    assert_eq!(stored.meta.unwrap().generation, 10);
}

/// Policy metadata written in any timestamp form (naive, as the original's protocol document
/// shows; `Z`, as HemoStat wrote before; `+00:00`, as it writes now) is read, so a re-apply
/// continues its generation instead of restarting at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_metadata_reads_every_timestamp_form() {
    use hemostat::adapters::redis::policies::{META_KEY, Outcome};
    use redis::AsyncCommands;
    let redis = Redis::start();
    let mut repo = PolicyRepo::connect(redis.client()).await.unwrap();
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (i, applied) in [
        "2025-11-03T10:30:45.123456",
        "2025-11-03T10:30:45.123456Z",
        "2025-11-03T10:30:45.123456+00:00",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("p{i}");
        repo.apply("t", &policy_yaml(&name, 1)).await.unwrap();
        let meta = format!(r#"{{"generation":7,"appliedAt":"{applied}"}}"#);
        let _: () = conn.hset(META_KEY, &name, meta).await.unwrap();
        let stored = repo.get(&name).await.unwrap().unwrap();
        let meta = stored.meta.expect("metadata is read");
        assert_eq!(
            meta.applied_at.to_rfc3339(),
            "2025-11-03T10:30:45.123456+00:00",
            "{applied}"
        );
        let outcome = repo.apply("t", &policy_yaml(&name, 2)).await.unwrap();
        assert_eq!(outcome, [(name.clone(), Outcome::Configured)]);
        let meta = repo.get(&name).await.unwrap().unwrap().meta.unwrap();
        assert_eq!(meta.generation, 8, "{applied}");
        let raw: String = conn.hget(META_KEY, &name).await.unwrap();
        assert!(raw.contains("+00:00\""), "written with the offset: {raw}");
    }
}
