//! Building destination sinks (`on_success`, `on_failure`) from the configuration.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use impulse_config::DestinationConfig;
use impulse_connectors::contract::Sink;
use impulse_connectors::embedded::LogSink;
use impulse_connectors::kafka::KafkaSink;
use impulse_connectors::redis::RedisStreamSink;

/// The sink `config` describes. `name` identifies it in errors and logs
/// (`functions.<name>.on_failure`).
pub(crate) fn build_sink(
    config: &DestinationConfig,
    data_dir: &Path,
    name: &str,
) -> anyhow::Result<Arc<dyn Sink>> {
    Ok(match config {
        DestinationConfig::Log(log) => Arc::new(
            LogSink::open(data_dir, &log.name)
                .with_context(|| format!("{name}: cannot open the embedded log {}", log.name))?,
        ),
        DestinationConfig::Redis(redis) => Arc::new(
            RedisStreamSink::new(name, &redis.url, &redis.stream)
                .with_context(|| format!("{name}: cannot connect to Redis"))?,
        ),
        DestinationConfig::Kafka(kafka) => Arc::new(
            KafkaSink::new(
                name,
                &kafka.bootstrap_servers,
                &kafka.topic,
                &kafka.librdkafka_options,
            )
            .with_context(|| format!("{name}: cannot create the Kafka producer"))?,
        ),
    })
}
