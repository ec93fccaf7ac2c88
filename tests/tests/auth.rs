//! Access control end to end: every principal against every endpoint of a real `impulse`, with
//! a real function behind it. Counts what got through that should not have (must be 0), checks
//! each refusal's status and Lambda error type, and that refused calls never reach the function.

use std::collections::BTreeMap;

use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "admin-canary-token-0123456789";
const READER: &str = "reader-canary-token-0123456789";
const CI: &str = "ci-canary-token-0123456789abc";
const OTHER: &str = "other-canary-token-0123456789";

/// SHA-256 of `READER`, so one principal is configured by hash as the README recommends.
const READER_SHA256: &str = "e93a81f9356eeea87ba70d564521b57b19e335aafdc78e8f6015402a1983b78e";

fn config(endpoint: &str, reader_sha256: &str) -> String {
    format!(
        r#"
[functions.echo]
target = {{ type = "http", endpoint = "{endpoint}" }}

[functions.guarded]
target = {{ type = "http", endpoint = "{endpoint}" }}
policy = {{ principals = ["ci"] }}

[triggers.private]
type = "http"
function = "echo"
path = "/private"

[triggers.public]
type = "http"
function = "echo"
path = "/public"
auth_type = "NONE"

[triggers.guarded-hook]
type = "http"
function = "guarded"
path = "/guarded"

[auth.tokens.admin]
role = "admin"
token = "{ADMIN}"

[auth.tokens.reader]
role = "read-only"
token_sha256 = "{reader_sha256}"

[auth.tokens.ci]
role = "invoker"
token = "{CI}"

[auth.tokens.other]
role = "invoker"
token = "{OTHER}"
"#
    )
}

/// A request to one endpoint; `invokes` says whether an allowed call reaches the function.
struct Endpoint {
    name: &'static str,
    admin: bool,
    method: Method,
    path: &'static str,
    invocation_type: Option<&'static str>,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        name: "invoke",
        admin: false,
        method: Method::POST,
        path: "/2015-03-31/functions/echo/invocations",
        invocation_type: None,
    },
    Endpoint {
        name: "invoke-event",
        admin: false,
        method: Method::POST,
        path: "/2015-03-31/functions/echo/invocations",
        invocation_type: Some("Event"),
    },
    Endpoint {
        name: "invoke-dry-run",
        admin: false,
        method: Method::POST,
        path: "/2015-03-31/functions/echo/invocations",
        invocation_type: Some("DryRun"),
    },
    Endpoint {
        name: "invoke-guarded",
        admin: false,
        method: Method::POST,
        path: "/2015-03-31/functions/guarded/invocations",
        invocation_type: None,
    },
    Endpoint {
        name: "trigger-private",
        admin: false,
        method: Method::POST,
        path: "/private",
        invocation_type: None,
    },
    Endpoint {
        name: "trigger-guarded",
        admin: false,
        method: Method::POST,
        path: "/guarded",
        invocation_type: None,
    },
    Endpoint {
        name: "trigger-public",
        admin: false,
        method: Method::POST,
        path: "/public",
        invocation_type: None,
    },
    Endpoint {
        name: "metrics",
        admin: true,
        method: Method::GET,
        path: "/metrics",
        invocation_type: None,
    },
    Endpoint {
        name: "healthz",
        admin: true,
        method: Method::GET,
        path: "/healthz",
        invocation_type: None,
    },
];

