//! The wire envelope, re-exported from [`crate::model::wire`] where it now lives.

pub use crate::model::wire::*;
