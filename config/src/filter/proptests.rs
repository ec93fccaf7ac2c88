//! Property tests of the filter grammar's parser: any JSON and near-valid patterns parse or
//! fail with located problems, never panic, and a parse keeps the grammar's invariants.

use impulse_test_support::prop::{check, filter_patterns, json};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

use super::*;

#[test]
fn any_patterns_parse_or_fail_with_problems() {
    let patterns = prop_oneof![filter_patterns(), proptest::collection::vec(json(), 0..7),];
    check("filter::parse", patterns, |patterns| {
        let count = patterns.len();
        match FilterCriteria::from(patterns).parse() {
            Ok(parsed) => {
                prop_assert_eq!(parsed.len(), count);
                prop_assert!(count <= MAX_PATTERNS);
                for pattern in &parsed {
                    for node in pattern.value.iter().chain(&pattern.key) {
                        assert_never_empty(node)?;
                    }
                    for (_, node) in &pattern.headers {
                        assert_never_empty(node)?;
                    }
                }
            }
            Err(err) => {
                prop_assert!(!err.problems().is_empty());
                prop_assert!(err.to_string().starts_with("filter"));
            }
        }
        Ok(())
    });
}

/// "Parsed lists and objects are never empty", and `numeric` holds one or two comparisons.
fn assert_never_empty(node: &Node) -> TestCaseResult {
    match node {
        Node::Leaf(matchers) => {
            prop_assert!(!matchers.is_empty());
            for matcher in matchers {
                match matcher {
                    Matcher::Numeric(comparisons) => {
                        prop_assert!((1..=2).contains(&comparisons.len()));
                    }
                    Matcher::AnythingBut(values) => prop_assert!(!values.is_empty()),
                    _ => {}
                }
            }
        }
        Node::Fields(fields) => {
            prop_assert!(!fields.is_empty());
            for (_, node) in fields {
                assert_never_empty(node)?;
            }
        }
    }
    Ok(())
}
