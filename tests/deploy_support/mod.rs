//! Helpers for the deployment tests: the operator image (built once per run by scripts/test.sh), the offline Redis image, operator and Redis containers, private networks.
//!
//! ```ignore
//! mod deploy_support;
//! let image = deploy_support::operator_image();   // $HEMOSTAT_TEST_IMAGE, or a loud panic
//! let redis = deploy_support::redis_image();      // built by scripts/build-redis-image.sh
//! ```
//!
//! Every container carries the [`support`] run label, so dropping the `TestRun` removes it;
//! networks are removed by [`Network`]'s drop (declare the network before the run).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{RUN_LABEL, TEST_LABEL, TestRun};

/// The environment variable naming the operator image under test.
pub const IMAGE_ENV: &str = "HEMOSTAT_TEST_IMAGE";
/// The environment variable naming a Redis image to use instead of building one.
pub const REDIS_IMAGE_ENV: &str = "HEMOSTAT_TEST_REDIS_IMAGE";
/// The API token of every operator container of the tests: in the image the operator listens
/// on 0.0.0.0, where reads of the API need `Authorization: Bearer <token>`.
pub const API_TOKEN: &str = "hemostat-test-token-0123456789abcdef";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `docker <args>`; panics with its stderr when it fails; returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `docker <args>` and returns whether it succeeded (for clean-up and polling).
pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The operator image built by `scripts/build-image.sh` (scripts/test.sh builds it once per
/// run and exports its tag). Never built here: a release build takes minutes.
pub fn operator_image() -> String {
    let image = std::env::var(IMAGE_ENV).unwrap_or_default();
    assert!(
        !image.is_empty(),
        "{IMAGE_ENV} is not set: build the operator image first (`scripts/build-image.sh hemostat:test`) \
         and run with {IMAGE_ENV}=hemostat:test; scripts/test.sh does both"
    );
    assert!(
        docker_ok(&["image", "inspect", &image]),
        "{IMAGE_ENV}={image}, but the engine has no such image: run `scripts/build-image.sh {image}`"
    );
    image
}

/// A Redis image: `$HEMOSTAT_TEST_REDIS_IMAGE`, else the one scripts/build-redis-image.sh builds
/// (FROM scratch + Debian's redis-server; once per content, a file lock keeps test binaries
/// from building it at the same time).
pub fn redis_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Ok(image) = std::env::var(REDIS_IMAGE_ENV)
                && !image.is_empty()
            {
                return image;
            }
            let lock_path = std::env::temp_dir().join("hemostat-test-redis-image.lock");
            let lock = File::create(&lock_path)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
            lock.lock()
                .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
            let out = Command::new(repo_root().join("scripts/build-redis-image.sh"))
                .output()
                .expect("run scripts/build-redis-image.sh");
            assert!(
                out.status.success(),
                "scripts/build-redis-image.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .expect("the script prints the tag")
                .trim()
                .to_owned()
        })
        .clone()
}

/// A Docker network of one test, removed on drop (after its containers: declare it first).
pub struct Network {
    /// Its name.
    pub name: String,
}

