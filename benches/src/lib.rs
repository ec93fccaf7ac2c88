//! Benchmarks of the `impulse` binary against raw baselines measured in the same run, as
//! `BENCHMARKING.md` (repository `shared/`) prescribes: interleaved ABAB replicas, the median
//! of the B/A ratios, CPU per event, and correctness counts in every run.
//!
//! The binaries live in `src/bin/`; this library holds what they share: the target function
//! ([`target`]), Kafka helpers ([`kafka`]), `/proc` readings ([`proc`]), the sides' processes
//! ([`side`]) and summaries ([`stats`]).

pub mod kafka;
pub mod proc;
pub mod side;
pub mod stats;
pub mod target;

use std::path::{Path, PathBuf};

/// The workspace root (where `Cargo.toml` lists the members).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benches crate lives inside the workspace")
}

/// The `impulse` binary: `IMPULSE_BIN` when set, otherwise `target/release/impulse` after
/// `cargo build --release -p impulse-broker --bin impulse` (a no-op when it is up to date).
pub fn build_impulse() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("IMPULSE_BIN") {
        if !path.is_empty() {
            return Ok(PathBuf::from(path));
        }
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "-p",
            "impulse-broker",
            "--bin",
            "impulse",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "building the impulse binary failed");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target_dir.join("release").join("impulse"))
}

/// POSTs one event to the target as Impulse's `http` targets do (JSON, a fresh request id, the
/// deadline `timeout` from now in epoch milliseconds): what every baseline loop sends.
///
/// # Errors
///
/// The request fails, or the target answers other than 2xx.
pub async fn post_event(
    client: &reqwest::Client,
    endpoint: &reqwest::Url,
    body: bytes::Bytes,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline_ms = (std::time::SystemTime::now() + timeout)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let response = client
        .post(endpoint.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "lambda-runtime-aws-request-id",
            uuid::Uuid::new_v4().to_string(),
        )
        .header("lambda-runtime-deadline-ms", deadline_ms)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    anyhow::ensure!(status.is_success(), "the target answered {status}");
    Ok(())
}
