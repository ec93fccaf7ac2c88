//! HTTP triggers: methods, body size, and a path axum can route.

use std::collections::BTreeSet;

use crate::locate::FieldPath;
use crate::model::{HttpTriggerConfig, InvocationMode};
use crate::validate::Validator;

/// Path prefix of the Lambda Invoke API, which HTTP triggers cannot use.
const INVOKE_API_PREFIX: &str = "/2015-03-31";

impl Validator {
    /// Validates an HTTP trigger; returns its route with parameter names erased, for the
    /// duplicate check (axum cannot hold `/a/{x}` and `/a/{y}` together).
    pub(super) fn http(&mut self, path: &FieldPath, http: &HttpTriggerConfig) -> Option<String> {
        for (i, method) in http.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(is_tchar) {
                self.error(
                    path.key("methods").index(i),
                    format!("invalid HTTP method \"{method}\""),
                );
            }
        }
        if let Some(size) = http.max_body_size {
            let limit = http.invocation.body_limit();
            if size == 0 || size > limit {
                let mode = match http.invocation {
                    InvocationMode::Sync => "sync",
                    InvocationMode::Async => "async",
                };
                self.error(
                    path.key("max_body_size"),
                    format!("must be between 1 and {limit} (Lambda's {mode} payload limit)"),
                );
            }
        }
        match route_key(&http.path) {
            Ok(route) => Some(route),
            Err(message) => {
                self.error(path.key("path"), message);
                None
            }
        }
    }
}

/// RFC 9110 `tchar`: the characters of an HTTP method token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks an HTTP trigger path; returns it with parameter names erased.
fn route_key(path: &str) -> Result<String, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must start with `/`".to_owned());
    };
    if path == INVOKE_API_PREFIX || path.starts_with(&format!("{INVOKE_API_PREFIX}/")) {
        return Err(format!(
            "paths under {INVOKE_API_PREFIX}/ are reserved for the Lambda Invoke API"
        ));
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut params = BTreeSet::new();
    let mut route = String::new();
    for (i, segment) in segments.iter().enumerate() {
        route.push('/');
        if !segment.contains(['{', '}']) {
            if segment.is_empty() && i != last {
                return Err("empty path segment (`//`)".to_owned());
            }
            if let Some(c) = segment.chars().find(|c| !is_path_char(*c)) {
                return Err(format!("invalid character {c:?} in path"));
            }
            route.push_str(segment);
            continue;
        }
        let (name, catch_all) = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) => match inner.strip_prefix('*') {
                Some(name) => (name, true),
                None => (inner, false),
            },
            None => {
                return Err(format!(
                    "segment `{segment}`: a parameter must be a whole segment, `{{name}}` or \
                     `{{*rest}}`"
                ))
            }
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "segment `{segment}`: parameter names use A-Z, a-z, 0-9 and `_`"
            ));
        }
        if catch_all && i != last {
            return Err(format!(
                "segment `{segment}`: a catch-all parameter must be the last segment"
            ));
        }
        if !params.insert(name) {
            return Err(format!("parameter `{name}` appears twice"));
        }
        route.push_str(if catch_all { "{*}" } else { "{}" });
    }
    Ok(route)
}

/// RFC 3986 `pchar` (unreserved, sub-delims, `:`, `@`, and `%` for escapes).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route_key("/"), Ok("/".to_owned()));
        assert_eq!(route_key("/orders/{id}"), Ok("/orders/{}".to_owned()));
        assert_eq!(route_key("/orders/{other}"), Ok("/orders/{}".to_owned()));
        assert_eq!(route_key("/files/{*rest}"), Ok("/files/{*}".to_owned()));
        assert!(route_key("orders").is_err());
        assert!(route_key("/2015-03-31/functions/x/invocations").is_err());
        assert!(route_key("/2015-03-31").is_err());
        assert!(route_key("/2015-03-310").is_ok());
        assert!(route_key("/a/{*rest}/b").is_err());
        assert!(route_key("/a/x{id}").is_err());
        assert!(route_key("/a/{id}/{id}").is_err());
        assert!(route_key("/a//b").is_err());
        assert!(route_key("/a b").is_err());
        assert!(route_key("/a?b").is_err());
    }
}
