//! A container as HemoStat sees it: state, health, limits, events, the engine host.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Exit codes of a container ended by SIGKILL (137) or SIGTERM (143): what `docker stop` and
/// `docker kill` leave behind. Without an event saying otherwise, such an exit is treated as
/// a person's doing and never repaired.
pub const SIGNAL_EXIT_CODES: [i64; 2] = [SIGKILL_EXIT_CODE, 143];

/// The exit code of a process ended by SIGKILL (128 + 9), the OOM killer's signal too.
pub const SIGKILL_EXIT_CODE: i64 = 137;

/// The lifecycle state of a container, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running (possibly unhealthy).
    Running,
    /// Between a crash and the engine's own restart (restart policy).
    Restarting,
    /// Frozen by `docker pause`.
    Paused,
    /// Stopped: exited by itself, was stopped, or was killed.
    Exited,
    /// The engine failed to remove or stop it; needs a person.
    Dead,
    /// Being removed.
    Removing,
    /// A state this version of HemoStat does not know (e.g. a newer engine's).
    Unknown,
}

/// The result of the container's own healthcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No healthcheck configured.
    None,
    /// Healthcheck configured, no verdict yet: never to be read as unhealthy.
    Starting,
    /// The last healthcheck passed.
    Healthy,
    /// The healthcheck failed `retries` times in a row.
    Unhealthy,
}

/// The CPU and memory limits a container was given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// `--cpus` in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// CFS quota in µs per period (`--cpu-quota`).
    pub cpu_quota: Option<i64>,
    /// CFS period in µs (`--cpu-period`; the kernel default is 100 000).
    pub cpu_period: Option<i64>,
    /// `--memory` in bytes.
    pub memory_bytes: Option<u64>,
}

/// The kernel's CFS period when none is set.
const DEFAULT_CPU_PERIOD_US: i64 = 100_000;

impl ResourceLimits {
    /// CPUs the container may use: NanoCpus/1e9, else quota/period, else None (unlimited).
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        if let Some(n) = self.nano_cpus.filter(|n| *n > 0) {
            return Some(n as f64 / 1e9);
        }
        let quota = self.cpu_quota.filter(|q| *q > 0)?;
        let period = self
            .cpu_period
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_CPU_PERIOD_US);
        Some(quota as f64 / period as f64)
    }
}

/// How much of the last healthcheck's output is kept.
pub const HEALTH_OUTPUT_MAX: usize = 1024;

/// One container, as inspected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Full 64-hex id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The image as the user named it (`Config.Image`), not its digest.
    pub image: String,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Exit code of the last run; `None` when it never ran or is running.
    pub exit_code: Option<i64>,
    /// The kernel OOM killer ended the last run.
    pub oom_killed: bool,
    /// The healthcheck verdict.
    pub health: HealthStatus,
    /// Consecutive failed healthchecks.
    pub health_failing_streak: u32,
    /// The output of the last healthcheck run (the newest entry of the engine's health log),
    /// at most [`HEALTH_OUTPUT_MAX`] bytes. Untrusted text from the container.
    #[serde(default)]
    pub health_output: Option<String>,
    /// Docker's own RestartCount (restarts done by its restart policy).
    pub restart_count: u64,
    /// When the current (or last) run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last run ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// CPU and memory limits.
    pub limits: ResourceLimits,
    /// Host pid of the main process while running.
    pub pid: Option<u32>,
}

/// What happened to a container, from the engine's event stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventAction {
    /// `create`
    Create,
    /// `start`
    Start,
    /// `die`: the main process ended (carries the exit code).
    Die,
    /// `oom`: the OOM killer hit a process of the container.
    Oom,
    /// `kill`: a signal was sent (carries the signal).
    Kill,
    /// `stop`: a `docker stop` completed.
    Stop,
    /// `restart`: a `docker restart` completed.
    Restart,
    /// `pause`
    Pause,
    /// `unpause`
    Unpause,
    /// `destroy`: the container was removed.
    Destroy,
    /// `health_status: <status>`
    HealthStatus(HealthStatus),
    /// Anything else, verbatim.
    Other(String),
}

