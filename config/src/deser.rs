//! Typed deserialisation of a parsed document, section by section, collecting every error.
//!
//! The document is first parsed into a generic [`Value`]; each top-level section, and each named
//! function, trigger and token, is then deserialised on its own through `serde_path_to_error`.
//! One bad trigger therefore does not hide a bad function: every entry that fails is reported,
//! and validation still runs over the entries that did not.
//!
//! Internally tagged enums (`type = "kafka"`) buffer their content, so serde's path stops at the
//! enum. For those errors the variant's struct is deserialised again from the enum's value to
//! find the field inside (see [`refine`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{DeserializeOwned, Error as _};
use serde_json::{Map, Value};

use crate::locate::{FieldPath, Segment};
use crate::model::{
    AccessKeyConfig, AuthConfig, Config, ExecutionRoleConfig, FunctionConfig, HttpTargetConfig,
    HttpTriggerConfig, IsolationConfig, KafkaDestinationConfig, KafkaTriggerConfig, LimitsConfig,
    LogDestinationConfig, ProcessTargetConfig, QueueConfig, RedisDestinationConfig,
    RedisTriggerConfig, ScheduleTriggerConfig, ServerConfig, TokenConfig, TriggerConfig,
};

/// An error at a field path (line still to be found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) path: FieldPath,
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// The outcome of deserialisation.
#[derive(Debug, Default)]
pub(crate) struct Deserialized {
    /// Everything that deserialised; failed entries are left out, failed sections defaulted.
    pub(crate) config: Config,
    pub(crate) errors: Vec<FieldError>,
    /// Functions that exist in the file but failed to deserialise: triggers naming them are not
    /// reported as naming an unknown function.
    pub(crate) broken_functions: BTreeSet<String>,
    /// Triggers that failed to deserialise, with the function each names (when it names one as
    /// a string), so a reference to an unknown function is still reported.
    pub(crate) broken_triggers: BTreeMap<String, String>,
    /// Execution roles that exist in the file but failed to deserialise: functions naming them
    /// are not reported as naming an unknown role.
    pub(crate) broken_roles: BTreeSet<String>,
}

const CONFIG_FIELDS: &[&str] = &[
    "server",
    "limits",
    "queue",
    "functions",
    "execution_roles",
    "triggers",
    "auth",
    "isolation",
];
const AUTH_FIELDS: &[&str] = &["tokens", "access_keys"];

pub(crate) fn config_from_value(root: &Value) -> Deserialized {
    let mut out = Deserialized::default();
    let empty = Map::new();
    let fields = match root {
        Value::Object(fields) => fields,
        // An empty YAML document: every default.
        Value::Null => &empty,
        other => {
            out.errors.push(FieldError::new(
                FieldPath::root(),
                format!("expected a table of settings, found {}", describe(other)),
            ));
            return out;
        }
    };
    for (key, value) in fields {
        let path = FieldPath::root().key(key);
        match key.as_str() {
            "server" => {
                if let Some(server) = typed::<ServerConfig>(value, &path, &mut out.errors) {
                    out.config.server = server;
                }
            }
            "limits" => {
                if let Some(limits) = typed::<LimitsConfig>(value, &path, &mut out.errors) {
                    out.config.limits = limits;
                }
            }
            "queue" => {
                if let Some(queue) = typed::<QueueConfig>(value, &path, &mut out.errors) {
                    out.config.queue = queue;
                }
            }
            "functions" => {
                let (functions, broken) = named::<FunctionConfig>(value, &path, &mut out.errors);
                out.config.functions = functions;
                out.broken_functions = broken;
            }
            "execution_roles" => {
                let (roles, broken) = named::<ExecutionRoleConfig>(value, &path, &mut out.errors);
                out.config.execution_roles = roles;
                out.broken_roles = broken;
            }
            "triggers" => {
                let (triggers, broken) = named::<TriggerConfig>(value, &path, &mut out.errors);
                out.config.triggers = triggers;
                out.broken_triggers = broken
                    .into_iter()
                    .filter_map(|name| {
                        let function = value.get(&name)?.get("function")?.as_str()?.to_owned();
                        Some((name, function))
                    })
                    .collect();
            }
            "auth" => out.config.auth = auth(value, &path, &mut out.errors),
            "isolation" => {
                if let Some(isolation) = typed::<IsolationConfig>(value, &path, &mut out.errors) {
                    out.config.isolation = isolation;
                }
            }
            _ => out.errors.push(unknown_field(path, key, CONFIG_FIELDS)),
        }
    }
    out
}

