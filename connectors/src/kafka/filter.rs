//! Record filters: EventBridge-style patterns on a Kafka record's value, key and headers.

use bytes::Bytes;
use serde_json::Value;

/// Most patterns in a trigger's `filter` (Lambda's `FilterCriteria` limit).
pub const MAX_PATTERNS: usize = 5;

/// A filter pattern that does not follow the rules of [`KafkaFilter`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter{path}: {message}")]
pub struct FilterError {
    /// Where, below `filter`: `[0].value.device_ID[0].prefix`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Compiled filter patterns, OR-ed.
///
/// A trigger's `filter` holds up to five patterns, OR-ed; a record passes when any pattern
/// matches (no patterns: every record passes). Records that pass none are acked
/// `Outcome::Dropped` at once, so their offsets commit, and are counted. Lambda filters Kafka
/// records on `value` only; Impulse adds `key` and `headers` (SEMANTICS.md §10.6).
///
/// ```json
/// {"value": {"device_ID": [{"prefix": "AB"}], "reading": [{"numeric": [">", 0, "<=", 5]}]},
///  "key": ["order-42", {"prefix": "order-"}],
///  "headers": {"content-type": ["application/json"], "trace": [{"exists": true}]}}
/// ```
///
/// # Rules
///
/// - A pattern is an object with any of `value`, `key` and `headers`, AND-ed. `value` and `key`
///   take a *field pattern* (an object, matched against the bytes parsed as JSON) or a *leaf*
///   (a list, matched against the bytes as a whole). `headers` maps header names to the same.
/// - A field pattern maps field names to nested field patterns or leaves, AND-ed; it only
///   matches JSON (an object, or an array of objects: any element may supply each field).
/// - A leaf is a non-empty list of matchers, OR-ed: a string, number, boolean or `null`
///   (exact); `{"prefix": "s"}`; `{"numeric": [">", 0, "<=", 5]}` (one or two comparisons from
///   `<`, `<=`, `=`, `>`, `>=`); `{"exists": true|false}`; `{"anything-but": v}` where `v` is a
///   scalar, a list of scalars or `{"prefix": "s"}`.
/// - Against a JSON field, a leaf sees the field's value (each element of an array). Against
///   a whole key, value or header, it sees the text itself as a string **and**, when the text
///   is JSON, the JSON value: key `42` matches `["42"]` and `[{"numeric": ["=", 42]}]`. Bytes
///   that are not UTF-8 only match `{"exists": true}`. `anything-but` matches when there is
///   something to compare and none of it is excluded.
/// - A null key or value (tombstone), and a header that is not there, are absent: only
///   `{"exists": false}` matches them. A header with a null value is present and equals
///   `null`. A header name that repeats matches when any of its values does.
#[derive(Debug, Clone, Default)]
pub struct KafkaFilter {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, Default)]
struct Pattern {
    value: Option<Node>,
    key: Option<Node>,
    headers: Vec<(String, Node)>,
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(Vec<Matcher>),
    Fields(Vec<(String, Node)>),
}

#[derive(Debug, Clone)]
enum Matcher {
    Equals(Scalar),
    Prefix(String),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
    AnythingBut(Vec<Scalar>),
    AnythingButPrefix(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Lt,
    Le,
    Eq,
    Gt,
    Ge,
}

// === compile ===

impl KafkaFilter {
    /// Compiles a trigger's `filter` patterns, checking every rule; the error names the first
    /// problem's path. Config validation (`impulse-config`) applies the same rules.
    pub fn compile(patterns: &[Value]) -> Result<Self, FilterError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(error(
                String::new(),
                format!("at most {MAX_PATTERNS} patterns, found {}", patterns.len()),
            ));
        }
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| compile_pattern(&format!("[{i}]"), p))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether there are no patterns (every record passes).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a record with this key, value and headers passes.
    pub fn matches(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(String, Option<Bytes>)],
    ) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        // Parsed at most once per record, and only when a pattern looks at it.
        let mut key_slot: Option<Vec<Slot<'_>>> = None;
        let mut value_slot: Option<Vec<Slot<'_>>> = None;
        self.patterns.iter().any(|pattern| {
            if let Some(node) = &pattern.value {
                let slots =
                    value_slot.get_or_insert_with(|| value.map(Slot::new).into_iter().collect());
                if !match_root(node, slots) {
                    return false;
                }
            }
            if let Some(node) = &pattern.key {
                let slots =
                    key_slot.get_or_insert_with(|| key.map(Slot::new).into_iter().collect());
                if !match_root(node, slots) {
                    return false;
                }
            }
            pattern.headers.iter().all(|(name, node)| {
                let slots: Vec<Slot<'_>> = headers
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| v.as_deref().map_or(Slot::NULL, Slot::new))
                    .collect();
                match_root(node, &slots)
            })
        })
    }
}

