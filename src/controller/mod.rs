//! The reconcile loop: triggers feed a de-duplicating, per-container-exclusive work queue.

pub mod announce;
pub mod context;
pub mod driver;
pub mod external;
pub mod queue;
pub mod reconcile;
pub mod sample;
#[cfg(test)]
mod scenarios;
pub mod watch;
#[cfg(test)]
mod wire_golden;

use std::time::Duration;

pub use context::{Context, ControllerConfig};
pub use reconcile::reconcile;

/// What the loop should do next with a container (kube-runtime's `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look again after this long, even if nothing happens (level-triggered safety net).
    Requeue(Duration),
    /// Wait for an event about it.
    AwaitChange,
}

/// Why a reconcile failed; `error_policy` turns it into a retry with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error("docker: {0}")]
    Docker(#[source] crate::engine::EngineError),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[source] crate::bus::BusError),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Docker(e) => e.metric_label(),
            Self::Store(e) => e.metric_label(),
        }
    }
}

/// Retry a failed reconcile with exponential backoff: 1 s, 2 s, 4 s … capped at 60 s.
pub fn error_policy(error: &Error, consecutive_failures: u32) -> Action {
    let secs = 1u64 << consecutive_failures.min(6);
    tracing::warn!(error = %error, retry_in_secs = secs.min(60), "reconcile failed");
    Action::Requeue(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_policy_backs_off_exponentially_up_to_a_minute() {
        let e = Error::Docker(crate::engine::EngineError::NotFound { id: "x".into() });
        let delays: Vec<_> = [0, 1, 2, 5, 6, 20]
            .iter()
            .map(|n| error_policy(&e, *n))
            .collect();
        let secs: Vec<u64> = delays
            .iter()
            .map(|a| match a {
                Action::Requeue(d) => d.as_secs(),
                Action::AwaitChange => 0,
            })
            .collect();
        assert_eq!(secs, [1, 2, 4, 32, 60, 60]);
    }
}
