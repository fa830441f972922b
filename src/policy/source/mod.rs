//! Where the policy set in force comes from: the operator's files (`base`) and the policies
//! applied through Redis, composed with the Redis ones winning a name clash. Each source is a
//! task feeding the registry.

pub mod files;
pub(crate) mod last_good;

use std::collections::BTreeMap;

use super::types::HealthPolicy;

/// Composes the set in force: `base` (files) plus `remote`; a remote policy replaces a
/// base one of the same name.
pub(crate) fn compose(
    base: &[HealthPolicy],
    remote: &BTreeMap<String, HealthPolicy>,
) -> Vec<HealthPolicy> {
    let mut out: Vec<HealthPolicy> = base
        .iter()
        .filter(|p| !remote.contains_key(&p.metadata.name))
        .cloned()
        .collect();
    out.extend(remote.values().cloned());
    out
}
