//! Environment overrides: a typed layer applied after parsing and before validation.
//!
//! Only variables the config implies are read (one per configured function, trigger, token and
//! access key, plus the fixed ones); the environment is never scanned. Tests stub the reader
//! with a map.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::locate::FieldPath;
use crate::model::{
    default_queue_stream, Config, IsolationMode, RedisQueueConfig, TargetConfig, TriggerConfig,
};

/// Overrides `server.listen` (an IP address and port, e.g. `0.0.0.0:8080`).
pub const IMPULSE_LISTEN: &str = "IMPULSE_LISTEN";
/// Overrides `server.admin_listen`.
pub const IMPULSE_ADMIN_LISTEN: &str = "IMPULSE_ADMIN_LISTEN";
/// Overrides `queue.data_dir`.
pub const IMPULSE_DATA_DIR: &str = "IMPULSE_DATA_DIR";
/// Overrides `isolation.mode` (`auto`, `required` or `off`).
pub const IMPULSE_ISOLATION_MODE: &str = "IMPULSE_ISOLATION_MODE";
/// Overrides `queue.redis.url`, creating `[queue.redis]` (default stream) if absent.
pub const IMPULSE_QUEUE_REDIS_URL: &str = "IMPULSE_QUEUE_REDIS_URL";
/// Prefix of `IMPULSE_FUNCTION_<NAME>_ENDPOINT`.
pub const IMPULSE_FUNCTION_PREFIX: &str = "IMPULSE_FUNCTION_";
/// Suffix of `IMPULSE_FUNCTION_<NAME>_ENDPOINT`, overriding an http target's `endpoint`.
pub const ENDPOINT_SUFFIX: &str = "_ENDPOINT";
/// Prefix of `IMPULSE_TRIGGER_<NAME>_BOOTSTRAP_SERVERS` and `IMPULSE_TRIGGER_<NAME>_URL`.
pub const IMPULSE_TRIGGER_PREFIX: &str = "IMPULSE_TRIGGER_";
/// Suffix of `IMPULSE_TRIGGER_<NAME>_BOOTSTRAP_SERVERS`, overriding a kafka trigger's
/// `bootstrap_servers`.
pub const BOOTSTRAP_SERVERS_SUFFIX: &str = "_BOOTSTRAP_SERVERS";
/// Suffix of `IMPULSE_TRIGGER_<NAME>_URL`, overriding a redis trigger's `url`.
pub const URL_SUFFIX: &str = "_URL";
/// Suffix of `IMPULSE_TRIGGER_<NAME>_WEBHOOK_SECRET`, setting an http trigger's
/// `webhook.secret`.
pub const WEBHOOK_SECRET_SUFFIX: &str = "_WEBHOOK_SECRET";
/// Prefix of `IMPULSE_AUTH_TOKEN_<NAME>`, setting a configured token's `token` (and clearing
/// its `token_sha256`).
pub const IMPULSE_AUTH_TOKEN_PREFIX: &str = "IMPULSE_AUTH_TOKEN_";

/// Prefix of `IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>`, setting a configured access key's
/// `secret_access_key`.
pub const IMPULSE_AUTH_SECRET_ACCESS_KEY_PREFIX: &str = "IMPULSE_AUTH_SECRET_ACCESS_KEY_";

/// Reads environment variables. Implemented by [`ProcessEnv`] and, for tests, by maps.
pub trait Env: Send + Sync {
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment. A value that is not valid Unicode is read lossily, so that
/// validation reports it rather than the override being silently skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var_os(key).map(|value| value.to_string_lossy().into_owned())
    }
}

impl<S: BuildHasher + Send + Sync> Env for HashMap<String, String, S> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// A configured name as it appears in variable names: uppercased, every character other than
/// ASCII letters and digits replaced by `_` (`order-events` → `ORDER_EVENTS`).
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `IMPULSE_FUNCTION_<NAME>_ENDPOINT` for a function name.
pub fn function_endpoint_var(function: &str) -> String {
    format!(
        "{IMPULSE_FUNCTION_PREFIX}{}{ENDPOINT_SUFFIX}",
        env_name(function)
    )
}

/// `IMPULSE_TRIGGER_<NAME>_BOOTSTRAP_SERVERS` for a trigger name.
pub fn trigger_bootstrap_servers_var(trigger: &str) -> String {
    format!(
        "{IMPULSE_TRIGGER_PREFIX}{}{BOOTSTRAP_SERVERS_SUFFIX}",
        env_name(trigger)
    )
}

/// `IMPULSE_TRIGGER_<NAME>_URL` for a trigger name.
pub fn trigger_url_var(trigger: &str) -> String {
    format!("{IMPULSE_TRIGGER_PREFIX}{}{URL_SUFFIX}", env_name(trigger))
}

/// `IMPULSE_TRIGGER_<NAME>_WEBHOOK_SECRET` for a trigger name.
pub fn trigger_webhook_secret_var(trigger: &str) -> String {
    format!(
        "{IMPULSE_TRIGGER_PREFIX}{}{WEBHOOK_SECRET_SUFFIX}",
        env_name(trigger)
    )
}

