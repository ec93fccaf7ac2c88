//! `[auth.tokens.<name>]`: each token set once, in one form, and strong enough.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{Config, TokenConfig};

impl Validator {
    pub(super) fn auth(&mut self, config: &Config) {
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
                let secret = secret.expose_secret();
                if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                    self.error(
                        path.key("token"),
                        "must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)",
                    );
                }
            }
            (None, Some(sha)) => {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.error(path.key("token_sha256"), "must be 64 hexadecimal digits");
                }
            }
        }
    }
}
