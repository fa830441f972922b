//! Small helpers shared by several modules, with no knowledge of the domain.

pub mod backoff;
pub mod error_text;
pub mod fd_limit;
pub mod printable;
