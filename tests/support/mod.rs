//! Shared helpers for end-to-end tests: a busybox image built from scratch, labelled test containers that never leak, polling.
//!
//! Every test binary that needs the real engine does `mod support;` and:
//!
//! ```ignore
//! let run = TestRun::new();                       // one per test: tests run in parallel
//! let image = support::busybox_image().await;     // built once, reused across processes
//! let id = run.spawn("web", ContainerSpec::sh("httpd -f -p 8080")).await;
//! support::wait_until(Duration::from_secs(5), "web is running", || async { … }).await;
//! // dropping `run` removes every container carrying its label
//! ```
//!
//! The machines that run these tests cannot pull images, so the image is
//! `FROM scratch` plus Debian's statically linked `/usr/bin/busybox`
//! (`busybox-static`), with every applet installed as a symlink in `/bin`.
//! Nothing here skips silently: a missing engine or busybox is a panic that says
//! what to install.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthConfig, HostConfig, RestartPolicy};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use hemostat::engine::BollardEngine;
use tokio::sync::OnceCell;

/// Label carried by every container and image the tests create (for manual clean-up too).
pub const TEST_LABEL: &str = "hemostat.test";
/// Label whose value identifies one [`TestRun`].
pub const RUN_LABEL: &str = "hemostat.test.run";
/// Where the statically linked busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/usr/bin/busybox";
/// Repository of the test image; the tag is a hash of busybox and the Dockerfile.
pub const IMAGE_REPO: &str = "hemostat-test-busybox";

const DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp /www /etc && chmod 1777 /tmp"]
LABEL hemostat.test="1"
CMD ["sh"]
"#;

/// Containers of crashed earlier test processes older than this are removed.
const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The busybox test image, built on first use (once per process; a file lock keeps
/// parallel test binaries from building it twice) and reused while busybox and the
/// Dockerfile are unchanged.
pub async fn busybox_image() -> String {
    static IMAGE: OnceCell<String> = OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            tokio::task::spawn_blocking(build_busybox_image)
                .await
                .expect("building the busybox image panicked")
        })
        .await
        .clone()
}

fn build_busybox_image() -> String {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read {BUSYBOX} ({e}): install Debian's busybox-static (apt-get install busybox-static)")
    });
    let mut bytes = busybox.clone();
    bytes.extend_from_slice(DOCKERFILE.as_bytes());
    let image = format!("{IMAGE_REPO}:{:016x}", fnv1a(&bytes));
    if image_exists(&image) {
        return image;
    }
    // Another test binary may be building the same image right now: take turns.
    let lock_path = std::env::temp_dir().join("hemostat-test-busybox.lock");
    let lock = File::create(&lock_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    if !image_exists(&image) {
        let dir = tempfile::tempdir().expect("a temp dir for the image build context");
        std::fs::write(dir.path().join("busybox"), &busybox).expect("copy busybox");
        set_executable(&dir.path().join("busybox"));
        std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).expect("write Dockerfile");
        let out = docker_cli()
            // The legacy builder needs no buildx plugin, which these machines lack.
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "-q", "-t", &image])
            .arg(dir.path())
            .output()
            .expect("run `docker build`");
        assert!(
            out.status.success(),
            "`docker build` of {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    image
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod busybox");
}

/// 64-bit FNV-1a: a content hash that is stable across Rust versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn image_exists(image: &str) -> bool {
    docker_cli()
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .expect("run `docker image inspect`")
        .status
        .success()
}

/// The `docker` CLI, with a clear panic when it is missing.
fn docker_cli() -> Command {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let ok = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the end-to-end tests need a running Docker Engine and the `docker` CLI \
             (`docker version` failed): start dockerd or set DOCKER_HOST"
        );
    });
    Command::new("docker")
}

/// A connected engine client for assertions, panicking with a clear message if there is none.
pub async fn docker() -> BollardEngine {
    BollardEngine::connect()
        .await
        .unwrap_or_else(|e| panic!("the end-to-end tests need a Docker Engine: {e}"))
}

/// What to run in a test container (always the busybox image).
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// The command, exec form (no shell added): `["sleep", "300"]`.
    pub cmd: Vec<String>,
    /// Labels on top of the run's own.
    pub labels: BTreeMap<String, String>,
    /// A healthcheck: exec-form command, interval, retries (timeout = interval).
    pub healthcheck: Option<(Vec<String>, Duration, u32)>,
    /// `--memory` in bytes (swap is disabled by setting the same memory+swap limit).
    pub memory: Option<i64>,
    /// `--cpus` in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// `--restart`: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub restart_policy: Option<&'static str>,
    /// `--env KEY=VALUE` entries.
    pub env: Vec<String>,
    /// `--volume HOST:CONTAINER[:ro]` bind mounts.
    pub binds: Vec<String>,
}

