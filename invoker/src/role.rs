//! Execution roles, resolved: the secrets a function's target delivers, read once at start.
//!
//! The config names where each value lives (a variable of the broker's environment, or a
//! file); [`ResolvedRole::resolve`] reads them when the broker builds its functions, so that a
//! missing secret stops `impulse run` before anything is invoked, and `impulse validate` needs
//! no secrets. Targets then hand the values over without reading anything: process targets as
//! environment variables of each execution environment, http targets as request headers and a
//! client certificate.
//!
//! Values are [`SecretString`]s and sensitive [`HeaderValue`]s: no `Debug`, `Display` or error
//! of this module shows one. Errors name the role, the key and the source, never the value.

use std::fmt;
use std::path::Path;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use impulse_config::{pem, Env, ExecutionRoleConfig, SecretSource};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};

/// An execution role's secrets, read and checked.
///
/// Invariants: every header value is marked sensitive; no value is empty.
pub struct ResolvedRole {
    name: String,
    environment: Vec<(String, SecretString)>,
    headers: HeaderMap,
    client_certificate: Option<ClientCertificate>,
}

/// A certificate chain (leaf first) and its private key, for mutual TLS.
pub struct ClientCertificate {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("chain", &self.chain.len())
            .field("key", &"***")
            .finish()
    }
}

/// A secret of a role that could not be read. Displays as
/// `execution_roles.<role>.<field>: <problem>` (`environment.<key>`, `headers.<key>`,
/// `client_key`, …); never holds the value.
#[derive(Debug, thiserror::Error)]
#[error("execution_roles.{role}.{field}: {problem}")]
pub struct RoleError {
    role: String,
    field: String,
    problem: String,
}

impl ResolvedRole {
    /// Reads every value of role `name` from its source: variables through `env`, files from
    /// disk (trailing `\n` and `\r` removed).
    ///
    /// # Errors
    ///
    /// Every value that is missing, unreadable, empty, not UTF-8, or (for headers) not a valid
    /// header value; and header names that are not valid.
    pub fn resolve(
        name: &str,
        config: &ExecutionRoleConfig,
        env: &dyn Env,
    ) -> Result<Self, Vec<RoleError>> {
        let mut errors = Vec::new();
        let error = |part: &'static str, key: &str, problem: String| RoleError {
            role: name.to_owned(),
            field: if key.is_empty() {
                part.to_owned()
            } else {
                format!("{part}.{key}")
            },
            problem,
        };
        let mut environment = Vec::with_capacity(config.environment.len());
        for (key, source) in &config.environment {
            match read(source, env) {
                Ok(value) => environment.push((key.clone(), value)),
                Err(problem) => errors.push(error("environment", key, problem)),
            }
        }
        let mut headers = HeaderMap::with_capacity(config.headers.len());
        for (key, source) in &config.headers {
            let Ok(header) = HeaderName::from_bytes(key.as_bytes()) else {
                errors.push(error("headers", key, "invalid HTTP header name".to_owned()));
                continue;
            };
            let value = read(source, env).and_then(|value| {
                HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                    format!(
                        "the value of {source} is not a valid HTTP header value (visible \
                         ASCII characters, spaces and tabs only)"
                    )
                })
            });
            match value {
                Ok(mut value) => {
                    // Kept out of `Debug` of the header map and of HPACK tables.
                    value.set_sensitive(true);
                    headers.insert(header, value);
                }
                Err(problem) => errors.push(error("headers", key, problem)),
            }
        }
        let client_certificate = match (&config.client_certificate, &config.client_key) {
            (Some(chain), Some(key)) => {
                let chain = pem::read_certificates(chain).map_err(|e| {
                    errors.push(error("client_certificate", "", e.to_string()));
                });
                let key = pem::read_private_key(key).map_err(|e| {
                    errors.push(error("client_key", "", e.to_string()));
                });
                chain
                    .and_then(|chain| key.map(|key| ClientCertificate { chain, key }))
                    .ok()
            }
            // Validation refuses one without the other.
            _ => None,
        };
        if errors.is_empty() {
            Ok(Self {
                name: name.to_owned(),
                environment,
                headers,
                client_certificate,
            })
        } else {
            Err(errors)
        }
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The environment variables for process targets.
    pub fn environment(&self) -> &[(String, SecretString)] {
        &self.environment
    }

    /// The request headers for http targets, each value marked sensitive.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The client certificate http targets present to `https://` endpoints.
    pub fn client_certificate(&self) -> Option<&ClientCertificate> {
        self.client_certificate.as_ref()
    }
}

impl fmt::Debug for ResolvedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedRole")
            .field("name", &self.name)
            .field(
                "environment",
                &Redacted(self.environment.iter().map(|(k, _)| k.as_str()).collect()),
            )
            .field(
                "headers",
                &Redacted(self.headers.keys().map(HeaderName::as_str).collect()),
            )
            .field("client_certificate", &self.client_certificate)
            .finish()
    }
}

/// A map shown with its keys, and `***` for every value.
struct Redacted<'a>(Vec<&'a str>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|k| (k, "***")))
            .finish()
    }
}

/// One secret's value. The problem, if any, names the source but never the value.
fn read(source: &SecretSource, env: &dyn Env) -> Result<SecretString, String> {
    let value = match source {
        SecretSource::Env(variable) => {
            let value = env
                .var(variable)
                .ok_or_else(|| format!("{source} is not set"))?;
            // `Env` reads values lossily; a secret that was not UTF-8 would be silently wrong.
            if value.contains(char::REPLACEMENT_CHARACTER) {
                return Err(format!("{source} is not valid UTF-8"));
            }
            value
        }
        SecretSource::File(path) => read_file(path, source)?,
    };
    if value.is_empty() {
        return Err(format!("{source} is empty"));
    }
    Ok(SecretString::from(value))
}

