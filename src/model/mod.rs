//! The vocabulary every other module speaks: plain data and pure methods, no I/O.
//!
//! Depends on serde, chrono (and schemars for the policy schema's action and severity) only;
//! nothing in here imports another module of the crate.

pub mod audit;
pub mod container;
pub mod decision;
pub mod safety;
pub mod uptime;
pub mod usage;
pub mod wire;
