//! `[limits]`: the account's concurrency, and the functions' reservations within it; and
//! `[isolation]`'s user-id range.

use super::Validator;
use crate::locate::FieldPath;
use crate::model::Config;

impl Validator {
    pub(super) fn limits(&mut self, config: &Config) {
        if config.limits.account_concurrency == 0 {
            self.error(
                FieldPath::keys(["limits", "account_concurrency"]),
                "must be greater than 0",
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
