//! Redis triggers: the stream, group, batching, retries and the failure destination.

use crate::locate::FieldPath;
use crate::model::{DestinationConfig, RedisTriggerConfig};
use crate::validate::connections::same_redis;
use crate::validate::Validator;

impl Validator {
    pub(super) fn redis_trigger(&mut self, path: &FieldPath, redis: &RedisTriggerConfig) {
        self.redis_url(path.key("url"), &redis.url);
        self.not_empty(path.key("stream"), &redis.stream);
        if redis.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            self.error(path.key("group"), "must not be empty when set");
        }
        self.range_u32(path.key("batch_size"), redis.batch_size, 1, 10_000);
        if let Some(retries) = redis.max_retry_attempts {
            self.range_u32(path.key("max_retry_attempts"), retries, 0, 10_000);
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
}
