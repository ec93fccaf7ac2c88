//! Schedule triggers: each tick's event goes onto the durable async queue, and its ack waits for
//! the async dispatcher's final outcome.
//!
//! On the embedded queue one instance owns the schedules, and their state is a file in the data
//! directory. On the Redis queue, which instances share, every instance runs every schedule and
//! each tick is claimed and queued in one atomic step on that Redis ([`RedisSchedules`]), so
//! exactly one instance queues it; the state record is shared there too, so catch-up after all
//! instances were down starts from the newest tick any of them handled.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use impulse_config::{Config, QueueBackend, ScheduleTriggerConfig, TriggerConfig};
use impulse_connectors::contract::{Ack, Queue, QueueError, QueuedEvent};
use impulse_connectors::redis::RedisSchedules;
use impulse_connectors::schedule::{
    FileScheduleState, Handled, ScheduleSource, ScheduleState, TickHandler,
};
use impulse_connectors::telemetry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::Completions;

/// How long a tick's claim outlives the tick (plus the schedule's flexible window): an
/// instance held up for longer (a Redis outage, a paused process), or the whole cluster down
/// for longer after a crash between a claim and its record, may queue the tick once more,
/// with the same id. Costs one small key per tick for this long (86,400 for `rate(1 second)`).
const CLAIM_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Starts every schedule trigger. Returns their tasks, which end after `shutdown`. `instance`
/// names this instance in tick claims (the queue's consumer name: unique and stable).
pub(crate) async fn start(
    config: &Config,
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
    instance: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinSet<()>> {
    let mut tasks = JoinSet::new();
    let schedules: Vec<_> = config
        .triggers
        .iter()
        .filter_map(|(name, trigger)| match trigger {
            TriggerConfig::Schedule(schedule) => Some((name.clone(), schedule.clone())),
            _ => None,
        })
        .collect();
    if schedules.is_empty() {
        return Ok(tasks);
    }
    let shared = match (&config.queue.backend, &config.queue.redis) {
        (QueueBackend::Redis, Some(redis)) => {
            let schedules = RedisSchedules::connect(&redis.url, &redis.stream, instance)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the schedule claims on the Redis queue stream {}",
                        redis.stream
                    )
                })?;
            Some(Arc::new(schedules))
        }
        _ => None,
    };
    let state: Arc<dyn ScheduleState> = match &shared {
        Some(shared) => shared.clone(),
        None => Arc::new(
            FileScheduleState::open(&config.queue.data_dir).with_context(|| {
                format!(
                    "cannot open the schedule state in {}",
                    config.queue.data_dir.display()
                )
            })?,
        ),
    };
    for (name, schedule) in schedules {
        let function = schedule.function.clone();
        let handler: Arc<dyn TickHandler> = match &shared {
            Some(shared) => Arc::new(ClaimTicks {
                schedules: shared.clone(),
                ttl: claim_ttl(&schedule),
            }),
            None => Arc::new(QueueTicks {
                queue: queue.clone(),
                completions: completions.clone(),
            }),
        };
        let source = ScheduleSource::new(name.clone(), schedule, state.clone());
        let stop = shutdown.clone().cancelled_owned();
        tasks.spawn(async move {
            if let Err(err) = source.run(handler, stop).await {
                tracing::error!(trigger = %name, function, error = %err, "Schedule stopped.");
            }
        });
    }
    Ok(tasks)
}

fn claim_ttl(schedule: &ScheduleTriggerConfig) -> Duration {
    CLAIM_TTL + schedule.flexible_window.unwrap_or_default()
}

/// The schedules' [`TickHandler`]: queues each tick's event durably and keeps its ack for the
/// async dispatcher, which resolves it when the event's outcome is final.
struct QueueTicks {
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
}

impl TickHandler for QueueTicks {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        Box::pin(async move {
            let id = event.id.clone();
            let function = event.function.clone();
            // Registered before the enqueue: the dispatcher may finish the event before the
            // enqueue call returns here, and its outcome must find the ack.
            self.completions.register(id.clone(), ack);
            if let Err(err) = self.queue.enqueue(event).await {
                self.completions.forget(&id);
                return Err(err);
            }
            // Metrics are per function; a schedule may name `function:alias`.
            telemetry::async_event_enqueued(impulse_config::split_qualifier(&function).0);
            Ok(Handled::Queued)
        })
    }
}

/// The schedules' [`TickHandler`] on the shared Redis queue: claims each tick and queues its
/// event in one atomic step, so that of all instances exactly one queues it.
///
/// The ack is dropped rather than kept for the dispatcher: any instance may dispatch the
/// event, and only that one learns its outcome, so an ack kept here might never resolve. No
/// schedule needs it, since `overlap = "skip"` is refused with this queue (validation).
struct ClaimTicks {
    schedules: Arc<RedisSchedules>,
    ttl: Duration,
}

impl TickHandler for ClaimTicks {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<Handled, QueueError>> {
        drop(ack);
        Box::pin(async move {
            let handled = self.schedules.claim_and_enqueue(&event, self.ttl).await?;
            if handled == Handled::Queued {
                telemetry::async_event_enqueued(impulse_config::split_qualifier(&event.function).0);
            }
            Ok(handled)
        })
    }
}
