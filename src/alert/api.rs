//! The alert routes of the HTTP API: `GET /api/v1/silences` (every silence, active or expired within a day) and
//! `GET /api/v1/alerts?limit=` (what the alert router did with each alert: queued, silenced,
//! deduplicated). Neither holds a secret: channels are named, never addressed.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::router::History;
use super::state::AlertState;

/// What the alert routes read.
#[derive(Clone)]
pub(crate) struct AlertsApi {
    /// Where silences are kept.
    pub state: Arc<dyn AlertState>,
    /// The router's records.
    pub history: Arc<History>,
}

/// The routes, already under `/api/v1`.
pub(crate) fn routes(api: AlertsApi) -> Router {
    Router::new()
        .route("/api/v1/silences", get(silences))
        .route("/api/v1/alerts", get(alerts))
        .with_state(api)
}

async fn silences(State(api): State<AlertsApi>) -> Response {
    match api.state.silences().await {
        Ok(s) => Json(s).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": format!("silences: {e}")})),
        )
            .into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn alerts(State(api): State<AlertsApi>, Query(q): Query<Limit>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, super::router::HISTORY);
    Json(api.history.recent(limit)).into_response()
}
