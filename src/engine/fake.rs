//! A scripted in-memory engine for tests: containers, events and readings set by the test,
//! every restart/stop/start/exec recorded.
//!
//! By default an action does what the real engine would: `restart` and `start` leave the
//! container running since now (healthy if it has a healthcheck), `stop` leaves it exited.
//! [`FakeEngine::script`] changes that per container (it stays down, the call fails, an exec
//! exits non-zero), so the unhappy paths of the responder can be driven in milliseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::container::ContainerSummary;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{ContainerEngine, EngineError, Result};
use crate::model::container::{
    ContainerEvent, ContainerInfo, ContainerState, Diagnostics, ExecOutcome, HealthStatus,
    HostInfo, ResourceLimits,
};
use crate::model::uptime::UptimeBounds;
use crate::model::usage::ResourceReading;

/// One call the responder (or anyone) made on the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `restart(id)`.
    Restart(String),
    /// `stop(id)`.
    Stop(String),
    /// `start(id)`.
    Start(String),
    /// `exec(id, cmd)`.
    Exec(String, Vec<String>),
}

/// How the fake answers actions on one container.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// `restart`/`start` succeed but the container stays as it is (the verification fails).
    pub stays_down: bool,
    /// `restart`/`start`/`stop`/`exec` answer this engine error (an `Api` error).
    pub fail_actions: bool,
    /// What an `exec` returns (default: exit 0, no output).
    pub exec: Option<ExecOutcome>,
    /// How long `restart` takes before it answers (the tokio clock: pausable in tests).
    pub restart_takes: Option<Duration>,
}

/// The fake engine.
#[derive(Debug)]
pub struct FakeEngine {
    containers: Mutex<BTreeMap<String, ContainerInfo>>,
    scripts: Mutex<HashMap<String, Script>>,
    readings: Mutex<HashMap<String, ResourceReading>>,
    calls: Mutex<Vec<Call>>,
    events: broadcast::Sender<ContainerEvent>,
    diagnostics: Mutex<HashMap<String, Diagnostics>>,
    /// Restarts answering now, and the most there ever were at once.
    restarts_in_flight: Mutex<(usize, usize)>,
    /// How long every `inspect` takes before it answers (an engine busy with a storm).
    inspect_takes: Mutex<Option<Duration>>,
    /// `inspect` calls so far.
    inspections: std::sync::atomic::AtomicUsize,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self {
            containers: Mutex::default(),
            scripts: Mutex::default(),
            readings: Mutex::default(),
            calls: Mutex::default(),
            events: broadcast::channel(1024).0,
            diagnostics: Mutex::default(),
            restarts_in_flight: Mutex::default(),
            inspect_takes: Mutex::default(),
            inspections: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// A running container `name` (id `<name>-id`) with the given labels, started a minute ago.
pub fn running(name: &str, labels: &[(&str, &str)]) -> ContainerInfo {
    ContainerInfo {
        id: format!("{name}-id"),
        name: name.to_owned(),
        image: "busybox:test".to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        state: ContainerState::Running,
        exit_code: None,
        oom_killed: false,
        health: HealthStatus::None,
        health_failing_streak: 0,
        health_output: None,
        restart_count: 0,
        started_at: Some(Utc::now() - chrono::Duration::minutes(1)),
        finished_at: None,
        limits: ResourceLimits::default(),
        pid: Some(4242),
    }
}

/// `info` after its main process exited with `code` just now.
pub fn exited(mut info: ContainerInfo, code: i64) -> ContainerInfo {
    info.state = ContainerState::Exited;
    info.exit_code = Some(code);
    info.finished_at = Some(Utc::now());
    info.pid = None;
    info
}

impl FakeEngine {
    /// Adds or replaces a container.
    pub fn put(&self, info: ContainerInfo) {
        self.containers
            .lock()
            .expect("fake lock")
            .insert(info.id.clone(), info);
    }

    /// Changes a container in place.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) {
        if let Some(info) = self.containers.lock().expect("fake lock").get_mut(id) {
            f(info);
        }
    }

    /// Removes a container (inspect answers `None`).
    pub fn remove(&self, id: &str) {
        self.containers.lock().expect("fake lock").remove(id);
    }

    /// The container as the fake has it now.
    pub fn get(&self, id: &str) -> Option<ContainerInfo> {
        self.containers.lock().expect("fake lock").get(id).cloned()
    }

    /// Sets how actions on `id` behave.
    pub fn script(&self, id: &str, script: Script) {
        self.scripts
            .lock()
            .expect("fake lock")
            .insert(id.to_owned(), script);
    }

    /// Sets what `diagnostics(id, _)` answers (the logs are cut to the lines asked for).
    pub fn set_diagnostics(&self, id: &str, diagnostics: Diagnostics) {
        self.diagnostics
            .lock()
            .expect("fake lock")
            .insert(id.to_owned(), diagnostics);
    }

    /// Sets what `read_resources(id)` answers.
    pub fn set_reading(&self, id: &str, reading: ResourceReading) {
        self.readings
            .lock()
            .expect("fake lock")
            .insert(id.to_owned(), reading);
    }

    /// Makes every `inspect` take `takes` (the tokio clock) before it answers.
    pub fn set_inspect_takes(&self, takes: Duration) {
        *self.inspect_takes.lock().expect("fake lock") = Some(takes);
    }

    /// How many `inspect` calls were made.
    pub fn inspections(&self) -> usize {
        self.inspections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Emits an event to every open `events()` stream.
    pub fn emit(&self, event: ContainerEvent) {
        let _ = self.events.send(event);
    }

    /// The most `restart` calls that were in flight at once (see [`Script::restart_takes`]).
    pub fn max_restarts_at_once(&self) -> usize {
        self.restarts_in_flight.lock().expect("fake lock").1
    }

    /// Every action call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("fake lock").clone()
    }

    fn script_of(&self, id: &str) -> Script {
        self.scripts
            .lock()
            .expect("fake lock")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn act(&self, op: &'static str, call: Call, id: &str) -> Result<Script> {
        self.calls.lock().expect("fake lock").push(call);
        if !self.containers.lock().expect("fake lock").contains_key(id) {
            return Err(EngineError::NotFound { id: id.to_owned() });
        }
        let script = self.script_of(id);
        if script.fail_actions {
            return Err(EngineError::Malformed {
                op,
                detail: "scripted failure".to_owned(),
            });
        }
        Ok(script)
    }

    fn come_back(&self, id: &str, script: &Script) {
        if script.stays_down {
            return;
        }
        self.update(id, |info| {
            info.state = ContainerState::Running;
            info.exit_code = None;
            info.oom_killed = false;
            info.started_at = Some(Utc::now());
            info.pid = Some(4243);
            if info.health != HealthStatus::None {
                info.health = HealthStatus::Healthy;
                info.health_failing_streak = 0;
            }
        });
    }
}

#[async_trait::async_trait]
impl ContainerEngine for FakeEngine {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn host_info(&self) -> Result<HostInfo> {
        Ok(HostInfo {
            cpus: 2,
            memory_bytes: 8 << 30,
            server_version: "fake".to_owned(),
            cgroup_version: "2".to_owned(),
            cgroup_driver: "cgroupfs".to_owned(),
            engine_id: "fake-engine".to_owned(),
        })
    }

    async fn list_containers(&self, label_filter: Option<&str>) -> Result<Vec<ContainerInfo>> {
        let (k, v) = label_filter
            .map(|f| f.split_once('=').unwrap_or((f, "")))
            .unwrap_or_default();
        Ok(self
            .containers
            .lock()
            .expect("fake lock")
            .values()
            .filter(|c| {
                label_filter.is_none() || c.labels.get(k).is_some_and(|x| v.is_empty() || x == v)
            })
            .cloned()
            .collect())
    }

    async fn list_summaries(&self, label_filter: Option<&str>) -> Result<Vec<ContainerSummary>> {
        Ok(self
            .list_containers(label_filter)
            .await?
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id,
                name: c.name,
                labels: c.labels,
                state: c.state,
                health: c.health,
                // The engine's own words: "Up 3 minutes" while running or paused.
                up_for: c
                    .started_at
                    .filter(|_| matches!(c.state, ContainerState::Running | ContainerState::Paused))
                    .and_then(|at| {
                        let up = (Utc::now() - at).to_std().unwrap_or_default();
                        UptimeBounds::of_status(&format!("Up {}", UptimeBounds::human(up)))
                    }),
            })
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        self.inspections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let takes = *self.inspect_takes.lock().expect("fake lock");
        if let Some(takes) = takes {
            tokio::time::sleep(takes).await;
        }
        Ok(self.get(id))
    }

    fn events(&self, _since: Option<DateTime<Utc>>) -> BoxStream<'static, Result<ContainerEvent>> {
        tokio_stream_of(self.events.subscribe())
    }

