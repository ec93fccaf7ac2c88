//! Schedule triggers: each tick's event goes onto the durable async queue, and its ack waits for
//! the async dispatcher's final outcome.

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use impulse_config::{Config, TriggerConfig};
use impulse_connectors::contract::{Ack, Queue, QueueError, QueuedEvent};
use impulse_connectors::schedule::{FileScheduleState, ScheduleSource, TickHandler};
use impulse_connectors::telemetry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::Completions;

/// Starts every schedule trigger. Returns their tasks, which end after `shutdown`.
pub(crate) fn start(
    config: &Config,
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
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
    let state = FileScheduleState::open(&config.queue.data_dir).with_context(|| {
        format!(
            "cannot open the schedule state in {}",
            config.queue.data_dir.display()
        )
    })?;
    let state = Arc::new(state);
    let handler: Arc<dyn TickHandler> = Arc::new(QueueTicks { queue, completions });
    for (name, schedule) in schedules {
        let function = schedule.function.clone();
        let source = ScheduleSource::new(name.clone(), schedule, state.clone());
        let handler = handler.clone();
        let stop = shutdown.clone().cancelled_owned();
        tasks.spawn(async move {
            if let Err(err) = source.run(handler, stop).await {
                tracing::error!(trigger = %name, function, error = %err, "Schedule stopped.");
            }
        });
    }
    Ok(tasks)
}

/// The schedules' [`TickHandler`]: queues each tick's event durably and keeps its ack for the
/// async dispatcher, which resolves it when the event's outcome is final.
struct QueueTicks {
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
}

impl TickHandler for QueueTicks {
    fn handle(&self, event: QueuedEvent, ack: Ack) -> BoxFuture<'_, Result<(), QueueError>> {
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
            telemetry::async_event_enqueued(&function);
            Ok(())
        })
    }
}
