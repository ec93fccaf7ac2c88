//! The running stream and schedule triggers, each stoppable on its own, so that a reload
//! touches only the triggers it changes.
//!
//! A Kafka or Redis trigger is restarted when its configuration or its function's changed (it
//! holds its function's stack); an unchanged one keeps running untouched, so a Kafka consumer
//! keeps its partitions (no rebalance). Stopping a trigger is its source's shutdown: attempts
//! under way finish, acknowledged records are committed, the rest stays uncommitted and is
//! read again by the trigger's next consumer (at least once, as after a restart). Schedules
//! share one state, so they restart together when any of them changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use impulse_config::{Config, TriggerConfig};
use impulse_connectors::contract::Queue;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::async_invoke::Completions;
use crate::functions::Functions;
use crate::redis_trigger::Connected;

/// One running trigger (or the group of schedules).
struct Handle {
    stop: CancellationToken,
    /// Cancelled once the trigger's task has ended.
    done: CancellationToken,
}

impl Handle {
    /// A handle whose task ends after `stop` (or the broker's shutdown, its parent).
    fn new(parent: &CancellationToken) -> (Self, tokio_util::sync::DropGuard) {
        let done = CancellationToken::new();
        let guard = done.clone().drop_guard();
        let handle = Self {
            stop: parent.child_token(),
            done,
        };
        (handle, guard)
    }

    /// Stops the trigger and waits until its task has ended.
    async fn stop(self) {
        self.stop.cancel();
        self.done.cancelled().await;
    }
}

/// What [`Triggers::apply`] changed, and what it could not.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) changes: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// The stream and schedule triggers of the running broker.
pub(crate) struct Triggers {
    /// The broker's shutdown: every trigger stops with it.
    shutdown: CancellationToken,
    queue: Arc<dyn Queue>,
    completions: Arc<Completions>,
    /// This instance's consumer name.
    instance: String,
    kafka: BTreeMap<String, Handle>,
    redis: BTreeMap<String, Handle>,
    schedules: Option<Handle>,
    /// The Kafka sources' tasks: one ending with an error stops the broker.
    pub(crate) kafka_tasks: JoinSet<Result<(), String>>,
    /// The Redis sources' and the schedules' tasks.
    other_tasks: JoinSet<()>,
    /// Whether each Redis trigger reaches its Redis.
    connected: BTreeMap<String, Arc<AtomicBool>>,
    /// The same, as `/readyz` reads it.
    sources: Arc<Mutex<Connected>>,
}

impl Triggers {
    pub(crate) fn new(
        shutdown: CancellationToken,
        queue: Arc<dyn Queue>,
        completions: Arc<Completions>,
        instance: String,
        sources: Arc<Mutex<Connected>>,
    ) -> Self {
        Self {
            shutdown,
            queue,
            completions,
            instance,
            kafka: BTreeMap::new(),
            redis: BTreeMap::new(),
            schedules: None,
            kafka_tasks: JoinSet::new(),
            other_tasks: JoinSet::new(),
            connected: BTreeMap::new(),
            sources,
        }
    }

    /// Starts every stream and schedule trigger of `config`.
    ///
    /// # Errors
    ///
    /// The first trigger that cannot start.
    pub(crate) async fn start_all(
        &mut self,
        config: &Config,
        functions: &Arc<Functions>,
    ) -> anyhow::Result<()> {
        if schedules(config).next().is_some() {
            self.start_schedules(config).await?;
        }
        for (name, trigger) in &config.triggers {
            match trigger {
                TriggerConfig::Kafka(_) => self.start_kafka(name, config, functions).await?,
                TriggerConfig::Redis(_) => self.start_redis(name, config, functions)?,
                TriggerConfig::Http(_) | TriggerConfig::Schedule(_) => {}
            }
        }
        self.publish_connected();
        Ok(())
    }

