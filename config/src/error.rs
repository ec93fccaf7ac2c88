//! Config errors: each names the file (or environment variable), the line and the field path.

use std::fmt;

/// One problem in a configuration.
///
/// Displayed as `{file}:{line}: {path}: {message}`, e.g.
/// `impulse.toml:14: triggers.orders.batch_size: must be between 1 and 10000`; `:{line}` is
/// left out when unknown and `{path}: ` when empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as given, or `environment variable IMPULSE_…` for an override.
    pub file: String,
    /// 1-based line in `file`, when known.
    pub line: Option<usize>,
    /// Dotted field path, e.g. `triggers.orders.topics[0]`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in file order (then environment overrides).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let full = ConfigError {
            file: "quickstart.toml".into(),
            line: Some(14),
            path: "triggers.orders.batch_size".into(),
            message: "must be between 1 and 10000".into(),
        };
        assert_eq!(
            full.to_string(),
            "quickstart.toml:14: triggers.orders.batch_size: must be between 1 and 10000"
        );
        let env = ConfigError {
            file: "environment variable IMPULSE_LISTEN".into(),
            line: None,
            path: String::new(),
            message: "bad".into(),
        };
        assert_eq!(env.to_string(), "environment variable IMPULSE_LISTEN: bad");
        let all = ConfigErrors(vec![full, env]);
        assert_eq!(all.to_string().lines().count(), 2);
    }
}
