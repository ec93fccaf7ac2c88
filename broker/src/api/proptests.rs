//! Property tests of the trigger listener as a client drives it: Invoke API requests (function
//! names and ARNs, qualifiers, invocation and log types, client contexts, credentials, bodies)
//! and HTTP trigger requests (function URL events in, any function result out). Nothing
//! panics, nothing answers 5xx but a function's own result, and every answer is the one the
//! request called for.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use impulse_connectors::contract::{Delivery, LeaseId, Queue, QueueError, QueuedEvent};
use impulse_invoker::{Invocation, InvocationResponse, Invoke, TargetFuture};
use impulse_test_support::prop::{
    body_from, check, drawn, header_name_from, header_value_from, Draw,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, AppShared, AppState, TriggerRoutes};
use crate::auth::Authenticator;
use crate::functions::{standalone, Functions};

const CONFIG: &str = r#"
[functions.echo]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }

[functions.mirror]
target = { type = "http", endpoint = "http://127.0.0.1:9/" }

[triggers.hook]
type = "http"
function = "echo"
path = "/hook/{id}"
methods = ["GET", "POST"]
auth_type = "NONE"

[triggers.reply]
type = "http"
function = "mirror"
path = "/reply"
auth_type = "NONE"

[triggers.queued]
type = "http"
function = "echo"
path = "/queued"
invocation = "async"
auth_type = "NONE"

[triggers.cors]
type = "http"
function = "echo"
path = "/cors"
auth_type = "NONE"
cors = { allow_origins = ["https://app.example.com"], allow_methods = ["POST"] }

[auth.tokens.ci]
role = "invoker"
token = "canary-token-0123456789"

[auth.access_keys.deploy]
role = "admin"
access_key_id = "AKIDEXAMPLE00000"
secret_access_key = "canary-secret-access-key"
"#;

const TOKEN: &str = "canary-token-0123456789";

/// Answers with the invocation's payload.
struct Echo;

impl Invoke for Echo {
    type Future = TargetFuture;

    fn invoke(&self, invocation: Invocation) -> TargetFuture {
        Box::pin(async move {
            Ok(InvocationResponse {
                payload: invocation.payload,
            })
        })
    }
}

/// Answers with the body of the function URL event it gets: the client picks the result.
struct Mirror;

impl Invoke for Mirror {
    type Future = TargetFuture;

    fn invoke(&self, invocation: Invocation) -> TargetFuture {
        Box::pin(async move {
            let event: Value = serde_json::from_slice(&invocation.payload).unwrap_or_default();
            let body = event["body"].as_str().unwrap_or_default();
            let payload = if event["isBase64Encoded"] == true {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default()
            } else {
                body.as_bytes().to_vec()
            };
            Ok(InvocationResponse {
                payload: payload.into(),
            })
        })
    }
}

/// Keeps the last few events it is given.
#[derive(Default)]
struct Recorder(Mutex<VecDeque<QueuedEvent>>);

impl Recorder {
    fn take(&self) -> Option<QueuedEvent> {
        self.0.lock().expect("not poisoned").pop_back()
    }
}

impl Queue for Recorder {
    fn enqueue(&self, event: QueuedEvent) -> BoxFuture<'_, Result<(), QueueError>> {
        let mut events = self.0.lock().expect("not poisoned");
        events.clear();
        events.push_back(event);
        Box::pin(async { Ok(()) })
    }

    fn next(&self) -> BoxFuture<'_, Result<Delivery, QueueError>> {
        Box::pin(futures::future::pending())
    }

    fn complete(&self, _lease: LeaseId) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }

    fn reschedule(
        &self,
        _lease: LeaseId,
        _event: QueuedEvent,
        _not_before: SystemTime,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    queue: Arc<Recorder>,
}

