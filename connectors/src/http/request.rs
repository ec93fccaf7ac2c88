//! Encoding an HTTP request as a function URL event (payload format 2.0).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use serde::Serialize;

/// The parts of a request the event is built from.
#[derive(Debug)]
pub struct HttpRequest<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The path, without the query string.
    pub path: &'a str,
    /// The raw query string, without `?` (empty when absent).
    pub query: &'a str,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub body: &'a [u8],
    /// The peer address.
    pub source_ip: IpAddr,
    /// The request id (also the event's idempotency key).
    pub request_id: &'a str,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// Values captured by `{name}` segments of the trigger's path.
    pub path_parameters: &'a BTreeMap<String, String>,
    /// The trigger's name; Impulse's stand-in for the function URL id.
    pub trigger: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    version: &'static str,
    route_key: &'static str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<&'a str>,
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    query_string_parameters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    path_parameters: &'a BTreeMap<String, String>,
    request_context: RequestContext<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext<'a> {
    account_id: &'static str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    http: HttpContext<'a>,
    request_id: &'a str,
    route_key: &'static str,
    stage: &'static str,
    time: String,
    time_epoch: u128,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpContext<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    source_ip: String,
    user_agent: &'a str,
}

/// Builds the function URL event for `req`.
///
/// As Lambda does: header names are lower-cased and repeated headers joined with commas;
/// `Cookie` headers become the `cookies` list; repeated query parameters are joined with
/// commas; a body that is not UTF-8 text is base64 with `isBase64Encoded: true`. The account
/// id is `anonymous`, as for a function URL without IAM auth.
pub fn encode_request(req: &HttpRequest<'_>) -> Bytes {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in req.headers {
        let Ok(value) = value.to_str() else {
            continue; // Lambda only forwards headers whose values are visible ASCII.
        };
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()));
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }

    let host = headers.get("host").cloned().unwrap_or_default();
    let domain_prefix = host.split('.').next().unwrap_or_default();
    let user_agent = headers.get("user-agent").cloned().unwrap_or_default();

    let (body, is_base64_encoded) = encode_body(req.body, headers.get("content-type"));
    let since_epoch = req
        .received_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let event = Event {
        version: "2.0",
        route_key: "$default",
        raw_path: req.path,
        raw_query_string: req.query,
        cookies,
        headers,
        query_string_parameters: query_parameters(req.query),
        path_parameters: req.path_parameters,
        request_context: RequestContext {
            account_id: "anonymous",
            api_id: req.trigger,
            domain_name: &host,
            domain_prefix,
            http: HttpContext {
                method: req.method.as_str(),
                path: req.path,
                protocol: protocol(req.version),
                source_ip: req.source_ip.to_string(),
                user_agent: &user_agent,
            },
            request_id: req.request_id,
            route_key: "$default",
            stage: "$default",
            time: clf_time(req.received_at),
            time_epoch: since_epoch.as_millis(),
        },
        body,
        is_base64_encoded,
    };
    // Serialising a struct of strings and maps with string keys cannot fail.
    Bytes::from(serde_json::to_vec(&event).expect("the event has only string-keyed maps"))
}

fn encode_body(body: &[u8], content_type: Option<&String>) -> (Option<String>, bool) {
    if body.is_empty() {
        return (None, false);
    }
    let textual = content_type.is_none_or(|ct| is_textual(ct));
    match std::str::from_utf8(body) {
        Ok(text) if textual => (Some(text.to_owned()), false),
        _ => (
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    }
}

fn is_textual(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
        )
}

fn query_parameters(query: &str) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .into_owned();
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        params
            .entry(name)
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    params
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The Common Log Format time Lambda uses: `12/Mar/2020:19:03:58 +0000`. Written from the
/// fields: a `strftime` pattern is parsed again on every call.
fn clf_time(at: SystemTime) -> String {
    use chrono::{Datelike as _, Timelike as _};
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = chrono::DateTime::<chrono::Utc>::from(at);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[t.month0() as usize],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::{json, Value};
    use std::time::Duration;

    fn encode(method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> Value {
        let params = BTreeMap::from([("id".to_owned(), "42".to_owned())]);
        let req = HttpRequest {
            method,
            path,
            query,
            version: Version::HTTP_11,
            headers,
            body,
            source_ip: "203.0.113.7".parse().expect("literal ip"),
            request_id: "req-1",
            received_at: UNIX_EPOCH + Duration::from_millis(1_583_348_638_390),
            path_parameters: &params,
            trigger: "orders",
        };
        serde_json::from_slice(&encode_request(&req)).expect("valid json")
    }

    #[test]
    fn matches_the_function_url_shape() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.example.com"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert(
            "cookie",
            HeaderValue::from_static("session=abc; theme=dark"),
        );
        let event = encode(
            &Method::POST,
            "/orders/42",
            "verbose=1&tag=a&tag=b&q=hello%20world",
            &headers,
            br#"{"qty": 1}"#,
        );
        assert_eq!(
            event,
            json!({
                "version": "2.0", "routeKey": "$default",
                "rawPath": "/orders/42", "rawQueryString": "verbose=1&tag=a&tag=b&q=hello%20world",
                "cookies": ["session=abc", "theme=dark"],
                "headers": {
                    "host": "api.example.com", "content-type": "application/json",
                    "user-agent": "curl/8.5.0", "x-multi": "a,b"
                },
                "queryStringParameters": { "verbose": "1", "tag": "a,b", "q": "hello world" },
                "pathParameters": { "id": "42" },
                "requestContext": {
                    "accountId": "anonymous", "apiId": "orders",
                    "domainName": "api.example.com", "domainPrefix": "api",
                    "http": { "method": "POST", "path": "/orders/42", "protocol": "HTTP/1.1",
                              "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0" },
                    "requestId": "req-1", "routeKey": "$default", "stage": "$default",
                    "time": "04/Mar/2020:19:03:58 +0000", "timeEpoch": 1_583_348_638_390u64
                },
                "body": "{\"qty\": 1}", "isBase64Encoded": false
            })
        );
    }

    #[test]
    fn binary_bodies_are_base64() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        let event = encode(&Method::PUT, "/", "", &headers, &[0xff, 0x00, 0x10]);
        assert_eq!(event["body"], "/wAQ");
        assert_eq!(event["isBase64Encoded"], true);
    }

    #[test]
    fn invalid_utf8_is_base64_even_when_labelled_text() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let event = encode(&Method::POST, "/", "", &headers, &[0xc3, 0x28]);
        assert_eq!(event["isBase64Encoded"], true);
    }

    #[test]
    fn empty_parts_are_omitted() {
        let event = encode(&Method::GET, "/", "", &HeaderMap::new(), b"");
        assert!(event.get("body").is_none());
        assert!(event.get("cookies").is_none());
        assert!(event.get("queryStringParameters").is_none());
        assert_eq!(event["isBase64Encoded"], false);
    }

    #[test]
    fn clf_time_matches_the_strftime_pattern() {
        // Each month, single-digit days and hours, a leap day, and years of 4 digits.
        let times = [
            0u64,
            951_782_400,
            1_584_039_838,
            1_709_164_800,
            4_102_444_799,
        ]
        .into_iter()
        .chain((0..12).map(|month| 1_704_067_200 + month * 31 * 86_400 + 3_723));
        for secs in times {
            let at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            let expected = chrono::DateTime::<chrono::Utc>::from(at)
                .format("%d/%b/%Y:%H:%M:%S +0000")
                .to_string();
            assert_eq!(clf_time(at), expected, "{secs}");
        }
    }
}
