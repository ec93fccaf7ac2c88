//! The broker's HTTP surfaces: the trigger listener (HTTP triggers and Lambda's Invoke API)
//! and the admin listener (health, readiness, metrics).

mod admin;
mod error;
mod invoke;
mod trigger;

use std::sync::Arc;

use axum::routing::post;
use axum::Router;

pub(crate) use admin::{router as admin_router, AdminState};
pub(crate) use trigger::TriggerRoutes;

use crate::functions::Functions;

/// What the trigger listener's handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) functions: Arc<Functions>,
    pub(crate) triggers: Arc<TriggerRoutes>,
}

/// The trigger listener: Lambda's Invoke API at its usual path; every other path is matched
/// against the configured HTTP triggers.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(invoke::invoke),
        )
        .fallback(trigger::handle)
        .with_state(state)
}

/// A fresh request id (also the event's idempotency key for HTTP input).
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
