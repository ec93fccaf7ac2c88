//! Real-socket tests: each case runs an axum endpoint on 127.0.0.1:0.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tower::ServiceExt;

use base64::Engine as _;

use super::*;
use crate::Name;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/fn")
}

fn invocation(payload: &'static [u8]) -> Invocation {
    Invocation {
        request_id: "req-7".into(),
        function: Name::new("f"),
        trigger: Name::new("t"),
        payload: Bytes::from_static(payload),
        deadline: Some(Instant::now() + Duration::from_secs(5)),
        client_context: None,
        log_tail: None,
    }
}

async fn call(endpoint: &str) -> Result<InvocationResponse, InvokeError> {
    let function = HttpFunction::new(HttpFunction::default_client(), endpoint).expect("valid");
    function.oneshot(invocation(br#"{"n":1}"#)).await
}

#[tokio::test]
async fn success_returns_the_body_and_sends_lambda_headers() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap, body: String| async move {
            let id = headers["lambda-runtime-aws-request-id"]
                .to_str()
                .unwrap_or("")
                .to_owned();
            let deadline: u128 = headers["lambda-runtime-deadline-ms"]
                .to_str()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            assert!(
                deadline > now && deadline <= now + 5_100,
                "deadline {deadline} now {now}"
            );
            format!("{id}:{body}")
        }),
    ))
    .await;
    let response = call(&endpoint).await.expect("success");
    assert_eq!(response.payload, Bytes::from_static(br#"req-7:{"n":1}"#));
}

#[tokio::test]
async fn declared_function_error_is_a_function_error() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async {
            (
                [("x-amz-function-error", "Handled")],
                r#"{"errorMessage":"no"}"#,
            )
        }),
    ))
    .await;
    let err = call(&endpoint).await.expect_err("function error");
    assert_eq!(err.class(), crate::ErrorClass::Function);
    match err {
        InvokeError::Function {
            error_type,
            payload,
        } => {
            assert_eq!(error_type, "Handled");
            assert_eq!(payload, Bytes::from_static(br#"{"errorMessage":"no"}"#));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_function_errors_with_a_lambda_document() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    ))
    .await;
    match call(&endpoint).await.expect_err("function error") {
        InvokeError::Function {
            error_type,
            payload,
        } => {
            assert_eq!(error_type, "HttpStatus500");
            let doc: serde_json::Value = serde_json::from_slice(&payload).expect("json");
            assert_eq!(doc["errorType"], "HttpStatus500");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn too_many_requests_is_a_throttle() {
    let endpoint =
        serve(Router::new().route("/fn", post(|| async { StatusCode::TOO_MANY_REQUESTS }))).await;
    let err = call(&endpoint).await.expect_err("throttle");
    assert_eq!(err.class(), crate::ErrorClass::Throttle);
}

#[tokio::test]
async fn other_client_errors_are_permanent() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|| async { (StatusCode::PAYLOAD_TOO_LARGE, "too big") }),
    ))
    .await;
    let err = call(&endpoint).await.expect_err("permanent");
    assert_eq!(err.class(), crate::ErrorClass::Permanent);
    assert!(
        matches!(err, InvokeError::Permanent { status: 413, ref message } if message == "too big")
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // The redirect's target would succeed: following it would hide the function's answer.
    let endpoint = serve(
        Router::new()
            .route(
                "/fn",
                post(|| async {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(http::header::LOCATION, "/elsewhere")],
                        "moved",
                    )
                }),
            )
            .route("/elsewhere", post(|| async { "followed" })),
    )
    .await;
    let err = call(&endpoint).await.expect_err("permanent");
    assert!(
        matches!(err, InvokeError::Permanent { status: 307, ref message } if message == "moved"),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_endpoint_sees_the_headers_reqwest_sent() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap| async move {
            let mut names: Vec<String> = headers
                .iter()
                .map(|(name, value)| format!("{name}={}", value.to_str().unwrap_or("?")))
                .filter(|line| !line.starts_with("lambda-runtime-deadline-ms="))
                .collect();
            names.sort();
            names.join(";")
        }),
    ))
    .await;
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches("/fn")
        .to_owned();
    let response = call(&endpoint).await.expect("success");
    assert_eq!(
        response.payload,
        format!(
            "accept=*/*;content-length=7;content-type=application/json;host={host};lambda-runtime-aws-request-id=req-7"
        )
    );
}