impl EventAction {
    /// Parses the engine's action string (`die`, `health_status: unhealthy`, …).
    pub fn parse(action: &str) -> EventAction {
        match action {
            "create" => EventAction::Create,
            "start" => EventAction::Start,
            "die" => EventAction::Die,
            "oom" => EventAction::Oom,
            "kill" => EventAction::Kill,
            "stop" => EventAction::Stop,
            "restart" => EventAction::Restart,
            "pause" => EventAction::Pause,
            "unpause" => EventAction::Unpause,
            "destroy" => EventAction::Destroy,
            other => match other.strip_prefix("health_status") {
                Some(rest) => match rest.trim_start_matches(':').trim() {
                    "healthy" => EventAction::HealthStatus(HealthStatus::Healthy),
                    "unhealthy" => EventAction::HealthStatus(HealthStatus::Unhealthy),
                    "starting" => EventAction::HealthStatus(HealthStatus::Starting),
                    _ => EventAction::Other(other.to_string()),
                },
                None => EventAction::Other(other.to_string()),
            },
        }
    }
}

/// What the engine's container list says of one container, without an inspection: enough to
/// tell whether anything an inspection would see may have changed since the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSummary {
    /// The container's full id.
    pub id: String,
    /// Its name (no leading `/`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: ContainerState,
    /// Its healthcheck status, read from the list's status text ("Up 2 minutes (unhealthy)").
    pub health: HealthStatus,
    /// How long it has been up, as far as the status text tells (`None` when not running, or
    /// the text says nothing this version can read).
    pub up_for: Option<super::uptime::UptimeBounds>,
}

impl ContainerSummary {
    /// The healthcheck status a list's status text shows: `(healthy)`, `(unhealthy)`,
    /// `(health: starting)`, or none.
    pub fn health_of_status(status: &str) -> HealthStatus {
        if status.contains("(unhealthy)") {
            HealthStatus::Unhealthy
        } else if status.contains("(healthy)") {
            HealthStatus::Healthy
        } else if status.contains("(health: starting)") {
            HealthStatus::Starting
        } else {
            HealthStatus::None
        }
    }

    /// Whether this list entry, taken at `now`, shows something `last` (the last inspection)
    /// does not: another state, health or name, or an uptime that is not the inspected run's
    /// (a restart whose events were lost). Such a container must be inspected again now.
    pub fn differs_from(&self, last: &ContainerInfo, now: DateTime<Utc>) -> bool {
        self.state != last.state
            || self.health != last.health
            || self.name != last.name
            || self.another_run_than(last, now)
    }

    /// Whether the list's uptime cannot be that of the run `last` saw start.
    fn another_run_than(&self, last: &ContainerInfo, now: DateTime<Utc>) -> bool {
        let (Some(bounds), Some(started)) = (self.up_for, last.started_at) else {
            return false;
        };
        // A start after `now` (the engine's clock ahead of ours) is an uptime of zero.
        let uptime = (now - started).to_std().unwrap_or_default();
        !bounds.allows(uptime)
    }
}

/// One container event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerEvent {
    /// What happened.
    pub action: EventAction,
    /// The container's full id.
    pub container_id: String,
    /// The container's name (no leading `/`).
    pub name: String,
    /// The container's labels (the event attributes minus `name`, `image`, `exitCode`, `signal`).
    pub labels: BTreeMap<String, String>,
    /// When the engine recorded it.
    pub time: DateTime<Utc>,
    /// `die` only: the exit code.
    pub exit_code: Option<i64>,
    /// `kill` only: the signal sent (a number, e.g. `15`, on Docker 20.10).
    pub signal: Option<String>,
}

/// The engine host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The engine's own ID (`docker info` ID): one per engine, whatever node name operators
    /// give themselves.
    pub engine_id: String,
    /// Online CPUs of the host.
    pub cpus: u32,
    /// Host memory in bytes.
    pub memory_bytes: u64,
    /// The engine's version, e.g. `20.10.24`.
    pub server_version: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
}

/// What an exec'd command did.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecOutcome {
    /// Its exit code (`None` if the engine did not report one).
    pub exit_code: Option<i64>,
    /// stdout and stderr interleaved, truncated to [`EXEC_OUTPUT_LIMIT`] bytes.
    pub output: String,
}

/// One run of a container's healthcheck (`State.Health.Log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthLogEntry {
    /// When the check started.
    pub start: Option<DateTime<Utc>>,
    /// Its exit code (0 healthy, 1 unhealthy).
    pub exit_code: Option<i64>,
    /// What it printed (the engine keeps at most 4 KiB).
    pub output: String,
}

/// What HemoStat reads of a container only to explain a problem to a model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// The engine's last healthcheck runs, oldest first (empty without a healthcheck).
    pub health_log: Vec<HealthLogEntry>,
    /// The last log lines (stdout and stderr), oldest first; empty unless asked for.
    pub logs: Vec<String>,
}

/// How much exec output is kept.
pub const EXEC_OUTPUT_LIMIT: usize = 4096;

