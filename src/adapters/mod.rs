//! The only modules that talk to third-party services; each implements one trait of the core.

pub mod redis;