fn harness() -> Harness {
    let config = impulse_config::parse(
        CONFIG,
        impulse_config::Format::Toml,
        "t.toml",
        &BTreeMap::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let echo = standalone("echo", &config.functions["echo"], Echo);
    let mirror = standalone("mirror", &config.functions["mirror"], Mirror);
    let queue = Arc::new(Recorder::default());
    let router = router(AppState::new(AppShared {
        functions: Arc::new(Functions::of([echo, mirror])),
        triggers: Arc::new(TriggerRoutes::build(&config).expect("valid routes")),
        queue: queue.clone(),
        auth: Arc::new(Authenticator::new(&config)),
        catalog: Arc::new(super::Catalog::new(&config, chrono::Utc::now())),
        mappings: Arc::new(super::Mappings::new(&config, chrono::Utc::now())),
        account_settings: Arc::new(super::account_settings(&config)),
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    Harness {
        runtime,
        router,
        queue,
    }
}

async fn send(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
    let mut request = request;
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 7], 40000))));
    let response = router.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("an in-memory body").to_bytes();
    (parts.status, body.to_vec(), parts.headers)
}

// === the Invoke API ===

/// An Invoke API request, and what it should get when it is well formed.
#[derive(Debug, Clone)]
struct InvokeCase {
    /// The `{function}` path segment, percent-encoded.
    function: String,
    query: String,
    invocation_type: Option<Vec<u8>>,
    /// Random headers: log type, client context, credentials, noise.
    headers: Vec<(String, Vec<u8>)>,
    /// `Some`: a well-formed request whose outcome is known: the qualifier asked for (path or
    /// query), whether the function exists, and whether path and query name different
    /// qualifiers (Lambda's `InvalidParameterValueException`).
    known: Option<(Option<String>, bool, bool)>,
    /// Sends the configured bearer token (else the credential is whatever the headers hold).
    authenticated: bool,
    body: Vec<u8>,
}

fn invoke_case(d: &mut Draw<'_>) -> InvokeCase {
    let (function, path_qualifier, exists) = match d.below(6) {
        0 => ("echo".to_owned(), None, true),
        1 => ("echo:$LATEST".to_owned(), Some("$LATEST"), true),
        2 => ("echo:prod".to_owned(), Some("prod"), true),
        3 => (
            "arn:aws:lambda:us-east-1:123456789012:function:echo".to_owned(),
            None,
            true,
        ),
        4 => ("nope".to_owned(), None, false),
        _ => (d.string(12), None, false),
    };
    let random_function = !matches!(
        function.as_str(),
        "echo" | "echo:$LATEST" | "echo:prod" | "nope"
    ) && !function.starts_with("arn:");
    let (query, query_qualifier, random_query) = match d.below(5) {
        0 | 1 => (String::new(), None, false),
        2 => ("Qualifier=%24LATEST".to_owned(), Some("$LATEST"), false),
        3 => ("Qualifier=v1".to_owned(), Some("v1"), false),
        _ => (d.string_of(b"Qualifier=%24LATESTx&+", 24), None, true),
    };
    let invocation_type = match d.below(6) {
        0 => None,
        1 => Some(b"RequestResponse".to_vec()),
        2 => Some(b"Event".to_vec()),
        3 => Some(b"DryRun".to_vec()),
        _ => Some(header_value_from(d)),
    };
    let mut headers = Vec::new();
    for _ in 0..d.below(4) {
        let (name, value) = match d.below(4) {
            0 => (
                "x-amz-log-type".to_owned(),
                d.pick(&[&b"None"[..], b"Tail", b"tail", b""]).to_vec(),
            ),
            1 => (
                "x-amz-client-context".to_owned(),
                base64::engine::general_purpose::STANDARD
                    .encode(d.json(2).to_string())
                    .into_bytes(),
            ),
            2 => ("authorization".to_owned(), authorization_from(d)),
            _ => (header_name_from(d), header_value_from(d)),
        };
        headers.push((name, value));
    }
    let authenticated = d.chance(200);
    let random =
        random_function || random_query || headers.iter().any(|(n, _)| n == "authorization");
    InvokeCase {
        function: percent_encoding::utf8_percent_encode(
            &function,
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string(),
        query,
        invocation_type,
        headers,
        known: (!random).then(|| {
            (
                query_qualifier.or(path_qualifier).map(str::to_owned),
                exists,
                matches!((path_qualifier, query_qualifier), (Some(p), Some(q)) if p != q),
            )
        }),
        authenticated,
        body: body_from(d),
    }
}

/// Credentials as clients send them: bearer tokens right and wrong, SigV4 headers with random
/// parts, other schemes.
fn authorization_from(d: &mut Draw<'_>) -> Vec<u8> {
    let text = match d.below(5) {
        0 => format!("Bearer {}", d.pick(&[TOKEN, "wrong", ""])),
        1 => format!("bearer  {TOKEN} "),
        2 => format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/us-east-1/{}/aws4_request, SignedHeaders={}, Signature={}",
            d.pick(&["AKIDEXAMPLE00000", "AKIDOTHER0000000", ""]),
            d.pick(&["20261207", "2026120", "abcdefgh"]),
            d.pick(&["lambda", "s3"]),
            d.pick(&["host;x-amz-date", "host", "x-amz-date", "Host", ""]),
            d.string_of(b"0123456789abcdef", 66),
        ),
        3 => format!("AWS4-HMAC-SHA256 {}", d.string_of(b"Credential=/,; SignedHeaders=host", 60)),
        _ => return header_value_from(d),
    };
    text.into_bytes()
}

