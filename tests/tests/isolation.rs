//! Isolation of process functions, attacked the way a hostile function would: read a sibling's
//! and the broker's process environment through `/proc`, read a sibling's temporary files,
//! answer a sibling's invocations through its Runtime API, leave a detached process behind,
//! start more threads than an environment may have, and use more memory than its
//! `memory_size`.
//!
//! Every attack runs twice: with `isolation.mode = "off"`, where it must succeed (so the test
//! cannot pass because the attack was broken), and with `required`, where it must fail.
//! `required` makes the broker refuse to start rather than run unisolated, so these tests fail
//! where the broker cannot switch users (it must run as root, as CI does).
//!
//! The workers are a small Python Runtime API client of this file's own (standard library
//! only) and the `lambda_worker` binary, both copied into a directory every user can read:
//! isolated environments run as other users, who cannot enter a workspace under `/root`.
//! Each test uses its own range of user ids, since a broker kills every process in its range
//! when it starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use impulse_tests::impulse::{Impulse, Instance};
use impulse_tests::wait::eventually;
use serde_json::{json, Value};

/// A Lambda runtime client with a handler that does what the event asks (see `handle`).
const HOSTILE_WORKER: &str = r#"
import http.client, json, os, subprocess, sys, tempfile, threading, time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]

def call(address, method, path, body=None):
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request(method, path, body=body)
    response = connection.getresponse()
    data = response.read()
    request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
    connection.close()
    return response.status, request_id, data

def read(path):
    try:
        with open(path, "rb") as f:
            return {"ok": True, "content": f.read().decode("utf-8", "replace")}
    except OSError as e:
        return {"ok": False, "error": type(e).__name__}

def handle(event):
    if "whoami" in event:
        secret = os.path.join(tempfile.gettempdir(), "impulse-isolation-" + event["whoami"])
        with open(secret, "w") as f:
            f.write(event["whoami"])
        return {"pid": os.getpid(), "uid": os.getuid(), "api": API, "secret_file": secret,
                "home": os.environ.get("HOME"), "tmpdir": tempfile.gettempdir()}
    if "read" in event:
        return read(event["read"])
    if "answer_for" in event:
        try:
            status, _, _ = call(event["answer_for"], "POST",
                                "/2018-06-01/runtime/invocation/not-yours/response", b"{}")
            return {"reached": True, "status": status}
        except Exception as e:
            return {"reached": False, "error": type(e).__name__}
    if "detach" in event:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)",
                                  event["detach"]], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        return {"pid": child.pid}
    if "allocate_mib" in event:
        data = b"\x01" * (event["allocate_mib"] << 20)
        return {"allocated_mib": len(data) >> 20}
    if "sleep" in event:
        time.sleep(event["sleep"])
        return {}
    if "threads" in event:
        threading.stack_size(64 * 1024)
        started = 0
        try:
            for _ in range(event["threads"]):
                threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
                started += 1
        except RuntimeError as e:
            return {"started": started, "error": str(e)}
        return {"started": started, "error": None}
    return {"unknown": event}

while True:
    _, request_id, body = call(API, "GET", "/2018-06-01/runtime/invocation/next")
    result = handle(json.loads(body))
    call(API, "POST", "/2018-06-01/runtime/invocation/%s/response" % request_id,
         json.dumps(result).encode())
"#;

/// The workers, in a directory every user can read and enter.
struct Workers {
    dir: tempfile::TempDir,
}

impl Workers {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("impulse-isolation-")
            .tempdir()
            .expect("temp dir");
        let open = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        open(dir.path(), 0o755);
        let script = dir.path().join("hostile.py");
        std::fs::write(&script, HOSTILE_WORKER).expect("write the worker");
        open(&script, 0o644);
        let binary = dir.path().join("lambda_worker");
        std::fs::copy(env!("CARGO_BIN_EXE_lambda_worker"), &binary).expect("copy lambda_worker");
        open(&binary, 0o755);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `[functions.<name>]` table running the hostile worker.
    fn hostile(&self, name: &str, extra: &str) -> String {
        format!(
            "[functions.{name}]\ntimeout = \"5s\"\n{extra}\n\
             [functions.{name}.target]\ntype = \"process\"\ncommand = \"python3\"\n\
             args = [\"-u\", {script:?}]\nworking_dir = {dir:?}\n",
            script = self.path("hostile.py"),
            dir = self.dir.path(),
        )
    }
}

