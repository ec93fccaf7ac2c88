//! `[triggers.<name>]`: names and function references of every trigger, HTTP paths unique
//! across triggers, then each type's own rules.

mod http;
mod kafka;
mod redis;
mod schedule;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{Config, TriggerConfig};

impl Validator {
    pub(super) fn triggers(
        &mut self,
        config: &Config,
        broken_functions: &BTreeSet<String>,
        broken_triggers: &BTreeMap<String, String>,
    ) {
        for (name, function) in broken_triggers {
            let function = crate::model::split_qualifier(function).0;
            if !config.functions.contains_key(function) && !broken_functions.contains(function) {
                self.error(
                    FieldPath::keys(["triggers", name, "function"]),
                    format!("unknown function \"{function}\""),
                );
            }
        }
        let mut http_paths: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, trigger) in &config.triggers {
            let path = FieldPath::keys(["triggers", name]);
            self.name(&path, "trigger", name);
            let function = trigger.function_name();
            match (config.functions.get(function), trigger.qualifier()) {
                (None, _) if !broken_functions.contains(function) => self.error(
                    path.key("function"),
                    format!("unknown function \"{function}\""),
                ),
                (Some(settings), Some(qualifier)) if !settings.has_qualifier(qualifier) => self
                    .error(
                        path.key("function"),
                        format!("function \"{function}\" has no version or alias \"{qualifier}\""),
                    ),
                _ => {}
            }
            match trigger {
                TriggerConfig::Http(http) => {
                    if let Some(route) = self.http(&path, http) {
                        http_paths.entry(route).or_default().push(name);
                    }
                    if let Some(webhook) = &http.webhook {
                        self.webhook(&path.key("webhook"), name, webhook);
                    }
                }
                TriggerConfig::Schedule(schedule) => {
                    self.schedule(&path, schedule, config.queue.backend);
                }
                TriggerConfig::Kafka(kafka) => self.kafka(&path, kafka),
                TriggerConfig::Redis(redis) => {
                    // Any version may run an entry (an alias routes between them).
                    let longest = config.functions.get(function).and_then(|f| {
                        f.versions
                            .values()
                            .filter_map(|v| v.timeout)
                            .chain([f.timeout])
                            .max()
                    });
                    self.redis_trigger(&path, redis, longest);
                }
            }
        }
        self.redis_groups_unique(config);
        for names in http_paths.values().filter(|names| names.len() > 1) {
            for name in names {
                let others: Vec<String> = names
                    .iter()
                    .filter(|other| *other != name)
                    .map(|other| format!("triggers.{}", FieldPath::root().key(other)))
                    .collect();
                let path = match config.triggers.get(*name) {
                    Some(TriggerConfig::Http(http)) => http.path.as_str(),
                    _ => "",
                };
                self.error(
                    FieldPath::keys(["triggers", name, "path"]),
                    format!(
                        "duplicate HTTP path \"{path}\" (also used by {})",
                        others.join(", ")
                    ),
                );
            }
        }
    }
}
