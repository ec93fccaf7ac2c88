//! The secrets canary: a distinct canary value in every secret-bearing setting, and every path
//! that could print one driven against the real `impulse` binary logging at debug level. No
//! canary may appear in the broker's stdout or stderr, an HTTP answer (body or headers),
//! `/metrics`, or the output of `validate`, `schema` and a `run` that refuses to start.
//!
//! Each canary is also shown to work where it should (a token is accepted, a role's header
//! reaches the function, …), so that a canary missing from the output means it was loaded and
//! kept quiet, not that it was never read; and the redaction markers (`svc:***@`) are asserted
//! where a message names a credential-bearing URL, so the test cannot pass because nothing was
//! printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use impulse_test_support::tls::{PkiFiles, TestPki};
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{binary, free_addr};
use impulse_tests::kafka;
use impulse_tests::process::Running;
use impulse_tests::services::{require_kafka, require_redis};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// === the canaries: one per secret, so a failure names the one that leaked ===

/// `auth.tokens.admin.token`, written in the file.
const TOKEN_FILE: &str = "canary-token-file-3f9a0c";
/// `auth.tokens.ci.token`, from `IMPULSE_AUTH_TOKEN_CI`.
const TOKEN_ENV: &str = "canary-token-env-8b2d4e";
/// `auth.access_keys.deploy.secret_access_key`, from `IMPULSE_AUTH_SECRET_ACCESS_KEY_DEPLOY`.
const SIGV4_SECRET: &str = "canary-sigv4-secret-5c7e19";
/// `execution_roles.payments.environment.STRIPE_KEY`, from the broker's environment.
const ROLE_ENV: &str = "canary-role-env-91f0aa";
/// `execution_roles.payments.environment.DB_PASSWORD`, from a file.
const ROLE_FILE: &str = "canary-role-file-2a6b3d";
/// `execution_roles.payments.headers.X-Api-Key`, from the broker's environment.
const ROLE_HEADER: &str = "canary-role-header-d43c70";
/// `triggers.hook.webhook.secret`, from `IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET`.
const WEBHOOK: &str = "canary-webhook-secret-7e15b2";
/// The password of a reachable http endpoint (`http://svc:…@`), sent as Basic auth.
const ENDPOINT_UP: &str = "canary-endpoint-up-0c9d41";
/// The password of an unreachable https endpoint, whose errors name the endpoint.
const ENDPOINT_DOWN: &str = "canary-endpoint-down-6f2817";
/// The password in a Redis destination's URL, which this Redis refuses.
const REDIS_PASSWORD: &str = "canary-redis-pw-b51a93";
/// `sasl.password` in a Kafka trigger's `librdkafka_options`.
const KAFKA_SASL: &str = "canary-kafka-sasl-4d83e6";
/// `sasl.password` in a Kafka destination's `librdkafka_options`.
const KAFKA_DEST_SASL: &str = "canary-kafka-dest-sasl-e0a7f5";
/// `ssl.key.password` in a Kafka destination's `librdkafka_options`, which this build of
/// librdkafka (without OpenSSL) refuses, quoting the value in its error.
const KAFKA_SSL_KEY: &str = "canary-kafka-sslkey-71b3c8";
/// The password of the async queue's Redis URL, in a broker that cannot start.
const QUEUE_REDIS_PASSWORD: &str = "canary-queue-redis-pw-19c4";
/// The password of a Redis trigger's URL.
const REDIS_TRIGGER_PASSWORD: &str = "canary-redis-trigger-pw-5e21";
/// A token too short to be accepted, in the file: the error about it must not quote it.
const SHORT_TOKEN: &str = "cnry-tk-a1";
/// A token too short to be accepted, from `IMPULSE_AUTH_TOKEN_CI`.
const SHORT_ENV_TOKEN: &str = "cnry-te-c3";
/// A secret access key too short to be accepted, in the file and from the environment.
const SHORT_SIGV4_SECRET: &str = "cnry-sk-b2";
/// The content of a private key file that is not valid PEM.
const BAD_KEY: &str = "canary-bad-key-pem-4f0e";
/// A token written without quotes: a number to TOML, whose own errors quote numbers.
const NUMERIC_TOKEN: &str = "73019528461039571";

