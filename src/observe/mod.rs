//! Observation of the engine: the store of observed containers and the resource sampler.

pub mod acting;
pub mod sampler;
pub mod store;
