//! HemoStat keeps Docker containers healthy inside hard safety limits.
//!
//! # Layout
//! - [`policy`]: the `HealthPolicy` language: types, loading with `file:line:col` errors,
//!   validation, the built-in default policy.
//! - [`schema`]: the JSON Schema of that language.
//! - [`cli`]: the `hemostat` subcommands.

pub mod cli;
pub mod controller;
pub mod policy;
pub mod schema;
