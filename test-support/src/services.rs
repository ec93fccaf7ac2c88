//! Where the real services of the integration tests listen, and checks that they are up.
//!
//! `scripts/services.sh up` runs Kafka, Redis and Prometheus as local processes on 127.0.0.1
//! (no Docker). Each address can be overridden through an environment variable, as vector's
//! `REDIS_URL` or rust-rdkafka's `KAFKA_HOST`. A test that needs a service calls its `require_*`
//! function first: when the service is unreachable the test **fails**, with a message naming the
//! command that starts it. Tests never skip because a service is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// How long a `require_*` check waits for its service to answer.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Kafka bootstrap servers: `IMPULSE_TEST_KAFKA`, default `127.0.0.1:9092`.
pub fn kafka_bootstrap() -> String {
    env_or("IMPULSE_TEST_KAFKA", "127.0.0.1:9092")
}

/// Redis URL: `IMPULSE_TEST_REDIS`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    env_or("IMPULSE_TEST_REDIS", "redis://127.0.0.1:6379")
}

/// Prometheus base URL (no trailing slash): `IMPULSE_TEST_PROMETHEUS`, default
/// `http://127.0.0.1:9090`.
pub fn prometheus_url() -> String {
    env_or("IMPULSE_TEST_PROMETHEUS", "http://127.0.0.1:9090")
        .trim_end_matches('/')
        .to_owned()
}

/// The file_sd file Prometheus reads the `impulse` job's targets from:
/// `IMPULSE_TEST_PROMETHEUS_TARGETS`, default `<workspace>/.services/prometheus/targets.json`
/// (see `tests/prometheus.yml`).
pub fn prometheus_targets_file() -> PathBuf {
    match std::env::var("IMPULSE_TEST_PROMETHEUS_TARGETS") {
        Ok(path) if !path.is_empty() => PathBuf::from(path),
        _ => workspace_root().join(".services/prometheus/targets.json"),
    }
}

/// Panics unless a Kafka broker answers a metadata request at [`kafka_bootstrap`] within a few
/// seconds; returns the bootstrap servers.
pub async fn require_kafka() -> String {
    let bootstrap = kafka_bootstrap();
    let servers = bootstrap.clone();
    // librdkafka's metadata call blocks: keep it off the async workers.
    let checked = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("socket.timeout.ms", REACH_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| e.to_string())?;
        let metadata = consumer
            .fetch_metadata(None, REACH_TIMEOUT)
            .map_err(|e| e.to_string())?;
        if metadata.brokers().is_empty() {
            return Err("the metadata response lists no broker".to_owned());
        }
        Ok(())
    })
    .await
    .expect("the Kafka check panicked");
    if let Err(e) = checked {
        unreachable_service("Kafka", &bootstrap, &e, "kafka");
    }
    bootstrap
}

/// Panics unless Redis answers `PING` at [`redis_url`] within a few seconds; returns the URL.
pub async fn require_redis() -> String {
    let url = redis_url();
    let checked = tokio::time::timeout(REACH_TIMEOUT, async {
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {REACH_TIMEOUT:?}")));
    if let Err(e) = checked {
        unreachable_service("Redis", &url, &e, "redis");
    }
    url
}

/// Panics unless Prometheus reports ready (`GET /-/ready`) at [`prometheus_url`] within a few
/// seconds; returns the base URL.
pub async fn require_prometheus() -> String {
    let base = prometheus_url();
    let checked = async {
        let client = reqwest::Client::builder()
            .timeout(REACH_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("/-/ready answered {}", response.status()))
        }
    }
    .await;
    if let Err(e) = checked {
        unreachable_service("Prometheus", &base, &e, "prometheus");
    }
    base
}

/// Makes `addrs` the whole target list of Prometheus' `impulse` scrape job by rewriting
/// [`prometheus_targets_file`] (an empty slice removes every target).
///
/// Prometheus re-reads the file every second, but its discovery manager passes changes on at
/// most every 5 s: allow up to ~7 s before the first scrape (about 2–4 s is usual). The file is
/// shared by every test: one that sets targets should not run alongside another that does.
///
/// # Panics
///
/// When the file cannot be written (for instance, its directory does not exist because
/// `scripts/services.sh up prometheus` never ran).
pub fn prometheus_set_targets(addrs: &[SocketAddr]) {
    let path = prometheus_targets_file();
    let json = if addrs.is_empty() {
        serde_json::json!([])
    } else {
        let targets: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        serde_json::json!([{ "targets": targets }])
    };
    // Write then rename, so that Prometheus never reads a half-written file.
    let tmp = path.with_extension("json.tmp");
    let written =
        std::fs::write(&tmp, format!("{json}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        panic!(
            "cannot write Prometheus targets to {}: {e}. \
             Start Prometheus with: scripts/services.sh up prometheus",
            path.display()
        );
    }
}

fn unreachable_service(name: &str, addr: &str, error: &str, service: &str) -> ! {
    panic!(
        "{name} is not reachable at {addr}: {error}. Start it with: scripts/services.sh up {service}"
    )
}

fn env_or(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => default.to_owned(),
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_is_the_workspace_manifest_dir() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml"))
            .expect("the workspace root has a Cargo.toml");
        assert!(manifest.contains("[workspace]"));
    }
}
