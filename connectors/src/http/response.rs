//! Decoding a function's result into an HTTP reply, as function URLs do.

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// The reply a function's result maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Headers in order; `Set-Cookie` entries come from the result's `cookies`.
    pub headers: Vec<(String, String)>,
    /// The body, decoded from base64 when the result said `isBase64Encoded`.
    pub body: Bytes,
}

/// A result that claims the structured form (`statusCode`) but breaks it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the function's response is not a valid HTTP response: {0}")]
pub struct ResponseError(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Structured {
    status_code: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, Value>,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
}

/// Maps a function result to the HTTP reply, following Lambda's function URL rules:
///
/// - a JSON object with `statusCode` is a structured response (`headers`, `cookies`, `body`,
///   `isBase64Encoded`);
/// - any other JSON is the body of a `200` with `content-type: application/json`;
/// - a result that is not JSON at all (possible only with `http` targets) is passed through
///   as the body of a `200`, as `text/plain` when it is UTF-8.
pub fn decode_response(payload: &[u8]) -> Result<HttpReply, ResponseError> {
    let Ok(value) = serde_json::from_slice::<Value>(payload) else {
        let content_type = if std::str::from_utf8(payload).is_ok() {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        return Ok(HttpReply {
            status: 200,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: Bytes::copy_from_slice(payload),
        });
    };
    let structured = value
        .as_object()
        .is_some_and(|o| o.contains_key("statusCode"));
    if !structured {
        return Ok(HttpReply {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: Bytes::copy_from_slice(payload),
        });
    }
    let response: Structured =
        serde_json::from_value(value).map_err(|e| ResponseError(e.to_string()))?;
    if !(100..=599).contains(&response.status_code) {
        return Err(ResponseError(format!(
            "statusCode {} is out of range",
            response.status_code
        )));
    }
    let mut headers = Vec::with_capacity(response.headers.len() + response.cookies.len());
    for (name, value) in response.headers {
        let value = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(ResponseError(format!("header {name} has value {other}"))),
        };
        headers.push((name, value));
    }
    headers.extend(
        response
            .cookies
            .into_iter()
            .map(|c| ("set-cookie".to_owned(), c)),
    );
    let body = match response.body {
        None => Bytes::new(),
        Some(body) if response.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(body)
            .map(Bytes::from)
            .map_err(|e| ResponseError(format!("body is not valid base64: {e}")))?,
        Some(body) => Bytes::from(body),
    };
    Ok(HttpReply {
        status: response.status_code,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_response() {
        let reply = decode_response(
            br#"{"statusCode":201,"headers":{"content-type":"application/json","x-n":5},
                 "body":"{\"id\": 42}","cookies":["a=b; Max-Age=60"],"isBase64Encoded":false}"#,
        )
        .expect("valid");
        assert_eq!(reply.status, 201);
        assert_eq!(
            reply.headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-n".to_owned(), "5".to_owned()),
                ("set-cookie".to_owned(), "a=b; Max-Age=60".to_owned()),
            ]
        );
        assert_eq!(reply.body, Bytes::from_static(br#"{"id": 42}"#));
    }

    #[test]
    fn base64_body_is_decoded() {
        let reply = decode_response(br#"{"statusCode":200,"body":"/wAQ","isBase64Encoded":true}"#)
            .expect("valid");
        assert_eq!(reply.body.as_ref(), &[0xff, 0x00, 0x10]);
    }

    #[test]
    fn json_without_status_code_is_a_200_json_body() {
        let reply = decode_response(br#"{"message":"hi"}"#).expect("valid");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers[0].1, "application/json");
        assert_eq!(reply.body, Bytes::from_static(br#"{"message":"hi"}"#));
    }

    #[test]
    fn non_json_passes_through() {
        let reply = decode_response(b"plain words").expect("valid");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers[0].1, "text/plain; charset=utf-8");
        assert_eq!(reply.body, Bytes::from_static(b"plain words"));
    }

    #[test]
    fn broken_structured_responses_are_errors() {
        assert!(decode_response(br#"{"statusCode":"abc"}"#).is_err());
        assert!(decode_response(br#"{"statusCode":42}"#).is_err());
        assert!(
            decode_response(br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#).is_err()
        );
        assert!(decode_response(br#"{"statusCode":200,"headers":{"x":[1]}}"#).is_err());
    }
}
