//! The read-only JSON API under `/api/v1`: decisions, audit trail, containers and policies.
//!
//! | route | answer |
//! |---|---|
//! | `GET decisions?type=&container=&limit=` | recent envelopes, oldest first |
//! | `GET audit?limit=` | the newest audit records, oldest first |
//! | `GET containers` | one [`ContainerView`] per observed container, by name |
//! | `GET containers/{name}` | one [`ContainerView`] (by name, or by id) |
//! | `GET policies` | one [`PolicyView`] per policy in force (source, document, status), highest priority first |
//! | `GET reload` | what the `--policies` file source last did: [`ReloadStatus`] (last read, last change, every problem) |
//! | `GET events` | every envelope as Server-Sent Events (see `dashboard::events`) |
//! | `GET usage` | recent CPU and memory per container (see `dashboard::usage`) |
//!
//! `limit` defaults to [`DEFAULT_LIMIT`] and may not exceed [`MAX_LIMIT`]. Every error is
//! `{"error": "..."}` with a 4xx or 5xx status.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ApiState;
use super::views::{ContainerView, ErrorBody, PolicyView, SafetyView};
use crate::model::audit::AuditRecord;
use crate::model::safety::safety_key;
use crate::model::wire::{Envelope, EventType};
use crate::observe::store::Observed;
use crate::policy::registry::ReloadStatus;
use crate::policy::select::{Target, is_protected};
use crate::store::StoreError;

/// How many records a list answers when no `limit` is given.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub(crate) const MAX_LIMIT: usize = 1000;

/// Why a request could not be answered; served as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The query string is malformed or holds a value out of range.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The state store could not be read.
    #[error("state store: {source}")]
    Store {
        /// Why.
        #[source]
        source: StoreError,
    },
}

impl ApiError {
    /// The HTTP status it is served with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(source: StoreError) -> Self {
        Self::Store { source }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "API request failed");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// The routes, to be nested under `/api/v1`.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/decisions", get(decisions))
        .route("/audit", get(audit))
        .route("/containers", get(containers))
        .route("/containers/{name}", get(container))
        .route("/policies", get(policies))
        .route("/reload", get(reload))
        .route("/events", get(super::dashboard::events::stream))
        .route("/usage", get(super::dashboard::usage))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such API route".into())
}

/// `?type=&container=&limit=`; an empty value is the same as none.
#[derive(Debug, Default, Deserialize)]
struct DecisionsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    container: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LimitQuery {
    limit: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Parses `limit`: absent or empty is [`DEFAULT_LIMIT`]; otherwise 1 to [`MAX_LIMIT`].
fn parse_limit(raw: Option<String>) -> Result<usize, ApiError> {
    let Some(raw) = non_empty(raw) else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {raw:?}"
        ))),
    }
}

fn parse_type(raw: Option<String>) -> Result<Option<EventType>, ApiError> {
    let Some(raw) = non_empty(raw) else {
        return Ok(None);
    };
    EventType::parse(&raw).map(Some).ok_or_else(|| {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        ApiError::BadRequest(format!(
            "unknown type {raw:?}; expected one of {}",
            known.join(", ")
        ))
    })
}

