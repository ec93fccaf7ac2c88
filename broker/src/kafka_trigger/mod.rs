//! Kafka triggers: Lambda's event-source-mapping semantics on top of the Kafka source.
//!
//! The source (in `connectors`) batches records per partition, keeps one batch in flight per
//! partition (or per key), and commits only up to the lowest record without a final ack. This
//! module decides each batch's fate: invoke under the limiter; on failure retry with backoff
//! while the partition waits (bisecting, or honouring a partial batch response); once retries
//! or the records' age run out, write each failed record to `on_failure` — and only when the
//! write is confirmed, ack the records so the partition moves on.

mod batch;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context as _;
use impulse_config::{Config, TriggerConfig};
use impulse_connectors::kafka::{AttemptStore, KafkaSource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::build_sink;
use crate::functions::Functions;

use self::batch::BatchContext;

/// Starts every Kafka trigger. The tasks end after `shutdown`: in-flight batches stop between
/// attempts, leaving their records unacknowledged (redelivered after a restart).
///
/// Each partition's task in the source runs the trigger's [`BatchContext`] on its batches
/// itself, so partitions run concurrently (bounded by the function's limits) with no hand-off
/// between tasks.
pub(crate) async fn start(
    config: &Config,
    functions: &Arc<Functions>,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinSet<Result<(), String>>> {
    let mut tasks = JoinSet::new();
    for (name, trigger) in &config.triggers {
        let TriggerConfig::Kafka(kafka) = trigger else {
            continue;
        };
        let function = functions
            .get(&kafka.function)
            .with_context(|| format!("triggers.{name}.function: no such function"))?
            .clone();
        let on_failure = match &kafka.on_failure {
            Some(destination) => {
                let path = format!("triggers.{name}.on_failure");
                Some(build_sink(destination, &config.queue.data_dir, &path)?)
            }
            None => None,
        };
        let attempts = AttemptStore::open(&config.queue.data_dir, name, kafka)
            .await
            .with_context(|| format!("triggers.{name}: cannot open the attempt counts"))?;
        let handler = Arc::new(BatchContext::kafka(
            name,
            kafka,
            function,
            on_failure,
            attempts,
            shutdown.clone(),
        ));
        let source = KafkaSource::new(name, kafka)
            .with_context(|| format!("triggers.{name}: cannot create the Kafka consumer"))?;
        let stop = shutdown.clone();
        let trigger = name.clone();
        tasks.spawn(async move {
            source
                .run(handler, stop.cancelled_owned())
                .await
                .map_err(|err| format!("triggers.{trigger}: {}", err.message))
        });
    }
    Ok(tasks)
}

/// Resolves with the first Kafka source that ended with an error; never, if none does.
pub(crate) async fn first_failure(tasks: &mut JoinSet<Result<(), String>>) -> String {
    while let Some(ended) = tasks.join_next().await {
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => return failure,
            Err(err) => return format!("a Kafka source task failed: {err}"),
        }
    }
    std::future::pending().await
}
