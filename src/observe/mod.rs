//! Observation of the engine: the store of observed containers and the resource sampler.

pub mod acting;
pub mod host;
pub mod sampler;
pub mod store;
