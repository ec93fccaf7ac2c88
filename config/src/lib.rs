//! Impulse configuration: the model, loading TOML or YAML, environment overrides, validation.
//!
//! [`load`] reads a file (`.toml`, `.yaml` or `.yml`), applies environment overrides and
//! validates the result. Nothing should start until it returns `Ok`: on failure it returns
//! *every* problem found, each naming the file, the line and the field path:
//!
//! ```text
//! impulse.toml:14: triggers.orders.batch_size: must be between 1 and 10000
//! impulse.toml:21: triggers.orders.function: unknown function "nope"
//! environment variable IMPULSE_LISTEN: server.listen: invalid socket address "x": …
//! ```
//!
//! The model starts at [`Config`]; every field's documentation is the user reference, also
//! available as a JSON Schema from [`json_schema`]. Defaults copy Lambda's (SEMANTICS.md).
//! Durations are strings with units (`"500ms"`, `"3s"`, `"6h"`, see [`duration`]).
//!
//! # Environment overrides
//!
//! After the file is parsed and before it is validated, these variables replace values from
//! the file. `<NAME>` is a configured name uppercased, with every character other than ASCII
//! letters and digits replaced by `_` (function `resize-images` → `RESIZE_IMAGES`). Only the
//! variables the config implies are read; the environment is never scanned, so a variable for
//! a function, trigger or token that is not in the file has no effect.
//!
//! | Variable | Sets |
//! |---|---|
//! | `IMPULSE_LISTEN` | `server.listen` (an IP address and port, e.g. `0.0.0.0:8080`) |
//! | `IMPULSE_ADMIN_LISTEN` | `server.admin_listen` |
//! | `IMPULSE_DATA_DIR` | `queue.data_dir` |
//! | `IMPULSE_ISOLATION_MODE` | `isolation.mode` (`auto`, `required` or `off`) |
//! | `IMPULSE_QUEUE_REDIS_URL` | `queue.redis.url`; creates `[queue.redis]` with the default stream if absent |
//! | `IMPULSE_FUNCTION_<NAME>_ENDPOINT` | `functions.<name>.target.endpoint` (http targets only; an error for process targets) |
//! | `IMPULSE_TRIGGER_<NAME>_BOOTSTRAP_SERVERS` | `triggers.<name>.bootstrap_servers` (kafka triggers only) |
//! | `IMPULSE_TRIGGER_<NAME>_URL` | `triggers.<name>.url` (redis triggers only) |
//! | `IMPULSE_TRIGGER_<NAME>_WEBHOOK_SECRET` | `triggers.<name>.webhook.secret` (http triggers with a `[triggers.<name>.webhook]` table only) |
//! | `IMPULSE_AUTH_TOKEN_<NAME>` | `auth.tokens.<name>.token`, clearing `token_sha256` (the token must be declared in the file, with its role) |
//! | `IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>` | `auth.access_keys.<name>.secret_access_key` (the key must be declared in the file, with its role and id) |
//!
//! Execution roles name variables too (`execution_roles.<role>.environment.<KEY>.env`): those
//! are secrets' sources, read by the broker when it starts, never by [`load`].
//!
//! A bad value, or a variable aimed at the wrong kind of function or trigger, is reported as
//! `environment variable IMPULSE_…: <field path>: <problem>`; so is a validation problem in a
//! value that came from the environment. Two names that map to the same variable (`a-b` and
//! `a_b`) make that variable an error. Values are never echoed for URLs, tokens and webhook
//! secrets, which may hold secrets. The names are constants in this crate
//! ([`IMPULSE_LISTEN`], …) and helpers build the per-name ones ([`function_endpoint_var`], …).
//! Tests pass an [`Env`] stub, such as a `HashMap<String, String>`, to [`load_with_env`] or
//! [`parse`].
//!
//! # How errors find their line
//!
//! The text is parsed twice: once into a generic value that is deserialised into the model
//! through `serde_path_to_error`, section by section and entry by entry (so one bad trigger
//! does not hide a bad function), and once into a spanned tree (`toml`'s `DeTable`, or the
//! YAML parser's event markers) from which a `field path → line` index is built. Serde errors
//! and validation errors carry field paths; the index turns them into lines, falling back to
//! the nearest enclosing field present in the file (a missing field is reported at its table).
//! Syntax errors carry the parser's own position. A duplicate key is a syntax error in TOML
//! (reported at the repeated key); in YAML every duplicate is reported, naming the line of the
//! first occurrence, and the rest of the file is still checked.

#![warn(missing_docs)]

pub mod duration;
pub mod filter;
pub mod pem;

mod deser;
mod env;
mod error;
mod locate;
mod model;
mod schedule;
mod support;
mod validate;

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

