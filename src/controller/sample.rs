//! The sampling task: resource usage of every governed running container every interval, and the stats and state keys of every governed container.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Context;
use crate::engine::ContainerEngine;
use crate::model::container::{ContainerInfo, ContainerState, HostInfo};
use crate::model::usage::UsagePoint;
use crate::model::wire::{ContainerStateKey, ContainerStats};
use crate::observe::sampler::{CgroupReader, Sampler};
use crate::policy::HealthPolicy;
use crate::policy::select::{Target, governing_policy};

/// What sampling needs to know of a governed container's policy.
struct Governed {
    /// How many usage samples to keep: what the policy's usage probes look back over, and at
    /// least what the dashboard shows.
    keep: usize,
    /// The policy's CPU and memory thresholds, when it has those probes.
    cpu_above: Option<f64>,
    memory_above: Option<f64>,
    /// It has a memory-leak probe (a trend: every sample may matter).
    leak: bool,
}

impl Governed {
    /// Whether the policy has a probe that reads resource usage.
    fn reads_usage(&self) -> bool {
        self.leak || self.cpu_above.is_some() || self.memory_above.is_some()
    }

    /// The memory percentage from which a decision depends on the memory in use: `0` for a
    /// trend (every sample feeds it), the memory probe's threshold, or `None` (no decision
    /// reads memory; see [`Sampler::sample_with`]).
    fn exact_memory_from(&self) -> Option<f64> {
        if self.leak {
            Some(0.0)
        } else {
            self.memory_above
        }
    }

    /// Whether a new `usage` sample could make the analyzer find something: a threshold probe
    /// finds nothing while the latest sample is at or below its threshold.
    fn worth_a_look(&self, usage: &crate::model::usage::Usage) -> bool {
        self.leak
            || self.cpu_above.is_some_and(|a| usage.cpu_percent > a)
            || self.memory_above.is_some_and(|a| usage.memory_percent > a)
    }
}

/// The governing policy's sampling needs, `None` when no policy governs the container.
/// `policies` is the registry's snapshot, taken once per pass.
fn governed(ctx: &Context, policies: &[HealthPolicy], info: &ContainerInfo) -> Option<Governed> {
    governing_policy(policies, Target::from(info)).map(|p| {
        let probes = &p.spec.probes;
        let window = [
            probes.cpu.as_ref().map(|c| c.for_.get()),
            probes.memory.as_ref().map(|m| m.for_.get()),
            probes.memory_leak.as_ref().map(|l| l.for_.get()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
        let interval = ctx.config.sample_interval.max(Duration::from_secs(1));
        let per_window = (window.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 2;
        Governed {
            keep: per_window.max(crate::http::dashboard::HISTORY),
            cpu_above: probes.cpu.as_ref().map(|c| c.above_percent),
            memory_above: probes.memory.as_ref().map(|m| m.above_percent),
            leak: probes.memory_leak.is_some(),
        }
    })
}

/// Samples until `shutdown`. Every governed container gets its stats and state keys (the
/// original's dashboard shows them all): running ones sampled, the others with zero figures.
/// A new sample schedules a reconcile when the policy's usage probes could find something in
/// it, or when a problem of the container is on record (so it is forgotten once over).
pub async fn run_sampler(
    ctx: Arc<Context>,
    host: HostInfo,
    cgroups: Option<CgroupReader>,
    shutdown: CancellationToken,
) {
    // Reading many containers' cgroup files through open descriptors takes 3 each.
    match crate::util::fd_limit::raise_to_hard() {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    let docker: Arc<dyn ContainerEngine> = ctx.docker.clone();
    let mut sampler = Sampler::new(docker, cgroups);
    let mut tick = tokio::time::interval(ctx.config.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut infos: Vec<ContainerInfo> = Vec::new();
        let mut idle: Vec<ContainerInfo> = Vec::new();
        let mut needs: HashMap<String, Governed> = HashMap::new();
        let policies = ctx.policies.snapshot();
        for info in ctx.observed.infos() {
            let Some(g) = governed(&ctx, &policies, &info) else {
                continue;
            };
            needs.insert(info.id.clone(), g);
            if info.state == ContainerState::Running {
                infos.push(info);
            } else {
                idle.push(info);
            }
        }
        let started = std::time::Instant::now();
        let usages = sampler
            .sample_with(&infos, &host, |c| {
                needs.get(&c.id).and_then(Governed::exact_memory_from)
            })
            .await;
        let took = started.elapsed();
        ctx.metrics.sample_pass(took.as_secs_f64());
        if took > ctx.config.sample_interval {
            warn!(
                ?took,
                containers = infos.len(),
                "a sampling pass took longer than the interval"
            );
        }
        let now = Utc::now();
        for info in &idle {
            publish_stats(&ctx, info, None, now).await;
        }
        let by_id: HashMap<&str, &ContainerInfo> =
            infos.iter().map(|i| (i.id.as_str(), i)).collect();
        for (id, usage) in &usages {
            if let Some(info) = by_id.get(id.as_str()) {
                publish_stats(&ctx, info, Some(usage), now).await;
            }
        }
        let on_record: HashSet<String> = ctx
            .handled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for (id, usage) in usages {
            let Some(g) = needs.get(&id) else { continue };
            ctx.observed.push_usage_keeping(
                &id,
                UsagePoint {
                    at: now,
                    cpu_percent: usage.cpu_percent,
                    memory_percent: usage.memory_percent,
                    memory_used_bytes: usage.memory_used_bytes,
                },
                g.keep,
            );
            if g.worth_a_look(&usage) || (g.reads_usage() && on_record.contains(&id)) {
                ctx.queue.schedule_now(id);
            }
        }
    }
}

/// Writes the stats key and the original monitor's state key of one container.
async fn publish_stats(
    ctx: &Context,
    info: &ContainerInfo,
    usage: Option<&crate::model::usage::Usage>,
    now: chrono::DateTime<Utc>,
) {
    let node = &ctx.config.node;
    let stats = ContainerStats::of(info, usage, now, node).to_json();
    ctx.sink.put_stats(&info.name, node, stats).await;
    ctx.sink
        .put_state(&ContainerStateKey::of(info, usage, now, node))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::usage::Usage;

    #[test]
    fn a_sample_is_worth_a_reconcile_only_when_a_usage_probe_could_fire() {
        let usage = |cpu, memory| Usage {
            cpu_percent: cpu,
            memory_percent: memory,
            memory_used_bytes: 0,
            memory_limit_bytes: 1,
        };
        let g = |cpu_above, memory_above, leak| Governed {
            keep: 60,
            cpu_above,
            memory_above,
            leak,
        };
        // (policy, sample, worth a look, reads usage)
        let cases = [
            (g(None, None, false), usage(99.0, 99.0), false, false),
            (g(Some(85.0), None, false), usage(85.0, 99.0), false, true),
            (g(Some(85.0), None, false), usage(85.1, 0.0), true, true),
            (g(None, Some(80.0), false), usage(99.0, 79.0), false, true),
            (g(None, Some(80.0), false), usage(0.0, 80.5), true, true),
            (g(None, None, true), usage(0.0, 0.0), true, true),
        ];
        for (i, (policy, sample, worth, reads)) in cases.into_iter().enumerate() {
            assert_eq!(policy.worth_a_look(&sample), worth, "case {i}");
            assert_eq!(policy.reads_usage(), reads, "case {i}");
        }
    }
}
