//! Access control end to end: every principal against every endpoint of a real `impulse`, with
//! a real function behind it. Counts what got through that should not have (must be 0), checks
//! each refusal's status and Lambda error type, and that refused calls never reach the function.

use std::collections::BTreeMap;

use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use impulse_tests::python::BOTO3;
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

[auth.access_keys.signer]
role = "invoker"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"

[auth.access_keys.signing-reader]
role = "read-only"
access_key_id = "{READER_KEY_ID}"
secret_access_key = "{READER_SECRET}"

[triggers.hook]
type = "http"
function = "echo"
path = "/hook"
webhook = {{ scheme = "github", secret = "{WEBHOOK_SECRET}" }}
"#
    )
}

const WEBHOOK_SECRET: &str = "webhook-canary-secret-0123456789";

/// How a principal of the matrix authenticates.
#[derive(Clone, Copy)]
enum Credential {
    None,
    Bearer(&'static str),
    /// Signed by botocore with this key pair, its clock shifted by `skew` seconds.
    SigV4 {
        key_id: &'static str,
        secret: &'static str,
        skew: i64,
    },
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
        name: "trigger-webhook",
        admin: false,
        method: Method::POST,
        path: "/hook",
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
        name: "list-functions",
        admin: false,
        method: Method::GET,
        path: "/2015-03-31/functions/",
        invocation_type: None,
    },
    Endpoint {
        name: "get-function",
        admin: false,
        method: Method::GET,
        path: "/2015-03-31/functions/guarded",
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
    const SIGNATURE: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "InvalidSignatureException");
    // Open to all: probes, and a route whose auth type is NONE.
    if matches!(endpoint, "healthz" | "trigger-public") {
        return Ok(());
    }
    // A webhook route (auth type NONE) admits what its sender signed, whoever calls: no
    // principal, not even an admin, gets an unsigned delivery through.
    if endpoint == "trigger-webhook" {
        return Err((StatusCode::UNAUTHORIZED, ""));
    }
    // Reading (metrics, the read API) is for read-only and admin; a function's policy governs
    // invoking it, not reading its configuration.
    let invoke = !matches!(endpoint, "metrics" | "list-functions" | "get-function");
    let guarded = endpoint.ends_with("guarded");
    match principal {
        "none" => Err(MISSING),
        "wrong" | "sigv4-unknown-key" => Err(UNRECOGNIZED),
        "sigv4-wrong-secret" | "sigv4-expired" => Err(SIGNATURE),
        "admin" => Ok(()),
        "reader" | "sigv4-reader" if invoke => Err(DENIED),
        "reader" | "sigv4-reader" => Ok(()),
        "ci" if invoke => Ok(()),
        "other" | "sigv4-invoker" if invoke && !guarded => Ok(()),
        "ci" | "other" | "sigv4-invoker" => Err(DENIED),
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
    let signed = |key_id, secret, skew| Credential::SigV4 {
        key_id,
        secret,
        skew,
    };
    let principals = [
        ("none", Credential::None),
        ("wrong", Credential::Bearer("wrong-token-0123456789abcdef")),
        ("admin", Credential::Bearer(ADMIN)),
        ("reader", Credential::Bearer(READER)),
        ("ci", Credential::Bearer(CI)),
        ("other", Credential::Bearer(OTHER)),
        ("sigv4-invoker", signed(KEY_ID, SECRET, 0)),
        ("sigv4-reader", signed(READER_KEY_ID, READER_SECRET, 0)),
        ("sigv4-wrong-secret", signed(KEY_ID, READER_SECRET, 0)),
        (
            "sigv4-unknown-key",
            signed("AKIAIMPULSEUNKNOWN01", SECRET, 0),
        ),
        // AWS refuses a request signed more than 5 minutes before it arrives.
        ("sigv4-expired", signed(KEY_ID, SECRET, -360)),
    ];

    // Every case's request, then botocore's signatures for the SigV4 ones in one run.
    let mut cases = Vec::new();
    for (principal, credential) in principals {
        for endpoint in ENDPOINTS {
            let url = if endpoint.admin {
                impulse.admin_url(endpoint.path)
            } else {
                impulse.url(endpoint.path)
            };
            let case = format!("{principal}/{}", endpoint.name);
            let body = if endpoint.method == Method::POST {
                json!({ "case": case }).to_string()
            } else {
                String::new()
            };
            cases.push((principal, credential, endpoint, url, case, body));
        }
    }
    let to_sign: Vec<Value> = cases
        .iter()
        .filter_map(|(_, credential, endpoint, url, _, body)| match credential {
            Credential::SigV4 {
                key_id,
                secret,
                skew,
            } => Some(json!({
                "method": endpoint.method.as_str(),
                "url": url,
                "body": body,
                "headers": endpoint
                    .invocation_type
                    .map(|kind| json!({ "x-amz-invocation-type": kind }))
                    .unwrap_or_else(|| json!({})),
                "access_key_id": key_id,
                "secret_access_key": secret,
                "clock_skew": skew,
            })),
            Credential::None | Credential::Bearer(_) => None,
        })
        .collect();
    let mut signatures = sign_sigv4(&to_sign).await.into_iter();

    let mut unauthorised_2xx = Vec::new();
    let mut wrong_answers = Vec::new();
    let mut reached_function = BTreeMap::new();
    for (principal, credential, endpoint, url, case, body) in cases {
        let mut request = client.request(endpoint.method.clone(), url);
        if endpoint.method == Method::POST {
            request = request.body(body);
        }
        if let Some(kind) = endpoint.invocation_type {
            request = request.header("x-amz-invocation-type", kind);
        }
        match credential {
            Credential::None => {}
            Credential::Bearer(token) => request = request.bearer_auth(token),
            Credential::SigV4 { .. } => {
                let headers = signatures.next().expect("a signature per signed case");
                for (name, value) in headers.as_object().expect("headers") {
                    let value = value.as_str().expect("a header value");
                    // Set by the signer's input already.
                    if name != "x-amz-invocation-type" {
                        request = request.header(name.as_str(), value);
                    }
                }
            }
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
                // A webhook refusal is the route's own answer, without a Lambda type.
                let want_type = (!want_type.is_empty()).then_some(*want_type);
                if status != *want_status || error_type.as_deref() != want_type {
                    wrong_answers.push(format!(
                        "{case}: {status} {error_type:?}, expected {want_status} {want_type:?}"
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
        if !(case.ends_with("trigger-private") || case.ends_with("trigger-guarded")) {
            continue;
        }
        if case.starts_with("sigv4") {
            // A signature is passed on as a function URL passes it: it is bound to this
            // request and expires, and it is not the secret.
            assert!(
                authorization
                    .as_deref()
                    .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")),
                "{case}: {authorization:?}"
            );
        } else {
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

/// botocore's SigV4 headers for each request of `requests` (see `sign_sigv4.py`).
async fn sign_sigv4(requests: &[Value]) -> Vec<Value> {
    use tokio::io::AsyncWriteExt as _;
    let python =
        tokio::task::spawn_blocking(|| impulse_tests::python::venv("boto3-venv", &[BOTO3]))
            .await
            .expect("venv");
    let script = impulse_tests::python::workspace_root().join("tests/workers/python/sign_sigv4.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the botocore signer");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(Value::from(requests.to_vec()).to_string().as_bytes())
        .await
        .expect("write the requests");
    drop(stdin);
    let output = child.wait_with_output().await.expect("the signer's output");
    let signed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the signer's output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(signed.len(), requests.len());
    signed
}

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

// === DLQ replay ===

#[tokio::test]
async fn dlq_replay_needs_a_principal_allowed_to_invoke() {
    use impulse_tests::impulse::{cli, Instance};
    use impulse_tests::wait::eventually;

    // Fails until `healed`, then echoes: the replay must get through once it is allowed.
    let healed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healed_fn = healed.clone();
    let mut function = FunctionServer::start(move |event: Value| {
        let healed = healed_fn.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if healed {
                (StatusCode::OK, axum::Json(event))
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!("down")))
            }
        }
    })
    .await;
    let instance = Instance::new();
    let config = format!(
        r#"
[queue]
data_dir = {data:?}

[functions.orders]
target = {{ type = "http", endpoint = "{endpoint}" }}
max_retry_attempts = 0
on_failure = {{ type = "log", name = "orders-dlq" }}

[auth.tokens.ci]
role = "invoker"
token = "{CI}"

[auth.tokens.reader]
role = "read-only"
token = "{READER}"
"#,
        data = instance.data_dir(),
        endpoint = function.endpoint()
    );
    let impulse = Impulse::start_in(&instance, &config).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/orders/invocations"))
        .bearer_auth(CI)
        .header("x-amz-invocation-type", "Event")
        .body(r#"{"order": 7}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.headers()["x-amzn-requestid"]
        .to_str()
        .expect("ascii")
        .to_owned();
    function.next().await;
    let config_path = instance.config_path();
    let config_arg = config_path.to_str().expect("utf-8 path");
    // `list` and `show` read the destination directly: no token.
    eventually(
        "the failure record",
        std::time::Duration::from_secs(60),
        async || {
            let out = cli(&[
                "dlq",
                "list",
                "--config",
                config_arg,
                "--function",
                "orders",
            ]);
            let listing = String::from_utf8_lossy(&out.stdout).into_owned();
            if listing.contains(&id) {
                Ok(())
            } else {
                Err(listing)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    healed.store(true, std::sync::atomic::Ordering::SeqCst);

    let replay = |token: Option<&str>| {
        let mut args = vec![
            "dlq",
            "replay",
            "--config",
            config_arg,
            "--function",
            "orders",
            "--id",
            &id,
        ];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        let out = cli(&args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (who, token, status) in [
        ("no token", None, "401"),
        ("a wrong token", Some("wrong-token-0123456789abcdef"), "401"),
        ("a read-only token", Some(READER), "403"),
    ] {
        let (succeeded, stderr) = replay(token);
        assert!(!succeeded, "replay with {who} succeeded");
        assert!(
            stderr.contains(status) && stderr.contains("--token"),
            "{who}: {stderr}"
        );
    }
    let (succeeded, stderr) = replay(Some(CI));
    assert!(succeeded, "{stderr}");
    let replayed = function.next().await;
    assert_eq!(replayed.event, json!({ "order": 7 }));
    assert!(!impulse.logs().contains(CI));
}

// === the read API with the real AWS SDK ===

#[tokio::test]
async fn boto3_reads_functions_with_a_read_only_key() {
    let config = format!(
        r#"
[functions.echo]
timeout = "7s"
reserved_concurrency = 3
target = {{ type = "http", endpoint = "http://127.0.0.1:1/unused" }}

[functions.worker]
target = {{ type = "process", command = "/bin/true", handler = "main.handler", memory_size = 256 }}

[auth.access_keys.deploy]
role = "invoker"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"

[auth.access_keys.grafana]
role = "read-only"
access_key_id = "{READER_KEY_ID}"
secret_access_key = "{READER_SECRET}"
"#
    );
    let impulse = Impulse::start(&config).await;
    let read = async |key: (&str, &str), function: &str| -> Value {
        impulse_tests::python::boto3_script(
            "read_functions.py",
            &impulse.url(""),
            key,
            &["--function", function],
        )
        .await
    };

    let answer = read((READER_KEY_ID, READER_SECRET), "echo").await;
    assert_eq!(answer["error"], Value::Null, "{answer}");
    // Page by page (one per page), in name order.
    assert_eq!(answer["list"], json!(["echo", "worker"]));
    let configuration = &answer["configuration"];
    assert_eq!(configuration["FunctionName"], "echo");
    assert_eq!(
        configuration["FunctionArn"],
        "arn:aws:lambda:local:000000000000:function:echo"
    );
    assert_eq!(configuration["Timeout"], 7);
    assert_eq!(configuration["Version"], "$LATEST");
    assert_eq!(configuration["State"], "Active");
    assert_eq!(answer["function"]["Configuration"], *configuration);
    assert_eq!(
        answer["function"]["Concurrency"]["ReservedConcurrentExecutions"],
        3
    );
    let worker = read(
        (READER_KEY_ID, READER_SECRET),
        "arn:aws:lambda:us-east-1:123456789012:function:worker",
    )
    .await;
    assert_eq!(worker["configuration"]["Handler"], "main.handler");
    assert_eq!(worker["configuration"]["MemorySize"], 256);

    // Unknown functions and other principals are refused as Lambda refuses them.
    let missing = read((READER_KEY_ID, READER_SECRET), "nope").await;
    assert_eq!(
        missing["error"][0], "ResourceNotFoundException",
        "{missing}"
    );
    let invoker = read((KEY_ID, SECRET), "echo").await;
    assert_eq!(invoker["error"][0], "AccessDeniedException", "{invoker}");
}
