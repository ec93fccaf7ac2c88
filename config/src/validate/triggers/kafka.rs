//! Kafka triggers: topics, starting position, batching, retries, the failure destination,
//! the attempts topic, broker-owned consumer options and the record filter.

use std::time::Duration;

use crate::locate::FieldPath;
use crate::model::{DestinationConfig, KafkaTriggerConfig, StartingPosition};
use crate::validate::connections::{check_topic, same_cluster};
use crate::validate::Validator;

/// Consumer properties the broker sets itself, and why.
const KAFKA_CONSUMER_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `bootstrap_servers` instead"),
    ("metadata.broker.list", "set `bootstrap_servers` instead"),
    ("group.id", "set `group_id` instead"),
    (
        "enable.auto.commit",
        "the broker commits offsets itself, only after the function succeeds (at-least-once)",
    ),
    (
        "auto.commit.interval.ms",
        "the broker commits offsets itself, only after the function succeeds (at-least-once)",
    ),
    (
        "enable.auto.offset.store",
        "the broker stores offsets itself, only for processed records (at-least-once)",
    ),
    ("auto.offset.reset", "set `starting_position` instead"),
    (
        "enable.partition.eof",
        "the broker's consumer loop depends on its setting",
    ),
];

impl Validator {
    pub(super) fn kafka(&mut self, path: &FieldPath, kafka: &KafkaTriggerConfig) {
        self.bootstrap_servers(path.key("bootstrap_servers"), &kafka.bootstrap_servers);
        if kafka.topics.is_empty() {
            self.error(path.key("topics"), "must list at least one topic");
        }
        for (i, topic) in kafka.topics.iter().enumerate() {
            if let Err(message) = check_topic(topic) {
                self.error(path.key("topics").index(i), message);
            }
        }
        if kafka
            .group_id
            .as_deref()
            .is_some_and(|g| g.trim().is_empty())
        {
            self.error(path.key("group_id"), "must not be empty when set");
        }
        match (kafka.starting_position, kafka.starting_timestamp) {
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
        self.range_u32(path.key("batch_size"), kafka.batch_size, 1, 10_000);
        self.duration(
            path.key("batch_window"),
            kafka.batch_window,
            Duration::ZERO,
            Duration::from_secs(300),
        );
        if let Some(retries) = kafka.max_retry_attempts {
            self.range_u32(path.key("max_retry_attempts"), retries, 0, 10_000);
        }
        if let Some(age) = kafka.max_record_age {
            self.duration(
                path.key("max_record_age"),
                age,
                Duration::from_secs(60),
                Duration::from_secs(604_800),
            );
        }
        if let Some(destination) = &kafka.on_failure {
            let dest_path = path.key("on_failure");
            self.destination(&dest_path, destination);
            if let DestinationConfig::Kafka(dest) = destination {
                if kafka.topics.contains(&dest.topic)
                    && same_cluster(&kafka.bootstrap_servers, &dest.bootstrap_servers)
                {
                    self.error(
                        dest_path.key("topic"),
                        format!(
                            "\"{}\" is a source topic of this trigger on the same cluster; \
                             failed records would be consumed again",
                            dest.topic
                        ),
                    );
                }
            }
        }
        if let Some(topic) = &kafka.attempts_topic {
            self.attempts_topic(path.key("attempts_topic"), kafka, topic);
        }
        self.owned_options(
            &path.key("librdkafka_options"),
            &kafka.librdkafka_options,
            KAFKA_CONSUMER_OWNED,
        );
        self.kafka_filter(&path.key("filter"), kafka);
    }

    /// `attempts_topic`: a valid topic name on the trigger's cluster that holds nothing else
    /// the trigger reads or writes (its records are compacted by key, and a source topic would
    /// be consumed as events).
    fn attempts_topic(&mut self, path: FieldPath, kafka: &KafkaTriggerConfig, topic: &str) {
        if let Err(message) = check_topic(topic) {
            self.error(path, message);
            return;
        }
        if kafka.topics.iter().any(|t| t == topic) {
            self.error(
                path,
                format!(
                    "\"{topic}\" is a source topic of this trigger; attempt counts would be \
                     consumed as records"
                ),
            );
        } else if let Some(DestinationConfig::Kafka(dest)) = &kafka.on_failure {
            if dest.topic == topic
                && same_cluster(&kafka.bootstrap_servers, &dest.bootstrap_servers)
            {
                self.error(
                    path,
                    format!(
                        "\"{topic}\" is this trigger's on_failure topic on the same cluster; \
                         use a separate, compacted topic for attempt counts"
                    ),
                );
            }
        }
    }

    /// Filter patterns: every problem the one grammar ([`crate::filter`]) finds, below
    /// `filter`.
    fn kafka_filter(&mut self, path: &FieldPath, kafka: &KafkaTriggerConfig) {
        if let Err(err) = kafka.filter.parse() {
            for problem in err.problems() {
                self.error(path.join(&problem.path), problem.message.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kafka_filters() {
        let config = |filter: &str| {
            format!(
                r#"
[functions.f]
target = {{ type = "http", endpoint = "http://localhost:1" }}

[triggers.k]
type = "kafka"
function = "f"
bootstrap_servers = "k:9092"
topics = ["t"]
filter = {filter}
"#
            )
        };
        let env: std::collections::HashMap<String, String> = Default::default();
        let good = config(
            r#"[
  { value = { device_ID = [{ prefix = "AB" }], reading = [{ numeric = [">", 0, "<=", 5] }] } },
  { key = ["order-42", { anything-but = { prefix = "test-" } }] },
  { headers = { tenant = ["acme", { exists = true }], ctx = { region = [{ anything-but = ["eu", 1] }] } } },
]"#,
        );
        let parsed = crate::parse(&good, crate::Format::Toml, "ok.toml", &env).expect("valid");
        let crate::TriggerConfig::Kafka(k) = &parsed.triggers["k"] else {
            panic!("kafka")
        };
        assert_eq!(k.filter.patterns().len(), 3);
        assert_eq!(
            k.filter.patterns()[0]["value"]["device_ID"][0]["prefix"],
            serde_json::json!("AB")
        );

        let bad = config(
            r#"[
  { value = { a = [{ prefix = 1 }], b = [{ numeric = ["~", "x"] }], c = [] } },
  { body = ["x"] },
  { headers = { h = [{ suffix = "x" }] } },
  { key = [{ anything-but = {} }] },
  { key = "x" },
  { key = ["a"] },
]"#,
        );
        let errors = crate::parse(&bad, crate::Format::Toml, "bad.toml", &env)
            .expect_err("invalid filters")
            .0
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>();
        let expected = [
            "triggers.k.filter: at most 5 patterns, found 6",
            "triggers.k.filter[0].value.a[0].prefix: must be a string",
            "triggers.k.filter[0].value.b[0].numeric[0]: must be one of",
            "triggers.k.filter[0].value.b[0].numeric[1]: must be a number",
            "triggers.k.filter[0].value.c: must list at least one value or matcher",
            "triggers.k.filter[1].body: unknown field `body`",
            "triggers.k.filter[2].headers.h[0].suffix: unknown matcher `suffix`",
            "triggers.k.filter[3].key[0].anything-but: only `{\"prefix\": …}`",
            "triggers.k.filter[4].key: must be a list of values and matchers",
        ];
        for needle in expected {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "no error containing {needle:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }
}
