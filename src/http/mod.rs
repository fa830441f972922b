//! The HTTP server: liveness, readiness, Prometheus metrics and the read-only JSON API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process runs |
//! | `GET /readyz` | `200 ready` while the container list and event stream are live, else `503` |
//! | `GET /metrics` | [`Metrics`] as OpenMetrics, or Prometheus text 0.0.4 when `Accept` prefers it |
//! | `GET /api/v1/...` | see [`api`] |
//! | `GET /` | the dashboard, see [`dashboard`] |
//!
//! Who may call what is decided by [`access`]; every answer carries the dashboard's strict
//! Content-Security-Policy.
//!
//! Nothing served carries a secret: policies hold only references to secrets (an environment
//! variable's or a file's name), never their values.

pub(crate) mod access;
pub(crate) mod api;
pub mod dashboard;
pub(crate) mod limits;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::bus::EventSink;
use crate::metrics::{Format, Metrics};
use crate::observe::store::ObservedStore;
use crate::policy::registry::PolicyRegistry;
use crate::store::StateStore;

/// What the handlers read. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct ApiState {
    /// Set by the watcher once the first full container list was taken in; `/readyz` and the
    /// `hemostat_ready` gauge read it.
    pub ready: Arc<AtomicBool>,
    /// The containers as observed.
    pub observed: Arc<ObservedStore>,
    /// Recent envelopes, for `/api/v1/decisions`.
    pub sink: Arc<dyn EventSink>,
    /// Safety state and audit trail.
    pub store: Arc<dyn StateStore>,
    /// The policies in force.
    pub policies: Arc<PolicyRegistry>,
    /// The metrics served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This node's name: the first half of every safety key.
    pub node: String,
    /// The numbered recent envelopes behind `/api/v1/events` (start it with
    /// [`dashboard::events::EventLog::spawn`]).
    pub events: Arc<dashboard::events::EventLog>,
    /// Who may call what.
    pub access: Arc<access::Access>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("ready", &self.ready)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The text `/readyz` answers while the engine's list or event stream is not live.
pub const NOT_READY: &str = "not ready: no live container list and event stream from the engine (starting, or the engine is unreachable)";

/// Every route, with request tracing.
pub(crate) fn router(state: ApiState) -> Router {
    router_with(state, Router::new())
}

/// Every route plus `extra` (the routes of other modules, e.g. the alerts'), all behind the
/// access guard and the security headers.
pub(crate) fn router_with(state: ApiState, extra: Router) -> Router {
    let access = state.access.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::routes())
        .merge(dashboard::routes())
        .with_state(state)
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .layer(axum::middleware::map_response(dashboard::security_headers))
        .layer(TraceLayer::new_for_http())
}

/// Serves until `shutdown` (tokio_util CancellationToken) is cancelled, then drains gracefully:
/// the listener stops accepting, idle connections are closed, and requests under way are
/// answered before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_limited(listener, state, limits::DEFAULT_MAX_CONNECTIONS, shutdown).await
}

/// Like [`serve`], with at most `max_connections` open connections (see [`limits`]).
pub(crate) async fn serve_limited(
    listener: tokio::net::TcpListener,
    state: ApiState,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router_limited(listener, router(state), max_connections, shutdown).await
}

/// Like [`serve_limited`], for a router with more routes merged in (the alert routes of
/// `alert::api`).
pub(crate) async fn serve_router_limited(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections, "HTTP server listening");
    }
    let listener = limits::LimitedListener::new(listener, max_connections);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!("HTTP server stopped");
    Ok(())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ApiState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
    }
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    // Gauges that describe the present are read now, so a scrape never shows a stale value.
    state.metrics.set_containers_observed(state.observed.len());
    state.metrics.set_ready(state.ready.load(Ordering::Acquire));
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.encode_as(format),
    )
}
