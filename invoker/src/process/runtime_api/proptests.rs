//! Property tests of the Runtime API as a hostile worker drives it: any requests, with the
//! invocation's request id (encoded or not) or others in the path, any headers and bodies.
//! Nothing panics, every answer is a 4xx or 202, and only an answer naming the delivered
//! request id (and its invocation id, when echoed) completes the invocation, once.

use axum::http::{Method, Request};
use impulse_test_support::prop::{body_from, check, drawn, header_value_from, Draw};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;
use tower::ServiceExt;

use super::*;

/// One request of the worker's, with the path's id as it chose it.
#[derive(Debug, Clone)]
struct WorkerRequest {
    method: Method,
    /// Under `/2018-06-01/runtime`.
    path: String,
    /// Whether the path names the delivered request id (as the worker was told it).
    names_delivery: bool,
    /// `None`: no invocation id header; `Some(true)`: the delivered one.
    echoes_invocation_id: Option<bool>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Case {
    request_id: String,
    requests: Vec<WorkerRequest>,
}

/// Request ids as the broker makes them (UUIDs, Kafka's `topic/partition/offset`) and odd ones.
fn request_id_from(d: &mut Draw<'_>) -> String {
    match d.below(4) {
        0 => "8476a536-e9f4-11e8-9739-2dfe598c3fcd".to_owned(),
        1 => format!("orders/{}/{}", d.byte(), d.u64() >> 8),
        2 => d.string(16),
        _ => d.string_of(b"az09-_.~%/ ", 24),
    }
}

fn worker_request_from(d: &mut Draw<'_>) -> WorkerRequest {
    let names_delivery = d.chance(160);
    let kind = d.below(8);
    let path = match kind {
        0..=2 => "/invocation/{id}/response".to_owned(),
        3..=5 => "/invocation/{id}/error".to_owned(),
        6 => "/init/error".to_owned(),
        _ => format!("/{}", d.string_of(b"abcinvoto/{}%.-", 30)),
    };
    let method = if d.chance(230) {
        Method::POST
    } else {
        d.pick(&[Method::GET, Method::PUT, Method::DELETE])
    };
    let echoes_invocation_id = match d.below(3) {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    let headers = (0..d.below(3))
        .map(|_| {
            let name = d.pick(&[ERROR_TYPE, "content-type", "content-length", "x-other"]);
            (name.to_owned(), header_value_from(d))
        })
        .collect();
    WorkerRequest {
        method,
        path,
        names_delivery,
        echoes_invocation_id,
        headers,
        body: body_from(d),
    }
}

fn case() -> impl Strategy<Value = Case> {
    drawn(768, |d| Case {
        request_id: request_id_from(d),
        requests: (0..1 + d.below(2))
            .map(|_| worker_request_from(d))
            .collect(),
    })
}

/// One API for every case: each case is a new delivery, which is what the book sees when an
/// environment runs invocation after invocation (and a router built per case would outweigh
/// the case itself).
struct Api {
    router: Router,
    jobs: mpsc::Sender<Job>,
    _init: oneshot::Receiver<InitSignal>,
    _exit: watch::Sender<Option<String>>,
}

#[test]
fn only_the_delivered_request_completes_its_invocation_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (jobs, jobs_rx) = mpsc::channel(1);
    let (init_tx, init) = oneshot::channel();
    let (exit, exited) = watch::channel(None);
    let arn = HeaderValue::from_static("arn:aws:lambda:local:000000000000:function:f:$LATEST");
    let api = Api {
        router: Arc::new(RuntimeApi::new(arn, jobs_rx, init_tx, exited)).router(),
        jobs,
        _init: init,
        _exit: exit,
    };
    check("runtime_api::requests", case(), |case| {
        runtime.block_on(run(&api, case))
    });
}

async fn run(api: &Api, case: Case) -> TestCaseResult {
    let router = &api.router;
    let (reply, mut replies) = oneshot::channel();
    api.jobs
        .send(Job {
            request_id: Arc::from(case.request_id.as_str()),
            payload: Bytes::from_static(b"{}"),
            deadline: Instant::now() + Duration::from_secs(5),
            client_context: None,
            log_tail: None,
            reply,
        })
        .await
        .expect("the API is alive");
    let next = router
        .clone()
        .oneshot(
            Request::get("/2018-06-01/runtime/invocation/next")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("infallible");
    prop_assert_eq!(next.status(), StatusCode::OK);
    let header = |name: &str| {
        next.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let (wire_id, invocation_id) = (header(REQUEST_ID), header(INVOCATION_ID));

    let mut completed_by: Option<&WorkerRequest> = None;
    for request in &case.requests {
        let id = if request.names_delivery {
            wire_id.clone()
        } else {
            // Another id, as a worker of another environment would send.
            format!("{wire_id}x")
        };
        let path = format!("/2018-06-01/runtime{}", request.path.replace("{id}", &id));
        let Ok(uri) = path.parse::<axum::http::Uri>() else {
            continue;
        };
        let mut builder = Request::builder().method(request.method.clone()).uri(uri);
        match request.echoes_invocation_id {
            Some(true) => builder = builder.header(INVOCATION_ID, invocation_id.as_str()),
            Some(false) => builder = builder.header(INVOCATION_ID, "0123456789abcdef"),
            None => {}
        }
        for (name, value) in &request.headers {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                builder = builder.header(name.as_str(), value);
            }
        }
        let Ok(http_request) = builder.body(Body::from(request.body.clone())) else {
            continue;
        };
        let response = router
            .clone()
            .oneshot(http_request)
            .await
            .expect("infallible");
        let status = response.status();
        prop_assert!(
            status == StatusCode::ACCEPTED || status.is_client_error(),
            "status {}",
            status
        );
        // And the converse: the worker's first proper answer is accepted, whatever the id.
        let proper = request.method == Method::POST
            && request.names_delivery
            && request.echoes_invocation_id != Some(false)
            && request.path.ends_with("/response")
            && request
                .headers
                .iter()
                .all(|(name, _)| name != "content-length");
        if proper && completed_by.is_none() {
            prop_assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "for request id {:?}",
                case.request_id
            );
        }
        let answers = request.method == Method::POST
            && (request.path.ends_with("/response") || request.path.ends_with("/error"));
        if answers && status == StatusCode::ACCEPTED {
            prop_assert!(completed_by.is_none(), "answered twice");
            prop_assert!(
                request.names_delivery,
                "another id completed the invocation"
            );
            prop_assert!(request.echoes_invocation_id != Some(false));
            completed_by = Some(request);
        }
    }

    match (replies.try_recv(), completed_by) {
        (Err(_), None) => {}
        (Ok(Reply::Response(body)), Some(request)) => {
            prop_assert!(request.path.ends_with("/response"));
            prop_assert_eq!(body.as_ref(), request.body.as_slice());
        }
        (
            Ok(Reply::Error {
                error_type,
                payload,
            }),
            Some(request),
        ) => {
            prop_assert!(request.path.ends_with("/error"));
            assert_error(&error_type, &payload)?;
        }
        (got, completed_by) => {
            return Err(TestCaseError::fail(format!(
                "reply {got:?} after {completed_by:?}"
            )));
        }
    }
    Ok(())
}

/// The error type is usable in a header and a metric label's neighbourhood; the payload is a
/// JSON object (the worker's own, or one describing what it sent).
fn assert_error(error_type: &str, payload: &[u8]) -> TestCaseResult {
    prop_assert!(!error_type.is_empty() && error_type.len() <= MAX_ERROR_TYPE);
    prop_assert!(error_type.bytes().all(|b| (0x20..0x7f).contains(&b)));
    prop_assert!(HeaderValue::from_str(error_type).is_ok());
    let document = serde_json::from_slice::<serde_json::Value>(payload);
    prop_assert!(document.is_ok_and(|d| d.is_object()));
    Ok(())
}

/// An empty request id reaches the worker as the invocation id: an answer naming that id must
/// complete the invocation, or it could only time out.
#[test]
fn an_empty_request_id_is_answerable_under_the_id_the_worker_saw() {
    let (init, _) = oneshot::channel();
    let mut book = Book::new(init);
    let (reply, _rx) = oneshot::channel();
    book.deliver(Arc::from(""), "inv-1".to_owned(), None, reply);
    assert_eq!(wire_request_id("", "inv-1"), "inv-1");
    assert_eq!(book.check("", None), Err(Refusal::InvalidRequestId));
    assert_eq!(book.check("inv-2", None), Err(Refusal::InvalidRequestId));
    assert!(book.complete("inv-1", Some("inv-1")).is_ok());
    assert_eq!(book.check("inv-1", None), Err(Refusal::InvalidRequestId));
}

#[test]
fn any_error_report_gives_a_usable_type_and_a_json_document() {
    let cases = drawn(512, |d| {
        let header = d.chance(192).then(|| header_value_from(d));
        (header, body_from(d))
    });
    check("runtime_api::error_document", cases, |(header, body)| {
        let header = header.as_deref().and_then(|h| std::str::from_utf8(h).ok());
        let (error_type, payload) = error_document(header, &body);
        assert_error(&error_type, &payload)
    });
}

#[test]
fn any_request_id_survives_the_wire() {
    check(
        "runtime_api::wire_request_id",
        drawn(64, request_id_from),
        |id| {
            let wire = wire_request_id(&id, "0123");
            prop_assert!(HeaderValue::from_str(&wire).is_ok());
            prop_assert!(!wire.contains('/'));
            if !id.is_empty() {
                let decoded = percent_encoding::percent_decode_str(&wire)
                    .decode_utf8()
                    .map(std::borrow::Cow::into_owned);
                prop_assert_eq!(decoded.ok(), Some(id));
            }
            Ok(())
        },
    );
}
