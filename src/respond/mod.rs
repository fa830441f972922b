//! The responder: decision → effect, inside hard limits.
//!
//! [`gates`] (pure) say whether a decision may be carried out; [`claim`] holds the container
//! for one action (released on drop); [`execute`] makes the engine call; [`verify`] (pure)
//! says whether the container came back; [`report`] builds the one `remediation_complete` and
//! audit record of the outcome; [`settle`] audits what a dead process left pending;
//! [`responder`] runs these steps in order.

pub(crate) mod claim;
pub(crate) mod execute;
pub(crate) mod gates;
pub(crate) mod report;
pub(crate) mod responder;
pub(crate) mod settle;
pub(crate) mod verify;

pub(crate) use responder::Responder;

use crate::model::container::ContainerInfo;
use crate::model::decision::Decision;
use crate::policy::HealthPolicy;
use gates::Refusal;

/// What the responder is asked to carry out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    /// The governing policy.
    pub policy: &'a HealthPolicy,
    /// The container as last inspected.
    pub info: &'a ContainerInfo,
    /// The analyzer's decision (with an action).
    pub decision: &'a Decision,
    /// Its id, shared by every envelope about it.
    pub decision_id: &'a str,
    /// A person stopped the container.
    pub manual_stop: bool,
    /// For exec: the command (default: the first allow-listed one).
    pub command: Option<&'a [String]>,
}

/// How a request ended, as announced in `remediation_complete`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Response {
    /// Carried out and verified.
    Success(String),
    /// Carried out, but it failed or the container did not come back.
    Failed(String),
    /// Refused by a gate.
    Rejected(Refusal),
    /// Dry run: decided, recorded, nothing touched.
    DryRun,
    /// The circuit breaker opened now and `onGiveUp` ran.
    GaveUp(String),
}

impl Response {
    /// `success`, `failed`, `rejected` or `dry_run` (the original's `result.status`).
    pub(crate) fn status(&self) -> &'static str {
        match self {
            Self::Success(_) => "success",
            Self::Failed(_) => "failed",
            Self::Rejected(_) | Self::GaveUp(_) => "rejected",
            Self::DryRun => "dry_run",
        }
    }
}
