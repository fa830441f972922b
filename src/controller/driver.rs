//! Starts the loop's tasks (watcher, sampler, runner) and stops them on one shutdown signal.

use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::queue::{WorkReceiver, run_with_slots};
use super::reconcile::reconcile_in;
use super::{Action, Context, error_policy};
use crate::model::container::HostInfo;
use crate::observe::sampler::CgroupReader;

/// Runs the controller until `shutdown` is cancelled; returns when every task has stopped.
pub(crate) async fn run_controller(
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
    reconcile_all(ctx, receiver, shutdown).await;
    let _ = watcher.await;
    let _ = sampler.await;
}

/// Drains the work queue: reconciles each container as it comes due, at most
/// `max_concurrent` deciding at once (a repair gives its place back once gated, see
/// [`reconcile_in`]), and requeues it as the reconcile says. Returns after `shutdown`, once
/// every run in flight has ended.
pub(crate) async fn reconcile_all(
    ctx: Arc<Context>,
    receiver: WorkReceiver<String>,
    shutdown: CancellationToken,
) {
    let max = ctx.config.max_concurrent;
    run_with_slots(receiver, max, shutdown, move |id: String, mut slot| {
        let ctx = ctx.clone();
        let span = tracing::info_span!("reconcile", container_id = %short(&id));
        async move {
            let _timer = ctx.metrics.reconcile_timer();
            let _running = ctx.metrics.running();
            let outcome = guarded(&id, &ctx.metrics, reconcile_in(&id, &ctx, &mut slot)).await;
            let action = match outcome {
                Err(retry) => retry,
                Ok(Ok(action)) => {
                    if let Some(h) = ctx
                        .handled
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get_mut(&id)
                    {
                        h.failures = 0;
                    }
                    action
                }
                Ok(Err(e)) => {
                    ctx.metrics.reconcile_error(e.metric_label());
                    let failures = {
                        let mut handled = ctx
                            .handled
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
}

/// How long a container whose reconcile panicked waits before the next try.
const AFTER_PANIC: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs one reconcile so that a panic in it stops nothing else: it is caught, logged, counted
/// (`hemostat_reconcile_errors_total{error="panic"}`) and the container retried later. The
/// locks it may have held recover from poisoning, so other containers go on being repaired.
async fn guarded<T>(
    id: &str,
    metrics: &crate::metrics::Metrics,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Action> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            metrics.reconcile_error("panic");
            tracing::error!(
                container_id = %short(id),
                panic = %what,
                retry_in_secs = AFTER_PANIC.as_secs(),
                "reconcile panicked (a bug: please report it); other containers are unaffected"
            );
            Action::Requeue(AFTER_PANIC)
        })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_is_caught_counted_and_retried() {
        let metrics = crate::metrics::Metrics::new();
        let caught = guarded("c1", &metrics, async { panic!("boom") }).await;
        assert!(matches!(caught, Err(Action::Requeue(d)) if d == AFTER_PANIC));
        let fine = guarded("c2", &metrics, async { 7 }).await;
        assert!(matches!(fine, Ok(7)));
        assert!(
            metrics
                .encode()
                .contains(r#"hemostat_reconcile_errors_total{error="panic"} 1"#),
            "{}",
            metrics.encode()
        );
    }
}