/// Whether the first `X-Amz-Client-Context` sent, if any, is what Lambda accepts: base64 of a
/// JSON object, at most 3,583 bytes.
fn client_context_ok(headers: &[(String, Vec<u8>)]) -> bool {
    use base64::Engine as _;
    let Some((_, value)) = headers.iter().find(|(name, value)| {
        name == "x-amz-client-context" && HeaderValue::from_bytes(value).is_ok()
    }) else {
        return true;
    };
    value.len() <= 3583
        && base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|json| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
            })
            .is_some()
}

fn is_json(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .ok()
        .is_some_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

#[test]
fn invoke_api_requests_get_the_answer_they_call_for() {
    let h = harness();
    check("api::invoke", drawn(768, invoke_case), |case| {
        h.runtime.block_on(invoke(&h, case))
    });
}

async fn invoke(h: &Harness, case: InvokeCase) -> TestCaseResult {
    let mut uri = format!("/2015-03-31/functions/{}/invocations", case.function);
    if !case.query.is_empty() {
        uri = format!("{uri}?{}", case.query);
    }
    let mut request = Request::post(uri);
    if let Some(value) = case
        .invocation_type
        .as_deref()
        .and_then(|v| HeaderValue::from_bytes(v).ok())
    {
        request = request.header("x-amz-invocation-type", value);
    }
    for (name, value) in &case.headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(name.as_str(), value);
        }
    }
    if case.authenticated && !case.headers.iter().any(|(n, _)| n == "authorization") {
        request = request.header("authorization", format!("Bearer {TOKEN}"));
    }
    let Ok(request) = request.body(Body::from(case.body.clone())) else {
        return Ok(());
    };
    let sent_type = request
        .headers()
        .get("x-amz-invocation-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let authorized = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {TOKEN}").as_bytes());
    let (status, body, _) = send(&h.router, request).await;
    prop_assert!(
        !status.is_server_error(),
        "{} {}",
        status,
        String::from_utf8_lossy(&body)
    );
    let queued = h.queue.take();
    prop_assert_eq!(queued.is_some(), status == StatusCode::ACCEPTED);

    let Some((qualifier, exists, conflict)) = case.known else {
        return Ok(());
    };
    let invocation_type = sent_type.unwrap_or_else(|| "RequestResponse".to_owned());
    let valid_type = matches!(
        invocation_type.as_str(),
        "RequestResponse" | "Event" | "DryRun"
    );
    let payload = if case.body.is_empty() {
        b"{}".to_vec()
    } else {
        case.body.clone()
    };
    // In Lambda's order: who is calling (before the body is read), what it asks for, then the
    // body.
    let expected = if !authorized {
        StatusCode::UNAUTHORIZED
    } else if !valid_type || conflict {
        StatusCode::BAD_REQUEST
    } else if qualifier.is_some_and(|q| q != "$LATEST") || !exists {
        StatusCode::NOT_FOUND
    } else if invocation_type == "DryRun" {
        StatusCode::NO_CONTENT
    } else if !is_json(&payload) {
        // Lambda's InvalidRequestContentException, invalid UTF-8 inside strings included.
        StatusCode::BAD_REQUEST
    } else if invocation_type == "Event" {
        StatusCode::ACCEPTED
    } else if !client_context_ok(&case.headers) {
        // Checked for synchronous invocations, the only ones it reaches.
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    prop_assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
    match status {
        StatusCode::OK => prop_assert_eq!(&body, &payload),
        StatusCode::ACCEPTED => {
            prop_assert_eq!(queued.map(|e| e.payload), Some(Bytes::from(payload)));
        }
        _ => {}
    }
    Ok(())
}

