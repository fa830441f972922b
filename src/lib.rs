//! HemoStat keeps Docker containers healthy inside hard safety limits.
//!
//! # Data flow
//!
//! ```text
//!  policy::{load, source} ──► policy::registry ─────────── changed ──────┐
//!                                                                        │ trigger
//!  engine (bollard | fake) ─► controller::watch / sample ─► observe::store ─► controller::queue
//!                                                                        │
//!                                                      controller::reconcile
//!                                                                        │
//!         analyze (rules) ─────────────────────► model::Decision ◄───────┘
//!                                                                        │
//!        respond::{gates (pure), claim (RAII), execute, verify (pure)} ─► respond::Response
//!                      │                                                 │ respond::report
//!                      ▼                                                 ▼
//!        store::StateStore (safety, locks, audit)     bus::EventSink (typed envelopes, subscribe())
//!                      └──────── adapters::redis (outbox, state, policies, requests) ─┘
//!                                                                        ├─► alert (dedup, silences,
//!                                                                        │   Slack/webhook/Alertmanager)
//!                                                                        └─► http (JSON API)
//! ```
//!
//! # Layout
//! - [`model`]: the vocabulary (containers, usage, decisions, safety state, audit, the wire
//!   payloads); plain data and pure methods, depends on nothing else in the crate.
//! - [`policy`]: the `HealthPolicy` language: types, loading with `file:line:col` errors,
//!   validation, selection, documents, diffs, the built-in default policy. No transport.
//! - [`engine`]: the `ContainerEngine` port, its bollard implementation and the fake.
//! - [`observe`]: the store of observed containers, the acting marks, the resource sampler.
//! - [`analyze`]: pure functions from a policy and an observation to findings and a decision.
//! - [`respond`]: the safety gates, the claim, the execution, verification and report.
//! - [`store`]: shared state (`StateStore`, `StoreError`): the embedded store persisted
//!   atomically, and the Redis outage fallback with its journal.
//! - [`bus`]: where envelopes go (`EventSink`) and the in-memory sink.
//! - [`alert`]: alerts to people (Slack, webhooks, Alertmanager): classification, dedup,
//!   grouping, silences, the delivery worker and the router task on `EventSink::subscribe()`.
//! - [`adapters`]: the only code that talks to third-party services (Redis, Slack, webhooks,
//!   Alertmanager, the LLM APIs).
//! - [`controller`]: the work queue, the watcher, the sampling task, reconcile and announce,
//!   external requests (`external::request`: typed and checked, pure; `external::handle`).
//! - [`http`]: health, readiness, metrics, the JSON API and its bodies (`http::views`, also
//!   what the CLI reads back), the dashboard; [`metrics`]: Prometheus.
//! - [`util`]: the one backoff; [`schema`]: the JSON Schema of the policy language.
//! - [`app`]: the composition root: builds every part of `run` once and runs its tasks.
//! - [`cli`]: the `hemostat` subcommands (parsing and printing); `cli::policy` for the
//!   kubectl-style verbs, `cli::client` the one client they share, `cli::table` the tables.
//!
//! # Dependency rules (checked by `tests/layering.rs`)
//!
//! ```text
//! model ← nothing          policy ← model          engine ← model
//! analyze ← model, policy  observe ← model, policy, engine
//! store ← model            bus ← model
//! respond ← model, policy, engine, store, bus, observe (acting marks)
//! http ← model, policy, observe, store, bus        alert ← model, policy, bus
//! adapters ← model, policy, store, bus, alert (the traits its clients implement)
//! controller, app, cli ← everything
//! ```

// The module docs describe the internals for whoever works on them, crate-private items
// included: read them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]
// No production function over 80 lines (clippy.toml); tests are exempt.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod adapters;
pub mod alert;
pub mod analyze;
pub(crate) mod app;
pub mod bus;
pub mod cli;
pub mod controller;
pub mod engine;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod http;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod policy;
pub(crate) mod respond;
pub mod schema;
pub mod store;
pub mod util;
