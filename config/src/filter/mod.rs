//! The Kafka trigger `filter` grammar: raw patterns as written ([`FilterCriteria`]) and their
//! one parser into typed [`FilterPattern`]s, which the Kafka source matches records against.
//!
//! # Grammar
//!
//! ```json
//! {"value": {"device_ID": [{"prefix": "AB"}], "reading": [{"numeric": [">", 0, "<=", 5]}]},
//!  "key": ["order-42", {"prefix": "order-"}],
//!  "headers": {"content-type": ["application/json"], "trace": [{"exists": true}]}}
//! ```
//!
//! - A trigger's `filter` lists at most [`MAX_PATTERNS`] patterns (Lambda's `FilterCriteria`
//!   limit), OR-ed.
//! - A pattern is a non-empty object with any of `value`, `key` and `headers`, AND-ed. `value`
//!   and `key` take a [`Node`]; `headers` maps header names (at least one) to nodes.
//! - A node is a *leaf*, a non-empty list of [`Matcher`]s (OR-ed), or a non-empty object of
//!   *fields*, mapping field names to nested nodes (AND-ed).
//! - A matcher is a string, number, boolean or `null` (exact); `{"prefix": "s"}`;
//!   `{"numeric": [">", 0, "<=", 5]}` (one or two comparisons from `<`, `<=`, `=`, `>`,
//!   `>=`); `{"exists": true|false}`; or `{"anything-but": v}` where `v` is a scalar, a
//!   non-empty list of scalars, or `{"prefix": "s"}`.
//!
//! What a pattern matches (text, JSON, absent keys and headers) is the matcher's business:
//! `impulse_connectors::kafka::KafkaFilter`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::locate::FieldPath;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// Most patterns in a trigger's `filter` (Lambda's `FilterCriteria` limit).
pub const MAX_PATTERNS: usize = 5;

/// A Kafka trigger's `filter` as written: a list of JSON patterns, checked by validation and
/// turned into [`FilterPattern`]s by [`FilterCriteria::parse`]. Empty: every record passes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FilterCriteria(Vec<Value>);

impl FilterCriteria {
    /// The patterns as written.
    pub fn patterns(&self) -> &[Value] {
        &self.0
    }

    /// Parses every pattern.
    ///
    /// # Errors
    ///
    /// Every rule the patterns break (see the [module documentation](crate::filter)), not just the first.
    pub fn parse(&self) -> Result<Vec<FilterPattern>, FilterError> {
        let mut parser = Parser::default();
        if self.0.len() > MAX_PATTERNS {
            parser.problem(
                &FieldPath::root(),
                format!("at most {MAX_PATTERNS} patterns, found {}", self.0.len()),
            );
        }
        let patterns = all(self
            .0
            .iter()
            .enumerate()
            .map(|(i, pattern)| parser.pattern(&FieldPath::root().index(i), pattern)));
        match patterns {
            Some(patterns) if parser.problems.is_empty() => Ok(patterns),
            _ => Err(FilterError {
                problems: parser.problems,
            }),
        }
    }
}

impl From<Vec<Value>> for FilterCriteria {
    fn from(patterns: Vec<Value>) -> Self {
        Self(patterns)
    }
}

/// One parsed pattern: conditions on a record's value, key and headers, AND-ed. A condition
/// left out (`None`, or a header not listed) does not constrain the record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterPattern {
    /// What the record's value must match.
    pub value: Option<Node>,
    /// What the record's key must match.
    pub key: Option<Node>,
    /// Header name (exact, case-sensitive) and what that header must match.
    pub headers: Vec<(String, Node)>,
}

/// A pattern below `value`, `key` or a header name. Parsed lists and objects are never empty.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Matchers, OR-ed, compared with the value itself.
    Leaf(Vec<Matcher>),
    /// Field names and their patterns, AND-ed; only JSON objects (or arrays of them) have
    /// fields.
    Fields(Vec<(String, Node)>),
}

