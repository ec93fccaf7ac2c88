//! Prometheus scrapes a running `impulse`, and a query for its invocations returns a sample.

use std::time::Duration;

use impulse_tests::function::FunctionServer;
use impulse_tests::impulse::Impulse;
use impulse_tests::services;
use impulse_tests::wait::eventually;
use serde_json::{json, Value};

#[tokio::test]
async fn prometheus_scrapes_impulse_invocations() {
    let prometheus = services::require_prometheus().await;
    let function =
        FunctionServer::start(|_event: Value| async { axum::Json(json!({"ok": true})) }).await;
    let impulse = Impulse::start(&format!(
        r#"
[functions.scraped]
target = {{ type = "http", endpoint = "{}" }}
"#,
        function.endpoint()
    ))
    .await;
    let client = reqwest::Client::new();
    let ok = client
        .post(impulse.url("/2015-03-31/functions/scraped/invocations"))
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(ok.status(), 200);

    services::prometheus_set_targets(&[impulse.admin]);
    // Filter on this instance: Prometheus may still hold samples of earlier runs.
    let selector = format!(
        r#"impulse_invocations_total{{function="scraped",instance="{}"}}"#,
        impulse.admin
    );
    let query = format!("{prometheus}/api/v1/query?query={}", encode(&selector));
    // Prometheus re-reads its target file every second, but passes changes on at most every 5 s.
    let sample = eventually(
        "a sample in Prometheus",
        Duration::from_secs(30),
        async || {
            let body: Value = client
                .get(&query)
                .send()
                .await
                .expect("query prometheus")
                .json()
                .await
                .expect("json");
            match body["data"]["result"].as_array().and_then(|r| r.first()) {
                Some(sample) => Ok(sample.clone()),
                None => Err(body.to_string()),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sample["metric"]["outcome"], "success");
    assert_eq!(sample["value"][1], "1");
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
