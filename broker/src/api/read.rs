//! Lambda's read API for functions, as the AWS CLI and SDKs call it: `ListFunctions`
//! (`GET /2015-03-31/functions/`), `GetFunction` (`GET /2015-03-31/functions/{name}`) and
//! `GetFunctionConfiguration` (`…/{name}/configuration`), each with an optional `Qualifier`;
//! `ListVersionsByFunction` (`…/{name}/versions`), `ListAliases` (`…/{name}/aliases`) and
//! `GetAlias` (`…/{name}/aliases/{alias}`). Every write operation on these paths answers
//! [`read_only`]: the configuration file is the source of truth.
//!
//! The documents are built once from the configuration ([`Catalog`]); they describe what runs,
//! in Lambda's `FunctionConfiguration` shape, and hold no secret (no environment values, no
//! execution role's values). With `[auth]`, reading needs the `read-only` or `admin` role.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use impulse_config::{AliasConfig, Config, FunctionConfig, TargetConfig, VersionConfig, LATEST};
use impulse_invoker::record::version_arn;
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
    /// `$LATEST`'s configuration, with the unqualified ARN.
    configuration: Value,
    reserved_concurrency: Option<u32>,
    /// `$LATEST` then each published version in number order, each with its qualified ARN:
    /// `ListVersionsByFunction`'s list.
    versions: Vec<(String, Value)>,
    /// `AliasConfiguration`s by alias name.
    aliases: BTreeMap<String, Value>,
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
                let describe = |version: Option<(&str, &VersionConfig)>| {
                    configuration(name, function, version, &last_modified)
                };
                let mut latest = describe(None);
                let mut versions = vec![(LATEST.to_owned(), latest.clone())];
                latest["FunctionArn"] = Value::from(impulse_invoker::record::unqualified_arn(name));
                let mut numbered: Vec<(&String, &VersionConfig)> =
                    function.versions.iter().collect();
                // Version numbers have no leading zeros: shorter is smaller.
                numbered.sort_by_key(|(number, _)| (number.len(), number.as_str()));
                versions.extend(numbered.into_iter().map(|(number, version)| {
                    (number.clone(), describe(Some((number.as_str(), version))))
                }));
                let aliases = function
                    .aliases
                    .iter()
                    .map(|(alias, settings)| {
                        (alias.clone(), alias_configuration(name, alias, settings))
                    })
                    .collect();
                let entry = Entry {
                    configuration: latest,
                    reserved_concurrency: function.reserved_concurrency,
                    versions,
                    aliases,
                };
                (name.clone(), entry)
            })
            .collect();
        Self { functions }
    }
}

/// Lambda's `FunctionConfiguration` of `version` (`None`: `$LATEST`) of function `name`, with
/// the qualified ARN.
fn configuration(
    name: &str,
    function: &FunctionConfig,
    version: Option<(&str, &VersionConfig)>,
    last_modified: &str,
) -> Value {
    let target = version.map_or(&function.target, |(_, version)| &version.target);
    let (handler, memory_size, runtime) = match target {
        TargetConfig::Process(process) => (
            process.handler.clone(),
            process.memory_size,
            Some("provided.al2023"),
        ),
        TargetConfig::Http(_) => (None, impulse_config::default_memory_size(), None),
    };
    let label = version.map_or(LATEST, |(number, _)| number);
    let description = version
        .and_then(|(_, version)| version.description.as_deref())
        .unwrap_or_default();
    let role = function.execution_role.as_deref().unwrap_or("impulse");
    let mut configuration = json!({
        "FunctionName": name,
        "FunctionArn": version_arn(name, label),
        "Role": format!("arn:aws:iam::000000000000:role/{role}"),
        "CodeSize": 0,
        "Description": description,
        "Timeout": function.timeout_of(version.map(|(_, version)| version)).as_secs(),
        "MemorySize": memory_size,
        "LastModified": last_modified,
        "CodeSha256": "",
        "Version": label,
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
    configuration
}

/// Lambda's `AliasConfiguration`.
fn alias_configuration(name: &str, alias: &str, settings: &AliasConfig) -> Value {
    let mut configuration = json!({
        "AliasArn": version_arn(name, alias),
        "Name": alias,
        "FunctionVersion": settings.version,
        "Description": settings.description.as_deref().unwrap_or_default(),
        // Aliases change only with the configuration file: a stable revision per content.
        "RevisionId": revision_id(name, alias, settings),
    });
    if !settings.routing.is_empty() {
        configuration["RoutingConfig"] = json!({ "AdditionalVersionWeights": settings.routing });
    }
    configuration
}

/// A UUID-shaped id that changes when the alias's settings do (SDKs pass it back as an
/// optimistic-locking token, which Impulse never checks since nothing is written).
fn revision_id(name: &str, alias: &str, settings: &AliasConfig) -> String {
    use sha2::Digest as _;
    let text = format!("{name}\0{alias}\0{settings:?}");
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    )
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
    let page = page_size(&query, DEFAULT_PAGE)?;
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

/// `MaxItems`: the operation's default page, or the caller's within Lambda's bounds.
pub(super) fn page_size(
    query: &HashMap<String, String>,
    default: usize,
) -> Result<usize, ApiError> {
    match query.get("MaxItems") {
        None => Ok(default),
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
            }),
    }
}

