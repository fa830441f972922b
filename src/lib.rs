//! HemoStat keeps Docker containers healthy inside hard safety limits.
//!
//! # Layout
//! - [`policy`]: the `HealthPolicy` language: types, loading with `file:line:col` errors,
//!   validation, selection, the built-in default policy.
//! - [`docker`]: the `DockerApi` trait and its bollard implementation; the only place that
//!   talks to the engine.
//! - [`observe`]: the watcher (list, then events, resync), the store of observed containers,
//!   the resource sampler.
//! - [`analyze`]: pure functions from a policy and an observation to findings and a decision.
//! - [`respond`]: the safety gates and the execution, verification and audit of actions.
//! - [`bus`]: where envelopes and shared state go (`StateStore`, `EventSink`).
//! - [`controller`]: the work queue and the reconcile loop.
//! - [`http`]: health, readiness and the JSON API.
//! - [`adapters`]: implementations of ports that talk to outside services (the LLM APIs).
//! - [`schema`]: the JSON Schema of the policy language.
//! - [`cli`]: the `hemostat` subcommands.

pub mod adapters;
pub mod analyze;
pub mod bus;
pub mod cli;
pub mod controller;
pub mod docker;
pub mod http;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod respond;
pub mod schema;
