//! Versions and aliases through the real `impulse` binary: weighted alias routing over 10,000
//! invocations, every qualified form of the Invoke API, triggers naming an alias, per-version
//! execution environments of a process function, and boto3 reading versions and aliases.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use impulse_tests::impulse::Impulse;
use impulse_tests::wait::wait_until;
use serde_json::{json, Value};

/// boto3, pinned as in the other boto3 tests (they share the venv).
const ADMIN_KEY_ID: &str = "AKIAIMPULSEVERSIONS1";
const ADMIN_SECRET: &str = "versions-canary-admin/K7MDENG+bPxRfiCYEXAMPLEKEY";
const READER_KEY_ID: &str = "AKIAIMPULSEVERSIONS2";
const READER_SECRET: &str = "versions-canary-reader/K7MDENG+bPxRfiCYEXAMPLEKEY";
const INVOKER_KEY_ID: &str = "AKIAIMPULSEVERSIONS3";
const INVOKER_SECRET: &str = "versions-canary-invoker/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// An HTTP function with one endpoint per version (`/latest`, `/v1`, `/v2`, …): counts the
/// requests each receives and answers `{"version": <path>, "event": <event>}`.
struct Versions {
    addr: SocketAddr,
    counts: Arc<BTreeMap<&'static str, AtomicU64>>,
}

