//! Policy fields this build accepts but does not act on yet: each is reported as a warning at
//! load, never silently ignored. Remove an entry when its feature lands.

use super::types::{AnalysisMode, HealthPolicy};

/// `(path, message)` for every field of `policy` that is accepted but not acted on yet.
pub fn warnings(policy: &HealthPolicy) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if policy.spec.analysis.mode == AnalysisMode::Ai {
        out.push((
            "spec.analysis.mode",
            format!(
                "analysis.mode: ai is not implemented yet: policy {} is analysed by the rules",
                policy.metadata.name
            ),
        ));
    }
    out
}
