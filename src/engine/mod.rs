//! The port to the container engine: the `ContainerEngine` trait and its errors.
//!
//! Everything else in the crate codes against [`ContainerEngine`]; the only
//! implementation that talks to a real engine is [`BollardEngine`] (the only `use bollard`).
//! Tests use `fake::FakeEngine` (feature `test-util`), and the blanket impl for
//! `Arc<T>` lets a shared client be passed wherever a `ContainerEngine` is wanted. The domain
//! types live in [`crate::model::container`].

mod bollard;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
mod list;

pub use self::bollard::BollardEngine;
use crate::model::container::{
    ContainerEvent, ContainerInfo, ContainerSummary, Diagnostics, ExecOutcome, HEALTH_OUTPUT_MAX,
    HostInfo,
};
use crate::model::usage::ResourceReading;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;

/// Result of a call to the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What can go wrong when talking to the Docker engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be reached at all (socket missing, connection refused, broken pipe).
    #[error(
        "cannot reach the Docker engine at {endpoint} ({}): start the Docker daemon, or set \
         DOCKER_HOST to the address of a running one (when HemoStat runs in a container, mount \
         the engine's socket: -v /var/run/docker.sock:/var/run/docker.sock)",
        crate::util::error_text::error_text(source)
    )]
    Unreachable {
        /// The endpoint we tried (`unix:///var/run/docker.sock`, `tcp://…`).
        endpoint: String,
        /// The transport error.
        #[source]
        source: ::bollard::errors::Error,
    },
    /// The container does not exist (any more); the engine answered 404.
    #[error("container {id} not found")]
    NotFound {
        /// The id or name we asked about.
        id: String,
    },
    /// The engine answered a request with an error (409 conflict, 500, a bad request…).
    #[error("Docker API call `{op}` failed: {source}")]
    Api {
        /// The operation, e.g. `restart`.
        op: &'static str,
        /// The engine's answer.
        #[source]
        source: ::bollard::errors::Error,
    },
    /// A call did not complete within its deadline (ours, or bollard's client timeout).
    ///
    /// No `#[source]`: the only cause is the clock, and `after` says which deadline.
    #[error("Docker API call `{op}` did not complete within {after:?}")]
    Timeout {
        /// The operation, e.g. `exec`.
        op: &'static str,
        /// The deadline that elapsed.
        after: Duration,
    },
    /// The engine answered, but without something HemoStat needs (a missing id, no stats sample).
    #[error("unexpected answer from Docker to `{op}`: {detail}")]
    Malformed {
        /// The operation, e.g. `stats`.
        op: &'static str,
        /// What was missing or wrong.
        detail: String,
    },
}

impl EngineError {
    /// True when the container is gone (so callers can forget it rather than retry).
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::NotFound { .. })
    }

    /// A short, stable label for counting errors in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            EngineError::Unreachable { .. } => "unreachable",
            EngineError::NotFound { .. } => "not_found",
            EngineError::Api { .. } => "api",
            EngineError::Timeout { .. } => "timeout",
            EngineError::Malformed { .. } => "malformed",
        }
    }
}

/// The operations HemoStat needs from a Docker engine.
#[async_trait::async_trait]
pub trait ContainerEngine: Send + Sync + 'static {
    /// Checks that the engine answers.
    async fn ping(&self) -> Result<()>;
    /// Describes the host: CPUs, memory, versions.
    async fn host_info(&self) -> Result<HostInfo>;
    /// Every container in every state (all=true), each inspected (bounded concurrency), optionally filtered by label "k=v".
    async fn list_containers(&self, label_filter: Option<&str>) -> Result<Vec<ContainerInfo>>;
    /// Every container in every state as the engine lists it, with no inspection: one call,
    /// cheap at any number of containers (the periodic resync uses it to find what changed).
    async fn list_summaries(&self, label_filter: Option<&str>) -> Result<Vec<ContainerSummary>>;
    /// Inspects one container; `Ok(None)` when it is gone.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>>;
    /// Container events (die, oom, health_status, start, stop, kill, restart, pause, unpause, destroy, create) from `since`.
    fn events(&self, since: Option<DateTime<Utc>>) -> BoxStream<'static, Result<ContainerEvent>>;
    /// One-shot stats reading (stream=false, one_shot=true: must return immediately, no 1-2 s wait).
    async fn read_resources(&self, id: &str) -> Result<ResourceReading>;
    /// `docker restart -t <stop_timeout>`.
    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<()>;
    /// `docker stop -t <stop_timeout>`; stopping a stopped container is not an error.
    async fn stop(&self, id: &str, stop_timeout: Duration) -> Result<()>;
    /// `docker start`; starting a running container is not an error.
    async fn start(&self, id: &str) -> Result<()>;
    /// Runs exactly `cmd` (no shell added) and waits up to `timeout`.
    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutcome>;
    /// The healthcheck log and, when `log_lines > 0`, the last `log_lines` lines of output
    /// (never the environment); read only to explain a problem to a model.
    async fn diagnostics(&self, id: &str, log_lines: usize) -> Result<Diagnostics>;
}

#[async_trait::async_trait]
impl<T: ContainerEngine + ?Sized> ContainerEngine for Arc<T> {
    async fn ping(&self) -> Result<()> {
        (**self).ping().await
    }
    async fn host_info(&self) -> Result<HostInfo> {
        (**self).host_info().await
    }
    async fn list_containers(&self, label_filter: Option<&str>) -> Result<Vec<ContainerInfo>> {
        (**self).list_containers(label_filter).await
    }
    async fn list_summaries(&self, label_filter: Option<&str>) -> Result<Vec<ContainerSummary>> {
        (**self).list_summaries(label_filter).await
    }
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>> {
        (**self).inspect(id).await
    }
    fn events(&self, since: Option<DateTime<Utc>>) -> BoxStream<'static, Result<ContainerEvent>> {
        (**self).events(since)
    }
    async fn read_resources(&self, id: &str) -> Result<ResourceReading> {
        (**self).read_resources(id).await
    }
    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<()> {
        (**self).restart(id, stop_timeout).await
    }
    async fn stop(&self, id: &str, stop_timeout: Duration) -> Result<()> {
        (**self).stop(id, stop_timeout).await
    }
    async fn start(&self, id: &str) -> Result<()> {
        (**self).start(id).await
    }
    async fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecOutcome> {
        (**self).exec(id, cmd, timeout).await
    }
    async fn diagnostics(&self, id: &str, log_lines: usize) -> Result<Diagnostics> {
        (**self).diagnostics(id, log_lines).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_found_is_not_found() {
        assert!(EngineError::NotFound { id: "x".into() }.is_not_found());
        let malformed = EngineError::Malformed {
            op: "stats",
            detail: "empty".into(),
        };
        assert!(!malformed.is_not_found());
        assert_eq!(malformed.metric_label(), "malformed");
    }
}
