//! The Runtime API without processes: the request-id book, document and header parsing, and the
//! router driven with `oneshot` as a worker would.

use std::convert::Infallible;

use axum::http::Request;
use tower::ServiceExt;

use super::*;

// === the book ===

fn delivered(request_id: &str, invocation_id: &str) -> (Book, oneshot::Receiver<Reply>) {
    let (init, _) = oneshot::channel();
    let mut book = Book::new(init);
    let (reply, rx) = oneshot::channel();
    book.deliver(Arc::from(request_id), invocation_id.to_owned(), None, reply);
    (book, rx)
}

#[test]
fn only_the_current_request_is_answerable_and_only_once() {
    let (mut book, mut rx) = delivered("req-1", "inv-1");
    assert_eq!(book.check("req-2", None), Err(Refusal::InvalidRequestId));
    assert!(book.complete("req-2", None).is_err());
    let sender = book.complete("req-1", None).expect("the current request");
    sender
        .send(Reply::Response(Bytes::from_static(b"ok")))
        .expect("receiver alive");
    assert_eq!(
        rx.try_recv(),
        Ok(Reply::Response(Bytes::from_static(b"ok")))
    );
    // Answered: the same id is now stale.
    assert_eq!(book.check("req-1", None), Err(Refusal::InvalidRequestId));
    assert!(book.complete("req-1", None).is_err());
    // Log lines after the answer still carry it.
    assert_eq!(book.last_request_id.as_deref(), Some("req-1"));
}

#[test]
fn an_echoed_invocation_id_must_match_the_delivery() {
    let (mut book, _rx) = delivered("req-1", "inv-1");
    assert_eq!(
        book.check("req-1", Some("inv-0")),
        Err(Refusal::InvalidRequestId)
    );
    assert!(book.complete("req-1", Some("inv-0")).is_err());
    // A retry of the same request id on the same environment is a new delivery: only its
    // invocation id is accepted.
    assert!(book.complete("req-1", Some("inv-1")).is_ok());
}

#[test]
fn nothing_is_answerable_before_a_delivery() {
    let (init, mut init_rx) = oneshot::channel();
    let mut book = Book::new(init);
    assert_eq!(book.check("", None), Err(Refusal::InvalidRequestId));
    assert!(book.end_init(InitSignal::Ready));
    assert_eq!(init_rx.try_recv(), Ok(InitSignal::Ready));
    assert!(
        !book.end_init(InitSignal::Ready),
        "init ends once, whatever the worker sends later"
    );
}

// === error documents ===

#[test]
fn a_specific_header_names_the_error_and_the_document_is_kept() {
    let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["a"]}"#;
    let (error_type, payload) = error_document(Some("Runtime.ImportModuleError"), body);
    assert_eq!(error_type, "Runtime.ImportModuleError");
    assert_eq!(payload, Bytes::from_static(body));
}

