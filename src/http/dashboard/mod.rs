//! The web dashboard at `/`: static HTML, CSS and plain JS embedded in the binary, fed by the JSON API and the event stream.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (fleet overview, active issues, timeline, container page, policies) |
//! | `GET /assets/{app.js,app.css,login.css}` | its script and styles |
//! | `GET /login`, `POST /login` | the login form (when a token is configured), sets the session cookie |
//! | `GET /api/v1/events` | Server-Sent Events, see [`events`] |
//! | `GET /api/v1/usage` | the recent CPU and memory history of every container, for the sparklines |
//!
//! The page loads nothing from another origin and renders every text that comes from a
//! container as text (`textContent`, never `innerHTML`); [`security_headers`] sets a strict
//! Content-Security-Policy on every answer, so even a mistake could run no injected script.

pub mod events;

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiState;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// The Content-Security-Policy of every answer: nothing but this origin's own script, styles
/// and connections; no inline script, no frames, no plugins, forms only to this origin.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How many samples of each container the sparklines get.
pub(crate) const HISTORY: usize = 60;

/// The dashboard's routes (the event stream and usage are in `/api/v1`, see `api::routes`).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/login", get(login_form).post(login))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

async fn login_form() -> Response {
    asset("text/html; charset=utf-8", LOGIN_HTML).await
}

/// The login form's body.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

async fn login(State(state): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    match state.access.session_cookie() {
        Some(cookie) if state.access.is_token(form.token.trim()) => {
            let mut response = Redirect::to("/").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => {
            tracing::info!("dashboard login refused: wrong token");
            let mut response = login_form().await;
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

/// Adds the Content-Security-Policy and its companions to an answer.
pub(crate) async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The recent usage of one container: CPU and memory percent, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct UsageHistory {
    /// CPU percent of its limit.
    pub cpu: Vec<f64>,
    /// Memory percent of its limit.
    pub memory: Vec<f64>,
}

/// The answer of `GET /api/v1/usage`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Usage {
    /// This node's name.
    pub node: String,
    /// By container name.
    pub containers: BTreeMap<String, UsageHistory>,
}

/// `GET /api/v1/usage`: `{node, containers: {name: {cpu: [...], memory: [...]}}}` for every
/// observed container, the newest [`HISTORY`] samples.
pub(crate) async fn usage(State(state): State<ApiState>) -> Json<Usage> {
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let containers = state
        .observed
        .all()
        .into_iter()
        .map(|o| {
            let skip = o.usage.len().saturating_sub(HISTORY);
            let points = o.usage.iter().skip(skip);
            let h = UsageHistory {
                cpu: points.clone().map(|u| round(u.cpu_percent)).collect(),
                memory: points.map(|u| round(u.memory_percent)).collect(),
            };
            (o.info.name, h)
        })
        .collect();
    Json(Usage {
        node: state.node.clone(),
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_reference_no_other_origin_and_use_no_inline_script() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
            ("login.html", LOGIN_HTML),
        ] {
            for forbidden in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is an identifier, never fetched.
                let cleaned = text.replace("http://www.w3.org/2000/svg", "");
                assert!(!cleaned.contains(forbidden), "{name} holds {forbidden}");
            }
            assert!(!text.contains("innerHTML"), "{name} uses innerHTML");
            assert!(!text.contains("eval("), "{name} uses eval");
        }
        for html in [INDEX_HTML, LOGIN_HTML] {
            assert!(!html.contains("<script>"), "inline script");
            assert!(!html.contains("style="), "inline style");
            let handler = html.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "inline event handler");
        }
    }
}
