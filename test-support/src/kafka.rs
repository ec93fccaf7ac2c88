//! Topics on the Kafka broker of `scripts/services.sh`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

/// Bound on the broker's topic creation.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates `topic` with `partitions` partitions on `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_with(bootstrap, topic, partitions, &[]).await;
}

/// [`create_topic`] with topic configs, e.g. `("cleanup.policy", "compact")`.
pub async fn create_topic_with(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(CREATE_TIMEOUT));
    let new_topic = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |new_topic, (key, value)| new_topic.set(key, value),
    );
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .expect("CreateTopics");
    for result in results {
        result.expect("topic created");
    }
}
