//! `[functions.<name>]`: targets, timeouts, rates, retries and destinations of each function.

use std::time::Duration;

use super::Validator;
use crate::locate::FieldPath;
use crate::model::{FunctionConfig, TargetConfig};

/// Process environment variables the broker sets for Runtime-API workers.
const RESERVED_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "AWS_LAMBDA_RUNTIME_API",
        "the broker sets it to the worker's Runtime API address",
    ),
    ("_HANDLER", "set `handler` instead"),
];

impl Validator {
    pub(super) fn function(&mut self, name: &str, function: &FunctionConfig) {
        let path = FieldPath::keys(["functions", name]);
        self.name(&path, "function", name);
        self.target(&path.key("target"), &function.target, function);
        if function.timeout.is_zero() || function.timeout > Duration::from_secs(900) {
            self.error(
                path.key("timeout"),
                "must be greater than 0 and at most 900s",
            );
        }
        if let Some(rate) = &function.rate {
            self.positive(path.key("rate").key("per_second"), rate.per_second);
            if let Some(burst) = rate.burst {
                self.positive(path.key("rate").key("burst"), burst);
            }
        }
        let delay = &function.retry_delay;
        let delay_path = path.key("retry_delay");
        if delay.base.is_zero() {
            self.error(delay_path.key("base"), "must be greater than 0");
        }
        if delay.max < delay.base {
            self.error(
                delay_path.key("max"),
                "must not be less than retry_delay.base",
            );
        }
        if !(0.0..=1.0).contains(&delay.jitter) {
            self.error(delay_path.key("jitter"), "must be between 0 and 1");
        }
        self.range_u32(
            path.key("max_retry_attempts"),
            function.max_retry_attempts,
            0,
            2,
        );
        self.duration(
            path.key("max_event_age"),
            function.max_event_age,
            Duration::from_secs(60),
            Duration::from_secs(6 * 3600),
        );
        if let Some(destination) = &function.on_success {
            self.destination(&path.key("on_success"), destination);
        }
        if let Some(destination) = &function.on_failure {
            self.destination(&path.key("on_failure"), destination);
        }
        self.versions(&path, function);
    }

    /// Checks a target: the function's own (`$LATEST`) or one of its versions'. `target` is its
    /// path; `function` gives the settings the target is checked against.
    pub(super) fn target(
        &mut self,
        target: &FieldPath,
        target_config: &TargetConfig,
        function: &FunctionConfig,
    ) {
        match target_config {
            TargetConfig::Http(http) => {
                if let Err(message) = check_http_url(&http.endpoint) {
                    self.error(target.key("endpoint"), message);
                }
                if let Some(tls) = &http.tls {
                    self.http_tls(target, &http.endpoint, tls);
                }
            }
            TargetConfig::Process(process) => {
                self.not_empty(target.key("command"), &process.command);
                if process
                    .handler
                    .as_deref()
                    .is_some_and(|h| h.trim().is_empty())
                {
                    self.error(target.key("handler"), "must not be empty when set");
                }
                for key in process.environment.keys() {
                    let key_path = target.key("environment").key(key);
                    if key.is_empty() || key.contains(['=', '\0']) {
                        self.error(key_path, "invalid environment variable name");
                    } else if let Some((_, why)) =
                        RESERVED_ENVIRONMENT.iter().find(|(k, _)| k == key)
                    {
                        self.error(key_path, format!("reserved: {why}"));
                    }
                }
                self.range_u32(target.key("memory_size"), process.memory_size, 128, 10_240);
                if process.idle_timeout.is_zero() {
                    self.error(target.key("idle_timeout"), "must be greater than 0");
                }
                if let Some(reserved) = function.reserved_concurrency {
                    if process.min_warm > reserved {
                        self.error(
                            target.key("min_warm"),
                            format!("must not exceed reserved_concurrency ({reserved})"),
                        );
                    }
                }
            }
        }
    }
}

fn check_http_url(endpoint: &str) -> Result<(), String> {
    let url = url::Url::parse(endpoint.trim()).map_err(|err| {
        format!("invalid URL ({err}); expected an absolute http:// or https:// URL")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}`; expected http:// or https://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        assert!(check_http_url("http://localhost:9000/fn").is_ok());
        assert!(check_http_url("https://example.com").is_ok());
        assert!(check_http_url("ftp://example.com").is_err());
        assert!(check_http_url("localhost:9000").is_err());
        assert!(check_http_url("/relative").is_err());
    }
}
