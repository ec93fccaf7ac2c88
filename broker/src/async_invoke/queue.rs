//! Opening the configured queue backend.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use impulse_config::{QueueBackend, QueueConfig};
use impulse_connectors::contract::Queue;
use impulse_connectors::embedded::EmbeddedQueue;
use impulse_connectors::redis::RedisQueue;

/// Opens the async queue. `consumer` names this instance in the Redis consumer group (stable
/// across restarts, so a restarted instance resumes its own pending events at once);
/// `lease_timeout` is how long another instance waits before taking over an event leased by
/// an instance that died.
pub(crate) async fn open_queue(
    config: &QueueConfig,
    consumer: &str,
    lease_timeout: Duration,
) -> anyhow::Result<Arc<dyn Queue>> {
    match config.backend {
        QueueBackend::Embedded => {
            let queue = EmbeddedQueue::open(&config.data_dir).with_context(|| {
                format!(
                    "cannot open the embedded queue in {}",
                    config.data_dir.display()
                )
            })?;
            Ok(Arc::new(queue))
        }
        QueueBackend::Redis => {
            let redis = config
                .redis
                .as_ref()
                .context("queue.backend is redis but [queue.redis] is missing")?;
            let queue = RedisQueue::connect(&redis.url, &redis.stream, consumer, lease_timeout)
                .await
                .with_context(|| format!("cannot open the Redis queue stream {}", redis.stream))?;
            Ok(Arc::new(queue))
        }
    }
}
