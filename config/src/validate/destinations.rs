//! `on_success` / `on_failure` destinations: a named log, a Redis stream or a Kafka topic.

use super::connections::check_topic;
use super::{is_valid_name, Validator};
use crate::locate::FieldPath;
use crate::model::DestinationConfig;

/// Producer properties the broker sets itself for Kafka destinations.
const KAFKA_PRODUCER_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("metadata.broker.list", "set `bootstrap_servers` instead"),
];

impl Validator {
    pub(super) fn destination(&mut self, path: &FieldPath, destination: &DestinationConfig) {
        match destination {
            DestinationConfig::Log(log) => {
                if !is_valid_name(&log.name) {
                    self.error(
                        path.key("name"),
                        format!(
                            "invalid log name \"{}\": use 1 to 64 characters from A-Z, a-z, 0-9, \
                             `_` and `-`",
                            log.name
                        ),
                    );
                }
            }
            DestinationConfig::Redis(redis) => {
                self.redis_url(path.key("url"), &redis.url);
                self.not_empty(path.key("stream"), &redis.stream);
            }
            DestinationConfig::Kafka(kafka) => {
                self.bootstrap_servers(path.key("bootstrap_servers"), &kafka.bootstrap_servers);
                if let Err(message) = check_topic(&kafka.topic) {
                    self.error(path.key("topic"), message);
                }
                self.owned_options(
                    &path.key("librdkafka_options"),
                    &kafka.librdkafka_options,
                    KAFKA_PRODUCER_OWNED,
                );
            }
        }
    }
}
