//! The probes of a policy, each a pure function of an observation.

use chrono::{DateTime, Utc};

use super::Observation;
use super::trend::linear_trend;
use crate::model::container::{ContainerState, HealthStatus};
use crate::model::decision::{Finding, FindingKind, Severity};
use crate::model::usage::UsagePoint;
use crate::policy::duration::compact;
use crate::policy::{HealthPolicy, Probes};

/// Runs every probe the policy configures; returns what they found, most severe first.
pub(crate) fn run_probes(policy: &HealthPolicy, obs: &Observation<'_>) -> Vec<Finding> {
    let probes = &policy.spec.probes;
    let mut found = Vec::new();
    exit_probe(probes, obs, &mut found);
    health_probe(probes, obs, &mut found);
    restart_loop_probe(probes, obs, &mut found);
    usage_probes(probes, obs, &mut found);
    found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    found
}

/// An exit or an OOM kill of a container nobody stopped by hand.
fn exit_probe(probes: &Probes, obs: &Observation<'_>, found: &mut Vec<Finding>) {
    let stopped = matches!(
        obs.info.state,
        ContainerState::Exited | ContainerState::Dead
    );

    if stopped && !obs.manual_stop {
        let oom = obs.info.oom_killed;
        if oom && probes.oom_killed.is_some() {
            found.push(Finding {
                kind: FindingKind::OomKilled,
                severity: Severity::Critical,
                message: "OOM killed: the kernel ended it for exceeding its memory limit".into(),
            });
        } else if let (Some(exit), Some(code)) = (&probes.exit, obs.info.exit_code) {
            let counts = code != 0 || !exit.non_zero_only;
            if counts && !oom {
                found.push(Finding {
                    kind: FindingKind::Exited { exit_code: code },
                    severity: if code == 0 {
                        Severity::Medium
                    } else {
                        Severity::High
                    },
                    message: format!("Exited with code {code}"),
                });
            }
        }
    }
}

/// An unhealthy healthcheck that lasted `unhealthyFor`.
fn health_probe(probes: &Probes, obs: &Observation<'_>, found: &mut Vec<Finding>) {
    if let (Some(probe), HealthStatus::Unhealthy, ContainerState::Running) =
        (&probes.healthcheck, obs.info.health, obs.info.state)
    {
        let since = obs.unhealthy_since.unwrap_or(obs.now);
        let for_secs = (obs.now - since).num_seconds().max(0) as u64;
        if for_secs >= probe.unhealthy_for.get().as_secs() {
            found.push(Finding {
                kind: FindingKind::Unhealthy { for_secs },
                severity: Severity::High,
                message: format!(
                    "Unhealthy for {}",
                    compact(std::time::Duration::from_secs(for_secs))
                ),
            });
        }
    }
}

/// At least `restarts` restarts `within` the window.
fn restart_loop_probe(probes: &Probes, obs: &Observation<'_>, found: &mut Vec<Finding>) {
    if let Some(probe) = &probes.restart_loop {
        let window =
            chrono::Duration::from_std(probe.within.get()).unwrap_or(chrono::Duration::MAX);
        let restarts = obs
            .restarts
            .iter()
            .filter(|t| obs.now - **t <= window)
            .count() as u32;
        if restarts >= probe.restarts {
            found.push(Finding {
                kind: FindingKind::RestartLoop {
                    restarts,
                    within_secs: probe.within.get().as_secs(),
                },
                severity: Severity::Critical,
                message: format!("Restart loop: {restarts} restarts within {}", probe.within),
            });
        }
    }
}