#[tokio::test]
async fn connection_refused_is_a_system_error() {
    // Bind then drop a listener, so the port is known to be closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = call(&format!("http://{addr}/fn"))
        .await
        .expect_err("refused");
    assert_eq!(err.class(), crate::ErrorClass::System);
}

#[tokio::test]
async fn a_body_in_many_chunks_is_assembled_in_order() {
    // 256 KB in 64 KB pieces, more than the client reads at once: it arrives in several chunks.
    let pieces: Vec<Vec<u8>> = (0..4_u8).map(|i| vec![b'a' + i; 64 * 1024]).collect();
    let expected: Vec<u8> = pieces.concat();
    let endpoint = serve(Router::new().route(
        "/fn",
        post(move || {
            let pieces = pieces.clone();
            async move {
                let chunks = pieces.into_iter().map(Ok::<_, std::convert::Infallible>);
                axum::body::Body::from_stream(futures::stream::iter(chunks))
            }
        }),
    ))
    .await;
    let response = call(&endpoint).await.expect("success");
    assert_eq!(response.payload.len(), expected.len());
    assert!(
        response.payload == expected,
        "the chunks, whole and in order"
    );
}

#[tokio::test]
async fn oversized_responses_are_function_errors() {
    let endpoint =
        serve(Router::new().route("/fn", post(|| async { vec![b'a'; SYNC_PAYLOAD_LIMIT + 1] })))
            .await;
    match call(&endpoint).await.expect_err("too large") {
        InvokeError::Function { error_type, .. } => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn endpoints_other_than_http_and_https_are_refused() {
    let client = HttpFunction::default_client();
    assert!(HttpFunction::new(client.clone(), "https://example.com/").is_ok());
    assert!(HttpFunction::new(client.clone(), "ftp://example.com/").is_err());
    assert!(HttpFunction::new(client, "not a url").is_err());
}

#[tokio::test]
async fn a_request_id_that_cannot_be_a_header_fails_without_a_request() {
    // Nothing listens on port 1: had a request been attempted, the error would be a
    // connection failure, not the header's.
    let function =
        HttpFunction::new(HttpFunction::default_client(), "http://127.0.0.1:1/fn").expect("valid");
    let mut bad = invocation(b"{}");
    bad.request_id = "line\nbreak".into();
    let err = function.oneshot(bad).await.expect_err("refused");
    assert_eq!(err.class(), crate::ErrorClass::System);
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.is_some_and(|s| s.contains("header value")),
        "{err:?}"
    );
}

// === execution roles ===

const CANARY_AUTH: &str = "Bearer canary-http-role-71c3";

fn role(headers: &[(&str, &str)], vars: &[(&str, &str)]) -> crate::role::ResolvedRole {
    use impulse_config::{ExecutionRoleConfig, SecretSource};
    let config = ExecutionRoleConfig {
        headers: headers
            .iter()
            .map(|(name, var)| ((*name).to_owned(), SecretSource::Env((*var).to_owned())))
            .collect(),
        ..Default::default()
    };
    let env: std::collections::BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    crate::role::ResolvedRole::resolve("payments", &config, &env).expect("resolves")
}

#[tokio::test]
async fn a_role_s_headers_reach_its_function_and_no_other() {
    // The endpoint answers with the role headers it received (or `-`).
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap| async move {
            let seen = |name: &str| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            format!("{}|{}", seen("authorization"), seen("x-tenant"))
        }),
    ))
    .await;
    let payments = role(
        &[("Authorization", "PAY_AUTH"), ("X-Tenant", "PAY_TENANT")],
        &[("PAY_AUTH", CANARY_AUTH), ("PAY_TENANT", "acme")],
    );
    let client = HttpFunction::default_client();
    let with_role = HttpFunction::new(client.clone(), &endpoint)
        .expect("valid")
        .with_role(&payments);
    let without = HttpFunction::new(client, &endpoint).expect("valid");

    for _ in 0..2 {
        // Every request carries them, not only the first.
        let response = with_role.invoke(invocation(b"{}")).await.expect("success");
        assert_eq!(response.payload, format!("{CANARY_AUTH}|acme"));
    }
    let response = without.invoke(invocation(b"{}")).await.expect("success");
    assert_eq!(
        response.payload, "|",
        "a function without the role gets none"
    );

    let debug = format!("{with_role:?} {payments:?}");
    assert!(!debug.contains("canary"), "{debug}");
}

