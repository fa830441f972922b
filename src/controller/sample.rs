//! The sampling task: resource usage of every governed running container every interval, and `hemostat:stats:<container>` for every governed one.

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Context;
use crate::analyze::UsagePoint;
use crate::docker::{ContainerInfo, DockerApi, HostInfo};
use crate::observe::sampler::{CgroupReader, Sampler};
use crate::policy::select::Target;

/// Whether a policy governs the container, and whether that policy reads resource usage.
fn governed(ctx: &Context, info: &ContainerInfo) -> Option<bool> {
    let target = Target {
        name: &info.name,
        image: &info.image,
        labels: &info.labels,
    };
    ctx.policies.governing(target).map(|p| {
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
    let docker: Arc<dyn DockerApi> = ctx.docker.clone();
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
            if info.state == crate::docker::ContainerState::Running {
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
            let stats = serde_json::json!({
                "name": info.name,
                "status": info.state,
                "memory_pct": 0.0,
                "cpu_pct": 0.0,
                "timestamp": crate::bus::envelope::wire_timestamp_secs(now),
                "node": ctx.config.node,
            });
            ctx.sink
                .put_stats(&info.name, &ctx.config.node, stats)
                .await;
        }
        for (id, usage) in &usages {
            if let Some(o) = ctx.observed.get(id) {
                let stats = serde_json::json!({
                    "name": o.info.name,
                    "status": o.info.state,
                    "memory_pct": (usage.memory_percent * 10.0).round() / 10.0,
                    "cpu_pct": (usage.cpu_percent * 10.0).round() / 10.0,
                    "timestamp": crate::bus::envelope::wire_timestamp_secs(now),
                    "node": ctx.config.node,
                });
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