/// `IMPULSE_AUTH_TOKEN_<NAME>` for a token name.
pub fn auth_token_var(token: &str) -> String {
    format!("{IMPULSE_AUTH_TOKEN_PREFIX}{}", env_name(token))
}

/// `IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>` for an access key name.
pub fn auth_secret_access_key_var(access_key: &str) -> String {
    format!(
        "{IMPULSE_AUTH_SECRET_ACCESS_KEY_PREFIX}{}",
        env_name(access_key)
    )
}

/// A problem with an override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvError {
    pub(crate) var: String,
    pub(crate) path: FieldPath,
    pub(crate) message: String,
}

/// What the overrides did: which fields came from which variable, and what went wrong.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Field paths set from the environment, with the variable that set them.
    pub(crate) sources: Vec<(FieldPath, String)>,
    pub(crate) errors: Vec<EnvError>,
}

impl Applied {
    /// The variable that set `path` or one of its ancestors.
    pub(crate) fn source_of(&self, path: &FieldPath) -> Option<&str> {
        self.sources
            .iter()
            .find(|(source, _)| path.starts_with(source))
            .map(|(_, var)| var.as_str())
    }

    fn set(&mut self, path: FieldPath, var: &str) {
        self.sources.push((path, var.to_owned()));
    }

    fn error(&mut self, var: &str, path: FieldPath, message: impl Into<String>) {
        self.errors.push(EnvError {
            var: var.to_owned(),
            path,
            message: message.into(),
        });
    }
}

/// Variables that map to more than one configured name (`a-b` and `a_b` both give `A_B`).
fn ambiguous<'a>(
    names: impl Iterator<Item = &'a String>,
    var: impl Fn(&str) -> String,
) -> HashMap<String, Vec<String>> {
    let mut by_var: HashMap<String, Vec<String>> = HashMap::new();
    for name in names {
        by_var.entry(var(name)).or_default().push(name.clone());
    }
    by_var.retain(|_, names| names.len() > 1);
    by_var
}