async fn decisions(
    State(state): State<ApiState>,
    query: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Json<Vec<Envelope>>, ApiError> {
    let Query(query) = query?;
    let event_type = parse_type(query.event_type)?;
    let limit = parse_limit(query.limit)?;
    let envelopes = match non_empty(query.container) {
        None => state.sink.recent(event_type, limit).await,
        Some(container) => {
            // Filter the whole retained window first, then keep the newest `limit`.
            let mut matching: Vec<Envelope> = state
                .sink
                .recent(event_type, MAX_LIMIT)
                .await
                .into_iter()
                .filter(|e| e.container() == Some(container.as_str()))
                .collect();
            let skip = matching.len().saturating_sub(limit);
            matching.drain(..skip);
            matching
        }
    };
    Ok(Json(envelopes))
}

async fn audit(
    State(state): State<ApiState>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let Query(query) = query?;
    let limit = parse_limit(query.limit)?;
    Ok(Json(state.store.audit_tail(limit).await?))
}

async fn container_view(
    state: &ApiState,
    observed: Observed,
    now: DateTime<Utc>,
) -> Result<ContainerView, ApiError> {
    let info = &observed.info;
    let policy = state.policies.governing(Target::from(info));
    let key = safety_key(&state.node, &info.name);
    // One unreadable safety state never breaks the listing: that container shows none.
    let safety = match state.store.safety(&key).await {
        Ok(safety) => safety,
        Err(e) => {
            crate::store::report_bad_value(&key, &e.to_string(), "shown without safety state");
            Default::default()
        }
    };
    let latest = observed.usage.back();
    Ok(ContainerView {
        safety: SafetyView::new(&safety, policy.as_ref(), now),
        policy: policy.map(|p| p.metadata.name),
        protected: is_protected(&info.labels),
        cpu_percent: latest.map(|u| u.cpu_percent),
        memory_percent: latest.map(|u| u.memory_percent),
        restarts_seen: observed.restarts.len(),
        unhealthy_since: observed.unhealthy_since,
        manual_stop: observed.manual_stop,
        name: info.name.clone(),
        id: info.id.clone(),
        image: info.image.clone(),
        state: info.state,
        health: info.health,
        exit_code: info.exit_code,
        oom_killed: info.oom_killed,
        restart_count: info.restart_count,
        health_output: info.health_output.clone(),
        labels: observed.info.labels,
    })
}

async fn containers(State(state): State<ApiState>) -> Result<Json<Vec<ContainerView>>, ApiError> {
    let now = Utc::now();
    let mut views = Vec::new();
    for observed in state.observed.all() {
        views.push(container_view(&state, observed, now).await?);
    }
    Ok(Json(views))
}

async fn container(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    let all = state.observed.all();
    let found = all
        .iter()
        .position(|o| o.info.name == name)
        .or_else(|| all.iter().position(|o| o.info.id == name));
    let Some(index) = found else {
        return Err(ApiError::NotFound(format!("no container named {name:?}")));
    };
    let observed = all.into_iter().nth(index).expect("index from position");
    Ok(Json(container_view(&state, observed, Utc::now()).await?))
}

async fn policies(State(state): State<ApiState>) -> Json<Vec<PolicyView>> {
    let snapshot = state.policies.snapshot();
    let mut matched: BTreeMap<String, u32> = BTreeMap::new();
    for o in state.observed.all() {
        let target = Target {
            name: &o.info.name,
            image: &o.info.image,
            labels: &o.info.labels,
        };
        if let Some(p) = crate::policy::select::governing_policy(snapshot.iter(), target) {
            *matched.entry(p.metadata.name.clone()).or_default() += 1;
        }
    }
    let last_scan = state.policies.reload().last_scan;
    let mut views: Vec<PolicyView> = snapshot
        .iter()
        .map(|p| {
            let matched = matched.get(&p.metadata.name).copied().unwrap_or(0);
            let provenance = state.policies.provenance_of(p);
            let mut view = PolicyView::new(p, provenance.as_ref(), matched);
            // A file policy was last looked at when the files were last read.
            if provenance.is_some() {
                view.status.last_reconciled = last_scan.map(|t| t.to_rfc3339());
            }
            view
        })
        .collect();
    views.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    Json(views)
}

/// `GET /api/v1/reload`: the file source's [`ReloadStatus`] (empty without `--policies`).
async fn reload(State(state): State<ApiState>) -> Json<ReloadStatus> {
    Json((*state.policies.reload()).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some(String::new())).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1000".into())).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", "1.5"] {
            assert!(
                matches!(parse_limit(Some(bad.into())), Err(ApiError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_the_four_event_types_are_accepted() {
        assert_eq!(parse_type(None).unwrap(), None);
        assert_eq!(
            parse_type(Some("false_alarm".into())).unwrap(),
            Some(EventType::FalseAlarm)
        );
        let err = parse_type(Some("nope".into())).unwrap_err();
        assert!(err.to_string().contains("health_alert"), "{err}");
    }
}
