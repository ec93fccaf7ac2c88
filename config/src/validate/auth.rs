//! `[auth]` and who may invoke what: each token and access key set once, in one form, and
//! strong enough; function policies naming principals and triggers that exist; `AWS_IAM` routes
//! only where a principal could ever pass.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{AccessKeyConfig, AuthType, Config, TokenConfig, TriggerConfig};

/// The hint every "too weak" secret message ends with.
const STRONG_SECRET: &str =
    "must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)";

impl Validator {
    pub(super) fn auth(&mut self, config: &Config) {
        self.tokens(config);
        self.access_keys(config);
        self.policies(config);
        self.http_auth_types(config);
    }

    fn tokens(&mut self, config: &Config) {
        let mut plain: BTreeMap<&str, &str> = BTreeMap::new();
        let mut hashed: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, token) in &config.auth.tokens {
            let path = FieldPath::keys(["auth", "tokens", name]);
            self.name(&path, "token", name);
            self.token(&path, token);
            let duplicate = match (&token.token, &token.token_sha256) {
                (Some(secret), None) => plain.insert(secret.expose_secret(), name),
                (None, Some(sha)) => hashed.insert(sha.as_str(), name),
                _ => None,
            };
            if let Some(first) = duplicate {
                self.error(
                    path,
                    format!(
                        "same token as auth.tokens.{}; each token needs one role",
                        FieldPath::root().key(first)
                    ),
                );
            }
        }
    }

    fn token(&mut self, path: &FieldPath, token: &TokenConfig) {
        match (&token.token, &token.token_sha256) {
            (Some(_), Some(_)) => {
                self.error(
                    path.clone(),
                    "set one of `token` and `token_sha256`, not both",
                );
            }
            (None, None) => self.error(path.clone(), "set one of `token` or `token_sha256`"),
            (Some(secret), None) => {
                // Never echo the token itself.
                if !is_strong_secret(secret.expose_secret()) {
                    self.error(path.key("token"), STRONG_SECRET);
                }
            }
            (None, Some(sha)) => {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.error(path.key("token_sha256"), "must be 64 hexadecimal digits");
                }
            }
        }
    }

    fn access_keys(&mut self, config: &Config) {
        let mut ids: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, key) in &config.auth.access_keys {
            let path = FieldPath::keys(["auth", "access_keys", name]);
            self.name(&path, "access key", name);
            if config.auth.tokens.contains_key(name) {
                self.error(
                    path.clone(),
                    format!(
                        "auth.tokens.{} has the same name; tokens and access keys share one \
                         namespace of principal names",
                        FieldPath::root().key(name)
                    ),
                );
            }
            self.access_key(&path, key);
            if let Some(first) = ids.insert(&key.access_key_id, name) {
                self.error(
                    path.key("access_key_id"),
                    format!(
                        "same access_key_id as auth.access_keys.{}; each key id needs one role",
                        FieldPath::root().key(first)
                    ),
                );
            }
        }
    }

    fn access_key(&mut self, path: &FieldPath, key: &AccessKeyConfig) {
        let id = &key.access_key_id;
        if !(16..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            self.error(
                path.key("access_key_id"),
                "must be 16 to 128 letters and digits, like AWS's access key ids",
            );
        }
        match &key.secret_access_key {
            None => self.error(
                path.clone(),
                "set `secret_access_key` (or IMPULSE_AUTH_SECRET_ACCESS_KEY_<NAME>)",
            ),
            Some(secret) if !is_strong_secret(secret.expose_secret()) => {
                self.error(path.key("secret_access_key"), STRONG_SECRET);
            }
            Some(_) => {}
        }
    }

    /// Function policies name principals and triggers that exist; a trigger a policy leaves
    /// out cannot invoke the function, which is a mistake to report now, not a denial later.
    fn policies(&mut self, config: &Config) {
        for (function, settings) in &config.functions {
            let Some(policy) = &settings.policy else {
                continue;
            };
            let path = FieldPath::keys(["functions", function, "policy"]);
            for (i, principal) in policy.principals.iter().flatten().enumerate() {
                let known = config.auth.tokens.contains_key(principal)
                    || config.auth.access_keys.contains_key(principal);
                if !known {
                    self.error(
                        path.key("principals").index(i),
                        format!(
                            "unknown principal \"{principal}\": name one of auth.tokens or \
                             auth.access_keys"
                        ),
                    );
                }
            }
            let Some(allowed) = &policy.triggers else {
                continue;
            };
            for (i, trigger) in allowed.iter().enumerate() {
                match config.triggers.get(trigger) {
                    None => self.error(
                        path.key("triggers").index(i),
                        format!("unknown trigger \"{trigger}\""),
                    ),
                    Some(t) if t.function_name() != function => self.error(
                        path.key("triggers").index(i),
                        format!(
                            "trigger \"{trigger}\" invokes \"{}\", not this function",
                            t.function()
                        ),
                    ),
                    Some(_) => {}
                }
            }
            for (trigger, settings) in &config.triggers {
                if settings.function_name() == function && !allowed.contains(trigger) {
                    self.error(
                        FieldPath::keys(["triggers", trigger, "function"]),
                        format!(
                            "function \"{function}\"'s policy does not allow this trigger; add \
                             \"{trigger}\" to functions.{}.policy.triggers",
                            FieldPath::root().key(function)
                        ),
                    );
                }
            }
        }
    }

    /// An `AWS_IAM` route with no principal configured could never be called.
    fn http_auth_types(&mut self, config: &Config) {
        if config.auth.is_enabled() {
            return;
        }
        for (name, trigger) in &config.triggers {
            if let TriggerConfig::Http(http) = trigger {
                if http.auth_type == Some(AuthType::AwsIam) {
                    self.error(
                        FieldPath::keys(["triggers", name, "auth_type"]),
                        "AWS_IAM needs a principal: configure auth.tokens or auth.access_keys",
                    );
                }
            }
        }
    }
}

/// At least 16 visible ASCII characters: guessing it is out of reach, and it fits in a header.
fn is_strong_secret(secret: &str) -> bool {
    secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_graphic())
}
