//! Asks the model about one decision, off everyone else's path: bounded concurrency, a
//! per-provider circuit breaker, and a cache keyed by the failure's signature.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::client::{LlmClient, LlmError, LlmRequest};
use super::prompt::{Facts, build};
use super::verdict::{Rejection, accept, fall_back, parse, rules_verdict, use_answer};
use crate::model::decision::{AiReview, Decision, ModelAnswer};
use crate::policy::HealthPolicy;

/// Where the analyzer reports what the model cost (implemented by `crate::metrics::Metrics`).
pub(crate) trait AiMetrics: Send + Sync + 'static {
    /// One outcome: `ok`, `cached`, `busy`, `circuit_open`, an error or a refusal label;
    /// `latency` when the model was actually asked.
    fn ai_request(&self, provider: &str, result: &str, latency: Option<Duration>);
    /// Tokens billed, `kind` = `input` or `output`.
    fn ai_tokens(&self, provider: &str, kind: &str, n: u64);
}

/// Limits of the analyzer, for the whole operator.
#[derive(Clone, Debug)]
pub(crate) struct AiLimits {
    /// Model requests in flight at once; beyond it the rules decide at once.
    pub max_concurrent: usize,
    /// Consecutive failed requests that open the provider's breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open (the rules decide meanwhile).
    pub breaker_open_for: Duration,
    /// How long an answer is reused for the same failure.
    pub cache_ttl: Duration,
    /// Answers kept.
    pub cache_capacity: usize,
}

impl Default for AiLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            breaker_failures: 3,
            breaker_open_for: Duration::from_secs(60),
            cache_ttl: Duration::from_secs(3600),
            cache_capacity: 1024,
        }
    }
}

/// Consecutive failures of one provider; pure (the clock is passed in).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `Some(until)` while open.
    pub(crate) fn open_until(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|t| *t > now)
    }

    /// A request failed; opens after `threshold` in a row.
    pub(crate) fn failure(&mut self, now: Instant, threshold: u32, open_for: Duration) {
        self.failures += 1;
        if self.failures >= threshold {
            self.open_until = Some(now + open_for);
            self.failures = 0;
        }
    }

    /// A request got an answer: closes.
    pub(crate) fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }
}

type Cached = (Instant, Result<ModelAnswer, Rejection>);

/// The LLM analyzer: the rules' decision in, the decision to carry out out. Never worse than
/// the rules: anything but a valid, allowed, confident answer is the rules' decision.
pub(crate) struct AiAnalyzer {
    client: Arc<dyn LlmClient>,
    metrics: Arc<dyn AiMetrics>,
    limits: AiLimits,
    slots: Semaphore,
    /// std mutexes: never held across an await.
    breaker: Mutex<Breaker>,
    cache: Mutex<HashMap<String, Cached>>,
}

