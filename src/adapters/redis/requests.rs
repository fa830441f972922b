//! The subscriber of `hemostat:remediation_needed` (`--accept-external-requests`): every
//! message is handed, as received, to a [`RequestHandler`] (the controller's validation).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use futures::StreamExt;

use super::conn::{Target, subscribe_with_backoff};
use crate::model::wire::EventType;
use crate::util::backoff::Backoff;

/// Takes one raw message at a time; the next is read only when it returns.
#[async_trait::async_trait]
pub(crate) trait RequestHandler: Send {
    /// Handles one message's payload (untrusted bytes).
    async fn handle(&mut self, payload: &[u8]);
}

/// Subscribes and hands every message to `handler` until `shutdown`; reconnects with the one
/// backoff (up to 30 s) when Redis goes away.
pub(crate) async fn run_subscriber(
    client: impl Into<Target>,
    mut handler: impl RequestHandler,
    shutdown: CancellationToken,
) {
    let target: Target = client.into();
    let channel = EventType::RemediationNeeded.channel();
    let mut backoff = Backoff::default();
    loop {
        let Some((mut messages, ())) = subscribe_with_backoff(
            &target,
            &channel,
            "cannot subscribe to external remediation requests",
            &mut backoff,
            &shutdown,
            || async { Ok(()) },
        )
        .await
        else {
            return;
        };
        info!(channel = %channel, "accepting external remediation requests");
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => return,
                msg = messages.next() => msg,
            };
            let Some(msg) = msg else {
                warn!("lost the subscription to external remediation requests; reconnecting");
                break;
            };
            let handled = handler.handle(msg.get_payload_bytes());
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = handled => {}
            }
        }
    }
}