/// The answer each principal must get: allowed (2xx), or the status and error type.
fn expected(principal: &str, endpoint: &str) -> Result<(), (StatusCode, &'static str)> {
    const MISSING: (StatusCode, &str) = (
        StatusCode::UNAUTHORIZED,
        "MissingAuthenticationTokenException",
    );
    const UNRECOGNIZED: (StatusCode, &str) =
        (StatusCode::UNAUTHORIZED, "UnrecognizedClientException");
    const DENIED: (StatusCode, &str) = (StatusCode::FORBIDDEN, "AccessDeniedException");
    // Open to all: probes, and a route whose auth type is NONE.
    if matches!(endpoint, "healthz" | "trigger-public") {
        return Ok(());
    }
    let invoke = endpoint != "metrics";
    let guarded = endpoint.ends_with("guarded");
    match principal {
        "none" => Err(MISSING),
        "wrong" => Err(UNRECOGNIZED),
        "admin" => Ok(()),
        "reader" if invoke => Err(DENIED),
        "reader" => Ok(()),
        "ci" if invoke => Ok(()),
        "other" if invoke && !guarded => Ok(()),
        "ci" | "other" => Err(DENIED),
        other => panic!("unknown principal {other}"),
    }
}

#[tokio::test]
async fn every_principal_against_every_endpoint() {
    let mut function = FunctionServer::start(|event: Value| async move {
        axum::Json(json!({ "statusCode": 200, "body": "ok", "echo": event }))
    })
    .await;
    let impulse = Impulse::start(&config(&function.endpoint(), READER_SHA256)).await;
    let client = reqwest::Client::new();
    let principals = [
        ("none", None),
        ("wrong", Some("wrong-token-0123456789abcdef")),
        ("admin", Some(ADMIN)),
        ("reader", Some(READER)),
        ("ci", Some(CI)),
        ("other", Some(OTHER)),
    ];

    let mut unauthorised_2xx = Vec::new();
    let mut wrong_answers = Vec::new();
    let mut reached_function = BTreeMap::new();
    for (principal, token) in principals {
        for endpoint in ENDPOINTS {
            let url = if endpoint.admin {
                impulse.admin_url(endpoint.path)
            } else {
                impulse.url(endpoint.path)
            };
            let case = format!("{principal}/{}", endpoint.name);
            let mut request = client.request(endpoint.method.clone(), url);
            if endpoint.method == Method::POST {
                request = request.body(json!({ "case": case }).to_string());
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(kind) = endpoint.invocation_type {
                request = request.header("x-amz-invocation-type", kind);
            }
            let response = request.send().await.expect("request");
            let status = response.status();
            let error_type = response
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let want = expected(principal, endpoint.name);
            match (&want, status.is_success()) {
                (Err(_), true) => unauthorised_2xx.push(case.clone()),
                (Ok(()), false) => wrong_answers.push(format!("{case}: {status} {error_type:?}")),
                (Err((want_status, want_type)), false) => {
                    if status != *want_status || error_type.as_deref() != Some(*want_type) {
                        wrong_answers.push(format!(
                            "{case}: {status} {error_type:?}, expected {want_status} {want_type}"
                        ));
                    }
                }
                (Ok(()), true) => {
                    // DryRun checks permission and existence only; the probe and metrics
                    // invoke nothing.
                    if endpoint.method == Method::POST && endpoint.name != "invoke-dry-run" {
                        reached_function.insert(case, principal);
                    }
                }
            }
        }
    }
    assert_eq!(unauthorised_2xx, Vec::<String>::new(), "unauthorised 2xx");
    assert_eq!(wrong_answers, Vec::<String>::new(), "wrong answers");

    // Exactly the allowed calls reached the function (the Event ones through the queue), and
    // a bearer token that authenticated a call never reaches the function.
    let mut received = BTreeMap::new();
    while received.len() < reached_function.len() {
        let event = function.next().await;
        let payload = event.event.get("body").and_then(Value::as_str).map_or_else(
            || event.event.clone(),
            |body| serde_json::from_str(body).unwrap_or_default(),
        );
        let case = payload["case"].as_str().expect("a case").to_owned();
        let authorization = event.event["headers"]["authorization"]
            .as_str()
            .map(str::to_owned);
        assert!(
            received.insert(case.clone(), authorization).is_none(),
            "{case} arrived twice"
        );
    }
    assert_eq!(
        received.keys().collect::<Vec<_>>(),
        reached_function.keys().collect::<Vec<_>>()
    );
    for (case, authorization) in &received {
        if case.ends_with("trigger-private") || case.ends_with("trigger-guarded") {
            assert_eq!(
                authorization, &None,
                "{case}: the token reached the function"
            );
        }
    }

    // Refusals are counted; no token appears in the log.
    let metrics = client
        .get(impulse.admin_url("/metrics"))
        .bearer_auth(READER)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("impulse_auth_refusals_total{error_type=\"AccessDeniedException\"}"),
        "{metrics}"
    );
    let logs = impulse.logs();
    for token in [ADMIN, READER, CI, OTHER] {
        assert!(!logs.contains(token), "a token is in the log:\n{logs}");
    }
}

