//! Record filters: matching a Kafka record's value, key and headers against the trigger's
//! parsed `filter` patterns.

use bytes::Bytes;
use impulse_config::filter::{Comparison, FilterPattern, Matcher, Node, Scalar};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// A trigger's filter patterns, OR-ed, ready to match records.
///
/// A trigger's `filter` holds up to five patterns, OR-ed; a record passes when any pattern
/// matches (no patterns: every record passes). Records that pass none are acked
/// `Outcome::Dropped` at once, so their offsets commit, and are counted. Lambda filters Kafka
/// records on `value` only; Impulse adds `key` and `headers` (SEMANTICS.md §10.6). The grammar,
/// and its one parser, are `impulse_config::filter`'s; this type only matches.
///
/// # Matching
///
/// - `value` and `key` take a field pattern ([`Node::Fields`], matched against the bytes
///   parsed as JSON) or a leaf ([`Node::Leaf`], matched against the bytes as a whole).
///   `headers` maps header names to the same.
/// - A field pattern only matches JSON (an object, or an array of objects: any element may
///   supply each field).
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
    patterns: Vec<FilterPattern>,
}

impl KafkaFilter {
    /// A filter passing records that match any of `patterns` (from
    /// `FilterCriteria::parse`); none: every record passes.
    pub fn new(patterns: Vec<FilterPattern>) -> Self {
        Self { patterns }
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
                    Comparison::Lt => n < *bound,
                    Comparison::Le => n <= *bound,
                    Comparison::Eq => n == *bound,
                    Comparison::Gt => n > *bound,
                    Comparison::Ge => n >= *bound,
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
