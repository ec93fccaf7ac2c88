//! One execution environment: a child process, its Runtime API listener and its supervisor.
//!
//! The [`Environment`] handle is owned by whoever uses it (the pool while idle, the call future
//! while busy). Dropping the handle kills the process: an environment whose state is unknown is
//! never reused. A supervisor task owns the child and the environment's pool [`Slot`]; it
//! releases the slot only once the process has been reaped, so the pool never has more live
//! processes than slots.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use secrecy::ExposeSecret;

use super::isolation::{self, Isolation, UserLease};
use super::peer::OwnedBy;
use super::pool::Slot;
use super::runtime_api::{InitSignal, Job, Reply, RuntimeApi};
use crate::role::ResolvedRole;
use crate::LogTail;

/// Lambda's init limit: a worker must call `/next` within this long of starting.
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lambda's shutdown budget: SIGTERM, then SIGKILL after this long.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Longest log line forwarded as one event; longer lines are split.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Variables passed through from the broker's own environment; nothing else is inherited, so
/// the broker's secrets never reach a function.
const INHERITED: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"];

/// How to start a function's environments, fixed when the function is built.
#[derive(Debug)]
pub(super) struct Launch {
    pub(super) function: Arc<str>,
    /// The version these environments run (`$LATEST`, `1`, …): `AWS_LAMBDA_FUNCTION_VERSION`.
    pub(super) version: Arc<str>,
    pub(super) command: String,
    pub(super) args: Vec<String>,
    /// The function's own variables, applied after the defaults and before the reserved ones.
    pub(super) environment: Vec<(String, String)>,
    /// The function's execution role, whose variables follow the function's own (validation
    /// keeps the two sets apart, and the reserved ones out of the role).
    pub(super) role: Option<Arc<ResolvedRole>>,
    pub(super) handler: String,
    pub(super) memory_size: u32,
    pub(super) working_dir: PathBuf,
    pub(super) function_arn: HeaderValue,
    /// Set when each environment runs as a user of its own.
    pub(super) isolation: Option<Arc<Isolation>>,
}

/// How to stop an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// SIGKILL now (timeouts, unknown state).
    Kill,
    /// SIGTERM, then SIGKILL after [`SHUTDOWN_GRACE`] (shutdown).
    Terminate,
    /// As `Terminate`, for an idle environment the pool reaps: its slot is marked retiring
    /// until the process is gone, so the pool does not count it as kept.
    Retire,
}

/// Why an environment failed to start.
#[derive(Debug)]
pub(super) enum StartError {
    /// No listener for its Runtime API.
    Listen(std::io::Error),
    /// The command could not be started.
    Spawn(std::io::Error),
    /// No user id could be leased for an isolated environment.
    Isolation(std::io::Error),
    /// The worker called `/init/error`.
    Init {
        /// The error type it reported.
        error_type: String,
        /// Its error document.
        payload: Bytes,
    },
    /// The process exited during init.
    Exited(String),
    /// The worker did not call `/next` within the init limit.
    InitTimeout(Duration),
}

/// How an invocation on an environment ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The worker answered; the environment can be reused.
    Replied(Reply),
    /// The process exited first; `String` describes how.
    Exited(String),
    /// The deadline passed first.
    TimedOut,
}

/// A handle on one running environment. Dropping it kills the process.
#[derive(Debug)]
pub(super) struct Environment {
    pid: u32,
    jobs: mpsc::Sender<Job>,
    exit: watch::Receiver<Option<String>>,
    /// Sending stops the process the chosen way; dropping the sender kills it.
    stop: oneshot::Sender<Stop>,
}

