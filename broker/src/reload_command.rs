//! `impulse reload`: asks a running broker to reload its configuration file
//! (`POST /admin/reload` on its admin listener) and prints the outcome.
//!
//! What changed goes to stdout; every reason a reload was refused, to stderr. The exit code
//! tells a script which happened.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::broker_client;

/// The arguments of `impulse reload`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReloadArgs {
    /// Remove functions even when async events are still queued for them (they stay in the
    /// queue: delivered if the function is configured again, dropped once older than the
    /// default maximum event age).
    #[arg(long)]
    force: bool,
    /// The broker's admin URL (`server.admin_listen`, e.g. `https://impulse.internal:9091`).
    #[arg(
        long,
        env = "IMPULSE_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    admin_url: String,
    /// Bearer token when `[auth]` is configured: a principal with the `admin` role. Prefer the
    /// environment variable: a command line is visible to every user of the machine.
    #[arg(long, env = "IMPULSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificates to trust for an https admin listener, besides the system's.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Exit code when the broker refused the configuration (it keeps the running one).
const REFUSED: u8 = 1;
/// Exit code when the broker answered an error other than a refusal.
const API_ERROR: u8 = 3;
/// Exit code when the broker did not answer.
const NO_ANSWER: u8 = 4;

pub(crate) fn run(args: &ReloadArgs) -> ExitCode {
    broker_client::run_command(reload(args), ExitCode::from(NO_ANSWER))
}

async fn reload(args: &ReloadArgs) -> anyhow::Result<ExitCode> {
    let client = broker_client::client(args.ca_file.as_deref())?;
    let url = format!("{}/admin/reload", broker_client::base_url(&args.admin_url));
    let target = if args.force {
        format!("{url}?force=true")
    } else {
        url.clone()
    };
    let mut request = client.post(&target);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    // A reload waits for changed triggers to hand over: it may take as long as their
    // attempts under way.
    let response = request
        .send()
        .await
        .map_err(|err| anyhow::anyhow!("cannot reach {url}: {err}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let Ok(answer) = serde_json::from_str::<Value>(&body) else {
        eprintln!("error: {url} answered {status}: {}", body.trim());
        return Ok(ExitCode::from(API_ERROR));
    };
    let strings = |field: &str| -> Vec<String> {
        answer[field]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    match answer["outcome"].as_str() {
        Some("applied") => {
            let changes = strings("changes");
            println!(
                "applied: generation {} ({} change{})",
                answer["generation"],
                changes.len(),
                if changes.len() == 1 { "" } else { "s" }
            );
            for change in changes {
                println!("  {change}");
            }
            for warning in strings("warnings") {
                eprintln!("warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(outcome @ ("invalid" | "refused")) => {
            let errors = strings("errors");
            eprintln!("{outcome}: the broker keeps its running configuration");
            for error in &errors {
                eprintln!("error: {error}");
            }
            let n = errors.len();
            eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
            Ok(ExitCode::from(REFUSED))
        }
        _ => {
            eprintln!("error: {url} answered {status}: {}", body.trim());
            Ok(ExitCode::from(API_ERROR))
        }
    }
}