impl ContainerInfo {
    /// The last run ended by SIGKILL or SIGTERM ([`SIGNAL_EXIT_CODES`]).
    pub fn stopped_by_signal(&self) -> bool {
        self.exit_code
            .is_some_and(|c| SIGNAL_EXIT_CODES.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_status_text_tells_the_health() {
        let cases = [
            ("Up 2 minutes (healthy)", HealthStatus::Healthy),
            ("Up 2 minutes (unhealthy)", HealthStatus::Unhealthy),
            ("Up 3 seconds (health: starting)", HealthStatus::Starting),
            ("Up 2 minutes", HealthStatus::None),
            ("Exited (3) 5 seconds ago", HealthStatus::None),
            ("", HealthStatus::None),
        ];
        for (status, want) in cases {
            assert_eq!(
                ContainerSummary::health_of_status(status),
                want,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_list_entry_differs_from_the_last_inspection_in_state_health_name_or_run() {
        let now = Utc::now();
        let mut last = crate::engine::fake::running("web", &[]);
        last.health = HealthStatus::Healthy;
        last.started_at = Some(now - chrono::Duration::seconds(118));
        let listed = |state, health, name: &str, status: &str| ContainerSummary {
            id: "web-id".into(),
            name: name.into(),
            labels: BTreeMap::new(),
            state,
            health,
            up_for: crate::model::uptime::UptimeBounds::of_status(status),
        };
        let summary = |state, health, name: &str| listed(state, health, name, "Up About a minute");
        let healthy = |status: &str| {
            listed(
                ContainerState::Running,
                HealthStatus::Healthy,
                "web",
                status,
            )
        };
        // (list entry, differs)
        let cases = [
            (
                summary(ContainerState::Running, HealthStatus::Healthy, "web"),
                false,
            ),
            (
                summary(ContainerState::Exited, HealthStatus::Healthy, "web"),
                true,
            ),
            (
                summary(ContainerState::Restarting, HealthStatus::Healthy, "web"),
                true,
            ),
            (
                summary(ContainerState::Running, HealthStatus::Unhealthy, "web"),
                true,
            ),
            (
                summary(ContainerState::Running, HealthStatus::None, "web"),
                true,
            ),
            (
                summary(ContainerState::Running, HealthStatus::Healthy, "web-2"),
                true,
            ),
            // Restarted 12 s ago, its die and start events lost: another run.
            (healthy("Up 12 seconds (healthy)"), true),
            // Up 118 s as inspected, listed a few seconds later by the engine.
            (healthy("Up 2 minutes (healthy)"), false),
            // Up far longer than the inspected run: another run too (a wrong StartedAt).
            (healthy("Up 3 hours (healthy)"), true),
            // A text with no uptime this version reads: nothing told.
            (healthy("Up for a while (healthy)"), false),
        ];
        for (entry, want) in cases {
            assert_eq!(entry.differs_from(&last, now), want, "{entry:?}");
        }
    }

    #[test]
    fn cpu_limit_prefers_nano_cpus_then_quota_over_period() {
        let cases = [
            (ResourceLimits::default(), None),
            (
                ResourceLimits {
                    nano_cpus: Some(500_000_000),
                    ..Default::default()
                },
                Some(0.5),
            ),
            (
                ResourceLimits {
                    cpu_quota: Some(150_000),
                    cpu_period: Some(100_000),
                    ..Default::default()
                },
                Some(1.5),
            ),
            (
                ResourceLimits {
                    cpu_quota: Some(50_000),
                    ..Default::default()
                },
                Some(0.5),
            ),
            (
                ResourceLimits {
                    nano_cpus: Some(0),
                    cpu_quota: Some(-1),
                    ..Default::default()
                },
                None,
            ),
        ];
        for (limits, want) in cases {
            assert_eq!(limits.cpu_limit_cores(), want, "{limits:?}");
        }
    }

    #[test]
    fn event_actions_parse_health_status_with_its_verdict() {
        let cases = [
            ("die", EventAction::Die),
            ("oom", EventAction::Oom),
            (
                "health_status: unhealthy",
                EventAction::HealthStatus(HealthStatus::Unhealthy),
            ),
            (
                "health_status: healthy",
                EventAction::HealthStatus(HealthStatus::Healthy),
            ),
            (
                "health_status: starting",
                EventAction::HealthStatus(HealthStatus::Starting),
            ),
            (
                "exec_start: sh -c true",
                EventAction::Other("exec_start: sh -c true".into()),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(EventAction::parse(raw), want, "{raw}");
        }
    }
}
