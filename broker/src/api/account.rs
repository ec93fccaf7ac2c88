//! Lambda's `GetAccountSettings` (`GET /2016-08-19/account-settings/`): the account's
//! concurrency limits and how many functions it has, from the configuration.
//!
//! Code-size limits and usage have no meaning here (Impulse runs what a target names) and are
//! left out or zero. With `[auth]`, reading needs the `read-only` or `admin` role.

use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use impulse_config::Config;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// The `GetAccountSettings` document for `config`.
pub(crate) fn settings(config: &Config) -> Value {
    let account = config.limits.account_concurrency;
    let reserved: u64 = config
        .functions
        .values()
        .filter_map(|function| function.reserved_concurrency)
        .map(u64::from)
        .sum();
    json!({
        "AccountLimit": {
            "ConcurrentExecutions": account,
            // What functions without reserved concurrency share.
            "UnreservedConcurrentExecutions": u64::from(account).saturating_sub(reserved),
        },
        "AccountUsage": {
            "TotalCodeSize": 0,
            "FunctionCount": config.functions.len(),
        },
    })
}

/// `GetAccountSettings`.
pub(super) async fn get_account_settings(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::read::authorize(&state, &method, &uri, &headers)?;
    Ok(Json(state.account_settings.as_ref().clone()).into_response())
}
