//! The reconcile loop: triggers feed a de-duplicating, per-container-exclusive work queue.

pub mod announce;
pub mod context;
pub mod driver;
pub mod error;
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
pub use error::{Error, error_policy};
pub use reconcile::reconcile;

/// What the loop should do next with a container (kube-runtime's `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look again after this long, even if nothing happens (level-triggered safety net).
    Requeue(Duration),
    /// Wait for an event about it.
    AwaitChange,
}
