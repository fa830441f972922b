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
use crate::analyze::{AiReview, Decision, ModelAnswer};
use crate::policy::HealthPolicy;

/// Where the analyzer reports what the model cost (implemented by `crate::metrics::Metrics`).
pub trait AiMetrics: Send + Sync + 'static {
    /// One outcome: `ok`, `cached`, `busy`, `circuit_open`, an error or a refusal label;
    /// `latency` when the model was actually asked.
    fn ai_request(&self, provider: &str, result: &str, latency: Option<Duration>);
    /// Tokens billed, `kind` = `input` or `output`.
    fn ai_tokens(&self, provider: &str, kind: &str, n: u64);
}

/// Limits of the analyzer, for the whole operator.
#[derive(Clone, Debug)]
pub struct AiLimits {
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
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `Some(until)` while open.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|t| *t > now)
    }

    /// A request failed; opens after `threshold` in a row.
    pub fn failure(&mut self, now: Instant, threshold: u32, open_for: Duration) {
        self.failures += 1;
        if self.failures >= threshold {
            self.open_until = Some(now + open_for);
            self.failures = 0;
        }
    }

    /// A request got an answer: closes.
    pub fn success(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }
}

type Cached = (Instant, Result<ModelAnswer, Rejection>);

/// The LLM analyzer: the rules' decision in, the decision to carry out out. Never worse than
/// the rules: anything but a valid, allowed, confident answer is the rules' decision.
pub struct AiAnalyzer {
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
    pub fn new(client: Arc<dyn LlmClient>, metrics: Arc<dyn AiMetrics>, limits: AiLimits) -> Self {
        Self {
            slots: Semaphore::new(limits.max_concurrent.max(1)),
            client,
            metrics,
            limits,
            breaker: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    /// `openai` or `anthropic`.
    pub fn provider(&self) -> &'static str {
        self.client.provider()
    }

    /// The model asked.
    pub fn model(&self) -> &str {
        self.client.model()
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
    pub async fn review<F>(
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
        let cached = {
            let mut cache = self.cache.lock().expect("ai cache lock");
            let ttl = self.limits.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            cache.get(signature).map(|(_, a)| a.clone())
        };
        if let Some(parsed) = cached {
            review.cached = true;
            self.metrics.ai_request(provider, "cached", None);
            return self.conclude(policy, rules, review, parsed, false);
        }
        if let Some(until) = self
            .breaker
            .lock()
            .expect("ai breaker lock")
            .open_until(Instant::now())
        {
            self.metrics.ai_request(provider, "circuit_open", None);
            let secs = until.saturating_duration_since(Instant::now()).as_secs() + 1;
            return fall_back(
                rules,
                review,
                format!("the {provider} API failed repeatedly; not asked for another {secs}s"),
            );
        }
        let Ok(_permit) = self.slots.try_acquire() else {
            self.metrics.ai_request(provider, "busy", None);
            return fall_back(
                rules,
                review,
                format!(
                    "{} model requests already in flight; not waiting",
                    self.limits.max_concurrent
                ),
            );
        };
        let timeout = policy.spec.analysis.timeout.get();
        let started = Instant::now();
        let asked = tokio::time::timeout(timeout, async {
            let facts = facts.await;
            let prompt = build(policy, &facts);
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
        match asked {
            Err(e) => {
                self.metrics.ai_request(provider, e.label(), Some(latency));
                self.breaker.lock().expect("ai breaker lock").failure(
                    Instant::now(),
                    self.limits.breaker_failures,
                    self.limits.breaker_open_for,
                );
                warn!(provider, error = %e, "AI analysis failed: the rules decide");
                fall_back(rules, review, e.to_string())
            }
            Ok(reply) => {
                self.breaker.lock().expect("ai breaker lock").success();
                self.metrics
                    .ai_tokens(provider, "input", reply.input_tokens);
                self.metrics
                    .ai_tokens(provider, "output", reply.output_tokens);
                let parsed = parse(&reply.content);
                {
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
                let decision = self.conclude(policy, rules, review, parsed, true);
                let result = match decision.fallback_reason() {
                    None => "ok",
                    Some(_) => "refused",
                };
                debug!(provider, result, "AI analysis done");
                decision
            }
        }
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
    use super::*;

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
