//! Schedule triggers: their ticks become async events on the durable queue.

use std::sync::Arc;

use anyhow::Context as _;
use futures::FutureExt as _;
use impulse_config::{Config, TriggerConfig};
use impulse_connectors::contract::{Event, Queue, QueuedEvent, Source};
use impulse_connectors::schedule::{FileScheduleState, ScheduleSource};
use impulse_connectors::telemetry;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::Completions;

/// Ticks waiting to be queued; small, so a slow queue holds the schedules back.
const HANDOFF_CAPACITY: usize = 16;

/// Starts every schedule trigger and the task that queues their events. Returns the tasks,
/// which end after `shutdown`.
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
    let (tx, rx) = mpsc::channel(HANDOFF_CAPACITY);
    for (name, schedule) in schedules {
        let function = schedule.function.clone();
        let source = Box::new(ScheduleSource::new(name.clone(), schedule, state.clone()));
        let stop = shutdown.clone().cancelled_owned().boxed();
        let tx = tx.clone();
        tasks.spawn(async move {
            if let Err(err) = source.run(tx, stop).await {
                tracing::error!(trigger = %name, function, error = %err, "Schedule stopped.");
            }
        });
    }
    drop(tx);
    tasks.spawn(queue_ticks(rx, config.clone(), queue, completions));
    Ok(tasks)
}

/// Queues each tick's event durably; the tick's ack resolves when its invocation is final.
async fn queue_ticks(
    mut rx: mpsc::Receiver<Event>,
    config: Config,
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
) {
    while let Some(event) = rx.recv().await {
        let trigger = event.metadata.trigger.clone();
        let Some(TriggerConfig::Schedule(schedule)) = config.triggers.get(&trigger) else {
            continue; // only schedules send here
        };
        let id = event.id.to_string();
        let queued = QueuedEvent::new(
            id.clone(),
            schedule.function.clone(),
            trigger.clone(),
            event.payload,
        );
        match queue.enqueue(queued).await {
            Ok(()) => {
                telemetry::async_event_enqueued(&schedule.function);
                completions.register(id, event.ack);
            }
            Err(err) => {
                // Dropping the ack unresolved tells the source the tick did not happen.
                tracing::error!(trigger, id, error = %err, "Cannot queue a schedule tick.");
            }
        }
    }
}
