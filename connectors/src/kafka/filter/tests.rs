//! What records the filter passes: every matcher against JSON fields, whole texts, keys and
//! headers, and how patterns combine.

use impulse_config::filter::FilterCriteria;
use serde_json::json;

use super::*;

fn filter(patterns: Value) -> KafkaFilter {
    let Value::Array(patterns) = patterns else {
        panic!("a list of patterns")
    };
    KafkaFilter::new(
        FilterCriteria::from(patterns)
            .parse()
            .expect("valid patterns"),
    )
}

fn h(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<Bytes>)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            )
        })
        .collect()
}

type HeaderList = &'static [(&'static str, Option<&'static str>)];
/// (patterns, key, value, headers, expected)
type Case = (
    Value,
    Option<&'static str>,
    Option<&'static str>,
    HeaderList,
    bool,
);

#[test]
fn matching_table() {
    let no_headers: HeaderList = &[];
    let cases: Vec<Case> = vec![
        // no patterns: everything passes
        (json!([]), None, None, no_headers, true),
        // exact values and OR lists on JSON fields
        (
            json!([{"value": {"type": ["order"]}}]),
            None,
            Some(r#"{"type":"order"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"type": ["order", "refund"]}}]),
            None,
            Some(r#"{"type":"refund"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"type": ["order"]}}]),
            None,
            Some(r#"{"type":"refund"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"n": [5]}}]),
            None,
            Some(r#"{"n":5.0}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"n": ["5"]}}]),
            None,
            Some(r#"{"n":5}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"ok": [true]}}]),
            None,
            Some(r#"{"ok":true}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"v": [null]}}]),
            None,
            Some(r#"{"v":null}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"v": [null]}}]),
            None,
            Some(r#"{}"#),
            no_headers,
            false,
        ),
        // nested fields, AND-ed
        (
            json!([{"value": {"a": {"b": ["x"]}, "c": [1]}}]),
            None,
            Some(r#"{"a":{"b":"x"},"c":1}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"a": {"b": ["x"]}, "c": [1]}}]),
            None,
            Some(r#"{"a":{"b":"x"},"c":2}"#),
            no_headers,
            false,
        ),
        // arrays: any element
        (
            json!([{"value": {"tags": ["red"]}}]),
            None,
            Some(r#"{"tags":["blue","red"]}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"items": {"sku": ["A1"]}}}]),
            None,
            Some(r#"{"items":[{"sku":"B"},{"sku":"A1"}]}"#),
            no_headers,
            true,
        ),
        // prefix (Lambda's example)
        (
            json!([{"value": {"device_ID": [{"prefix": "AB"}]}}]),
            None,
            Some(r#"{"device_ID":"ABC-1"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"device_ID": [{"prefix": "AB"}]}}]),
            None,
            Some(r#"{"device_ID":"XAB"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"device_ID": [{"prefix": "1"}]}}]),
            None,
            Some(r#"{"device_ID":12}"#),
            no_headers,
            false,
        ),
        // numeric
        (
            json!([{"value": {"r": [{"numeric": [">", 0, "<=", 5]}]}}]),
            None,
            Some(r#"{"r":5}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"r": [{"numeric": [">", 0, "<=", 5]}]}}]),
            None,
            Some(r#"{"r":0}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"r": [{"numeric": [">", 0, "<=", 5]}]}}]),
            None,
            Some(r#"{"r":"3"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"r": [{"numeric": ["=", 2.5]}]}}]),
            None,
            Some(r#"{"r":2.5}"#),
            no_headers,
            true,
        ),
        // exists
        (
            json!([{"value": {"id": [{"exists": true}]}}]),
            None,
            Some(r#"{"id":null}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"id": [{"exists": false}]}}]),
            None,
            Some(r#"{"other":1}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"id": [{"exists": false}]}}]),
            None,
            Some(r#"{"id":1}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": [{"exists": true}]}]),
            None,
            Some("\u{1}not json"),
            no_headers,
            true,
        ),
        (
            json!([{"value": [{"exists": true}]}]),
            None,
            None,
            no_headers,
            false,
        ),
        (
            json!([{"value": [{"exists": false}]}]),
            None,
            None,
            no_headers,
            true,
        ),
        // anything-but
        (
            json!([{"value": {"s": [{"anything-but": "cancelled"}]}}]),
            None,
            Some(r#"{"s":"paid"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"s": [{"anything-but": ["cancelled", "void"]}]}}]),
            None,
            Some(r#"{"s":"void"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"s": [{"anything-but": "x"}]}}]),
            None,
            Some(r#"{}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"s": [{"anything-but": {"prefix": "test-"}}]}}]),
            None,
            Some(r#"{"s":"test-1"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"value": {"s": [{"anything-but": {"prefix": "test-"}}]}}]),
            None,
            Some(r#"{"s":"prod-1"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"n": [{"anything-but": [1, 2]}]}}]),
            None,
            Some(r#"{"n":3}"#),
            no_headers,
            true,
        ),
        // non-JSON values: field patterns never match; whole-text leaves do
        (
            json!([{"value": {"a": [{"exists": false}]}}]),
            None,
            Some("plain text"),
            no_headers,
            false,
        ),
        (
            json!([{"value": ["plain text"]}]),
            None,
            Some("plain text"),
            no_headers,
            true,
        ),
        (
            json!([{"value": [{"prefix": "ERROR"}]}]),
            None,
            Some("ERROR: disk"),
            no_headers,
            true,
        ),
        (
            json!([{"value": [{"prefix": "ERROR"}]}]),
            None,
            Some("INFO"),
            no_headers,
            false,
        ),
        // a JSON scalar value: text and JSON both count
        (
            json!([{"value": [{"numeric": [">", 10]}]}]),
            None,
            Some("42"),
            no_headers,
            true,
        ),
        (
            json!([{"value": ["42"]}]),
            None,
            Some("42"),
            no_headers,
            true,
        ),
        (
            json!([{"value": ["abc"]}]),
            None,
            Some(r#""abc""#),
            no_headers,
            true,
        ),
        (
            json!([{"value": [{"anything-but": "42"}]}]),
            None,
            Some("42"),
            no_headers,
            false,
        ),
        // keys: plain strings or JSON
        (
            json!([{"key": ["order-42"]}]),
            Some("order-42"),
            None,
            no_headers,
            true,
        ),
        (
            json!([{"key": [{"prefix": "order-"}]}]),
            Some("refund-1"),
            None,
            no_headers,
            false,
        ),
        (
            json!([{"key": {"tenant": ["acme"]}}]),
            Some(r#"{"tenant":"acme","id":1}"#),
            None,
            no_headers,
            true,
        ),
        (
            json!([{"key": {"tenant": ["acme"]}}]),
            Some("acme"),
            None,
            no_headers,
            false,
        ),
        (
            json!([{"key": [{"exists": false}]}]),
            None,
            Some("{}"),
            no_headers,
            true,
        ),
        (json!([{"key": ["a"]}]), None, Some("{}"), no_headers, false),
        // headers
        (
            json!([{"headers": {"content-type": ["application/json"]}}]),
            None,
            None,
            &[("content-type", Some("application/json"))],
            true,
        ),
        (
            json!([{"headers": {"content-type": ["application/json"]}}]),
            None,
            None,
            &[("Content-Type", Some("application/json"))],
            false,
        ),
        (
            json!([{"headers": {"trace": [{"exists": true}]}}]),
            None,
            None,
            &[("trace", None)],
            true,
        ),
        (
            json!([{"headers": {"trace": [null]}}]),
            None,
            None,
            &[("trace", None)],
            true,
        ),
        (
            json!([{"headers": {"trace": [{"exists": false}]}}]),
            None,
            None,
            &[("other", Some("1"))],
            true,
        ),
        (
            json!([{"headers": {"v": ["2"]}}]),
            None,
            None,
            &[("v", Some("1")), ("v", Some("2"))],
            true,
        ),
        (
            json!([{"headers": {"ctx": {"tenant": ["acme"]}}}]),
            None,
            None,
            &[("ctx", Some(r#"{"tenant":"acme"}"#))],
            true,
        ),
        (
            json!([{"headers": {"a": ["1"], "b": ["2"]}}]),
            None,
            None,
            &[("a", Some("1"))],
            false,
        ),
        // AND across value, key and headers; OR across patterns
        (
            json!([{"value": {"t": ["x"]}, "key": ["k"]}]),
            Some("k"),
            Some(r#"{"t":"x"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"value": {"t": ["x"]}, "key": ["k"]}]),
            Some("j"),
            Some(r#"{"t":"x"}"#),
            no_headers,
            false,
        ),
        (
            json!([{"key": ["j"]}, {"value": {"t": ["x"]}}]),
            Some("k"),
            Some(r#"{"t":"x"}"#),
            no_headers,
            true,
        ),
        (
            json!([{"key": ["j"]}, {"value": {"t": ["y"]}}]),
            Some("k"),
            Some(r#"{"t":"x"}"#),
            no_headers,
            false,
        ),
    ];
    for (i, (patterns, key, value, headers, expected)) in cases.into_iter().enumerate() {
        let f = filter(patterns.clone());
        let got = f.matches(
            key.map(str::as_bytes),
            value.map(str::as_bytes),
            &h(headers),
        );
        assert_eq!(
            got, expected,
            "case {i}: {patterns} key={key:?} value={value:?} headers={headers:?}"
        );
    }
}

#[test]
fn non_utf8_values_only_match_exists() {
    let binary: &[u8] = &[0xff, 0xfe, b'{'];
    assert!(filter(json!([{"value": [{"exists": true}]}])).matches(None, Some(binary), &[]));
    assert!(!filter(json!([{"value": [{"anything-but": "x"}]}])).matches(None, Some(binary), &[]));
    assert!(
        !filter(json!([{"value": {"a": [{"exists": false}]}}])).matches(None, Some(binary), &[])
    );
    assert!(filter(json!([{"key": ["k"]}])).matches(Some(b"k"), Some(binary), &[]));
}
