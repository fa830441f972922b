//! `deploy/docker-compose.yml` for real, with `docker-compose` 1.29 and with compose v2: the stack (operator image + a locally built Redis image as REDIS_IMAGE, password from an env file) comes up with the demo profile, repairs the crashing demo containers, and Redis' stream holds the decisions.
//!
//! Compose v2 is the binary `$HEMOSTAT_TEST_COMPOSE_V2` (scripts/test.sh fetches it: Debian 12
//! ships only 1.29).

mod deploy_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use deploy_support::{docker, operator_image, redis_image};
use serde_json::Value;
use support::{busybox_image, wait_until};

/// A compose project of one test, always taken down (`down -v`) on drop.
struct Stack {
    /// The compose command: `docker-compose` (1.29) or a compose v2 binary.
    compose: String,
    project: String,
    files: Vec<PathBuf>,
    env_file: PathBuf,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.compose);
        cmd.args(["-p", &self.project, "--env-file"])
            .arg(&self.env_file);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["--profile", "demo"]).args(args);
        cmd.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/test.sh installs it",
                self.compose
            )
        })
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "`docker-compose {}` failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The id of a service's container.
    fn id(&self, service: &str) -> String {
        let id = self.compose_ok(&["ps", "-a", "-q", service]);
        assert!(!id.is_empty(), "service {service} has no container");
        id
    }

    /// `hemostat:stream:events`, read with the Redis container's own redis-cli (it knows the
    /// password through REDISCLI_AUTH).
    fn stream(&self) -> Vec<Value> {
        let out = self.compose(&[
            "exec",
            "-T",
            "redis",
            "redis-cli",
            "--no-raw",
            "XRANGE",
            "hemostat:stream:events",
            "-",
            "+",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let quoted = l.trim().split_once(") ")?.1;
                let s: String = serde_json::from_str(quoted).ok()?;
                serde_json::from_str::<Value>(&s).ok()
            })
            .filter(|v| v.get("type").is_some())
            .collect()
    }

    fn logs(&self) -> String {
        let out = self.compose(&["logs", "--no-color", "hemostat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let out = self.compose(&["down", "-v", "--remove-orphans", "--timeout", "2"]);
        if !out.status.success() {
            eprintln!(
                "docker-compose down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The override a test adds: the operator observes only this project's containers (other
/// tests run beside it on this engine), and every container carries the test label.
fn write_override(dir: &Path, project: &str) -> PathBuf {
    let services = [
        "redis",
        "hemostat",
        "demo-crash-loop",
        "demo-cpu-hog",
        "demo-memory-hog",
        "demo-unhealthy",
        "demo-oom",
        "demo-web",
    ];
    let mut yaml = String::from("services:\n");
    for s in services {
        yaml.push_str(&format!(
            "  {s}:\n    labels:\n      hemostat.test: \"1\"\n"
        ));
        if s == "hemostat" {
            yaml.push_str(&format!(
                "    environment:\n      HEMOSTAT_LABEL_FILTER: com.docker.compose.project={project}\n      HEMOSTAT_SAMPLE_INTERVAL: 2s\n"
            ));
        }
    }
    let path = dir.join("test-override.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn with_docker_compose_1_29_the_stack_repairs_the_failing_demo_containers_and_streams_the_decisions()
 {
    let version = Command::new("docker-compose")
        .arg("version")
        .arg("--short")
        .output()
        .expect("docker-compose (Debian's docker-compose package; scripts/test.sh installs it)");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("1."),
        "docker-compose is not 1.x: {}",
        String::from_utf8_lossy(&version.stdout)
    );
    stack_repairs_and_streams("docker-compose").await;
}

#[tokio::test]
async fn with_compose_v2_the_stack_repairs_the_failing_demo_containers_and_streams_the_decisions() {
    let v2 = std::env::var("HEMOSTAT_TEST_COMPOSE_V2").unwrap_or_default();
    assert!(
        !v2.is_empty(),
        "HEMOSTAT_TEST_COMPOSE_V2 is not set: point it at a compose v2 binary (scripts/test.sh fetches one)"
    );
    let version = Command::new(&v2).arg("version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("v2."),
        "{v2} is not compose v2: {}",
        String::from_utf8_lossy(&version.stdout)
    );
    stack_repairs_and_streams(&v2).await;
}

async fn stack_repairs_and_streams(compose: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = format!(
        "hstcompose{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let password = uuid::Uuid::new_v4().simple().to_string();
    let env_file = dir.path().join(".env");
    std::fs::write(
        &env_file,
        format!(
            "REDIS_PASSWORD={password}\nHEMOSTAT_API_TOKEN={password}-api\nHEMOSTAT_IMAGE={}\nREDIS_IMAGE={}\nDEMO_IMAGE={}\nHEMOSTAT_PORT=0\nHEMOSTAT_NODE_NAME=compose-node\n",
            operator_image(),
            redis_image(),
            busybox_image().await,
        ),
    )
    .unwrap();
    let stack = Stack {
        compose: compose.to_owned(),
        files: vec![
            repo().join("deploy/docker-compose.yml"),
            write_override(dir.path(), &project),
        ],
        project,
        env_file,
    };
    stack.compose_ok(&["up", "-d"]);

    // Redis answers with the password only, and is protected by its label.
    let redis = stack.id("redis");
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &redis]);
    assert!(
        labels.contains("\"io.hemostat.protected\":\"true\""),
        "{labels}"
    );
    let noauth = Command::new("docker")
        .args([
            "exec",
            &redis,
            "redis-cli",
            "--no-auth-warning",
            "-a",
            "wrong",
            "PING",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&noauth.stdout).contains("PONG"),
        "Redis answered a wrong password"
    );

    let operator = stack.id("hemostat");
    wait_until(
        Duration::from_secs(60),
        "the operator's healthcheck reports healthy",
        || async { docker(&["inspect", "-f", "{{.State.Health.Status}}", &operator]) == "healthy" },
    )
    .await;
    let logs = stack.logs();
    assert!(
        logs.contains("no policy file in --policies"),
        "deploy/policies/ holds no policy: the built-in policy must govern; logs:\n{logs}"
    );
    assert!(
        logs.contains("shared state and decisions go to Redis"),
        "the operator must reach Redis through the compose network with the password; logs:\n{logs}"
    );

    // The crash loop (exit 1 after 5 s), the OOM (8 MiB) and the memory hog (87 % for 1 min)
    // are repaired by a restart each; the web server whose healthcheck always fails is
    // restarted too, and that restart is reported failed (it comes back unhealthy).
    let services = [
        "demo-crash-loop",
        "demo-oom",
        "demo-unhealthy",
        "demo-memory-hog",
        "demo-web",
    ];
    let names: Vec<String> = services
        .iter()
        .map(|s| {
            docker(&["inspect", "-f", "{{.Name}}", &stack.id(s)])
                .trim_start_matches('/')
                .to_owned()
        })
        .collect();
    let (repaired, web) = (&names[..4], &names[4]);
    let outcome = |stream: &[Value], name: &str| {
        stream
            .iter()
            .find(|e| {
                e["type"] == "remediation_complete"
                    && e["data"]["container"] == name
                    && e["data"]["action"] == "restart"
                    && e["data"]["gate"].is_null()
            })
            .map(|e| {
                e["data"]["result"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
    };
    let want = ["success", "success", "failed", "success"];
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let stream = loop {
        let stream = stack.stream();
        let outcomes: Vec<Option<String>> = repaired.iter().map(|n| outcome(&stream, n)).collect();
        if outcomes.iter().all(Option::is_some) {
            let got: Vec<&str> = outcomes.iter().flatten().map(String::as_str).collect();
            assert_eq!(got, want, "restart outcomes of {repaired:?}");
            break stream;
        }
        if std::time::Instant::now() > deadline {
            let per: Vec<String> = names
                .iter()
                .map(|n| {
                    let types: Vec<String> = stream
                        .iter()
                        .filter(|e| e["data"]["container"] == n.as_str())
                        .map(|e| format!("{} {}", e["type"], e["data"]["result"]["status"]))
                        .collect();
                    format!("{n}: {types:?}")
                })
                .collect();
            panic!(
                "timed out waiting until each failing demo container is restarted:\n{}\nlogs:\n{}",
                per.join("\n"),
                stack.logs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for (service, name) in services.iter().zip(repaired) {
        let mine: Vec<&Value> = stream
            .iter()
            .filter(|e| e["data"]["container"] == name.as_str())
            .collect();
        let types: Vec<&str> = mine.iter().filter_map(|e| e["type"].as_str()).collect();
        let alert = types.iter().position(|t| *t == "health_alert");
        let needed = types.iter().position(|t| *t == "remediation_needed");
        let complete = types.iter().position(|t| *t == "remediation_complete");
        assert!(
            alert < needed && needed < complete && alert.is_some(),
            "{service}: alert, request and outcome in order: {types:?}"
        );
        assert_eq!(mine[0]["data"]["node"], "compose-node");
        assert_eq!(mine[0]["data"]["policy"], "hemostat-default");
    }
    // The healthy web server and the stack's own containers are never acted on.
    for e in &stream {
        let c = e["data"]["container"].as_str().unwrap_or_default();
        assert_ne!(c, web, "the healthy web server was touched: {e}");
        assert!(
            !c.contains("hemostat") && !c.contains("redis"),
            "the stack's own containers must never be decided on: {e}"
        );
    }
}
