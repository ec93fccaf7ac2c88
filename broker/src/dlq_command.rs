//! `impulse dlq`: look at and replay the records in a function's destinations.
//!
//! Works on embedded-log and Redis-stream destinations, while the broker runs. Replay sends
//! each chosen record's `requestPayload` back through the running broker's Invoke API as an
//! `Event` invocation, so it is queued durably and retried like any async event; records stay
//! in the destination (it is an append-only log), and replayed ids are printed.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use impulse_config::{Config, DestinationConfig};
use impulse_connectors::embedded::read_log;
use impulse_connectors::redis::read_stream;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::broker_client;

/// Which destination of a function to read.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Which {
    /// `on_failure` (the dead-letter destination).
    OnFailure,
    /// `on_success`.
    OnSuccess,
}

/// One record in a destination.
#[derive(Debug)]
struct Entry {
    /// Where it sits: the log line index or the Redis entry id.
    position: String,
    /// The event id (the request id).
    key: String,
    record: Value,
}

/// `impulse dlq list`.
pub(crate) async fn list(config: &Config, function: &str, which: Which) -> anyhow::Result<()> {
    let entries = read(config, function, which).await?;
    println!(
        "{:<10} {:<38} {:<18} {:>8}  timestamp",
        "position", "id", "condition", "attempts"
    );
    for entry in &entries {
        let context = &entry.record["requestContext"];
        println!(
            "{:<10} {:<38} {:<18} {:>8}  {}",
            entry.position,
            entry.key,
            context["condition"].as_str().unwrap_or("-"),
            context["approximateInvokeCount"]
                .as_u64()
                .map_or("-".to_owned(), |n| n.to_string()),
            entry.record["timestamp"].as_str().unwrap_or("-"),
        );
    }
    println!("{} records", entries.len());
    Ok(())
}

/// `impulse dlq show`: prints the records whose id or position is `id`.
pub(crate) async fn show(
    config: &Config,
    function: &str,
    which: Which,
    id: &str,
) -> anyhow::Result<()> {
    let entries = read(config, function, which).await?;
    let found: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.key == id || e.position == id)
        .collect();
    if found.is_empty() {
        bail!("no record with id or position {id:?} in {function}'s destination");
    }
    for entry in found {
        println!("{}", serde_json::to_string_pretty(&entry.record)?);
    }
    Ok(())
}

/// What `impulse dlq replay` was asked to do.
#[derive(Debug)]
pub(crate) struct Replay<'a> {
    /// Ids or positions to replay; empty: every record.
    pub(crate) ids: &'a [String],
    /// The function to invoke instead of the records' own.
    pub(crate) to: Option<&'a str>,
    /// At most this many records per second.
    pub(crate) rate: u32,
    /// Bearer token for the Invoke API, when the broker requires one.
    pub(crate) token: Option<&'a str>,
    /// The broker's base URL; `None`: `server.listen`, over https when `[server.tls]` is set.
    pub(crate) broker_url: Option<&'a str>,
    /// CA certificates trusted, besides the system's, for an https broker.
    pub(crate) ca_file: Option<&'a std::path::Path>,
}

/// `impulse dlq replay`: queues the chosen records' payloads again, at most `rate` per second.
pub(crate) async fn replay(
    config: &Config,
    function: &str,
    which: Which,
    replay: &Replay<'_>,
) -> anyhow::Result<()> {
    let Replay {
        ids,
        to: target,
        rate,
        token,
        broker_url,
        ca_file,
    } = *replay;
    if rate == 0 {
        bail!("--rate must be greater than 0");
    }
    let entries = read(config, function, which).await?;
    let chosen: Vec<&Entry> = entries
        .iter()
        .filter(|e| ids.is_empty() || ids.iter().any(|id| *id == e.key || *id == e.position))
        .collect();
    if chosen.is_empty() {
        bail!("no records chosen; `impulse dlq list` shows what there is");
    }
    let target = target.unwrap_or(function);
    let broker = broker_url.map_or_else(
        || broker_client::listen_url(config),
        broker_client::base_url,
    );
    let url = format!("{broker}/2015-03-31/functions/{target}/invocations");
    let client = broker_client::client(ca_file)?;
    let bar = ProgressBar::new(chosen.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} replayed ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut failed = 0usize;
    for entry in chosen {
        ticks.tick().await;
        let payload = serde_json::to_vec(&entry.record["requestPayload"])?;
        let mut request = client
            .post(&url)
            .header("x-amz-invocation-type", "Event")
            .body(payload);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let result = request.send().await;
        match result {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                bar.println(format!("replayed {} as a new async event", entry.key));
            }
            // Every other record would be refused the same way.
            Ok(response)
                if matches!(
                    response.status(),
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
                ) =>
            {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bar.abandon();
                bail!(
                    "the broker refused the replay: {status} {body}\n(pass a token of a \
                     principal allowed to invoke {target} with --token or IMPULSE_TOKEN)"
                );
            }
            Ok(response) => {
                failed += 1;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                bar.println(format!("failed {}: {status} {body}", entry.key));
            }
            Err(err) => {
                failed += 1;
                bar.println(format!(
                    "failed {}: {err} (is impulse running at {url}?)",
                    entry.key
                ));
            }
        }
        bar.inc(1);
    }
    bar.finish();
    if failed > 0 {
        bail!("{failed} records could not be replayed");
    }
    Ok(())
}

async fn read(config: &Config, function: &str, which: Which) -> anyhow::Result<Vec<Entry>> {
    let settings = config
        .functions
        .get(function)
        .with_context(|| format!("no function {function:?} in the configuration"))?;
    let (destination, field) = match which {
        Which::OnFailure => (&settings.on_failure, "on_failure"),
        Which::OnSuccess => (&settings.on_success, "on_success"),
    };
    let Some(destination) = destination else {
        bail!("functions.{function}.{field} is not set");
    };
    read_destination(destination, &config.queue.data_dir).await
}

async fn read_destination(
    destination: &DestinationConfig,
    data_dir: &Path,
) -> anyhow::Result<Vec<Entry>> {
    match destination {
        DestinationConfig::Log(log) => {
            let entries = read_log(data_dir, &log.name)
                .with_context(|| format!("cannot read the embedded log {}", log.name))?;
            Ok(entries
                .into_iter()
                .map(|e| Entry {
                    position: e.index.to_string(),
                    key: e.key,
                    record: e.record,
                })
                .collect())
        }
        DestinationConfig::Redis(redis) => {
            let entries = read_stream(&redis.url, &redis.stream, 10_000)
                .await
                .with_context(|| format!("cannot read the Redis stream {}", redis.stream))?;
            Ok(entries
                .into_iter()
                .map(|(position, key, record)| Entry {
                    position,
                    key,
                    record,
                })
                .collect())
        }
        DestinationConfig::Kafka(kafka) => bail!(
            "Kafka destinations are read with Kafka tools (topic {}); `impulse dlq` reads \
             embedded-log and Redis destinations",
            kafka.topic
        ),
    }
}