    async fn read_resources(&self, id: &str) -> Result<ResourceReading> {
        Ok(self
            .readings
            .lock()
            .expect("fake lock")
            .get(id)
            .copied()
            .unwrap_or(ResourceReading {
                at: Instant::now(),
                cpu_total_ns: 0,
                memory_used_bytes: 0,
                memory_limit_bytes: None,
            }))
    }

    async fn restart(&self, id: &str, _stop_timeout: Duration) -> Result<()> {
        let script = self.act("restart", Call::Restart(id.to_owned()), id)?;
        {
            let mut n = self.restarts_in_flight.lock().expect("fake lock");
            n.0 += 1;
            n.1 = n.1.max(n.0);
        }
        if let Some(takes) = script.restart_takes {
            tokio::time::sleep(takes).await;
        }
        self.restarts_in_flight.lock().expect("fake lock").0 -= 1;
        self.come_back(id, &script);
        Ok(())
    }

    async fn stop(&self, id: &str, _stop_timeout: Duration) -> Result<()> {
        self.act("stop", Call::Stop(id.to_owned()), id)?;
        self.update(id, |info| {
            if info.state == ContainerState::Running {
                info.state = ContainerState::Exited;
                info.exit_code = Some(143);
                info.finished_at = Some(Utc::now());
                info.pid = None;
            }
        });
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<()> {
        let script = self.act("start", Call::Start(id.to_owned()), id)?;
        self.come_back(id, &script);
        Ok(())
    }

    async fn exec(&self, id: &str, cmd: &[String], _timeout: Duration) -> Result<ExecOutcome> {
        let script = self.act("exec", Call::Exec(id.to_owned(), cmd.to_vec()), id)?;
        Ok(script.exec.unwrap_or(ExecOutcome {
            exit_code: Some(0),
            output: String::new(),
        }))
    }

    async fn diagnostics(&self, id: &str, log_lines: usize) -> Result<Diagnostics> {
        if self.get(id).is_none() {
            return Err(EngineError::NotFound { id: id.to_owned() });
        }
        let mut d = self
            .diagnostics
            .lock()
            .expect("fake lock")
            .get(id)
            .cloned()
            .unwrap_or_default();
        let skip = d.logs.len().saturating_sub(log_lines);
        d.logs.drain(..skip);
        Ok(d)
    }
}

/// The events of a broadcast receiver as the trait's stream (lagged events are skipped).
fn tokio_stream_of(
    rx: broadcast::Receiver<ContainerEvent>,
) -> BoxStream<'static, Result<ContainerEvent>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((Ok(event), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .boxed()
}
