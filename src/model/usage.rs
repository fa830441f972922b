//! Resource usage: raw cumulative readings, the usage between two of them, and samples kept over time.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::container::{HostInfo, ResourceLimits};

/// Cumulative counters of one container at one instant (what the sampler turns into percentages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceReading {
    /// When it was read (monotonic clock).
    pub at: Instant,
    /// CPU time used since the container started, in ns.
    pub cpu_total_ns: u64,
    /// Memory in use, minus reclaimable page cache (`inactive_file` / `total_inactive_file`).
    pub memory_used_bytes: u64,
    /// The memory limit the kernel enforces, `None` when unlimited.
    pub memory_limit_bytes: Option<u64>,
}

/// Usage of one container over one sampling interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// Percent of the CPUs the container may use (its limit, or all host cores): 100 = all of it.
    pub cpu_percent: f64,
    /// Percent of the memory the container may use (its limit, or host memory).
    pub memory_percent: f64,
    /// Memory in use, minus reclaimable page cache.
    pub memory_used_bytes: u64,
    /// The denominator of `memory_percent`.
    pub memory_limit_bytes: u64,
}

/// What a container's memory percentages are of: its own limit (from its configuration, else
/// the one its cgroup reports), or host memory when it has none or one beyond the host's.
pub(crate) fn memory_limit_of(
    limits: &ResourceLimits,
    cgroup_limit: Option<u64>,
    host: &HostInfo,
) -> u64 {
    match limits.memory_bytes.or(cgroup_limit) {
        Some(l) if l > 0 && (host.memory_bytes == 0 || l < host.memory_bytes) => l,
        _ => host.memory_bytes,
    }
}

/// Usage between two readings of one container; `None` on a counter reset (the container
/// restarted) or an empty interval.
///
/// CPU % = Δcpu ns / (Δwall ns × cores) × 100, where cores is the container's CPU limit
/// (capped at the host's cores) or all host cores when unlimited. Memory % is of the
/// container's limit when set and smaller than host memory, else of host memory.
pub(crate) fn usage_between(
    prev: &ResourceReading,
    now: &ResourceReading,
    limits: &ResourceLimits,
    host: &HostInfo,
) -> Option<Usage> {
    let wall_ns = now.at.checked_duration_since(prev.at)?.as_nanos() as f64;
    if wall_ns <= 0.0 {
        return None;
    }
    let cpu_ns = now.cpu_total_ns.checked_sub(prev.cpu_total_ns)? as f64;
    let host_cores = f64::from(host.cpus.max(1));
    let cores = limits
        .cpu_limit_cores()
        .filter(|c| *c > 0.0)
        .map_or(host_cores, |c| c.min(host_cores));
    let cpu_percent = cpu_ns / (wall_ns * cores) * 100.0;

    let memory_limit_bytes = memory_limit_of(limits, now.memory_limit_bytes, host);
    let memory_percent = if memory_limit_bytes == 0 {
        0.0
    } else {
        now.memory_used_bytes as f64 / memory_limit_bytes as f64 * 100.0
    };
    Some(Usage {
        cpu_percent,
        memory_percent,
        memory_used_bytes: now.memory_used_bytes,
        memory_limit_bytes,
    })
}

/// One resource sample of a container, as percentages of its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsagePoint {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// CPU used, in percent of the container's CPU limit (or of all host cores).
    pub cpu_percent: f64,
    /// Memory used, in percent of the container's memory limit (or of host memory).
    pub memory_percent: f64,
    /// Memory used, in bytes (page cache excluded).
    pub memory_used_bytes: u64,
}
