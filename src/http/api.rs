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
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::bus::{AuditRecord, BusError, Envelope, EventType};
use crate::model::container::{ContainerState, HealthStatus};
use crate::model::safety::SafetyState;
use crate::model::safety::safety_key;
use crate::observe::store::Observed;
use crate::policy::registry::{Provenance, ReloadStatus};
use crate::policy::select::{Target, is_protected};
use crate::policy::{ActionKind, Condition, HealthPolicy, PolicyStatus, Selector};

/// How many records a list answers when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// Why a request could not be answered; served as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
        source: BusError,
    },
}

impl ApiError {
    /// The HTTP status it is served with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BusError> for ApiError {
    fn from(source: BusError) -> Self {
        Self::Store { source }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
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
pub fn routes() -> Router<ApiState> {
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

/// One observed container, with the policy that governs it and its safety state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerView {
    /// Name, without the leading `/`.
    pub name: String,
    /// Full id.
    pub id: String,
    /// Image reference.
    pub image: String,
    /// `running`, `exited`, …
    pub state: ContainerState,
    /// `none`, `starting`, `healthy` or `unhealthy`.
    pub health: HealthStatus,
    /// The last exit code, when it exited.
    pub exit_code: Option<i64>,
    /// The engine says the kernel OOM-killed it.
    pub oom_killed: bool,
    /// Docker's own restart count (restart policy).
    pub restart_count: u64,
    /// The last healthcheck's output (untrusted text from the container).
    #[serde(default)]
    pub health_output: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// A person stopped or killed it, and nobody started it since: left alone.
    pub manual_stop: bool,
    /// Labelled `io.hemostat.protected=true`: never acted on.
    pub protected: bool,
    /// The name of the governing policy, if any.
    pub policy: Option<String>,
    /// CPU in percent of its limit (or of all host cores), from the latest sample.
    pub cpu_percent: Option<f64>,
    /// Memory in percent of its limit (or of host memory), from the latest sample.
    pub memory_percent: Option<f64>,
    /// Restarts HemoStat has seen recently (Docker's and its own).
    pub restarts_seen: usize,
    /// Unhealthy without interruption since then.
    pub unhealthy_since: Option<DateTime<Utc>>,
    /// What the safety gates remember of it on this node.
    pub safety: SafetyView,
}

/// The safety state of a container as the gates see it now.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SafetyView {
    /// When HemoStat last acted on it.
    pub last_action_at: Option<DateTime<Utc>>,
    /// Actions within the governing policy's `maxActions.per` window (every remembered
    /// action when no policy governs it).
    pub actions_in_window: usize,
    /// Failed repairs within the governing policy's breaker window (every remembered failure
    /// when no policy governs it).
    pub failures: usize,
    /// The circuit breaker is open until then; null when closed.
    pub breaker_open_until: Option<DateTime<Utc>>,
}

impl SafetyView {
    /// What `safety` means under `policy` at `now`.
    pub fn new(safety: &SafetyState, policy: Option<&HealthPolicy>, now: DateTime<Utc>) -> Self {
        let within = |window: std::time::Duration, at: DateTime<Utc>| {
            chrono::Duration::from_std(window).map_or(true, |w| now - at <= w)
        };
        let (actions_in_window, failures) = match policy {
            Some(p) => {
                let r = &p.spec.remediation;
                (
                    safety
                        .actions
                        .iter()
                        .filter(|a| within(r.max_actions.per.get(), a.at))
                        .count(),
                    safety
                        .failures
                        .iter()
                        .filter(|t| within(r.circuit_breaker.within.get(), **t))
                        .count(),
                )
            }
            None => (safety.actions.len(), safety.failures.len()),
        };
        Self {
            last_action_at: safety.actions.iter().map(|a| a.at).max(),
            actions_in_window,
            failures,
            breaker_open_until: safety.open_until.filter(|until| *until > now),
        }
    }
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
            crate::bus::report_bad_value(&key, &e.to_string(), "shown without safety state");
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

/// A policy in force, as served by `/api/v1/policies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// `metadata.name`.
    pub name: String,
    /// `spec.priority`.
    pub priority: i32,
    /// `spec.selector`.
    pub selector: Selector,
    /// `spec.remediation.actions`, in escalation order.
    pub actions: Vec<ActionKind>,
    /// `spec.remediation.dryRun`.
    pub dry_run: bool,
    /// `file:line:col` the version in force was read from (policies from `--policies` files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Containers governed now, and the `Ready` / `Degraded` conditions: `Degraded` is `True`
    /// when the policy's document is invalid now and its last good version stays in force.
    pub status: PolicyStatus,
    /// The whole policy as enforced (what `hemostat diff --api` compares with).
    pub document: HealthPolicy,
}

impl From<&HealthPolicy> for PolicyView {
    /// The view of a policy of unknown origin, governing no container.
    fn from(p: &HealthPolicy) -> Self {
        Self::new(p, None, 0)
    }
}

impl PolicyView {
    /// The view of `p`, governing `matched` containers, read from where `provenance` says.
    pub fn new(p: &HealthPolicy, provenance: Option<&Provenance>, matched: u32) -> Self {
        let condition = |type_: &str, status: bool, reason: &str, message: String| Condition {
            type_: type_.to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message,
        };
        let conditions = match provenance {
            None => vec![condition("Ready", true, "InForce", String::new())],
            Some(from) if from.problems.is_empty() => vec![
                condition(
                    "Ready",
                    true,
                    "Loaded",
                    format!("enforced from {}", from.source),
                ),
                condition("Degraded", false, "Valid", String::new()),
            ],
            Some(from) => vec![
                condition(
                    "Ready",
                    true,
                    "LastGoodKept",
                    format!("last good version from {} enforced", from.source),
                ),
                condition(
                    "Degraded",
                    true,
                    "InvalidDocument",
                    from.problems.join("\n"),
                ),
            ],
        };
        let mut document = p.clone();
        document.status = None;
        Self {
            name: p.metadata.name.clone(),
            priority: p.spec.priority,
            selector: p.spec.selector.clone(),
            actions: p.spec.remediation.actions.clone(),
            dry_run: p.spec.remediation.dry_run,
            source: provenance.map(|from| from.source.clone()),
            status: PolicyStatus {
                matched_containers: matched,
                last_reconciled: None,
                conditions,
            },
            document,
        }
    }