#[test]
fn a_role_without_headers_adds_nothing_per_request() {
    let empty = role(&[], &[]);
    let function = HttpFunction::new(HttpFunction::default_client(), "http://127.0.0.1:1/fn")
        .expect("valid")
        .with_role(&empty);
    assert!(function.role_headers.is_none());
}

#[test]
fn the_headers_the_invoker_sets_are_reserved_for_roles() {
    for name in [
        http::header::CONTENT_TYPE,
        http::header::CONTENT_LENGTH,
        http::header::HOST,
        REQUEST_ID_HEADER,
        DEADLINE_HEADER,
    ] {
        assert!(
            impulse_config::is_reserved_header(name.as_str()),
            "{name} must be refused in execution_roles.*.headers"
        );
    }
}

// === credentials in the endpoint ===

const CANARY: &str = "canary-pw-7f3a";

/// Every string an error offers: `Display`, `Debug` and each cause's `Display`.
fn all_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{err} {err:?}");
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(&format!(" {inner} {inner:?}"));
        cause = inner.source();
    }
    text
}

#[tokio::test]
async fn endpoint_credentials_are_sent_as_basic_auth() {
    let endpoint = serve(Router::new().route(
        "/fn",
        post(|headers: HeaderMap| async move {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    ))
    .await;
    // A percent-encoded `@` in the password is decoded, as a browser or curl would.
    let with_credentials = endpoint.replace("http://", &format!("http://svc:{CANARY}%40x@"));
    let response = call(&with_credentials).await.expect("success");
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("svc:{CANARY}@x"));
    assert_eq!(response.payload, format!("Basic {expected}"));
}

#[tokio::test]
async fn endpoint_credentials_appear_in_no_error_or_debug_output() {
    // Nothing listens on port 1: the call fails in transport, and reqwest's error names the URL.
    let function = HttpFunction::new(
        HttpFunction::default_client(),
        &format!("http://svc:{CANARY}@127.0.0.1:1/fn"),
    )
    .expect("valid");
    let debug = format!("{function:?}");
    assert!(!debug.contains(CANARY), "{debug}");
    let err = function
        .oneshot(invocation(b"{}"))
        .await
        .expect_err("refused");
    assert_eq!(err.class(), crate::ErrorClass::System);
    let text = all_text(&err);
    assert!(
        text.contains("127.0.0.1:1"),
        "the error should name the endpoint: {text}"
    );
    assert!(!text.contains(CANARY), "{text}");
    let document = String::from_utf8_lossy(&err.document("req-1")).into_owned();
    assert!(!document.contains(CANARY), "{document}");

    let refused = HttpFunction::new(
        HttpFunction::default_client(),
        &format!("ftp://svc:{CANARY}@127.0.0.1/fn"),
    )
    .expect_err("not http");
    let text = all_text(&refused);
    assert!(text.contains("svc:***@127.0.0.1"), "{text}");
    assert!(!text.contains(CANARY), "{text}");
}

// === https ===

mod https {
    use std::sync::Arc;

    use impulse_config::HttpTlsConfig;
    use impulse_test_support::tls::{PkiFiles, TestPki};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    struct Fixture {
        files: PkiFiles,
        pki: TestPki,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let pki = TestPki::generate();
        let dir = tempfile::tempdir().expect("a temp dir");
        Fixture {
            files: pki.write_to(dir.path()),
            pki,
            _dir: dir,
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// The server's side: its certificate, and when `client_ca` is given, client certificates
    /// signed by that CA are required.
    fn server_config(pki: &TestPki, client_ca: Option<&str>) -> rustls::ServerConfig {
        let chain = CertificateDer::pem_slice_iter(pki.server.certificate.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(pki.server.key.as_bytes()).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(certificate.expect("CA")).expect("a trust anchor");
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        builder
            .with_single_cert(chain, key)
            .expect("the server's certificate and key")
    }

    /// An HTTPS function answering `POST /fn` with `ok`; returns its endpoint on `localhost`.
    async fn serve_https(config: rustls::ServerConfig) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let router = Router::new().route("/fn", post(|| async { "ok" }));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    // A refused handshake is what some cases test; the client sees it.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |request| router.clone().oneshot(request));
                    // A client that goes away mid-request is not this server's concern.
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await
                        .ok();
                });
            }
        });
        format!("https://localhost:{port}/fn")
    }

    async fn call_with(
        client: reqwest::Client,
        endpoint: &str,
    ) -> Result<InvocationResponse, InvokeError> {
        let function = HttpFunction::new(client, endpoint).expect("valid");
        function.oneshot(invocation(b"{}")).await
    }

    fn ca_only(files: &PkiFiles) -> HttpTlsConfig {
        HttpTlsConfig {
            ca_file: Some(files.ca.clone()),
            client_certificate: None,
            client_key: None,
        }
    }

    #[tokio::test]
    async fn a_private_ca_in_ca_file_is_trusted() {
        let f = fixture();
        let endpoint = serve_https(server_config(&f.pki, None)).await;
        let client = HttpFunction::tls_client(Some(&ca_only(&f.files)), None).expect("client");
        let response = call_with(client, &endpoint).await.expect("success");
        assert_eq!(response.payload, "ok");
        // By address too: the certificate names 127.0.0.1.
        let client = HttpFunction::tls_client(Some(&ca_only(&f.files)), None).expect("client");
        let by_ip = endpoint.replace("localhost", "127.0.0.1");
        assert_eq!(
            call_with(client, &by_ip).await.expect("success").payload,
            "ok"
        );
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_a_system_error_that_says_so() {
        let f = fixture();
        let endpoint = serve_https(server_config(&f.pki, None)).await;
        let with_credentials = endpoint.replace("https://", &format!("https://svc:{CANARY}@"));
        // The system's roots do not include the test CA.
        let err = call_with(HttpFunction::default_client(), &with_credentials)
            .await
            .expect_err("untrusted");
        assert_eq!(err.class(), crate::ErrorClass::System);
        let message = err.to_string();
        assert!(message.contains("certificate"), "{message}");
        assert!(!all_text(&err).contains(CANARY), "{message}");

        // Another CA's file does not help either.
        let other = TestPki::generate_named("Another CA");
        let dir = tempfile::tempdir().expect("a temp dir");
        let other_files = other.write_to(dir.path());
        let client = HttpFunction::tls_client(Some(&ca_only(&other_files)), None).expect("client");
        let err = call_with(client, &endpoint).await.expect_err("untrusted");
        assert_eq!(err.class(), crate::ErrorClass::System);
        assert!(err.to_string().contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn a_server_requiring_client_certificates_accepts_ours_and_refuses_none() {
        let f = fixture();
        let endpoint = serve_https(server_config(&f.pki, Some(&f.pki.ca))).await;
        let mutual = HttpTlsConfig {
            client_certificate: Some(f.files.client_certificate.clone()),
            client_key: Some(f.files.client_key.clone()),
            ..ca_only(&f.files)
        };
        let client = HttpFunction::tls_client(Some(&mutual), None).expect("client");
        assert_eq!(
            call_with(client, &endpoint).await.expect("success").payload,
            "ok"
        );

        let client = HttpFunction::tls_client(Some(&ca_only(&f.files)), None).expect("client");
        let err = call_with(client, &endpoint)
            .await
            .expect_err("no client certificate");
        assert_eq!(err.class(), crate::ErrorClass::System, "{err}");
    }

    /// The role `mtls` holding the fixture's client certificate.
    fn certificate_role(files: &PkiFiles) -> crate::role::ResolvedRole {
        let config = impulse_config::ExecutionRoleConfig {
            client_certificate: Some(files.client_certificate.clone()),
            client_key: Some(files.client_key.clone()),
            ..Default::default()
        };
        let no_env = std::collections::BTreeMap::<String, String>::new();
        crate::role::ResolvedRole::resolve("mtls", &config, &no_env).expect("resolves")
    }

    #[tokio::test]
    async fn an_execution_role_s_client_certificate_is_presented() {
        let f = fixture();
        let endpoint = serve_https(server_config(&f.pki, Some(&f.pki.ca))).await;
        let role = certificate_role(&f.files);
        let client =
            HttpFunction::tls_client(Some(&ca_only(&f.files)), Some(&role)).expect("client");
        assert_eq!(
            call_with(client, &endpoint).await.expect("success").payload,
            "ok"
        );
        assert!(!format!("{role:?}").contains("PRIVATE KEY"), "{role:?}");

        // Its own certificate as well as the role's is ambiguous.
        let both = HttpTlsConfig {
            client_certificate: Some(f.files.client_certificate.clone()),
            client_key: Some(f.files.client_key.clone()),
            ..ca_only(&f.files)
        };
        assert!(matches!(
            HttpFunction::tls_client(Some(&both), Some(&role)),
            Err(TlsError::TwoIdentities)
        ));
    }

    #[test]
    fn an_unreadable_role_key_names_the_role_and_the_setting() {
        let f = fixture();
        let config = impulse_config::ExecutionRoleConfig {
            client_certificate: Some(f.files.client_certificate.clone()),
            client_key: Some(f.files.ca.with_file_name("missing-key.pem")),
            ..Default::default()
        };
        let no_env = std::collections::BTreeMap::<String, String>::new();
        let errors = crate::role::ResolvedRole::resolve("mtls", &config, &no_env)
            .expect_err("a missing key");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let message = errors[0].to_string();
        assert!(
            message.starts_with("execution_roles.mtls.client_key: cannot read "),
            "{message}"
        );
    }

    #[test]
    fn unusable_tls_files_are_errors_naming_the_setting() {
        let f = fixture();
        let missing = HttpTlsConfig {
            ca_file: Some(f.files.ca.with_file_name("missing.pem")),
            ..ca_only(&f.files)
        };
        let err = HttpFunction::tls_client(Some(&missing), None).expect_err("missing file");
        assert!(
            err.to_string().starts_with("ca_file: cannot read "),
            "{err}"
        );

        // The client's key with the server's certificate.
        let mismatched = HttpTlsConfig {
            client_certificate: Some(f.files.server_certificate.clone()),
            client_key: Some(f.files.client_key.clone()),
            ..ca_only(&f.files)
        };
        let err = HttpFunction::tls_client(Some(&mismatched), None).expect_err("mismatched");
        let message = err.to_string();
        assert!(
            message.starts_with("client_certificate and client_key: "),
            "{message}"
        );
        let key_line = f.pki.client.key.lines().nth(1).expect("a base64 line");
        assert!(!message.contains(key_line), "{message}");

        let half = HttpTlsConfig {
            client_certificate: Some(f.files.client_certificate.clone()),
            ..ca_only(&f.files)
        };
        assert!(matches!(
            HttpFunction::tls_client(Some(&half), None),
            Err(TlsError::IncompleteIdentity)
        ));
    }
}
