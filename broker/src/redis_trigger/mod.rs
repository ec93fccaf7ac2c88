//! Redis triggers: Lambda's event-source-mapping semantics on a Redis stream consumer group.
//!
//! The source (in `connectors`) reads batches through the trigger's group, runs up to
//! `maximum_concurrency` of them at once, and acknowledges (`XACK`) only entries with a final
//! outcome. The batch policy is the Kafka trigger's (`stream_batch`): invoke under the
//! limiter, retry with backoff, bisect, honour partial batch responses, expire by age, and
//! write what fails for good to `on_failure` before acknowledging it. Attempt counts are the
//! entries' Redis delivery counts, so they survive restarts and moves between instances.

mod batch;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use impulse_config::{Config, TriggerConfig};
use impulse_connectors::redis::{RedisStreamSettings, RedisStreamSource};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::build_sink;
use crate::functions::Functions;
use crate::stream_batch::BatchSettings;

use self::batch::{BatchContext, RedisStream};

/// Whether each Redis trigger can reach its Redis, for `/readyz`.
pub(crate) type Connected = Vec<(String, Arc<AtomicBool>)>;

/// Starts every Redis trigger; `consumer` is this instance's consumer name. The tasks end
/// after `shutdown`, leaving unfinished entries pending (read again after a restart, or
/// claimed by another instance).
pub(crate) fn start(
    config: &Config,
    functions: &Arc<Functions>,
    consumer: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<(JoinSet<Result<(), String>>, Connected)> {
    let mut tasks = JoinSet::new();
    let mut connected = Vec::new();
    for (name, trigger) in &config.triggers {
        let TriggerConfig::Redis(redis) = trigger else {
            continue;
        };
        let function = functions
            .get(&redis.function)
            .with_context(|| format!("triggers.{name}.function: no such function"))?
            .clone();
        let timeout = config
            .functions
            .get(&redis.function)
            .map(|f| f.timeout)
            .unwrap_or_default();
        let on_failure = match &redis.on_failure {
            Some(destination) => {
                let path = format!("triggers.{name}.on_failure");
                Some(build_sink(destination, &config.queue.data_dir, &path)?)
            }
            None => None,
        };
        let settings =
            RedisStreamSettings::new(name, redis, consumer, redis.visibility_timeout_for(timeout));
        let source = RedisStreamSource::new(settings)
            .map_err(|e| anyhow::anyhow!("triggers.{name}: {}", e.message))?;
        let stream = RedisStream {
            stream: redis.stream.clone(),
            group: redis.consumer_group(name),
            attempts: source.attempts(),
        };
        let policy = BatchSettings {
            max_retry_attempts: redis.retry_limit(),
            max_record_age: redis.max_record_age,
            bisect: redis.bisect_batch_on_error,
            report_item_failures: redis.report_batch_item_failures,
        };
        let handler = Arc::new(BatchContext::new(
            name,
            stream,
            function,
            on_failure,
            policy,
            shutdown.clone(),
        ));
        connected.push((name.clone(), source.connected()));
        let stop = shutdown.clone();
        let trigger = name.clone();
        tasks.spawn(async move {
            source
                .run(handler, stop.cancelled_owned())
                .await
                .map_err(|err| format!("triggers.{trigger}: {}", err.message))
        });
    }
    Ok((tasks, connected))
}
