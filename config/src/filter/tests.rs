//! The filter grammar: what parses to which pattern, and where each broken rule is reported.

use serde_json::{json, Value};

use super::*;

fn criteria(patterns: Value) -> FilterCriteria {
    let Value::Array(patterns) = patterns else {
        panic!("a list of patterns")
    };
    FilterCriteria::from(patterns)
}

fn problems(patterns: Value) -> Vec<(String, String)> {
    let shown = patterns.to_string();
    criteria(patterns)
        .parse()
        .expect_err(&shown)
        .problems()
        .iter()
        .map(|p| (p.path.to_string(), p.message.clone()))
        .collect()
}

#[test]
fn parses_every_form_into_its_typed_pattern() {
    let parsed = criteria(json!([
        {"value": {"device_ID": [{"prefix": "AB"}], "reading": [{"numeric": [">", 0, "<=", 5]}]}},
        {"key": ["order-42", 7, true, null, {"exists": false}]},
        {"headers": {"ctx": [{"anything-but": {"prefix": "t-"}}], "tenant": [{"anything-but": ["eu", 1]}]}},
        {"value": [{"anything-but": "x"}]},
    ]))
    .parse()
    .expect("valid patterns");
    let value = |node| FilterPattern {
        value: Some(node),
        ..FilterPattern::default()
    };
    let fields = vec![
        (
            "device_ID".to_owned(),
            Node::Leaf(vec![Matcher::Prefix("AB".to_owned())]),
        ),
        (
            "reading".to_owned(),
            Node::Leaf(vec![Matcher::Numeric(vec![
                (Comparison::Gt, 0.0),
                (Comparison::Le, 5.0),
            ])]),
        ),
    ];
    let headers = vec![
        (
            "ctx".to_owned(),
            Node::Leaf(vec![Matcher::AnythingButPrefix("t-".to_owned())]),
        ),
        (
            "tenant".to_owned(),
            Node::Leaf(vec![Matcher::AnythingBut(vec![
                Scalar::String("eu".to_owned()),
                Scalar::Number(1.0),
            ])]),
        ),
    ];
    let expected = vec![
        value(Node::Fields(fields)),
        FilterPattern {
            key: Some(Node::Leaf(vec![
                Matcher::Equals(Scalar::String("order-42".to_owned())),
                Matcher::Equals(Scalar::Number(7.0)),
                Matcher::Equals(Scalar::Bool(true)),
                Matcher::Equals(Scalar::Null),
                Matcher::Exists(false),
            ])),
            ..FilterPattern::default()
        },
        FilterPattern {
            headers,
            ..FilterPattern::default()
        },
        value(Node::Leaf(vec![Matcher::AnythingBut(vec![
            Scalar::String("x".to_owned()),
        ])])),
    ];
    assert_eq!(parsed, expected);
    assert_eq!(criteria(json!([])).parse(), Ok(Vec::new()));
}

#[test]
fn invalid_patterns_name_their_path() {
    let cases = [
        (json!([1]), "[0]"),
        (json!([{}]), "[0]"),
        (json!([{"body": ["x"]}]), "[0].body"),
        (json!([{"value": "x"}]), "[0].value"),
        (json!([{"value": []}]), "[0].value"),
        (json!([{"value": {}}]), "[0].value"),
        (json!([{"value": {"a": [[1]]}}]), "[0].value.a[0]"),
        (
            json!([{"value": {"a": [{"prefix": 1}]}}]),
            "[0].value.a[0].prefix",
        ),
        (
            json!([{"value": {"a": [{"prefix": "x", "exists": true}]}}]),
            "[0].value.a[0]",
        ),
        (
            json!([{"value": {"a": [{"suffix": "x"}]}}]),
            "[0].value.a[0].suffix",
        ),
        (
            json!([{"value": {"a": [{"exists": "yes"}]}}]),
            "[0].value.a[0].exists",
        ),
        (
            json!([{"value": {"a": [{"numeric": [">"]}]}}]),
            "[0].value.a[0].numeric",
        ),
        (
            json!([{"value": {"a": [{"numeric": ">"}]}}]),
            "[0].value.a[0].numeric",
        ),
        (
            json!([{"value": {"a": [{"numeric": ["~", 1]}]}}]),
            "[0].value.a[0].numeric[0]",
        ),
        (
            json!([{"value": {"a": [{"numeric": [">", 0, "<", "5"]}]}}]),
            "[0].value.a[0].numeric[3]",
        ),
        (
            json!([{"value": {"a": [{"anything-but": []}]}}]),
            "[0].value.a[0].anything-but",
        ),
        (
            json!([{"value": {"a": [{"anything-but": [{}]}]}}]),
            "[0].value.a[0].anything-but[0]",
        ),
        (
            json!([{"value": {"a": [{"anything-but": {"numeric": [">", 1]}}]}}]),
            "[0].value.a[0].anything-but",
        ),
        (
            json!([{"value": {"a": [{"anything-but": {"prefix": 1}}]}}]),
            "[0].value.a[0].anything-but.prefix",
        ),
        (json!([{"headers": ["x"]}]), "[0].headers"),
        (json!([{"headers": {}}]), "[0].headers"),
        (
            json!([{"key": ["ok"]}, {"headers": {"h": 1}}]),
            "[1].headers.h",
        ),
        // Keys that are not plain are quoted, as everywhere in config paths.
        (
            json!([{"headers": {"content.type": []}}]),
            "[0].headers.\"content.type\"",
        ),
        (
            json!([{"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}]),
            "",
        ),
    ];
    for (patterns, path) in cases {
        let found = problems(patterns.clone());
        assert_eq!(found.len(), 1, "{patterns}: {found:?}");
        assert_eq!(found[0].0, path, "{patterns}: {found:?}");
        let err = criteria(patterns.clone()).parse().expect_err("invalid");
        assert!(
            err.to_string().starts_with(&format!("filter{path}: ")),
            "{err}"
        );
    }
}

#[test]
fn every_problem_is_reported_in_document_order() {
    let found = problems(json!([
        {"value": {"a": [{"prefix": 1}], "b": [{"numeric": ["~", "x"]}]}},
        {"body": ["x"], "key": "x"},
        {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]},
    ]));
    let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "",
            "[0].value.a[0].prefix",
            "[0].value.b[0].numeric[0]",
            "[0].value.b[0].numeric[1]",
            "[1].body",
            "[1].key",
        ],
        "{found:?}"
    );
    assert_eq!(found[0].1, "at most 5 patterns, found 6");
    let shown = criteria(json!([1, {}]))
        .parse()
        .expect_err("invalid")
        .to_string();
    assert_eq!(
        shown,
        "filter[0]: a pattern must be an object; \
         filter[1]: a pattern must name `value`, `key` or `headers`"
    );
}
