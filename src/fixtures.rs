//! Test fixtures: a controller `Context` over the fake engine and the in-memory store and sink,
//! with the fakes returned for assertions (controller-rs's `Context::test()`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::bus::EventSink;
use crate::bus::memory::MemorySink;
use crate::controller::queue::{WorkQueue, WorkReceiver};
use crate::controller::{Context, ControllerConfig};
use crate::engine::fake::FakeEngine;
use crate::model::wire::Envelope;
use crate::observe::acting::Acting;
use crate::policy::HealthPolicy;
use crate::policy::registry::PolicyRegistry;
use crate::respond::Responder;
use crate::store::memory::MemoryStore;

/// The node name every fixture uses.
pub const NODE: &str = "node-a";

/// Repairs at once in a fixture (its reconciles decide 4 at once).
pub const REPAIRS: usize = 4;
/// The built-in policy named `name` with `priority`.
pub fn ranked(name: &str, priority: i32) -> HealthPolicy {
    let mut p = crate::policy::builtin::default_policy();
    p.metadata.name = name.to_owned();
    p.spec.priority = priority;
    p
}

/// A successful restart of `web` on `n1`, recorded at `at` under decision `id`.
pub fn audit(id: &str, at: chrono::DateTime<chrono::Utc>) -> crate::model::audit::AuditRecord {
    crate::model::audit::AuditRecord {
        decision_id: id.into(),
        timestamp: at,
        node: "n1".into(),
        container: "web".into(),
        container_id: "abc".into(),
        policy: "default".into(),
        action: "restart".into(),
        status: "success".into(),
        reason: "exited".into(),
        details: String::new(),
        action_started_at: None,
        gate: None,
        analysis_method: None,
        root_cause: None,
        fallback_reason: None,
    }
}

/// A context and the fakes behind it.
pub struct TestContext {
    /// The context, as the loop gets it.
    pub ctx: Arc<Context>,
    /// The engine.
    pub engine: Arc<FakeEngine>,
    /// The state store.
    pub store: Arc<MemoryStore>,
    /// The sink.
    pub sink: Arc<MemorySink>,
    /// The work queue's receiving side, for a test that runs the loop itself
    /// ([`crate::controller::driver::reconcile_all`]).
    pub receiver: Option<WorkReceiver<String>>,
}

/// A policy named `name` selecting `role=target`, with `spec_body` (YAML indented 2 under `spec:`).
pub fn policy(name: &str, spec_body: &str) -> HealthPolicy {
    let yaml = format!(
        "apiVersion: hemostat.io/v1alpha1\nkind: HealthPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{role: target}}\n{spec_body}"
    );
    let report = crate::policy::load::load_str("fixture.yaml", &yaml);
    assert!(report.is_clean(), "fixture policy invalid: {report:?}");
    report.by_name().remove(name).expect("fixture policy")
}

impl TestContext {
    /// A context governed by `policies`, with no operator-wide dry run.
    pub fn new(policies: Vec<HealthPolicy>) -> Self {
        Self::with(policies, false, None)
    }

    /// A context with the operator-wide dry run and HemoStat's own container id set.
    pub fn with(policies: Vec<HealthPolicy>, dry_run: bool, own: Option<String>) -> Self {
        Self::build(policies, dry_run, own, None)
    }

    /// A context governed by `policies` whose `analysis.mode: ai` asks `ai`.
    pub fn with_ai(policies: Vec<HealthPolicy>, ai: Arc<crate::analyze::llm::AiAnalyzer>) -> Self {
        Self::build(policies, false, None, Some(ai))
    }

    fn build(
        policies: Vec<HealthPolicy>,
        dry_run: bool,
        own: Option<String>,
        ai: Option<Arc<crate::analyze::llm::AiAnalyzer>>,
    ) -> Self {
        let engine = Arc::new(FakeEngine::default());
        let store = Arc::new(MemoryStore::ephemeral());
        let sink = Arc::new(MemorySink::default());
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let acting = Arc::new(Acting::default());
        let (queue, receiver) = WorkQueue::new();
        let ctx = Arc::new(Context {
            docker: engine.clone(),
            store: store.clone(),
            sink: sink.clone(),
            policies: Arc::new(PolicyRegistry::new(policies)),
            observed: Default::default(),
            responder: Responder {
                docker: engine.clone(),
                store: store.clone(),
                sink: sink.clone(),
                acting: acting.clone(),
                node: NODE.to_owned(),
                engine_id: "fake-engine".to_owned(),
                owner: format!("{NODE}/test"),
                own_container_id: own,
                global_dry_run: dry_run,
                metrics: metrics.clone(),
                action_started: Default::default(),
                repairs: tokio::sync::Semaphore::new(REPAIRS),
            },
            acting,
            queue,
            ready: Arc::new(AtomicBool::new(true)),
            config: ControllerConfig {
                node: NODE.to_owned(),
                resync: Duration::from_secs(30),
                sample_interval: Duration::from_secs(5),
                max_concurrent: 4,
                label_filter: None,
            },
            handled: Default::default(),
            metrics,
            own_decisions: Default::default(),
            ai,
        });
        Self {
            ctx,
            engine,
            store,
            sink,
            receiver: Some(receiver),
        }
    }

    /// Every envelope published so far, oldest first.
    pub async fn envelopes(&self) -> Vec<Envelope> {
        self.sink.recent(None, usize::MAX).await
    }
}