/// Applies every override to `config`.
pub(crate) fn apply(config: &mut Config, env: &dyn Env) -> Applied {
    let mut applied = Applied::default();
    let root = FieldPath::root();

    for (var, path, slot) in [
        (IMPULSE_LISTEN, "listen", &mut config.server.listen),
        (
            IMPULSE_ADMIN_LISTEN,
            "admin_listen",
            &mut config.server.admin_listen,
        ),
    ] {
        let Some(value) = env.var(var) else { continue };
        let path = root.key("server").key(path);
        match value.trim().parse::<SocketAddr>() {
            Ok(addr) => {
                *slot = addr;
                applied.set(path, var);
            }
            Err(err) => applied.error(
                var,
                path,
                format!(
                    "invalid socket address \"{value}\": {err}; expected an IP address and port, \
                     e.g. 0.0.0.0:8080"
                ),
            ),
        }
    }

    if let Some(value) = env.var(IMPULSE_ISOLATION_MODE) {
        let path = root.key("isolation").key("mode");
        let mode = match value.trim() {
            "auto" => Some(IsolationMode::Auto),
            "required" => Some(IsolationMode::Required),
            "off" => Some(IsolationMode::Off),
            _ => None,
        };
        match mode {
            Some(mode) => {
                config.isolation.mode = mode;
                applied.set(path, IMPULSE_ISOLATION_MODE);
            }
            None => applied.error(
                IMPULSE_ISOLATION_MODE,
                path,
                format!("unknown mode \"{value}\"; expected auto, required or off"),
            ),
        }
    }

    if let Some(value) = env.var(IMPULSE_DATA_DIR) {
        config.queue.data_dir = PathBuf::from(value);
        applied.set(root.key("queue").key("data_dir"), IMPULSE_DATA_DIR);
    }

    if let Some(url) = env.var(IMPULSE_QUEUE_REDIS_URL) {
        match &mut config.queue.redis {
            Some(redis) => redis.url = url,
            None => {
                config.queue.redis = Some(RedisQueueConfig {
                    url,
                    stream: default_queue_stream(),
                });
            }
        }
        applied.set(
            root.key("queue").key("redis").key("url"),
            IMPULSE_QUEUE_REDIS_URL,
        );
    }

    let clashes = ambiguous(config.functions.keys(), function_endpoint_var);
    for (name, function) in &mut config.functions {
        let var = function_endpoint_var(name);
        let Some(endpoint) = env.var(&var) else {
            continue;
        };
        let path = root.key("functions").key(name).key("target");
        if let Some(names) = clashes.get(&var) {
            applied.error(&var, path, ambiguity("functions", names));
            continue;
        }
        match &mut function.target {
            TargetConfig::Http(http) => {
                http.endpoint = endpoint;
                applied.set(path.key("endpoint"), &var);
            }
            TargetConfig::Process(_) => applied.error(
                &var,
                path,
                format!(
                    "function \"{name}\" has a process target; only http targets take an endpoint"
                ),
            ),
        }
    }

    let bootstrap_clashes = ambiguous(config.triggers.keys(), trigger_bootstrap_servers_var);
    let url_clashes = ambiguous(config.triggers.keys(), trigger_url_var);
    let webhook_clashes = ambiguous(config.triggers.keys(), trigger_webhook_secret_var);
    for (name, trigger) in &mut config.triggers {
        let path = root.key("triggers").key(name);
        let kind = trigger.kind();

        let var = trigger_bootstrap_servers_var(name);
        if let Some(servers) = env.var(&var) {
            if let Some(names) = bootstrap_clashes.get(&var) {
                applied.error(&var, path.clone(), ambiguity("triggers", names));
            } else if let TriggerConfig::Kafka(kafka) = trigger {
                kafka.bootstrap_servers = servers;
                applied.set(path.key("bootstrap_servers"), &var);
            } else {
                applied.error(
                    &var,
                    path.clone(),
                    format!("trigger \"{name}\" is a {kind} trigger; only kafka triggers take bootstrap_servers"),
                );
            }
        }

        let var = trigger_webhook_secret_var(name);
        if let Some(secret) = env.var(&var) {
            if let Some(names) = webhook_clashes.get(&var) {
                applied.error(&var, path.clone(), ambiguity("triggers", names));
            } else if let TriggerConfig::Http(http) = trigger {
                match &mut http.webhook {
                    Some(webhook) => {
                        webhook.secret = Some(SecretString::from(secret));
                        applied.set(path.key("webhook").key("secret"), &var);
                    }
                    None => applied.error(
                        &var,
                        path.clone(),
                        format!(
                            "trigger \"{name}\" has no [triggers.{}.webhook] table; declare its \
                             scheme there",
                            FieldPath::root().key(name)
                        ),
                    ),
                }
            } else {
                applied.error(
                    &var,
                    path.clone(),
                    format!("trigger \"{name}\" is a {kind} trigger; only http triggers take a webhook secret"),
                );
            }
        }

        let var = trigger_url_var(name);
        if let Some(url) = env.var(&var) {
            if let Some(names) = url_clashes.get(&var) {
                applied.error(&var, path, ambiguity("triggers", names));
            } else if let TriggerConfig::Redis(redis) = trigger {
                redis.url = url;
                applied.set(path.key("url"), &var);
            } else {
                applied.error(
                    &var,
                    path,
                    format!(
                        "trigger \"{name}\" is a {kind} trigger; only redis triggers take a url"
                    ),
                );
            }
        }
    }

    let clashes = ambiguous(config.auth.tokens.keys(), auth_token_var);
    for (name, token) in &mut config.auth.tokens {
        let var = auth_token_var(name);
        let Some(secret) = env.var(&var) else {
            continue;
        };
        let path = root.key("auth").key("tokens").key(name);
        if let Some(names) = clashes.get(&var) {
            applied.error(&var, path, ambiguity("auth.tokens", names));
            continue;
        }
        token.token = Some(SecretString::from(secret));
        token.token_sha256 = None;
        applied.set(path.key("token"), &var);
        applied.set(path.key("token_sha256"), &var);
    }

    let clashes = ambiguous(config.auth.access_keys.keys(), auth_secret_access_key_var);
    for (name, key) in &mut config.auth.access_keys {
        let var = auth_secret_access_key_var(name);
        let Some(secret) = env.var(&var) else {
            continue;
        };
        let path = root.key("auth").key("access_keys").key(name);
        if let Some(names) = clashes.get(&var) {
            applied.error(&var, path, ambiguity("auth.access_keys", names));
            continue;
        }
        key.secret_access_key = Some(SecretString::from(secret));
        applied.set(path.key("secret_access_key"), &var);
    }

    applied
}

fn ambiguity(section: &str, names: &[String]) -> String {
    format!(
        "ambiguous: {section} {} all map to this variable; rename one of them",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(env_name("order-events.v2"), "ORDER_EVENTS_V2");
        assert_eq!(
            function_endpoint_var("resize"),
            "IMPULSE_FUNCTION_RESIZE_ENDPOINT"
        );
        assert_eq!(
            trigger_bootstrap_servers_var("orders"),
            "IMPULSE_TRIGGER_ORDERS_BOOTSTRAP_SERVERS"
        );
        assert_eq!(trigger_url_var("jobs"), "IMPULSE_TRIGGER_JOBS_URL");
        assert_eq!(auth_token_var("ci-bot"), "IMPULSE_AUTH_TOKEN_CI_BOT");
        assert_eq!(
            auth_secret_access_key_var("deploy"),
            "IMPULSE_AUTH_SECRET_ACCESS_KEY_DEPLOY"
        );
        assert_eq!(
            trigger_webhook_secret_var("git-hub"),
            "IMPULSE_TRIGGER_GIT_HUB_WEBHOOK_SECRET"
        );
    }
}
