//! The reconcile loop: triggers feed a de-duplicating, per-container-exclusive work queue.

pub(crate) mod ai;
pub(crate) mod announce;
pub(crate) mod context;
pub(crate) mod driver;
pub(crate) mod error;
pub mod external;
pub(crate) mod queue;
// `reconcile()` (the unit tests' entry point; the driver calls `reconcile_in`) is unused outside tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod reconcile;
pub(crate) mod sample;
#[cfg(test)]
mod scenarios;
pub(crate) mod watch;
#[cfg(test)]
mod wire_golden;

use std::time::Duration;

pub(crate) use context::{Context, ControllerConfig};
pub(crate) use error::{Error, error_policy};
#[cfg(test)]
pub(crate) use reconcile::reconcile;

/// What the loop should do next with a container (kube-runtime's `Action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Look again after this long, even if nothing happens (level-triggered safety net).
    Requeue(Duration),
    /// Wait for an event about it.
    AwaitChange,
}
