//! Policy fields this build accepts but does not act on yet: each is reported as a warning at
//! load, never silently ignored. Add an entry when a field is accepted before its feature
//! lands; remove it when the feature does. (Alert channels and `analysis.mode: ai` have landed:
//! nothing is pending.)

use super::types::HealthPolicy;

/// `(path, message)` for every field of `policy` that is accepted but not acted on yet.
pub(crate) fn warnings(_policy: &HealthPolicy) -> Vec<(&'static str, String)> {
    Vec::new()
}
