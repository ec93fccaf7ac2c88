//! `[execution_roles.<name>]` and `functions.<name>.execution_role`: well-formed names and
//! sources, and every part of a role reaching a function that can receive it.
//!
//! Only where each value comes from is checked here; the values themselves are read when the
//! broker starts, since the machine that validates may not hold the secrets.

use std::collections::{BTreeMap, BTreeSet};

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{
    is_reserved_environment, is_reserved_header, Config, ExecutionRoleConfig, SecretSource,
    TargetConfig,
};

/// Which kinds of target use a role.
#[derive(Debug, Default, Clone, Copy)]
struct Users {
    process: bool,
    http: bool,
}

impl Validator {
    pub(super) fn execution_roles(&mut self, config: &Config, broken_roles: &BTreeSet<String>) {
        for (name, role) in &config.execution_roles {
            self.execution_role(name, role);
        }
        let mut users: BTreeMap<&str, Users> = BTreeMap::new();
        for (function_name, function) in &config.functions {
            let Some(role_name) = &function.execution_role else {
                continue;
            };
            let path = FieldPath::keys(["functions", function_name, "execution_role"]);
            let Some(role) = config.execution_roles.get(role_name) else {
                if !broken_roles.contains(role_name) {
                    self.error(path, format!("unknown execution role \"{role_name}\""));
                }
                continue;
            };
            let used = users.entry(role_name).or_default();
            match &function.target {
                TargetConfig::Process(process) => {
                    used.process = true;
                    if role.environment.is_empty() {
                        self.error(
                            path,
                            format!(
                                "execution role \"{role_name}\" has no `environment`, the part \
                                 a process target receives"
                            ),
                        );
                    }
                    for key in process.environment.keys() {
                        if role.environment.contains_key(key) {
                            self.error(
                                FieldPath::keys([
                                    "functions",
                                    function_name,
                                    "target",
                                    "environment",
                                    key,
                                ]),
                                format!(
                                    "also set by execution role \"{role_name}\"; set it in one \
                                     place"
                                ),
                            );
                        }
                    }
                }
                TargetConfig::Http(http) => {
                    used.http = true;
                    if !role.has_http_part() {
                        self.error(
                            path,
                            format!(
                                "execution role \"{role_name}\" has no `headers` or \
                                 `client_certificate`, the parts an http target receives"
                            ),
                        );
                    }
                    let target = FieldPath::keys(["functions", function_name, "target"]);
                    if role.client_certificate.is_some() {
                        if url::Url::parse(&http.endpoint).is_ok_and(|url| url.scheme() != "https")
                        {
                            self.error(
                                target.key("endpoint"),
                                format!(
                                    "execution role \"{role_name}\" holds a client certificate, \
                                     which only https:// endpoints receive"
                                ),
                            );
                        }
                        let own = http
                            .tls
                            .as_ref()
                            .and_then(|tls| tls.client_certificate.as_ref());
                        if own.is_some() {
                            self.error(
                                target.key("tls").key("client_certificate"),
                                format!(
                                    "execution role \"{role_name}\" holds the client certificate \
                                     too; set it in one place"
                                ),
                            );
                        }
                    }
                    let endpoint_has_credentials = url::Url::parse(&http.endpoint)
                        .is_ok_and(|url| !url.username().is_empty() || url.password().is_some());
                    let role_authorizes = role
                        .headers
                        .keys()
                        .any(|name| name.eq_ignore_ascii_case("authorization"));
                    if endpoint_has_credentials && role_authorizes {
                        self.error(
                            target.key("endpoint"),
                            format!(
                                "holds a user name or password (sent as `Authorization`) and \
                                 execution role \"{role_name}\" sets `Authorization` too; keep \
                                 one"
                            ),
                        );
                    }
                }
            }
        }
        for (role_name, used) in users {
            let role = &config.execution_roles[role_name];
            let path = FieldPath::keys(["execution_roles", role_name]);
            if !role.environment.is_empty() && !used.process {
                self.error(
                    path.key("environment"),
                    "no function using this role has a process target, the only kind that \
                     receives environment variables",
                );
            }
            if !role.headers.is_empty() && !used.http {
                self.error(
                    path.key("headers"),
                    "no function using this role has an http target, the only kind that \
                     receives headers",
                );
            }
            if role.client_certificate.is_some() && !used.http {
                self.error(
                    path.key("client_certificate"),
                    "no function using this role has an http target, the only kind that \
                     presents a client certificate",
                );
            }
        }
    }

