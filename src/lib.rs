//! HemoStat keeps Docker containers healthy inside hard safety limits.
//!
//! # Layout
//! - [`policy`]: the `HealthPolicy` language: types, loading with `file:line:col` errors,
//!   validation, the built-in default policy.
//! - [`schema`]: the JSON Schema of that language.
//! - [`cli`]: the `hemostat` subcommands.

pub mod analyze;
pub mod bus;
pub mod cli;
pub mod docker;
pub mod observe;
pub mod policy;
pub mod respond;
pub mod schema;
