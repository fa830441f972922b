//! Starts the loop's tasks (watcher, sampler, runner) and stops them on one shutdown signal.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::queue::{WorkReceiver, run};
use super::{Action, Context, error_policy, reconcile};
use crate::docker::HostInfo;
use crate::observe::sampler::CgroupReader;

/// Runs the controller until `shutdown` is cancelled; returns when every task has stopped.
pub async fn run_controller(
    ctx: Arc<Context>,
    receiver: WorkReceiver<String>,
    host: HostInfo,
    cgroups: Option<CgroupReader>,
    shutdown: CancellationToken,
) {
    let watcher = tokio::spawn(
        super::watch::run_watcher(ctx.clone(), shutdown.clone())
            .instrument(tracing::info_span!("watcher")),
    );
    let sampler = tokio::spawn(
        super::sample::run_sampler(ctx.clone(), host, cgroups, shutdown.clone())
            .instrument(tracing::info_span!("sampler")),
    );
    let max = ctx.config.max_concurrent;
    let work_ctx = ctx.clone();
    run(receiver, max, shutdown.clone(), move |id: String| {
        let ctx = work_ctx.clone();
        let span = tracing::info_span!("reconcile", container_id = %short(&id));
        async move {
            let _timer = ctx.metrics.reconcile_timer();
            let _running = ctx.metrics.running();
            let action = match reconcile(&id, &ctx).await {
                Ok(action) => {
                    if let Some(h) = ctx.handled.lock().expect("handled lock").get_mut(&id) {
                        h.failures = 0;
                    }
                    action
                }
                Err(e) => {
                    ctx.metrics.reconcile_error(e.metric_label());
                    let failures = {
                        let mut handled = ctx.handled.lock().expect("handled lock");
                        let h = handled.entry(id.clone()).or_default();
                        h.failures += 1;
                        h.failures
                    };
                    error_policy(&e, failures - 1)
                }
            };
            ctx.metrics.set_queue_depth(ctx.queue.len());
            if let Action::Requeue(after) = action {
                ctx.queue.schedule_after(id, after);
            }
        }
        .instrument(span)
    })
    .await;
    let _ = watcher.await;
    let _ = sampler.await;
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