/// What every environment of a pool shares with its supervisor.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    /// Live processes of the pool (started, not yet reaped).
    pub(super) live: Arc<watch::Sender<usize>>,
    /// Set once the pool shuts down: every supervisor terminates its process.
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Environment {
    /// Starts an environment and waits for its init phase to end (the first `/next`).
    /// On any failure the process is killed and `slot` released.
    pub(super) async fn start(
        launch: &Launch,
        slot: Slot,
        shared: &Shared,
        init_timeout: Duration,
    ) -> Result<(Self, Duration), StartError> {
        let started = Instant::now();
        let lease = match &launch.isolation {
            // Preparing the private directory touches the disk.
            Some(isolation) => {
                let isolation = isolation.clone();
                let memory_size = launch.memory_size;
                let leased = tokio::task::spawn_blocking(move || isolation.lease(memory_size))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                Some(leased.map_err(StartError::Isolation)?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(StartError::Listen)?;
        let addr = listener.local_addr().map_err(StartError::Listen)?;

        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let (init_tx, init_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let api = Arc::new(RuntimeApi::new(
            launch.function_arn.clone(),
            jobs_rx,
            init_tx,
            exit_rx.clone(),
        ));
        let router = api.clone().router();
        // Serving ends only with an I/O error on the listener; the supervisor aborts it.
        let server = match &lease {
            Some(lease) => {
                let listener = OwnedBy::new(listener, lease.uid(), launch.function.clone())
                    .map_err(StartError::Listen)?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::warn!(error = %e, "Runtime API listener failed.");
                    }
                })
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::warn!(error = %e, "Runtime API listener failed.");
                }
            }),
        };

        let mut child = match command(launch, &addr.to_string(), lease.as_ref()).spawn() {
            Ok(child) => child,
            Err(e) => {
                server.abort();
                release(lease).await;
                return Err(StartError::Spawn(e));
            }
        };
        // A spawned child always has a pid until it is reaped, which only we do.
        let pid = child.id().unwrap_or(0);
        // The gauge is set under the watch's lock, so concurrent changes cannot reorder it.
        shared.live.send_modify(|n| {
            *n += 1;
            impulse_connectors::telemetry::environments(&launch.function, &launch.version, *n);
        });
        tracing::debug!(function = %launch.function, pid, runtime_api = %addr, "Execution environment started.");

        for (stream, reader) in [
            ("stdout", child.stdout.take().map(box_reader)),
            ("stderr", child.stderr.take().map(box_reader)),
        ] {
            if let Some(reader) = reader {
                tokio::spawn(forward_lines(
                    reader,
                    stream,
                    launch.function.clone(),
                    api.clone(),
                ));
            }
        }

        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(supervise(Supervised {
            child,
            pid,
            stop: stop_rx,
            shutdown: shared.shutdown.clone(),
            exit: exit_tx,
            server,
            slot,
            live: shared.live.clone(),
            function: launch.function.clone(),
            version: launch.version.clone(),
            lease,
        }));
        let env = Self {
            pid,
            jobs: jobs_tx,
            exit: exit_rx,
            stop: stop_tx,
        };

        let mut exit = env.exit.clone();
        let ended = tokio::time::timeout(init_timeout, async {
            tokio::select! {
                signal = init_rx => Ok(signal),
                status = exit.wait_for(Option::is_some) => {
                    Err(status.ok().and_then(|s| s.clone()).unwrap_or_default())
                }
            }
        })
        .await;
        match ended {
            Ok(Ok(Ok(InitSignal::Ready))) => Ok((env, started.elapsed())),
            Ok(Ok(Ok(InitSignal::Failed {
                error_type,
                payload,
            }))) => Err(StartError::Init {
                error_type,
                payload,
            }),
            // The init channel closes only when the API is dropped, i.e. the process is gone.
            Ok(Ok(Err(_))) => Err(StartError::Exited(env.wait_exit().await)),
            Ok(Err(status)) => Err(StartError::Exited(status)),
            Err(_elapsed) => Err(StartError::InitTimeout(init_timeout)),
        }
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process is still running.
    pub(super) fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Stops the process the given way, without waiting; false if it had already been reaped
    /// (the supervisor is gone).
    pub(super) fn stop(self, how: Stop) -> bool {
        self.stop.send(how).is_ok()
    }

    /// Runs one invocation: hands the job to the worker's `/next` and waits for its answer,
    /// the process's exit, or the deadline, whichever comes first.
    pub(super) async fn invoke(
        &self,
        request_id: Arc<str>,
        payload: Bytes,
        deadline: Instant,
        client_context: Option<HeaderValue>,
        log_tail: Option<LogTail>,
    ) -> Outcome {
        let (reply_tx, mut reply_rx) = oneshot::channel();
        let job = Job {
            request_id,
            payload,
            deadline,
            client_context,
            log_tail,
            reply: reply_tx,
        };
        let mut reply_open = self.jobs.send(job).await.is_ok();
        let mut exit = self.exit.clone();
        loop {
            tokio::select! {
                // An answer that raced the exit or the deadline still counts.
                biased;
                reply = &mut reply_rx, if reply_open => match reply {
                    Ok(reply) => return Outcome::Replied(reply),
                    // The API dropped the job: the environment is going away; wait for it.
                    Err(_) => reply_open = false,
                },
                status = exit.wait_for(Option::is_some) => {
                    return Outcome::Exited(status.ok().and_then(|s| s.clone()).unwrap_or_default());
                }
                () = tokio::time::sleep_until(deadline) => return Outcome::TimedOut,
            }
        }
    }

    async fn wait_exit(&self) -> String {
        let mut exit = self.exit.clone();
        let status = exit.wait_for(Option::is_some).await;
        status.ok().and_then(|s| s.clone()).unwrap_or_default()
    }
}

