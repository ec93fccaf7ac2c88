//! The operator's files as data: the expressions of the Grafana dashboards and the alert
//! rules, the metric names a PromQL expression reads, and the names the code exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::python::workspace_root;

/// One PromQL expression and where it comes from.
#[derive(Debug, Clone)]
pub struct Expression {
    /// `file: panel title` or `file: alert name`, for messages.
    pub source: String,
    /// The expression as written (Grafana variables included).
    pub expr: String,
    /// Whether it belongs to the overview dashboard, whose every panel must return data under
    /// load.
    pub overview: bool,
}

/// A file of the workspace, read as text; panics naming it when it cannot be read.
pub fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A YAML file of the workspace, parsed.
pub fn yaml(relative: &str) -> Value {
    serde_saphyr::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// A JSON file of the workspace, parsed.
pub fn json(relative: &str) -> Value {
    serde_json::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The workspace-relative paths of the files in `dir` whose names end with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(workspace_root().join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(suffix))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    found.sort();
    found
}

/// The dashboards: `grafana/dashboards/*.json`.
pub fn dashboards() -> Vec<String> {
    files("grafana/dashboards", ".json")
}

/// The alert rule files: `grafana/alerts/*.rules.yml`.
pub fn rule_files() -> Vec<String> {
    files("grafana/alerts", ".rules.yml")
}

/// Every panel of a dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every target expression of every dashboard.
pub fn dashboard_expressions() -> Vec<Expression> {
    let mut out = Vec::new();
    for file in dashboards() {
        let dashboard = json(&file);
        let overview = dashboard["uid"] == "impulse-overview";
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: a target without expr in {panel}"));
                out.push(Expression {
                    source: format!("{file}: {}", panel["title"].as_str().unwrap_or("?")),
                    expr: expr.to_owned(),
                    overview,
                });
            }
        }
    }
    out
}

/// The alerts of every rule file: (file, alert name, expression).
pub fn alerts() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for file in rule_files() {
        let rules = yaml(&file);
        for group in rules["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let (Some(alert), Some(expr)) = (rule["alert"].as_str(), rule["expr"].as_str())
                else {
                    panic!("{file}: a rule without alert or expr: {rule}");
                };
                out.push((file.clone(), alert.to_owned(), expr.trim().to_owned()));
            }
        }
    }
    out
}

/// Every alert expression, as [`Expression`]s.
pub fn alert_expressions() -> Vec<Expression> {
    alerts()
        .into_iter()
        .map(|(file, alert, expr)| Expression {
            source: format!("{file}: {alert}"),
            expr,
            overview: false,
        })
        .collect()
}

/// `expr` with Grafana's variables replaced so that Prometheus can run it: `$__rate_interval`
/// by `rate_interval`, `$function` by `function`.
pub fn instantiate(expr: &str, rate_interval: &str, function: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("${function}", function)
        .replace("$function", function)
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    // Aggregation operators, which may stand before `by (…)` rather than `(`.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names `expr` reads: identifiers that are not functions, keywords, label names
/// (inside `{…}` and grouping lists) or strings.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Depth of `{…}` and `[…]`; inside them nothing is a metric name.
    let mut braces = 0_usize;
    // Whether the last identifier was a grouping keyword, whose `(…)` lists label names.
    let mut grouping = false;
    let mut in_group_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string: skip to its closing quote.
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        match c {
            '{' | '[' => braces += 1,
            '}' | ']' => braces = braces.saturating_sub(1),
            '(' if grouping => {
                in_group_list = true;
                grouping = false;
            }
            ')' if in_group_list => in_group_list = false,
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == ':'
                    || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                grouping = matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                );
            } else if braces == 0 && !in_group_list && !word.starts_with('$') && next != Some(&'(')
            {
                names.insert(word);
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`): skip its letters too.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        i += 1;
    }
    names
}

/// The metric names Impulse exports, read from its source.
#[derive(Debug, Default)]
pub struct ExportedMetrics {
    /// Every name (`impulse_…`).
    pub names: BTreeSet<String>,
    /// The histograms among them (exported with `_bucket`, `_sum` and `_count`).
    pub histograms: BTreeSet<String>,
}

impl ExportedMetrics {
    /// Reads the telemetry module's `pub const NAME: &str = "impulse_…";` declarations (a
    /// histogram is one described with `describe_histogram!`), and any name given as a literal
    /// to `metrics::counter!` / `gauge!` / `histogram!` anywhere in the crates' sources.
    pub fn from_source() -> Self {
        let mut exported = Self::default();
        let telemetry = read("connectors/src/telemetry/mod.rs");
        let mut constants = Vec::new();
        for line in telemetry.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let Some((constant, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let Some(name) = value.strip_suffix("\";") else {
                continue;
            };
            if name.starts_with("impulse_") {
                constants.push((constant.to_owned(), name.to_owned()));
            }
        }
        let compact: String = telemetry.split_whitespace().collect();
        for (constant, name) in constants {
            if compact.contains(&format!("describe_histogram!({constant},")) {
                exported.histograms.insert(name.clone());
            }
            exported.names.insert(name);
        }
        for dir in ["connectors/src", "invoker/src", "broker/src"] {
            for path in rust_files(&workspace_root().join(dir)) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for macro_name in ["counter", "gauge", "histogram"] {
                    let pattern = format!("metrics::{macro_name}!(\"");
                    for (at, _) in text.match_indices(&pattern) {
                        let tail = &text[at + pattern.len()..];
                        if let Some(end) = tail.find('"') {
                            let name = &tail[..end];
                            exported.names.insert(name.to_owned());
                            if macro_name == "histogram" {
                                exported.histograms.insert(name.to_owned());
                            }
                        }
                    }
                }
            }
        }
        exported
    }

    /// Whether `series` is a name Prometheus would see from Impulse (a histogram's
    /// `_bucket` / `_sum` / `_count` included) or from its own scrape (`up`).
    pub fn knows(&self, series: &str) -> bool {
        if series == "up" || self.names.contains(series) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            series
                .strip_suffix(suffix)
                .is_some_and(|base| self.histograms.contains(base))
        })
    }
}

/// Runs `expr` as an instant query through Prometheus' HTTP API at `base`: the `data` of a
/// successful answer, or Prometheus' error (a parse error among them).
pub async fn prometheus_query(
    client: &reqwest::Client,
    base: &str,
    expr: &str,
) -> Result<Value, String> {
    let url = format!("{base}/api/v1/query?query={}", percent_encode(expr));
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("query failed: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{status}: not JSON: {e}"))?;
    if body["status"] == "success" {
        Ok(body["data"].clone())
    } else {
        Err(format!(
            "{status}: {}: {}",
            body["errorType"], body["error"]
        ))
    }
}

/// Percent-encodes a query string value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    #[test]
    fn metric_names_skip_functions_labels_keywords_and_variables() {
        let names = metric_names(
            r#"histogram_quantile(0.99, sum by (function, le) (rate(a_bucket{function="$function", x=~"b|c"}[$__rate_interval])))
              > on (function) 0.5 * max by (function) (b) or up{job="impulse"} == 0 and ignoring(le) c offset 5m"#,
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["a_bucket", "b", "c", "up"]);
    }
}
