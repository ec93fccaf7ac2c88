//! Property tests of the function URL shapes: any request encodes to an event that is JSON and
//! carries the request faithfully; any function result decodes to a reply or an error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use impulse_test_support::prop::{
    body, body_from, check, drawn, header_name, header_name_from, header_value_from, json,
};
use proptest::prelude::*;
use serde_json::Value;

use super::{decode_response, encode_request, HttpRequest};

/// A request as the broker hands it over: method, path, query, version, headers, body, peer.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    query: String,
    version: Version,
    headers: HeaderMap,
    body: Vec<u8>,
    source_ip: IpAddr,
    millis: u64,
    path_parameters: BTreeMap<String, String>,
}

fn request() -> impl Strategy<Value = Request> {
    drawn(512, |d| {
        let method = if d.chance(200) {
            d.pick(&["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
                .to_owned()
        } else {
            d.string_of(b"ABCXYZ!#$%&'*+.^_`|~-", 12)
        };
        // What `Uri::path` and `Uri::query` can hold: visible ASCII without `#`, `?` (path)
        // or whitespace; percent escapes valid or not.
        let path: String = (0..1 + d.below(5))
            .map(|_| format!("/{}", d.string_of(b"abcAZ09%._~!$&'()*+,;=:@{}-", 12)))
            .collect();
        let query = match d.below(3) {
            0 => String::new(),
            1 => d.string_of(b"abc019%+=&,", 60),
            _ => d.string_of(b"!\"$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~", 60),
        };
        let mut headers = HeaderMap::new();
        for _ in 0..d.below(8) {
            let name = header_name_from(d);
            let value = header_value_from(d);
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                headers.append(name, value);
            }
        }
        let source_ip = if d.chance(128) {
            IpAddr::from([d.byte(), d.byte(), d.byte(), d.byte()])
        } else {
            IpAddr::from(std::net::Ipv6Addr::from(
                u128::from(d.u64()) << 64 | u128::from(d.u64()),
            ))
        };
        let path_parameters = (0..d.below(3))
            .map(|_| (d.string(6), d.string(12)))
            .collect();
        Request {
            method: Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            path,
            query,
            version: d.pick(&[
                Version::HTTP_09,
                Version::HTTP_10,
                Version::HTTP_11,
                Version::HTTP_2,
                Version::HTTP_3,
            ]),
            headers,
            body: body_from(d),
            source_ip,
            millis: d.u64(),
            path_parameters,
        }
    })
}

#[test]
fn any_request_encodes_to_a_faithful_json_event() {
    check("http::encode_request", request(), |req| {
        let event = encode_request(&HttpRequest {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            version: req.version,
            headers: &req.headers,
            body: &req.body,
            source_ip: req.source_ip,
            request_id: "req-1",
            // Any arrival time, including the far future: the time fields must not panic.
            received_at: UNIX_EPOCH + Duration::from_millis(req.millis % (1 << 50)),
            path_parameters: &req.path_parameters,
            trigger: "hook",
        });
        let event: Value = match serde_json::from_slice(&event) {
            Ok(event) => event,
            Err(err) => return Err(TestCaseError::fail(format!("not JSON: {err}"))),
        };
        prop_assert_eq!(&event["rawPath"], req.path.as_str());
        prop_assert_eq!(&event["rawQueryString"], req.query.as_str());
        prop_assert_eq!(
            &event["requestContext"]["http"]["method"],
            req.method.as_str()
        );

        // The body comes back byte for byte, as text or base64.
        let sent = match (&event["body"], &event["isBase64Encoded"]) {
            (Value::Null, Value::Bool(false)) => Vec::new(),
            (Value::String(text), Value::Bool(false)) => text.clone().into_bytes(),
            (Value::String(encoded), Value::Bool(true)) => {
                match base64::engine::general_purpose::STANDARD.decode(encoded) {
                    Ok(decoded) => decoded,
                    Err(err) => return Err(TestCaseError::fail(format!("bad base64: {err}"))),
                }
            }
            other => return Err(TestCaseError::fail(format!("body fields {other:?}"))),
        };
        prop_assert_eq!(&sent, &req.body);

        // Each visible-ASCII header is there, lower-cased, its values joined with commas;
        // cookies are in `cookies` instead.
        let headers = event["headers"].as_object().cloned().unwrap_or_default();
        for name in req.headers.keys() {
            let visible: Vec<&str> = req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if name == http::header::COOKIE || visible.is_empty() {
                prop_assert!(!headers.contains_key(name.as_str()));
            } else {
                prop_assert_eq!(&headers[name.as_str()], &visible.join(","));
            }
        }
        prop_assert!(headers.len() <= req.headers.keys_len());
        if let Some(cookies) = event.get("cookies") {
            let cookies = cookies.as_array().cloned().unwrap_or_default();
            prop_assert!(!cookies.is_empty());
            prop_assert!(cookies
                .iter()
                .all(|c| c.as_str().is_some_and(|c| !c.is_empty())));
        }
        Ok(())
    });
}

/// A function result: any bytes, any JSON, or a structured response with random parts.
fn result() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        (100u64..600).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        json(),
    ];
    let header_values = prop_oneof![
        "[ -~]{0,16}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        json(),
    ];
    let headers = proptest::collection::btree_map(header_name(), header_values, 0..4)
        .prop_map(|h| Value::Object(h.into_iter().collect()));
    let text = prop_oneof![
        "\\PC{0,32}".prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..32)
            .prop_map(|b| Value::from(base64::engine::general_purpose::STANDARD.encode(b))),
        json(),
    ];
    let structured = (
        status,
        proptest::option::of(headers),
        proptest::option::of(proptest::collection::vec("[ -~]{0,16}", 0..3)),
        proptest::option::of(text),
        proptest::option::of(prop_oneof![any::<bool>().prop_map(Value::from), json()]),
    )
        .prop_map(|(status, headers, cookies, body, base64)| {
            let mut result = serde_json::Map::new();
            result.insert("statusCode".into(), status);
            if let Some(headers) = headers {
                result.insert("headers".into(), headers);
            }
            if let Some(cookies) = cookies {
                result.insert("cookies".into(), cookies.into());
            }
            if let Some(body) = body {
                result.insert("body".into(), body);
            }
            if let Some(base64) = base64 {
                result.insert("isBase64Encoded".into(), base64);
            }
            Value::Object(result).to_string().into_bytes()
        });
    prop_oneof![
        3 => structured,
        1 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => body(),
    ]
}

#[test]
fn any_function_result_decodes_to_a_reply_or_an_error() {
    check("http::decode_response", result(), |payload| {
        let parsed: Option<Value> = serde_json::from_slice(&payload).ok();
        let structured = parsed
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key("statusCode"));
        match decode_response(&payload) {
            Ok(reply) => {
                prop_assert!((100..=599).contains(&reply.status));
                if !structured {
                    // Anything but a structured response is passed through as the body.
                    prop_assert_eq!(reply.status, 200);
                    prop_assert_eq!(reply.body.as_ref(), payload.as_slice());
                }
            }
            Err(_) => prop_assert!(structured, "only a broken structured response is an error"),
        }
        Ok(())
    });
}
