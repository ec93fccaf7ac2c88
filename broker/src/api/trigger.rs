//! HTTP triggers: a request on a configured path becomes a function URL event (payload
//! format 2.0), and the function's result becomes the reply (SEMANTICS.md §3). A route's
//! `auth_type` is checked before the function sees anything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use impulse_config::{AuthType, Config, InvocationMode, TriggerConfig};
use impulse_connectors::http::webhook::WebhookVerifier;
use impulse_connectors::http::{decode_response, encode_request, HttpRequest};
use impulse_invoker::{Invocation, InvokeError, Name};
use serde_json::json;

use super::cors::{is_preflight, Cors};
use super::{enqueue, record_refusal, AppState};
use crate::auth::{carries_bearer_token, Action, Denial, RequestHead};
use crate::functions::CallError;
use crate::limiter::Throttle;

/// One configured HTTP trigger, as the router needs it.
#[derive(Debug)]
struct TriggerRoute {
    name: Name,
    function: String,
    /// Empty means any method.
    methods: Vec<Method>,
    body_limit: usize,
    invocation: InvocationMode,
    /// `AWS_IAM`: the caller must be a principal allowed to invoke `function`.
    auth_type: AuthType,
    cors: Option<Cors>,
    /// Set when the trigger has a `[webhook]` table: every request must carry a valid signature.
    webhook: Option<WebhookVerifier>,
}

/// The path table of every HTTP trigger.
#[derive(Debug)]
pub(crate) struct TriggerRoutes {
    router: matchit::Router<TriggerRoute>,
}

impl TriggerRoutes {
    /// Builds the table of HTTP triggers; returns every problem found (conflicting or invalid
    /// path templates), each prefixed with its config path. Other kinds are not routed here.
    pub(crate) fn build(config: &Config) -> Result<Self, Vec<String>> {
        let mut router = matchit::Router::new();
        let mut errors = Vec::new();
        for (name, trigger) in &config.triggers {
            let TriggerConfig::Http(http) = trigger else {
                continue;
            };
            let mut methods = Vec::new();
            for method in &http.methods {
                match Method::from_bytes(method.as_bytes()) {
                    Ok(m) => methods.push(m),
                    Err(_) => errors.push(format!(
                        "triggers.{name}.methods: invalid method {method:?}"
                    )),
                }
            }
            let webhook = match http.webhook.as_ref().map(WebhookVerifier::from_config) {
                None => None,
                Some(Ok(verifier)) => Some(verifier),
                Some(Err(err)) => {
                    errors.push(format!("triggers.{name}.webhook.secret: {err}"));
                    None
                }
            };
            let route = TriggerRoute {
                name: Name::new(name),
                function: http.function.clone(),
                methods,
                body_limit: usize::try_from(http.body_limit()).unwrap_or(usize::MAX),
                invocation: http.invocation,
                auth_type: http.effective_auth_type(&config.auth),
                cors: http.cors.as_ref().map(Cors::new),
                webhook,
            };
            if let Err(err) = router.insert(http.path.as_str(), route) {
                errors.push(format!(
                    "triggers.{name}.path: {:?} cannot be routed: {err}",
                    http.path
                ));
            }
        }
        if errors.is_empty() {
            Ok(Self { router })
        } else {
            Err(errors)
        }
    }
}

/// The fallback handler of the trigger listener: route, read the body, verify its webhook
/// signature, build the function URL event, then invoke (sync) or queue (async).
pub(super) async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_owned();
    let (route, path_parameters) =
        match state
            .triggers
            .route(&path, request.method(), request.headers())
        {
            Ok(found) => found,
            Err(refusal) => return *refusal,
        };
    let Some(cors) = &route.cors else {
        return serve(&state, peer, route, path_parameters, request).await;
    };
    if let Some(preflight) = cors.preflight(request.method(), request.headers()) {
        return preflight;
    }
    let request_headers = request.headers().clone();
    let mut response = serve(&state, peer, route, path_parameters, request).await;
    cors.apply(&request_headers, &mut response);
    response
}