    /// The problems of the policy's current document (empty when it is valid).
    pub fn problems(&self) -> Vec<&str> {
        self.status
            .conditions
            .iter()
            .filter(|c| c.type_ == "Degraded" && c.status == "True")
            .flat_map(|c| c.message.lines())
            .collect()
    }
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
    use crate::model::safety::{ActionRecord, Outcome};

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

    #[test]
    fn the_safety_view_counts_within_the_policy_windows_and_hides_a_closed_breaker() {
        let now = Utc::now();
        let hours = |h: i64| now - chrono::Duration::hours(h);
        let record = |at| ActionRecord {
            decision_id: "d".into(),
            at,
            action: ActionKind::Restart,
            finding: "exited".into(),
            outcome: Outcome::Failed,
        };
        let safety = SafetyState {
            actions: vec![record(hours(3)), record(hours(0))],
            failures: vec![hours(3), hours(0)],
            open_until: Some(hours(-1)),
            gave_up_at: None,
        };
        let policy = crate::policy::builtin::default_policy();
        let view = SafetyView::new(&safety, Some(&policy), now);
        assert_eq!(view.actions_in_window, 1);
        assert_eq!(view.failures, 1);
        assert_eq!(view.last_action_at, Some(now));
        assert_eq!(view.breaker_open_until, Some(hours(-1)));
        let unpoliced = SafetyView::new(&safety, None, now);
        assert_eq!(unpoliced.actions_in_window, 2);
        let later = SafetyView::new(&safety, Some(&policy), hours(-2));
        assert_eq!(later.breaker_open_until, None);
    }
}
