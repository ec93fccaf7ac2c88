//! The admin listener: `/healthz` (alive), `/readyz` (serving, not draining), `/metrics`, and
//! `POST /admin/reload` (re-read the configuration file, `?force=true` to remove functions
//! with queued async events).
//!
//! Health and readiness stay open for probes; `/metrics` needs a principal whose role may read
//! it (`read-only` or `admin`) once `[auth]` configures any, and a reload needs `admin`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::record_refusal;
use crate::auth::{Action, Authenticator, RequestHead};
use crate::reload;

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// True once every listener is bound, false again when shutdown starts.
    pub(crate) ready: Arc<AtomicBool>,
    /// Per source trigger (Redis), whether it can reach its server: `/readyz` names those
    /// that cannot.
    pub(crate) sources: Arc<Mutex<crate::redis_trigger::Connected>>,
    pub(crate) metrics: PrometheusHandle,
    /// The authenticator of the configuration in force.
    pub(crate) auth: Arc<ArcSwap<Authenticator>>,
    /// Where reloads are asked for.
    pub(crate) reload: reload::Requests,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    let unreachable: Vec<String> = state
        .sources
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, connected)| !connected.load(Ordering::Acquire))
        .map(|(name, _)| format!("triggers.{name}: its Redis is unreachable\n"))
        .collect();
    if unreachable.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}", unreachable.concat()),
        )
    }
}

async fn metrics(
    State(state): State<AdminState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&state, &method, &uri, &headers, Action::ReadMetrics) {
        return refused;
    }
    impulse_connectors::telemetry::ready(state.ready.load(Ordering::Acquire));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The answer refusing the caller of a bodiless request, unless it may take `action` under the
/// authenticator in force.
fn refusal(
    state: &AdminState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    action: Action<'_>,
) -> Option<Response> {
    let head = RequestHead {
        method,
        uri,
        headers,
    };
    let denial = state.auth.load().check(&head, b"", action).err()?;
    record_refusal(&denial);
    Some(
        (
            denial.status(),
            [("x-amzn-errortype", denial.error_type())],
            format!("{denial}\n"),
        )
            .into_response(),
    )
}

/// `POST /admin/reload`'s query.
#[derive(Debug, serde::Deserialize)]
struct ReloadQuery {
    #[serde(default)]
    force: bool,
}

/// Asks for a reload and answers its outcome: `200` applied, `422` invalid, `409` refused
/// (with every error), `503` when the broker is shutting down.
async fn reload(
    State(state): State<AdminState>,
    Query(query): Query<ReloadQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refusal(&state, &method, &uri, &headers, Action::Reload) {
        return refused;
    }
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let request = reload::Request {
        force: query.force,
        reply,
    };
    let unavailable = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is shutting down\n",
        )
            .into_response()
    };
    if state.reload.send(request).await.is_err() {
        return unavailable();
    }
    let Ok(outcome) = outcome.await else {
        return unavailable();
    };
    let status = match outcome {
        reload::Outcome::Applied { .. } => StatusCode::OK,
        reload::Outcome::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        reload::Outcome::Refused(_) => StatusCode::CONFLICT,
    };
    (status, axum::Json(outcome.to_json())).into_response()
}