/// Kills what the environment's user left behind and frees its id, off the async threads.
async fn release(lease: Option<UserLease>) {
    if let Some(lease) = lease {
        if let Err(e) = tokio::task::spawn_blocking(move || drop(lease)).await {
            // The id is lost to the range; its processes may live on.
            tracing::error!(error = %e, "Releasing an execution environment's user failed.");
        }
    }
}

fn command(launch: &Launch, runtime_api: &str, lease: Option<&UserLease>) -> Command {
    let mut command = Command::new(&launch.command);
    command
        .args(&launch.args)
        .current_dir(&launch.working_dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a kill reaches the worker's children too.
        .process_group(0)
        .kill_on_drop(true);
    for name in INHERITED {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.env("TZ", "UTC");
    let broker_pid = std::process::id();
    match lease {
        Some(lease) => {
            // The broker's HOME and TMPDIR are not the environment's to write.
            command
                .env("HOME", lease.home())
                .env("TMPDIR", lease.home());
            lease.confine(&mut command, broker_pid);
        }
        None => isolation::die_with_broker(&mut command, broker_pid),
    }
    for (name, value) in &launch.environment {
        command.env(name, value);
    }
    // Only this function's environments get its role's secrets: every other variable of the
    // broker, and every other role, stays out (`env_clear` above).
    for (name, value) in launch.role.iter().flat_map(|role| role.environment()) {
        command.env(name, value.expose_secret());
    }
    let task_root = launch.working_dir.as_os_str();
    let log_stream = format!(
        "{}/[$LATEST]{}",
        chrono::Utc::now().format("%Y/%m/%d"),
        super::runtime_api::random_hex::<2>()
    );
    // Reserved variables come last: a function's own environment cannot override them.
    command
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("_HANDLER", &launch.handler)
        .env("AWS_LAMBDA_FUNCTION_NAME", &*launch.function)
        .env("AWS_LAMBDA_FUNCTION_VERSION", &*launch.version)
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            launch.memory_size.to_string(),
        )
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", launch.function),
        )
        .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream)
        .env("AWS_REGION", "local")
        .env("AWS_DEFAULT_REGION", "local")
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("AWS_EXECUTION_ENV", "AWS_Lambda_impulse")
        .env("LAMBDA_TASK_ROOT", task_root);
    command
}

// === supervisor ===

