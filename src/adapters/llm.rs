//! `LlmClient` over HTTP: OpenAI-compatible chat completions (`response_format: json_schema`)
//! and Anthropic's Messages API (tool use), configured from the environment.
//!
//! The API key is read from `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` or from the file named by
//! `OPENAI_API_KEY_FILE` / `ANTHROPIC_API_KEY_FILE`; it is sent only in the request header and
//! never logged, served, or put in an error (an error body that echoes it is redacted).

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};

use crate::analyze::llm::prompt::ANSWER_NAME;
use crate::analyze::llm::{LlmClient, LlmError, LlmReply, LlmRequest};

/// The OpenAI API, when `OPENAI_BASE_URL` is unset.
pub(crate) const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// The Anthropic API, when `ANTHROPIC_BASE_URL` is unset.
pub(crate) const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";
/// The model when `AI_MODEL` is unset (the original's default) with OpenAI.
pub(crate) const OPENAI_DEFAULT_MODEL: &str = "gpt-4";
/// The model when `AI_MODEL` is unset with Anthropic.
pub(crate) const ANTHROPIC_DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The Messages API version sent.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The answer is a short JSON object.
const MAX_TOKENS: u32 = 512;
/// Longest error body kept.
const ERROR_BODY: usize = 300;

/// An API key: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub(crate) fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// Which API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// OpenAI-compatible chat completions (OpenAI, Azure OpenAI, Ollama, vLLM, llama.cpp, LM Studio).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Provider {
    /// `openai` or `anthropic`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// A configured model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LlmConfig {
    /// Which API.
    pub provider: Provider,
    /// The model name sent.
    pub model: String,
    /// The API base (`…/v1` for OpenAI, without `/v1` for Anthropic, as the SDKs read them).
    pub base_url: String,
    /// The key.
    pub key: ApiKey,
}

/// Why the model settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A key file could not be read.
    #[error("cannot read {var}={path}: {source}")]
    KeyFile {
        /// The variable naming the file.
        var: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A base URL is not http(s).
    #[error("{var}={url:?} is not an http:// or https:// URL")]
    BaseUrl {
        /// The variable.
        var: &'static str,
        /// Its value.
        url: String,
    },
}

fn read_key(
    get: &dyn Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<ApiKey>, ConfigError> {
    if let Some(key) = get(var).filter(|k| !k.trim().is_empty()) {
        return Ok(Some(ApiKey::new(key.trim())));
    }
    let file_var = format!("{var}_FILE");
    let Some(path) = get(&file_var).filter(|p| !p.trim().is_empty()) else {
        return Ok(None);
    };
    let key = std::fs::read_to_string(path.trim()).map_err(|source| ConfigError::KeyFile {
        var: file_var,
        path: path.clone(),
        source,
    })?;
    Ok(Some(ApiKey::new(key.trim())).filter(|k| !k.expose().is_empty()))
}

fn base_url(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let url = get(var)
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    let url = url.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::BaseUrl { var, url });
    }
    Ok(url)
}

impl LlmConfig {
    /// Reads `AI_MODEL`, `OPENAI_API_KEY[_FILE]`, `OPENAI_BASE_URL`, `ANTHROPIC_API_KEY[_FILE]`,
    /// `ANTHROPIC_BASE_URL` through `get`. A model named `claude…` uses Anthropic, any other
    /// named model the OpenAI-compatible API; with no `AI_MODEL`, whichever key is set (OpenAI
    /// first). `Ok(None)` when the chosen provider has no key.
    pub(crate) fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let model = get("AI_MODEL").filter(|m| !m.trim().is_empty());
        let openai = read_key(get, "OPENAI_API_KEY")?;
        let anthropic = read_key(get, "ANTHROPIC_API_KEY")?;
        let provider = match &model {
            Some(m) if m.trim().starts_with("claude") => Provider::Anthropic,
            Some(_) => Provider::OpenAi,
            None if openai.is_none() && anthropic.is_some() => Provider::Anthropic,
            None => Provider::OpenAi,
        };
        let (key, var, default_base, default_model) = match provider {
            Provider::OpenAi => (
                openai,
                "OPENAI_BASE_URL",
                OPENAI_DEFAULT_BASE,
                OPENAI_DEFAULT_MODEL,
            ),
            Provider::Anthropic => (
                anthropic,
                "ANTHROPIC_BASE_URL",
                ANTHROPIC_DEFAULT_BASE,
                ANTHROPIC_DEFAULT_MODEL,
            ),
        };
        let Some(key) = key else {
            return Ok(None);
        };
        Ok(Some(Self {
            provider,
            model: model.map_or_else(|| default_model.to_owned(), |m| m.trim().to_owned()),
            base_url: base_url(get, var, default_base)?,
            key,
        }))
    }

    /// [`Self::from_lookup`] over the process environment.
    pub(crate) fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// The HTTP client for this configuration.
    pub(crate) fn client(&self) -> Result<HttpLlm, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(HttpLlm {
            config: self.clone(),
            http,
        })
    }
}

