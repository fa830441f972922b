//! Observation of the engine: the watcher, the store of observed containers, the sampler.

pub mod store;
