//! A local HTTP server speaking Slack's incoming-webhook API (and any JSON webhook's): it
//! records every request and answers as scripted: `200 ok`, `429` with `Retry-After`, `500`,
//! or never.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Answer {
    /// `200 ok` (what Slack answers).
    Ok,
    /// `429 Too Many Requests` with `Retry-After: secs`.
    RateLimited(u64),
    /// `500`.
    ServerError,
    /// Never answers.
    Hang,
}

/// One request received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// Its path (where a webhook token would be).
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its raw body.
    pub raw: Bytes,
    /// Its body as JSON.
    pub body: Value,
    /// What it was answered.
    pub answer: String,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    then: Option<Answer>,
    received: Vec<Received>,
}

/// The server; stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Receiver {
    /// Starts a receiver answering `script` in order, then `then` for ever.
    pub async fn start(script: Vec<Answer>, then: Answer) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            then: Some(then),
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { inner, base }
    }

    /// Answers `200 ok` to everything.
    pub async fn ok() -> Self {
        Self::start(vec![], Answer::Ok).await
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// The requests answered 200.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answer == "200")
            .collect()
    }

    /// Waits until `f` holds of the requests so far, or panics naming `what`.
    pub async fn wait(
        &self,
        secs: u64,
        what: &str,
        f: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if f(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting until {what}; received: {:#?}",
                got.iter().map(|r| (&r.answer, &r.body)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let answer = {
        let mut i = inner.lock().unwrap();
        let answer = i.script.pop_front().or_else(|| i.then.clone()).unwrap();
        let label = match &answer {
            Answer::Ok => "200".to_owned(),
            Answer::RateLimited(_) => "429".to_owned(),
            Answer::ServerError => "500".to_owned(),
            Answer::Hang => "hang".to_owned(),
        };
        i.received.push(Received {
            at: Instant::now(),
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw,
            answer: label,
        });
        answer
    };
    match answer {
        Answer::Ok => (StatusCode::OK, "ok").into_response(),
        Answer::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            "rate_limited",
        )
            .into_response(),
        Answer::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error").into_response()
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// The text of a Slack message: its fallback, every block and attachment, concatenated.
pub fn slack_text(body: &Value) -> String {
    let mut out = body["text"].as_str().unwrap_or_default().to_owned();
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push('\n');
                out.push_str(s);
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&body["attachments"], &mut out);
    out
}

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, routing
/// every alert to `receiver_url` within about a second, resolves included; killed on drop.
pub struct Alertmanager {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts it and waits until it is ready.
    pub async fn start(receiver_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "route:\n  receiver: local\n  group_by: [alertname, container]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: local\n    webhook_configs:\n      - url: {receiver_url}\n        send_resolved: true\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus-alertmanager ({e}): apt-get install prometheus-alertmanager (scripts/test.sh does)")
            });
        let am = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/-/ready", am.base)).send().await
                && r.status().is_success()
            {
                return am;
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager never became ready: {}",
                std::fs::read_to_string(am._dir.path().join("alertmanager.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