/// Either API over one reqwest client.
pub(crate) struct HttpLlm {
    config: LlmConfig,
    http: reqwest::Client,
}

impl HttpLlm {
    fn redact(&self, text: &str) -> String {
        let key = self.config.key.expose();
        let text: String = text.chars().take(ERROR_BODY).collect();
        if key.len() >= 4 {
            text.replace(key, "[REDACTED]")
        } else {
            text
        }
    }

    async fn post(&self, url: String, body: &Value, timeout: Duration) -> Result<Value, LlmError> {
        let mut request = self.http.post(url).timeout(timeout).json(body);
        request = match self.config.provider {
            Provider::OpenAi => request.bearer_auth(self.config.key.expose()),
            Provider::Anthropic => request
                .header("x-api-key", self.config.key.expose())
                .header("anthropic-version", ANTHROPIC_VERSION),
        };
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout(timeout)
            } else {
                // reqwest's message names the URL, never the headers.
                LlmError::Transport(self.redact(&e.to_string()))
            }
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout(timeout)
            } else {
                LlmError::Transport(self.redact(&e.to_string()))
            }
        })?;
        if !status.is_success() {
            return Err(LlmError::Http {
                status: status.as_u16(),
                body: self.redact(text.trim()),
            });
        }
        serde_json::from_str(&text).map_err(|e| LlmError::Malformed(format!("not JSON: {e}")))
    }
}

/// The chat-completions body: system + user messages, a strict JSON Schema response format.
pub(crate) fn openai_body(model: &str, req: &LlmRequest) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": req.system},
            {"role": "user", "content": req.user},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": ANSWER_NAME, "strict": true, "schema": req.schema},
        },
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
    })
}

