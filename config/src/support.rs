//! Serde helpers shared by the model, and redaction for `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserializer;

/// String maps (`librdkafka_options`, `environment`) whose values may be written as strings,
/// integers, floats or booleans: librdkafka and process environments take every value as a
/// string, and YAML users write `fetch.max.bytes: 1048576` without quotes.
pub(crate) mod string_map {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let raw = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
        Ok(raw.into_iter().map(|(k, Scalar(v))| (k, v)).collect())
    }

    use serde::Deserialize;

    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ScalarVisitor)
        }
    }

    struct ScalarVisitor;

    impl Visitor<'_> for ScalarVisitor {
        type Value = Scalar;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, number or boolean")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar(v.to_owned()))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar(v.to_string()))
        }
    }
}

/// Secrets (`Option<SecretString>`): strings only, and errors that never quote the value.
/// serde's own `invalid type` error quotes a scalar (``invalid type: integer `123…` ``), and a
/// numeric token written without quotes (YAML's default) is still a secret.
pub(crate) mod secret_string {
    use super::*;
    use secrecy::SecretString;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SecretString>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<SecretString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            SecretVisitor.expecting(f)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(SecretVisitor).map(Some)
        }
    }

    struct SecretVisitor;

    impl SecretVisitor {
        /// The error for a value of the wrong kind, naming the kind only.
        fn refuse<E: de::Error, T>(&self, kind: &'static str) -> Result<T, E> {
            Err(E::invalid_type(de::Unexpected::Other(kind), self))
        }
    }

    impl Visitor<'_> for SecretVisitor {
        type Value = SecretString;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string (write the secret in quotes)")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretString, E> {
            Ok(SecretString::from(v))
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretString, E> {
            self.refuse("boolean")
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretString, E> {
            self.refuse("integer")
        }

        fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretString, E> {
            self.refuse("integer")
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretString, E> {
            self.refuse("integer")
        }

        fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretString, E> {
            self.refuse("integer")
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretString, E> {
            self.refuse("floating point number")
        }

        fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretString, E> {
            self.refuse("bytes")
        }
    }
}

/// `Option<DateTime<Utc>>` from an RFC 3339 string, or from a TOML offset date-time literal
/// (`starting_timestamp = 2026-01-01T00:00:00Z`), which the `toml` crate hands to serde as a
/// one-entry map.
pub(crate) mod timestamp {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize, Serializer};

    /// The field name the `toml` crate uses to pass a datetime literal through serde.
    const TOML_DATETIME_FIELD: &str = "$__toml_private_datetime";

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(|v| v.to_rfc3339()).serialize(serializer)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        struct Wrapper(DateTime<Utc>);
        impl<'de> Deserialize<'de> for Wrapper {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(TimestampVisitor).map(Wrapper)
            }
        }
        Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|Wrapper(t)| t))
    }

    struct TimestampVisitor;

    impl<'de> Visitor<'de> for TimestampVisitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 timestamp with an offset, e.g. \"2026-01-01T00:00:00Z\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|err| {
                    E::custom(format!(
                        "invalid timestamp \"{v}\": {err}; expected RFC 3339 with an offset, \
                         e.g. \"2026-01-01T00:00:00Z\""
                    ))
                })
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            match map.next_key::<String>()? {
                Some(key) if key == TOML_DATETIME_FIELD => {
                    let value: String = map.next_value()?;
                    self.visit_str(&value)
                }
                _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
            }
        }
    }
}

// === redaction ===

/// A URL with the password (or a lone userinfo, which Redis reads as a password) replaced by
/// `***`: the one redaction every `Debug` output, error message and log line uses for URLs
/// from the configuration (function endpoints, Redis URLs).
///
/// Works on malformed input too: it never echoes what follows `://` up to `@`, even when a
/// password holds a `/`, `?` or `#` that makes the URL unparsable (`https://u:p/w@host`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = match rest[..authority_end].rfind('@') {
        Some(at) => at,
        // A valid URL with an `@` only in its path or query has no userinfo.
        None if rest.contains('@') && url::Url::parse(url.trim()).is_err() => {
            match rest.rfind('@') {
                Some(at) => at,
                None => return url.to_owned(),
            }
        }
        None => return url.to_owned(),
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{shown}{}", &url[..rest_start], &rest[at..])
}

/// Whether a librdkafka property (or an environment variable) likely holds a secret
/// (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`,
/// `sasl.jaas.config`, …). The one list every `Debug` output and error message redacts by.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "sasl.oauthbearer.config",
        "jaas",
        "key.pem",
        "private",
    ]
    .iter()
    .any(|needle| key.contains(needle))
}

/// `text` (an error message, say librdkafka's, which may quote a property's value) with the
/// value of every secret-looking option replaced by `***`.
pub fn redact_secret_values(text: &str, options: &BTreeMap<String, String>) -> String {
    options
        .iter()
        .filter(|(key, value)| is_secret_key(key) && !value.is_empty())
        .fold(text.to_owned(), |text, (_, value)| {
            text.replace(value.as_str(), "***")
        })
}

/// `Debug` for a URL string, with credentials redacted.
pub(crate) struct DebugUrl<'a>(pub(crate) &'a str);

impl fmt::Debug for DebugUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(self.0), f)
    }
}

/// `Debug` for a string map (librdkafka options) with the values of secret-looking keys
/// redacted.
pub struct DebugSecretMap<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for DebugSecretMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &str = if is_secret_key(k) { "***" } else { v };
                (k, v)
            }))
            .finish()
    }
}

/// `Debug` for a string map showing keys only (process environments may hold anything).
pub(crate) struct DebugKeys<'a>(pub(crate) &'a BTreeMap<String, String>);

impl fmt::Debug for DebugKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "***")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_credentials() {
        assert_eq!(
            redact_url("redis://user:hunter2@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("rediss://:hunter2@host"), "rediss://:***@host");
        assert_eq!(redact_url("redis://hunter2@host"), "redis://***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("http://h/p@q"), "http://h/p@q");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("https://svc:canary@orders.internal:8443/invoke"),
            "https://svc:***@orders.internal:8443/invoke"
        );
        // A `/` in the password: the URL does not parse, and nothing of it is shown.
        assert_eq!(
            redact_url("https://svc:can/ary@host/fn"),
            "https://svc:***@host/fn"
        );
        assert_eq!(
            redact_url("https://svc:can?ary@host"),
            "https://svc:***@host"
        );
    }

    #[test]
    fn secret_keys() {
        assert!(is_secret_key("sasl.password"));
        assert!(is_secret_key("ssl.key.password"));
        assert!(is_secret_key("API_TOKEN"));
        assert!(!is_secret_key("fetch.max.bytes"));
    }
}
