//! Field paths and the `path → line` index built from a spanned parse of the config text.
//!
//! Serde reports *where in the model* an error is (a field path); the index says *where in the
//! file* that field is (a line). The typed model is deserialised from a generic value, so the
//! index is built separately, from a second, spanned parse of the same text: `toml`'s `DeTable`
//! for TOML, and the event stream (with markers) of `granit-parser`, the YAML parser behind
//! serde-saphyr, for YAML.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

// === impl FieldPath ===

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Segment {
    /// A struct field or map key.
    Key(String),
    /// An array item.
    Index(usize),
}

/// A path into the config tree, shown dotted: `triggers.orders.topics[0]`.
///
/// Keys that are not plain (`[A-Za-z0-9_-]+`) are quoted, as TOML does:
/// `triggers.orders.librdkafka_options."group.id"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FieldPath(Vec<Segment>);

impl FieldPath {
    /// The root of the document (shown as the empty string).
    pub(crate) fn root() -> Self {
        Self(Vec::new())
    }

    /// Builds a path from keys only.
    pub(crate) fn keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            keys.into_iter()
                .map(|k| Segment::Key(k.to_owned()))
                .collect(),
        )
    }

    /// This path extended by a map key or field.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by an array index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// This path followed by `other`.
    pub(crate) fn join(&self, other: &FieldPath) -> Self {
        let mut segments = self.0.clone();
        segments.extend(other.0.iter().cloned());
        Self(segments)
    }

    /// The enclosing path, or `None` at the root.
    pub(crate) fn parent(&self) -> Option<Self> {
        let (_, rest) = self.0.split_last()?;
        Some(Self(rest.to_vec()))
    }

    /// The segments, outermost first.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// Converts a `serde_path_to_error` path. Enum variant segments carry no position in the file
    /// and are dropped; an unknown segment ends the path (what follows it cannot be trusted).
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        let mut segments = Vec::new();
        for segment in path {
            match segment {
                serde_path_to_error::Segment::Map { key } => {
                    segments.push(Segment::Key(key.clone()));
                }
                serde_path_to_error::Segment::Seq { index } => {
                    segments.push(Segment::Index(*index));
                }
                serde_path_to_error::Segment::Enum { .. } => {}
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        Self(segments)
    }
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_plain_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

// === impl LineIndex ===

/// Maps field paths to the 1-based line where the field (its key, or the array item) starts.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineIndex {
    lines: HashMap<FieldPath, usize>,
}

impl LineIndex {
    /// Records `path` at `line`, keeping the first line seen for a path.
    fn insert(&mut self, path: FieldPath, line: usize) {
        self.lines.entry(path).or_insert(line);
    }

    /// The line of exactly this path.
    pub(crate) fn exact(&self, path: &FieldPath) -> Option<usize> {
        self.lines.get(path).copied()
    }

    /// The line of this path or, failing that, of its nearest ancestor present in the file.
    pub(crate) fn nearest(&self, path: &FieldPath) -> Option<usize> {
        let mut current = Some(path.clone());
        while let Some(path) = current {
            if let Some(line) = self.exact(&path) {
                return Some(line);
            }
            current = path.parent();
        }
        None
    }
}

/// Byte offset → 1-based line number.
#[derive(Debug)]
pub(crate) struct LineStarts(Vec<usize>);

impl LineStarts {
    pub(crate) fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self(starts)
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        // `partition_point` counts the line starts at or before `offset`: that count is the line.
        self.0.partition_point(|&start| start <= offset).max(1)
    }
}

// === TOML ===

/// Builds the index of a parsed TOML document.
pub(crate) fn toml_index(text: &str, table: &DeTable<'_>) -> LineIndex {
    let starts = LineStarts::new(text);
    let mut index = LineIndex::default();
    toml_table(&starts, &mut index, &FieldPath::root(), table);
    index
}

fn toml_table(starts: &LineStarts, index: &mut LineIndex, path: &FieldPath, table: &DeTable<'_>) {
    for (key, value) in table {
        let child = path.key(key.get_ref());
        index.insert(child.clone(), starts.line_of(key.span().start));
        toml_value(starts, index, &child, value);
    }
}

fn toml_value(
    starts: &LineStarts,
    index: &mut LineIndex,
    path: &FieldPath,
    value: &Spanned<DeValue<'_>>,
) {
    match value.get_ref() {
        DeValue::Table(table) => toml_table(starts, index, path, table),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let child = path.index(i);
                index.insert(child.clone(), starts.line_of(item.span().start));
                toml_value(starts, index, &child, item);
            }
        }
        _ => {}
    }
}

// === YAML ===

/// A key that appears twice in one YAML mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// The path of the key.
    pub(crate) path: FieldPath,
    /// The line of the repeated occurrence.
    pub(crate) line: usize,
    /// The line of the first occurrence.
    pub(crate) first_line: usize,
}

/// The index of a YAML document, and the duplicate keys found while building it.
#[derive(Debug, Default)]
pub(crate) struct YamlIndex {
    pub(crate) index: LineIndex,
    pub(crate) duplicates: Vec<DuplicateKey>,
}

