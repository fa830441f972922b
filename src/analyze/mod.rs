//! Pure decision logic: from a policy and what was observed of a container to findings and a decision.
//!
//! Nothing here performs I/O or reads a clock: the caller passes `now`. The responder decides
//! afterwards whether a decision may be carried out (the safety gates).

pub mod llm;
pub(crate) mod probes;
pub(crate) mod rules;
pub(crate) mod trend;

use chrono::{DateTime, Utc};

use crate::model::container::ContainerInfo;
use crate::model::usage::UsagePoint;
pub(crate) use probes::run_probes;
pub(crate) use rules::analyze;

/// Everything the analyzer sees of one container at one instant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observation<'a> {
    /// The container as last inspected.
    pub info: &'a ContainerInfo,
    /// The instant of the analysis.
    pub now: DateTime<Utc>,
    /// Resource samples, oldest first.
    pub usage: &'a [UsagePoint],
    /// Instants at which the container (re)started after having run before, oldest first.
    pub restarts: &'a [DateTime<Utc>],
    /// The last stop or kill was done by someone other than HemoStat, and nobody started it since.
    pub manual_stop: bool,
    /// Since when the healthcheck has reported unhealthy without interruption.
    pub unhealthy_since: Option<DateTime<Utc>>,
    /// Failed repairs within the circuit breaker window (drives escalation).
    pub failed_repairs: u32,
}
