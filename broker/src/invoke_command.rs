//! `impulse invoke`: calls a function through a running broker's Invoke API, as the AWS SDKs
//! do, and prints what it returned.
//!
//! The result goes to stdout; a function error's type and message, a log tail and the broker's
//! own errors go to stderr. The exit code tells a script which happened (see [`Outcome`]).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use crate::broker_client;

/// The arguments of `impulse invoke`.
#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    /// The function: a name, `name:qualifier`, or a function ARN.
    function: String,
    /// The JSON event (default `{}`).
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// A file holding the JSON event; `-` reads stdin.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Queue the event (`Event` invocation) and print its request id, without waiting for
    /// the function.
    #[arg(long = "async", conflicts_with = "dry_run")]
    asynchronous: bool,
    /// Only check that the function exists and that the caller may invoke it (`DryRun`).
    #[arg(long)]
    dry_run: bool,
    /// Ask for the last 4 KB of the invocation's log (printed to stderr); synchronous only.
    #[arg(long, value_enum, conflicts_with_all = ["asynchronous", "dry_run"])]
    log_type: Option<LogType>,
    /// The broker's URL (e.g. `https://impulse.internal:8080`).
    #[arg(
        long,
        env = "IMPULSE_BROKER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    broker_url: String,
    /// Bearer token when `[auth]` is configured: a principal allowed to invoke the function.
    /// Prefer the environment variable: a command line is visible to every user of the machine.
    #[arg(long, env = "IMPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificates to trust for an https broker, besides the system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Lambda's `LogType`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogType {
    /// The last 4 KB of the invocation's log.
    #[value(name = "Tail")]
    Tail,
}

/// How an invocation ended, as the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The function ran and returned (or the event was queued, or the dry run passed): 0.
    Success,
    /// The function ran and failed (`X-Amz-Function-Error`): 1.
    FunctionError,
    /// The broker refused or failed the request (a 4xx or 5xx with Lambda's error type): 3.
    ApiError,
    /// No answer: the broker is unreachable, or the payload file unreadable: 4.
    NoAnswer,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::FunctionError => ExitCode::from(1),
            Outcome::ApiError => ExitCode::from(3),
            Outcome::NoAnswer => ExitCode::from(4),
        }
    }
}

/// Runs `impulse invoke`.
pub(crate) fn run(args: &InvokeArgs) -> ExitCode {
    broker_client::run_command(
        async { invoke(args).await.map(ExitCode::from) },
        Outcome::NoAnswer.into(),
    )
}

async fn invoke(args: &InvokeArgs) -> anyhow::Result<Outcome> {
    let payload = payload(args)?;
    let url = invoke_url(&args.broker_url, &args.function)?;
    let client = broker_client::client(args.ca_file.as_deref())?;
    let invocation_type = if args.asynchronous {
        "Event"
    } else if args.dry_run {
        "DryRun"
    } else {
        "RequestResponse"
    };
    let mut request = client
        .post(url.clone())
        .header("x-amz-invocation-type", invocation_type)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(payload);
    if let Some(LogType::Tail) = args.log_type {
        request = request.header("x-amz-log-type", "Tail");
    }
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("no answer from {url} (is impulse running there?)"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = response
        .bytes()
        .await
        .with_context(|| format!("the answer from {url} broke off"))?;
    if !status.is_success() {
        print_api_error(status, header("x-amzn-errortype").as_deref(), &body);
        return Ok(Outcome::ApiError);
    }
    if let Some(log) = header("x-amz-log-result") {
        print_log_tail(&log);
    }
    let request_id = header("x-amzn-requestid").unwrap_or_default();
    match invocation_type {
        "Event" => {
            println!("{request_id}");
            eprintln!("Queued as request {request_id} ({status}).");
            return Ok(Outcome::Success);
        }
        "DryRun" => {
            eprintln!("Dry run passed: the function exists and may be invoked ({status}).");
            return Ok(Outcome::Success);
        }
        _ => {}
    }
    if let Some(kind) = header("x-amz-function-error") {
        print_function_error(&kind, &request_id, &body);
        return Ok(Outcome::FunctionError);
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&body)?;
    if !body.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    stdout.flush()?;
    Ok(Outcome::Success)
}

/// The event: `--payload`, `--payload-file` (or stdin), else `{}`.
fn payload(args: &InvokeArgs) -> anyhow::Result<Vec<u8>> {
    match (&args.payload, &args.payload_file) {
        (Some(payload), _) => Ok(payload.clone().into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the payload from stdin")?;
            Ok(bytes)
        }
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("cannot read the payload file {}", path.display())),
        (None, None) => Ok(b"{}".to_vec()),
    }
}

/// `POST {broker}/2015-03-31/functions/{name}/invocations[?Qualifier=…]`: a `name:qualifier`
/// goes as `Qualifier`, as the SDKs send it; an ARN goes as it is (the broker reads it).
fn invoke_url(broker: &str, function: &str) -> anyhow::Result<reqwest::Url> {
    let base = broker_client::base_url(broker);
    let mut url = reqwest::Url::parse(&format!("{base}/2015-03-31/functions"))
        .with_context(|| format!("--broker-url {broker:?} is not a URL"))?;
    let (name, qualifier) = match function.split_once(':') {
        Some((name, qualifier)) if !function.contains(":function:") => (name, Some(qualifier)),
        _ => (function, None),
    };
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--broker-url {broker:?} cannot have paths"))?
        .push(name)
        .push("invocations");
    if let Some(qualifier) = qualifier {
        url.query_pairs_mut().append_pair("Qualifier", qualifier);
    }
    Ok(url)
}

/// `error: 404 ResourceNotFoundException: Function not found: nope`.
fn print_api_error(status: reqwest::StatusCode, error_type: Option<&str>, body: &[u8]) {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|doc| {
            doc.get("Message")
                .or_else(|| doc.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let error_type = error_type.unwrap_or("(no x-amzn-ErrorType)");
    eprintln!("error: {status} {error_type}: {message}");
}

/// `Unhandled function error (request …): errorType: errorMessage`, then the document.
fn print_function_error(kind: &str, request_id: &str, body: &[u8]) {
    let doc = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    let field = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or("-");
    eprintln!(
        "{kind} function error (request {request_id}): {}: {}",
        field("errorType"),
        field("errorMessage")
    );
    eprintln!("{}", String::from_utf8_lossy(body));
}

/// The decoded `X-Amz-Log-Result`, on stderr so stdout stays the result.
fn print_log_tail(encoded: &str) {
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(log) => {
            let log = String::from_utf8_lossy(&log);
            eprint!("{log}");
            if !log.ends_with('\n') {
                eprintln!();
            }
        }
        Err(_) => eprintln!("(the log tail is not valid base64: {encoded})"),
    }
}

#[cfg(test)]
mod tests {
    use super::invoke_url;

    #[test]
    fn qualifiers_go_as_a_query_parameter() {
        let url = invoke_url("http://127.0.0.1:8080/", "echo:$LATEST").expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/2015-03-31/functions/echo/invocations?Qualifier=%24LATEST"
        );
        let url = invoke_url("http://h:1", "echo").expect("url");
        assert_eq!(
            url.as_str(),
            "http://h:1/2015-03-31/functions/echo/invocations"
        );
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:echo:live";
        let url = invoke_url("http://h:1", arn).expect("url");
        assert!(url.path().contains("function:echo:live"), "{url}");
        assert!(url.query().is_none());
    }
}
