//! CORS on HTTP triggers, as a function URL does it: preflights are answered here (no
//! invocation, no credentials asked: a browser sends none), and every response's CORS headers
//! are set from the trigger's settings, replacing any the function sent.

use axum::http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use impulse_config::CorsConfig;

/// A trigger's CORS settings, with the header values built once.
#[derive(Debug)]
pub(super) struct Cors {
    /// `None`: any origin (`*`).
    origins: Option<Vec<String>>,
    /// `None`: whatever the preflight asks for (`*`).
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Cors {
    /// Builds from validated settings; names that are not valid header values are left out.
    pub(super) fn new(config: &CorsConfig) -> Self {
        let any = |list: &[String]| list.iter().any(|v| v == "*");
        let joined = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
        Self {
            origins: (!any(&config.allow_origins)).then(|| {
                config
                    .allow_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect()
            }),
            methods: if any(&config.allow_methods) {
                None
            } else {
                joined(&config.allow_methods)
            },
            headers: if any(&config.allow_headers) {
                None
            } else {
                joined(&config.allow_headers)
            },
            expose: (!config.expose_headers.is_empty())
                .then(|| joined(&config.expose_headers))
                .flatten(),
            credentials: config.allow_credentials,
            max_age: config.max_age.map(|age| HeaderValue::from(age.as_secs())),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => {
                let origin_text = origin.to_str().ok()?.to_ascii_lowercase();
                list.contains(&origin_text).then(|| origin.clone())
            }
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` for any other request. An origin not
    /// allowed gets `403` and no CORS headers, which the browser reports as a CORS failure.
    pub(super) fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        if !is_preflight(method, headers) {
            return None;
        }
        let Some(origin) = self.allowed_origin(headers) else {
            return Some(
                (
                    StatusCode::FORBIDDEN,
                    axum::Json(serde_json::json!({
                        "Message": "This origin is not allowed by the trigger's CORS settings."
                    })),
                )
                    .into_response(),
            );
        };
        let mut response = StatusCode::OK.into_response();
        let out = response.headers_mut();
        self.set_origin(out, origin);
        let echo = |name: HeaderName| headers.get(name).cloned();
        let methods = self
            .methods
            .clone()
            .or_else(|| echo(ACCESS_CONTROL_REQUEST_METHOD));
        let allowed_headers = self
            .headers
            .clone()
            .or_else(|| echo(ACCESS_CONTROL_REQUEST_HEADERS));
        for (name, value) in [
            (ACCESS_CONTROL_ALLOW_METHODS, methods),
            (ACCESS_CONTROL_ALLOW_HEADERS, allowed_headers),
            (ACCESS_CONTROL_MAX_AGE, self.max_age.clone()),
        ] {
            if let Some(value) = value {
                out.insert(name, value);
            }
        }
        Some(response)
    }

    /// Sets the CORS headers of a response to a request with `request_headers`: the
    /// function's own are removed, and an allowed origin gets the configured ones.
    pub(super) fn apply(&self, request_headers: &HeaderMap, response: &mut Response) {
        let out = response.headers_mut();
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            out.remove(name);
        }
        let Some(origin) = self.allowed_origin(request_headers) else {
            return;
        };
        self.set_origin(out, origin);
        if let Some(expose) = &self.expose {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    fn set_origin(&self, out: &mut HeaderMap, origin: HeaderValue) {
        // An echoed origin makes the answer depend on the request's `Origin`: caches must know.
        if origin != "*" {
            out.append(VARY, HeaderValue::from_static("Origin"));
        }
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub(super) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(origins: &[&str]) -> Cors {
        Cors::new(&CorsConfig {
            allow_origins: origins.iter().map(|s| (*s).to_owned()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["x-order".into()],
            allow_credentials: !origins.contains(&"*"),
            max_age: Some(Duration::from_secs(600)),
        })
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn preflight_from_an_allowed_origin() {
        let cors = settings(&["https://app.example.com"]);
        let headers = request(&[
            ("origin", "https://APP.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-trace"),
        ]);
        let response = cors
            .preflight(&Method::OPTIONS, &headers)
            .expect("a preflight");
        assert_eq!(response.status(), StatusCode::OK);
        let out = response.headers();
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://APP.example.com");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_HEADERS], "content-type, x-trace");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(out[VARY], "Origin");
    }

    #[test]
    fn preflight_from_another_origin_is_refused_without_cors_headers() {
        let cors = settings(&["https://app.example.com"]);
        let headers = request(&[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        let response = cors
            .preflight(&Method::OPTIONS, &headers)
            .expect("a preflight");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[test]
    fn other_requests_are_not_preflights() {
        let cors = settings(&["*"]);
        let plain_options = request(&[("origin", "https://a.example")]);
        assert!(cors.preflight(&Method::OPTIONS, &plain_options).is_none());
        let post = request(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(cors.preflight(&Method::POST, &post).is_none());
    }

    #[test]
    fn responses_get_the_configured_headers_not_the_functions() {
        let cors = settings(&["*"]);
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://function-chose.example"),
        );
        cors.apply(&request(&[("origin", "https://a.example")]), &mut response);
        let out = response.headers();
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-order");
        assert!(!out.contains_key(VARY));

        // No Origin (not a browser's cross-origin call): the function's CORS headers are gone
        // and none are added.
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://function-chose.example"),
        );
        cors.apply(&HeaderMap::new(), &mut response);
        assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
