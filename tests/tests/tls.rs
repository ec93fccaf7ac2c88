//! TLS end to end: the real `impulse` binary with `[server.tls]`, called over https with a
//! private CA; and credentials in a function endpoint, which must reach no output.

use std::time::Duration;

use impulse_test_support::tls::{PkiFiles, TestPki};
use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::{cli, free_addr};
use impulse_tests::process::Running;
use impulse_tests::wait::eventually;
use serde_json::{json, Value};

const CANARY: &str = "canary-endpoint-pw-51c2";

/// A client trusting only the test CA.
fn client_trusting(pki: &TestPki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca.as_bytes()).expect("the CA");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("a client")
}

fn server_tls(files: &PkiFiles) -> String {
    format!(
        "[server.tls]\ncertificate = {:?}\nkey = {:?}\n",
        files.server_certificate, files.server_key
    )
}

#[tokio::test]
async fn both_listeners_serve_https_with_the_configured_certificate() {
    let mut function =
        FunctionServer::start(|event: Value| async move { axum::Json(json!({ "echo": event })) })
            .await;
    let failing = FunctionServer::start(|_event: Value| async move {
        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
    })
    .await;
    let pki = TestPki::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let files = pki.write_to(dir.path());
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"

{tls}
[queue]
data_dir = {data:?}

[functions.echo]
target = {{ type = "http", endpoint = "{endpoint}" }}

[functions.failing]
target = {{ type = "http", endpoint = "{failing}" }}
max_retry_attempts = 0
on_failure = {{ type = "log", name = "failing-dlq" }}
"#,
        tls = server_tls(&files),
        data = dir.path().join("data"),
        endpoint = function.endpoint(),
        failing = failing.endpoint(),
    );
    let mut running = Running::start(dir.path(), &config, "info", &[]);
    let client = client_trusting(&pki);
    let admin_url = |path: &str| format!("https://localhost:{}{path}", admin.port());
    running.wait_ready(&client, &admin_url("/readyz")).await;

    let health = client
        .get(admin_url("/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.expect("body"), "ok\n");

    let invoke = format!(
        "https://localhost:{}/2015-03-31/functions/echo/invocations",
        listen.port()
    );
    let response = client
        .post(&invoke)
        .body(r#"{"n":1}"#)
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({ "echo": { "n": 1 } }));
    assert_eq!(function.next().await.event, json!({ "n": 1 }));

    // Plain HTTP to a TLS port gets no answer; nor does a client that does not trust the CA.
    for url in [
        format!("http://{listen}/2015-03-31/functions/echo/invocations"),
        format!("http://{admin}/healthz"),
    ] {
        let plain = reqwest::Client::new().get(&url).send().await;
        assert!(plain.is_err(), "{url}: {plain:?}");
    }
    let stranger = client_trusting(&TestPki::generate_named("Another CA"))
        .get(admin_url("/healthz"))
        .send()
        .await;
    assert!(stranger.is_err(), "{stranger:?}");

    // `impulse dlq replay` reaches an https broker, trusting its CA with --ca-file.
    let failed = client
        .post(invoke.replace("/echo/", "/failing/"))
        .header("x-amz-invocation-type", "Event")
        .body(r#"{"n":2}"#)
        .send()
        .await
        .expect("https");
    assert_eq!(failed.status(), 202);
    let config_path = dir.path().join("impulse.toml");
    let config_arg = config_path.to_str().expect("utf-8 path");
    let list = [
        "dlq",
        "list",
        "--config",
        config_arg,
        "--function",
        "failing",
    ];
    eventually("the failure record", Duration::from_secs(30), async || {
        let listing = String::from_utf8_lossy(&cli(&list).stdout).into_owned();
        if listing.contains("1 records") {
            Ok(())
        } else {
            Err(listing)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "dlq",
            "replay",
            "--config",
            config_arg,
            "--function",
            "failing",
        ];
        args.extend(["--to", "echo"]);
        args.extend(extra);
        cli(&args)
    };
    let untrusted = replay(&[]);
    assert!(!untrusted.status.success());
    let ca = files.ca.to_str().expect("utf-8 path");
    let trusted = replay(&["--ca-file", ca]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert_eq!(function.next().await.event, json!({ "n": 2 }));

    running.stop().await;
}

#[tokio::test]
async fn endpoint_credentials_appear_in_no_answer_log_or_validate_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (listen, admin) = (free_addr(), free_addr());
    // Nothing listens there: every invocation fails in transport.
    let closed = free_addr();
    let config = format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin}"

[queue]
data_dir = {data:?}

[functions.guarded]
timeout = "2s"
target = {{ type = "http", endpoint = "http://svc:{CANARY}@{closed}/invoke" }}
"#,
        data = dir.path().join("data"),
    );
    let mut running = Running::start(dir.path(), &config, "debug", &[]);
    let client = reqwest::Client::new();
    running
        .wait_ready(&client, &format!("http://{admin}/readyz"))
        .await;

    let sync = client
        .post(format!(
            "http://{listen}/2015-03-31/functions/guarded/invocations"
        ))
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(sync.status(), 502);
    let body = sync.text().await.expect("body");
    assert!(
        body.contains(&closed.to_string()),
        "the error names the endpoint: {body}"
    );
    assert!(!body.contains(CANARY), "{body}");

    // An async invocation fails in the dispatcher, which logs its retries.
    let accepted = client
        .post(format!(
            "http://{listen}/2015-03-31/functions/guarded/invocations"
        ))
        .header("x-amz-invocation-type", "Event")
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(accepted.status(), 202);
    eventually(
        "the failed attempt to be logged",
        Duration::from_secs(10),
        async || {
            let logs = running.output();
            if logs.contains("Async invocation failed; retrying.") {
                Ok(())
            } else {
                Err("no failed attempt in the log yet".to_owned())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", running.output()));
    running.stop().await;
    let logs = running.output();
    assert!(
        !logs.contains(CANARY),
        "the password reached the log:\n{logs}"
    );

    // `validate` on a config with another problem next to the endpoint.
    let broken = config.replace("timeout = \"2s\"", "timeout = \"0s\"");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, broken).expect("write");
    let output = cli(&["validate", "--config", path.to_str().expect("utf-8 path")]);
    assert!(!output.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("functions.guarded.timeout"), "{printed}");
    assert!(!printed.contains(CANARY), "{printed}");
}