// === SigV4 with the real AWS SDK ===

/// boto3, pinned so the signatures under test do not change between runs.
const BOTO3: &str = "boto3==1.44.18";
const KEY_ID: &str = "AKIAIMPULSETEST00001";
const SECRET: &str = "sigv4-canary-secret/K7MDENG+bPxRfiCYEXAMPLEKEY";
const READER_KEY_ID: &str = "AKIAIMPULSETEST00002";
const READER_SECRET: &str = "sigv4-canary-reader/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// What `tests/workers/python/invoke_sigv4.py` printed.
#[derive(Debug)]
struct Boto3Answer {
    status: Option<u64>,
    payload: Option<String>,
    error_type: Option<String>,
    error_message: String,
}

/// Invokes through boto3 with `args` added to the endpoint and credentials of `key`.
async fn boto3_invoke(
    endpoint: &str,
    (key_id, secret): (&str, &str),
    args: &[&str],
) -> Boto3Answer {
    let python =
        tokio::task::spawn_blocking(|| impulse_tests::python::venv("boto3-venv", &[BOTO3]))
            .await
            .expect("venv");
    let script =
        impulse_tests::python::workspace_root().join("tests/workers/python/invoke_sigv4.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args(["--endpoint", endpoint, "--access-key-id", key_id])
        .args(["--secret-access-key", secret])
        .args(args)
        .output()
        .await
        .expect("run the boto3 client");
    let line = String::from_utf8_lossy(&output.stdout);
    let answer: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "boto3 client output is not JSON ({e}): {line}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Boto3Answer {
        status: answer["status"].as_u64(),
        payload: answer["payload"].as_str().map(str::to_owned),
        error_type: answer["error_type"].as_str().map(str::to_owned),
        error_message: answer["error_message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[tokio::test]
async fn boto3_signs_and_impulse_verifies() {
    let function = FunctionServer::start(|event: Value| async move { axum::Json(event) }).await;
    let config = format!(
        r#"
[functions.echo]
target = {{ type = "http", endpoint = "{endpoint}" }}

[auth.access_keys.deploy]
role = "invoker"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"

[auth.access_keys.grafana]
role = "read-only"
access_key_id = "{READER_KEY_ID}"
secret_access_key = "{READER_SECRET}"
"#,
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start(&config).await;
    let endpoint = impulse.url("");
    let deploy = (KEY_ID, SECRET);
    let payload = r#"{"order": 42}"#;

    // Signed right: by name, by ARN with a qualifier, and asynchronously.
    let answer = boto3_invoke(
        &endpoint,
        deploy,
        &["--function", "echo", "--payload", payload],
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    let echoed: Value = serde_json::from_str(answer.payload.as_deref().unwrap_or_default())
        .expect("the function's JSON");
    assert_eq!(echoed, json!({ "order": 42 }));
    let arn = "arn:aws:lambda:eu-west-1:123456789012:function:echo:$LATEST";
    let answer = boto3_invoke(
        &endpoint,
        deploy,
        &["--function", arn, "--payload", payload],
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    let answer = boto3_invoke(
        &endpoint,
        deploy,
        &["--function", "echo", "--invocation-type", "Event"],
    )
    .await;
    assert_eq!(answer.status, Some(202), "{answer:?}");

    // Refused as Lambda refuses.
    // (case, key, extra arguments, status, error type)
    type Case<'a> = (&'a str, (&'a str, &'a str), &'a [&'a str], u64, &'a str);
    let cases: [Case<'_>; 4] = [
        (
            "wrong secret",
            (KEY_ID, "sigv4-wrong-secret/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            &[],
            401,
            "InvalidSignatureException",
        ),
        (
            "unknown key",
            ("AKIAIMPULSEUNKNOWN01", SECRET),
            &[],
            401,
            "UnrecognizedClientException",
        ),
        (
            "signed six minutes ago",
            deploy,
            &["--clock-skew", "-360"],
            401,
            "InvalidSignatureException",
        ),
        (
            "read-only key",
            (READER_KEY_ID, READER_SECRET),
            &[],
            403,
            "AccessDeniedException",
        ),
    ];
    for (case, key, extra, status, error_type) in cases {
        let mut args = vec!["--function", "echo", "--payload", payload];
        args.extend_from_slice(extra);
        let answer = boto3_invoke(&endpoint, key, &args).await;
        assert_eq!(answer.status, Some(status), "{case}: {answer:?}");
        assert_eq!(
            answer.error_type.as_deref(),
            Some(error_type),
            "{case}: {answer:?}"
        );
        if case == "signed six minutes ago" {
            assert!(
                answer.error_message.starts_with("Signature expired"),
                "{case}: {answer:?}"
            );
        }
    }
    let logs = impulse.logs();
    assert!(
        !logs.contains("sigv4-canary"),
        "a secret is in the log:\n{logs}"
    );
}

// === CORS on an AWS_IAM route ===

#[tokio::test]
async fn cors_preflights_are_answered_without_credentials_or_invocation() {
    let mut function = FunctionServer::start(|_event: Value| async move {
        axum::Json(json!({
            "statusCode": 200,
            "headers": { "access-control-allow-origin": "https://function-chose.example", "x-order": "7" },
            "body": "ok",
        }))
    })
    .await;
    let config = format!(
        r#"
[functions.echo]
target = {{ type = "http", endpoint = "{endpoint}" }}

[triggers.app]
type = "http"
function = "echo"
path = "/app"
methods = ["POST"]
[triggers.app.cors]
allow_origins = ["https://app.example.com"]
allow_methods = ["POST"]
allow_headers = ["authorization", "content-type"]
expose_headers = ["x-order"]
allow_credentials = true
max_age = "10m"

[auth.tokens.ci]
role = "invoker"
token = "{CI}"
"#,
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    let origin = "https://app.example.com";

    // The preflight: no credentials, no invocation, Lambda's headers.
    let preflight = client
        .request(Method::OPTIONS, impulse.url("/app"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), StatusCode::OK);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["access-control-allow-methods"], "POST");
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-max-age"], "600");
    let refused = client
        .request(Method::OPTIONS, impulse.url("/app"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(!refused
        .headers()
        .contains_key("access-control-allow-origin"));

    // The call itself still needs a principal; its refusal is readable by the page.
    let unauthenticated = client
        .post(impulse.url("/app"))
        .header("origin", origin)
        .body("{}")
        .send()
        .await
        .expect("call");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unauthenticated.headers()["access-control-allow-origin"],
        origin
    );

    // An allowed call: the trigger's CORS headers replace the function's.
    let response = client
        .post(impulse.url("/app"))
        .header("origin", origin)
        .bearer_auth(CI)
        .body(r#"{"case": "cors"}"#)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], origin);
    assert_eq!(headers["access-control-expose-headers"], "x-order");
    assert_eq!(headers["x-order"], "7");
    let received = function.next().await;
    assert_eq!(
        received.event["body"], r#"{"case": "cors"}"#,
        "only the real call ran"
    );
}
