//! Lambda's read API for functions, as the AWS CLI and SDKs call it: `ListFunctions`
//! (`GET /2015-03-31/functions/`), `GetFunction` (`GET /2015-03-31/functions/{name}`) and
//! `GetFunctionConfiguration` (`…/{name}/configuration`).
//!
//! The documents are built once from the configuration ([`Catalog`]); they describe what runs,
//! in Lambda's `FunctionConfiguration` shape, and hold no secret (no environment values, no
//! execution role's values). With `[auth]`, reading needs the `read-only` or `admin` role.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use impulse_config::{Config, TargetConfig};
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::auth::{Action, RequestHead};

/// `ListFunctions`' default and largest page, as Lambda's.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 10_000;

/// Every function's `FunctionConfiguration`, by name, and what `GetFunction` adds.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    functions: BTreeMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    configuration: Value,
    reserved_concurrency: Option<u32>,
}

impl Catalog {
    /// The documents for `config`'s functions; `last_modified` is when the broker loaded it.
    pub(crate) fn new(config: &Config, last_modified: chrono::DateTime<chrono::Utc>) -> Self {
        // Lambda's format for `LastModified`: `2026-12-07T10:00:00.000+0000`.
        let last_modified = last_modified.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string();
        let functions = config
            .functions
            .iter()
            .map(|(name, function)| {
                let (handler, memory_size, runtime) = match &function.target {
                    TargetConfig::Process(process) => (
                        process.handler.clone(),
                        process.memory_size,
                        Some("provided.al2023"),
                    ),
                    TargetConfig::Http(_) => (None, impulse_config::default_memory_size(), None),
                };
                let role = function.execution_role.as_deref().unwrap_or("impulse");
                let mut configuration = json!({
                    "FunctionName": name,
                    "FunctionArn": format!("arn:aws:lambda:local:000000000000:function:{name}"),
                    "Role": format!("arn:aws:iam::000000000000:role/{role}"),
                    "CodeSize": 0,
                    "Description": "",
                    "Timeout": function.timeout.as_secs(),
                    "MemorySize": memory_size,
                    "LastModified": last_modified,
                    "CodeSha256": "",
                    "Version": "$LATEST",
                    "State": "Active",
                    "LastUpdateStatus": "Successful",
                    "PackageType": "Zip",
                    "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
                    "EphemeralStorage": { "Size": 512 },
                });
                if let Some(handler) = handler {
                    configuration["Handler"] = Value::from(handler);
                }
                if let Some(runtime) = runtime {
                    configuration["Runtime"] = Value::from(runtime);
                }
                let entry = Entry {
                    configuration,
                    reserved_concurrency: function.reserved_concurrency,
                };
                (name.clone(), entry)
            })
            .collect();
        Self { functions }
    }
}

/// Checks that the caller may read functions; a read request has no body.
pub(super) fn authorize(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let head = RequestHead {
        method,
        uri,
        headers,
    };
    state
        .auth
        .check(&head, b"", Action::ReadFunctions)
        .map(drop)
        .map_err(ApiError::from)
}

/// `ListFunctions`: every function in name order, `MaxItems` at a time; `Marker` is the
/// `NextMarker` of the previous page.
pub(super) async fn list_functions(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let page = match query.get("MaxItems") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidParameterValueException",
                    format!("MaxItems must be between 1 and {MAX_PAGE}, not {raw:?}."),
                )
            })?,
    };
    let after = query.get("Marker").map(String::as_str);
    let mut rest = state
        .catalog
        .functions
        .iter()
        .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after));
    let functions: Vec<&Value> = rest
        .by_ref()
        .take(page)
        .map(|(_, entry)| &entry.configuration)
        .collect();
    let mut body = json!({ "Functions": functions });
    if rest.next().is_some() {
        if let Some(last) = functions.last() {
            body["NextMarker"] = last["FunctionName"].clone();
        }
    }
    Ok(Json(body).into_response())
}

/// `GetFunction`: the configuration, the reserved concurrency, and no code location (Impulse
/// runs what the target names).
pub(super) async fn get_function(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let entry = find(&state, &function, &query)?;
    let mut body = json!({
        "Configuration": entry.configuration,
        "Code": { "RepositoryType": "Impulse" },
        "Tags": {},
    });
    if let Some(reserved) = entry.reserved_concurrency {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    Ok(Json(body).into_response())
}

/// `GetFunctionConfiguration`.
pub(super) async fn get_function_configuration(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let entry = find(&state, &function, &query)?;
    Ok(Json(entry.configuration.clone()).into_response())
}

/// The function `raw` names (a name or an ARN, with `$LATEST` or no qualifier).
fn find<'a>(
    state: &'a AppState,
    raw: &str,
    query: &HashMap<String, String>,
) -> Result<&'a Entry, ApiError> {
    let (name, qualifier) = super::invoke::parse_function_name(raw);
    let qualifier = query.get("Qualifier").map(String::as_str).or(qualifier);
    if qualifier.is_some_and(|q| q != "$LATEST") {
        // Versions and aliases do not exist yet.
        return Err(ApiError::not_found(raw));
    }
    state
        .catalog
        .functions
        .get(name)
        .ok_or_else(|| ApiError::not_found(name))
}
