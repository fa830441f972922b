//! The optional LLM analyzer (`analysis.mode: ai`): it can only help.
//!
//! The rules decide first. The model is then asked, with the facts about that one container
//! ([`prompt`]), to choose among the policy's allowed actions or `none`; its answer is parsed
//! strictly and checked against the policy ([`verdict`]). Anything else (an action outside the
//! policy, an exec not on the allow-list, an unknown field or action, a non-JSON or truncated
//! answer, a timeout, an HTTP error, a refusal) leaves the rules' decision in force, recorded
//! as `analysis_method: rule_based_fallback` with `fallback_reason`. [`review`] keeps the model
//! off everyone else's path; [`client`] is the port the HTTP adapters implement.

pub mod client;
pub mod prompt;
pub mod redact;
pub mod review;
pub mod verdict;

pub use client::{LlmClient, LlmError, LlmReply, LlmRequest};
pub use review::{AiAnalyzer, AiLimits, AiMetrics};

use serde_json::{Value, json};

use crate::model::decision::Decision;

/// Adds what the model said to an envelope's `data`: `root_cause` (when its answer was used),
/// `fallback_reason` (when the rules decided instead), and `ai`, the rules' verdict and the
/// model's side by side. Nothing is added for decisions of the rules alone.
pub fn annotate(data: &mut Value, decision: &Decision) {
    let Some(ai) = &decision.ai else {
        return;
    };
    if let Some(root) = decision.root_cause() {
        data["root_cause"] = json!(root);
    }
    if let Some(why) = decision.fallback_reason() {
        data["fallback_reason"] = json!(why);
    }
    data["ai"] = json!(ai);
}