/// Reads a chat-completions answer: the message content, or why there is none.
pub fn openai_reply(body: &Value) -> Result<LlmReply, LlmError> {
    let choice = &body["choices"][0];
    let message = &choice["message"];
    if let Some(refusal) = message["refusal"].as_str().filter(|r| !r.is_empty()) {
        return Err(LlmError::Refusal(
            refusal.chars().take(ERROR_BODY).collect(),
        ));
    }
    match choice["finish_reason"].as_str() {
        Some("length") => return Err(LlmError::Truncated("finish_reason: length".into())),
        Some("content_filter") => {
            return Err(LlmError::Refusal("finish_reason: content_filter".into()));
        }
        _ => {}
    }
    let content = message["content"]
        .as_str()
        .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
    Ok(LlmReply {
        content: content.to_owned(),
        input_tokens: body["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output_tokens: body["usage"]["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// The Messages body: the answer is forced through one tool whose input schema is the answer's.
pub(crate) fn anthropic_body(model: &str, req: &LlmRequest) -> Value {
    json!({
        "model": model,
        "max_tokens": MAX_TOKENS,
        "system": req.system,
        "messages": [{"role": "user", "content": req.user}],
        "tools": [{
            "name": ANSWER_NAME,
            "description": "Record HemoStat's decision about this container.",
            "input_schema": req.schema,
        }],
        "tool_choice": {"type": "tool", "name": ANSWER_NAME},
    })
}

/// Reads a Messages answer: the tool input (as JSON text), else the text, or why there is none.
pub fn anthropic_reply(body: &Value) -> Result<LlmReply, LlmError> {
    match body["stop_reason"].as_str() {
        Some("max_tokens") => return Err(LlmError::Truncated("stop_reason: max_tokens".into())),
        Some("refusal") => return Err(LlmError::Refusal("stop_reason: refusal".into())),
        _ => {}
    }
    let blocks = body["content"]
        .as_array()
        .ok_or_else(|| LlmError::Malformed("no content".into()))?;
    let tool = blocks
        .iter()
        .find(|b| b["type"] == "tool_use" && b["name"] == ANSWER_NAME);
    let content = match tool {
        Some(block) => block["input"].to_string(),
        None => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
    };
    Ok(LlmReply {
        content,
        input_tokens: body["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output_tokens: body["usage"]["output_tokens"].as_u64().unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl LlmClient for HttpLlm {
    fn provider(&self) -> &'static str {
        self.config.provider.as_str()
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, req: &LlmRequest) -> Result<LlmReply, LlmError> {
        let base = &self.config.base_url;
        match self.config.provider {
            Provider::OpenAi => {
                let body = openai_body(&self.config.model, req);
                let answer = self
                    .post(format!("{base}/chat/completions"), &body, req.timeout)
                    .await?;
                openai_reply(&answer)
            }
            Provider::Anthropic => {
                let body = anthropic_body(&self.config.model, req);
                let answer = self
                    .post(format!("{base}/v1/messages"), &body, req.timeout)
                    .await?;
                anthropic_reply(&answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Option<LlmConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LlmConfig::from_lookup(&|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn the_provider_follows_the_model_name_then_the_key_that_is_set() {
        let c = config(&[("OPENAI_API_KEY", "k1")]).unwrap();
        assert_eq!((c.provider, c.model.as_str()), (Provider::OpenAi, "gpt-4"));
        assert_eq!(c.base_url, OPENAI_DEFAULT_BASE);
        let c = config(&[("ANTHROPIC_API_KEY", "k2")]).unwrap();
        assert_eq!(c.provider, Provider::Anthropic);
        let c = config(&[
            ("AI_MODEL", "claude-3-5-haiku"),
            ("OPENAI_API_KEY", "k1"),
            ("ANTHROPIC_API_KEY", "k2"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:1/"),
        ])
        .unwrap();
        assert_eq!(c.provider, Provider::Anthropic);
        assert_eq!(c.base_url, "http://127.0.0.1:1");
        assert_eq!(c.key, ApiKey::new("k2"));
        let c = config(&[
            ("AI_MODEL", "llama3.1"),
            ("OPENAI_BASE_URL", "http://h:11434/v1"),
            ("OPENAI_API_KEY", "x"),
        ])
        .unwrap();
        assert_eq!(
            (c.provider, c.base_url.as_str()),
            (Provider::OpenAi, "http://h:11434/v1")
        );
        assert_eq!(
            config(&[("AI_MODEL", "claude-3"), ("OPENAI_API_KEY", "k1")]),
            None
        );
        assert_eq!(config(&[]), None);
    }

    #[test]
    fn a_key_can_come_from_a_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-from-file\n").unwrap();
        let c = config(&[("OPENAI_API_KEY_FILE", path.to_str().unwrap())]).unwrap();
        assert_eq!(c.key, ApiKey::new("sk-from-file"));
        assert!(!format!("{c:?}").contains("sk-from-file"));
    }

    #[test]
    fn replies_are_read_or_refused() {
        let ok = json!({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 3}});
        assert_eq!(openai_reply(&ok).unwrap().input_tokens, 10);
        let cut = json!({"choices": [{"message": {"content": "{\"a"}, "finish_reason": "length"}]});
        assert_eq!(openai_reply(&cut).unwrap_err().label(), "truncated");
        let refused = json!({"choices": [{"message": {"content": null, "refusal": "no"}, "finish_reason": "stop"}]});
        assert_eq!(openai_reply(&refused).unwrap_err().label(), "refusal");
        let tool = json!({"content": [{"type": "tool_use", "name": ANSWER_NAME, "input": {"action": "none"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 7, "output_tokens": 2}});
        let reply = anthropic_reply(&tool).unwrap();
        assert_eq!(reply.content, r#"{"action":"none"}"#);
        assert_eq!(reply.output_tokens, 2);
        let refused = json!({"content": [], "stop_reason": "refusal"});
        assert_eq!(anthropic_reply(&refused).unwrap_err().label(), "refusal");
    }
}
