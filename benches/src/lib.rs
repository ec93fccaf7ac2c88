//! Benchmarks of the `impulse` binary against raw baselines measured in the same run, as
//! `BENCHMARKING.md` (repository `shared/`) prescribes: interleaved ABAB replicas, the median
//! of the B/A ratios, CPU per event, and correctness counts in every run.
//!
//! The binaries live in `src/bin/`; this library holds what they share: the target function
//! ([`target`]), Kafka helpers ([`kafka`]), `/proc` readings ([`proc`]), the sides' processes
//! ([`side`]) and summaries ([`stats`]).

pub mod hyper_proxy;
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
    eprintln!("building impulse (cargo build --release -p impulse-broker --bin impulse)…");
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

/// The baselines' HTTP client: Impulse's own `http` target (`impulse_invoker::http`), so a
/// baseline sends the same bytes over the same connection pool as Impulse, and does none of
/// Impulse's other work (limiter, metrics, retries). Cheap to clone; clones share the pool.
#[derive(Clone, Debug)]
pub struct Poster {
    target: impulse_invoker::http::HttpFunction,
    function: impulse_invoker::Name,
}

impl Poster {
    /// A fresh pool for `endpoint` (`http://` only).
    ///
    /// # Errors
    ///
    /// `endpoint` is not a URL.
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        let client = impulse_invoker::http::HttpFunction::default_client();
        Ok(Self {
            target: impulse_invoker::http::HttpFunction::new(client, endpoint)?,
            function: impulse_invoker::Name::new("baseline"),
        })
    }

    /// POSTs one event as Impulse's `http` targets do (JSON, a fresh request id, the deadline
    /// `timeout` from now in epoch milliseconds) and reads the answer.
    ///
    /// # Errors
    ///
    /// The request fails, or the target answers other than 2xx.
    pub async fn post_event(
        &self,
        body: bytes::Bytes,
        timeout: std::time::Duration,
    ) -> anyhow::Result<()> {
        use impulse_invoker::Invoke as _;
        let invocation = impulse_invoker::Invocation {
            request_id: uuid::Uuid::new_v4().to_string(),
            function: self.function,
            trigger: self.function,
            payload: body,
            deadline: Some(tokio::time::Instant::now() + timeout),
            client_context: None,
            log_tail: None,
        };
        self.target
            .invoke(invocation)
            .await
            .map_err(|e| anyhow::anyhow!("the target failed: {e}"))?;
        Ok(())
    }
}
