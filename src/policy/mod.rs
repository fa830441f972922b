//! HealthPolicy documents: types, loading with `file:line:col` errors, validation, selection.

pub mod builtin;
pub mod diff;
pub mod documents;
pub(crate) mod duration;
pub mod load;
pub mod locate;
pub mod registry;
pub(crate) mod select;
pub mod source;
pub(crate) mod types;
pub(crate) mod unimplemented;
pub(crate) mod unknown;
pub mod validate;

pub use duration::HumanDuration;
pub use load::{Diagnostic, LoadReport, LoadedPolicy, load_bytes, load_paths, load_str};
pub use types::*;
