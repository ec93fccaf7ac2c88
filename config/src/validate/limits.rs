//! `[limits]`: the account's concurrency, and the functions' reservations within it; and
//! `[isolation]`'s user-id range.

use std::time::Duration;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{Config, LimitsScope, QueueBackend};

impl Validator {
    pub(super) fn limits(&mut self, config: &Config) {
        if config.limits.account_concurrency == 0 {
            self.error(
                FieldPath::keys(["limits", "account_concurrency"]),
                "must be greater than 0",
            );
        }
        self.duration(
            FieldPath::keys(["limits", "lease_time"]),
            config.limits.lease_time,
            Duration::from_secs(1),
            Duration::from_secs(600),
        );
        // Cluster limits live beside the shared queue: the instances sharing a queue stream are
        // the cluster, and its stream name keeps two clusters on one Redis apart.
        if config.limits.scope == LimitsScope::Cluster
            && (config.queue.backend != QueueBackend::Redis || config.queue.redis.is_none())
        {
            self.error(
                FieldPath::keys(["limits", "scope"]),
                "scope \"cluster\" requires the Redis queue ([queue] backend = \"redis\" with \
                 [queue.redis]), which the instances of the cluster share",
            );
        }
    }

    pub(super) fn isolation(&mut self, config: &Config) {
        let isolation = &config.isolation;
        if isolation.uid_count == 0 {
            self.error(
                FieldPath::keys(["isolation", "uid_count"]),
                "must be greater than 0",
            );
        }
        if isolation.first_uid == 0 {
            self.error(
                FieldPath::keys(["isolation", "first_uid"]),
                "must not be 0: the range would contain root",
            );
        }
        // The last id of the range must fit, and stay below (uid_t)-1, which means "no change"
        // to setuid.
        if u64::from(isolation.first_uid) + u64::from(isolation.uid_count) >= u64::from(u32::MAX) {
            self.error(
                FieldPath::keys(["isolation", "uid_count"]),
                "first_uid + uid_count must be below 4294967295",
            );
        }
    }

    pub(super) fn reserved_concurrency(&mut self, config: &Config) {
        let account = u64::from(config.limits.account_concurrency);
        let total: u64 = config
            .functions
            .values()
            .filter_map(|f| f.reserved_concurrency)
            .map(u64::from)
            .sum();
        if total <= account {
            return;
        }
        // Report it once, at the function whose reservation crosses the limit.
        let mut running = 0;
        for (name, function) in &config.functions {
            running += u64::from(function.reserved_concurrency.unwrap_or(0));
            if running > account {
                self.error(
                    FieldPath::keys(["functions", name, "reserved_concurrency"]),
                    format!(
                        "reserved concurrency of all functions ({total}) exceeds \
                         limits.account_concurrency ({account})"
                    ),
                );
                return;
            }
        }
    }
}