impl AiAnalyzer {
    /// An analyzer asking `client`.
    pub(crate) fn new(
        client: Arc<dyn LlmClient>,
        metrics: Arc<dyn AiMetrics>,
        limits: AiLimits,
    ) -> Self {
        Self {
            slots: Semaphore::new(limits.max_concurrent.max(1)),
            client,
            metrics,
            limits,
            breaker: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    fn review_of(&self, rules: &Decision) -> AiReview {
        AiReview {
            provider: self.client.provider().to_owned(),
            model: self.client.model().to_owned(),
            rules: rules_verdict(rules),
            answer: None,
            fallback_reason: None,
            cached: false,
            latency_ms: 0,
        }
    }

    /// Reviews the rules' decision with the model. `signature` names the failure (the same
    /// crash again is the same signature: asked once); `facts` is awaited only when the model
    /// is really asked.
    pub(crate) async fn review<F>(
        &self,
        policy: &HealthPolicy,
        rules: Decision,
        signature: &str,
        facts: F,
    ) -> Decision
    where
        F: Future<Output = Facts>,
    {
        let provider = self.client.provider();
        let mut review = self.review_of(&rules);
        if let Some(parsed) = self.cached(signature) {
            review.cached = true;
            self.metrics.ai_request(provider, "cached", None);
            return self.conclude(policy, rules, review, parsed, false);
        }
        if let Some(why) = self.not_now() {
            return fall_back(rules, review, why);
        }
        let Ok(_permit) = self.slots.try_acquire() else {
            self.metrics.ai_request(provider, "busy", None);
            let why = format!(
                "{} model requests already in flight; not waiting",
                self.limits.max_concurrent
            );
            return fall_back(rules, review, why);
        };
        let timeout = policy.spec.analysis.timeout.get();
        let started = Instant::now();
        let asked = tokio::time::timeout(timeout, async {
            let prompt = build(policy, &facts.await);
            let request = LlmRequest {
                system: prompt.system,
                user: prompt.user,
                schema: prompt.schema,
                timeout,
            };
            self.client.complete(&request).await
        })
        .await
        .unwrap_or(Err(LlmError::Timeout(timeout)));
        let latency = started.elapsed();
        review.latency_ms = latency.as_millis() as u64;
        let mut breaker = self.breaker.lock().expect("ai breaker lock");
        match asked {
            Err(e) => {
                let limits = &self.limits;
                breaker.failure(
                    Instant::now(),
                    limits.breaker_failures,
                    limits.breaker_open_for,
                );
                drop(breaker);
                self.metrics.ai_request(provider, e.label(), Some(latency));
                warn!(provider, error = %e, "AI analysis failed: the rules decide");
                fall_back(rules, review, e.to_string())
            }
            Ok(reply) => {
                breaker.success();
                drop(breaker);
                self.metrics
                    .ai_tokens(provider, "input", reply.input_tokens);
                self.metrics
                    .ai_tokens(provider, "output", reply.output_tokens);
                let parsed = parse(&reply.content);
                self.remember(signature, &parsed);
                debug!(provider, valid = parsed.is_ok(), "the model answered");
                self.conclude(policy, rules, review, parsed, true)
            }
        }
    }

    /// The answer to the same failure, when it was asked within the cache's TTL.
    fn cached(&self, signature: &str) -> Option<Result<ModelAnswer, Rejection>> {
        let mut cache = self.cache.lock().expect("ai cache lock");
        let ttl = self.limits.cache_ttl;
        cache.retain(|_, (at, _)| at.elapsed() < ttl);
        cache.get(signature).map(|(_, a)| a.clone())
    }

    /// Keeps an answer for its failure signature (dropping the oldest beyond the capacity).
    fn remember(&self, signature: &str, parsed: &Result<ModelAnswer, Rejection>) {
        let mut cache = self.cache.lock().expect("ai cache lock");
        if cache.len() >= self.limits.cache_capacity
            && let Some(oldest) = cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            cache.remove(&oldest);
        }
        cache.insert(signature.to_owned(), (Instant::now(), parsed.clone()));
    }

    /// Why the provider is not asked now: its breaker is open.
    fn not_now(&self) -> Option<String> {
        let now = Instant::now();
        let until = self
            .breaker
            .lock()
            .expect("ai breaker lock")
            .open_until(now)?;
        let provider = self.client.provider();
        self.metrics.ai_request(provider, "circuit_open", None);
        let secs = until.saturating_duration_since(now).as_secs() + 1;
        Some(format!(
            "the {provider} API failed repeatedly; not asked for another {secs}s"
        ))
    }

    /// Checks a (fresh or cached) answer against the policy and decides.
    fn conclude(
        &self,
        policy: &HealthPolicy,
        rules: Decision,
        mut review: AiReview,
        parsed: Result<ModelAnswer, Rejection>,
        fresh: bool,
    ) -> Decision {
        let provider = self.client.provider();
        let latency = Some(Duration::from_millis(review.latency_ms));
        let outcome = parsed.and_then(|answer| {
            let checked = accept(policy, &answer);
            review.answer = Some(answer);
            checked
        });
        match outcome {
            Ok(action) => {
                if fresh {
                    self.metrics.ai_request(provider, "ok", latency);
                }
                use_answer(rules, action, review)
            }
            Err(why) => {
                if fresh {
                    self.metrics.ai_request(provider, why.label(), latency);
                }
                warn!(provider, reason = %why, "the model's answer is not used: the rules decide");
                fall_back(rules, review, why.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::analyze::llm::client::LlmReply;
    use crate::model::container::{ContainerInfo, ContainerState, HealthStatus, ResourceLimits};
    use crate::model::decision::{ActionKind, AnalysisMethod, Verdict};
    use crate::policy::{AnalysisMode, builtin::default_policy};

    struct Scripted {
        calls: AtomicUsize,
        answer: &'static str,
        delay: Duration,
    }

    #[async_trait::async_trait]
    impl LlmClient for Scripted {
        fn provider(&self) -> &'static str {
            "openai"
        }
        fn model(&self) -> &str {
            "m"
        }
        async fn complete(&self, _req: &LlmRequest) -> Result<LlmReply, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(LlmReply {
                content: self.answer.into(),
                input_tokens: 1,
                output_tokens: 1,
            })
        }
    }

    #[derive(Default)]
    struct Counted(Mutex<Vec<String>>);

    impl AiMetrics for Counted {
        fn ai_request(&self, _provider: &str, result: &str, _latency: Option<Duration>) {
            self.0.lock().unwrap().push(result.to_owned());
        }
        fn ai_tokens(&self, _provider: &str, _kind: &str, _n: u64) {}
    }

    fn rules() -> Decision {
        Decision {
            action: Some(ActionKind::Restart),
            reason: "Exited with code 1".into(),
            confidence: 0.9,
            method: AnalysisMethod::Rules,
            findings: vec![],
            primary: Some("exited".into()),
            ai: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            container: ContainerInfo {
                id: "id".into(),
                name: "c".into(),
                image: "i".into(),
                labels: Default::default(),
                state: ContainerState::Exited,
                exit_code: Some(1),
                oom_killed: false,
                health: HealthStatus::None,
                health_failing_streak: 0,
                restart_count: 0,
                health_output: None,
                started_at: None,
                finished_at: None,
                limits: ResourceLimits::default(),
                pid: None,
            },
            findings: vec![],
            rules: Verdict {
                action: Some(ActionKind::Restart),
                reason: "r".into(),
                confidence: 0.9,
            },
            usage: vec![],
            restarts: vec![],
            repairs: vec![],
            health_log: vec![],
            logs: vec![],
            now: chrono::Utc::now(),
        }
    }

    fn analyzer(
        answer: &'static str,
        delay: Duration,
    ) -> (AiAnalyzer, Arc<Scripted>, Arc<Counted>) {
        let client = Arc::new(Scripted {
            calls: AtomicUsize::new(0),
            answer,
            delay,
        });
        let metrics = Arc::new(Counted::default());
        let a = AiAnalyzer::new(client.clone(), metrics.clone(), AiLimits::default());
        (a, client, metrics)
    }

    const NONE: &str =
        r#"{"action": "none", "confidence": 0.9, "reason": "planned", "root_cause": "job done"}"#;

    #[tokio::test]
    async fn the_same_failure_asks_once_and_the_cached_answer_is_checked_against_todays_policy() {
        let (a, client, metrics) = analyzer(NONE, Duration::ZERO);
        let mut policy = default_policy();
        policy.spec.analysis.mode = AnalysisMode::Ai;
        let first = a.review(&policy, rules(), "sig", async { facts() }).await;
        assert_eq!((first.method, first.action), (AnalysisMethod::Ai, None));
        let again = a.review(&policy, rules(), "sig", async { facts() }).await;
        assert_eq!(again.method, AnalysisMethod::Ai);
        assert!(again.ai.as_ref().unwrap().cached);
        assert_eq!(client.calls.load(Ordering::SeqCst), 1);
        policy.spec.remediation.min_confidence = 0.95;
        let stricter = a.review(&policy, rules(), "sig", async { facts() }).await;
        assert_eq!(stricter.method, AnalysisMethod::RuleBasedFallback);
        assert_eq!(stricter.action, Some(ActionKind::Restart));
        assert_eq!(*metrics.0.lock().unwrap(), ["ok", "cached", "cached"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_slower_than_the_policys_timeout_leaves_the_rules_in_charge() {
        let (a, _, metrics) = analyzer(NONE, Duration::from_secs(30));
        let mut policy = default_policy();
        policy.spec.analysis.mode = AnalysisMode::Ai;
        let d = a.review(&policy, rules(), "sig", async { facts() }).await;
        assert_eq!(d.method, AnalysisMethod::RuleBasedFallback);
        assert_eq!(d.action, Some(ActionKind::Restart));
        assert!(d.fallback_reason().unwrap().contains("within 10s"), "{d:?}");
        assert_eq!(*metrics.0.lock().unwrap(), ["timeout"]);
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let now = Instant::now();
        let open_for = Duration::from_secs(60);
        let mut b = Breaker::default();
        b.failure(now, 3, open_for);
        b.failure(now, 3, open_for);
        assert_eq!(b.open_until(now), None);
        b.failure(now, 3, open_for);
        assert_eq!(b.open_until(now), Some(now + open_for));
        assert_eq!(
            b.open_until(now + open_for),
            None,
            "half-open after open_for"
        );
        b.success();
        b.failure(now, 3, open_for);
        assert_eq!(b.open_until(now), None, "a success resets the count");
    }
}
