//! The responder: safety gates, then the action, its verification and its audit record.

pub mod safety;
