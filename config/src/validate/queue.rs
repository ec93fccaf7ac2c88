//! `[queue]`: the embedded queue's directory and the optional Redis backend.

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{Config, QueueBackend};

impl Validator {
    pub(super) fn queue(&mut self, config: &Config) {
        let queue = &config.queue;
        let path = FieldPath::root().key("queue");
        if queue.data_dir.as_os_str().is_empty() {
            self.error(path.key("data_dir"), "must not be empty");
        }
        match &queue.redis {
            Some(redis) => {
                let path = path.key("redis");
                self.redis_url(path.key("url"), &redis.url);
                self.not_empty(path.key("stream"), &redis.stream);
            }
            None if queue.backend == QueueBackend::Redis => self.error(
                path.key("backend"),
                "backend \"redis\" requires a [queue.redis] section with a url",
            ),
            None => {}
        }
    }
}
