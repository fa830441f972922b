//! Implementations of the crate's ports that talk to outside services.

pub mod llm;
