//! The broker's HTTP surfaces: the trigger listener (HTTP triggers and Lambda's Invoke API)
//! and the admin listener (health, readiness, metrics).

mod account;
mod admin;
mod cors;
mod error;
mod invoke;
mod log_result;
mod mappings;
#[cfg(test)]
mod proptests;
mod read;
mod trigger;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use impulse_connectors::contract::{Queue, QueuedEvent};
use impulse_connectors::telemetry;

pub(crate) use account::settings as account_settings;
pub(crate) use admin::{router as admin_router, AdminState};
pub(crate) use mappings::Mappings;
pub(crate) use read::Catalog;
pub(crate) use trigger::TriggerRoutes;

use crate::auth::{Authenticator, Denial};
use crate::functions::{Function, Functions};
use crate::limiter::Throttle;

/// What the trigger listener's handlers share. axum clones the state for every request: one
/// reference count to update, not one per field (each a count every worker thread touches).
#[derive(Clone)]
pub(crate) struct AppState(Arc<AppShared>);

impl AppState {
    pub(crate) fn new(shared: AppShared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub(crate) struct AppShared {
    pub(crate) functions: Arc<Functions>,
    pub(crate) triggers: Arc<TriggerRoutes>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) auth: Arc<Authenticator>,
    /// The documents of the read API.
    pub(crate) catalog: Arc<Catalog>,
    /// The event source mappings (Kafka and Redis triggers) of the read API.
    pub(crate) mappings: Arc<Mappings>,
    /// The `GetAccountSettings` document.
    pub(crate) account_settings: Arc<serde_json::Value>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The trigger listener: Lambda's Invoke and read APIs at their usual paths; every other path
/// is matched against the configured HTTP triggers.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/2015-03-31/functions/{function}/invocations",
            post(invoke::invoke).fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions",
            get(read::list_functions)
                .post(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/",
            get(read::list_functions)
                .post(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}",
            get(read::get_function)
                .delete(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(read::get_function_configuration)
                .put(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}/code",
            put(read::read_only).fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}/versions",
            get(read::list_versions)
                .post(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases",
            get(read::list_aliases)
                .post(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases/{alias}",
            get(read::get_alias)
                .put(read::read_only)
                .delete(read::read_only)
                .fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/event-source-mappings",
            get(mappings::list_mappings).fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/event-source-mappings/",
            get(mappings::list_mappings).fallback(unknown_operation),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(mappings::get_mapping).fallback(unknown_operation),
        )
        .route(
            "/2016-08-19/account-settings",
            get(account::get_account_settings).fallback(unknown_operation),
        )
        .route(
            "/2016-08-19/account-settings/",
            get(account::get_account_settings).fallback(unknown_operation),
        )
        .fallback(trigger::handle)
        .with_state(state)
}

/// The trigger listener of a broker whose configuration may be reloaded: each request is
/// served by the router of the generation in force when it arrives, and keeps that router
/// (its functions, triggers and auth) until it is answered.
pub(crate) fn live_router(current: Arc<arc_swap::ArcSwap<Router>>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        let router = Router::clone(&current.load());
        tower::ServiceExt::oneshot(router, request)
    }))
}

/// A Lambda API operation Impulse does not implement (e.g. `CreateFunction`): an error the
/// SDKs can name, rather than a bare 404 or 405.
async fn unknown_operation(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::unknown_operation(&method, uri.path())
}

/// Whether `path` is in Lambda's API namespace (`/2015-03-31/…`, `/2021-10-31/…`: every
/// Lambda API path starts with its version date).
pub(crate) fn is_lambda_api_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() > 12
        && bytes[0] == b'/'
        && bytes[11] == b'/'
        && bytes[1..11].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// Durably queues an async invocation of `function` (qualified as its caller named it: an
/// alias picks its version at each attempt); only then may the caller answer `202`.
async fn enqueue(
    state: &AppState,
    id: &str,
    function: &Function,
    trigger: &str,
    payload: Bytes,
) -> Result<(), error::ApiError> {
    let event = QueuedEvent::new(
        id.to_owned(),
        function.qualified.to_string(),
        trigger.to_owned(),
        payload,
    );
    let function = function.name.as_str();
    match state.queue.enqueue(event).await {
        Ok(()) => {
            telemetry::async_event_enqueued(function);
            Ok(())
        }
        Err(err) => {
            tracing::error!(function, id, error = %err, "Cannot queue an async invocation.");
            Err(error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                "The event could not be queued durably; it was not accepted. Retry later.",
            ))
        }
    }
}

/// Lambda's `TooManyRequestsException` for a synchronous call the limiter refused.
fn throttled(throttle: Throttle) -> error::ApiError {
    error::ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        throttle.error_type(),
        throttle.message(),
    )
    .with_reason(throttle.reason())
}

/// Lambda's answer to a refused caller (`401` unknown, `403` not allowed).
impl From<Denial> for error::ApiError {
    fn from(denial: Denial) -> Self {
        record_refusal(&denial);
        Self::new(denial.status(), denial.error_type(), denial.to_string())
    }
}

/// Counts a refusal and logs it at debug level (a flood of bad requests must not flood the
/// log); the message never holds the credential.
pub(super) fn record_refusal(denial: &Denial) {
    telemetry::auth_refused(denial.error_type());
    tracing::debug!(error_type = denial.error_type(), reason = %denial, "Refused a request.");
}