/// Everything after routing: authenticate, read the body, build the event, invoke or queue.
async fn serve(
    state: &AppState,
    peer: SocketAddr,
    route: &TriggerRoute,
    path_parameters: BTreeMap<String, String>,
    request: Request,
) -> Response {
    let received_at = SystemTime::now();
    let path = request.uri().path().to_owned();
    let Some(function) = state.functions.get(&route.function) else {
        // Validation guarantees the function exists; answer sanely if that ever breaks.
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let (mut parts, body) = request.into_parts();
    // Unknown callers are refused before the body is read.
    let credential = match route.auth_type {
        AuthType::None => None,
        AuthType::AwsIam => match state.auth.identify(&parts.headers) {
            Ok(credential) => Some(credential),
            Err(denial) => return refused(&denial),
        },
    };
    let Ok(body) = axum::body::to_bytes(body, route.body_limit).await else {
        return message(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "Request body exceeds this trigger's limit of {} bytes.",
                route.body_limit
            ),
        );
    };
    if let Some(credential) = credential {
        let head = RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
        };
        let allowed = credential
            .confirm(&head, &body, received_at)
            .and_then(|principal| {
                let action = Action::Invoke {
                    function: &function.name,
                };
                state.auth.authorize(principal.as_ref(), action)
            });
        if let Err(denial) = allowed {
            return refused(&denial);
        }
        // A bearer token is a credential: the function must not be able to replay it.
        if carries_bearer_token(&parts.headers) {
            parts.headers.remove(axum::http::header::AUTHORIZATION);
        }
    }
    // Over the exact bytes received, before anything parses them; nothing runs or queues on failure.
    if let Some(verifier) = &route.webhook {
        if let Err(reason) = verifier.verify(&parts.headers, &body, received_at) {
            tracing::warn!(trigger = route.name.as_str(), reason = reason.code(), error = %reason, "Refused a webhook request whose signature does not verify.");
            return message(
                StatusCode::UNAUTHORIZED,
                &format!("Invalid webhook signature: {reason}"),
            );
        }
    }
    // Also the event's idempotency key for HTTP input.
    let request_id = crate::request_id::new();
    let payload = encode_request(&HttpRequest {
        method: &parts.method,
        path: &path,
        query: parts.uri.query().unwrap_or_default(),
        version: parts.version,
        headers: &parts.headers,
        body: &body,
        source_ip: peer.ip(),
        request_id: &request_id,
        received_at,
        path_parameters: &path_parameters,
        trigger: &route.name,
    });
    let mut response = match route.invocation {
        InvocationMode::Async => {
            match enqueue(state, &request_id, function, &route.name, payload).await {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    Json(json!({ "requestId": request_id })),
                )
                    .into_response(),
                Err(err) => err.into_response(),
            }
        }
        InvocationMode::Sync => {
            let invocation = Invocation {
                request_id: request_id.clone(),
                function: function.name,
                trigger: route.name,
                payload,
                deadline: None,
                client_context: None,
                log_tail: None,
            };
            // Never queued: admitted now, or 429 at once (without a request id: nothing ran).
            match function.call_now(invocation).await {
                Ok(result) => reply(&result.payload, &route.name, &request_id),
                Err(CallError::NotAdmitted(throttle)) => return throttled(throttle),
                Err(CallError::Failed(err)) => failure(&err, &route.name, &request_id),
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

impl TriggerRoutes {
    /// The trigger for `path` and `method`, with the path's captured parameters; or the reply
    /// refusing the request (`404` for no trigger, `405` with `Allow` for another method). A
    /// CORS preflight reaches a route with CORS settings whatever its methods.
    fn route(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(&TriggerRoute, BTreeMap<String, String>), Box<Response>> {
        let Ok(matched) = self.router.at(path) else {
            if super::is_lambda_api_path(path) {
                return Err(Box::new(
                    super::error::ApiError::unknown_operation(method, path).into_response(),
                ));
            }
            return Err(Box::new(message(
                StatusCode::NOT_FOUND,
                "No trigger is configured for this path.",
            )));
        };
        let route = matched.value;
        let preflight = route.cors.is_some() && is_preflight(method, headers);
        if !route.methods.is_empty() && !route.methods.contains(method) && !preflight {
            let allow = route
                .methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response
                    .headers_mut()
                    .insert(axum::http::header::ALLOW, value);
            }
            return Err(Box::new(response));
        }
        let parameters = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok((route, parameters))
    }
}

fn reply(payload: &[u8], trigger: &str, request_id: &str) -> Response {
    let reply = match decode_response(payload) {
        Ok(reply) => reply,
        Err(err) => {
            tracing::warn!(trigger, request_id, error = %err, "The function's response cannot be mapped to HTTP.");
            return message(StatusCode::BAD_GATEWAY, "Internal Server Error");
        }
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, Body::from(reply.body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => {
                tracing::warn!(trigger, request_id, header = %name, "Dropped an invalid response header.")
            }
        }
    }
    response
}

/// Function URLs answer 502 for function errors and timeouts, and 429 for throttles.
fn failure(err: &InvokeError, trigger: &str, request_id: &str) -> Response {
    tracing::warn!(trigger, request_id, error_code = err.error_code(), error = %err, "Invocation failed.");
    match err {
        InvokeError::Throttled => message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded."),
        InvokeError::Permanent { status: 413, .. } => {
            message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
        }
        _ => message(StatusCode::BAD_GATEWAY, "Internal Server Error"),
    }
}

/// Function URLs answer a throttle with `429` and Lambda's reason.
fn throttled(throttle: Throttle) -> Response {
    let body = json!({ "Message": throttle.message(), "Reason": throttle.reason() });
    (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
}

/// A refused caller: `401` or `403` with Lambda's error type, as the Invoke API answers.
fn refused(denial: &Denial) -> Response {
    record_refusal(denial);
    let mut response = message(denial.status(), &denial.to_string());
    response.headers_mut().insert(
        "x-amzn-errortype",
        HeaderValue::from_static(denial.error_type()),
    );
    response
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "Message": text }))).into_response()
}
