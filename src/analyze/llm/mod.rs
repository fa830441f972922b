//! The optional LLM analyzer (`analysis.mode: ai`): it can only help.
//!
//! The rules decide first. The model is then asked, with the facts about that one container
//! ([`prompt`]), to choose among the policy's allowed actions or `none`; its answer is parsed
//! strictly and checked against the policy ([`verdict`]). Anything else (an action outside the
//! policy, an exec not on the allow-list, an unknown field or action, a non-JSON or truncated
//! answer, a timeout, an HTTP error, a refusal) leaves the rules' decision in force, recorded
//! as `analysis_method: rule_based_fallback` with `fallback_reason`. [`review`] keeps the model
//! off everyone else's path; [`client`] is the port the HTTP adapters implement.

pub(crate) mod client;
pub(crate) mod prompt;
pub(crate) mod redact;
pub(crate) mod review;
pub mod verdict;

pub(crate) use client::{LlmClient, LlmError, LlmReply, LlmRequest};
pub(crate) use review::{AiAnalyzer, AiLimits, AiMetrics};
