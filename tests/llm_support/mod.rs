//! A local HTTP server speaking the OpenAI chat-completions API (`POST /v1/chat/completions`)
//! and Anthropic's Messages API (`POST /v1/messages`), scripted per request, recording every
//! request (headers and JSON body) for the test to inspect.
//!
//! ```ignore
//! mod llm_support;
//! let llm = llm_support::FakeLlm::start(|_body| llm_support::Behaviour::answer("restart", 0.9, "r", "c")).await;
//! // OPENAI_BASE_URL = llm.openai_base(), ANTHROPIC_BASE_URL = llm.anthropic_base()
//! ```
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What the fake model does with one request.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers with this message content (OpenAI) / tool input or text (Anthropic).
    Content(String),
    /// Waits, then behaves as the inner one.
    After(Duration, Box<Behaviour>),
    /// Never answers (until the client gives up).
    Hang,
    /// Answers with this HTTP status and an error body.
    Status(u16),
    /// Refuses (OpenAI `refusal`, Anthropic `stop_reason: refusal`).
    Refuse,
}

impl Behaviour {
    /// A well-formed answer in the documented shape.
    pub fn answer(action: &str, confidence: f64, reason: &str, root_cause: &str) -> Self {
        Self::Content(
            json!({"action": action, "confidence": confidence, "reason": reason, "root_cause": root_cause})
                .to_string(),
        )
    }

    /// Arbitrary JSON as the answer.
    pub fn json(value: Value) -> Self {
        Self::Content(value.to_string())
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `/v1/chat/completions` or `/v1/messages`.
    pub path: String,
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    /// The JSON body.
    pub body: Value,
    /// The body as received.
    pub raw: String,
}

impl Seen {
    /// The text of every message (system and user), for searching.
    pub fn prompt_text(&self) -> String {
        self.raw.clone()
    }
}

type Script = Arc<dyn Fn(&Value) -> Behaviour + Send + Sync>;

#[derive(Clone)]
struct Shared {
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The running fake; stops when dropped.
pub struct FakeLlm {
    /// `http://127.0.0.1:PORT`.
    pub root: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLlm {
    /// Starts on a free loopback port; `script` picks the behaviour from the request body.
    pub async fn start(script: impl Fn(&Value) -> Behaviour + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            script: Arc::new(script),
            seen: seen.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeLlm { root, seen, task }
    }

    /// What `OPENAI_BASE_URL` should be.
    pub fn openai_base(&self) -> String {
        format!("{}/v1", self.root)
    }

    /// What `ANTHROPIC_BASE_URL` should be.
    pub fn anthropic_base(&self) -> String {
        self.root.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests whose body mentions `text` (e.g. a container name).
    pub fn requests_about(&self, text: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.raw.contains(text))
            .collect()
    }
}

fn openai(behaviour: &Behaviour) -> Response {
    match behaviour {
        Behaviour::Content(content) => axum::Json(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 42, "total_tokens": 363},
        }))
        .into_response(),
        Behaviour::Refuse => axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 321, "completion_tokens": 5},
        }))
        .into_response(),
        other => unreachable!("{other:?} is handled before"),
    }
}

fn anthropic(behaviour: &Behaviour) -> Response {
    match behaviour {
        Behaviour::Content(content) => {
            let block = match serde_json::from_str::<Value>(content) {
                Ok(input @ Value::Object(_)) => {
                    json!({"type": "tool_use", "id": "toolu_test", "name": "hemostat_decision", "input": input})
                }
                _ => json!({"type": "text", "text": content}),
            };
            axum::Json(json!({
                "id": "msg_test", "type": "message", "role": "assistant",
                "content": [block],
                "stop_reason": if block["type"] == "tool_use" { "tool_use" } else { "end_turn" },
                "usage": {"input_tokens": 321, "output_tokens": 42},
            }))
            .into_response()
        }
        Behaviour::Refuse => axum::Json(json!({
            "id": "msg_test", "type": "message", "role": "assistant",
            "content": [], "stop_reason": "refusal",
            "usage": {"input_tokens": 321, "output_tokens": 0},
        }))
        .into_response(),
        other => unreachable!("{other:?} is handled before"),
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    shared.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.clone(),
        raw,
    });
    let mut behaviour = (shared.script)(&body);
    loop {
        match behaviour {
            Behaviour::After(wait, inner) => {
                tokio::time::sleep(wait).await;
                behaviour = *inner;
            }
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return StatusCode::GATEWAY_TIMEOUT.into_response();
            }
            Behaviour::Status(code) => {
                let status = StatusCode::from_u16(code).unwrap();
                return (status, axum::Json(json!({"error": {"message": "the fake model failed", "type": "server_error"}}))).into_response();
            }
            other => {
                return match path.as_str() {
                    "/v1/chat/completions" => openai(&other),
                    "/v1/messages" => anthropic(&other),
                    _ => StatusCode::NOT_FOUND.into_response(),
                };
            }
        }
    }
}
