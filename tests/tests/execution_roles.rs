//! Execution roles end to end: the real `impulse` binary reads a role's secrets from its own
//! environment and a file, gives them to the functions that use the role (a `lambda_worker`
//! process, an HTTP endpoint run by this test) and to no other, and never writes them to its
//! log, even at debug level.

use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use impulse_tests::impulse::{binary, cli, Impulse};
use serde_json::{json, Value};

const CANARY_ENV: &str = "canary-e2e-stripe-3f9a";
const CANARY_FILE: &str = "canary-e2e-db-81d0";
const CANARY_HEADER: &str = "Bearer canary-e2e-auth-c75e";

/// What the endpoint saw: (path, `Authorization` header or `-`) per request.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP function on 127.0.0.1 answering with the `Authorization` header it received.
async fn endpoint(seen: Seen) -> String {
    let handler = |path: &'static str| {
        let seen = seen.clone();
        post(move |headers: HeaderMap| async move {
            let authorization = headers
                .get("authorization")
                .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
            seen.lock()
                .expect("not poisoned")
                .push((path.to_owned(), authorization.clone()));
            axum::Json(json!({ "authorization": authorization }))
        })
    };
    let router = Router::new()
        .route("/pay", handler("/pay"))
        .route("/plain", handler("/plain"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn config(secret_file: &std::path::Path, endpoint: &str) -> String {
    let worker = env!("CARGO_BIN_EXE_lambda_worker");
    format!(
        r#"
[execution_roles.payments]
environment = {{ STRIPE_KEY = {{ env = "E2E_PAYMENTS_STRIPE_KEY" }}, DB_PASSWORD = {{ file = {secret_file:?} }} }}
headers = {{ Authorization = {{ env = "E2E_PAYMENTS_API_AUTH" }} }}

[functions.pay]
target = {{ type = "process", command = {worker:?} }}
timeout = "30s"
execution_role = "payments"

[functions.plain]
target = {{ type = "process", command = {worker:?} }}
timeout = "30s"

[functions.pay-http]
target = {{ type = "http", endpoint = "{endpoint}/pay" }}
execution_role = "payments"

[functions.plain-http]
target = {{ type = "http", endpoint = "{endpoint}/plain" }}
"#
    )
}

async fn invoke(impulse: &Impulse, function: &str, event: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(impulse.url(&format!("/2015-03-31/functions/{function}/invocations")))
        .json(event)
        .send()
        .await
        .expect("the Invoke API answers");
    assert!(response.status().is_success(), "{function}: {response:?}");
    response.json().await.expect("a JSON result")
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [CANARY_ENV, CANARY_FILE, "canary-e2e-auth"] {
        assert!(
            !text.contains(canary),
            "{canary} appears in {what}:\n{text}"
        );
    }
}

#[tokio::test]
async fn secrets_reach_the_role_s_functions_only_and_never_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("db-password");
    std::fs::write(&secret_file, format!("{CANARY_FILE}\n")).expect("write the secret");
    let seen = Seen::default();
    let endpoint = endpoint(seen.clone()).await;
    let config = config(&secret_file, &endpoint);

    // `validate` needs no secrets: none are in its environment.
    let config_path = dir.path().join("roles.toml");
    std::fs::write(&config_path, &config).expect("write config");
    let validated = cli(&["validate", "--config", config_path.to_str().expect("utf-8")]);
    assert!(validated.status.success(), "{validated:?}");

    let mut impulse = Impulse::start_with_env(
        &config,
        &[
            ("RUST_LOG", "debug"),
            ("E2E_PAYMENTS_STRIPE_KEY", CANARY_ENV),
            ("E2E_PAYMENTS_API_AUTH", CANARY_HEADER),
        ],
    )
    .await;

    let ask = json!({ "env": ["STRIPE_KEY", "DB_PASSWORD", "E2E_PAYMENTS_STRIPE_KEY"] });
    let pay = invoke(&impulse, "pay", &ask).await;
    assert_eq!(
        pay["env"],
        json!({
            "STRIPE_KEY": CANARY_ENV,
            "DB_PASSWORD": CANARY_FILE,
            // The broker's own variable is not inherited: only the role's name for it.
            "E2E_PAYMENTS_STRIPE_KEY": null,
        })
    );
    let plain = invoke(&impulse, "plain", &ask).await;
    assert_eq!(
        plain["env"],
        json!({ "STRIPE_KEY": null, "DB_PASSWORD": null, "E2E_PAYMENTS_STRIPE_KEY": null })
    );

    let pay_http = invoke(&impulse, "pay-http", &json!({})).await;
    assert_eq!(pay_http["authorization"], CANARY_HEADER);
    let plain_http = invoke(&impulse, "plain-http", &json!({})).await;
    assert_eq!(plain_http["authorization"], "-");
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        [
            ("/pay".to_owned(), CANARY_HEADER.to_owned()),
            ("/plain".to_owned(), "-".to_owned()),
        ]
    );

    impulse.terminate();
    let status = impulse.wait(std::time::Duration::from_secs(30)).await;
    assert!(status.success(), "{status}");
    let logs = impulse.logs();
    assert!(
        logs.contains("Execution environment started."),
        "debug logging was on: {logs}"
    );
    assert_no_canary("the broker's log", &logs);
}

#[tokio::test]
async fn a_missing_secret_stops_run_naming_role_key_and_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing_file = dir.path().join("absent");
    let endpoint = "http://127.0.0.1:9";
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [queue]\ndata_dir = {:?}\n{}",
        dir.path().join("data"),
        config(&missing_file, endpoint)
    );
    let path = dir.path().join("roles.toml");
    std::fs::write(&path, config).expect("write config");
    // The header's variable is set (its value must not be echoed); the other two sources fail.
    let out = Command::new(binary())
        .args(["run", "--config", path.to_str().expect("utf-8")])
        .env("RUST_LOG", "debug")
        .env("E2E_PAYMENTS_API_AUTH", CANARY_HEADER)
        .env_remove("E2E_PAYMENTS_STRIPE_KEY")
        .output()
        .expect("impulse runs");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "execution_roles.payments.environment.DB_PASSWORD: file {} cannot be read",
            missing_file.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "execution_roles.payments.environment.STRIPE_KEY: environment variable \
             E2E_PAYMENTS_STRIPE_KEY is not set"
        ),
        "{stderr}"
    );
    assert_no_canary("run's errors", &stderr);
    assert_no_canary("run's output", &String::from_utf8_lossy(&out.stdout));
}
