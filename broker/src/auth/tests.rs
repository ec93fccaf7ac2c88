use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use impulse_config::{Format, Role};

use super::{carries_bearer_token, Action, Authenticator, Credential, Denial, RequestHead};

const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";
const CI: &str = "ci-token-0123456789abcdef";
const OTHER: &str = "other-invoker-token-0123";

/// Tokens of every role (the reader's stored as a hash) and one function with a policy.
fn authenticator() -> Authenticator {
    let reader_sha = {
        use sha2::Digest as _;
        hex_string(&sha2::Sha256::digest(READER.as_bytes()))
    };
    let text = format!(
        r#"
[functions.open]
target = {{ type = "http", endpoint = "http://127.0.0.1:9/" }}

[functions.guarded]
target = {{ type = "http", endpoint = "http://127.0.0.1:9/" }}
policy = {{ principals = ["ci"] }}

[auth.tokens.admin]
role = "admin"
token = "{ADMIN}"

[auth.tokens.reader]
role = "read-only"
token_sha256 = "{reader_sha}"

[auth.tokens.ci]
role = "invoker"
token = "{CI}"

[auth.tokens.other]
role = "invoker"
token = "{OTHER}"
"#
    );
    let config = impulse_config::parse(&text, Format::Toml, "t.toml", &HashMap::new())
        .unwrap_or_else(|e| panic!("{e}"));
    Authenticator::new(&config)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn headers(authorization: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(
            "authorization",
            HeaderValue::from_str(value).expect("header"),
        );
    }
    headers
}

/// Identifies and authorizes a body-less request with `authorization`.
fn check(
    auth: &Authenticator,
    authorization: Option<&str>,
    action: Action<'_>,
) -> Result<Option<Role>, Denial> {
    let headers = headers(authorization);
    let uri = Uri::from_static("/");
    let head = RequestHead {
        method: &Method::POST,
        uri: &uri,
        headers: &headers,
    };
    auth.check(&head, b"", action)
        .map(|principal| principal.map(|p| p.role))
}

const INVOKE_OPEN: Action<'static> = Action::Invoke { function: "open" };
const INVOKE_GUARDED: Action<'static> = Action::Invoke {
    function: "guarded",
};

#[test]
fn without_principals_everything_is_open() {
    let config = impulse_config::Config::default();
    let auth = Authenticator::new(&config);
    assert!(!auth.is_enabled());
    assert!(matches!(
        auth.identify(&headers(Some("Bearer whatever"))),
        Ok(Credential::Anonymous)
    ));
    for action in [INVOKE_OPEN, Action::ReadMetrics] {
        assert!(matches!(check(&auth, None, action), Ok(None)));
    }
}

#[test]
fn unknown_callers_are_refused_with_lambdas_error_types() {
    let auth = authenticator();
    let cases = [
        (None, "MissingAuthenticationTokenException"),
        (
            Some("Basic YWRtaW46YWRtaW4="),
            "MissingAuthenticationTokenException",
        ),
        (Some("Bearer"), "MissingAuthenticationTokenException"),
        (
            Some("Bearer wrong-token-0123456789"),
            "UnrecognizedClientException",
        ),
        // A token of another broker, or a prefix of a real one.
        (
            Some("Bearer admin-token-012345678"),
            "UnrecognizedClientException",
        ),
        (Some("Bearer "), "UnrecognizedClientException"),
    ];
    for (authorization, error_type) in cases {
        let denial = check(&auth, authorization, INVOKE_OPEN).expect_err("refused");
        assert_eq!(denial.error_type(), error_type, "{authorization:?}");
        assert_eq!(denial.status(), StatusCode::UNAUTHORIZED);
        // The message never repeats what the caller sent.
        if let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            assert!(
                token.is_empty() || !denial.to_string().contains(token),
                "{denial}"
            );
        }
    }
}

#[test]
fn roles_grant_what_lambdas_managed_policies_grant() {
    let auth = authenticator();
    let bearer = |token: &str| format!("Bearer {token}");
    // (token, may invoke `open`, may read metrics)
    let matrix = [
        (ADMIN, true, true),
        (READER, false, true),
        (CI, true, false),
        (OTHER, true, false),
    ];
    for (token, invoke, metrics) in matrix {
        let reads = [
            (INVOKE_OPEN, invoke),
            (Action::ReadMetrics, metrics),
            (Action::ReadFunctions, metrics),
        ];
        for (action, allowed) in reads {
            let result = check(&auth, Some(&bearer(token)), action);
            match result {
                Ok(Some(_)) => assert!(allowed, "{token} {action:?} was allowed"),
                Err(denial) => {
                    assert!(!allowed, "{token} {action:?}: {denial}");
                    assert_eq!(denial.status(), StatusCode::FORBIDDEN);
                    assert_eq!(denial.error_type(), "AccessDeniedException");
                    assert!(
                        denial.to_string().contains("identity-based policy"),
                        "{denial}"
                    );
                }
                Ok(None) => panic!("a principal was expected"),
            }
        }
    }
    // The scheme is case-insensitive, as HTTP says.
    assert!(check(&auth, Some(&format!("bearer {CI}")), INVOKE_OPEN).is_ok());
}

#[test]
fn a_function_policy_admits_only_its_principals_and_admins() {
    let auth = authenticator();
    assert!(check(&auth, Some(&format!("Bearer {CI}")), INVOKE_GUARDED).is_ok());
    assert!(check(&auth, Some(&format!("Bearer {ADMIN}")), INVOKE_GUARDED).is_ok());
    let denial =
        check(&auth, Some(&format!("Bearer {OTHER}")), INVOKE_GUARDED).expect_err("not listed");
    assert_eq!(denial.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        denial.to_string(),
        "User: other is not authorized to perform: lambda:InvokeFunction on resource: \
         function:guarded because no resource-based policy allows the lambda:InvokeFunction \
         action"
    );
    // An unknown function has no policy: the role decides (the handler then answers 404).
    assert!(check(
        &auth,
        Some(&format!("Bearer {OTHER}")),
        Action::Invoke { function: "ghost" }
    )
    .is_ok());
}

#[test]
fn anonymous_is_refused_once_principals_exist() {
    let auth = authenticator();
    let denial = auth.authorize(None, INVOKE_OPEN).expect_err("refused");
    assert_eq!(denial.error_type(), "MissingAuthenticationTokenException");
}

#[test]
fn signed_requests_by_unknown_keys_are_unrecognized() {
    let auth = authenticator();
    let authorization = "AWS4-HMAC-SHA256 Credential=AKIAUNKNOWN000000000/20261207/us-east-1/\
                         lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=\
                         0000000000000000000000000000000000000000000000000000000000000000";
    let mut headers = headers(Some(authorization));
    headers.insert("x-amz-date", HeaderValue::from_static("20261207T000000Z"));
    headers.insert("host", HeaderValue::from_static("127.0.0.1"));
    let denial = auth.identify(&headers).expect_err("refused");
    assert_eq!(denial.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(denial.error_type(), "UnrecognizedClientException");
}

#[test]
fn bearer_tokens_are_recognised_for_stripping() {
    assert!(carries_bearer_token(&headers(Some("Bearer abc"))));
    assert!(carries_bearer_token(&headers(Some("BEARER abc"))));
    assert!(!carries_bearer_token(&headers(Some(
        "AWS4-HMAC-SHA256 Credential=x"
    ))));
    assert!(!carries_bearer_token(&headers(None)));
}