fn error(path: String, message: impl Into<String>) -> FilterError {
    FilterError {
        path,
        message: message.into(),
    }
}

fn compile_pattern(path: &str, pattern: &Value) -> Result<Pattern, FilterError> {
    let Value::Object(map) = pattern else {
        return Err(error(path.to_owned(), "a pattern must be an object"));
    };
    if map.is_empty() {
        return Err(error(
            path.to_owned(),
            "a pattern must name `value`, `key` or `headers`",
        ));
    }
    let mut out = Pattern::default();
    for (field, sub) in map {
        let sub_path = format!("{path}.{field}");
        match field.as_str() {
            "value" => out.value = Some(compile_node(&sub_path, sub)?),
            "key" => out.key = Some(compile_node(&sub_path, sub)?),
            "headers" => {
                let Value::Object(headers) = sub else {
                    return Err(error(sub_path, "must map header names to patterns"));
                };
                if headers.is_empty() {
                    return Err(error(sub_path, "must name at least one header"));
                }
                for (name, node) in headers {
                    out.headers.push((
                        name.clone(),
                        compile_node(&format!("{sub_path}.{name}"), node)?,
                    ));
                }
            }
            other => {
                return Err(error(
                    sub_path,
                    format!("unknown field `{other}`: use `value`, `key` or `headers`"),
                ))
            }
        }
    }
    Ok(out)
}

fn compile_node(path: &str, node: &Value) -> Result<Node, FilterError> {
    match node {
        Value::Array(matchers) => {
            if matchers.is_empty() {
                return Err(error(
                    path.to_owned(),
                    "must list at least one value or matcher",
                ));
            }
            matchers
                .iter()
                .enumerate()
                .map(|(i, m)| compile_matcher(&format!("{path}[{i}]"), m))
                .collect::<Result<_, _>>()
                .map(Node::Leaf)
        }
        Value::Object(fields) => {
            if fields.is_empty() {
                return Err(error(path.to_owned(), "must name at least one field"));
            }
            fields
                .iter()
                .map(|(name, sub)| {
                    Ok((name.clone(), compile_node(&format!("{path}.{name}"), sub)?))
                })
                .collect::<Result<_, _>>()
                .map(Node::Fields)
        }
        _ => Err(error(
            path.to_owned(),
            "must be a list of values and matchers, or an object of fields",
        )),
    }
}

fn compile_matcher(path: &str, matcher: &Value) -> Result<Matcher, FilterError> {
    if let Some(scalar) = scalar(matcher) {
        return Ok(Matcher::Equals(scalar));
    }
    let Value::Object(map) = matcher else {
        return Err(error(
            path.to_owned(),
            "must be a string, number, boolean, null or matcher object",
        ));
    };
    let mut entries = map.iter();
    let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
        return Err(error(
            path.to_owned(),
            "a matcher object has exactly one of `prefix`, `numeric`, `exists`, `anything-but`",
        ));
    };
    let arg_path = format!("{path}.{name}");
    match name.as_str() {
        "prefix" => prefix(&arg_path, arg).map(Matcher::Prefix),
        "exists" => match arg {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err(error(arg_path, "must be true or false")),
        },
        "numeric" => numeric(&arg_path, arg).map(Matcher::Numeric),
        "anything-but" => match arg {
            Value::Array(values) => {
                if values.is_empty() {
                    return Err(error(arg_path, "must list at least one value"));
                }
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        scalar(v).ok_or_else(|| {
                            error(
                                format!("{arg_path}[{i}]"),
                                "must be a string, number, boolean or null",
                            )
                        })
                    })
                    .collect::<Result<_, _>>()
                    .map(Matcher::AnythingBut)
            }
            Value::Object(inner) => match (inner.len(), inner.get("prefix")) {
                (1, Some(p)) => {
                    prefix(&format!("{arg_path}.prefix"), p).map(Matcher::AnythingButPrefix)
                }
                _ => Err(error(
                    arg_path,
                    "only `{\"prefix\": …}` may be nested in `anything-but`",
                )),
            },
            other => scalar(other)
                .map(|s| Matcher::AnythingBut(vec![s]))
                .ok_or_else(|| error(arg_path, "must be a value, a list of values or a prefix")),
        },
        other => Err(error(
            arg_path,
            format!(
                "unknown matcher `{other}`: use `prefix`, `numeric`, `exists` or `anything-but`"
            ),
        )),
    }
}

