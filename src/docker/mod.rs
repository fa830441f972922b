//! PLACEHOLDER types of the Docker adapter (replaced by the `docker` branch on merge).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub nano_cpus: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub memory_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub health: HealthStatus,
    pub health_failing_streak: u32,
    pub restart_count: u64,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub limits: ResourceLimits,
    pub pid: Option<u32>,
}

pub type Result<T, E = DockerError> = std::result::Result<T, E>;
#[derive(Debug, thiserror::Error)]
pub enum DockerError { #[error("docker: {0}")] Api(String), #[error("not found {id}")] NotFound { id: String } }
impl DockerError { pub fn metric_label(&self) -> &'static str { "x" } pub fn is_not_found(&self) -> bool { false } }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum EventAction { Create, Start, Die, Oom, Kill, Stop, Restart, Pause, Unpause, Destroy, HealthStatus(HealthStatus), Other(String) }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerEvent { pub action: EventAction, pub container_id: String, pub name: String, pub labels: BTreeMap<String,String>,
  pub time: chrono::DateTime<chrono::Utc>, pub exit_code: Option<i64>, pub signal: Option<String> }
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] pub struct HostInfo { pub cpus: u32, pub memory_bytes: u64, pub server_version: String, pub cgroup_version: String, pub cgroup_driver: String }
#[derive(Clone, Debug, PartialEq)] pub struct ExecOutcome { pub exit_code: Option<i64>, pub output: String }
#[derive(Clone, Copy, Debug, PartialEq)] pub struct ResourceReading { pub at: std::time::Instant, pub cpu_total_ns: u64, pub memory_used_bytes: u64, pub memory_limit_bytes: Option<u64> }
#[async_trait::async_trait]
pub trait DockerApi: Send + Sync + 'static {
  async fn ping(&self) -> Result<()>;
  async fn host_info(&self) -> Result<HostInfo>;
  async fn list_containers(&self, label_filter: Option<&str>) -> Result<Vec<ContainerInfo>>;
  async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>>;
  fn events(&self, since: Option<chrono::DateTime<chrono::Utc>>) -> futures::stream::BoxStream<'static, Result<DockerEvent>>;
  async fn read_resources(&self, id: &str) -> Result<ResourceReading>;
  async fn restart(&self, id: &str, stop_timeout: std::time::Duration) -> Result<()>;
  async fn stop(&self, id: &str, stop_timeout: std::time::Duration) -> Result<()>;
  async fn start(&self, id: &str) -> Result<()>;
  async fn exec(&self, id: &str, cmd: &[String], timeout: std::time::Duration) -> Result<ExecOutcome>;
}