struct Supervised {
    child: Child,
    pid: u32,
    stop: oneshot::Receiver<Stop>,
    shutdown: watch::Receiver<bool>,
    exit: watch::Sender<Option<String>>,
    server: tokio::task::JoinHandle<()>,
    slot: Slot,
    live: Arc<watch::Sender<usize>>,
    function: Arc<str>,
    version: Arc<str>,
    lease: Option<UserLease>,
}

/// Owns the child until it is reaped, then publishes its exit and frees its slot.
async fn supervise(s: Supervised) {
    let Supervised {
        mut child,
        pid,
        mut stop,
        mut shutdown,
        exit,
        server,
        slot,
        live,
        function,
        version,
        lease,
    } = s;
    let stopped = tokio::select! {
        status = child.wait() => Err(status),
        // A dropped handle (Err) means the environment's state is unknown: kill.
        how = &mut stop => Ok(how.unwrap_or(Stop::Kill)),
        down = shutdown.wait_for(|down| *down) => {
            drop(down);
            Ok(Stop::Terminate)
        }
    };
    let mut slot = slot;
    let status = match stopped {
        Err(exited) => {
            // A reap that raced the exit still counts as one; closing first means any later
            // `stop` fails, and its sender then knows the slot was freed without the mark.
            stop.close();
            if stop.try_recv() == Ok(Stop::Retire) {
                slot.retiring();
            }
            exited
        }
        Ok(how) => {
            if how == Stop::Retire {
                slot.retiring();
            }
            halt(&mut child, pid, how).await
        }
    };
    // Anything the worker left behind in its process group goes too; isolated, so does
    // anything that left the group.
    signal_group(pid, Signal::SIGKILL);
    release(lease).await;
    let description = match &status {
        Ok(status) => describe_exit(*status),
        Err(e) => format!("wait failed: {e}"),
    };
    tracing::debug!(%function, pid, status = %description, "Execution environment exited.");
    exit.send_replace(Some(description));
    server.abort();
    live.send_modify(|n| {
        *n = n.saturating_sub(1);
        impulse_connectors::telemetry::environments(&function, &version, *n);
    });
    drop(slot);
}

async fn halt(child: &mut Child, pid: u32, how: Stop) -> std::io::Result<ExitStatus> {
    if how != Stop::Kill {
        signal_group(pid, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(SHUTDOWN_GRACE, child.wait()).await {
            return status;
        }
    }
    signal_group(pid, Signal::SIGKILL);
    // `kill` also covers a leader that left its group; it then reaps the child.
    match child.kill().await {
        Ok(()) => child.wait().await,
        Err(e) => Err(e),
    }
}

fn signal_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid > 0 {
        if let Err(e) = killpg(Pid::from_raw(pid), signal) {
            // ESRCH (the group is gone already) is the expected failure.
            tracing::trace!(pid, error = %e, "Signalling a process group failed.");
        }
    }
}

/// How a process ended, worded as Lambda words it (Go's `ProcessState.String()`):
/// `exit status 3`, `signal: killed`.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                1 => "hangup",
                2 => "interrupt",
                6 => "aborted",
                9 => "killed",
                11 => "segmentation fault",
                15 => "terminated",
                n => return format!("signal: {n}"),
            };
            format!("signal: {name}")
        }
        None => "exited".to_owned(),
    }
}

// === logs ===

type BoxReader = Box<dyn AsyncRead + Send + Unpin>;

fn box_reader(reader: impl AsyncRead + Send + Unpin + 'static) -> BoxReader {
    Box::new(reader)
}

/// Forwards a worker's output to tracing, one event per line, tagged with the function and the
/// request id of its latest invocation.
async fn forward_lines(
    reader: BoxReader,
    stream: &'static str,
    function: Arc<str>,
    api: Arc<RuntimeApi>,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        match read_line_capped(&mut reader, &mut line, MAX_LOG_LINE).await {
            Ok(true) => {
                let (request_id, tail) = api.last_request();
                let text = String::from_utf8_lossy(&line);
                if let Some(tail) = tail {
                    tail.push(text.trim_end_matches(['\n', '\r']));
                }
                tracing::info!(
                    target: "impulse::function",
                    %function,
                    request_id = request_id.as_deref().unwrap_or("-"),
                    stream,
                    "{}",
                    escape_controls(text.trim_end_matches(['\n', '\r']))
                );
            }
            Ok(false) | Err(_) => return,
        }
    }
}