/// Whether environments are isolated in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Required,
}

impl Mode {
    fn env(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Required => "required",
        }
    }
}

/// Starts a broker in `instance` with `functions`, the embedded queue, and `mode` over the ids
/// `first_uid ..+ 50`.
async fn start(instance: &Instance, functions: &str, mode: Mode, first_uid: u32) -> Impulse {
    let config = format!(
        "[queue]\ndata_dir = {:?}\n\n[isolation]\nfirst_uid = {first_uid}\nuid_count = 50\n\n{functions}",
        instance.data_dir()
    );
    Impulse::start_in_with_env(
        instance,
        &config,
        &[
            ("IMPULSE_ISOLATION_MODE", mode.env()),
            ("IMPULSE_BROKER_CANARY", "broker-canary-6d1e"),
        ],
    )
    .await
}

/// Invokes `function` synchronously with `event`; the result, which must be a success.
async fn invoke(impulse: &Impulse, function: &str, event: Value) -> Value {
    let response = reqwest::Client::new()
        .post(impulse.url(&format!("/2015-03-31/functions/{function}/invocations")))
        .json(&event)
        .send()
        .await
        .expect("invoke");
    let failed = response.headers().get("x-amz-function-error").cloned();
    let body: Value = response.json().await.expect("JSON result");
    assert!(
        failed.is_none(),
        "{function} failed on {event}: {failed:?} {body}\n{}",
        impulse.logs()
    );
    body
}

/// Whether a process whose command line contains `marker` runs.
fn process_with(marker: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(marker)
                .then_some(pid)
        })
}

fn kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
}