pub use env::{
    auth_secret_access_key_var, auth_token_var, env_name, function_endpoint_var,
    trigger_bootstrap_servers_var, trigger_url_var, trigger_webhook_secret_var, Env, ProcessEnv,
    BOOTSTRAP_SERVERS_SUFFIX, ENDPOINT_SUFFIX, IMPULSE_ADMIN_LISTEN,
    IMPULSE_AUTH_SECRET_ACCESS_KEY_PREFIX, IMPULSE_AUTH_TOKEN_PREFIX, IMPULSE_DATA_DIR,
    IMPULSE_FUNCTION_PREFIX, IMPULSE_ISOLATION_MODE, IMPULSE_LISTEN, IMPULSE_QUEUE_REDIS_URL,
    IMPULSE_TRIGGER_PREFIX, URL_SUFFIX, WEBHOOK_SECRET_SUFFIX,
};
pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use schedule::{ScheduleError, ScheduleExpression};
pub use support::{is_secret_key, redact_secret_values, redact_url, DebugSecretMap};

use crate::deser::FieldError;
use crate::locate::{FieldPath, LineIndex, LineStarts};

/// A config file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML 1.0.
    Toml,
    /// YAML 1.2 (a single document).
    Yaml,
}

impl Format {
    /// The format for a file name's extension: `.toml`, or `.yaml` / `.yml`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "toml" => Some(Self::Toml),
            "yaml" | "yml" => Some(Self::Yaml),
            _ => None,
        }
    }
}

/// Loads, overrides from the process environment, and validates a config file.
///
/// # Errors
///
/// Every problem found: unreadable file, unknown extension, syntax, types, environment
/// overrides and validation.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &ProcessEnv)
}

/// [`load`] with environment overrides read from `env`.
///
/// # Errors
///
/// As [`load`].
pub fn load_with_env(path: &Path, env: &dyn Env) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: None,
            path: String::new(),
            message,
        }])
    };
    let Some(format) = Format::from_path(path) else {
        return Err(whole_file(
            "unsupported config file extension; use .toml, .yaml or .yml".to_owned(),
        ));
    };
    let text = read_text(path).map_err(|(line, message)| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line,
            path: String::new(),
            message,
        }])
    })?;
    parse(&text, format, &file, env)
}

/// Largest config file accepted: far beyond any real one (a thousand functions and triggers
/// take well under 1 MiB), and small enough that parsing a hostile one stays cheap.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The file's text; else the line of the problem (for invalid UTF-8) and what it is. The size
/// is checked before anything is read.
fn read_text(path: &Path) -> Result<String, (Option<usize>, String)> {
    use std::io::Read as _;
    let cannot_read = |err: std::io::Error| (None, format!("cannot read the config file: {err}"));
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let size = file.metadata().map_err(cannot_read)?.len();
    let too_large = |size: u64| {
        (
            None,
            format!(
                "the config file has {size} bytes; at most {MAX_CONFIG_BYTES} (4 MiB) are \
                 accepted"
            ),
        )
    };
    if size > MAX_CONFIG_BYTES {
        return Err(too_large(size));
    }
    // A file that grows while it is read is capped as well.
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.len() - valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) + 1;
        (
            Some(line),
            format!(
                "invalid UTF-8 at column {column} (byte {}): a config file is UTF-8 text",
                valid.len()
            ),
        )
    })
}

/// Parses, overrides from `env`, and validates config text. `file_name` is used in errors.
///
/// # Errors
///
/// Every problem found, sorted by line; environment problems last.
pub fn parse(
    text: &str,
    format: Format,
    file_name: &str,
    env: &dyn Env,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let at = |line: Option<usize>, path: &FieldPath, message: String| ConfigError {
        file: file_name.to_owned(),
        line,
        path: path.to_string(),
        message,
    };

    let (value, index) = match format {
        Format::Toml => parse_toml(text).map_err(|syntax| {
            errors_of(
                syntax
                    .into_iter()
                    .map(|(line, message)| at(line, &FieldPath::root(), message))
                    .collect(),
            )
        })?,
        Format::Yaml => {
            let index = locate::yaml_index(text).map_err(|err| {
                errors_of(vec![at(Some(err.line), &FieldPath::root(), err.message)])
            })?;
            for duplicate in &index.duplicates {
                errors.push(at(
                    Some(duplicate.line),
                    &duplicate.path,
                    format!(
                        "duplicate key (first defined on line {})",
                        duplicate.first_line
                    ),
                ));
            }
            let value = parse_yaml(text).map_err(|(line, message)| {
                errors_of(vec![at(line, &FieldPath::root(), message)])
            })?;
            (value, index.index)
        }
    };

    // A problem with the document as a whole (not a table, a missing section) is reported
    // where the document starts, so that every error in a file with lines has one.
    let document = document_line(text);
    let deserialized = deser::config_from_value(&value);
    for FieldError { path, message } in deserialized.errors {
        let (path, line) = locate_serde_error(&index, path, &message);
        errors.push(at(line.or(document), &path, message));
    }

    let mut config = deserialized.config;
    let applied = env::apply(&mut config, env);
    for error in &applied.errors {
        errors.push(env_error(&error.var, &error.path, error.message.clone()));
    }
    normalise(&mut config);
    for FieldError { path, message } in validate::validate(
        &config,
        &deserialized.broken_functions,
        &deserialized.broken_triggers,
        &deserialized.broken_roles,
    ) {
        match applied.source_of(&path) {
            Some(var) => errors.push(env_error(var, &path, message)),
            None => errors.push(at(index.nearest(&path).or(document), &path, message)),
        }
    }

    if errors.is_empty() {
        Ok(config)
    } else {
        // Stable: problems on one line keep the order they were found in.
        errors.sort_by_key(|e| (e.line.is_none(), e.line));
        Err(ConfigErrors(errors))
    }
}