/// Every canary above with its name.
const CANARIES: &[(&str, &str)] = &[
    ("auth token (file)", TOKEN_FILE),
    ("auth token (env)", TOKEN_ENV),
    ("SigV4 secret access key", SIGV4_SECRET),
    ("role environment (env)", ROLE_ENV),
    ("role environment (file)", ROLE_FILE),
    ("role header", ROLE_HEADER),
    ("webhook secret", WEBHOOK),
    ("endpoint password (reachable)", ENDPOINT_UP),
    ("endpoint password (unreachable)", ENDPOINT_DOWN),
    ("Redis destination password", REDIS_PASSWORD),
    ("Kafka sasl.password", KAFKA_SASL),
    ("Kafka destination sasl.password", KAFKA_DEST_SASL),
    ("Kafka ssl.key.password", KAFKA_SSL_KEY),
    ("queue Redis password", QUEUE_REDIS_PASSWORD),
    ("Redis trigger password", REDIS_TRIGGER_PASSWORD),
    ("numeric token", NUMERIC_TOKEN),
    ("short token (file)", SHORT_TOKEN),
    ("short token (env)", SHORT_ENV_TOKEN),
    ("short SigV4 secret", SHORT_SIGV4_SECRET),
    ("invalid key file", BAD_KEY),
];

/// The access key id paired with [`SIGV4_SECRET`] (an id is not a secret).
const KEY_ID: &str = "AKIAIMPULSECANARY01";

/// The secrets as they could leak: each canary, the Basic credentials made from the endpoint
/// passwords (base64), and every line of the base64 body of each private key file given.
fn forms(keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut forms: Vec<(String, String)> = CANARIES
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    for (name, password) in [("up", ENDPOINT_UP), ("down", ENDPOINT_DOWN)] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc:{password}"));
        forms.push((format!("Basic credentials of the {name} endpoint"), basic));
    }
    for (name, pem) in keys {
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        {
            forms.push(((*name).to_owned(), line.to_owned()));
        }
    }
    forms
}

/// Fails naming the secret and the output it reached.
fn assert_no_secret(forms: &[(String, String)], what: &str, text: &str) {
    for (name, value) in forms {
        assert!(
            !text.contains(value.as_str()),
            "the {name} ({value}) appears in {what}:\n{text}"
        );
    }
}

// === the running broker ===

/// Every answer the broker sent, as text: status, headers and body.
#[derive(Default)]
struct Answers(String);

impl Answers {
    /// Records `response` under `what` and returns its status and body.
    async fn record(&mut self, what: &str, response: Response) -> (StatusCode, String) {
        let status = response.status();
        let headers: String = response
            .headers()
            .iter()
            .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
            .collect();
        let body = response.text().await.expect("a body");
        self.0
            .push_str(&format!("--- {what}: {status}\n{headers}\n{body}\n"));
        (status, body)
    }
}

// === request helpers ===

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `Authorization` and `X-Amz-*` headers signing `POST path` with `body` for `host`, as
/// botocore signs a Lambda Invoke (AWS Signature Version 4, region `us-east-1`).
fn sigv4_headers(secret: &str, host: &str, path: &str, body: &[u8]) -> [(String, String); 3] {
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let payload_hash = hex::encode(Sha256::digest(body));
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "POST\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload_hash}\n\
         x-amz-date:{amz_date}\n\n{signed_headers}\n{payload_hash}"
    );
    let scope = format!("{date}/us-east-1/lambda/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = [date, "us-east-1", "lambda", "aws4_request"]
        .iter()
        .fold(format!("AWS4{secret}").into_bytes(), |key, part| {
            hmac(&key, part.as_bytes())
        });
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    [
        (
            "authorization".to_owned(),
            format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, \
                 SignedHeaders={signed_headers}, Signature={signature}"
            ),
        ),
        ("x-amz-date".to_owned(), amz_date),
        ("x-amz-content-sha256".to_owned(), payload_hash),
    ]
}