// === HTTP triggers ===

#[derive(Debug, Clone)]
struct TriggerCase {
    method: Method,
    /// Percent-encoded path and query.
    uri: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn trigger_case(d: &mut Draw<'_>) -> TriggerCase {
    let method = if d.chance(220) {
        d.pick(&[Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
    } else {
        Method::from_bytes(d.string_of(b"ABCXYZ!#$%&'*+.^_`|~-", 8).as_bytes()).unwrap_or_default()
    };
    let path = match d.below(6) {
        0 | 1 => format!("/hook/{}", d.string_of(b"abc019%._~!$&'()*+,;=:@-", 12)),
        2 => "/reply".to_owned(),
        3 => "/queued".to_owned(),
        4 => "/cors".to_owned(),
        _ => format!("/{}", d.string_of(b"abhook/{}%.-", 16)),
    };
    let query = if d.chance(128) {
        String::new()
    } else {
        format!("?{}", d.string_of(b"abc019%+=&,;/?", 40))
    };
    let headers = (0..d.below(6))
        .map(|_| (header_name_from(d), header_value_from(d)))
        .collect();
    TriggerCase {
        method,
        uri: format!("{path}{query}"),
        headers,
        body: body_from(d),
    }
}

#[test]
fn http_trigger_requests_become_faithful_events_and_results_become_replies() {
    let h = harness();
    check("api::trigger", drawn(768, trigger_case), |case| {
        h.runtime.block_on(trigger(&h, case))
    });
}

async fn trigger(h: &Harness, case: TriggerCase) -> TestCaseResult {
    let mut request = Request::builder()
        .method(case.method.clone())
        .uri(case.uri.as_str());
    for (name, value) in &case.headers {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(name.as_str(), value);
        }
    }
    let Ok(request) = request.body(Body::from(case.body.clone())) else {
        return Ok(());
    };
    let path = request.uri().path().to_owned();
    let (status, body, headers) = send(&h.router, request).await;
    let queued = h.queue.take();
    if path == "/reply" {
        // Whatever the function answers maps to a reply as function URLs map it, or 502.
        let mapped = impulse_connectors::http::decode_response(&case.body);
        match mapped {
            Ok(reply) => {
                prop_assert_eq!(status.as_u16(), reply.status);
                prop_assert_eq!(body.as_slice(), reply.body.as_ref());
            }
            Err(_) => prop_assert_eq!(status, StatusCode::BAD_GATEWAY),
        }
        return Ok(());
    }
    prop_assert!(
        !status.is_server_error(),
        "{} {}",
        status,
        String::from_utf8_lossy(&body)
    );
    let event: Value = match (status, &queued) {
        (StatusCode::OK, _) => serde_json::from_slice(&body).unwrap_or_default(),
        (StatusCode::ACCEPTED, Some(event)) => {
            serde_json::from_slice(&event.payload).unwrap_or_default()
        }
        _ => return Ok(()),
    };
    // The function saw the request as it arrived: the event is JSON with the path, the body
    // byte for byte, and the method.
    prop_assert_eq!(&event["rawPath"], path.as_str());
    prop_assert_eq!(
        &event["requestContext"]["http"]["method"],
        case.method.as_str()
    );
    let sent = match (&event["body"], &event["isBase64Encoded"]) {
        (Value::Null, _) => Vec::new(),
        (Value::String(text), Value::Bool(false)) => text.clone().into_bytes(),
        (Value::String(text), Value::Bool(true)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default(),
        other => return Err(TestCaseError::fail(format!("body fields {other:?}"))),
    };
    prop_assert_eq!(&sent, &case.body);
    prop_assert!(headers.get("x-amzn-requestid").is_some());
    Ok(())
}