/// The JSON Schema (draft 2020-12) of [`Config`], with the field documentation as descriptions.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(Value::Null)
}

/// A parser's error: line (when known) and message.
type SyntaxError = (Option<usize>, String);

fn errors_of(errors: Vec<ConfigError>) -> ConfigErrors {
    ConfigErrors(errors)
}

fn env_error(var: &str, path: &FieldPath, message: String) -> ConfigError {
    ConfigError {
        file: format!("environment variable {var}"),
        line: None,
        path: path.to_string(),
        message,
    }
}

/// Parses TOML into a generic value and its line index; on failure, every syntax error found
/// (the parser recovers and goes on), with its line.
fn parse_toml(text: &str) -> Result<(Value, LineIndex), Vec<SyntaxError>> {
    let starts = LineStarts::new(text);
    let located = |err: &toml::de::Error| {
        (
            err.span().map(|span| starts.line_of(span.start)),
            err.message().to_owned(),
        )
    };
    let (table, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut errors: Vec<SyntaxError> = syntax.iter().map(located).collect();
        errors.sort_by_key(|(line, _)| *line);
        return Err(errors);
    }
    let index = locate::toml_index(text, table.get_ref());
    let value = Value::deserialize(toml::de::Deserializer::from(table))
        .map_err(|err| vec![located(&err)])?;
    Ok((value, index))
}

/// Parses YAML into a generic value. Duplicate keys were reported by the index; the first
/// occurrence is kept so that the rest of the file is still checked.
fn parse_yaml(text: &str) -> Result<Value, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::FirstWins,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|err| {
        let line = err
            .location()
            .and_then(|l| usize::try_from(l.line()).ok())
            .filter(|line| *line > 0);
        let mut message = err.to_string();
        // The line is reported separately.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        (line, message)
    })
}

/// The path and line for a serde error. Serde reports an unknown field (or an unknown `type`)
/// at the enclosing table; point at the offending key instead when it is in the file.
fn locate_serde_error(
    index: &LineIndex,
    path: FieldPath,
    message: &str,
) -> (FieldPath, Option<usize>) {
    let offending = if let Some(field) = backticked(message, "unknown field `") {
        Some(path.key(field))
    } else if message.starts_with("unknown variant `") {
        Some(path.key("type"))
    } else {
        None
    };
    if let Some(candidate) = offending {
        if let Some(line) = index.exact(&candidate) {
            return (candidate, Some(line));
        }
    }
    let line = index.nearest(&path);
    (path, line)
}

/// The line where the document starts: its first line that is neither blank nor a comment,
/// else line 1; `None` only for a text without lines.
fn document_line(text: &str) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    let first = text.lines().position(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#')
    });
    Some(first.map_or(1, |i| i + 1))
}

/// The text between `prefix` (ending in a backtick) and the next backtick.
fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// Canonical forms, applied before validation: HTTP methods uppercase and deduplicated, token
/// hashes lowercase.
fn normalise(config: &mut Config) {
    for trigger in config.triggers.values_mut() {
        if let TriggerConfig::Http(http) = trigger {
            let mut seen = std::collections::BTreeSet::new();
            http.methods = http
                .methods
                .iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| seen.insert(m.clone()))
                .collect();
        }
    }
    for token in config.auth.tokens.values_mut() {
        if let Some(sha) = &mut token.token_sha256 {
            *sha = sha.trim().to_ascii_lowercase();
        }
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