/// GitHub's `X-Hub-Signature-256` and delivery headers for `body` signed with `secret`.
fn github_headers(secret: &str, delivery: &str, body: &str) -> [(String, String); 3] {
    [
        (
            "x-hub-signature-256".to_owned(),
            format!(
                "sha256={}",
                hex::encode(hmac(secret.as_bytes(), body.as_bytes()))
            ),
        ),
        ("x-github-delivery".to_owned(), delivery.to_owned()),
        ("x-github-event".to_owned(), "push".to_owned()),
    ]
}

fn with_headers(
    mut request: reqwest::RequestBuilder,
    headers: &[(String, String)],
) -> reqwest::RequestBuilder {
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// A client trusting only the test CA.
fn client_trusting(pki: &TestPki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).expect("the CA");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("a client")
}

// === the configuration ===

/// Where the running broker's pieces are.
struct Setup<'a> {
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    data_dir: PathBuf,
    pki: &'a PkiFiles,
    role_file: PathBuf,
    /// The reachable endpoint's address (credentials are added here).
    up: std::net::SocketAddr,
    /// The role's http function.
    role_endpoint: String,
    /// Where nothing listens.
    closed: std::net::SocketAddr,
    kafka: String,
    topic: String,
    redis: String,
}

/// A config using every secret-bearing setting. The secrets that have an environment override
/// are left to [`env`]; the others are written here.
fn config(s: &Setup<'_>) -> String {
    let worker = env!("CARGO_BIN_EXE_lambda_worker");
    let redis_with_password =
        s.redis
            .replacen("redis://", &format!("redis://:{REDIS_PASSWORD}@"), 1);
    format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"

[server.tls]
certificate = {server_cert:?}
key = {server_key:?}

[queue]
data_dir = {data_dir:?}

[auth.tokens.admin]
role = "admin"
token = "{TOKEN_FILE}"

[auth.tokens.ci]
role = "invoker"

[auth.access_keys.deploy]
role = "invoker"
access_key_id = "{KEY_ID}"

[execution_roles.payments]
environment = {{ STRIPE_KEY = {{ env = "CANARY_PAYMENTS_STRIPE_KEY" }}, DB_PASSWORD = {{ file = {role_file:?} }} }}
headers = {{ X-Api-Key = {{ env = "CANARY_PAYMENTS_API_KEY" }} }}

[functions.pay]
target = {{ type = "process", command = {worker:?} }}
timeout = "30s"
execution_role = "payments"
max_retry_attempts = 0
on_success = {{ type = "redis", url = "{redis_with_password}", stream = "impulse-canary-success" }}
on_failure = {{ type = "kafka", bootstrap_servers = "{kafka}", topic = "{topic}-dlq", librdkafka_options = {{ "sasl.password" = "{KAFKA_DEST_SASL}" }} }}

[functions.pay-http]
target = {{ type = "http", endpoint = "{role_endpoint}" }}
execution_role = "payments"

[functions.basic-up]
target = {{ type = "http", endpoint = "http://svc:{ENDPOINT_UP}@{up}/" }}

[functions.basic-down]
timeout = "2s"
max_retry_attempts = 0
target = {{ type = "http", endpoint = "https://svc:{ENDPOINT_DOWN}@localhost:{closed_port}/invoke", tls = {{ ca_file = {ca:?}, client_certificate = {client_cert:?}, client_key = {client_key:?} }} }}

[triggers.hook]
type = "http"
function = "basic-up"
path = "/hook"
webhook = {{ scheme = "github" }}

[triggers.private]
type = "http"
function = "basic-up"
path = "/private"

[triggers.orders]
type = "kafka"
function = "basic-up"
bootstrap_servers = "{kafka}"
topics = ["{topic}"]
group_id = "{topic}-group"
starting_position = "earliest"
batch_window = "0s"
librdkafka_options = {{ "sasl.username" = "svc", "sasl.password" = "{KAFKA_SASL}", "debug" = "conf" }}
"#,
        listen = s.listen,
        admin = s.admin,
        server_cert = s.pki.server_certificate,
        server_key = s.pki.server_key,
        data_dir = s.data_dir,
        role_file = s.role_file,
        role_endpoint = s.role_endpoint,
        kafka = s.kafka,
        topic = s.topic,
        up = s.up,
        closed_port = s.closed.port(),
        ca = s.pki.ca,
        client_cert = s.pki.client_certificate,
        client_key = s.pki.client_key,
    )
}

