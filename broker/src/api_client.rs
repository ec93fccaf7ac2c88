//! The broker's own Invoke API as its command line calls it (`impulse invoke`, `impulse dlq
//! replay`): where the broker listens, and an HTTP client for it.

use std::path::Path;

use impulse_config::Config;

/// Impulse's default `server.listen`, for a command given neither a URL nor a config.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The broker's base URL: `broker_url` as given, else `config`'s `server.listen` (https when
/// `[server.tls]` is set, loopback for a listener bound to every address), else the default
/// listener.
pub(crate) fn base_url(broker_url: Option<&str>, config: Option<&Config>) -> String {
    match (broker_url, config) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(config)) => listen_url(config),
        (None, None) => DEFAULT_URL.to_owned(),
    }
}

fn listen_url(config: &Config) -> String {
    let mut listen = config.server.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{listen}")
}

/// An HTTP client for the broker, trusting `ca_file` besides the system's roots. The
/// invoker's clients: they build even where the system has no CA certificates.
pub(crate) fn client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    Ok(match ca_file {
        None => impulse_invoker::http::HttpFunction::default_client(),
        Some(ca_file) => {
            let tls = impulse_config::HttpTlsConfig {
                ca_file: Some(ca_file.to_owned()),
                ..Default::default()
            };
            impulse_invoker::http::HttpFunction::tls_client(Some(&tls), None)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_flag_then_the_config_then_the_default() {
        let mut config = Config::default();
        config.server.listen = "0.0.0.0:9000".parse().expect("an address");
        assert_eq!(
            base_url(Some("https://impulse.internal:8080/"), Some(&config)),
            "https://impulse.internal:8080"
        );
        assert_eq!(base_url(None, Some(&config)), "http://127.0.0.1:9000");
        assert_eq!(base_url(None, None), "http://127.0.0.1:8080");
    }
}
