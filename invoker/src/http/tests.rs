//! Real-socket tests: each case runs an axum endpoint on 127.0.0.1:0.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tower::ServiceExt;

use super::*;
use crate::Name;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/fn")
}

fn invocation(payload: &'static [u8]) -> Invocation {
    Invocation {
        request_id: "req-7".into(),
        function: Name::new("f"),
        trigger: Name::new("t"),
        payload: Bytes::from_static(payload),
        deadline: Some(Instant::now() + Duration::from_secs(5)),
    }
}

async fn call(endpoint: &str) -> Result<InvocationResponse, InvokeError> {
    let function = HttpFunction::new(HttpFunction::default_client(), endpoint).expect("valid");
    function.oneshot(invocation(br#"{"n":1}"#)).await
}

#[tokio::test]
async fn success_returns_the_body_and_sends_lambda_headers() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap, body: String| async move {
            let id = headers["lambda-runtime-aws-request-id"]
                .to_str()
                .unwrap_or("")
                .to_owned();
            let deadline: u128 = headers["lambda-runtime-deadline-ms"]
                .to_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            assert!(
                deadline > now && deadline <= now + 5_100,
                "deadline {deadline} now {now}"
            );
            format!("{id}:{body}")
        }),
    ))
    .await;
    let response = call(&endpoint).await.expect("success");
    assert_eq!(response.payload, Bytes::from_static(br#"req-7:{"n":1}"#));
}

#[tokio::test]
async fn declared_function_error_is_a_function_error() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async {
            (
                [("x-amz-function-error", "Handled")],
                r#"{"errorMessage":"no"}"#,
            )
        }),
    ))
    .await;
    let err = call(&endpoint).await.expect_err("function error");
    assert_eq!(err.class(), crate::ErrorClass::Function);
    match err {
        InvokeError::Function {
            error_type,
            payload,
        } => {
            assert_eq!(error_type, "Handled");
            assert_eq!(payload, Bytes::from_static(br#"{"errorMessage":"no"}"#));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_function_errors_with_a_lambda_document() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    ))
    .await;
    match call(&endpoint).await.expect_err("function error") {
        InvokeError::Function {
            error_type,
            payload,
        } => {
            assert_eq!(error_type, "HttpStatus500");
            let doc: serde_json::Value = serde_json::from_slice(&payload).expect("json");
            assert_eq!(doc["errorType"], "HttpStatus500");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn too_many_requests_is_a_throttle() {
    let endpoint =
        serve(Router::new().route("/fn", post(|| async { StatusCode::TOO_MANY_REQUESTS }))).await;
    let err = call(&endpoint).await.expect_err("throttle");
    assert_eq!(err.class(), crate::ErrorClass::Throttle);
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "too big") }),
    ))
    .await;
    let err = call(&endpoint).await.expect_err("permanent");
    assert_eq!(err.class(), crate::ErrorClass::Permanent);
    assert!(
        matches!(err, InvokeError::Permanent { status: 413, ref message } if message == "too big")
    );
}

#[tokio::test]
async fn connection_refused_is_a_system_error() {
    // Bind then drop a listener, so the port is known to be closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = call(&format!("http://{addr}/fn"))
        .await
        .expect_err("refused");
    assert_eq!(err.class(), crate::ErrorClass::System);
}

#[tokio::test]
async fn a_body_in_many_chunks_is_assembled_in_order() {
    // 256 KB in 64 KB pieces, more than the client reads at once: it arrives in several chunks.
    let pieces: Vec<Vec<u8>> = (0..4_u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
    let expected: Vec<u8> = pieces.concat();
    let endpoint = serve(Router::new().route(
        "/fn",
        post(move || {
            let pieces = pieces.clone();
            async move {
                let chunks = pieces.into_iter().map(Ok::<_, std::convert::Infallible>);
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }
        }),
    ))
    .await;
    let response = call(&endpoint).await.expect("success");
    assert_eq!(response.payload.len(), expected.len());
    assert!(
        response.payload == expected,
        "the chunks, whole and in order"
    );
}

#[tokio::test]
async fn oversized_responses_are_function_errors() {
    let endpoint =
        serve(Router::new().route("/fn", post(|| async { vec![b'a'; SYNC_PAYLOAD_LIMIT + 1] })))
            .await;
    match call(&endpoint).await.expect_err("too large") {
        InvokeError::Function { error_type, .. } => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn https_and_garbage_endpoints_are_refused() {
    let client = HttpFunction::default_client();
    assert!(HttpFunction::new(client.clone(), "https://example.com/").is_err());
    assert!(HttpFunction::new(client, "not a url").is_err());
}

#[tokio::test]
async fn a_request_id_that_cannot_be_a_header_fails_without_a_request() {
    // Nothing listens on port 1: had a request been attempted, the error would be a
    // connection failure, not the header's.
    let function =
        HttpFunction::new(HttpFunction::default_client(), "http://127.0.0.1:1/fn").expect("valid");
    let mut bad = invocation(b"{}");
    bad.request_id = "line\nbreak".into();
    let err = function.oneshot(bad).await.expect_err("refused");
    assert_eq!(err.class(), crate::ErrorClass::System);
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.is_some_and(|s| s.contains("header value")),
        "{err:?}"
    );
}

// === execution roles ===

const CANARY_AUTH: &str = "Bearer canary-http-role-71c3";

fn role(headers: &[(&str, &str)], vars: &[(&str, &str)]) -> crate::role::ResolvedRole {
    use impulse_config::{ExecutionRoleConfig, SecretSource};
    let config = ExecutionRoleConfig {
        environment: Default::default(),
        headers: headers
            .iter()
            .map(|(name, var)| ((*name).to_owned(), SecretSource::Env((*var).to_owned())))
            .collect(),
    };
    let env: std::collections::BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    crate::role::ResolvedRole::resolve("payments", &config, &env).expect("resolves")
}

#[tokio::test]
async fn a_role_s_headers_reach_its_function_and_no_other() {
    // The endpoint answers with the role headers it received (or `-`).
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap| async move {
            let seen = |name: &str| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!("{}|{}", seen("authorization"), seen("x-tenant"))
        }),
    ))
    .await;
    let payments = role(
        &[("Authorization", "PAY_AUTH"), ("X-Tenant", "PAY_TENANT")],
        &[("PAY_AUTH", CANARY_AUTH), ("PAY_TENANT", "acme")],
    );
    let client = HttpFunction::default_client();
    let with_role = HttpFunction::new(client.clone(), &endpoint)
        .expect("valid")
        .with_role(&payments);
    let without = HttpFunction::new(client, &endpoint).expect("valid");

    for _ in 0..2 {
        // Every request carries them, not only the first.
        let response = with_role.invoke(invocation(b"{}")).await.expect("success");
        assert_eq!(response.payload, format!("{CANARY_AUTH}|acme"));
    }
    let response = without.invoke(invocation(b"{}")).await.expect("success");
    assert_eq!(
        response.payload, "|",
        "a function without the role gets none"
    );

    let debug = format!("{with_role:?} {payments:?}");
    assert!(!debug.contains("canary"), "{debug}");
}

#[test]
fn a_role_without_headers_adds_nothing_per_request() {
    let empty = role(&[], &[]);
    let function = HttpFunction::new(HttpFunction::default_client(), "http://127.0.0.1:1/fn")
        .expect("valid")
        .with_role(&empty);
    assert!(function.role_headers.is_none());
}

#[test]
fn the_headers_the_invoker_sets_are_reserved_for_roles() {
    for name in [
        http::header::CONTENT_TYPE,
        http::header::CONTENT_LENGTH,
        http::header::HOST,
        REQUEST_ID_HEADER,
        DEADLINE_HEADER,
    ] {
        assert!(
            impulse_config::is_reserved_header(name.as_str()),
            "{name} must be refused in execution_roles.*.headers"
        );
    }
}