    fn execution_role(&mut self, name: &str, role: &ExecutionRoleConfig) {
        let path = FieldPath::keys(["execution_roles", name]);
        self.name(&path, "execution role", name);
        for (key, source) in &role.environment {
            let key_path = path.key("environment").key(key);
            if is_reserved_environment(key) {
                self.error(
                    key_path.clone(),
                    "reserved: the broker sets it in every execution environment",
                );
            } else if !is_lambda_variable_name(key) {
                self.error(
                    key_path.clone(),
                    "invalid environment variable name: use a letter, then letters, digits and \
                     `_` (at least 2 characters)",
                );
            }
            self.secret_source(&key_path, source);
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (key, source) in &role.headers {
            let key_path = path.key("headers").key(key);
            if !is_header_name(key) {
                self.error(key_path.clone(), "invalid HTTP header name");
            } else if is_reserved_header(key) {
                self.error(
                    key_path.clone(),
                    "reserved: the invoker or HTTP itself sets this header",
                );
            } else if let Some(first) = seen.insert(key.to_ascii_lowercase(), key) {
                self.error(
                    key_path.clone(),
                    format!(
                        "same header as headers.{}; header names are case-insensitive",
                        FieldPath::root().key(first)
                    ),
                );
            }
            self.secret_source(&key_path, source);
        }
        // The files are read at start only, as every value of a role is.
        match (&role.client_certificate, &role.client_key) {
            (Some(_), None) => self.error(
                path.key("client_certificate"),
                "requires client_key (the certificate's private key)",
            ),
            (None, Some(_)) => self.error(
                path.key("client_key"),
                "requires client_certificate (the key's certificate chain)",
            ),
            (Some(_), Some(_)) | (None, None) => {}
        }
    }

    fn secret_source(&mut self, path: &FieldPath, source: &SecretSource) {
        match source {
            SecretSource::Env(variable) => {
                if variable.is_empty() || variable.contains(['=', '\0']) {
                    self.error(path.key("env"), "invalid environment variable name");
                }
            }
            SecretSource::File(file) => {
                if !file.is_absolute() {
                    self.error(path.key("file"), "must be an absolute path");
                }
            }
        }
    }
}

/// Lambda's rule for environment variable names: `[a-zA-Z]([a-zA-Z0-9_])+`.
fn is_lambda_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.len() >= 2
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An HTTP field name: one or more `tchar`s (RFC 9110 §5.1, §5.6.2).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names() {
        assert!(is_lambda_variable_name("STRIPE_KEY"));
        assert!(is_lambda_variable_name("db2"));
        assert!(!is_lambda_variable_name("A"));
        assert!(!is_lambda_variable_name("_PRIVATE"));
        assert!(!is_lambda_variable_name("2FA"));
        assert!(!is_lambda_variable_name("WITH-DASH"));
        assert!(!is_lambda_variable_name(""));
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("Authorization"));
        assert!(is_header_name("X-Api-Key"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("Has Space"));
        assert!(!is_header_name("colon:"));
        assert!(!is_header_name("naïve"));
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved_header("Content-Type"));
        assert!(is_reserved_header("HOST"));
        assert!(is_reserved_header("Lambda-Runtime-Aws-Request-Id"));
        assert!(!is_reserved_header("Authorization"));
        assert!(is_reserved_environment("AWS_LAMBDA_RUNTIME_API"));
        assert!(is_reserved_environment("AWS_LAMBDA_ANYTHING"));
        assert!(is_reserved_environment("TZ"));
        assert!(is_reserved_environment("_HANDLER"));
        assert!(!is_reserved_environment("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_reserved_environment("STRIPE_KEY"));
    }
}
