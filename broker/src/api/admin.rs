//! The admin listener: `/healthz` (alive), `/readyz` (serving, not draining), `/metrics`.
//!
//! Health and readiness stay open for probes; `/metrics` needs a principal whose role may read
//! it (`read-only` or `admin`) once `[auth]` configures any.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::record_refusal;
use crate::auth::{Action, Authenticator, RequestHead};

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// True once every listener is bound, false again when shutdown starts.
    pub(crate) ready: Arc<AtomicBool>,
    /// Per source trigger (Redis), whether it can reach its server: `/readyz` names those
    /// that cannot.
    pub(crate) sources: Arc<Mutex<crate::redis_trigger::Connected>>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) auth: Arc<Authenticator>,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
    let head = RequestHead {
        method: &method,
        uri: &uri,
        headers: &headers,
    };
    if let Err(denial) = state.auth.check(&head, b"", Action::ReadMetrics) {
        record_refusal(&denial);
        return (
            denial.status(),
            [("x-amzn-errortype", denial.error_type())],
            format!("{denial}\n"),
        )
            .into_response();
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