fn scalar(value: &Value) -> Option<Scalar> {
    match value {
        Value::String(s) => Some(Scalar::String(s.clone())),
        Value::Number(n) => n.as_f64().map(Scalar::Number),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Null => Some(Scalar::Null),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn prefix(path: &str, arg: &Value) -> Result<String, FilterError> {
    match arg {
        Value::String(s) => Ok(s.clone()),
        _ => Err(error(path.to_owned(), "must be a string")),
    }
}

fn numeric(path: &str, arg: &Value) -> Result<Vec<(Cmp, f64)>, FilterError> {
    let Value::Array(items) = arg else {
        return Err(error(
            path.to_owned(),
            "must be a list such as [\">\", 0, \"<=\", 5]",
        ));
    };
    if items.is_empty() || items.len() > 4 || items.len() % 2 != 0 {
        return Err(error(
            path.to_owned(),
            "must hold one or two comparisons, such as [\">\", 0, \"<=\", 5]",
        ));
    }
    items
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let cmp = match pair[0].as_str() {
                Some("<") => Cmp::Lt,
                Some("<=") => Cmp::Le,
                Some("=") => Cmp::Eq,
                Some(">") => Cmp::Gt,
                Some(">=") => Cmp::Ge,
                _ => {
                    return Err(error(
                        format!("{path}[{}]", 2 * i),
                        "must be one of \"<\", \"<=\", \"=\", \">\", \">=\"",
                    ))
                }
            };
            let bound = pair[1]
                .as_f64()
                .ok_or_else(|| error(format!("{path}[{}]", 2 * i + 1), "must be a number"))?;
            Ok((cmp, bound))
        })
        .collect()
}

// === match ===

/// A whole key, value or header value: its text and, when the text is JSON, the JSON.
struct Slot<'a> {
    text: Option<&'a str>,
    json: Option<Value>,
}

impl<'a> Slot<'a> {
    /// A header whose value is null.
    const NULL: Slot<'static> = Slot {
        text: None,
        json: Some(Value::Null),
    };

    fn new(bytes: &'a [u8]) -> Self {
        let text = std::str::from_utf8(bytes).ok();
        let json = text.and_then(|t| serde_json::from_str(t).ok());
        Self { text, json }
    }
}

/// What a leaf compares with: a whole text, or a JSON value.
#[derive(Clone, Copy)]
enum Candidate<'a> {
    Text(&'a str),
    Json(&'a Value),
}

fn match_root(node: &Node, slots: &[Slot<'_>]) -> bool {
    match node {
        Node::Leaf(matchers) => {
            let mut candidates = Vec::new();
            for slot in slots {
                if let Some(text) = slot.text {
                    candidates.push(Candidate::Text(text));
                }
                if let Some(json) = &slot.json {
                    push_flattened(&mut candidates, json);
                }
            }
            match_leaf(matchers, &candidates, !slots.is_empty())
        }
        Node::Fields(fields) => {
            // A field pattern only matches JSON objects (or arrays of them).
            let values: Vec<&Value> = slots
                .iter()
                .filter_map(|s| s.json.as_ref())
                .filter(|v| v.is_object() || v.is_array())
                .collect();
            !values.is_empty() && match_fields(fields, &values)
        }
    }
}

fn push_flattened<'a>(out: &mut Vec<Candidate<'a>>, value: &'a Value) {
    match value {
        Value::Array(items) => out.extend(items.iter().map(Candidate::Json)),
        other => out.push(Candidate::Json(other)),
    }
}

/// `values` are the JSON values at this level; arrays count as each of their elements.
fn match_fields(fields: &[(String, Node)], values: &[&Value]) -> bool {
    fields.iter().all(|(name, node)| {
        let mut children: Vec<&Value> = Vec::new();
        for value in values {
            collect_field(&mut children, value, name);
        }
        match node {
            Node::Leaf(matchers) => {
                let mut candidates = Vec::new();
                for child in &children {
                    push_flattened(&mut candidates, child);
                }
                match_leaf(matchers, &candidates, !children.is_empty())
            }
            Node::Fields(sub) => match_fields(sub, &children),
        }
    })
}

fn collect_field<'a>(out: &mut Vec<&'a Value>, value: &'a Value, name: &str) {
    match value {
        Value::Object(map) => out.extend(map.get(name)),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    out.extend(map.get(name));
                }
            }
        }
        _ => {}
    }
}