fn auth(value: &Value, path: &FieldPath, errors: &mut Vec<FieldError>) -> AuthConfig {
    let Value::Object(fields) = value else {
        return typed::<AuthConfig>(value, path, errors).unwrap_or_default();
    };
    let mut auth = AuthConfig::default();
    for (key, value) in fields {
        let child = path.key(key);
        match key.as_str() {
            "tokens" => auth.tokens = named::<TokenConfig>(value, &child, errors).0,
            "access_keys" => {
                auth.access_keys = named::<AccessKeyConfig>(value, &child, errors).0;
            }
            _ => errors.push(unknown_field(child, key, AUTH_FIELDS)),
        }
    }
    auth
}

/// A map of named entries, each deserialised on its own. Returns the good entries and the names
/// of the failed ones.
fn named<T: DeserializeOwned>(
    value: &Value,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> (BTreeMap<String, T>, BTreeSet<String>) {
    let mut good = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let Value::Object(entries) = value else {
        // Let serde word the type error.
        let _: Option<BTreeMap<String, Value>> = typed(value, path, errors);
        return (good, broken);
    };
    for (name, entry) in entries {
        match typed::<T>(entry, &path.key(name), errors) {
            Some(parsed) => {
                good.insert(name.clone(), parsed);
            }
            None => {
                broken.insert(name.clone());
            }
        }
    }
    (good, broken)
}

/// Deserialises `value` (found at `path`), recording an error on failure.
fn typed<T: DeserializeOwned>(
    value: &Value,
    path: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match first_error::<T>(value) {
        Ok(parsed) => Some(parsed),
        Err((inner, message)) => {
            let (inner, message) = refine(value, path, inner, message);
            errors.push(FieldError::new(path.join(&inner), message));
            None
        }
    }
}

/// Deserialises `value`, returning the error's path (relative to `value`) and message.
fn first_error<T: DeserializeOwned>(value: &Value) -> Result<T, (FieldPath, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        (
            FieldPath::from_serde(err.path()),
            err.into_inner().to_string(),
        )
    })
}

/// Which internally tagged enum lives at an absolute path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tagged {
    Target,
    Destination,
    Trigger,
}

fn tagged_at(path: &FieldPath) -> Option<Tagged> {
    fn key(segment: &Segment) -> Option<&str> {
        match segment {
            Segment::Key(key) => Some(key.as_str()),
            Segment::Index(_) => None,
        }
    }
    let keys: Option<Vec<&str>> = path.segments().iter().map(key).collect();
    match keys?.as_slice() {
        ["functions", _, "target"] | ["functions", _, "versions", _, "target"] => {
            Some(Tagged::Target)
        }
        ["functions", _, "on_success" | "on_failure"] => Some(Tagged::Destination),
        ["triggers", _] => Some(Tagged::Trigger),
        ["triggers", _, "on_failure"] => Some(Tagged::Destination),
        _ => None,
    }
}

