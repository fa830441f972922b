//! Where policy sets come from; each source is a task feeding the registry.

pub mod files;
pub mod last_good;