impl ContainerSpec {
    /// Runs `args` as given.
    pub fn cmd<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        ContainerSpec {
            cmd: args.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Runs `script` with `sh -c`.
    pub fn sh(script: &str) -> Self {
        Self::cmd(["sh", "-c", script])
    }

    /// Sleeps for a long time (PID 1 `sleep` ignores SIGTERM: stop it with a short timeout).
    pub fn sleeper() -> Self {
        Self::cmd(["sleep", "600"])
    }

    /// Burns one core forever.
    pub fn busy_loop() -> Self {
        Self::sh("while :; do :; done")
    }

    /// Doubles a shell string until the memory limit (8 MiB) makes the kernel OOM-kill it.
    pub fn oom() -> Self {
        Self::sh("x=a; while true; do x=$x$x; done").memory(8 << 20)
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an exec-form healthcheck.
    pub fn healthcheck<S: Into<String>>(
        mut self,
        cmd: impl IntoIterator<Item = S>,
        interval: Duration,
        retries: u32,
    ) -> Self {
        self.healthcheck = Some((cmd.into_iter().map(Into::into).collect(), interval, retries));
        self
    }

    /// Sets the memory limit in bytes.
    pub fn memory(mut self, bytes: i64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Sets `--cpus`.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.nano_cpus = Some((cpus * 1e9) as i64);
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Adds a bind mount (`/host/dir:/in/container:ro`).
    pub fn bind(mut self, bind: &str) -> Self {
        self.binds.push(bind.to_owned());
        self
    }

    /// Sets the restart policy (`always`, `on-failure:3`, …).
    pub fn restart(mut self, policy: &'static str) -> Self {
        self.restart_policy = Some(policy);
        self
    }
}

/// One test's containers: all carry `hemostat.test.run=<uuid>` and are removed on drop.
pub struct TestRun {
    /// `hemostat.test.run=<uuid>`, usable as a list/event label filter.
    pub label: String,
    /// The uuid alone.
    pub run_id: String,
    /// `hst-<first 8 of the uuid>-`: every container name starts with it.
    pub prefix: String,
    /// A client for creating containers, connected lazily inside the test's runtime.
    client: OnceCell<Docker>,
}

impl Default for TestRun {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRun {
    /// A new run with a fresh label (removes stale containers of crashed earlier runs first).
    pub fn new() -> Self {
        Self::named("hst-")
    }

    /// [`TestRun::new`] whose container names start with `prefix` (then 8 hex digits and `-`).
    pub fn named(prefix: &str) -> Self {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_test_containers);
        let run_id = uuid::Uuid::new_v4().to_string();
        TestRun {
            label: format!("{RUN_LABEL}={run_id}"),
            prefix: format!("{prefix}{}-", &run_id[..8]),
            run_id,
            client: OnceCell::new(),
        }
    }

    /// The full name of a container of this run.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn client(&self) -> &Docker {
        self.client
            .get_or_init(|| async {
                let docker = Docker::connect_with_defaults()
                    .unwrap_or_else(|e| panic!("cannot configure a Docker client: {e}"));
                docker.negotiate_version().await.unwrap_or_else(|e| {
                    panic!("the end-to-end tests need a running Docker Engine: {e}")
                })
            })
            .await
    }

    /// Creates (without starting) a container of this run; returns its id.
    pub async fn create(&self, name_suffix: &str, spec: ContainerSpec) -> String {
        let image = busybox_image().await;
        let name = self.name(name_suffix);
        let mut labels: HashMap<String, String> = spec.labels.into_iter().collect();
        labels.insert(TEST_LABEL.into(), "1".into());
        labels.insert(RUN_LABEL.into(), self.run_id.clone());
        let healthcheck = spec
            .healthcheck
            .map(|(cmd, interval, retries)| HealthConfig {
                test: Some(std::iter::once("CMD".to_string()).chain(cmd).collect()),
                interval: Some(interval.as_nanos() as i64),
                timeout: Some(interval.as_nanos() as i64),
                retries: Some(i64::from(retries)),
                start_period: Some(0),
                start_interval: None,
            });
        let restart_policy = spec.restart_policy.map(|p| {
            let (name, max) = p.split_once(':').unwrap_or((p, ""));
            RestartPolicy {
                name: Some(
                    name.parse()
                        .unwrap_or_else(|e| panic!("bad restart policy {p:?}: {e}")),
                ),
                maximum_retry_count: max.parse().ok(),
            }
        });
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(spec.cmd),
            env: (!spec.env.is_empty()).then_some(spec.env),
            labels: Some(labels),
            healthcheck,
            host_config: Some(HostConfig {
                memory: spec.memory,
                memory_swap: spec.memory,
                nano_cpus: spec.nano_cpus,
                restart_policy,
                binds: (!spec.binds.is_empty()).then_some(spec.binds),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        self.client()
            .await
            .create_container(Some(options), body)
            .await
            .unwrap_or_else(|e| panic!("cannot create container {name}: {e}"))
            .id
    }

    /// Creates and starts a container of this run; returns its id.
    pub async fn spawn(&self, name_suffix: &str, spec: ContainerSpec) -> String {
        let id = self.create(name_suffix, spec).await;
        self.client()
            .await
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .unwrap_or_else(|e| panic!("cannot start container {}: {e}", self.name(name_suffix)));
        id
    }

    /// Runs `docker <args>` and panics with its stderr when it fails (for pause, kill, …).
    pub fn docker_cli(&self, args: &[&str]) -> String {
        let out = docker_cli().args(args).output().expect("run docker CLI");
        assert!(
            out.status.success(),
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Follows the engine's events about this run's containers from now on: call it before
    /// creating the containers to count. (`docker events --since` replays only the engine's
    /// last 256 events: on a busy engine older ones are gone, so they are followed live.)
    pub fn follow_events(&self) -> EngineEvents {
        EngineEvents::follow(&self.label)
    }

    /// Removes every container of this run now (also done on drop).
    pub fn cleanup(&self) {
        remove_containers_with_label(&self.label);
    }
}

impl Drop for TestRun {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn remove_containers_with_label(label: &str) {
    let Ok(out) = docker_cli()
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={label}"))
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // A few at a time: one `docker rm` of 1000 ids removes them all at once, which hung
    // Docker 20.10 on fuse-overlayfs here (docs/BENCHMARKS.md §9b).
    for chunk in ids.chunks(16) {
        // Best effort in Drop: never panic while unwinding.
        let _ = docker_cli().args(["rm", "-f", "-v"]).args(chunk).output();
    }
}

/// Removes test containers left behind by test processes that were killed (no Drop ran).
fn remove_stale_test_containers() {
    let Ok(out) = docker_cli()
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={TEST_LABEL}"))
        .output()
    else {
        return;
    };
    let ids: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if ids.is_empty() {
        return;
    }
    let Ok(out) = docker_cli()
        .args(["inspect", "--format", "{{.Id}} {{.Created}}"])
        .args(&ids)
        .output()
    else {
        return;
    };
    let now = chrono::Utc::now();
    let stale: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (id, created) = line.split_once(' ')?;
            let created = chrono::DateTime::parse_from_rfc3339(created).ok()?;
            (now - created.with_timezone(&chrono::Utc) > STALE_AFTER).then_some(id)
        })
        .collect();
    if !stale.is_empty() {
        let _ = docker_cli().args(["rm", "-f", "-v"]).args(&stale).output();
    }
}

/// The engine's own record of what happened to a run's containers (`docker events`, followed
/// live): ground truth for counting restarts, whoever made them. Stops following on drop.
pub struct EngineEvents {
    child: std::process::Child,
    /// `(container id, action, exit code)`, oldest first.
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl EngineEvents {
    fn follow(label: &str) -> Self {
        use std::io::BufRead;
        let since = chrono::Utc::now().timestamp() - 1;
        let mut cmd = docker_cli();
        cmd.args([
            "events",
            "--since",
            &since.to_string(),
            "--filter",
            "type=container",
        ])
        .args(["--filter", &format!("label={label}")]);
        for event in ["start", "die", "restart", "kill", "stop"] {
            cmd.args(["--filter", &format!("event={event}")]);
        }
        let mut child = cmd
            .args([
                "--format",
                "{{.Actor.ID}} {{.Action}} {{index .Actor.Attributes \"exitCode\"}}",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run `docker events`");
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut parts = line.splitn(3, ' ');
                let id = parts.next().unwrap_or_default().to_owned();
                let action = parts.next().unwrap_or_default().to_owned();
                let code = parts.next().unwrap_or_default().trim().to_owned();
                sink.lock().unwrap().push((id, action, code));
            }
        });
        EngineEvents { child, seen }
    }

    /// `(action, exit code)` of each `start`/`die`/`restart`/`kill`/`stop` of container `id`
    /// seen so far, oldest first.
    pub fn of(&self, id: &str) -> Vec<(String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _, _)| c == id)
            .map(|(_, action, code)| (action.clone(), code.clone()))
            .collect()
    }

    /// How many times the engine started container `id` so far.
    pub fn starts(&self, id: &str) -> usize {
        self.of(id).iter().filter(|(a, _)| a == "start").count()
    }
}

impl Drop for EngineEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serialises CPU measurements against CPU-hungry tests of the same test binary.
static CPU_QUIET: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Taken (shared) for its whole duration by a test that runs busy or OOM-ing containers, so
/// that a test measuring CPU (see [`cpu_measurement`]) does not run beside it. libtest runs
/// tests of one binary on as many threads as there are cores: on a 2-core machine one busy
/// neighbour halves what an "unlimited" container gets.
pub async fn cpu_load() -> tokio::sync::RwLockReadGuard<'static, ()> {
    CPU_QUIET.read().await
}

/// Taken (exclusively) by a test that asserts CPU percentages.
pub async fn cpu_measurement() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CPU_QUIET.write().await
}

/// Polls `f` every 100 ms until it returns true; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, what, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Polls `f` every 100 ms until it returns `Some`, and returns that; panics naming `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