#[test]
fn a_generic_or_unusable_header_defers_to_the_document() {
    let body = br#"{"errorMessage":"boom","errorType":"Handled.TestFailure"}"#;
    for header in [
        Some("unhandled"),
        Some("Unhandled"),
        Some(""),
        Some("  "),
        None,
    ] {
        assert_eq!(
            error_document(header, body).0,
            "Handled.TestFailure",
            "{header:?}"
        );
    }
    assert_eq!(
        error_document(Some("bad\u{7f}type"), body).0,
        "Handled.TestFailure"
    );
    assert_eq!(error_document(None, br#"{"errorType":7}"#).0, "Unhandled");
    assert_eq!(error_document(None, b"{}").0, "Unhandled");
}

#[test]
fn junk_documents_are_replaced_by_a_valid_one() {
    for body in [&b"not json"[..], b"[1,2]", b"\"text\"", b"", b"\xff\xfe{"] {
        let (error_type, payload) = error_document(Some("Custom.Error"), body);
        assert_eq!(error_type, "Custom.Error");
        let document: serde_json::Value =
            serde_json::from_slice(&payload).expect("a valid document");
        assert_eq!(document["errorType"], "Custom.Error");
        assert!(document["errorMessage"].is_string());
    }
}

#[test]
fn long_error_types_are_cut() {
    let long = "E".repeat(10_000);
    let (error_type, _) = error_document(Some(&long), b"{}");
    assert_eq!(error_type.len(), MAX_ERROR_TYPE);
}

// === header values ===

#[test]
fn request_ids_are_encoded_for_headers_and_paths() {
    let uuid = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";
    assert_eq!(wire_request_id(uuid, "inv"), uuid);
    assert_eq!(wire_request_id("orders/3/1042", "inv"), "orders%2F3%2F1042");
    assert_eq!(wire_request_id("a b\nc", "inv"), "a%20b%0Ac");
    assert_eq!(wire_request_id("", "inv-9"), "inv-9");
    assert!(HeaderValue::from_str(&wire_request_id("é\u{0}", "inv")).is_ok());
}

#[test]
fn trace_ids_have_x_rays_shape() {
    let trace = trace_id();
    let parts: Vec<&str> = trace.split(';').collect();
    assert_eq!(parts.len(), 3, "{trace}");
    let root = parts[0].strip_prefix("Root=1-").expect("root");
    let (time, random) = root.split_once('-').expect("two fields");
    assert_eq!(time.len(), 8);
    assert_eq!(random.len(), 24);
    assert!(time
        .chars()
        .chain(random.chars())
        .all(|c| c.is_ascii_hexdigit()));
    let parent = parts[1].strip_prefix("Parent=").expect("parent");
    assert_eq!(parent.len(), 16);
    assert_eq!(parts[2], "Sampled=0");
}

#[test]
fn deadlines_become_epoch_milliseconds() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let at = u128::from(epoch_millis(Instant::now() + Duration::from_secs(3)));
    assert!(at >= now + 2_900 && at <= now + 3_100, "{at} vs {now}");
    // A deadline already passed is "now", never an underflow.
    let past = u128::from(epoch_millis(Instant::now() - Duration::from_millis(1)));
    assert!(past >= now);
}

// === the router ===

struct Harness {
    router: Router,
    jobs: mpsc::Sender<Job>,
    init: oneshot::Receiver<InitSignal>,
    exit: tokio::sync::watch::Sender<Option<String>>,
}

fn harness() -> Harness {
    let (jobs, jobs_rx) = mpsc::channel(1);
    let (init_tx, init) = oneshot::channel();
    let (exit, exited) = tokio::sync::watch::channel(None);
    let arn = HeaderValue::from_static("arn:aws:lambda:local:000000000000:function:f:$LATEST");
    let api = Arc::new(RuntimeApi::new(arn, jobs_rx, init_tx, exited));
    Harness {
        router: api.router(),
        jobs,
        init,
        exit,
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(format!("/2018-06-01/runtime{path}"))
        .body(Body::empty())
        .expect("request")
}

fn post(path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut request = Request::post(format!("/2018-06-01/runtime{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).expect("request")
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.expect("infallible")
}

/// Hands `request_id` to the worker and returns `/next`'s response and the reply channel.
async fn deliver(h: &Harness, request_id: &str) -> (Response, oneshot::Receiver<Reply>) {
    deliver_with(h, request_id, None).await
}

/// [`deliver`] with a client context.
async fn deliver_with(
    h: &Harness,
    request_id: &str,
    client_context: Option<HeaderValue>,
) -> (Response, oneshot::Receiver<Reply>) {
    let next = tokio::spawn(send_owned(h.router.clone(), get("/invocation/next")));
    let (reply, reply_rx) = oneshot::channel();
    h.jobs
        .send(Job {
            request_id: Arc::from(request_id),
            payload: Bytes::from_static(br#"{"k":1}"#),
            deadline: Instant::now() + Duration::from_secs(5),
            client_context,
            log_tail: None,
            reply,
        })
        .await
        .expect("the API is alive");
    (next.await.expect("join"), reply_rx)
}

async fn send_owned(router: Router, request: Request<Body>) -> Response {
    send(&router, request).await
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_owned()
}

#[tokio::test]
async fn next_ends_init_and_carries_lambdas_headers() {
    let mut h = harness();
    let (next, _reply) = deliver(&h, "req-1").await;
    assert_eq!(h.init.try_recv(), Ok(InitSignal::Ready));
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(header(&next, REQUEST_ID), "req-1");
    assert_eq!(
        header(&next, FUNCTION_ARN),
        "arn:aws:lambda:local:000000000000:function:f:$LATEST"
    );
    assert!(header(&next, DEADLINE_MS).parse::<u128>().is_ok());
    assert!(header(&next, TRACE_ID).starts_with("Root=1-"));
    assert_eq!(header(&next, INVOCATION_ID).len(), 32);
    assert!(next
        .headers()
        .get("lambda-runtime-client-context")
        .is_none());
    assert!(next
        .headers()
        .get("lambda-runtime-cognito-identity")
        .is_none());
    let body = next.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, Bytes::from_static(br#"{"k":1}"#));
}

#[tokio::test]
async fn responses_complete_only_the_current_request() {
    let h = harness();
    let (_next, mut reply) = deliver(&h, "req-1").await;
    let stranger = send(
        &h.router,
        post("/invocation/req-0/response", &[], Body::from("x")),
    )
    .await;
    assert_eq!(stranger.status(), StatusCode::BAD_REQUEST);
    assert!(reply.try_recv().is_err(), "nothing completed");

    let ok = send(
        &h.router,
        post("/invocation/req-1/response", &[], Body::from("42")),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    assert_eq!(reply.await, Ok(Reply::Response(Bytes::from_static(b"42"))));

    let again = send(
        &h.router,
        post("/invocation/req-1/response", &[], Body::from("43")),
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let error = send(
        &h.router,
        post("/invocation/req-1/error", &[], Body::from("{}")),
    )
    .await;
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let init = send(&h.router, post("/init/error", &[], Body::from("{}"))).await;
    assert_eq!(init.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn encoded_request_ids_match_the_original() {
    let h = harness();
    let (next, reply) = deliver(&h, "orders/3/1042").await;
    let wire = header(&next, REQUEST_ID);
    assert_eq!(wire, "orders%2F3%2F1042");
    let ok = send(
        &h.router,
        post(
            &format!("/invocation/{wire}/response"),
            &[],
            Body::from("1"),
        ),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    assert_eq!(reply.await, Ok(Reply::Response(Bytes::from_static(b"1"))));
}

#[tokio::test]
async fn errors_carry_the_type_and_document() {
    let h = harness();
    let (next, reply) = deliver(&h, "req-1").await;
    let invocation_id = header(&next, INVOCATION_ID);
    let wrong = send(
        &h.router,
        post(
            "/invocation/req-1/error",
            &[(INVOCATION_ID, "someone-else")],
            Body::from("{}"),
        ),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let body = r#"{"errorMessage":"no","errorType":"Oops"}"#;
    let ok = send(
        &h.router,
        post(
            "/invocation/req-1/error",
            &[(ERROR_TYPE, "Custom.Oops"), (INVOCATION_ID, &invocation_id)],
            Body::from(body),
        ),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    assert_eq!(
        reply.await,
        Ok(Reply::Error {
            error_type: "Custom.Oops".to_owned(),
            payload: Bytes::from_static(body.as_bytes()),
        })
    );
}

/// A body of `len` bytes in 64 KB chunks, without a declared length.
fn streamed(len: usize) -> Body {
    let chunks = (0..len).step_by(64 * 1024).map(move |start| {
        Ok::<_, Infallible>(Bytes::from(vec![b'x'; (len - start).min(64 * 1024)]))
    });
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn oversized_responses_fail_the_invocation_with_413() {
    let h = harness();
    let (_next, reply) = deliver(&h, "req-1").await;
    let huge = send(
        &h.router,
        post(
            "/invocation/req-1/response",
            &[],
            streamed(SYNC_PAYLOAD_LIMIT + 1),
        ),
    )
    .await;
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.await, Ok(Reply::TooLarge));

    // Exactly the limit is fine.
    let (_next, reply) = deliver(&h, "req-2").await;
    let fits = send(
        &h.router,
        post(
            "/invocation/req-2/response",
            &[],
            streamed(SYNC_PAYLOAD_LIMIT),
        ),
    )
    .await;
    assert_eq!(fits.status(), StatusCode::ACCEPTED);
    assert!(matches!(reply.await, Ok(Reply::Response(b)) if b.len() == SYNC_PAYLOAD_LIMIT));
}

#[tokio::test]
async fn a_declared_oversized_length_is_refused_before_reading() {
    let h = harness();
    let (_next, reply) = deliver(&h, "req-1").await;
    let declared = (SYNC_PAYLOAD_LIMIT + 1).to_string();
    let huge = send(
        &h.router,
        post(
            "/invocation/req-1/response",
            &[("content-length", &declared)],
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.await, Ok(Reply::TooLarge));
}

#[tokio::test]
async fn init_errors_end_init() {
    let mut h = harness();
    let body =
        r#"{"errorMessage":"Unable to import module 'x'","errorType":"Runtime.ImportModuleError"}"#;
    let response = send(
        &h.router,
        post(
            "/init/error",
            &[(ERROR_TYPE, "Runtime.ImportModuleError")],
            Body::from(body),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        h.init.try_recv(),
        Ok(InitSignal::Failed {
            error_type: "Runtime.ImportModuleError".to_owned(),
            payload: Bytes::from_static(body.as_bytes()),
        })
    );
    let again = send(&h.router, post("/init/error", &[], Body::from("{}"))).await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(start_paused = true)]
async fn next_is_left_unanswered_at_teardown_until_the_worker_is_gone() {
    let h = harness();
    let mut next = tokio::spawn(send_owned(h.router.clone(), get("/invocation/next")));
    drop(h.jobs);
    // The worker gets SIGTERM, not an answer it may not handle. (A poll after the channel
    // closed would have answered at once.)
    let unanswered = tokio::time::timeout(Duration::from_millis(200), &mut next).await;
    assert!(unanswered.is_err(), "/next answered during teardown");
    h.exit.send_replace(Some("signal: 15 (SIGTERM)".to_owned()));
    assert_eq!(next.await.expect("join").status(), StatusCode::GONE);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let h = harness();
    let response = send(&h.router, get("/invocation/req-1/response")).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = send(&h.router, get("/nope")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn next_carries_the_callers_client_context() {
    let h = harness();
    let context = HeaderValue::from_static(r#"{"client":{"app_title":"shop"},"custom":{"k":"v"}}"#);
    let (next, _reply) = deliver_with(&h, "req-ctx", Some(context.clone())).await;
    assert_eq!(
        next.headers().get("lambda-runtime-client-context"),
        Some(&context)
    );
}
