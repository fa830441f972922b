//! The watcher: list every container, then follow the engine's events; on any break, back off
//! and list again; list again periodically anyway, because the engine drops events under load.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Context;
use crate::model::container::{ContainerEvent, EventAction};
use crate::util::backoff::Backoff;

/// True when the event concerns a container the operator observes.
fn event_in_scope(ctx: &Context, event: &ContainerEvent) -> bool {
    ctx.config.in_scope(&event.labels)
}

/// Lists every container (one call, no inspection), compares the list with the last
/// inspections and schedules a reconcile (which inspects) of each container that is new,
/// changed, gone, or not inspected for [`super::ControllerConfig::reinspect`].
pub async fn relist(ctx: &Context) -> Result<usize, crate::engine::EngineError> {
    let mut list = ctx
        .docker
        .list_summaries(ctx.config.label_filter.as_deref())
        .await?;
    list.retain(|c| ctx.config.in_scope(&c.labels));
    let due = ctx
        .observed
        .diff_list(&list, Utc::now(), ctx.config.reinspect());
    debug!(listed = list.len(), due = due.len(), "resync");
    for id in due {
        ctx.queue.schedule_now(id);
    }
    Ok(list.len())
}

pub(super) async fn handle_event(ctx: &Context, event: ContainerEvent) {
    debug!(container = %event.name, action = ?event.action, "docker event");
    ctx.metrics.docker_event(&event_label(&event.action));
    // What the event says beyond an inspection is recorded before the inspection replaces
    // the container's last known state (a start after a previous life is a restart).
    ctx.observed.apply_event(&event, &ctx.acting);
    if event.action == EventAction::Destroy {
        ctx.observed.remove(&event.container_id);
    }
    // The reconcile inspects the container itself: the event loop never waits on the engine,
    // so a burst of events is read as fast as it comes.
    ctx.queue.schedule_now(event.container_id);
}

fn event_label(action: &EventAction) -> String {
    match action {
        EventAction::HealthStatus(h) => format!(
            "health_status_{}",
            serde_json::to_value(h)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        EventAction::Other(_) => "other".to_owned(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// Runs until `shutdown`: list, then events, resync every `config.resync`, reconnect with a
/// backoff capped at `config.resync`.
pub async fn run_watcher(ctx: Arc<Context>, shutdown: CancellationToken) {
    // Never asleep longer than a resync interval: a crash while the engine was unreachable is
    // repaired within one interval of its return (tests/fault_event_stream_cut.rs).
    let mut backoff = Backoff::at_most(ctx.config.resync);
    loop {
        let since = Utc::now() - chrono::Duration::seconds(1);
        match relist(&ctx).await {
            Ok(n) => {
                if !ctx.ready.swap(true, Ordering::SeqCst) {
                    info!(
                        containers = n,
                        "full container list done, event stream open: ready"
                    );
                }
            }
            Err(e) => {
                not_ready(&ctx, "the engine cannot list containers");
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "listing containers failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        }
        let mut events = ctx.docker.events(Some(since));
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + ctx.config.resync,
            ctx.config.resync,
        );
        let connected = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = resync.tick() => {
                    if let Err(e) = relist(&ctx).await {
                        not_ready(&ctx, "the engine cannot list containers");
                        warn!(error = %e, "periodic resync failed");
                        break;
                    }
                }
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        if event_in_scope(&ctx, &event) {
                            handle_event(&ctx, event).await;
                        }
                    }
                    Some(Err(e)) => {
                        not_ready(&ctx, "the engine's event stream broke");
                        warn!(error = %e, "event stream broke; listing again");
                        break;
                    }
                    None => {
                        not_ready(&ctx, "the engine's event stream ended");
                        warn!("event stream ended; listing again");
                        break;
                    }
                },
            }
        }
        if connected.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        ctx.metrics.watch_restart();
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Repairs cannot run on time without a live list and event stream: `/readyz` says so until
/// both are back.
fn not_ready(ctx: &Context, why: &str) {
    if ctx.ready.swap(false, Ordering::SeqCst) {
        warn!(
            reason = why,
            "not ready: repairs wait until the engine answers again"
        );
    }
}

/// Schedules every observed container when the policies in force change (a file reload or an
/// apply through Redis), so a new policy is enforced within a second, not at the next resync.
pub async fn requeue_on_policy_change(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut changed = ctx.policies.changed();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
        info!(
            policies = ctx.policies.snapshot().len(),
            "policies changed: reconciling every container"
        );
        for o in ctx.observed.all() {
            ctx.queue.schedule_now(o.info.id);
        }
    }
}
