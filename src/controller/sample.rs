//! The sampling task: resource usage of every governed running container every interval, and the stats and state keys of every governed container.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Context;
use crate::analyze::UsagePoint;
use crate::engine::{ContainerEngine, ContainerInfo, ContainerState, HostInfo};
use crate::model::wire::{ContainerStateKey, ContainerStats};
use crate::observe::sampler::{CgroupReader, Sampler};
use crate::policy::select::Target;

/// Whether a policy governs the container, and whether that policy has a probe that reads
/// resource usage.
fn governed(ctx: &Context, info: &ContainerInfo) -> Option<bool> {
    ctx.policies.governing(Target::from(info)).map(|p| {
        let probes = &p.spec.probes;
        probes.cpu.is_some() || probes.memory.is_some() || probes.memory_leak.is_some()
    })
}

/// Samples until `shutdown`. Every governed container gets its stats and state keys (the
/// original's dashboard shows them all): running ones sampled, the others with zero figures;
/// a new sample schedules a reconcile only when the policy reads usage.
pub async fn run_sampler(
    ctx: Arc<Context>,
    host: HostInfo,
    cgroups: Option<CgroupReader>,
    shutdown: CancellationToken,
) {
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
        let mut reads_usage = std::collections::HashSet::new();
        for info in ctx.observed.all().into_iter().map(|o| o.info) {
            let Some(reads) = governed(&ctx, &info) else {
                continue;
            };
            if reads {
                reads_usage.insert(info.id.clone());
            }
            if info.state == ContainerState::Running {
                infos.push(info);
            } else {
                idle.push(info);
            }
        }
        let started = std::time::Instant::now();
        let usages = sampler.sample(&infos, &host).await;
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
        for (id, usage) in &usages {
            if let Some(o) = ctx.observed.get(id) {
                publish_stats(&ctx, &o.info, Some(usage), now).await;
            }
        }
        for (id, usage) in usages {
            ctx.observed.push_usage(
                &id,
                UsagePoint {
                    at: now,
                    cpu_percent: usage.cpu_percent,
                    memory_percent: usage.memory_percent,
                    memory_used_bytes: usage.memory_used_bytes,
                },
            );
            if reads_usage.contains(&id) {
                ctx.queue.schedule_now(id);
            }
        }
    }
}

/// Writes the stats key and the original monitor's state key of one container.
async fn publish_stats(
    ctx: &Context,
    info: &ContainerInfo,
    usage: Option<&crate::observe::sampler::Usage>,
    now: chrono::DateTime<Utc>,
) {
    let node = &ctx.config.node;
    let stats = ContainerStats::of(info, usage, now, node).to_json();
    ctx.sink.put_stats(&info.name, node, stats).await;
    ctx.sink
        .put_state(&ContainerStateKey::of(info, usage, now, node))
        .await;
}
