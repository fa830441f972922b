//! The sampling task: resource usage of every governed running container every interval, and `hemostat:stats:<container>` for every governed one.

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

/// Whether a policy governs the container, and whether that policy reads resource usage.
fn governed(ctx: &Context, info: &ContainerInfo) -> Option<bool> {
    ctx.policies.governing(Target::from(info)).map(|p| {
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
        // Every governed container is sampled (the dashboard and `hemostat:stats:*` show them
        // all); only those whose policy reads usage are reconciled on a new sample.
        let mut infos: Vec<ContainerInfo> = Vec::new();
        let mut reconcile_on_sample = std::collections::HashSet::new();
        let mut idle: Vec<ContainerInfo> = Vec::new();
        for info in ctx.observed.all().into_iter().map(|o| o.info) {
            let Some(reads_usage) = governed(&ctx, &info) else {
                continue;
            };
            if reads_usage {
                reconcile_on_sample.insert(info.id.clone());
            }
            if info.state == crate::model::container::ContainerState::Running {
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
            // Not running: its status, and the nothing it uses (numbers, as the original's
            // readers expect).
            let stats = ContainerStats {
                name: info.name.clone(),
                status: info.state,
                memory_pct: 0.0,
                cpu_pct: 0.0,
                timestamp: wire_timestamp_secs(now),
                node: ctx.config.node.clone(),
            }
            .to_json();
            ctx.sink
                .put_stats(&info.name, &ctx.config.node, stats)
                .await;
        }
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
            if reconcile_on_sample.contains(&id) {
                ctx.queue.schedule_now(id);
            }
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
