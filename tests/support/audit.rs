//! An audit record for the store tests (`redis_bus`, `redis_fallback`). Included with
//! `#[path = "support/audit.rs"] mod audit;`.

use hemostat::store::AuditRecord;

/// A successful restart of `web` on `n1`, recorded now, with decision id `id`.
pub fn record(id: &str, details: &str) -> AuditRecord {
    AuditRecord {
        decision_id: id.to_owned(),
        timestamp: chrono::Utc::now(),
        node: "n1".into(),
        container: "web".into(),
        container_id: "abc".into(),
        policy: "default".into(),
        action: "restart".into(),
        status: "success".into(),
        reason: "exited".into(),
        details: details.to_owned(),
        action_started_at: None,
        gate: None,
    }
}
