//! `process` function targets against real workers over real sockets: the `lambda_worker` bin
//! (built on the official `lambda_runtime` crate) and Python's `awslambdaric`, installed by the
//! test itself into `<workspace>/.services/python-venv` (kept between runs). A third, scripted
//! worker is this test driving the Runtime API with reqwest, for what real runtimes never do
//! (stale ids, oversized bodies, junk error documents).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use impulse_config::ProcessTargetConfig;
use impulse_invoker::process::ProcessFunction;
use impulse_invoker::{Invocation, InvokeError, Name};
use impulse_tests::wait::wait_until;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::ServiceExt;

/// The Python runtime client the tests install (pinned for reproducible runs).
const AWSLAMBDARIC: &str = "awslambdaric==4.2.2";
/// The function timeout of most tests: long enough for any cold start on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on every wait for a condition.
const SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Rust,
    Python,
}

fn python_dir() -> PathBuf {
    impulse_tests::python::workspace_root().join("tests/workers/python")
}

fn target(runtime: Runtime) -> ProcessTargetConfig {
    let (command, args, handler, working_dir) = match runtime {
        Runtime::Rust => (
            env!("CARGO_BIN_EXE_lambda_worker").to_owned(),
            vec![],
            Some("bootstrap".to_owned()),
            None,
        ),
        Runtime::Python => (
            python().display().to_string(),
            vec!["-m".into(), "awslambdaric".into(), "handler.handler".into()],
            Some("handler.handler".to_owned()),
            Some(python_dir()),
        ),
    };
    ProcessTargetConfig {
        command,
        args,
        handler,
        environment: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        working_dir,
        memory_size: 256,
        min_warm: 0,
        idle_timeout: Duration::from_secs(600),
    }
}

fn function(runtime: Runtime, max: usize) -> ProcessFunction {
    ProcessFunction::new("orders", &target(runtime), TIMEOUT, max).expect("valid target")
}

// === Python environment ===

/// The venv's Python with awslambdaric, created on first use.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| impulse_tests::python::venv("python-venv", &[AWSLAMBDARIC]))
        .clone()
}

// === helpers ===