impl Versions {
    async fn start() -> Self {
        let counts: Arc<BTreeMap<&'static str, AtomicU64>> = Arc::new(
            ["latest", "v1", "v2", "v3"]
                .into_iter()
                .map(|path| (path, AtomicU64::new(0)))
                .collect(),
        );
        let counting = counts.clone();
        let app = Router::new().route(
            "/{version}",
            post(
                move |Path(version): Path<String>, Json(event): Json<Value>| {
                    let counts = counting.clone();
                    async move {
                        if let Some(count) = counts.get(version.as_str()) {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        Json(json!({ "version": version, "event": event }))
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, counts }
    }

    fn endpoint(&self, version: &str) -> String {
        format!("http://{}/{version}", self.addr)
    }

    fn count(&self, version: &str) -> u64 {
        self.counts[version].load(Ordering::Relaxed)
    }

    /// `orders` with `$LATEST` at `/latest`, versions 1 and 2 at `/v1` and `/v2`, alias `live`
    /// on version 1 sending `weight` to version 2, and alias `stable` on version 2.
    fn config(&self, weight: f64) -> String {
        format!(
            r#"
[functions.orders]
target = {{ type = "http", endpoint = "{latest}" }}
# Far above what the test sends: no attempt may be throttled.
rate = {{ per_second = 1000000 }}

[functions.orders.versions.1]
target = {{ type = "http", endpoint = "{v1}" }}

[functions.orders.versions.2]
target = {{ type = "http", endpoint = "{v2}" }}
description = "the canary"

[functions.orders.aliases.live]
version = "1"
routing = {{ "2" = {weight} }}
description = "production"

[functions.orders.aliases.stable]
version = "2"
"#,
            latest = self.endpoint("latest"),
            v1 = self.endpoint("v1"),
            v2 = self.endpoint("v2"),
        )
    }
}

fn invoke_url(impulse: &Impulse, function: &str) -> String {
    impulse.url(&format!("/2015-03-31/functions/{function}/invocations"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_sends_its_weight_to_the_second_version() {
    const INVOCATIONS: u64 = 10_000;
    const CALLERS: u64 = 16;
    let versions = Versions::start().await;
    let impulse = Impulse::start(&versions.config(0.1)).await;
    let client = reqwest::Client::new();
    let url = invoke_url(&impulse, "orders:live");
    let callers = (0..CALLERS).map(|_| {
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut executed: BTreeMap<String, u64> = BTreeMap::new();
            for _ in 0..INVOCATIONS / CALLERS {
                let response = client.post(&url).body("{}").send().await.expect("invoke");
                assert_eq!(response.status(), 200);
                let version = response.headers()["x-amz-executed-version"]
                    .to_str()
                    .expect("ascii")
                    .to_owned();
                let body: Value = response.json().await.expect("json");
                // The header names the version that ran.
                assert_eq!(body["version"], format!("v{version}"), "{body}");
                *executed.entry(version).or_default() += 1;
            }
            executed
        })
    });
    let mut executed: BTreeMap<String, u64> = BTreeMap::new();
    for caller in futures::future::join_all(callers).await {
        for (version, n) in caller.expect("caller") {
            *executed.entry(version).or_default() += n;
        }
    }
    let (one, two) = (executed["1"], executed["2"]);
    assert_eq!(one + two, INVOCATIONS, "{executed:?}");
    assert_eq!((versions.count("v1"), versions.count("v2")), (one, two));
    assert_eq!(versions.count("latest"), 0);
    let share = two as f64 / INVOCATIONS as f64;
    assert!(
        (0.085..=0.115).contains(&share),
        "version 2 got {share} of the traffic, not 10 % ± 1.5 %"
    );

    // The executed version is a label of the invocation metrics.
    for (version, n) in [("1", one), ("2", two)] {
        let series = format!(
            r#"impulse_invocations_total{{function="orders",version="{version}",trigger="invoke",outcome="success"}}"#
        );
        assert_eq!(impulse.metric(&series).await, Some(n as f64), "{series}");
    }
}

#[tokio::test]
async fn every_qualified_form_runs_the_version_it_names() {
    let versions = Versions::start().await;
    let config = format!(
        r#"{}
[triggers.hook]
type = "http"
path = "/hook"
function = "orders:stable"
"#,
        versions.config(0.0)
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    let executed = async |function: &str, query: &str| {
        let response = client
            .post(format!("{}{query}", invoke_url(&impulse, function)))
            .body(r#"{"n": 1}"#)
            .send()
            .await
            .expect("invoke");
        let status = response.status().as_u16();
        let header = response
            .headers()
            .get("x-amz-executed-version")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body: Value = response.json().await.expect("json");
        (status, header, error_type, body)
    };
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:orders";
    for (function, query, version) in [
        ("orders", "", "$LATEST"),
        ("orders:$LATEST", "", "$LATEST"),
        ("orders:1", "", "1"),
        // SDKs percent-encode the colon.
        ("orders%3A2", "", "2"),
        (&format!("{arn}:1"), "", "1"),
        (&format!("{arn}%3A2"), "", "2"),
        ("orders", "?Qualifier=2", "2"),
        ("orders:1", "?Qualifier=1", "1"),
        (arn, "?Qualifier=stable", "2"),
        ("orders:stable", "", "2"),
        // Weight 0: the alias's own version only.
        ("orders:live", "", "1"),
    ] {
        let (status, header, _, body) = executed(function, query).await;
        assert_eq!(status, 200, "{function}{query}: {body}");
        assert_eq!(header.as_deref(), Some(version), "{function}{query}");
        let path = if version == "$LATEST" {
            "latest".to_owned()
        } else {
            format!("v{version}")
        };
        assert_eq!(body["version"], path, "{function}{query}");
    }

    let (status, _, error_type, body) = executed("orders:1", "?Qualifier=2").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        error_type.as_deref(),
        Some("InvalidParameterValueException")
    );
    assert_eq!(
        body["Message"],
        "The derived qualifier from the function name does not match the specified qualifier."
    );
    for (function, query) in [("orders:9", ""), ("orders", "?Qualifier=canary")] {
        let (status, _, error_type, body) = executed(function, query).await;
        assert_eq!(status, 404, "{function}{query}: {body}");
        assert_eq!(error_type.as_deref(), Some("ResourceNotFoundException"));
    }
    let (_, _, _, body) = executed("orders:9", "").await;
    assert_eq!(
        body["Message"],
        "Function not found: arn:aws:lambda:local:000000000000:function:orders:9"
    );

    // An asynchronous invocation keeps its qualifier in the queue.
    let before = versions.count("v1");
    let accepted = client
        .post(invoke_url(&impulse, "orders:1"))
        .header("x-amz-invocation-type", "Event")
        .body("{}")
        .send()
        .await
        .expect("invoke");
    assert_eq!(accepted.status(), 202);
    wait_until(
        "the async event ran version 1",
        Duration::from_secs(10),
        || versions.count("v1") == before + 1,
    )
    .await;

    // A trigger may name an alias.
    let before = versions.count("v2");
    let reply = client
        .post(impulse.url("/hook"))
        .body("{}")
        .send()
        .await
        .expect("trigger");
    assert_eq!(reply.status(), 200);
    assert_eq!(versions.count("v2"), before + 1);
}

#[tokio::test]
async fn each_version_of_a_process_function_has_its_own_environments() {
    let worker = env!("CARGO_BIN_EXE_lambda_worker");
    let config = format!(
        r#"
[functions.worker]
target = {{ type = "process", command = "{worker}", environment = {{ GREETING = "latest" }} }}
timeout = "30s"

[functions.worker.versions.1]
target = {{ type = "process", command = "{worker}", environment = {{ GREETING = "one" }} }}

[functions.worker.versions.2]
target = {{ type = "process", command = "{worker}", environment = {{ GREETING = "two" }} }}

[functions.worker.aliases.live]
version = "2"
"#
    );
    let impulse = Impulse::start(&config).await;
    let client = reqwest::Client::new();
    let event = json!({ "env": ["AWS_LAMBDA_FUNCTION_VERSION", "GREETING"], "context": true });
    let mut pids = BTreeMap::new();
    for (function, version, greeting, arn_qualifier) in [
        ("worker", "$LATEST", "latest", "$LATEST"),
        ("worker:1", "1", "one", "1"),
        ("worker:2", "2", "two", "2"),
        ("worker:live", "2", "two", "2"),
    ] {
        let response = client
            .post(invoke_url(&impulse, function))
            .json(&event)
            .send()
            .await
            .expect("invoke");
        assert_eq!(response.status(), 200, "{function}");
        assert_eq!(response.headers()["x-amz-executed-version"], version);
        let body: Value = response.json().await.expect("json");
        assert_eq!(
            body["env"],
            json!({ "AWS_LAMBDA_FUNCTION_VERSION": version, "GREETING": greeting }),
            "{function}: {body}"
        );
        assert_eq!(
            body["context"]["invoked_function_arn"],
            format!("arn:aws:lambda:local:000000000000:function:worker:{arn_qualifier}"),
            "{function}"
        );
        pids.entry(version)
            .or_insert_with(Vec::new)
            .push(body["pid"].clone());
    }
    // One warm environment per version: the alias reused version 2's, the others differ.
    assert_eq!(pids["2"][0], pids["2"][1], "{pids:?}");
    let distinct: std::collections::BTreeSet<String> =
        pids.values().map(|p| p[0].to_string()).collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
}

/// Runs `tests/workers/python/read_versions.py` with `key` against `function`.
async fn boto3_versions(impulse: &Impulse, key: (&str, &str), function: &str) -> Value {
    impulse_tests::python::boto3_script(
        "read_versions.py",
        &impulse.url(""),
        key,
        &["--function", function],
    )
    .await
}

#[tokio::test]
async fn boto3_reads_versions_and_aliases_and_is_refused_writes() {
    let versions = Versions::start().await;
    let config = format!(
        r#"{}
[functions.orders.policy]
principals = ["admin", "allowed"]

[auth.access_keys.admin]
role = "admin"
access_key_id = "{ADMIN_KEY_ID}"
secret_access_key = "{ADMIN_SECRET}"

[auth.access_keys.reader]
role = "read-only"
access_key_id = "{READER_KEY_ID}"
secret_access_key = "{READER_SECRET}"

[auth.access_keys.allowed]
role = "invoker"
access_key_id = "AKIAIMPULSEVERSIONS4"
secret_access_key = "versions-canary-allowed/K7MDENG+bPxRfiCYEXAMPLEKEY"

[auth.access_keys.outsider]
role = "invoker"
access_key_id = "{INVOKER_KEY_ID}"
secret_access_key = "{INVOKER_SECRET}"
"#,
        versions.config(0.25)
    );
    let impulse = Impulse::start(&config).await;
    let answer = boto3_versions(&impulse, (ADMIN_KEY_ID, ADMIN_SECRET), "orders").await;
    let ok = |key: &str| {
        assert_eq!(answer[key]["error"], Value::Null, "{key}: {answer}");
        answer[key]["ok"].clone()
    };
    let arn = "arn:aws:lambda:local:000000000000:function:orders";

    // Page by page (one per page): $LATEST, then the versions in order.
    let listed = ok("list_versions");
    let numbers: Vec<&Value> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| &v["Version"])
        .collect();
    assert_eq!(numbers, [&json!("$LATEST"), &json!("1"), &json!("2")]);
    assert_eq!(listed[0]["FunctionArn"], format!("{arn}:$LATEST"));
    assert_eq!(listed[2]["FunctionArn"], format!("{arn}:2"));
    assert_eq!(listed[2]["Description"], "the canary");

    let aliases = ok("list_aliases");
    assert_eq!(aliases.as_array().map(Vec::len), Some(2), "{aliases}");
    let live = ok("get_alias");
    assert_eq!(aliases[0], live);
    assert_eq!(live["Name"], "live");
    assert_eq!(live["AliasArn"], format!("{arn}:live"));
    assert_eq!(live["FunctionVersion"], "1");
    assert_eq!(live["Description"], "production");
    assert_eq!(
        live["RoutingConfig"],
        json!({ "AdditionalVersionWeights": { "2": 0.25 } })
    );
    assert_eq!(aliases[1]["Name"], "stable");
    let of_one = ok("list_aliases_of_1");
    assert_eq!(of_one["Aliases"], json!([live]));
    assert_eq!(
        answer["get_missing_alias"]["error"][0], "ResourceNotFoundException",
        "{answer}"
    );

    let one = ok("get_function_1");
    assert_eq!(one["Configuration"]["Version"], "1");
    assert_eq!(one["Configuration"]["FunctionArn"], format!("{arn}:1"));
    let live_configuration = ok("get_configuration_live");
    assert_eq!(live_configuration["Version"], "1");
    assert_eq!(live_configuration["FunctionArn"], format!("{arn}:live"));

    let invoked = ok("invoke_2");
    assert_eq!(invoked["StatusCode"], 200);
    assert_eq!(invoked["ExecutedVersion"], "2");
    assert_eq!(
        invoked["Payload"],
        json!({ "version": "v2", "event": { "hello": "boto3" } })
    );

    for write in [
        "publish_version",
        "create_alias",
        "update_code",
        "delete_function",
    ] {
        let error = &answer[write]["error"];
        assert_eq!(error[0], "AccessDeniedException", "{write}: {answer}");
        assert!(
            error[1]
                .as_str()
                .is_some_and(|m| m.contains("configuration file, which is the source of truth")),
            "{write}: {error}"
        );
    }

    // A reader may read but not invoke, qualified or not: the checks are the function's.
    let reader = boto3_versions(&impulse, (READER_KEY_ID, READER_SECRET), "orders").await;
    assert_eq!(reader["list_versions"]["error"], Value::Null, "{reader}");
    assert_eq!(reader["get_alias"]["error"], Value::Null, "{reader}");
    assert_eq!(
        reader["invoke_2"]["error"][0], "AccessDeniedException",
        "{reader}"
    );
    // An invoker outside the function's policy may not invoke a version either.
    let outsider = boto3_versions(&impulse, (INVOKER_KEY_ID, INVOKER_SECRET), "orders").await;
    assert_eq!(
        outsider["invoke_2"]["error"][0], "AccessDeniedException",
        "{outsider}"
    );
    assert_eq!(versions.count("v2"), 1, "only the admin's invocation ran");
}
