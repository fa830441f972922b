//! `BollardEngine`: the `ContainerEngine` implementation over the engine's HTTP API (bollard).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::container::ContainerSummary;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EventMessage, ExecConfig, HealthStatusEnum,
};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, LogsOptions,
    RestartContainerOptionsBuilder, StartContainerOptions, StatsOptionsBuilder,
    StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{ContainerEngine, EngineError, Result};
use crate::model::container::{
    ContainerEvent, ContainerInfo, ContainerState, Diagnostics, EXEC_OUTPUT_LIMIT, EventAction,
    ExecOutcome, HealthLogEntry, HealthStatus, HostInfo, ResourceLimits,
};
use crate::model::usage::ResourceReading;

/// The most log bytes read for [`ContainerEngine::diagnostics`] (the tail of a chatty container).
const LOG_BYTES_LIMIT: usize = 64 * 1024;

/// Where bollard connects when `DOCKER_HOST` is unset.
const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Deadline of a plain API call (inspect, list, info, stats).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the stop timeout for restart/stop, which wait for the process to end.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How many containers are inspected at once by `list_containers`.
const INSPECT_CONCURRENCY: usize = 8;
/// The container events HemoStat follows.
const EVENTS: [&str; 12] = [
    "create",
    "start",
    "die",
    "oom",
    "kill",
    "stop",
    "restart",
    "pause",
    "unpause",
    "destroy",
    "health_status",
    // `docker update`: new limits, which the reconcile's inspection reads.
    "update",
];
/// Event attributes that are not container labels.
const NON_LABEL_ATTRIBUTES: [&str; 4] = ["name", "image", "exitCode", "signal"];

/// A connection to a Docker engine (cheap to clone: bollard shares one HTTP client).
#[derive(Clone, Debug)]
pub struct BollardEngine {
    docker: Docker,
    /// The endpoint we connected to, for error messages.
    endpoint: String,
    /// Lists over a Unix socket without bollard's whole decoding ([`super::list`]).
    lister: Option<super::list::UnixLister>,
}

impl BollardEngine {
    /// Connects to `DOCKER_HOST` (or the default socket), negotiates the API version and pings.
    pub async fn connect() -> Result<Self> {
        let endpoint = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        Self::connect_to(&endpoint).await
    }

    /// Connects to `endpoint` (`unix:///var/run/docker.sock`, `tcp://host:2375`), negotiates
    /// the API version and pings.
    pub async fn connect_to(endpoint: &str) -> Result<Self> {
        let unreachable = |source| EngineError::Unreachable {
            endpoint: endpoint.to_string(),
            source,
        };
        let docker = Docker::connect_with_host(endpoint).map_err(unreachable)?;
        let docker = with_deadline(
            "negotiate_version",
            CALL_TIMEOUT,
            docker.negotiate_version(),
        )
        .await?
        .map_err(unreachable)?;
        let this = BollardEngine::from_client(docker, endpoint);
        this.ping().await?;
        Ok(this)
    }

    /// Wraps an existing bollard client (e.g. one built with custom TLS settings).
    pub fn from_client(docker: Docker, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        BollardEngine {
            docker,
            lister: super::list::UnixLister::of_endpoint(&endpoint),
            endpoint,
        }
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying bollard client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Turns a bollard error into ours; `id` is the container the call was about, if any.
    fn classify(&self, op: &'static str, id: Option<&str>, source: BollardError) -> EngineError {
        classify(&self.endpoint, self.docker.timeout(), op, id, source)
    }
}

fn classify(
    endpoint: &str,
    client_timeout: Duration,
    op: &'static str,
    id: Option<&str>,
    source: BollardError,
) -> EngineError {
    match source {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } if id.is_some() => EngineError::NotFound {
            id: id.unwrap_or_default().to_string(),
        },
        BollardError::RequestTimeoutError => EngineError::Timeout {
            op,
            after: client_timeout,
        },
        BollardError::SocketNotFoundError(_)
        | BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. } => EngineError::Unreachable {
            endpoint: endpoint.to_string(),
            source,
        },
        source => EngineError::Api { op, source },
    }
}

/// Runs `fut` with a deadline of our own.
async fn with_deadline<T>(
    op: &'static str,
    after: Duration,
    fut: impl Future<Output = T>,
) -> Result<T> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| EngineError::Timeout { op, after })
}