impl Network {
    /// Creates a user-defined bridge network (with Docker's DNS for container names).
    pub fn new(run: &TestRun, suffix: &str) -> Self {
        let name = run.name(suffix);
        docker(&[
            "network",
            "create",
            "--label",
            &format!("{TEST_LABEL}=1"),
            "--label",
            &run.label,
            &name,
        ]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// How to run one container from an image that is not the busybox test image.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Name suffix (the run's prefix goes before it).
    pub name: String,
    /// Image.
    pub image: String,
    /// Arguments after the image (the image's CMD when empty).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Labels on top of the run's.
    pub labels: Vec<(String, String)>,
    /// `host:container[:ro]` bind mounts.
    pub binds: Vec<String>,
    /// Container ports published on 127.0.0.1, on a free port each.
    pub publish: Vec<u16>,
    /// Networks to join after creation (besides the default bridge).
    pub networks: Vec<String>,
    /// Network aliases on those networks.
    pub aliases: Vec<String>,
}

/// A running container of a test (removed with the run's containers).
#[derive(Clone, Debug)]
pub struct Running {
    /// Full container name.
    pub name: String,
    /// Full id.
    pub id: String,
}

impl Running {
    /// The 127.0.0.1 address the container's `port` is published on.
    pub fn published(&self, port: u16) -> String {
        let out = docker(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("{} does not publish {port} on 127.0.0.1: {out}", self.name))
            .to_owned()
    }

    /// Its logs (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.id])
    }
}

/// Creates and starts a container per `spec`, labelled with the run's labels.
pub fn run_container(run: &TestRun, spec: &Spec) -> Running {
    let name = run.name(&spec.name);
    let mut args: Vec<String> = vec![
        "create".into(),
        "--name".into(),
        name.clone(),
        "--label".into(),
        format!("{TEST_LABEL}=1"),
        "--label".into(),
        format!("{RUN_LABEL}={}", run.run_id),
    ];
    for (k, v) in &spec.labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    for (k, v) in &spec.env {
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    for b in &spec.binds {
        args.extend(["--volume".into(), b.clone()]);
    }
    for p in &spec.publish {
        args.extend(["--publish".into(), format!("127.0.0.1::{p}")]);
    }
    args.push(spec.image.clone());
    args.extend(spec.args.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = docker(&refs);
    for net in &spec.networks {
        let mut a = vec!["network", "connect"];
        for alias in &spec.aliases {
            a.extend(["--alias", alias]);
        }
        a.extend([net.as_str(), id.as_str()]);
        docker(&a);
    }
    docker(&["start", &id]);
    Running { name, id }
}

/// A HemoStat operator container from the image, with its API published on 127.0.0.1.
pub struct OperatorContainer {
    /// The container.
    pub container: Running,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: reqwest::Client,
}

impl OperatorContainer {
    /// Starts the operator image with the engine socket, `policies` (a host directory, mounted
    /// read-only) and `state` (a host directory), observing only containers with `label_filter`.
    pub async fn start(
        run: &TestRun,
        name: &str,
        policies: &Path,
        state: &Path,
        label_filter: &str,
        extra_env: &[(&str, &str)],
        networks: &[&str],
    ) -> Self {
        std::fs::create_dir_all(state).unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("HEMOSTAT_POLICIES".into(), "/etc/hemostat/policies".into()),
            ("HEMOSTAT_LABEL_FILTER".into(), label_filter.into()),
            ("HEMOSTAT_SAMPLE_INTERVAL".into(), "1s".into()),
            ("HEMOSTAT_RESYNC_INTERVAL".into(), "5s".into()),
            ("LOG_LEVEL".into(), "hemostat=debug,info".into()),
            ("HEMOSTAT_API_TOKEN".into(), API_TOKEN.into()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let spec = Spec {
            name: name.into(),
            image: operator_image(),
            env,
            binds: vec![
                "/var/run/docker.sock:/var/run/docker.sock".into(),
                "/sys/fs/cgroup:/host/sys/fs/cgroup:ro".into(),
                format!("{}:/etc/hemostat/policies:ro", policies.display()),
                format!("{}:/var/lib/hemostat", state.display()),
            ],
            publish: vec![9090],
            networks: networks.iter().map(|n| (*n).to_owned()).collect(),
            ..Spec::default()
        };
        let container = run_container(run, &spec);
        let op = Self::attach(container).await;
        op.wait_ready(Duration::from_secs(30)).await;
        op
    }

    /// Wraps an already started operator container.
    pub async fn attach(container: Running) -> Self {
        let base = format!("http://{}", container.published(9090));
        OperatorContainer {
            container,
            base,
            // Generous: during a Redis outage a request may wait for one Redis probe (5 s).
            http: reqwest::Client::builder()
                .default_headers(
                    [(
                        reqwest::header::AUTHORIZATION,
                        format!("Bearer {API_TOKEN}").parse().unwrap(),
                    )]
                    .into_iter()
                    .collect(),
                )
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator {} never became ready; logs:\n{}",
                self.container.name,
                self.container.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET a JSON document from its API (`None` while it does not answer).
    pub async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Its audit trail as it serves it (empty while it does not answer).
    pub async fn audit(&self) -> Vec<Value> {
        self.get("/api/v1/audit?limit=1000")
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of one metric line (`name{labels}` exactly), if present.
    pub async fn metric(&self, line: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == line).then(|| value.parse().ok()).flatten()
        })
    }
}

/// A Redis container of the test, on `network` as `alias`, with its port published on
/// 127.0.0.1 for the test's own checks.
pub struct RedisContainer {
    /// The container.
    pub container: Running,
    /// `redis://127.0.0.1:PORT/0`, for the test.
    pub url: String,
}

impl RedisContainer {
    /// Starts the Redis image (append-only, no password: reachable only on the test's networks).
    pub async fn start(run: &TestRun, network: &str, alias: &str) -> Self {
        let spec = Spec {
            name: alias.into(),
            image: redis_image(),
            args: vec![
                "redis-server".into(),
                "--protected-mode".into(),
                "no".into(),
                "--appendonly".into(),
                "yes".into(),
            ],
            labels: vec![("io.hemostat.protected".into(), "true".into())],
            publish: vec![6379],
            networks: vec![network.into()],
            aliases: vec![alias.into()],
            ..Spec::default()
        };
        let container = run_container(run, &spec);
        let url = format!("redis://{}/0", container.published(6379));
        let redis = RedisContainer { container, url };
        crate::support::wait_until(Duration::from_secs(20), "redis answers", || async {
            redis.connection().await.is_some()
        })
        .await;
        redis
    }

    /// A connection for the test's checks (`None` while it does not answer).
    pub async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str()).ok()?;
        let mut c = tokio::time::timeout(
            Duration::from_secs(3),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        let pong: String = redis::cmd("PING").query_async(&mut c).await.ok()?;
        (pong == "PONG").then_some(c)
    }

    /// Every envelope in `hemostat:stream:events`, oldest first.
    pub async fn stream(&self) -> Vec<Value> {
        let Some(mut c) = self.connection().await else {
            return Vec::new();
        };
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("hemostat:stream:events")
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        entries
            .ids
            .iter()
            .filter_map(|e| serde_json::from_str(&e.get::<String>("envelope")?).ok())
            .collect()
    }

    /// The fleet-wide audit list `hemostat:audit`, oldest first.
    pub async fn audit(&self) -> Vec<Value> {
        let Some(mut c) = self.connection().await else {
            return Vec::new();
        };
        let newest_first: Vec<String> = redis::cmd("LRANGE")
            .arg("hemostat:audit")
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        newest_first
            .iter()
            .rev()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect()
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Option<String> {
        let mut c = self.connection().await?;
        redis::cmd("GET").arg(key).query_async(&mut c).await.ok()?
    }
}

/// Container names the engine restarted (`restart` events) since `since` (RFC 3339 or unix
/// seconds), among the containers carrying `label`, with how many times each.
pub fn restarts_since(since: &str, label: &str) -> HashMap<String, usize> {
    let until = chrono::Utc::now().timestamp().to_string();
    let out = docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        "event=restart",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    let mut counts = HashMap::new();
    for name in out.lines().filter(|l| !l.is_empty()) {
        *counts.entry(name.to_owned()).or_default() += 1;
    }
    counts
}
