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

/// The baselines' HTTP client: hyper's pooled HTTP/1 client, as Impulse's `http://` targets use
/// (`impulse_invoker::http`'s plain endpoint: nodelay, the endpoint parsed once), sending the
/// headers Impulse sends. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Poster {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    uri: hyper::Uri,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Poster {
    /// A fresh pool for `endpoint` (`http://` only).
    ///
    /// # Errors
    ///
    /// `endpoint` is not a URI.
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .build(connector);
        Ok(Self {
            client,
            uri: endpoint.parse()?,
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
        use http_body_util::BodyExt as _;
        let deadline_ms = (std::time::SystemTime::now() + timeout)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .to_string();
        let request = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "*/*")
            .header(
                "lambda-runtime-aws-request-id",
                uuid::Uuid::new_v4().to_string(),
            )
            .header("lambda-runtime-deadline-ms", deadline_ms)
            .body(http_body_util::Full::new(body))?;
        let response = self.client.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        anyhow::ensure!(status.is_success(), "the target answered {status}");
        Ok(())
    }
}
