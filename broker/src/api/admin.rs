//! The admin listener: `/healthz` (alive), `/readyz` (serving, not draining), `/metrics`.
//!
//! Health and readiness stay open for probes; `/metrics` needs a principal whose role may read
//! it (`read-only` or `admin`) once `[auth]` configures any.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
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
