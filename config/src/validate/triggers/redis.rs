//! Redis triggers: the stream, group, starting position, batching, concurrency, visibility
//! timeout, retries, record age and the failure destination.

use std::time::Duration;

use crate::locate::FieldPath;
use crate::model::{
    Config, DestinationConfig, RedisTriggerConfig, StartingPosition, TriggerConfig,
};
use crate::validate::connections::same_redis;
use crate::validate::Validator;

impl Validator {
    /// `function_timeout`: the longest timeout of the function the trigger invokes, if known.
    pub(super) fn redis_trigger(
        &mut self,
        path: &FieldPath,
        redis: &RedisTriggerConfig,
        function_timeout: Option<Duration>,
    ) {
        self.redis_url(path.key("url"), &redis.url);
        self.not_empty(path.key("stream"), &redis.stream);
        if redis.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            self.error(path.key("group"), "must not be empty when set");
        }
        match (redis.starting_position, redis.starting_timestamp) {
            (StartingPosition::AtTimestamp, None) => self.error(
                path.key("starting_timestamp"),
                "required when starting_position = \"at_timestamp\"",
            ),
            (StartingPosition::Latest | StartingPosition::Earliest, Some(_)) => self.error(
                path.key("starting_timestamp"),
                "only allowed with starting_position = \"at_timestamp\"",
            ),
            _ => {}
        }
        self.range_u32(path.key("batch_size"), redis.batch_size, 1, 10_000);
        self.duration(
            path.key("batch_window"),
            redis.batch_window,
            Duration::ZERO,
            Duration::from_secs(300),
        );
        self.range_u32(
            path.key("maximum_concurrency"),
            redis.maximum_concurrency,
            1,
            1000,
        );
        if let Some(timeout) = redis.visibility_timeout {
            self.duration(
                path.key("visibility_timeout"),
                timeout,
                Duration::from_secs(1),
                Duration::from_secs(12 * 3600),
            );
            // Entries still being processed would be claimed and delivered again by another
            // instance (SQS's advice: at least the function's timeout).
            if let Some(function_timeout) = function_timeout.filter(|t| timeout <= *t) {
                self.error(
                    path.key("visibility_timeout"),
                    format!(
                        "must exceed the function's timeout ({}), or entries still being \
                         processed are claimed and delivered again; unset, it is the timeout \
                         plus 60s",
                        humantime::format_duration(function_timeout)
                    ),
                );
            }
        }
        if let Some(retries) = redis.max_retry_attempts {
            self.range_u32(path.key("max_retry_attempts"), retries, 0, 10_000);
        }
        if let Some(age) = redis.max_record_age {
            self.duration(
                path.key("max_record_age"),
                age,
                Duration::from_secs(60),
                Duration::from_secs(604_800),
            );
        }
        if let Some(destination) = &redis.on_failure {
            let dest_path = path.key("on_failure");
            self.destination(&dest_path, destination);
            if let DestinationConfig::Redis(dest) = destination {
                if dest.stream == redis.stream && same_redis(&dest.url, &redis.url) {
                    self.error(
                        dest_path.key("stream"),
                        format!(
                            "\"{}\" is this trigger's source stream on the same server; \
                             failed entries would be consumed again",
                            dest.stream
                        ),
                    );
                }
            }
        }
    }

    /// Two Redis triggers reading one stream through one group would split its entries
    /// between them, each seeing only part of the stream.
    pub(super) fn redis_groups_unique(&mut self, config: &Config) {
        let redis: Vec<(&String, &RedisTriggerConfig)> = config
            .triggers
            .iter()
            .filter_map(|(name, trigger)| match trigger {
                TriggerConfig::Redis(redis) => Some((name, redis)),
                _ => None,
            })
            .collect();
        for (i, (name, trigger)) in redis.iter().enumerate() {
            let group = trigger.consumer_group(name);
            let earlier = redis[..i].iter().find(|(other_name, other)| {
                other.stream == trigger.stream
                    && other.consumer_group(other_name) == group
                    && same_redis(&other.url, &trigger.url)
            });
            if let Some((other, _)) = earlier {
                self.error(
                    FieldPath::keys(["triggers", name, "group"]),
                    format!(
                        "\"{group}\" on stream \"{}\" is also read by triggers.{}; each trigger \
                         needs a group of its own, or they split the entries",
                        trigger.stream,
                        FieldPath::root().key(other)
                    ),
                );
            }
        }
    }
}