/// One page of `items` (in their order) under `field`: `MaxItems` at a time, starting after
/// the item keyed `Marker`; `NextMarker` is the last key of a page that has a successor.
fn paginate<'a>(
    field: &str,
    items: impl IntoIterator<Item = (&'a str, &'a Value)>,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let page = page_size(query, DEFAULT_PAGE)?;
    let mut rest = items.into_iter();
    if let Some(marker) = query.get("Marker") {
        // Skip up to and including the marker; an unknown marker ends the list.
        rest.by_ref().find(|(key, _)| key == marker);
    }
    let mut last = None;
    let mut listed = Vec::new();
    for (key, value) in rest.by_ref().take(page) {
        last = Some(key);
        listed.push(value);
    }
    let mut body = json!({ field: listed });
    if let (Some(last), Some(_)) = (last, rest.next()) {
        body["NextMarker"] = Value::from(last);
    }
    Ok(body)
}

/// `ListVersionsByFunction` (`GET /2015-03-31/functions/{name}/versions`): `$LATEST`, then each
/// published version in number order.
pub(super) async fn list_versions(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let entry = unqualified(&state, &function)?;
    let versions = entry
        .versions
        .iter()
        .map(|(number, configuration)| (number.as_str(), configuration));
    Ok(Json(paginate("Versions", versions, &query)?).into_response())
}

/// `ListAliases` (`GET /2015-03-31/functions/{name}/aliases`), in name order; `FunctionVersion`
/// keeps the aliases of one version.
pub(super) async fn list_aliases(
    State(state): State<AppState>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let entry = unqualified(&state, &function)?;
    let version = query.get("FunctionVersion");
    let aliases = entry
        .aliases
        .iter()
        .filter(|(_, alias)| version.is_none_or(|v| alias["FunctionVersion"] == v.as_str()))
        .map(|(name, alias)| (name.as_str(), alias));
    Ok(Json(paginate("Aliases", aliases, &query)?).into_response())
}

/// `GetAlias` (`GET /2015-03-31/functions/{name}/aliases/{alias}`).
pub(super) async fn get_alias(
    State(state): State<AppState>,
    Path((function, alias)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &method, &uri, &headers)?;
    let entry = unqualified(&state, &function)?;
    let (name, _) = super::invoke::parse_function_name(&function);
    let configuration = entry.aliases.get(&alias).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Alias not found: {}", version_arn(name, &alias)),
        )
    })?;
    Ok(Json(configuration.clone()).into_response())
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
    let found = find(&state, &function, &query)?;
    Ok(Json(found.configuration).into_response())
}

/// The configuration `raw` names (a name or an ARN, with or without a qualifier; or the
/// `Qualifier` parameter): `$LATEST`'s, a version's, or for an alias its version's with the
/// alias's ARN, as Lambda answers.
fn find(state: &AppState, raw: &str, query: &HashMap<String, String>) -> Result<Found, ApiError> {
    let (name, qualifier) = super::invoke::parse_function_name(raw);
    let qualifier = super::invoke::qualifier_of(qualifier, query)?;
    let not_found = || ApiError::not_found(&super::invoke::qualified_arn(name, qualifier));
    let entry = state.catalog.functions.get(name).ok_or_else(not_found)?;
    let Some(qualifier) = qualifier else {
        return Ok(Found {
            configuration: entry.configuration.clone(),
            reserved_concurrency: entry.reserved_concurrency,
        });
    };
    let version = |number: &str| {
        entry
            .versions
            .iter()
            .find(|(key, _)| key == number)
            .map(|(_, configuration)| configuration.clone())
    };
    let configuration = match entry.aliases.get(qualifier) {
        Some(alias) => {
            let number = alias["FunctionVersion"].as_str().unwrap_or(LATEST);
            let mut configuration = version(number).ok_or_else(not_found)?;
            configuration["FunctionArn"] = alias["AliasArn"].clone();
            configuration
        }
        None => version(qualifier).ok_or_else(not_found)?,
    };
    Ok(Found {
        configuration,
        reserved_concurrency: entry.reserved_concurrency,
    })
}

/// What `GetFunction` and `GetFunctionConfiguration` describe.
struct Found {
    configuration: Value,
    reserved_concurrency: Option<u32>,
}

/// The function `raw` names, which must not be qualified (`ListVersionsByFunction`,
/// `ListAliases`, `GetAlias` take a bare name or ARN).
fn unqualified<'a>(state: &'a AppState, raw: &str) -> Result<&'a Entry, ApiError> {
    let (name, qualifier) = super::invoke::parse_function_name(raw);
    if qualifier.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            "This operation takes an unqualified function name or ARN.",
        ));
    }
    state
        .catalog
        .functions
        .get(name)
        .ok_or_else(|| ApiError::not_found(&super::invoke::qualified_arn(name, None)))
}

/// The answer to a write operation (`CreateFunction`, `UpdateFunctionCode`, `PublishVersion`,
/// `CreateAlias`, `DeleteFunction`, …): `403 AccessDeniedException`, what real Lambda answers a
/// caller whose policy denies the write, so SDKs and scripts already treat it as "not allowed"
/// and never retry it. The message says where the change belongs instead.
///
/// The request's body (a function's code, say) is read and dropped first: a connection whose
/// request body was left unread cannot carry the next request, and an SDK that already sent
/// one on it would see the connection closed instead of this answer.
pub(super) async fn read_only(method: Method, uri: Uri, body: axum::body::Body) -> ApiError {
    // Past the limit the connection is closed anyway; the answer is the same.
    let _unread = axum::body::to_bytes(body, impulse_config::SYNC_PAYLOAD_LIMIT).await;
    ApiError::new(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        format!(
            "{method} {} would change a function, but Impulse's functions, versions and aliases \
             are defined by its configuration file, which is the source of truth: edit \
             [functions.<name>] there and restart the broker.",
            uri.path()
        ),
    )
}
