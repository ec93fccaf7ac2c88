//! Lambda's `LogType: Tail` on the Invoke API: `X-Amz-Log-Result` carries base64 of the last
//! 4 KB of the invocation's log.
//!
//! The log is what Lambda writes around an invocation (`START`, `END`, `REPORT` lines) and, for
//! process functions, the worker's stdout and stderr lines written while it ran (collected by
//! the invoker in the invocation's [`LogTail`]). HTTP functions have no log of their own here:
//! their tail is the three lines only.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use impulse_invoker::log_tail::{last_bytes, LOG_TAIL_BYTES};
use impulse_invoker::LogTail;
use tokio::time::Instant;

/// How long a worker's output must be quiet before its tail is taken, and the longest wait for
/// that: its lines travel through a pipe and may arrive just after its answer.
const QUIET: Duration = Duration::from_millis(20);
const SETTLE_LIMIT: Duration = Duration::from_millis(250);

/// A log tail to collect when the caller sent `X-Amz-Log-Type: Tail` on a synchronous call;
/// `None` collects nothing. Lambda ignores `Tail` on other calls; any other value is taken as
/// `None` (the default): the header never makes a request fail.
pub(super) fn requested(headers: &HeaderMap, invocation_type: &str) -> Option<LogTail> {
    let tail = headers
        .get("x-amz-log-type")
        .is_some_and(|value| value.as_bytes() == b"Tail");
    (tail && invocation_type == "RequestResponse").then(LogTail::new)
}

/// The `X-Amz-Log-Result` value for an invocation that started at `started`.
pub(super) async fn header(
    tail: &LogTail,
    request_id: &str,
    version: &str,
    started: Instant,
) -> Option<HeaderValue> {
    let elapsed = started.elapsed();
    tail.settled(QUIET, SETTLE_LIMIT).await;
    let millis = elapsed.as_secs_f64() * 1000.0;
    // Lambda bills whole milliseconds, rounded up.
    let billed = elapsed.as_nanos().div_ceil(1_000_000).max(1);
    let log = format!(
        "START RequestId: {request_id} Version: {version}\n{}END RequestId: {request_id}\n\
         REPORT RequestId: {request_id}\tDuration: {millis:.2} ms\tBilled Duration: {billed} ms\t\n",
        tail.text()
    );
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(last_bytes(&log, LOG_TAIL_BYTES));
    HeaderValue::from_str(&encoded).ok()
}
