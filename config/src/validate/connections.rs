//! Kafka and Redis connection settings shared by triggers, destinations and the queue: URLs,
//! broker lists, topic names, broker-owned client options, and when two of them name the
//! same server.

use std::collections::{BTreeMap, BTreeSet};

use super::Validator;
use crate::locate::FieldPath;

impl Validator {
    pub(super) fn redis_url(&mut self, path: FieldPath, url: &str) {
        if let Err(message) = check_redis_url(url) {
            self.error(path, message);
        }
    }

    pub(super) fn bootstrap_servers(&mut self, path: FieldPath, servers: &str) {
        if servers.trim().is_empty() {
            self.error(path, "must not be empty");
        } else if servers.split(',').any(|s| s.trim().is_empty()) {
            self.error(path, "empty entry in the comma-separated broker list");
        }
    }

    pub(super) fn owned_options(
        &mut self,
        path: &FieldPath,
        options: &BTreeMap<String, String>,
        owned: &[(&str, &str)],
    ) {
        for key in options.keys() {
            if let Some((_, why)) = owned.iter().find(|(k, _)| *k == key.trim()) {
                self.error(
                    path.key(key),
                    format!("`{}` is owned by the broker: {why}", key.trim()),
                );
            }
        }
    }
}

/// Checks a Redis URL without echoing it (it may hold a password).
pub(super) fn check_redis_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|err| format!("invalid URL ({err}); expected redis:// or rediss://"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "unsupported scheme `{}`; expected redis:// or rediss://",
            url.scheme()
        ));
    }
    match url.fragment() {
        Some("insecure") => {
            return Err(
                "`#insecure` disables TLS certificate verification (redis-rs/redis-rs#549); \
                 use rediss:// with a certificate the host trusts"
                    .to_owned(),
            )
        }
        Some(_) => return Err("the URL must not have a `#` fragment".to_owned()),
        None => {}
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_owned());
    }
    Ok(())
}

/// Kafka's topic-name rules: 1 to 249 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..`.
pub(super) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "invalid Kafka topic \"{topic}\": must be 1 to 249 characters"
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!("invalid Kafka topic \"{topic}\""));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "invalid Kafka topic \"{topic}\": use A-Z, a-z, 0-9, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

fn brokers(servers: &str) -> BTreeSet<String> {
    servers
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Two bootstrap lists sharing a broker address name the same cluster.
pub(super) fn same_cluster(a: &str, b: &str) -> bool {
    !brokers(a).is_disjoint(&brokers(b))
}

/// Two Redis URLs pointing at the same host, port and database.
pub(super) fn same_redis(a: &str, b: &str) -> bool {
    let key = |raw: &str| {
        url::Url::parse(raw.trim()).ok().map(|u| {
            (
                u.host_str().map(str::to_ascii_lowercase),
                u.port_or_known_default().or(Some(6379)),
                u.path().trim_matches('/').to_owned(),
            )
        })
    };
    match (key(a), key(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        assert!(check_redis_url("redis://localhost:6379/0").is_ok());
        assert!(check_redis_url("rediss://:pw@host").is_ok());
        let err = check_redis_url("rediss://:secretpw@host#insecure").unwrap_err();
        assert!(
            err.contains("#insecure") && !err.contains("secretpw"),
            "{err}"
        );
        assert!(check_redis_url("http://host").is_err());
        assert!(same_redis("redis://h:6379/0", "redis://H/0"));
        assert!(!same_redis("redis://h/0", "redis://h/1"));
    }

    #[test]
    fn topics_and_clusters() {
        assert!(check_topic("orders.v1_x-y").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("..").is_err());
        assert!(check_topic("a/b").is_err());
        assert!(same_cluster("k1:9092, k2:9092", "K2:9092"));
        assert!(!same_cluster("k1:9092", "k3:9092"));
    }
}
