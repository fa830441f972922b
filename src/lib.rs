//! HemoStat keeps Docker containers healthy inside hard safety limits.

pub mod docker;
pub mod observe;