/// One entry of a leaf.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// A string, number, boolean or `null`, compared exactly.
    Equals(Scalar),
    /// `{"prefix": "s"}`: a string starting with `s`.
    Prefix(String),
    /// `{"numeric": [">", 0, "<=", 5]}`: a number meeting every comparison (one or two).
    Numeric(Vec<(Comparison, f64)>),
    /// `{"exists": b}`: whether the value must be present.
    Exists(bool),
    /// `{"anything-but": v}`: something present that equals none of these (one or more).
    AnythingBut(Vec<Scalar>),
    /// `{"anything-but": {"prefix": "s"}}`: something present that does not start with `s`.
    AnythingButPrefix(String),
}

/// A JSON value that is neither a list nor an object.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    String(String),
    /// A number, compared as `f64`.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// The operator of one `numeric` comparison: `value <op> bound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Filter patterns that break the grammar: every problem found, in document order.
///
/// Displayed as `filter{path}: {message}`, one problem after another separated by `; `, e.g.
/// `filter[0].value.device_ID[0].prefix: must be a string`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FilterError {
    problems: Vec<Problem>,
}

/// One broken rule: where below `filter`, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Below `filter`: `[0].value.device_ID[0].prefix`; the root for the pattern count.
    pub(crate) path: FieldPath,
    /// What is wrong.
    pub(crate) message: String,
}

impl FilterError {
    /// The problems, in document order; never empty.
    pub(crate) fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "filter{}: {}", problem.path, problem.message)?;
        }
        Ok(())
    }
}

// === impl Parser ===

/// Walks the raw patterns, noting every problem and carrying on past it. A part with a problem
/// parses to `None` or is left out, so a result MUST only be used when no problem was noted.
#[derive(Default)]
struct Parser {
    problems: Vec<Problem>,
}

impl Parser {
    fn problem(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Notes a problem; returns `None` for the part that has it.
    fn fail<T>(&mut self, path: &FieldPath, message: impl Into<String>) -> Option<T> {
        self.problem(path, message);
        None
    }

    fn pattern(&mut self, path: &FieldPath, pattern: &Value) -> Option<FilterPattern> {
        let Value::Object(fields) = pattern else {
            return self.fail(path, "a pattern must be an object");
        };
        if fields.is_empty() {
            return self.fail(path, "a pattern must name `value`, `key` or `headers`");
        }
        let mut out = FilterPattern::default();
        for (field, sub) in fields {
            let sub_path = path.key(field);
            match field.as_str() {
                "value" => out.value = self.node(&sub_path, sub),
                "key" => out.key = self.node(&sub_path, sub),
                "headers" => out.headers = self.headers(&sub_path, sub).unwrap_or_default(),
                other => self.problem(
                    &sub_path,
                    format!("unknown field `{other}`: use `value`, `key` or `headers`"),
                ),
            }
        }
        Some(out)
    }

    fn headers(&mut self, path: &FieldPath, headers: &Value) -> Option<Vec<(String, Node)>> {
        let Value::Object(headers) = headers else {
            return self.fail(path, "must map header names to patterns");
        };
        if headers.is_empty() {
            return self.fail(path, "must name at least one header");
        }
        all(headers.iter().map(|(name, node)| {
            self.node(&path.key(name), node)
                .map(|node| (name.clone(), node))
        }))
    }

    fn node(&mut self, path: &FieldPath, node: &Value) -> Option<Node> {
        match node {
            Value::Array(matchers) if matchers.is_empty() => {
                self.fail(path, "must list at least one value or matcher")
            }
            Value::Array(matchers) => all(matchers
                .iter()
                .enumerate()
                .map(|(i, matcher)| self.matcher(&path.index(i), matcher)))
            .map(Node::Leaf),
            Value::Object(fields) if fields.is_empty() => {
                self.fail(path, "must name at least one field")
            }
            Value::Object(fields) => all(fields.iter().map(|(name, sub)| {
                self.node(&path.key(name), sub)
                    .map(|node| (name.clone(), node))
            }))
            .map(Node::Fields),
            _ => self.fail(
                path,
                "must be a list of values and matchers, or an object of fields",
            ),
        }
    }

    fn matcher(&mut self, path: &FieldPath, matcher: &Value) -> Option<Matcher> {
        if let Some(scalar) = scalar(matcher) {
            return Some(Matcher::Equals(scalar));
        }
        let Value::Object(map) = matcher else {
            return self.fail(
                path,
                "must be a string, number, boolean, null or matcher object",
            );
        };
        let mut entries = map.iter();
        let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
            return self.fail(
                path,
                "a matcher object has exactly one of `prefix`, `numeric`, `exists`, \
                 `anything-but`",
            );
        };
        let arg_path = path.key(name);
        match name.as_str() {
            "prefix" => self.prefix(&arg_path, arg).map(Matcher::Prefix),
            "exists" => match arg {
                Value::Bool(b) => Some(Matcher::Exists(*b)),
                _ => self.fail(&arg_path, "must be true or false"),
            },
            "numeric" => self.numeric(&arg_path, arg).map(Matcher::Numeric),
            "anything-but" => self.anything_but(&arg_path, arg),
            other => self.fail(
                &arg_path,
                format!(
                    "unknown matcher `{other}`: use `prefix`, `numeric`, `exists` or \
                     `anything-but`"
                ),
            ),
        }
    }

