//! Small helpers shared by several modules, with no knowledge of the domain.

pub(crate) mod backoff;
pub mod error_text;
pub(crate) mod fd_limit;
pub(crate) mod printable;