/// CPU, memory and memory-leak thresholds of a running container.
fn usage_probes(probes: &Probes, obs: &Observation<'_>, found: &mut Vec<Finding>) {
    if obs.info.state == ContainerState::Running {
        if let Some(probe) = &probes.cpu {
            threshold_probe(
                obs,
                "cpu",
                probe.above_percent,
                probe.for_.get(),
                |u| u.cpu_percent,
                found,
            );
        }
        if let Some(probe) = &probes.memory {
            threshold_probe(
                obs,
                "memory",
                probe.above_percent,
                probe.for_.get(),
                |u| u.memory_percent,
                found,
            );
        }
        if let Some(probe) = &probes.memory_leak {
            leak_probe(obs, probe.growth_percent_per_hour, probe.for_.get(), found);
        }
    }
}

/// Samples since the container last started (older ones describe a previous life).
fn current_life<'a>(obs: &Observation<'a>) -> &'a [UsagePoint] {
    let started = obs.info.started_at;
    let first = obs
        .usage
        .iter()
        .position(|u| started.is_none_or(|s| u.at >= s))
        .unwrap_or(obs.usage.len());
    &obs.usage[first..]
}

fn threshold_probe(
    obs: &Observation<'_>,
    resource: &str,
    above: f64,
    sustain: std::time::Duration,
    value: fn(&UsagePoint) -> f64,
    found: &mut Vec<Finding>,
) {
    let samples = current_life(obs);
    let Some(latest) = samples.last() else { return };
    let percent = value(latest);
    if percent <= above {
        return;
    }
    let window_start = crate::model::safety::earlier(obs.now, sustain);
    // Sustained: every sample in the window is above, and the samples reach back to its start.
    let covered = samples
        .first()
        .is_some_and(|first| first.at <= window_start);
    let all_above = samples
        .iter()
        .filter(|u| u.at >= window_start)
        .all(|u| value(u) > above);
    // The run of samples above the threshold that ends now tells how long it has lasted.
    let run_start = samples
        .iter()
        .rev()
        .take_while(|u| value(u) > above)
        .last()
        .map_or(obs.now, |u| u.at);
    let for_secs = (obs.now - run_start).num_seconds().max(0) as u64;
    let label = if resource == "cpu" { "CPU" } else { "memory" };
    if covered && all_above {
        let severity = if percent > 95.0 {
            Severity::Critical
        } else {
            Severity::High
        };
        let kind = if resource == "cpu" {
            FindingKind::HighCpu { percent, for_secs }
        } else {
            FindingKind::HighMemory { percent, for_secs }
        };
        let high = if resource == "cpu" {
            "High CPU"
        } else {
            "High memory"
        };
        found.push(Finding {
            kind,
            severity,
            message: format!(
                "{high}: {percent:.1}% of limit for {} (threshold {above}%)",
                compact(std::time::Duration::from_secs(for_secs))
            ),
        });
    } else {
        found.push(Finding {
            kind: FindingKind::TransientSpike {
                resource: resource.to_owned(),
                percent,
            },
            severity: Severity::Medium,
            message: format!(
                "Transient {label} spike: {percent:.1}% of limit for {} of the {} required",
                compact(std::time::Duration::from_secs(for_secs)),
                compact(sustain)
            ),
        });
    }
}

fn leak_probe(
    obs: &Observation<'_>,
    growth_per_hour: f64,
    sustain: std::time::Duration,
    found: &mut Vec<Finding>,
) {
    let samples = current_life(obs);
    let window_start = crate::model::safety::earlier(obs.now, sustain);
    if samples.first().is_none_or(|f| f.at > window_start) {
        return;
    }
    let points: Vec<(DateTime<Utc>, f64)> = samples
        .iter()
        .filter(|u| u.at >= window_start)
        .map(|u| (u.at, u.memory_percent))
        .collect();
    let Some((slope, r2)) = linear_trend(&points) else {
        return;
    };
    if slope >= growth_per_hour && r2 >= 0.8 {
        found.push(Finding {
            kind: FindingKind::MemoryLeak {
                growth_percent_per_hour: slope,
            },
            severity: Severity::High,
            message: format!(
                "Memory leak: memory grows {slope:.1}% of limit per hour (threshold {growth_per_hour}%)"
            ),
        });
    }
}
