//! Serde support for durations written as strings with units (`"500ms"`, `"3s"`, `"6h"`).
//!
//! Use with `#[serde(with = "impulse_config::duration")]` on a `std::time::Duration` field, or
//! [`option`] on an `Option<Duration>`. Parsing is [`humantime::parse_duration`]: a sequence of
//! `<integer><unit>` terms (`ns`, `us`, `ms`, `s`, `m`/`min`, `h`, `d`, …), e.g. `"1h 30m"`.
//! Serialising writes [`humantime::format_duration`]'s form, which parses back to the same value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Parses a duration string with units.
///
/// # Errors
///
/// A message fit for a user when the string is not a duration with units.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write a number with a unit, e.g. \"3s\"".to_owned());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration \"{text}\" has no unit; write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|err| format!("invalid duration \"{text}\": {err}"))
}

/// Formats a duration the way it is written in config files (`"6h"`, `"500ms"`).
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Serialises a [`Duration`] as a string with units.
///
/// # Errors
///
/// Only the serializer's own errors.
pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// Deserialises a [`Duration`] from a string with units.
///
/// # Errors
///
/// When the input is not a string or not a duration with units.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string with a unit, such as \"500ms\", \"3s\" or \"6h\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse(value).map_err(E::custom)
    }
}

/// The same for `Option<Duration>` (pair it with `#[serde(default)]`).
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises `Some` as a string with units and `None` as none.
    ///
    /// # Errors
    ///
    /// Only the serializer's own errors.
    pub fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserialises an optional duration string with units.
    ///
    /// # Errors
    ///
    /// When a present value is not a duration with units.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|Wrapper(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse("10min"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse("3").unwrap_err().contains("no unit"));
        assert!(parse("").is_err());
        assert!(parse("three seconds").is_err());
        assert_eq!(format(Duration::from_secs(6 * 3600)), "6h");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
    }
}