    fn prefix(&mut self, path: &FieldPath, arg: &Value) -> Option<String> {
        match arg {
            Value::String(s) => Some(s.clone()),
            _ => self.fail(path, "must be a string"),
        }
    }

    fn numeric(&mut self, path: &FieldPath, arg: &Value) -> Option<Vec<(Comparison, f64)>> {
        let items = match arg {
            Value::Array(items)
                if !items.is_empty() && items.len() <= 4 && items.len() % 2 == 0 =>
            {
                items
            }
            _ => {
                return self.fail(
                    path,
                    "must hold one or two comparisons, such as [\">\", 0, \"<=\", 5]",
                )
            }
        };
        all(items.chunks(2).enumerate().map(|(i, pair)| {
            let comparison = match pair[0].as_str() {
                Some("<") => Some(Comparison::Lt),
                Some("<=") => Some(Comparison::Le),
                Some("=") => Some(Comparison::Eq),
                Some(">") => Some(Comparison::Gt),
                Some(">=") => Some(Comparison::Ge),
                _ => self.fail(
                    &path.index(2 * i),
                    "must be one of \"<\", \"<=\", \"=\", \">\", \">=\"",
                ),
            };
            let bound = match pair[1].as_f64() {
                Some(bound) => Some(bound),
                None => self.fail(&path.index(2 * i + 1), "must be a number"),
            };
            Some((comparison?, bound?))
        }))
    }

    fn anything_but(&mut self, path: &FieldPath, arg: &Value) -> Option<Matcher> {
        match arg {
            Value::Array(values) if values.is_empty() => {
                self.fail(path, "must list at least one value")
            }
            Value::Array(values) => all(values.iter().enumerate().map(|(i, value)| {
                scalar(value).or_else(|| {
                    self.fail(&path.index(i), "must be a string, number, boolean or null")
                })
            }))
            .map(Matcher::AnythingBut),
            Value::Object(inner) => match (inner.len(), inner.get("prefix")) {
                (1, Some(prefix)) => self
                    .prefix(&path.key("prefix"), prefix)
                    .map(Matcher::AnythingButPrefix),
                _ => self.fail(
                    path,
                    "only `{\"prefix\": …}` may be nested in `anything-but`",
                ),
            },
            other => match scalar(other) {
                Some(excluded) => Some(Matcher::AnythingBut(vec![excluded])),
                None => self.fail(path, "must be a value, a list of values or a prefix"),
            },
        }
    }
}

/// Every item parsed, or `None` if any had a problem. Parses them all either way, so that
/// every problem is noted.
fn all<T>(items: impl Iterator<Item = Option<T>>) -> Option<Vec<T>> {
    let items: Vec<Option<T>> = items.collect();
    items.into_iter().collect()
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