/// A YAML syntax error: 1-based line and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlSyntaxError {
    pub(crate) line: usize,
    pub(crate) message: String,
}

enum MapState {
    /// The next node is a key.
    Key,
    /// The next node is the value of this key (`None`: a complex key we do not index).
    Value(Option<FieldPath>),
}

enum Frame {
    Map {
        path: FieldPath,
        state: MapState,
        seen: HashMap<String, usize>,
    },
    Seq {
        path: FieldPath,
        next: usize,
    },
    /// A subtree we do not index (complex keys, values of complex keys), with its nesting depth.
    Skip(usize),
}

/// Builds the index of a YAML document; a second document is an error.
///
/// The walk keeps an explicit stack instead of recursing, so deeply nested input cannot
/// overflow the thread's stack.
pub(crate) fn yaml_index(text: &str) -> Result<YamlIndex, YamlSyntaxError> {
    let mut out = YamlIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|err| YamlSyntaxError {
            line: err.marker().line(),
            message: err.info(),
        })?;
        let line = span.start.line();
        match event {
            Event::Scalar(value, ..) => scalar(&mut out, &mut stack, Some(&value), line),
            Event::Alias(_) | Event::UnresolvedAlias(_) => scalar(&mut out, &mut stack, None, line),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(event, Event::MappingStart(..));
                let child = match stack.last_mut() {
                    None => Some(FieldPath::root()),
                    Some(Frame::Skip(depth)) => {
                        *depth += 1;
                        continue;
                    }
                    Some(Frame::Map { state, .. }) => match state {
                        MapState::Key => None,
                        MapState::Value(path) => path.clone(),
                    },
                    Some(Frame::Seq { path, next }) => {
                        let child = path.index(*next);
                        out.index.insert(child.clone(), line);
                        Some(child)
                    }
                };
                stack.push(match child {
                    None => Frame::Skip(1),
                    Some(path) if is_map => Frame::Map {
                        path,
                        state: MapState::Key,
                        seen: HashMap::new(),
                    },
                    Some(path) => Frame::Seq { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Skip(depth)) = stack.last_mut() {
                    if *depth > 1 {
                        *depth -= 1;
                        continue;
                    }
                }
                stack.pop();
                complete(&mut stack);
            }
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlSyntaxError {
                        line,
                        message: "a config file holds one YAML document; this starts another"
                            .to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A scalar (or alias) node: a key, a value, or an array item.
fn scalar(out: &mut YamlIndex, stack: &mut [Frame], value: Option<&str>, line: usize) {
    match stack.last_mut() {
        None | Some(Frame::Skip(_)) => {}
        Some(Frame::Map { path, state, seen }) => match state {
            MapState::Key => {
                let Some(key) = value else {
                    // An alias used as a key: nothing sensible to index.
                    *state = MapState::Value(None);
                    return;
                };
                let child = path.key(key);
                if let Some(&first_line) = seen.get(key) {
                    out.duplicates.push(DuplicateKey {
                        path: child.clone(),
                        line,
                        first_line,
                    });
                } else {
                    seen.insert(key.to_owned(), line);
                    out.index.insert(child.clone(), line);
                }
                *state = MapState::Value(Some(child));
            }
            MapState::Value(_) => *state = MapState::Key,
        },
        Some(Frame::Seq { path, next }) => {
            out.index.insert(path.index(*next), line);
            *next += 1;
        }
    }
}

/// A collection node just ended: advance its parent.
fn complete(stack: &mut [Frame]) {
    match stack.last_mut() {
        None | Some(Frame::Skip(_)) => {}
        Some(Frame::Map { state, .. }) => {
            *state = match state {
                // The node that ended was a complex key: its value comes next.
                MapState::Key => MapState::Value(None),
                MapState::Value(_) => MapState::Key,
            };
        }
        Some(Frame::Seq { next, .. }) => *next += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FieldPath {
        // Test helper: dotted keys with optional `[i]` suffixes, no quoting.
        let mut path = FieldPath::root();
        for part in s.split('.') {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            path = path.key(key);
            for idx in rest.split('[') {
                if let Some(n) = idx.strip_suffix(']') {
                    path = path.index(n.parse().expect("test path index"));
                }
            }
        }
        path
    }

    #[test]
    fn path_display() {
        let path = FieldPath::root()
            .key("triggers")
            .key("orders")
            .key("topics")
            .index(0);
        assert_eq!(path.to_string(), "triggers.orders.topics[0]");
        let path = FieldPath::keys(["triggers", "o", "librdkafka_options", "group.id"]);
        assert_eq!(
            path.to_string(),
            "triggers.o.librdkafka_options.\"group.id\""
        );
        assert_eq!(FieldPath::root().to_string(), "");
        assert_eq!(p("a.b[2]").parent(), Some(p("a.b")));
    }

    #[test]
    fn line_starts() {
        let starts = LineStarts::new("a\nbc\n\nd");
        assert_eq!(starts.line_of(0), 1);
        assert_eq!(starts.line_of(1), 1);
        assert_eq!(starts.line_of(2), 2);
        assert_eq!(starts.line_of(5), 3);
        assert_eq!(starts.line_of(6), 4);
        assert_eq!(starts.line_of(100), 4);
    }

    const TOML: &str = r#"# comment
[server]
listen = "0.0.0.0:8080"

[functions.resize]
timeout = "3s"
target = { type = "http", endpoint = "http://localhost:9000" }

[triggers.orders]
type = "kafka"
function = "resize"
topics = [
  "orders",
  "refunds",
]
librdkafka_options."fetch.max.bytes" = "100"

[[list]]
a = 1
[[list]]
a = 2
"#;

    #[test]
    fn toml_lines() {
        let table = DeTable::parse(TOML).expect("valid TOML");
        let index = toml_index(TOML, table.get_ref());
        assert_eq!(index.exact(&p("server")), Some(2));
        assert_eq!(index.exact(&p("server.listen")), Some(3));
        assert_eq!(index.exact(&p("functions")), Some(5));
        assert_eq!(index.exact(&p("functions.resize")), Some(5));
        assert_eq!(index.exact(&p("functions.resize.timeout")), Some(6));
        assert_eq!(index.exact(&p("functions.resize.target.endpoint")), Some(7));
        assert_eq!(index.exact(&p("triggers.orders.type")), Some(10));
        assert_eq!(index.exact(&p("triggers.orders.topics")), Some(12));
        assert_eq!(index.exact(&p("triggers.orders.topics[0]")), Some(13));
        assert_eq!(index.exact(&p("triggers.orders.topics[1]")), Some(14));
        let dotted = FieldPath::keys([
            "triggers",
            "orders",
            "librdkafka_options",
            "fetch.max.bytes",
        ]);
        assert_eq!(index.exact(&dotted), Some(16));
        assert_eq!(index.exact(&p("list[1].a")), Some(21));
        assert_eq!(index.exact(&p("triggers.orders.batch_size")), None);
        assert_eq!(index.nearest(&p("triggers.orders.batch_size")), Some(9));
        assert_eq!(index.nearest(&p("nope.nothing")), None);
    }

    const YAML: &str = r#"# comment
server:
  listen: "0.0.0.0:8080"

functions:
  resize:
    timeout: 3s
    target: {type: http, endpoint: "http://localhost:9000"}

triggers:
  orders:
    type: kafka
    function: resize
    topics:
      - orders
      - refunds
    librdkafka_options:
      fetch.max.bytes: "100"
    input:
      nested:
        - [1, 2]
        - {a: b}
      after: x
  ? [complex, key]
  : value
  later: 1
"#;

    #[test]
    fn yaml_lines() {
        let out = yaml_index(YAML).expect("valid YAML");
        let index = out.index;
        assert!(out.duplicates.is_empty());
        assert_eq!(index.exact(&p("server")), Some(2));
        assert_eq!(index.exact(&p("server.listen")), Some(3));
        assert_eq!(index.exact(&p("functions.resize")), Some(6));
        assert_eq!(index.exact(&p("functions.resize.timeout")), Some(7));
        assert_eq!(index.exact(&p("functions.resize.target.endpoint")), Some(8));
        assert_eq!(index.exact(&p("triggers.orders.type")), Some(12));
        assert_eq!(index.exact(&p("triggers.orders.topics[0]")), Some(15));
        assert_eq!(index.exact(&p("triggers.orders.topics[1]")), Some(16));
        let dotted = FieldPath::keys([
            "triggers",
            "orders",
            "librdkafka_options",
            "fetch.max.bytes",
        ]);
        assert_eq!(index.exact(&dotted), Some(18));
        assert_eq!(index.exact(&p("triggers.orders.input.nested[0]")), Some(21));
        assert_eq!(
            index.exact(&p("triggers.orders.input.nested[0][1]")),
            Some(21)
        );
        assert_eq!(
            index.exact(&p("triggers.orders.input.nested[1].a")),
            Some(22)
        );
        assert_eq!(index.exact(&p("triggers.orders.input.after")), Some(23));
        assert_eq!(index.exact(&p("triggers.later")), Some(26));
        assert_eq!(index.nearest(&p("triggers.orders.batch_size")), Some(11));
    }

    #[test]
    fn yaml_duplicates_and_errors() {
        let text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n";
        let out = yaml_index(text).expect("valid YAML");
        assert_eq!(
            out.duplicates,
            vec![
                DuplicateKey {
                    path: p("b.c"),
                    line: 4,
                    first_line: 3
                },
                DuplicateKey {
                    path: p("a"),
                    line: 5,
                    first_line: 1
                },
            ]
        );
        let err = yaml_index("a: 1\nb: [1, 2\nc: 3\n").expect_err("unclosed flow sequence");
        assert!(err.line >= 2, "{err:?}");
        let err = yaml_index("a: 1\n  b: 2\n").expect_err("bad indentation");
        assert_eq!(err.line, 2, "{err:?}");
    }
}