/// A secret file's content without trailing line breaks. The errors are the OS's (`No such
/// file or directory`) or a fixed text: never a part of the content.
fn read_file(path: &Path, source: &SecretSource) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{source} cannot be read: {e}"))?;
    let mut text = String::from_utf8(bytes).map_err(|_| format!("{source} is not valid UTF-8"))?;
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;

    const CANARY_ENV: &str = "canary-role-env-5b1f";
    const CANARY_FILE: &str = "canary-role-file-8c2e";
    const CANARY_HEADER: &str = "Bearer canary-role-header-0d4a";

    fn role(
        environment: &[(&str, SecretSource)],
        headers: &[(&str, SecretSource)],
    ) -> ExecutionRoleConfig {
        let map = |entries: &[(&str, SecretSource)]| {
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        ExecutionRoleConfig {
            environment: map(environment),
            headers: map(headers),
            ..Default::default()
        }
    }

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn secret_file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write the secret file");
        path
    }

    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "impulse-role-{test}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        dir
    }

    #[test]
    fn values_come_from_variables_and_files() {
        let dir = temp_dir("values");
        let file = secret_file(&dir, "db", format!("{CANARY_FILE}\r\n\n").as_bytes());
        let config = role(
            &[
                (
                    "STRIPE_KEY",
                    SecretSource::Env("PAYMENTS_STRIPE_KEY".into()),
                ),
                ("DB_PASSWORD", SecretSource::File(file)),
            ],
            &[("Authorization", SecretSource::Env("PAYMENTS_AUTH".into()))],
        );
        let vars = env(&[
            ("PAYMENTS_STRIPE_KEY", CANARY_ENV),
            ("PAYMENTS_AUTH", CANARY_HEADER),
        ]);
        let resolved = ResolvedRole::resolve("payments", &config, &vars).expect("resolves");
        let environment: Vec<(&str, &str)> = resolved
            .environment()
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            environment,
            [("DB_PASSWORD", CANARY_FILE), ("STRIPE_KEY", CANARY_ENV)],
            "files lose their trailing line breaks"
        );
        let authorization = &resolved.headers()["authorization"];
        assert_eq!(authorization.as_bytes(), CANARY_HEADER.as_bytes());
        assert!(authorization.is_sensitive());
        assert_eq!(resolved.name(), "payments");

        let debug = format!("{resolved:?} {:?}", resolved.headers());
        for canary in [CANARY_ENV, CANARY_FILE, CANARY_HEADER] {
            assert!(!debug.contains(canary), "{canary} leaked: {debug}");
        }
        assert!(debug.contains("STRIPE_KEY") && debug.contains("authorization"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn every_unreadable_value_is_reported_without_its_value() {
        let dir = temp_dir("errors");
        let empty = secret_file(&dir, "empty", b"\n");
        let binary = secret_file(&dir, "binary", b"\xff\xfe canary-role-bytes");
        let missing = dir.join("missing");
        let config = role(
            &[
                ("UNSET", SecretSource::Env("ROLE_UNSET".into())),
                ("BLANK", SecretSource::Env("ROLE_BLANK".into())),
                ("LOSSY", SecretSource::Env("ROLE_LOSSY".into())),
                ("EMPTY_FILE", SecretSource::File(empty.clone())),
                ("BINARY_FILE", SecretSource::File(binary.clone())),
                ("MISSING_FILE", SecretSource::File(missing.clone())),
            ],
            &[
                ("X-Broken", SecretSource::Env("ROLE_NEWLINE".into())),
                ("Bad Name", SecretSource::Env("ROLE_LOSSY".into())),
            ],
        );
        let vars = env(&[
            ("ROLE_BLANK", ""),
            ("ROLE_LOSSY", "canary-role-\u{fffd}-lossy"),
            ("ROLE_NEWLINE", "canary-role-line\r\nInjected: yes"),
        ]);
        let errors: Vec<String> = ResolvedRole::resolve("payments", &config, &vars)
            .expect_err("nothing resolves")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "execution_roles.payments.environment.BINARY_FILE: file ".to_owned()
                    + &binary.display().to_string()
                    + " is not valid UTF-8",
                "execution_roles.payments.environment.BLANK: environment variable ROLE_BLANK is empty".to_owned(),
                "execution_roles.payments.environment.EMPTY_FILE: file ".to_owned()
                    + &empty.display().to_string()
                    + " is empty",
                "execution_roles.payments.environment.LOSSY: environment variable ROLE_LOSSY is not valid UTF-8".to_owned(),
                "execution_roles.payments.environment.MISSING_FILE: file ".to_owned()
                    + &missing.display().to_string()
                    + " cannot be read: No such file or directory (os error 2)",
                "execution_roles.payments.environment.UNSET: environment variable ROLE_UNSET is not set".to_owned(),
                "execution_roles.payments.headers.Bad Name: invalid HTTP header name".to_owned(),
                "execution_roles.payments.headers.X-Broken: the value of environment variable ROLE_NEWLINE is not a valid HTTP header value (visible ASCII characters, spaces and tabs only)".to_owned(),
            ]
        );
        assert!(errors.iter().all(|e| !e.contains("canary")), "{errors:?}");
        std::fs::remove_dir_all(dir).ok();
    }
}