/// Waits until a process whose command line contains `marker` runs (a child shows its own
/// command line only once it has exec'd); its pid.
async fn running(marker: &str) -> u32 {
    eventually(marker, Duration::from_secs(10), async || {
        process_with(marker).ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn gone(marker: &str, what: &str) {
    eventually(what, Duration::from_secs(10), async || {
        match process_with(marker) {
            None => Ok(()),
            Some(pid) => Err(format!("pid {pid} still runs")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn functions_cannot_reach_each_other(mode: Mode, first_uid: u32) {
    let workers = Workers::new();
    let functions = format!(
        "{}\n{}\n[functions.rust]\n[functions.rust.target]\ntype = \"process\"\ncommand = {:?}\n\
         working_dir = {:?}\n",
        workers.hostile("victim", ""),
        workers.hostile("attacker", ""),
        workers.path("lambda_worker"),
        workers.dir.path(),
    );
    let functions = functions.replacen(
        "[functions.victim.target]",
        "[functions.victim.target]\nenvironment = { SECRET = \"victim-canary-93b2\" }",
        1,
    );
    let instance = Instance::new();
    let impulse = start(&instance, &functions, mode, first_uid).await;
    let isolated = mode == Mode::Required;

    let victim = invoke(&impulse, "victim", json!({"whoami": "victim-file-canary"})).await;
    let attacker = invoke(&impulse, "attacker", json!({"whoami": "attacker"})).await;
    let victim_pid = victim["pid"].as_u64().expect("pid");
    let (victim_uid, attacker_uid) = (
        victim["uid"].as_u64().expect("uid"),
        attacker["uid"].as_u64().expect("uid"),
    );
    if isolated {
        let range = u64::from(first_uid)..u64::from(first_uid) + 50;
        assert!(range.contains(&victim_uid) && range.contains(&attacker_uid));
        assert_ne!(victim_uid, attacker_uid);
        // A private HOME and TMPDIR, owned by the environment's user.
        assert_eq!(victim["home"], victim["tmpdir"]);
        assert_ne!(victim["tmpdir"], attacker["tmpdir"]);
    } else {
        assert_eq!(
            (victim_uid, attacker_uid),
            (0, 0),
            "the broker runs as root"
        );
    }

    // The sibling's environment (its function's secret), and the broker's.
    let environ = invoke(
        &impulse,
        "attacker",
        json!({"read": format!("/proc/{victim_pid}/environ")}),
    )
    .await;
    let broker = invoke(
        &impulse,
        "attacker",
        json!({"read": format!("/proc/{}/environ", impulse.pid())}),
    )
    .await;
    // The sibling's temporary file.
    let file = invoke(&impulse, "attacker", json!({"read": victim["secret_file"]})).await;
    // The sibling's invocations, through its Runtime API.
    let answer = invoke(&impulse, "attacker", json!({"answer_for": victim["api"]})).await;

    if isolated {
        assert_eq!(environ, json!({"ok": false, "error": "PermissionError"}));
        assert_eq!(broker, json!({"ok": false, "error": "PermissionError"}));
        assert_eq!(file, json!({"ok": false, "error": "PermissionError"}));
        assert_eq!(answer["reached"], false, "{answer}");
        let metrics = reqwest::get(impulse.admin_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert_eq!(
            metric(
                &metrics,
                "impulse_runtime_api_refused_total{function=\"victim\"}"
            ),
            1.0
        );
    } else {
        let content = |r: &Value| r["content"].as_str().unwrap_or_default().to_owned();
        assert!(
            content(&environ).contains("SECRET=victim-canary-93b2"),
            "{environ}"
        );
        assert!(content(&broker).contains("broker-canary-6d1e"), "{broker}");
        assert_eq!(content(&file), "victim-file-canary");
        // Answered by the victim's Runtime API (which refuses the unknown request id).
        assert_eq!(answer["reached"], true, "{answer}");
    }

    // The victim still serves its own invocations, and so does a `lambda_runtime` worker.
    let again = invoke(&impulse, "victim", json!({"whoami": "again"})).await;
    assert_eq!(again["pid"], victim["pid"]);
    let rust = invoke(&impulse, "rust", json!({"echo": "through the peer check"})).await;
    assert_eq!(rust["echo"], "through the peer check");
}

#[tokio::test]
async fn functions_cannot_read_or_answer_for_each_other_when_isolated() {
    functions_cannot_reach_each_other(Mode::Required, 210_000).await;
}

#[tokio::test]
async fn without_isolation_the_same_attacks_succeed() {
    functions_cannot_reach_each_other(Mode::Off, 210_100).await;
}

async fn detached_processes(mode: Mode, first_uid: u32) {
    let workers = Workers::new();
    let functions = workers
        .hostile("lingerer", "")
        .replace("timeout = \"5s\"", "timeout = \"3s\"");
    let instance = Instance::new();
    let mut impulse = start(&instance, &functions, mode, first_uid).await;
    let isolated = mode == Mode::Required;
    let marker = |n: u32| format!("impulse-linger-{first_uid}-{n}");

    // After a timeout, which kills the environment.
    let worker = invoke(&impulse, "lingerer", json!({"whoami": "w"})).await;
    invoke(&impulse, "lingerer", json!({"detach": marker(1)})).await;
    running(&marker(1)).await;
    let response = reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/lingerer/invocations"))
        .json(&json!({"sleep": 30}))
        .send()
        .await
        .expect("invoke");
    assert_eq!(
        response
            .headers()
            .get("x-amz-function-error")
            .map(|v| v.to_str().ok()),
        Some(Some("Unhandled")),
        "a timeout"
    );
    let worker_pid = worker["pid"].as_u64().expect("pid");
    gone(
        &format!("{}", workers.path("hostile.py").display()),
        "the timed-out worker to be killed",
    )
    .await;
    if isolated {
        gone(&marker(1), "the detached child of a timed-out environment").await;
    } else {
        let survivor = process_with(&marker(1));
        assert!(
            survivor.is_some(),
            "without isolation a detached child survives its environment (worker {worker_pid})"
        );
        survivor.into_iter().for_each(kill);
    }

    // After the broker's exit.
    invoke(&impulse, "lingerer", json!({"detach": marker(2)})).await;
    running(&marker(2)).await;
    impulse.terminate();
    impulse.wait(Duration::from_secs(30)).await;
    if isolated {
        gone(&marker(2), "the detached child after the broker stopped").await;
    } else {
        let survivor = process_with(&marker(2));
        assert!(
            survivor.is_some(),
            "without isolation a detached child survives the broker"
        );
        survivor.into_iter().for_each(kill);
        return;
    }

    // After SIGKILL of the broker: the detached child outlives it, until the next broker with
    // the same range starts.
    let mut impulse = start(&instance, &functions, mode, first_uid).await;
    invoke(&impulse, "lingerer", json!({"detach": marker(3)})).await;
    running(&marker(3)).await;
    impulse.kill9();
    assert!(
        process_with(&marker(3)).is_some(),
        "nothing kills it with the broker"
    );
    let _next = start(&instance, &functions, mode, first_uid).await;
    gone(&marker(3), "the next broker to kill the leftover").await;
}

#[tokio::test]
async fn nothing_an_isolated_environment_starts_outlives_it() {
    detached_processes(Mode::Required, 210_200).await;
}

#[tokio::test]
async fn without_isolation_detached_processes_survive() {
    detached_processes(Mode::Off, 210_300).await;
}

async fn thread_limit(mode: Mode, first_uid: u32) -> Value {
    let workers = Workers::new();
    let instance = Instance::new();
    let impulse = start(&instance, &workers.hostile("spawner", ""), mode, first_uid).await;
    invoke(&impulse, "spawner", json!({"threads": 1100})).await
}

#[tokio::test]
async fn an_isolated_environment_runs_at_most_1024_processes_and_threads() {
    let isolated = thread_limit(Mode::Required, 210_400).await;
    let started = isolated["started"].as_u64().expect("started");
    assert!(started < 1024, "{isolated}");
    assert_eq!(isolated["error"], "can't start new thread", "{isolated}");
    let unlimited = thread_limit(Mode::Off, 210_500).await;
    assert_eq!(unlimited, json!({"started": 1100, "error": null}));
}

async fn allocate(mode: Mode, first_uid: u32) -> reqwest::Response {
    let workers = Workers::new();
    let instance = Instance::new();
    let functions = workers.hostile("hog", "").replacen(
        "[functions.hog.target]\n",
        "[functions.hog.target]\nmemory_size = 128\n",
        1,
    );
    let impulse = start(&instance, &functions, mode, first_uid).await;
    reqwest::Client::new()
        .post(impulse.url("/2015-03-31/functions/hog/invocations"))
        .json(&json!({"allocate_mib": 512}))
        .send()
        .await
        .expect("invoke")
}

#[tokio::test]
async fn an_isolated_environment_is_killed_beyond_its_memory_size() {
    let isolated = allocate(Mode::Required, 210_600).await;
    assert_eq!(
        isolated
            .headers()
            .get("x-amz-function-error")
            .map(|v| v.to_str().ok()),
        Some(Some("Unhandled"))
    );
    let error: Value = isolated.json().await.expect("error document");
    assert_eq!(error["errorType"], "Runtime.ExitError", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("signal: killed")),
        "{error}"
    );
    let unlimited = allocate(Mode::Off, 210_700).await;
    assert!(unlimited.headers().get("x-amz-function-error").is_none());
    let result: Value = unlimited.json().await.expect("result");
    assert_eq!(result, json!({"allocated_mib": 512}));
}
