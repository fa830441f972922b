//! The sampling task: resource usage of governed running containers every interval.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Context;
use crate::analyze::UsagePoint;
use crate::engine::{ContainerEngine, ContainerInfo, HostInfo};
use crate::model::wire::{ContainerStats, round1, wire_timestamp_secs};
use crate::observe::sampler::{CgroupReader, Sampler};
use crate::policy::select::Target;

/// True when the container's policy has a probe that reads resource usage.
fn needs_samples(ctx: &Context, info: &ContainerInfo) -> bool {
    ctx.policies.governing(Target::from(info)).is_some_and(|p| {
        let probes = &p.spec.probes;
        probes.cpu.is_some() || probes.memory.is_some() || probes.memory_leak.is_some()
    })
}

/// Samples until `shutdown`; each container with a new sample is scheduled for a reconcile.
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
        let infos: Vec<ContainerInfo> = ctx
            .observed
            .all()
            .into_iter()
            .map(|o| o.info)
            .filter(|info| needs_samples(&ctx, info))
            .collect();
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
        for (id, usage) in &usages {
            if let Some(o) = ctx.observed.get(id) {
                let stats = stats_json(&o.info, usage, now, &ctx.config.node);
                ctx.sink
                    .put_stats(&o.info.name, &ctx.config.node, stats)
                    .await;
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
            ctx.queue.schedule_now(id);
        }
    }
}

/// The original's stats key value: `{name, status, memory_pct, cpu_pct, timestamp, node}`.
pub(crate) fn stats_json(
    info: &ContainerInfo,
    usage: &crate::observe::sampler::Usage,
    now: chrono::DateTime<Utc>,
    node: &str,
) -> serde_json::Value {
    ContainerStats {
        name: info.name.clone(),
        status: info.state,
        memory_pct: round1(usage.memory_percent),
        cpu_pct: round1(usage.cpu_percent),
        timestamp: wire_timestamp_secs(now),
        node: node.to_owned(),
    }
    .to_json()
}