/// Parses an engine timestamp; the engine's "zero time" (`0001-01-01T00:00:00Z`) is `None`.
fn parse_time(raw: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(raw?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

fn map_state(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        // `stopping` only exists on newer engines; not a state to act on.
        Some(ContainerStateStatusEnum::STOPPING | ContainerStateStatusEnum::EMPTY) | None => {
            ContainerState::Unknown
        }
    }
}

fn map_health(status: Option<HealthStatusEnum>) -> HealthStatus {
    match status {
        Some(HealthStatusEnum::STARTING) => HealthStatus::Starting,
        Some(HealthStatusEnum::HEALTHY) => HealthStatus::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => HealthStatus::Unhealthy,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => HealthStatus::None,
    }
}

/// Positive values only: the engine uses 0 (and -1 for quota) for "not set".
fn positive(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v > 0)
}

/// The newest health log entry's output, cut at a character boundary.
fn last_health_output(health: &bollard::models::Health) -> Option<String> {
    let out = health.log.as_ref()?.last()?.output.as_deref()?.trim_end();
    let mut end = out.len().min(super::HEALTH_OUTPUT_MAX);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    Some(out[..end].to_owned())
}

/// A list entry, `None` without an id. Newer engines report the health as a field; 20.10 only
/// in the status text.
fn container_summary(s: bollard::models::ContainerSummary) -> Option<ContainerSummary> {
    let listed = super::list::Listed {
        id: s.id?,
        names: s.names,
        labels: s.labels.map(|l| l.into_iter().collect()),
        state: s.state.map(|state| state.to_string()),
        status: s.status,
    };
    Some(listed.summary())
}

fn container_info(r: ContainerInspectResponse) -> Result<ContainerInfo> {
    let id = r.id.ok_or_else(|| EngineError::Malformed {
        op: "inspect",
        detail: "container without an id".into(),
    })?;
    let state = r.state.unwrap_or_default();
    let config = r.config.unwrap_or_default();
    let host = r.host_config.unwrap_or_default();
    let health = state.health.unwrap_or_default();
    let container_state = map_state(state.status);
    // The engine reports ExitCode 0 for containers that never ran: keep only real ones.
    let exit_code = match container_state {
        ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting => {
            state.exit_code
        }
        _ => None,
    };
    Ok(ContainerInfo {
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.or(r.image).unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: container_state,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        health_output: last_health_output(&health),
        health: map_health(health.status),
        health_failing_streak: health.failing_streak.unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
        restart_count: r.restart_count.unwrap_or(0).max(0) as u64,
        started_at: parse_time(state.started_at.as_deref()),
        finished_at: parse_time(state.finished_at.as_deref()),
        limits: ResourceLimits {
            nano_cpus: positive(host.nano_cpus),
            cpu_quota: positive(host.cpu_quota),
            cpu_period: positive(host.cpu_period),
            memory_bytes: positive(host.memory).map(|m| m as u64),
        },
        pid: positive(state.pid).and_then(|p| u32::try_from(p).ok()),
        id,
    })
}

fn docker_event(msg: EventMessage) -> Option<ContainerEvent> {
    let actor = msg.actor?;
    let container_id = actor.id?;
    let mut attributes = actor.attributes.unwrap_or_default();
    let time = msg
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| msg.time.and_then(|s| DateTime::from_timestamp(s, 0)))
        .unwrap_or_else(Utc::now);
    let exit_code = attributes.get("exitCode").and_then(|c| c.parse().ok());
    let signal = attributes.remove("signal");
    let name = attributes.remove("name").unwrap_or_default();
    let labels = attributes
        .into_iter()
        .filter(|(k, _)| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
        .collect();
    Some(ContainerEvent {
        action: EventAction::parse(msg.action.as_deref().unwrap_or_default()),
        container_id,
        name,
        labels,
        time,
        exit_code,
        signal,
    })
}

/// Reads `usage - inactive file cache`, as `docker stats` does.
fn memory_used(usage: u64, stats: &HashMap<String, u64>) -> u64 {
    let cache = ["total_inactive_file", "inactive_file"]
        .iter()
        .find_map(|k| stats.get(*k).copied())
        .filter(|c| *c <= usage)
        .unwrap_or(0);
    usage - cache
}

/// Above this a "limit" means unlimited (the v1 kernel reports ~2^63 rounded to a page).
const UNLIMITED_MEMORY: u64 = 1 << 62;

#[async_trait::async_trait]
impl ContainerEngine for BollardEngine {
    async fn ping(&self) -> Result<()> {
        with_deadline("ping", CALL_TIMEOUT, self.docker.ping())
            .await?
            .map_err(|e| self.classify("ping", None, e))?;
        Ok(())
    }

    async fn host_info(&self) -> Result<HostInfo> {
        let info = with_deadline("info", CALL_TIMEOUT, self.docker.info())
            .await?
            .map_err(|e| self.classify("info", None, e))?;
        Ok(HostInfo {
            engine_id: info.id.unwrap_or_default(),
            cpus: info.ncpu.unwrap_or(1).clamp(1, u32::MAX as i64) as u32,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
            server_version: info.server_version.unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
        })
    }