fn match_leaf(matchers: &[Matcher], candidates: &[Candidate<'_>], present: bool) -> bool {
    matchers.iter().any(|matcher| match matcher {
        Matcher::Exists(wanted) => *wanted == present,
        Matcher::AnythingBut(excluded) => {
            !candidates.is_empty()
                && candidates
                    .iter()
                    .all(|c| !excluded.iter().any(|x| equals(x, *c)))
        }
        Matcher::AnythingButPrefix(p) => {
            !candidates.is_empty()
                && candidates
                    .iter()
                    .all(|c| !as_str(*c).is_some_and(|s| s.starts_with(p.as_str())))
        }
        Matcher::Equals(x) => candidates.iter().any(|c| equals(x, *c)),
        Matcher::Prefix(p) => candidates
            .iter()
            .any(|c| as_str(*c).is_some_and(|s| s.starts_with(p.as_str()))),
        Matcher::Numeric(comparisons) => candidates.iter().any(|c| match c {
            Candidate::Json(Value::Number(n)) => n.as_f64().is_some_and(|n| {
                comparisons.iter().all(|(cmp, bound)| match cmp {
                    Cmp::Lt => n < *bound,
                    Cmp::Le => n <= *bound,
                    Cmp::Eq => n == *bound,
                    Cmp::Gt => n > *bound,
                    Cmp::Ge => n >= *bound,
                })
            }),
            _ => false,
        }),
    })
}

fn as_str<'a>(candidate: Candidate<'a>) -> Option<&'a str> {
    match candidate {
        Candidate::Text(s) => Some(s),
        Candidate::Json(Value::String(s)) => Some(s),
        Candidate::Json(_) => None,
    }
}

fn equals(scalar: &Scalar, candidate: Candidate<'_>) -> bool {
    match (scalar, candidate) {
        (Scalar::String(s), c) => as_str(c) == Some(s.as_str()),
        (Scalar::Number(x), Candidate::Json(Value::Number(n))) => n.as_f64() == Some(*x),
        (Scalar::Bool(x), Candidate::Json(Value::Bool(b))) => x == b,
        (Scalar::Null, Candidate::Json(Value::Null)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(patterns: Value) -> KafkaFilter {
        let Value::Array(patterns) = patterns else {
            panic!("a list of patterns")
        };
        KafkaFilter::compile(&patterns).expect("valid patterns")
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
        assert!(
            !filter(json!([{"value": [{"anything-but": "x"}]}])).matches(None, Some(binary), &[])
        );
        assert!(
            !filter(json!([{"value": {"a": [{"exists": false}]}}])).matches(
                None,
                Some(binary),
                &[]
            )
        );
        assert!(filter(json!([{"key": ["k"]}])).matches(Some(b"k"), Some(binary), &[]));
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
            (json!([{"headers": ["x"]}]), "[0].headers"),
            (json!([{"headers": {}}]), "[0].headers"),
            (
                json!([{"key": ["ok"]}, {"headers": {"h": 1}}]),
                "[1].headers.h",
            ),
            (
                json!([{"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}, {"key": ["a"]}]),
                "",
            ),
        ];
        for (patterns, path) in cases {
            let Value::Array(list) = &patterns else {
                unreachable!()
            };
            let err = KafkaFilter::compile(list).expect_err(&patterns.to_string());
            assert_eq!(err.path, path, "{patterns}: {err}");
            assert!(
                err.to_string().starts_with(&format!("filter{path}: ")),
                "{err}"
            );
        }
    }
}
