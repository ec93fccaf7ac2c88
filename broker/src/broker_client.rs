//! The HTTP client the command line uses to reach a running broker (`impulse dlq replay`,
//! `impulse invoke`, `impulse reload`): its base URL, a client that trusts an extra CA file,
//! and the runtime a command runs on.

use impulse_config::Config;

/// The broker's own listener as a base URL: https when `[server.tls]` is set, and loopback for
/// a listener bound to every address.
pub(crate) fn listen_url(config: &Config) -> String {
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

/// `url` without its trailing slashes, so paths can be appended.
pub(crate) fn base_url(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A client for the broker, trusting `ca_file`'s certificates besides the system's.
pub(crate) fn client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    // The invoker's clients: they build even where the system has no CA certificates.
    match ca_file {
        None => Ok(impulse_invoker::http::HttpFunction::default_client()),
        Some(ca_file) => {
            let tls = impulse_config::HttpTlsConfig {
                ca_file: Some(ca_file.to_owned()),
                ..Default::default()
            };
            Ok(impulse_invoker::http::HttpFunction::tls_client(
                Some(&tls),
                None,
            )?)
        }
    }
}

/// Runs a command's `future` on a runtime of its own. An error (no runtime, or the command's
/// own, such as no answer from the broker) is printed and exits with `no_answer`.
pub(crate) fn run_command(
    future: impl std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
    no_answer: std::process::ExitCode,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return no_answer;
        }
    };
    match runtime.block_on(future) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            no_answer
        }
    }
}
