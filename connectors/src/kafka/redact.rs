//! Keeping secrets out of logs and `Debug`: librdkafka options such as `sasl.password`.

use std::collections::BTreeMap;
use std::fmt;

/// `Debug` for librdkafka options, with the values of secret-looking properties hidden.
pub(super) struct Redacted<'a>(pub(super) &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let v: &str = if is_secret_key(k) { "***" } else { v };
                (k, v)
            }))
            .finish()
    }
}

/// Whether a librdkafka property likely holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, …).
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "sasl.oauthbearer.config",
        "sasl.jaas",
        "key.pem",
        "private",
    ]
    .iter()
    .any(|needle| key.contains(needle))
}

/// `text` with the value of every secret-looking option replaced by `***`.
pub(super) fn redact_values(text: &str, options: &BTreeMap<String, String>) -> String {
    options
        .iter()
        .filter(|(k, v)| is_secret_key(k) && !v.is_empty())
        .fold(text.to_owned(), |text, (_, v)| {
            text.replace(v.as_str(), "***")
        })
}
