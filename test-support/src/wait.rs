//! Waiting for an observable state in tests: bounded polling, never a fixed sleep.

use std::time::{Duration, Instant};

/// How often an in-memory condition is checked.
const POLL: Duration = Duration::from_millis(20);
/// How often a probe that does I/O (a Kafka read, a metrics scrape) runs.
const PROBE_POLL: Duration = Duration::from_millis(100);

/// Waits until `done` holds, failing the test with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, timeout, || done().then_some(())).await;
}

/// Waits until `ready` returns a value, and returns it; fails the test with `what` after
/// `timeout`. For in-memory checks: a probe that does I/O belongs in [`eventually`].
pub async fn wait_for<T>(what: &str, timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `probe` until it returns `Ok`, and returns that value; after `timeout`, an error naming
/// `what` and the probe's last `Err` (the state it saw).
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(state) if started.elapsed() >= timeout => {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last seen: {state}"
                ));
            }
            Err(_) => tokio::time::sleep(PROBE_POLL).await,
        }
    }
}
