//! `impulse invoke`: one invocation through a running broker's Invoke API, the same request the
//! AWS SDKs send, with the result on stdout and the function's error on stderr.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use impulse_config::Config;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Exit code of an invocation whose function failed (the result was printed).
const FUNCTION_ERROR: u8 = 1;
/// Exit code of a request the broker refused (an API error) or could not be sent.
const API_ERROR: u8 = 2;

/// Characters kept as they are in the function path segment: a name, `:` before a qualifier
/// and `$` of `$LATEST` are sent as written; everything else is escaped.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':')
    .remove(b'$');

/// How to invoke (Lambda's `InvocationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `RequestResponse`: wait for the result.
    Sync,
    /// `Event`: queue it; the broker answers once the event is durably queued.
    Async,
    /// `DryRun`: check the function exists and the caller may invoke it.
    DryRun,
}

impl Mode {
    fn invocation_type(self) -> &'static str {
        match self {
            Self::Sync => "RequestResponse",
            Self::Async => "Event",
            Self::DryRun => "DryRun",
        }
    }
}

/// What `impulse invoke` was asked.
#[derive(Debug)]
pub(crate) struct Invoke<'a> {
    /// `name`, `name:qualifier` or a function ARN.
    pub(crate) function: &'a str,
    /// The event (JSON); `None`: `{}`.
    pub(crate) payload: Option<String>,
    pub(crate) mode: Mode,
    /// The broker's base URL, if given.
    pub(crate) broker_url: Option<&'a str>,
    /// The configuration whose `server.listen` is the broker's address, if given.
    pub(crate) config: Option<&'a Config>,
    /// Bearer token for the Invoke API, when the broker requires one.
    pub(crate) token: Option<&'a str>,
    /// CA certificates trusted, besides the system's, for an https broker.
    pub(crate) ca_file: Option<&'a Path>,
}

/// Reads `--payload-file` (`-`: standard input).
pub(crate) fn read_payload_file(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("cannot read standard input");
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs one invocation and reports it: the result on stdout; the function error, the API
/// error or what happened (queued, dry run) on stderr, with the exit code saying which.
pub(crate) async fn run(invoke: Invoke<'_>) -> ExitCode {
    match call(&invoke).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(API_ERROR)
        }
    }
}

async fn call(invoke: &Invoke<'_>) -> anyhow::Result<ExitCode> {
    let payload = invoke.payload.as_deref().unwrap_or("{}");
    // Checked here so a typo is reported as the caller's, before anything is sent.
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .context("the payload is not valid JSON")?;
    let broker = crate::api_client::base_url(invoke.broker_url, invoke.config);
    let function = utf8_percent_encode(invoke.function, PATH_SEGMENT);
    let url = format!("{broker}/2015-03-31/functions/{function}/invocations");
    let client = crate::api_client::client(invoke.ca_file)?;
    let mut request = client
        .post(&url)
        .header("x-amz-invocation-type", invoke.mode.invocation_type())
        .header("content-type", "application/json")
        .body(payload.to_owned());
    if let Some(token) = invoke.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the broker at {broker} (is impulse running?)"))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let error_type = header("x-amzn-errortype");
    let function_error = header("x-amz-function-error");
    let executed_version = header("x-amz-executed-version");
    let request_id = header("x-amzn-requestid");
    let body = response
        .bytes()
        .await
        .context("the broker's answer was cut off")?;
    if let Some(error_type) = error_type {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|body| body["Message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        eprintln!("error: {status} {error_type}: {message}");
        return Ok(ExitCode::from(API_ERROR));
    }
    match invoke.mode {
        Mode::DryRun if status.is_success() => {
            eprintln!(
                "{}: the function exists and may be invoked.",
                invoke.function
            );
            return Ok(ExitCode::SUCCESS);
        }
        Mode::Async if status.is_success() => {
            let id = request_id.as_deref().unwrap_or("unknown");
            eprintln!("queued (request id {id})");
            return Ok(ExitCode::SUCCESS);
        }
        _ if !status.is_success() => {
            eprintln!("error: {status}: {}", String::from_utf8_lossy(&body));
            return Ok(ExitCode::from(API_ERROR));
        }
        _ => {}
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&body).context("cannot write the result")?;
    stdout.write_all(b"\n").context("cannot write the result")?;
    stdout.flush().context("cannot write the result")?;
    if let Some(version) = executed_version {
        eprintln!("executed version: {version}");
    }
    if let Some(kind) = function_error {
        let document = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        eprintln!(
            "function error ({kind}): {}: {}",
            document["errorType"].as_str().unwrap_or("unknown"),
            document["errorMessage"].as_str().unwrap_or_default()
        );
        return Ok(ExitCode::from(FUNCTION_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