    async fn list_containers(&self, label_filter: Option<&str>) -> Result<Vec<ContainerInfo>> {
        let ids = self
            .list_summaries(label_filter)
            .await?
            .into_iter()
            .map(|s| s.id);
        let mut containers: Vec<ContainerInfo> = stream::iter(ids)
            .map(|id| async move { self.inspect(&id).await })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .try_filter_map(|c| async move { Ok(c) })
            .try_collect()
            .await?;
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(containers)
    }

    async fn list_summaries(&self, label_filter: Option<&str>) -> Result<Vec<ContainerSummary>> {
        if let Some(lister) = &self.lister {
            let api = self.docker.client_version().to_string();
            return with_deadline("list", CALL_TIMEOUT, lister.list(&api, label_filter))
                .await?
                .map_err(|e| self.classify("list", None, e));
        }
        let mut options = ListContainersOptionsBuilder::new().all(true);
        if let Some(label) = label_filter {
            options = options.filters(&HashMap::from([("label", vec![label])]));
        }
        let summaries = with_deadline(
            "list",
            CALL_TIMEOUT,
            self.docker.list_containers(Some(options.build())),
        )
        .await?
        .map_err(|e| self.classify("list", None, e))?;
        Ok(summaries
            .into_iter()
            .filter_map(container_summary)
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        let answer = with_deadline(
            "inspect",
            CALL_TIMEOUT,
            self.docker.inspect_container(id, None),
        )
        .await?;
        match answer {
            Ok(r) => container_info(r).map(Some),
            Err(e) => match self.classify("inspect", Some(id), e) {
                EngineError::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    fn events(&self, since: Option<DateTime<Utc>>) -> BoxStream<'static, Result<ContainerEvent>> {
        let mut options = EventsOptionsBuilder::new().filters(&HashMap::from([
            ("type", vec!["container"]),
            ("event", EVENTS.to_vec()),
        ]));
        if let Some(since) = since {
            let since = format!(
                "{}.{:09}",
                since.timestamp(),
                since.timestamp_subsec_nanos()
            );
            options = options.since(&since);
        }
        let endpoint = self.endpoint.clone();
        let client_timeout = self.docker.timeout();
        self.docker
            .events(Some(options.build()))
            .map_err(move |e| classify(&endpoint, client_timeout, "events", None, e))
            .try_filter_map(|msg| async move { Ok(docker_event(msg)) })
            .boxed()
    }

    async fn read_resources(&self, id: &str) -> Result<ResourceReading> {
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stats = self.docker.stats(id, Some(options));
        let first = with_deadline("stats", CALL_TIMEOUT, stats.next()).await?;
        let at = Instant::now();
        let stats = first
            .ok_or_else(|| EngineError::Malformed {
                op: "stats",
                detail: format!("no stats sample for {id}"),
            })?
            .map_err(|e| self.classify("stats", Some(id), e))?;
        let cpu_total_ns = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        let memory = stats.memory_stats.unwrap_or_default();
        let usage = memory.usage.unwrap_or(0);
        Ok(ResourceReading {
            at,
            cpu_total_ns,
            memory_used_bytes: memory_used(usage, &memory.stats.unwrap_or_default()),
            memory_limit_bytes: memory.limit.filter(|l| *l > 0 && *l < UNLIMITED_MEMORY),
        })
    }

    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<()> {
        let options = RestartContainerOptionsBuilder::new()
            .t(secs(stop_timeout))
            .build();
        with_deadline(
            "restart",
            stop_timeout + STOP_GRACE,
            self.docker.restart_container(id, Some(options)),
        )
        .await?
        .map_err(|e| self.classify("restart", Some(id), e))
    }

    async fn stop(&self, id: &str, stop_timeout: Duration) -> Result<()> {
        let options = StopContainerOptionsBuilder::new()
            .t(secs(stop_timeout))
            .build();
        // 304 (already stopped) counts as success in bollard.
        with_deadline(
            "stop",
            stop_timeout + STOP_GRACE,
            self.docker.stop_container(id, Some(options)),
        )
        .await?
        .map_err(|e| self.classify("stop", Some(id), e))
    }

    async fn start(&self, id: &str) -> Result<()> {
        // 304 (already running) counts as success in bollard.
        with_deadline(
            "start",
            CALL_TIMEOUT,
            self.docker
                .start_container(id, None::<StartContainerOptions>),
        )
        .await?
        .map_err(|e| self.classify("start", Some(id), e))
    }

    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutcome> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let run = async {
            let created = self
                .docker
                .create_exec(id, config)
                .await
                .map_err(|e| self.classify("exec", Some(id), e))?;
            let started = self
                .docker
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: None,
                    }),
                )
                .await
                .map_err(|e| self.classify("exec", Some(id), e))?;
            let mut output = Vec::new();
            if let StartExecResults::Attached {
                output: mut out, ..
            } = started
            {
                // Drain everything (so the command is not blocked on a full pipe), keep 4 KiB.
                while let Some(chunk) = out.next().await {
                    let chunk = chunk.map_err(|e| self.classify("exec", Some(id), e))?;
                    let bytes = chunk.into_bytes();
                    let room = EXEC_OUTPUT_LIMIT.saturating_sub(output.len());
                    output.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            // The stream ends when the process closes its output; its exit code may lag a little.
            let mut exit_code = None;
            for _ in 0..50 {
                let inspected = self
                    .docker
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.classify("exec", Some(id), e))?;
                exit_code = inspected.exit_code;
                if inspected.running != Some(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(ExecOutcome {
                exit_code,
                output: String::from_utf8_lossy(&output).into_owned(),
            })
        };
        // On timeout the process keeps running inside the container: the API cannot kill an exec.
        with_deadline("exec", timeout, run).await?
    }

    async fn diagnostics(&self, id: &str, log_lines: usize) -> Result<Diagnostics> {
        let inspected = with_deadline(
            "inspect",
            CALL_TIMEOUT,
            self.docker.inspect_container(id, None),
        )
        .await?
        .map_err(|e| self.classify("inspect", Some(id), e))?;
        let health_log = inspected
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.log)
            .unwrap_or_default()
            .into_iter()
            .map(|r| HealthLogEntry {
                start: r.start.as_deref().and_then(|t| parse_time(Some(t))),
                exit_code: r.exit_code,
                output: r.output.unwrap_or_default(),
            })
            .collect();
        let mut logs = Vec::new();
        if log_lines > 0 {
            let options = LogsOptions {
                stdout: true,
                stderr: true,
                tail: log_lines.to_string(),
                ..Default::default()
            };
            let read = async {
                let mut stream = self.docker.logs(id, Some(options));
                let mut bytes = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.classify("logs", Some(id), e))?;
                    bytes.extend_from_slice(&chunk.into_bytes());
                    if bytes.len() > LOG_BYTES_LIMIT {
                        let cut = bytes.len() - LOG_BYTES_LIMIT;
                        bytes.drain(..cut);
                    }
                }
                Ok::<_, EngineError>(bytes)
            };
            let bytes = with_deadline("logs", CALL_TIMEOUT, read).await??;
            let text = String::from_utf8_lossy(&bytes);
            logs = text.lines().map(str::to_owned).collect();
            let skip = logs.len().saturating_sub(log_lines);
            logs.drain(..skip);
        }
        Ok(Diagnostics { health_log, logs })
    }
}

