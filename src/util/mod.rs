//! Small helpers shared by several modules, with no knowledge of the domain.

pub(crate) mod backoff;
pub mod error_text;
pub(crate) mod printable;
