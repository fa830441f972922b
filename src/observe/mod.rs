//! Observing containers: resource sampling.

pub mod sampler;