/// The broker's environment: overrides and the role's sources.
const ENV: &[(&str, &str)] = &[
    ("IMPULSE_AUTH_TOKEN_CI", TOKEN_ENV),
    ("IMPULSE_AUTH_SECRET_ACCESS_KEY_DEPLOY", SIGV4_SECRET),
    ("IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET", WEBHOOK),
    ("CANARY_PAYMENTS_STRIPE_KEY", ROLE_ENV),
    ("CANARY_PAYMENTS_API_KEY", ROLE_HEADER),
];

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Every file under `dir`, as lossy text, one after the other.
fn read_tree(dir: &Path) -> String {
    let mut text = String::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("a readable file");
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    text
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `impulse ARGS…` with `env` added and `RUST_LOG=debug`.
fn impulse(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary())
        .args(args)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("impulse runs")
}

// === the tests ===

#[tokio::test]
async fn no_secret_reaches_the_log_an_answer_or_the_metrics_of_a_running_broker() {
    let kafka_bootstrap = require_kafka().await;
    let redis = require_redis().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::generate();
    let files = pki.write_to(dir.path());
    let role_file = dir.path().join("db-password");
    std::fs::write(&role_file, format!("{ROLE_FILE}\n")).expect("write the role's secret");
    let forms = forms(&[
        ("server private key", pki.server.key.as_str()),
        ("client private key", pki.client.key.as_str()),
    ]);

    let mut up = FunctionServer::start(|_event: Value| async move {
        axum::Json(json!({ "statusCode": 200, "body": "up" }))
    })
    .await;
    let mut role_fn =
        FunctionServer::start(|_event: Value| async move { axum::Json(json!({ "ok": true })) })
            .await;
    let topic = format!("impulse-secrets-{}", unique());
    kafka::create_topic(&kafka_bootstrap, &topic, 1).await;
    // The destination topic exists before anything reads it: the reader below must not race
    // the broker's first write, which would otherwise create it.
    kafka::create_topic(&kafka_bootstrap, &format!("{topic}-dlq"), 1).await;
    let setup = Setup {
        listen: free_addr(),
        admin: free_addr(),
        data_dir: dir.path().join("data"),
        pki: &files,
        role_file,
        up: up.addr,
        role_endpoint: role_fn.endpoint(),
        closed: free_addr(),
        kafka: kafka_bootstrap.clone(),
        topic: topic.clone(),
        redis,
    };
    let config = config(&setup);
    let mut broker = Running::start(dir.path(), &config, "debug", ENV);
    let client = client_trusting(&pki);
    let admin = |path: &str| format!("https://localhost:{}{path}", setup.admin.port());
    let host = format!("localhost:{}", setup.listen.port());
    let url = |path: &str| format!("https://{host}{path}");
    let invoke_path = |function: &str| format!("/2015-03-31/functions/{function}/invocations");
    broker.wait_ready(&client, &admin("/readyz")).await;
    let mut answers = Answers::default();

    // Refused: no token, a wrong token, a wrong SigV4 secret, a forged webhook.
    let path = invoke_path("basic-up");
    let refusals = [
        ("no token", client.post(url(&path))),
        (
            "a wrong token",
            client
                .post(url(&path))
                .bearer_auth("canary-wrong-token-0000000"),
        ),
        (
            "a wrong SigV4 secret",
            with_headers(
                client.post(url(&path)),
                &sigv4_headers("canary-wrong-sigv4-secret-00", &host, &path, b"{}"),
            ),
        ),
        (
            "a webhook signed with another secret",
            with_headers(
                client.post(url("/hook")),
                &github_headers("canary-other-webhook-secret", "d-forged", "{}"),
            ),
        ),
        ("metrics without a token", client.get(admin("/metrics"))),
    ];
    for (what, request) in refusals {
        let request = if what.contains("metrics") {
            request
        } else {
            request.body("{}")
        };
        let (status, body) = answers
            .record(what, request.send().await.expect("an answer"))
            .await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            "{what}: {status} {body}"
        );
    }
    assert!(
        answers.0.contains("InvalidSignatureException"),
        "{}",
        answers.0
    );

    // Each credential works: the file token, the environment token, the SigV4 secret, the
    // webhook secret; the endpoint's password arrives as Basic auth.
    let basic_up = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc:{ENDPOINT_UP}"))
    );
    let accepted = [
        (
            "the file token",
            client.post(url(&path)).bearer_auth(TOKEN_FILE).body("{}"),
        ),
        (
            "the environment token",
            client.post(url(&path)).bearer_auth(TOKEN_ENV).body("{}"),
        ),
        (
            "a SigV4 signature",
            with_headers(
                client.post(url(&path)),
                &sigv4_headers(SIGV4_SECRET, &host, &path, b"{}"),
            )
            .body("{}"),
        ),
        (
            "a signed webhook",
            with_headers(
                client.post(url("/hook")),
                &github_headers(WEBHOOK, "d-signed", "{}"),
            )
            .body("{}"),
        ),
        (
            "the private trigger with a token",
            client
                .post(url("/private"))
                .bearer_auth(TOKEN_ENV)
                .body("{}"),
        ),
    ];
    for (what, request) in accepted {
        let (status, body) = answers
            .record(what, request.send().await.expect("an answer"))
            .await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        let received = up.next().await;
        assert_eq!(
            received.headers.get("authorization").map(|v| v.as_bytes()),
            Some(basic_up.as_bytes()),
            "{what}: the endpoint's credentials arrive as Basic auth"
        );
        // The event does not carry the caller's credential (a bearer token on an AWS_IAM
        // route is removed before the function sees the request).
        assert_no_secret(
            &forms,
            &format!("the event of {what}"),
            &received.event.to_string(),
        );
    }

    // The role's secrets reach its functions. The process function answers with the values it
    // holds: that answer is the function's output, checked for the values and not scanned.
    let pay = client
        .post(url(&invoke_path("pay")))
        .bearer_auth(TOKEN_ENV)
        .json(&json!({ "env": ["STRIPE_KEY", "DB_PASSWORD", "CANARY_PAYMENTS_STRIPE_KEY"] }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(pay.status(), StatusCode::OK);
    let pay: Value = pay.json().await.expect("JSON");
    assert_eq!(
        pay["env"],
        json!({ "STRIPE_KEY": ROLE_ENV, "DB_PASSWORD": ROLE_FILE, "CANARY_PAYMENTS_STRIPE_KEY": null })
    );
    let (status, body) = answers
        .record(
            "the role's http function",
            client
                .post(url(&invoke_path("pay-http")))
                .bearer_auth(TOKEN_ENV)
                .body("{}")
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let received = role_fn.next().await;
    assert_eq!(
        received.headers.get("x-api-key").map(|v| v.as_bytes()),
        Some(ROLE_HEADER.as_bytes())
    );

    // The unreachable https endpoint (with a client key): its error names it, redacted.
    let (status, body) = answers
        .record(
            "the unreachable endpoint",
            client
                .post(url(&invoke_path("basic-down")))
                .bearer_auth(TOKEN_FILE)
                .body("{}")
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let down = format!("localhost:{}/invoke", setup.closed.port());
    assert!(body.contains(&down), "the error names the endpoint: {body}");
    // Asynchronously, the dispatcher logs the failure.
    let (status, body) = answers
        .record(
            "the unreachable endpoint, async",
            client
                .post(url(&invoke_path("basic-down")))
                .bearer_auth(TOKEN_FILE)
                .header("x-amz-invocation-type", "Event")
                .body("{}")
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    broker
        .wait_for_output("Async invocation failed; retrying. function=basic-down")
        .await;

    // A success record for a Redis destination whose password this Redis refuses.
    let (status, body) = answers
        .record(
            "pay, async",
            client
                .post(url(&invoke_path("pay")))
                .bearer_auth(TOKEN_FILE)
                .header("x-amz-invocation-type", "Event")
                .body(r#"{"echo": 1}"#)
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    broker
        .wait_for_output("Destination write failed; the event stays queued.")
        .await;

    // A failure record for the Kafka destination with `ssl.key.password`.
    let (status, body) = answers
        .record(
            "pay fails, async",
            client
                .post(url(&invoke_path("pay")))
                .bearer_auth(TOKEN_FILE)
                .header("x-amz-invocation-type", "Event")
                .body(r#"{"fail": true}"#)
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let dead = kafka::read_values(
        &kafka_bootstrap,
        &format!("{topic}-dlq"),
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        dead.len(),
        1,
        "the failure record reached the Kafka destination"
    );

    // The Kafka trigger with `sasl.password` reads the topic.
    let producer = kafka::producer(&kafka_bootstrap);
    kafka::produce(&producer, &topic, 0, "k", br#"{"order": 1}"#).await;
    let received = up.next().await;
    assert_eq!(
        received.event["eventSource"], "aws:SelfManagedKafka",
        "{}",
        received.event
    );

    let (status, metrics) = answers
        .record(
            "metrics",
            client
                .get(admin("/metrics"))
                .bearer_auth(TOKEN_FILE)
                .send()
                .await
                .expect("an answer"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    assert!(metrics.contains("basic-up"), "{metrics}");

    broker.stop().await;
    // Nothing at rest either: the queue and the embedded logs hold events, never credentials.
    let stored = read_tree(&setup.data_dir);
    assert!(
        !stored.is_empty(),
        "the async events were queued in the data directory"
    );
    assert_no_secret(&forms, "the data directory", &stored);
    let output = broker.output();
    assert!(output.contains("DEBUG"), "debug logging was on:\n{output}");
    // The redaction markers: the endpoint and Redis URLs are named, without their passwords.
    assert!(
        output.contains(&down),
        "the log names the unreachable endpoint:\n{output}"
    );
    assert!(
        output.contains("sasl.password = [redacted]"),
        "librdkafka redacts its own dump:\n{output}"
    );
    assert!(output.contains("redis://:***@"), "{output}");
    assert_no_secret(&forms, "the broker's output", &output);
    assert_no_secret(&forms, "the broker's answers", &answers.0);
}

#[tokio::test]
async fn validate_schema_and_a_refused_run_print_no_secret() {
    let redis = require_redis().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::generate();
    let files = pki.write_to(dir.path());
    let role_file = dir.path().join("db-password");
    std::fs::write(&role_file, format!("{ROLE_FILE}\n")).expect("write the role's secret");
    let forms = forms(&[
        ("server private key", pki.server.key.as_str()),
        ("client private key", pki.client.key.as_str()),
    ]);
    let setup = Setup {
        listen: free_addr(),
        admin: free_addr(),
        data_dir: dir.path().join("data"),
        pki: &files,
        role_file: role_file.clone(),
        up: free_addr(),
        role_endpoint: "http://127.0.0.1:9/".to_owned(),
        closed: free_addr(),
        kafka: "127.0.0.1:9092".to_owned(),
        topic: "impulse-secrets-validate".to_owned(),
        redis: redis.clone(),
    };
    let valid = config(&setup);
    let valid_path = dir.path().join("valid.toml");
    std::fs::write(&valid_path, &valid).expect("write");
    let valid_path = valid_path.to_str().expect("utf-8");

    // A valid config, with and without its environment.
    let out = impulse(&["validate", "--config", valid_path], ENV);
    assert!(out.status.success(), "{}", printed(&out));
    assert_no_secret(&forms, "validate's output", &printed(&out));
    let out = impulse(&["validate", "--config", valid_path], &[]);
    assert!(
        !out.status.success(),
        "the token and secrets come from the environment"
    );
    assert_no_secret(
        &forms,
        "validate's output without the environment",
        &printed(&out),
    );

    // The schema.
    let out = impulse(&["schema"], ENV);
    assert!(out.status.success());
    let schema = printed(&out);
    assert!(schema.contains("secret_access_key"), "{schema}");
    assert_no_secret(&forms, "the schema", &schema);

    // Errors next to every secret, and secrets that are themselves invalid.
    let bad_key = dir.path().join("bad-key.pem");
    std::fs::write(
        &bad_key,
        format!("-----BEGIN PRIVATE KEY-----\n{BAD_KEY}!!\n-----END PRIVATE KEY-----\n"),
    )
    .expect("write");
    let invalid = valid
        // A token that is too short.
        .replace(
            &format!("token = \"{TOKEN_FILE}\""),
            &format!("token = \"{SHORT_TOKEN}\""),
        )
        // A secret access key that is too short, in the file (the environment overrides it).
        .replace(
            &format!("access_key_id = \"{KEY_ID}\""),
            &format!("access_key_id = \"{KEY_ID}\"\nsecret_access_key = \"{SHORT_SIGV4_SECRET}\""),
        )
        // A role's secret written inline instead of its source.
        .replace(
            "X-Api-Key = { env = \"CANARY_PAYMENTS_API_KEY\" }",
            &format!("X-Api-Key = \"{ROLE_HEADER}\""),
        )
        // Broker-owned options next to the trigger's and the destination's `sasl.password`.
        .replace("\"debug\" = \"conf\"", "\"group.id\" = \"mine\"")
        .replace(
            &format!("\"sasl.password\" = \"{KAFKA_DEST_SASL}\" }} }}"),
            &format!(
                "\"sasl.password\" = \"{KAFKA_DEST_SASL}\", \"bootstrap.servers\" = \"x\" }} }}"
            ),
        )
        // An unparsable endpoint and an insecure Redis URL, both with passwords.
        .replace(&format!("@{}/\"", setup.up), "@127.0.0.1:99999/\"")
        .replace("stream = \"impulse-canary-success\"", "stream = \"\"")
        .replace(
            &format!(
                "url = \"{}",
                redis.replacen("redis://", &format!("redis://:{REDIS_PASSWORD}@"), 1)
            ),
            &format!(
                "url = \"{}#insecure",
                redis.replacen("redis://", &format!("redis://:{REDIS_PASSWORD}@"), 1)
            ),
        )
        // A webhook secret in the file, in the wrong form for its scheme.
        .replace(
            "webhook = { scheme = \"github\" }",
            &format!("webhook = {{ scheme = \"stripe\", secret = \"{WEBHOOK}\" }}"),
        )
        // A key file that is not valid PEM, with a canary inside.
        .replace(
            &format!("key = {:?}", files.server_key),
            &format!("key = {bad_key:?}"),
        );
    let invalid_path = dir.path().join("invalid.toml");
    std::fs::write(&invalid_path, &invalid).expect("write");
    let bad_env: &[(&str, &str)] = &[
        ("IMPULSE_AUTH_TOKEN_CI", SHORT_ENV_TOKEN),
        ("IMPULSE_AUTH_SECRET_ACCESS_KEY_DEPLOY", SHORT_SIGV4_SECRET),
        ("IMPULSE_TRIGGER_HOOK_WEBHOOK_SECRET", WEBHOOK),
        (
            "IMPULSE_FUNCTION_BASIC_DOWN_ENDPOINT",
            &format!("ftp://svc:{ENDPOINT_DOWN}@localhost/"),
        ),
        (
            "IMPULSE_QUEUE_REDIS_URL",
            &format!("redis://:{QUEUE_REDIS_PASSWORD}@localhost#insecure"),
        ),
    ];
    let out = impulse(
        &[
            "validate",
            "--config",
            invalid_path.to_str().expect("utf-8"),
        ],
        bad_env,
    );
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    for field in [
        "auth.tokens.admin.token:",
        "auth.tokens.ci.token:",
        "auth.access_keys.deploy.secret_access_key:",
        "execution_roles.payments.headers.X-Api-Key:",
        "triggers.orders.librdkafka_options.\"group.id\":",
        "functions.pay.on_failure.librdkafka_options.\"bootstrap.servers\":",
        "functions.basic-up.target.endpoint:",
        "functions.basic-down.target.endpoint:",
        "functions.pay.on_success.url:",
        "triggers.hook.webhook.secret:",
        "server.tls.key:",
        "queue.redis.url:",
    ] {
        assert!(text.contains(field), "no error for {field}:\n{text}");
    }
    assert_no_secret(&forms, "validate's errors", &text);
    // The same errors from `run`, which refuses to start.
    let out = impulse(
        &["run", "--config", invalid_path.to_str().expect("utf-8")],
        bad_env,
    );
    assert!(!out.status.success());
    assert_no_secret(&forms, "run's errors", &printed(&out));

    // A run that fails at start: the async queue's Redis refuses the password.
    let queue = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[queue]\nbackend = \"redis\"\n\
         data_dir = {:?}\nredis = {{ url = {:?} }}\n",
        free_addr(),
        free_addr(),
        dir.path().join("queue-data"),
        redis.replacen("redis://", &format!("redis://:{QUEUE_REDIS_PASSWORD}@"), 1),
    );
    let queue_path = dir.path().join("queue.toml");
    std::fs::write(&queue_path, queue).expect("write");
    let out = impulse(
        &["run", "--config", queue_path.to_str().expect("utf-8")],
        &[],
    );
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("redis://:***@"),
        "the URL is named, redacted:\n{text}"
    );
    assert_no_secret(&forms, "run's start-up error", &text);

    // `dlq list` on the Redis destination whose password this Redis refuses.
    let out = impulse(
        &[
            "dlq",
            "list",
            "--config",
            valid_path,
            "--function",
            "pay",
            "--destination",
            "on-success",
        ],
        ENV,
    );
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("redis://:***@"),
        "the URL is named, redacted:\n{text}"
    );
    assert_no_secret(&forms, "dlq list's error", &text);

    // A token written as a number.
    let numeric = format!("[auth.tokens.ci]\nrole = \"invoker\"\ntoken = {NUMERIC_TOKEN}\n");
    let numeric_path = dir.path().join("numeric.toml");
    std::fs::write(&numeric_path, numeric).expect("write");
    let out = impulse(
        &[
            "validate",
            "--config",
            numeric_path.to_str().expect("utf-8"),
        ],
        &[],
    );
    let text = printed(&out);
    assert!(
        text.contains("auth.tokens.ci.token: invalid type: integer"),
        "{text}"
    );
    assert_no_secret(&forms, "validate's type error", &text);

    // A run that fails at start: librdkafka, built without OpenSSL here, refuses
    // `ssl.key.password` and quotes its value in the error; the Redis trigger's URL, with its
    // password, is in the same configuration.
    let kafka = format!(
        "[server]\nlisten = \"{}\"\nadmin_listen = \"{}\"\n\n[queue]\ndata_dir = {:?}\n\n\
         [functions.f]\ntarget = {{ type = \"http\", endpoint = \"http://127.0.0.1:9/\" }}\n\
         on_failure = {{ type = \"kafka\", bootstrap_servers = \"127.0.0.1:9092\", topic = \"t\", \
         librdkafka_options = {{ \"ssl.key.password\" = \"{KAFKA_SSL_KEY}\" }} }}\n\n\
         [triggers.stream]\ntype = \"redis\"\nfunction = \"f\"\nstream = \"s\"\n\
         url = \"redis://:{REDIS_TRIGGER_PASSWORD}@127.0.0.1:6379\"\n",
        free_addr(),
        free_addr(),
        dir.path().join("kafka-data"),
    );
    let kafka_path = dir.path().join("kafka.toml");
    std::fs::write(&kafka_path, kafka).expect("write");
    let out = impulse(
        &["run", "--config", kafka_path.to_str().expect("utf-8")],
        &[],
    );
    let text = printed(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("ssl.key.password ***"), "{text}");
    assert_no_secret(&forms, "run's Kafka error", &text);
}
