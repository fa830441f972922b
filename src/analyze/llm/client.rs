//! The port to a language model: one structured request, one answer, typed errors.

use std::time::Duration;

/// One question to a model: instructions, the facts, and the JSON Schema its answer must fit.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LlmRequest {
    /// Instructions (the system prompt).
    pub system: String,
    /// The facts about one container, as a JSON document.
    pub user: String,
    /// The JSON Schema of the only acceptable answer.
    pub schema: serde_json::Value,
    /// How long the caller waits (the policy's `analysis.timeout`).
    pub timeout: Duration,
}

/// What a model answered.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmReply {
    /// The answer's content: the JSON document (OpenAI's message content, Anthropic's tool input).
    pub content: String,
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Answer tokens billed.
    pub output_tokens: u64,
}

/// Why a model gave no usable content.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// No answer within the policy's `analysis.timeout`.
    #[error("the model did not answer within {0:?} (spec.analysis.timeout)")]
    Timeout(Duration),
    /// The API answered with an HTTP error.
    #[error("the model's API answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body (any API key redacted).
        body: String,
    },
    /// The API could not be reached.
    #[error("cannot reach the model's API: {0}")]
    Transport(String),
    /// The model declined to answer (OpenAI `refusal`, Anthropic `stop_reason: refusal`).
    #[error("the model refused: {0}")]
    Refusal(String),
    /// The answer was cut off (`finish_reason: length`, `stop_reason: max_tokens`).
    #[error("the model's answer was truncated ({0})")]
    Truncated(String),
    /// The API answered 2xx with something that is not its documented shape.
    #[error("unexpected answer from the model's API: {0}")]
    Malformed(String),
}

impl LlmError {
    /// The `result` label of `hemostat_ai_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Http { .. } => "http_error",
            Self::Transport(_) => "unreachable",
            Self::Refusal(_) => "refusal",
            Self::Truncated(_) => "truncated",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// A language model HemoStat can ask (OpenAI-compatible chat completions, Anthropic Messages;
/// see `crate::adapters::llm`).
#[async_trait::async_trait]
pub(crate) trait LlmClient: Send + Sync + 'static {
    /// `openai` or `anthropic`: the `provider` label of the metrics.
    fn provider(&self) -> &'static str;
    /// The model asked.
    fn model(&self) -> &str;
    /// Asks once. The caller enforces `req.timeout`; an implementation may stop earlier.
    async fn complete(&self, req: &LlmRequest) -> Result<LlmReply, LlmError>;
}