/// `text` with control characters other than tab written as escapes (`\r`, `\u{1b}`): a
/// function's output must not be able to start a line of the log of its own (a carriage
/// return, a line separator) or restyle the terminal (escape sequences).
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let is_escaped =
        |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.contains(is_escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_escaped(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Reads one line (up to `max` bytes, the rest of a longer line comes as further lines) into
/// `line`; false at end of input.
pub(super) async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let room = max - line.len();
        let window = &available[..available.len().min(room)];
        if let Some(end) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..=end]);
            reader.consume(end + 1);
            return Ok(true);
        }
        let taken = window.len();
        line.extend_from_slice(window);
        reader.consume(taken);
        if line.len() >= max {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // === process environment ===

    fn launch(function: &str, role: Option<Arc<ResolvedRole>>) -> Launch {
        Launch {
            function: Arc::from(function),
            // `env` prints the environment it was started with.
            command: "env".to_owned(),
            args: Vec::new(),
            environment: vec![("GREETING".to_owned(), "hello".to_owned())],
            role,
            handler: "handler".to_owned(),
            memory_size: 128,
            working_dir: std::env::temp_dir(),
            function_arn: HeaderValue::from_static("arn"),
            isolation: None,
            version: Arc::from("$LATEST"),
        }
    }

    fn role(name: &str, vars: &[(&str, &str)]) -> Arc<ResolvedRole> {
        use impulse_config::{ExecutionRoleConfig, SecretSource};
        let config = ExecutionRoleConfig {
            environment: vars
                .iter()
                .map(|(key, _)| ((*key).to_owned(), SecretSource::Env(format!("SRC_{key}"))))
                .collect(),
            ..Default::default()
        };
        let env: std::collections::BTreeMap<String, String> = vars
            .iter()
            .map(|(key, value)| (format!("SRC_{key}"), (*value).to_owned()))
            .collect();
        Arc::new(ResolvedRole::resolve(name, &config, &env).expect("resolves"))
    }

    /// The environment a real child process of `launch` starts with.
    async fn child_environment(launch: &Launch) -> std::collections::BTreeMap<String, String> {
        let output = command(launch, "127.0.0.1:9", None)
            .output()
            .await
            .expect("`env` runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_role_s_variables_reach_its_function_s_processes_only() {
        let payments = role(
            "payments",
            &[
                ("STRIPE_KEY", "canary-stripe"),
                ("DB_PASSWORD", "canary-db"),
            ],
        );
        let reports = role("reports", &[("REPORTS_TOKEN", "canary-reports")]);

        let pay = child_environment(&launch("pay", Some(payments.clone()))).await;
        assert_eq!(pay["STRIPE_KEY"], "canary-stripe");
        assert_eq!(pay["DB_PASSWORD"], "canary-db");
        assert_eq!(
            pay["GREETING"], "hello",
            "the function's own variables stay"
        );
        assert_eq!(pay["AWS_LAMBDA_FUNCTION_NAME"], "pay");
        assert!(!pay.contains_key("REPORTS_TOKEN"), "{pay:?}");

        let report = child_environment(&launch("report", Some(reports))).await;
        assert_eq!(report["REPORTS_TOKEN"], "canary-reports");
        assert!(
            !report.contains_key("STRIPE_KEY") && !report.contains_key("DB_PASSWORD"),
            "{report:?}"
        );

        let plain = child_environment(&launch("plain", None)).await;
        assert!(
            plain.values().all(|v| !v.starts_with("canary")),
            "no role, no secrets: {plain:?}"
        );

        let debug = format!("{:?}", launch("pay", Some(payments)));
        assert!(!debug.contains("canary"), "{debug}");
    }

    #[test]
    fn every_variable_the_broker_sets_is_reserved_for_roles() {
        let launch = launch("f", None);
        let command = command(&launch, "127.0.0.1:9", None);
        let set: Vec<String> = command
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .filter(|name| !INHERITED.contains(&name.as_str()) && name != "GREETING")
            .collect();
        assert!(set.len() > 10, "{set:?}");
        for name in set {
            assert!(
                impulse_config::is_reserved_environment(&name),
                "{name} must be refused in execution_roles.*.environment"
            );
        }
    }

    #[test]
    fn exits_are_worded_as_lambda_words_them() {
        assert_eq!(describe_exit(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe_exit(ExitStatus::from_raw(0)), "exit status 0");
        assert_eq!(describe_exit(ExitStatus::from_raw(9)), "signal: killed");
        assert_eq!(
            describe_exit(ExitStatus::from_raw(11)),
            "signal: segmentation fault"
        );
        assert_eq!(describe_exit(ExitStatus::from_raw(31)), "signal: 31");
    }

    async fn lines(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut reader = BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while read_line_capped(&mut reader, &mut line, max)
            .await
            .expect("in-memory reads never fail")
        {
            out.push(line.clone());
        }
        out
    }

    #[tokio::test]
    async fn log_lines_are_split_and_capped() {
        assert_eq!(
            lines(b"one\ntwo\nlast", 100).await,
            [&b"one\n"[..], b"two\n", b"last"]
        );
        assert_eq!(
            lines(b"abcdefghij\nk\n", 4).await,
            [&b"abcd"[..], b"efgh", b"ij\n", b"k\n"]
        );
        assert!(lines(b"", 4).await.is_empty());
        assert_eq!(lines(b"\n\n", 4).await, [&b"\n"[..], b"\n"]);
    }

    /// Collects every event's fields (and target) as strings.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>);

    struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert("target".to_owned(), event.metadata().target().to_owned());
            event.record(&mut Fields(&mut fields));
            self.0.lock().expect("not poisoned").push(fields);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[tokio::test]
    async fn worker_output_goes_to_tracing_with_the_request_id() {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        let (_jobs, jobs_rx) = mpsc::channel(1);
        let (init, _) = oneshot::channel();
        let (_exit, exited) = watch::channel(None);
        let api = Arc::new(RuntimeApi::new(
            HeaderValue::from_static("arn"),
            jobs_rx,
            init,
            exited,
        ));
        let output: &'static [u8] = b"before\n";
        forward_lines(
            box_reader(output),
            "stdout",
            Arc::from("orders"),
            api.clone(),
        )
        .await;
        api.set_last_request_id("req-9");
        let output: &'static [u8] =
            b"during\r\n\xffbytes\nforged\r2026-12-07T00:00:00Z  INFO impulse: fake\x1b[2K\n";
        forward_lines(box_reader(output), "stderr", Arc::from("orders"), api).await;

        let events = capture.0.lock().expect("not poisoned").clone();
        let seen: Vec<[&str; 5]> = events
            .iter()
            .map(|e| {
                [
                    e["target"].as_str(),
                    e["function"].as_str(),
                    e["request_id"].as_str(),
                    e["stream"].as_str(),
                    e["message"].as_str(),
                ]
            })
            .collect();
        assert_eq!(
            seen,
            [
                ["impulse::function", "orders", "-", "stdout", "before"],
                ["impulse::function", "orders", "req-9", "stderr", "during"],
                [
                    "impulse::function",
                    "orders",
                    "req-9",
                    "stderr",
                    "\u{fffd}bytes"
                ],
                [
                    "impulse::function",
                    "orders",
                    "req-9",
                    "stderr",
                    "forged\\r2026-12-07T00:00:00Z  INFO impulse: fake\\u{1b}[2K"
                ],
            ]
        );
    }
}
