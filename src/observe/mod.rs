//! Observation of the engine: the store of observed containers and the resource sampler.

pub(crate) mod acting;
pub(crate) mod host;
pub mod sampler;
pub mod store;