    /// Moves the running triggers from `old` to `new`: stops those removed or changed
    /// (`kept`: the functions whose stack carried over; a trigger of any other function is
    /// changed), then starts those added or changed. A trigger that cannot start is reported
    /// in the warnings and left stopped; the next reload tries it again.
    pub(crate) async fn apply(
        &mut self,
        old: &Config,
        new: &Config,
        kept: &BTreeSet<String>,
        functions: &Arc<Functions>,
    ) -> Applied {
        let mut applied = Applied::default();
        let outdated = |name: &str| {
            let now = new.triggers.get(name);
            now != old.triggers.get(name)
                || now.is_none_or(|trigger| !kept.contains(trigger.function_name()))
        };
        let stale: Vec<String> = self
            .kafka
            .keys()
            .chain(self.redis.keys())
            .filter(|name| outdated(name))
            .cloned()
            .collect();
        let stops = stale.iter().filter_map(|name| {
            self.kafka
                .remove(name)
                .or_else(|| self.redis.remove(name))
                .map(Handle::stop)
        });
        futures::future::join_all(stops.collect::<Vec<_>>()).await;
        for name in &stale {
            self.connected.remove(name);
            if !new.triggers.contains_key(name) {
                applied.changes.push(format!("trigger {name}: removed"));
            }
        }

        let schedules_changed = schedules(old).ne(schedules(new));
        if schedules_changed || self.schedules.is_none() {
            if let Some(handle) = self.schedules.take() {
                handle.stop().await;
            }
            if schedules(new).next().is_some() {
                if let Err(err) = self.start_schedules(new).await {
                    applied
                        .warnings
                        .push(format!("schedules did not start: {err:#}"));
                }
            }
            if schedules_changed {
                applied.changes.push("schedules: restarted".to_owned());
            }
        }

        for (name, trigger) in &new.triggers {
            let started = match trigger {
                TriggerConfig::Kafka(_) if !self.kafka.contains_key(name) => {
                    Some(self.start_kafka(name, new, functions).await)
                }
                TriggerConfig::Redis(_) if !self.redis.contains_key(name) => {
                    Some(self.start_redis(name, new, functions))
                }
                _ => None,
            };
            match started {
                None => {}
                Some(Ok(())) => applied.changes.push(if old.triggers.contains_key(name) {
                    format!("trigger {name}: restarted")
                } else {
                    format!("trigger {name}: added")
                }),
                Some(Err(err)) => applied
                    .warnings
                    .push(format!("trigger {name} did not start: {err:#}")),
            }
        }
        self.publish_connected();
        applied
    }

    /// Waits until every trigger's task has ended (after the broker's shutdown).
    pub(crate) async fn drain(&mut self) {
        while self.kafka_tasks.join_next().await.is_some() {}
        while self.other_tasks.join_next().await.is_some() {}
    }

    async fn start_kafka(
        &mut self,
        name: &str,
        config: &Config,
        functions: &Arc<Functions>,
    ) -> anyhow::Result<()> {
        let (handle, guard) = Handle::new(&self.shutdown);
        let mut source =
            crate::kafka_trigger::start(&only(config, name), functions, &handle.stop).await?;
        self.kafka_tasks.spawn(async move {
            let _done = guard;
            match source.join_next().await {
                Some(Ok(ended)) => ended,
                Some(Err(err)) => Err(format!("a Kafka source task failed: {err}")),
                None => Ok(()),
            }
        });
        self.kafka.insert(name.to_owned(), handle);
        Ok(())
    }

    fn start_redis(
        &mut self,
        name: &str,
        config: &Config,
        functions: &Arc<Functions>,
    ) -> anyhow::Result<()> {
        let (handle, guard) = Handle::new(&self.shutdown);
        let (mut source, connected) = crate::redis_trigger::start(
            &only(config, name),
            functions,
            &self.instance,
            &handle.stop,
        )?;
        self.connected.extend(connected);
        self.other_tasks.spawn(async move {
            let _done = guard;
            while let Some(ended) = source.join_next().await {
                if let Ok(Err(err)) = ended {
                    tracing::error!(error = %err, "A Redis trigger stopped.");
                }
            }
        });
        self.redis.insert(name.to_owned(), handle);
        Ok(())
    }

    async fn start_schedules(&mut self, config: &Config) -> anyhow::Result<()> {
        let (handle, guard) = Handle::new(&self.shutdown);
        let mut tasks = crate::schedule_trigger::start(
            config,
            self.queue.clone(),
            self.completions.clone(),
            &self.instance,
            &handle.stop,
        )
        .await?;
        self.other_tasks.spawn(async move {
            let _done = guard;
            while tasks.join_next().await.is_some() {}
        });
        self.schedules = Some(handle);
        Ok(())
    }

    fn publish_connected(&self) {
        *self.sources.lock().unwrap_or_else(PoisonError::into_inner) = self
            .connected
            .iter()
            .map(|(name, connected)| (name.clone(), connected.clone()))
            .collect();
    }
}

/// `config` with trigger `name` as its only trigger, to start that trigger alone.
fn only(config: &Config, name: &str) -> Config {
    let mut only = config.clone();
    only.triggers.retain(|trigger, _| trigger == name);
    only
}

/// The schedule triggers of `config`.
fn schedules(config: &Config) -> impl Iterator<Item = (&String, &TriggerConfig)> {
    config
        .triggers
        .iter()
        .filter(|(_, trigger)| matches!(trigger, TriggerConfig::Schedule(_)))
}