/// A stop timeout in whole seconds for the engine (rounded up, so 500 ms is not "kill now").
fn secs(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(i32::MAX as u64) as i32
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn zero_engine_time_reads_as_none() {
        assert_eq!(parse_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(parse_time(None), None);
        let t = parse_time(Some("2024-05-01T10:00:00.123456789Z")).expect("parses");
        assert_eq!(t.timestamp(), 1_714_557_600);
    }

    #[test]
    fn memory_used_subtracts_inactive_file_cache() {
        let v1 = HashMap::from([("total_inactive_file".to_string(), 300)]);
        assert_eq!(memory_used(1000, &v1), 700);
        let v2 = HashMap::from([("inactive_file".to_string(), 100)]);
        assert_eq!(memory_used(1000, &v2), 900);
        let bogus = HashMap::from([("inactive_file".to_string(), 5000)]);
        assert_eq!(memory_used(1000, &bogus), 1000);
    }

    #[test]
    fn stop_timeouts_round_up_to_whole_seconds() {
        assert_eq!(secs(Duration::from_millis(500)), 1);
        assert_eq!(secs(Duration::from_secs(10)), 10);
        assert_eq!(secs(Duration::ZERO), 0);
    }

    #[test]
    fn events_keep_labels_and_drop_engine_attributes() {
        let msg = EventMessage {
            action: Some("die".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([
                    ("name".to_string(), "web".to_string()),
                    ("image".to_string(), "busybox".to_string()),
                    ("exitCode".to_string(), "3".to_string()),
                    ("app".to_string(), "web".to_string()),
                ])),
            }),
            time_nano: Some(1_714_557_600_000_000_000),
            ..Default::default()
        };
        let ev = docker_event(msg).expect("an event");
        assert_eq!(ev.action, EventAction::Die);
        assert_eq!(ev.exit_code, Some(3));
        assert_eq!(ev.name, "web");
        assert_eq!(
            ev.labels,
            BTreeMap::from([("app".to_string(), "web".to_string())])
        );
    }
}
