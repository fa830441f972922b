//! Settles the actions a dead operator process left pending: marked interrupted in the safety
//! state and written to the audit trail, so every action on record is audited once.

use chrono::Utc;
use tracing::warn;

use super::Request;
use super::claim::{Claim, ClaimRequest};
use super::responder::Responder;
use crate::model::audit::AuditRecord;
use crate::model::safety::{ActionRecord, Outcome, lock_key};

/// How long the lock taken to settle lives if this process dies meanwhile.
const SETTLE_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// What the audit says about an interrupted action.
pub(crate) const INTERRUPTED_DETAILS: &str = "interrupted: the operator process that started this \
     action stopped (killed or crashed) before its outcome was known; the engine may or may \
     not have carried it out. It still counts for the cooldown and maxActions";

impl Responder {
    /// When the container's state under `key` has pending actions and this process can take
    /// the container's in-flight lock, no live process is carrying them out: marks them
    /// interrupted and audits each. Runs before the attempt is noted, which would take a
    /// pending action answering the same failure for a failed one and leave it unaudited.
    pub(super) async fn settle_interrupted(&self, req: Request<'_>, key: &str) {
        let pending = match self.store.safety(key).await {
            Ok(safety) => safety.actions.iter().any(|a| a.outcome == Outcome::Pending),
            Err(_) => false,
        };
        if !pending {
            return;
        }
        let lock = lock_key(&self.engine_id, &req.info.id);
        let request = ClaimRequest {
            id: &req.info.id,
            key: &lock,
            owner: &self.owner,
            ttl: SETTLE_LOCK_TTL,
            budget: None,
        };
        // Held elsewhere (or by this process): someone may still be acting; settle later.
        let Ok(claim) = Claim::take(&self.acting, &self.store, request).await else {
            return;
        };
        let mut settled = Vec::new();
        let after = self
            .store
            .update_safety(key, &mut |s| settled = s.interrupt_pending())
            .await;
        claim.abandon().await;
        if let Err(e) = after {
            warn!(container = %req.info.name, error = %e, "could not settle interrupted actions");
            return;
        }
        for action in settled {
            warn!(container = %req.info.name, action = %action.action, decision_id = %action.decision_id, "{INTERRUPTED_DETAILS}");
            let record = self.interrupted_record(req, action);
            if let Err(e) = self.store.append_audit(record).await {
                warn!(error = %e, "could not append to the audit trail");
            }
        }
    }

    fn interrupted_record(&self, req: Request<'_>, action: ActionRecord) -> AuditRecord {
        AuditRecord {
            decision_id: action.decision_id,
            timestamp: Utc::now(),
            node: self.node.clone(),
            container: req.info.name.clone(),
            container_id: req.info.id.clone(),
            policy: req.policy.metadata.name.clone(),
            action: action.action.as_str().to_owned(),
            status: "interrupted".to_owned(),
            reason: action.finding,
            details: INTERRUPTED_DETAILS.to_owned(),
            action_started_at: Some(action.at),
            gate: None,
            analysis_method: None,
            root_cause: None,
            fallback_reason: None,
        }
    }
}