fn invocation(request_id: &str, event: &Value, deadline: Option<Instant>) -> Invocation {
    Invocation {
        request_id: request_id.to_owned(),
        function: Name::new("orders"),
        trigger: Name::new("test"),
        payload: Bytes::from(event.to_string()),
        deadline,
        client_context: None,
        log_tail: None,
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn call(f: &ProcessFunction, event: Value) -> Result<Value, InvokeError> {
    call_with(f, invocation(&new_id(), &event, None)).await
}

async fn call_with(f: &ProcessFunction, invocation: Invocation) -> Result<Value, InvokeError> {
    let response = f.clone().oneshot(invocation).await?;
    Ok(serde_json::from_slice(&response.payload).expect("the workers answer JSON"))
}

async fn pid(f: &ProcessFunction) -> u64 {
    let result = call(f, json!({ "pid": true })).await.expect("pid call");
    result["pid"].as_u64().expect("a pid")
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn error_document(err: &InvokeError) -> (String, Value) {
    match err {
        InvokeError::Function {
            error_type,
            payload,
        } => (
            error_type.clone(),
            serde_json::from_slice(payload).expect("an error document is JSON"),
        ),
        other => panic!("expected a function error, got {other:?}"),
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Runs `check` once per runtime.
macro_rules! both_runtimes {
    ($check:ident) => {
        mod $check {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust() {
                super::$check(super::Runtime::Rust).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                super::$check(super::Runtime::Python).await;
            }
        }
    };
}

// === behaviour, both runtimes ===

both_runtimes!(success_with_lambdas_context);
async fn success_with_lambdas_context(runtime: Runtime) {
    let f = function(runtime, 2);
    let id = new_id();
    let before = epoch_ms();
    let result = call_with(
        &f,
        invocation(&id, &json!({ "echo": {"n": 1}, "context": true }), None),
    )
    .await
    .expect("success");
    assert_eq!(result["echo"], json!({"n": 1}));
    assert_eq!(result["request_id"], json!(id));
    let context = &result["context"];
    assert_eq!(
        context["invoked_function_arn"],
        "arn:aws:lambda:local:000000000000:function:orders:$LATEST"
    );
    let deadline = context["deadline_ms"].as_u64().expect("deadline");
    let timeout_ms = TIMEOUT.as_millis() as u64;
    assert!(
        deadline > before && deadline <= epoch_ms() + timeout_ms + 1_000,
        "deadline {deadline} is about now + timeout"
    );
    let env = &context["env"];
    let task_root = match runtime {
        Runtime::Rust => std::env::current_dir().expect("cwd"),
        Runtime::Python => python_dir(),
    };
    let expected = [
        ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/orders"),
        ("AWS_REGION", "local"),
        ("AWS_DEFAULT_REGION", "local"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("TZ", "UTC"),
        ("GREETING", "hello"),
    ];
    for (name, value) in expected {
        assert_eq!(env[name], json!(value), "{name}");
    }
    assert_eq!(
        env["LAMBDA_TASK_ROOT"],
        json!(task_root.display().to_string())
    );
    let handler = match runtime {
        Runtime::Rust => "bootstrap",
        Runtime::Python => "handler.handler",
    };
    assert_eq!(env["_HANDLER"], json!(handler));
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().expect("runtime api");
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    assert!(env["AWS_LAMBDA_LOG_STREAM_NAME"]
        .as_str()
        .is_some_and(|s| s.contains("[$LATEST]")));
    // Nothing of the broker's own environment leaks in (cargo sets this for the test).
    assert!(env.get("CARGO_MANIFEST_DIR").is_none(), "{env}");
    let trace = match runtime {
        Runtime::Rust => context["xray_trace_id"].clone(),
        Runtime::Python => env["_X_AMZN_TRACE_ID"].clone(),
    };
    assert!(
        trace.as_str().is_some_and(|t| t.starts_with("Root=1-")),
        "{trace}"
    );
}

both_runtimes!(function_error_keeps_the_environment);
async fn function_error_keeps_the_environment(runtime: Runtime) {
    let f = function(runtime, 1);
    let first = pid(&f).await;
    let err = call(&f, json!({ "fail": true }))
        .await
        .expect_err("function error");
    let (error_type, document) = error_document(&err);
    let expected_type = match runtime {
        Runtime::Rust => "Handled.TestFailure",
        Runtime::Python => "ValueError",
    };
    assert_eq!(error_type, expected_type);
    assert_eq!(document["errorType"], expected_type);
    assert_eq!(document["errorMessage"], "the event asked for a failure");
    // A handled error leaves the environment as it was: warm and reused.
    assert_eq!(pid(&f).await, first);
}

both_runtimes!(timeout_kills_and_replaces_the_environment);
async fn timeout_kills_and_replaces_the_environment(runtime: Runtime) {
    let f = function(runtime, 1);
    let first = pid(&f).await;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(500);
    let err = call_with(
        &f,
        invocation(&new_id(), &json!({ "sleep_ms": 20_000 }), Some(deadline)),
    )
    .await
    .expect_err("timeout");
    assert!(
        matches!(err, InvokeError::Timeout { after } if after <= Duration::from_millis(500)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "returned at the deadline"
    );
    wait_until("the timed-out environment is gone", SETTLE, || {
        !alive(first)
    })
    .await;
    let second = pid(&f).await;
    assert_ne!(second, first, "a new environment serves the next call");
}

both_runtimes!(crash_is_an_exit_error_and_replaced);
async fn crash_is_an_exit_error_and_replaced(runtime: Runtime) {
    let f = function(runtime, 1);
    let first = pid(&f).await;
    let id = new_id();
    let err = call_with(&f, invocation(&id, &json!({ "crash": true }), None))
        .await
        .expect_err("crash");
    let (error_type, document) = error_document(&err);
    assert_eq!(error_type, "Runtime.ExitError");
    assert_eq!(
        document["errorMessage"],
        json!(format!(
            "RequestId: {id} Error: Runtime exited with error: exit status 3"
        ))
    );
    assert_ne!(pid(&f).await, first);
}

both_runtimes!(warm_environments_are_reused);
async fn warm_environments_are_reused(runtime: Runtime) {
    let f = function(runtime, 4);
    let first = pid(&f).await;
    for _ in 0..3 {
        assert_eq!(pid(&f).await, first);
    }
    assert_eq!(f.live_environments(), 1);
}

both_runtimes!(scales_to_the_cap_and_no_further);
async fn scales_to_the_cap_and_no_further(runtime: Runtime) {
    const N: usize = 3;
    let f = function(runtime, N);
    // Sample the live count while calls run: it must never pass N.
    let sampler = {
        let f = f.clone();
        tokio::spawn(async move {
            let mut max = 0;
            loop {
                max = max.max(f.live_environments());
                if max > N {
                    return max;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let slow = |ms: u64| call(&f, json!({ "sleep_ms": ms }));
    let first: Vec<Value> = futures::future::try_join_all((0..N).map(|_| slow(400)))
        .await
        .expect("N concurrent calls");
    let pids: BTreeSet<u64> = first.iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(
        pids.len(),
        N,
        "N concurrent slow calls run in N environments"
    );

    let more: Vec<Value> = futures::future::try_join_all((0..2 * N).map(|_| slow(200)))
        .await
        .expect("2N concurrent calls, queued beyond the cap");
    let all: BTreeSet<u64> = more.iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert!(
        all.is_subset(&pids),
        "no environment beyond the cap: {all:?} vs {pids:?}"
    );
    assert!(f.live_environments() <= N);
    assert!(!sampler.is_finished(), "live environments exceeded {N}");
    sampler.abort();
}

both_runtimes!(idle_environments_are_reaped);
async fn idle_environments_are_reaped(runtime: Runtime) {
    let mut config = target(runtime);
    config.idle_timeout = Duration::from_millis(300);
    let f = ProcessFunction::new("orders", &config, TIMEOUT, 2).expect("valid");
    let first = pid(&f).await;
    assert_eq!(f.live_environments(), 1);
    wait_until("the idle environment is reaped", SETTLE, || {
        f.live_environments() == 0
    })
    .await;
    assert!(!alive(first));
    assert_ne!(pid(&f).await, first);
}

// === pool behaviour, Rust worker ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_warm_environments_start_early_and_are_kept() {
    let mut config = target(Runtime::Rust);
    config.idle_timeout = Duration::from_millis(200);
    config.min_warm = 1;
    let f = ProcessFunction::new("orders", &config, TIMEOUT, 2).expect("valid");
    wait_until("the warm environment starts", SETTLE, || {
        f.live_environments() == 1
    })
    .await;
    let (a, b) = tokio::join!(
        call(&f, json!({ "sleep_ms": 300 })),
        call(&f, json!({ "sleep_ms": 300 }))
    );
    let pids: BTreeSet<u64> = [a, b]
        .iter()
        .map(|r| r.as_ref().expect("calls")["pid"].as_u64().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    wait_until("reaped down to min_warm", SETTLE, || {
        f.live_environments() == 1
    })
    .await;
    // Reaping never goes below min_warm: several idle timeouts later one is still there.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(f.live_environments(), 1);
    assert!(pids.contains(&pid(&f).await), "the kept environment serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_cap_wait_for_an_environment() {
    let f = function(Runtime::Rust, 1);
    let (a, b) = tokio::join!(
        call(&f, json!({ "sleep_ms": 200 })),
        call(&f, json!({ "sleep_ms": 200 }))
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a["pid"], b["pid"], "one environment served both, in turn");
    assert_eq!(f.live_environments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_finishes_and_its_environment_stays_warm() {
    let f = function(Runtime::Rust, 1);
    let first = pid(&f).await;
    let abandoned = call(&f, json!({ "sleep_ms": 500 }));
    tokio::time::timeout(Duration::from_millis(100), abandoned)
        .await
        .expect_err("still running when dropped");
    // The next call waits for the abandoned one to finish on the same warm worker, rather
    // than getting a cold start because the worker was killed.
    let next = call(&f, json!({})).await.expect("the next call");
    assert_eq!(next["pid"].as_u64(), Some(first));
    assert!(alive(first));
    assert_eq!(f.live_environments(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_during_init_leaves_the_environment_to_the_pool() {
    let f = function(Runtime::Rust, 1);
    let deadline = Instant::now() + Duration::from_millis(1);
    let err = call_with(&f, invocation(&new_id(), &json!({}), Some(deadline)))
        .await
        .expect_err("no environment starts in 1 ms");
    assert!(matches!(err, InvokeError::Timeout { .. }), "{err:?}");
    wait_until("the environment finished starting", SETTLE, || {
        f.live_environments() == 1
    })
    .await;
    let first = pid(&f).await;
    assert_eq!(pid(&f).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_environment() {
    let f = function(Runtime::Rust, 2);
    let (a, b) = tokio::join!(
        call(&f, json!({ "sleep_ms": 200 })),
        call(&f, json!({ "sleep_ms": 200 }))
    );
    let pids = [a, b].map(|r| r.expect("call")["pid"].as_u64().expect("pid"));
    assert_eq!(f.live_environments(), 2);
    f.shutdown().await;
    assert_eq!(f.live_environments(), 0);
    for pid in pids {
        assert!(!alive(pid), "{pid} still running");
    }
    let err = call(&f, json!({})).await.expect_err("shut down");
    assert!(matches!(err, InvokeError::System(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_function_kills_its_environments() {
    let f = function(Runtime::Rust, 1);
    let first = pid(&f).await;
    drop(f);
    wait_until("the environment dies with its function", SETTLE, || {
        !alive(first)
    })
    .await;
}

// === start failures ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_an_invalid_entrypoint() {
    let mut config = target(Runtime::Rust);
    config.command = "/nonexistent/impulse-worker".to_owned();
    let f = ProcessFunction::new("orders", &config, TIMEOUT, 1).expect("valid");
    let err = call(&f, json!({})).await.expect_err("cannot start");
    let (error_type, document) = error_document(&err);
    assert_eq!(error_type, "Runtime.InvalidEntrypoint");
    assert!(
        document["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/impulse-worker")),
        "{document}"
    );
    assert_eq!(f.live_environments(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_init_error_fails_the_invocation_and_is_retried() {
    let mut config = target(Runtime::Python);
    config.args = vec![
        "-m".into(),
        "awslambdaric".into(),
        "missing_module.handler".into(),
    ];
    let f = ProcessFunction::new("orders", &config, TIMEOUT, 1).expect("valid");
    for _ in 0..2 {
        let err = call(&f, json!({})).await.expect_err("init error");
        let (error_type, document) = error_document(&err);
        assert_eq!(error_type, "Runtime.ImportModuleError");
        assert!(
            document["errorMessage"]
                .as_str()
                .is_some_and(|m| m.contains("missing_module")),
            "{document}"
        );
    }
    wait_until("failed environments are gone", SETTLE, || {
        f.live_environments() == 0
    })
    .await;
}

// === the Runtime API, driven by the test as a hostile worker ===

/// A `lambda_worker` in harness mode: reports its Runtime API address and idles, so the test
/// plays the worker.
struct Scripted {
    function: ProcessFunction,
    reports: TcpListener,
}

impl Scripted {
    async fn new() -> Self {
        let reports = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = target(Runtime::Rust);
        config.environment.insert(
            "LAMBDA_WORKER_REPORT_TO".to_owned(),
            reports.local_addr().expect("addr").to_string(),
        );
        let function = ProcessFunction::new("orders", &config, TIMEOUT, 1).expect("valid");
        Self { function, reports }
    }

    /// Waits for the next environment to report; returns its Runtime API base URL and the
    /// connection that keeps it alive.
    async fn environment(&self) -> (String, tokio::net::TcpStream) {
        let (stream, _) = tokio::time::timeout(SETTLE, self.reports.accept())
            .await
            .expect("an environment reports")
            .expect("accept");
        let mut reader = BufReader::new(stream);
        let mut addr = String::new();
        reader.read_line(&mut addr).await.expect("read the address");
        (
            format!("http://{}/2018-06-01/runtime", addr.trim()),
            reader.into_inner(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_accepted_only_for_the_current_request_once() {
    let scripted = Scripted::new().await;
    let f = scripted.function.clone();
    let client = reqwest::Client::new();

    let id_a = new_id();
    let call_a = tokio::spawn({
        let f = f.clone();
        let inv = invocation(&id_a, &json!({ "n": "a" }), None);
        async move { f.oneshot(inv).await }
    });
    let (api, _keepalive) = scripted.environment().await;
    let next = client
        .get(format!("{api}/invocation/next"))
        .send()
        .await
        .expect("next");
    assert_eq!(next.status(), 200);
    let headers = next.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("missing {name}"))
            .to_owned()
    };
    assert_eq!(header("lambda-runtime-aws-request-id"), id_a);
    assert_eq!(
        header("lambda-runtime-invoked-function-arn"),
        "arn:aws:lambda:local:000000000000:function:orders:$LATEST"
    );
    let deadline: u64 = header("lambda-runtime-deadline-ms")
        .parse()
        .expect("epoch ms");
    assert!(deadline > epoch_ms() && deadline <= epoch_ms() + TIMEOUT.as_millis() as u64);
    let trace = header("lambda-runtime-trace-id");
    assert!(
        trace.starts_with("Root=1-") && trace.contains(";Parent="),
        "{trace}"
    );
    let invocation_id = header("lambda-runtime-invocation-id");
    assert!(headers.get("lambda-runtime-client-context").is_none());
    assert!(headers.get("lambda-runtime-cognito-identity").is_none());
    assert_eq!(next.text().await.expect("event"), r#"{"n":"a"}"#);

    let post = |path: String, body: &'static str| {
        let client = client.clone();
        let url = format!("{api}{path}");
        async move {
            client
                .post(url)
                .body(body)
                .send()
                .await
                .expect("post")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post("/invocation/unknown-id/response".into(), "x").await,
        400
    );
    assert!(
        !call_a.is_finished(),
        "a stranger's answer completed nothing"
    );
    let wrong_delivery = client
        .post(format!("{api}/invocation/{id_a}/response"))
        .header("lambda-runtime-invocation-id", "not-this-delivery")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(wrong_delivery.status(), 400);
    let right = client
        .post(format!("{api}/invocation/{id_a}/response"))
        .header("lambda-runtime-invocation-id", &invocation_id)
        .body("42")
        .send()
        .await
        .expect("post");
    assert_eq!(right.status(), 202);
    let result = call_a.await.expect("join").expect("success");
    assert_eq!(result.payload, Bytes::from_static(b"42"));
    // Answered once: every later answer for it is stale.
    assert_eq!(
        post(format!("/invocation/{id_a}/response"), "43").await,
        400
    );
    assert_eq!(post(format!("/invocation/{id_a}/error"), "{}").await, 400);
    assert_eq!(post("/init/error".into(), "{}").await, 403);

    // A second invocation on the same environment: the stale id still cannot answer it, and a
    // junk error document is replaced by a valid one.
    let id_b = new_id();
    let call_b = tokio::spawn({
        let f = f.clone();
        let inv = invocation(&id_b, &json!({ "n": "b" }), None);
        async move { f.oneshot(inv).await }
    });
    let next = client
        .get(format!("{api}/invocation/next"))
        .send()
        .await
        .expect("next");
    assert_eq!(next.status(), 200);
    assert_eq!(
        post(format!("/invocation/{id_a}/response"), "stale").await,
        400
    );
    let error = client
        .post(format!("{api}/invocation/{id_b}/error"))
        .header("lambda-runtime-function-error-type", "Custom.Broken")
        .body("not json at all")
        .send()
        .await
        .expect("post");
    assert_eq!(error.status(), 202);
    let err = call_b.await.expect("join").expect_err("function error");
    let (error_type, document) = error_document(&err);
    assert_eq!(error_type, "Custom.Broken");
    assert_eq!(document["errorType"], "Custom.Broken");
    assert!(document["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("not json at all")));

    // A response over 6 MB is refused and fails the invocation.
    let id_c = new_id();
    let call_c = tokio::spawn({
        let f = f.clone();
        let inv = invocation(&id_c, &json!({}), None);
        async move { f.oneshot(inv).await }
    });
    let next = client
        .get(format!("{api}/invocation/next"))
        .send()
        .await
        .expect("next");
    assert_eq!(next.status(), 200);
    let huge = client
        .post(format!("{api}/invocation/{id_c}/response"))
        .body(vec![b'x'; 6 * 1024 * 1024 + 1])
        .send()
        .await;
    // The API answers 413 from the declared length without reading the body, so the client
    // may still be writing when the connection closes.
    match huge {
        Ok(response) => assert_eq!(response.status(), 413),
        Err(e) => assert!(e.is_request(), "{e:?}"),
    }
    let err = call_c.await.expect("join").expect_err("too large");
    assert_eq!(error_document(&err).0, "Function.ResponseSizeTooLarge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_polls_fails_init_and_is_killed() {
    let scripted = Scripted::new().await;
    let f = scripted
        .function
        .clone()
        .with_init_timeout(Duration::from_millis(500));
    let call = tokio::spawn({
        let f = f.clone();
        async move { call(&f, json!({})).await }
    });
    let (_api, mut keepalive) = scripted.environment().await;
    let err = call.await.expect("join").expect_err("init timeout");
    assert_eq!(error_document(&err).0, "Runtime.InitError");
    // The killed worker's end of the report connection closes.
    let mut rest = Vec::new();
    match tokio::io::AsyncReadExt::read_to_end(&mut keepalive, &mut rest).await {
        // EOF or a reset: either way the worker is gone.
        Ok(_) | Err(_) => {}
    }
    wait_until("the environment is reaped", SETTLE, || {
        f.live_environments() == 0
    })
    .await;
}
