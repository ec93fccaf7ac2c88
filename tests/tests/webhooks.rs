//! Webhook signatures end to end: the real `impulse` binary in front of a real HTTP function.
//! A signed request reaches the function; a bad, replayed, expired or unsigned one is a `401`
//! and the function never hears of it.
//!
//! Signatures are computed here with the `hmac` crate from each sender's documented recipe,
//! independently of the broker's verifiers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;

const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "canary-github-secret-0123";
const STRIPE_SECRET: &str = "whsec_canaryStripeSecret0123456789";

/// A function that counts its calls and answers with the body it was given.
struct CountingFunction {
    server: FunctionServer,
    calls: Arc<AtomicUsize>,
}

impl CountingFunction {
    async fn start() -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let server = FunctionServer::start(move |event: Value| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                axum::Json(json!({
                    "statusCode": 200,
                    "body": format!("function saw {}", event["body"].as_str().unwrap_or("")),
                }))
            }
        })
        .await;
        Self { server, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn start(function: &CountingFunction) -> Impulse {
    let endpoint = function.server.endpoint();
    Impulse::start(&format!(
        r#"
[functions.hook]
target = {{ type = "http", endpoint = "{endpoint}" }}

[triggers.svix]
type = "http"
function = "hook"
path = "/hooks/svix"
webhook = {{ scheme = "standard-webhooks", secret = "{SVIX_SECRET}" }}

[triggers.github]
type = "http"
function = "hook"
path = "/hooks/github"
webhook = {{ scheme = "github", secret = "{GITHUB_SECRET}" }}

[triggers.stripe]
type = "http"
function = "hook"
path = "/hooks/stripe"
webhook = {{ scheme = "stripe", secret = "{STRIPE_SECRET}", tolerance = "2m" }}

[triggers.github-async]
type = "http"
function = "hook"
path = "/hooks/github-async"
invocation = "async"
webhook = {{ scheme = "github", secret = "{GITHUB_SECRET}" }}
"#
    ))
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hmac(key: &[u8], content: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in content {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn svix_headers(secret: &str, id: &str, timestamp: u64, body: &str) -> HeaderMap {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("test secret");
    let ts = timestamp.to_string();
    let tag = hmac(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
    );
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", id.parse().expect("id"));
    headers.insert("webhook-timestamp", ts.parse().expect("ts"));
    let signature = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    );
    headers.insert("webhook-signature", signature.parse().expect("signature"));
    headers
}

fn github_headers(secret: &str, delivery: &str, body: &str) -> HeaderMap {
    let signature = format!(
        "sha256={}",
        hex::encode(hmac(secret.as_bytes(), &[body.as_bytes()]))
    );
    let mut headers = HeaderMap::new();
    headers.insert("x-hub-signature-256", signature.parse().expect("signature"));
    headers.insert("x-github-delivery", delivery.parse().expect("delivery"));
    headers.insert("x-github-event", "push".parse().expect("event"));
    headers
}

fn stripe_headers(secret: &str, t: u64, body: &str) -> HeaderMap {
    let t = t.to_string();
    // Stripe keys the HMAC with the whole `whsec_…` string.
    let v1 = hex::encode(hmac(
        secret.as_bytes(),
        &[t.as_bytes(), b".", body.as_bytes()],
    ));
    let mut headers = HeaderMap::new();
    let value = format!("t={t},v1={v1}");
    headers.insert("stripe-signature", value.parse().expect("signature"));
    headers
}

/// Posts `body` with `headers`; returns the status and the body text.
async fn post(impulse: &Impulse, path: &str, headers: HeaderMap, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(impulse.url(path))
        .headers(headers)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Asserts a `401` whose message names `reason`.
fn assert_refused(answer: &(u16, String), reason: &str) {
    assert_eq!(answer.0, 401, "{answer:?}");
    let body: Value = serde_json::from_str(&answer.1).expect("JSON error body");
    assert_eq!(
        body["Message"],
        format!("Invalid webhook signature: {reason}"),
        "{answer:?}"
    );
}

/// The warn lines name the trigger and reason, and no secret.
fn assert_logged(impulse: &Impulse, trigger: &str, reason_code: &str) {
    let logs = impulse.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("signature does not verify")
                && line.contains(trigger)
                && line.contains(reason_code)),
        "no warning for {trigger}/{reason_code}:\n{logs}"
    );
    assert!(
        !logs.contains("canary"),
        "a secret leaked into the log:\n{logs}"
    );
}

#[tokio::test]
async fn standard_webhooks_signed_requests_reach_the_function_and_bad_ones_never_do() {
    let function = CountingFunction::start().await;
    let impulse = start(&function).await;
    let body = r#"{"type": "invoice.paid", "amount": 42}"#;
    let signed = svix_headers(SVIX_SECRET, "msg_e2e_1", now(), body);

    let answer = post(&impulse, "/hooks/svix", signed.clone(), body).await;
    assert_eq!(answer, (200, format!("function saw {body}")));
    assert_eq!(function.calls(), 1);

    let replay = post(&impulse, "/hooks/svix", signed, body).await;
    assert_refused(&replay, "delivery already accepted (replay)");

    let wrong = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let forged = post(
        &impulse,
        "/hooks/svix",
        svix_headers(wrong, "msg_e2e_2", now(), body),
        body,
    )
    .await;
    assert_refused(&forged, "signature mismatch");

    // Signed correctly, ten minutes ago: outside the default 5-minute window.
    let old = svix_headers(SVIX_SECRET, "msg_e2e_3", now() - 600, body);
    assert_refused(
        &post(&impulse, "/hooks/svix", old, body).await,
        "timestamp outside the replay window",
    );

    // The same JSON with other whitespace is another body.
    let signed = svix_headers(SVIX_SECRET, "msg_e2e_4", now(), body);
    assert_refused(
        &post(
            &impulse,
            "/hooks/svix",
            signed,
            r#"{"type":"invoice.paid","amount":42}"#,
        )
        .await,
        "signature mismatch",
    );

    let mut unsigned = svix_headers(SVIX_SECRET, "msg_e2e_5", now(), body);
    unsigned.remove("webhook-signature");
    assert_refused(
        &post(&impulse, "/hooks/svix", unsigned, body).await,
        "missing header webhook-signature",
    );

    // Sync triggers answer only after the function: a call would have been counted by now.
    assert_eq!(function.calls(), 1);
    assert_logged(&impulse, "svix", "replay");
    assert_logged(&impulse, "svix", "signature_mismatch");
    assert_logged(&impulse, "svix", "timestamp_outside_window");
    assert_logged(&impulse, "svix", "missing_header");
}

#[tokio::test]
async fn github_signed_requests_reach_the_function_and_bad_ones_never_do() {
    let function = CountingFunction::start().await;
    let impulse = start(&function).await;
    let body = r#"{"zen": "Design for failure.", "hook_id": 1}"#;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let signed = github_headers(GITHUB_SECRET, delivery, body);

    let answer = post(&impulse, "/hooks/github", signed.clone(), body).await;
    assert_eq!(answer, (200, format!("function saw {body}")));
    assert_eq!(function.calls(), 1);

    assert_refused(
        &post(&impulse, "/hooks/github", signed.clone(), body).await,
        "delivery already accepted (replay)",
    );
    let forged = github_headers("canary-other-secret-0123", "d-2", body);
    assert_refused(
        &post(&impulse, "/hooks/github", forged, body).await,
        "signature mismatch",
    );
    let tampered = github_headers(GITHUB_SECRET, "d-3", body);
    assert_refused(
        &post(&impulse, "/hooks/github", tampered, &body.replace('1', "2")).await,
        "signature mismatch",
    );
    let mut unsigned = github_headers(GITHUB_SECRET, "d-4", body);
    unsigned.remove("x-hub-signature-256");
    assert_refused(
        &post(&impulse, "/hooks/github", unsigned, body).await,
        "missing header x-hub-signature-256",
    );
    let mut malformed = github_headers(GITHUB_SECRET, "d-5", body);
    malformed.insert("x-hub-signature-256", "sha1=abc".parse().expect("value"));
    assert_refused(
        &post(&impulse, "/hooks/github", malformed, body).await,
        "malformed header x-hub-signature-256: does not start with `sha256=`",
    );

    assert_eq!(function.calls(), 1);
    assert_logged(&impulse, "github", "signature_mismatch");
}

#[tokio::test]
async fn stripe_signed_requests_reach_the_function_and_bad_ones_never_do() {
    let function = CountingFunction::start().await;
    let impulse = start(&function).await;
    let body = "{\n  \"id\": \"evt_e2e\",\n  \"object\": \"event\"\n}";
    let signed = stripe_headers(STRIPE_SECRET, now(), body);

    let answer = post(&impulse, "/hooks/stripe", signed.clone(), body).await;
    assert_eq!(answer, (200, format!("function saw {body}")));
    assert_eq!(function.calls(), 1);

    assert_refused(
        &post(&impulse, "/hooks/stripe", signed, body).await,
        "delivery already accepted (replay)",
    );
    let forged = stripe_headers("whsec_canaryOtherSecret0123456789", now(), body);
    assert_refused(
        &post(&impulse, "/hooks/stripe", forged, body).await,
        "signature mismatch",
    );
    // This trigger's window is 2 minutes.
    let expired = stripe_headers(STRIPE_SECRET, now() - 180, body);
    assert_refused(
        &post(&impulse, "/hooks/stripe", expired, body).await,
        "timestamp outside the replay window",
    );
    let ahead = stripe_headers(STRIPE_SECRET, now() + 180, body);
    assert_refused(
        &post(&impulse, "/hooks/stripe", ahead, body).await,
        "timestamp outside the replay window",
    );
    assert_refused(
        &post(&impulse, "/hooks/stripe", HeaderMap::new(), body).await,
        "missing header stripe-signature",
    );

    assert_eq!(function.calls(), 1);
    assert_logged(&impulse, "stripe", "timestamp_outside_window");
}

#[tokio::test]
async fn async_triggers_queue_nothing_for_a_bad_signature() {
    let mut function = CountingFunction::start().await;
    let impulse = start(&function).await;

    let bad_body = r#"{"n": "forged"}"#;
    let forged = github_headers("canary-other-secret-0123", "async-1", bad_body);
    assert_refused(
        &post(&impulse, "/hooks/github-async", forged, bad_body).await,
        "signature mismatch",
    );

    // A good request after the bad one is queued and delivered; it is the only event the
    // function ever sees, so the refused one was never queued ahead of it.
    let good_body = r#"{"n": "signed"}"#;
    let signed = github_headers(GITHUB_SECRET, "async-2", good_body);
    let (status, _) = post(&impulse, "/hooks/github-async", signed, good_body).await;
    assert_eq!(status, 202);
    let received = function.server.next().await;
    assert_eq!(received.event["body"], good_body);
    assert_eq!(received.event["headers"]["x-github-delivery"], "async-2");
    assert_eq!(function.calls(), 1);
}
