//! Runs the real `hemostat` binary against the real engine and reads what it did over its HTTP API.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running operator process, killed on drop.
pub struct Operator {
    child: Option<Child>,
    /// The API base, `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its `--state-dir`.
    pub state_dir: PathBuf,
    /// Its log file (stderr).
    pub log: PathBuf,
    http: reqwest::Client,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `yaml` into a new policy directory under `dir` and returns the directory.
pub fn policy_dir(dir: &Path, yaml: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::File::create(policies.join("policy.yaml"))
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    policies
}

/// A policy selecting the test run's containers, with the given `spec` body (indented 2).
pub fn policy_for_run(name: &str, run_id: &str, spec_body: &str) -> String {
    format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{hemostat.test.run: \"{run_id}\", role: target}}\n{spec_body}"
    )
}

impl Operator {
    /// Starts `hemostat run` observing only the run's containers (`--label-filter`), with fast
    /// intervals, its state in `state_dir`, and waits until it is ready.
    pub async fn start(policies: &Path, run_label: &str, state_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(policies, run_label, state_dir, extra, &[]).await
    }

    /// [`Operator::start`] on a given port (to start it again where clients expect it).
    pub async fn start_at(
        port: u16,
        policies: &Path,
        run_label: &str,
        state_dir: &Path,
        extra: &[&str],
    ) -> Self {
        Self::start_full(port, policies, run_label, state_dir, extra, &[]).await
    }

    /// Like [`Operator::start`], with extra environment variables (e.g. `DOCKER_HOST`).
    pub async fn start_with_env(
        policies: &Path,
        run_label: &str,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_full(free_port(), policies, run_label, state_dir, extra, env).await
    }

    async fn start_full(
        port: u16,
        policies: &Path,
        run_label: &str,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let fast = [
            "--sample-interval",
            "1s",
            "--resync-interval",
            "5s",
            "--log-level",
            "hemostat=debug,info",
        ];
        let args: Vec<&str> = fast.iter().copied().chain(extra.iter().copied()).collect();
        Self::start_exactly(port, policies, run_label, state_dir, &args, env).await
    }

    /// Starts `hemostat run` with only `args` beyond the policies, the port, the label filter
    /// and the state dir: the operator's own intervals and log level unless `args` set them
    /// (for benchmarks measuring what a default operator costs).
    pub async fn start_exactly(
        port: u16,
        policies: &Path,
        run_label: &str,
        state_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = state_dir.join(format!("operator-{port}.log"));
        std::fs::create_dir_all(state_dir).unwrap();
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hemostat"))
            .args(["run", "--policies"])
            .arg(policies)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--label-filter", run_label])
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .env("HEMOSTAT_NODE_NAME", "test-node")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("cannot start the hemostat binary");
        let op = Operator {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            state_dir: state_dir.to_path_buf(),
            log,
            http: reqwest::Client::new(),
        };
        op.wait_ready().await;
        op
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator never became ready; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a text document (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log_text()));
        r.text().await.unwrap()
    }

    /// GET a JSON document from the API.
    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log_text()));
        r.json().await.unwrap()
    }

    /// The audit trail (oldest first).
    pub async fn audit(&self) -> Vec<Value> {
        self.get("/api/v1/audit?limit=1000")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Audit records about one container.
    pub async fn audit_for(&self, container: &str) -> Vec<Value> {
        self.audit()
            .await
            .into_iter()
            .filter(|r| r["container"] == container)
            .collect()
    }

    /// Waits up to `secs` for an audit record about `container` that `matches`, and returns it;
    /// panics naming `what` (and with the operator's log) when none comes.
    pub async fn wait_audit(
        &self,
        container: &str,
        secs: u64,
        what: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(record) = self
                .audit_for(container)
                .await
                .into_iter()
                .find(|r| matches(r))
            {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting until {what}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Recent envelopes of one type about one container.
    pub async fn decisions(&self, event_type: &str, container: &str) -> Vec<Value> {
        self.get(&format!(
            "/api/v1/decisions?type={event_type}&container={container}&limit=1000"
        ))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Sends SIGKILL: no chance to clean up (what `kill -9` does).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}
