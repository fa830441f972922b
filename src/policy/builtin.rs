//! The built-in policy used when none is given: the original system's defaults, opt-in by label.

use std::collections::BTreeMap;

use super::types::*;

/// Name of the built-in policy.
pub(crate) const DEFAULT_POLICY_NAME: &str = "hemostat-default";
/// Label that opts a container into the built-in policy.
pub(crate) const ENABLE_LABEL: &str = "io.hemostat.enable";
/// Label that forbids any action on a container, by any policy.
pub const PROTECTED_LABEL: &str = "io.hemostat.protected";
/// Label that binds a container to one named policy.
pub(crate) const POLICY_LABEL: &str = "io.hemostat.policy";

/// CPU 85 %, memory 80 %, cooldown 1 h, 3 actions per hour, confidence 0.7, restart only,
/// for containers labelled `io.hemostat.enable=true`.
pub fn default_policy() -> HealthPolicy {
    HealthPolicy {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: Metadata {
            name: DEFAULT_POLICY_NAME.to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        },
        spec: PolicySpec {
            selector: Selector {
                match_labels: BTreeMap::from([(ENABLE_LABEL.to_owned(), "true".to_owned())]),
                ..Selector::default()
            },
            priority: i32::MIN,
            probes: Probes {
                exit: Some(ExitProbe::default()),
                healthcheck: Some(HealthcheckProbe::default()),
                oom_killed: Some(OomKilledProbe::default()),
                restart_loop: Some(RestartLoopProbe::default()),
                cpu: Some(CpuProbe::default()),
                memory: Some(MemoryProbe::default()),
                memory_leak: None,
            },
            remediation: Remediation::default(),
            analysis: Analysis::default(),
            alerts: Alerts::default(),
        },
        status: None,
    }
}
