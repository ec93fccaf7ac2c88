//! `[functions.<name>.versions]` and `[functions.<name>.aliases]`: version numbers, alias names,
//! what aliases point at and how they split traffic.

use std::time::Duration;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{FunctionConfig, LATEST};

/// Lambda's longest alias name.
const MAX_ALIAS_NAME: usize = 128;

impl Validator {
    /// Checks `function`'s versions and aliases; `path` is the function's.
    pub(super) fn versions(&mut self, path: &FieldPath, function: &FunctionConfig) {
        for (number, version) in &function.versions {
            let version_path = path.key("versions").key(number);
            if number == LATEST {
                self.error(
                    version_path.clone(),
                    "`$LATEST` is reserved: it is the function itself (its own `target`)",
                );
            } else if !is_version_number(number) {
                self.error(
                    version_path.clone(),
                    format!(
                        "invalid version \"{number}\": versions are numbered 1, 2, … (a positive \
                         integer without leading zeros)"
                    ),
                );
            }
            self.target(&version_path.key("target"), &version.target, function);
            if let Some(timeout) = version.timeout {
                if timeout.is_zero() || timeout > Duration::from_secs(900) {
                    self.error(
                        version_path.key("timeout"),
                        "must be greater than 0 and at most 900s",
                    );
                }
            }
        }
        for (name, alias) in &function.aliases {
            let alias_path = path.key("aliases").key(name);
            if name == LATEST {
                self.error(
                    alias_path.clone(),
                    "`$LATEST` is reserved: it is the function itself",
                );
            } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                self.error(
                    alias_path.clone(),
                    format!("alias \"{name}\" looks like a version number; give it a name"),
                );
            } else if !is_alias_name(name) {
                self.error(
                    alias_path.clone(),
                    format!(
                        "invalid alias name \"{name}\": use 1 to {MAX_ALIAS_NAME} characters \
                         from A-Z, a-z, 0-9, `_` and `-`"
                    ),
                );
            }
            if alias.version != LATEST && !function.versions.contains_key(&alias.version) {
                self.error(
                    alias_path.key("version"),
                    missing_version(&alias.version, function),
                );
            }
            let mut total = 0.0;
            for (version, weight) in &alias.routing {
                let weight_path = alias_path.key("routing").key(version);
                if version == LATEST {
                    self.error(
                        weight_path.clone(),
                        "routing goes to published versions only, as in Lambda",
                    );
                } else if !function.versions.contains_key(version) {
                    self.error(weight_path.clone(), missing_version(version, function));
                } else if *version == alias.version {
                    self.error(
                        weight_path.clone(),
                        "is the alias's own version; route to another version",
                    );
                }
                if !(0.0..=1.0).contains(weight) {
                    self.error(weight_path, "weight must be between 0 and 1");
                } else {
                    total += weight;
                }
            }
            // A small tolerance: 0.1 + 0.2 + 0.7 is not exactly 1 in binary.
            if total > 1.0 + 1e-9 {
                self.error(
                    alias_path.key("routing"),
                    format!("weights sum to {total}; the sum must be at most 1"),
                );
            }
        }
    }
}

fn missing_version(version: &str, function: &FunctionConfig) -> String {
    let known: Vec<&str> = function.versions.keys().map(String::as_str).collect();
    if known.is_empty() {
        format!("unknown version \"{version}\": the function declares no versions")
    } else {
        format!(
            "unknown version \"{version}\" (declared: {})",
            known.join(", ")
        )
    }
}

/// Lambda's version numbers: `1`, `2`, … with no leading zero.
pub(crate) fn is_version_number(number: &str) -> bool {
    !number.is_empty()
        && !number.starts_with('0')
        && number.len() <= 10
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Lambda's alias names: `[A-Za-z0-9_-]{1,128}`, not all digits (checked apart, with its own
/// message).
fn is_alias_name(name: &str) -> bool {
    (1..=MAX_ALIAS_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers() {
        assert!(is_version_number("1"));
        assert!(is_version_number("42"));
        assert!(!is_version_number("0"));
        assert!(!is_version_number("01"));
        assert!(!is_version_number("v1"));
        assert!(!is_version_number(""));
        assert!(!is_version_number("$LATEST"));
    }

    #[test]
    fn alias_names() {
        assert!(is_alias_name("live"));
        assert!(is_alias_name("canary-2_b"));
        assert!(!is_alias_name("has space"));
        assert!(!is_alias_name(&"a".repeat(129)));
    }
}
