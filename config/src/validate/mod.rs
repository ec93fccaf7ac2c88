//! The validation pass: one walk over the whole config collecting every problem. Each
//! section of the config has its own module; they share the [`Validator`] that collects.

mod auth;
mod connections;
mod destinations;
mod functions;
mod limits;
mod queue;
mod roles;
mod tls;
mod triggers;
mod versions;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::deser::FieldError;
use crate::locate::FieldPath;
use crate::model::Config;

/// Validates `config`. `broken_functions` failed to deserialise: triggers naming them are not
/// reported again. `broken_triggers` (name → function) failed to deserialise too, but their
/// function references are still checked, so one mistake does not hide another.
/// `broken_roles` failed to deserialise: functions naming them are not reported again.
pub(crate) fn validate(
    config: &Config,
    broken_functions: &BTreeSet<String>,
    broken_triggers: &BTreeMap<String, String>,
    broken_roles: &BTreeSet<String>,
) -> Vec<FieldError> {
    let mut v = Validator::default();
    v.server(config);
    v.limits(config);
    v.isolation(config);
    v.queue(config);
    for (name, function) in &config.functions {
        v.function(name, function);
    }
    v.reserved_concurrency(config);
    v.execution_roles(config, broken_roles);
    v.triggers(config, broken_functions, broken_triggers);
    v.auth(config);
    v.errors
}

/// Collects the problems of one validation pass.
#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn error(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn name(&mut self, path: &FieldPath, what: &str, name: &str) {
        if !is_valid_name(name) {
            self.error(
                path.clone(),
                format!(
                    "invalid {what} name \"{name}\": use 1 to 64 characters from A-Z, a-z, 0-9, \
                     `_` and `-`"
                ),
            );
        }
    }

    fn range_u32(&mut self, path: FieldPath, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.error(path, format!("must be between {min} and {max}"));
        }
    }

    fn positive(&mut self, path: FieldPath, value: u32) {
        if value == 0 {
            self.error(path, "must be greater than 0");
        }
    }

    fn duration(&mut self, path: FieldPath, value: Duration, min: Duration, max: Duration) {
        if !(min..=max).contains(&value) {
            self.error(
                path,
                format!(
                    "must be between {} and {}",
                    crate::duration::format(min),
                    crate::duration::format(max)
                ),
            );
        }
    }

    fn not_empty(&mut self, path: FieldPath, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
    }

    fn server(&mut self, config: &Config) {
        // Port 0 asks the OS for any free port, so two of them never clash.
        if config.server.listen == config.server.admin_listen && config.server.listen.port() != 0 {
            self.error(
                FieldPath::keys(["server", "admin_listen"]),
                format!("must differ from server.listen ({})", config.server.listen),
            );
        }
        if let Some(tls) = &config.server.tls {
            self.server_tls(tls);
        }
        let server = FieldPath::keys(["server"]);
        self.duration(
            server.key("header_read_timeout"),
            config.server.header_read_timeout,
            Duration::from_secs(1),
            Duration::from_secs(300),
        );
        self.duration(
            server.key("idle_timeout"),
            config.server.idle_timeout,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        self.range_u32(
            server.key("max_connections"),
            config.server.max_connections,
            1,
            1_000_000,
        );
    }
}

/// Lambda's function-name charset: `^[A-Za-z0-9_-]{1,64}$`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("resize-images_v2"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("has space"));
        assert!(!is_valid_name("dot.name"));
        assert!(!is_valid_name(&"x".repeat(65)));
    }
}