/// Narrows an error that serde reported at an internally tagged enum down to the field inside
/// it, by deserialising the variant's struct directly from the enum's value.
fn refine(
    entry: &Value,
    base: &FieldPath,
    mut inner: FieldPath,
    mut message: String,
) -> (FieldPath, String) {
    // Each round descends one tagged enum; they nest at most twice (trigger → destination).
    for _ in 0..4 {
        let Some(kind) = tagged_at(&base.join(&inner)) else {
            break;
        };
        let Some(fields) = lookup(entry, &inner).and_then(Value::as_object) else {
            break;
        };
        let Some(tag) = fields.get("type").and_then(Value::as_str) else {
            break;
        };
        let mut rest = fields.clone();
        rest.remove("type");
        let rest = Value::Object(rest);
        let found = match (kind, tag) {
            (Tagged::Target, "http") => variant_error::<HttpTargetConfig>(&rest),
            (Tagged::Target, "process") => variant_error::<ProcessTargetConfig>(&rest),
            (Tagged::Destination, "log") => variant_error::<LogDestinationConfig>(&rest),
            (Tagged::Destination, "redis") => variant_error::<RedisDestinationConfig>(&rest),
            (Tagged::Destination, "kafka") => variant_error::<KafkaDestinationConfig>(&rest),
            (Tagged::Trigger, "http") => variant_error::<HttpTriggerConfig>(&rest),
            (Tagged::Trigger, "schedule") => variant_error::<ScheduleTriggerConfig>(&rest),
            (Tagged::Trigger, "kafka") => variant_error::<KafkaTriggerConfig>(&rest),
            (Tagged::Trigger, "redis") => variant_error::<RedisTriggerConfig>(&rest),
            _ => None,
        };
        let Some((deeper, deeper_message)) = found else {
            break;
        };
        inner = inner.join(&deeper);
        message = deeper_message;
    }
    (inner, message)
}

fn variant_error<T: DeserializeOwned>(value: &Value) -> Option<(FieldPath, String)> {
    first_error::<T>(value).err()
}

/// The value at `path` inside `value`.
pub(crate) fn lookup<'a>(value: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.segments()
        .iter()
        .try_fold(value, |value, segment| match segment {
            Segment::Key(key) => value.as_object()?.get(key),
            Segment::Index(index) => value.as_array()?.get(*index),
        })
}

fn unknown_field(path: FieldPath, key: &str, expected: &'static [&'static str]) -> FieldError {
    FieldError::new(
        path,
        serde_json::Error::unknown_field(key, expected).to_string(),
    )
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// Checks that the derived `Deserialize` of [`Config`] and the sectioned path agree.
#[cfg(test)]
pub(crate) fn derived(value: &Value) -> Result<Config, serde_json::Error> {
    serde::Deserialize::deserialize(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(value: &Value) -> Vec<(String, String)> {
        config_from_value(value)
            .errors
            .into_iter()
            .map(|e| (e.path.to_string(), e.message))
            .collect()
    }

    #[test]
    fn sections_and_entries_fail_independently() {
        let found = errors(&json!({
            "server": {"listen": "nope"},
            "functions": {
                "good": {"target": {"type": "http", "endpoint": "http://x"}},
                "bad": {"target": {"type": "http", "endpoint": "http://x"}, "timeout": "3"},
                "worse": {"target": {"type": "process", "command": "x", "memory": 5}}
            },
            "triggers": {
                "t": {"type": "kafka", "function": "good", "bootstrap_servers": "k:9092",
                      "topics": ["a"], "batch_size": "ten"},
                "u": {"type": "redis", "function": "good", "url": "redis://h", "stream": "s",
                      "on_failure": {"type": "log", "nam": "x"}},
                "v": {"type": "kafak"}
            },
            "extra": 1
        }));
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "extra",
                "functions.bad.timeout",
                "functions.worse.target.memory",
                "server.listen",
                "triggers.t.batch_size",
                "triggers.u.on_failure.nam",
                "triggers.v.type",
            ]
        );
        assert!(found[0].1.starts_with("unknown field `extra`"), "{found:?}");
        assert!(found[1].1.contains("has no unit"), "{found:?}");
        assert!(
            found[2].1.starts_with("unknown field `memory`"),
            "{found:?}"
        );
        assert!(found[4].1.contains("expected u32"), "{found:?}");
        assert!(found[5].1.starts_with("unknown field `nam`"), "{found:?}");
        assert!(
            found[6].1.starts_with("unknown variant `kafak`"),
            "{found:?}"
        );

        let out = config_from_value(&json!({
            "functions": {"bad": {"target": {"type": "http"}}}
        }));
        assert!(out.broken_functions.contains("bad"));
    }

    #[test]
    fn lookup_paths() {
        let value = json!({"a": {"b": [1, {"c": 2}]}});
        let path = FieldPath::keys(["a", "b"]).index(1).key("c");
        assert_eq!(lookup(&value, &path), Some(&json!(2)));
        assert_eq!(lookup(&value, &FieldPath::keys(["a", "x"])), None);
    }
}
