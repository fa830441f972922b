//! Why a reconcile failed, and what the loop does about it (`error_policy`: retry with backoff).

use std::time::Duration;

use super::Action;

/// Why a reconcile failed; `error_policy` turns it into a retry with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The engine failed.
    #[error("docker: {0}")]
    Docker(#[source] crate::engine::EngineError),
    /// The state store failed.
    #[error("state store: {0}")]
    Store(#[source] crate::store::StoreError),
}

impl Error {
    /// A short label for metrics.
    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            Self::Docker(e) => e.metric_label(),
            Self::Store(e) => e.metric_label(),
        }
    }
}

/// Retry a failed reconcile with exponential backoff: 1 s, 2 s, 4 s … capped at 60 s.
pub(crate) fn error_policy(error: &Error, consecutive_failures: u32) -> Action {
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
