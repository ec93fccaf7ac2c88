//! `impulse`: the event-trigger broker's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod api;
mod async_invoke;
mod auth;
mod broker_client;
mod connections;
mod dlq_command;
mod example_function;
mod functions;
mod invoke_command;
mod isolation;
mod kafka_trigger;
mod limiter;
mod logging;
mod redis_trigger;
mod reload;
mod reload_command;
mod request_id;
mod schedule_trigger;
mod service;
mod shutdown;
mod stream_batch;
mod telemetry;
#[cfg(test)]
mod test_support;
mod tls_listener;

/// mimalloc rather than the system allocator: the event path allocates small, short-lived
/// buffers per record and per invocation, which glibc's malloc serves with visibly more CPU
/// (BENCHMARKS.md, S1).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Impulse turns HTTP requests, schedules, Kafka topics and Redis streams into function
/// invocations with AWS Lambda's semantics, on your own machines.
#[derive(Debug, Parser)]
#[command(name = "impulse", version, about, long_about = None)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker with a configuration file (TOML or YAML).
    Run {
        /// The configuration file; its extension (.toml, .yaml, .yml) picks the format.
        #[arg(long, short)]
        config: PathBuf,
        /// How long to let in-flight work finish after SIGTERM or SIGINT.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        shutdown_grace: Duration,
    },
    /// Check a configuration file and print every problem with its file, line and field.
    Validate {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Inspect and replay the records in a function's destinations (embedded log or Redis).
    Dlq {
        #[command(subcommand)]
        action: DlqCommand,
    },
    /// Maintain the embedded async queue (`queue.redb` in `queue.data_dir`).
    Queue {
        #[command(subcommand)]
        action: QueueCommand,
    },
    /// Invoke a function through a running broker's Invoke API and print its result.
    ///
    /// Exit code: 0 the function returned (or the event was queued, or the dry run passed),
    /// 1 a function error, 3 the broker answered an error (4xx/5xx), 4 no answer.
    Invoke(invoke_command::InvokeArgs),
    /// Ask a running broker to reload its configuration file (as SIGHUP does) and print the
    /// outcome: what changed, or every reason it was refused.
    ///
    /// Exit code: 0 applied, 1 refused or invalid (the broker keeps its running
    /// configuration), 3 the broker answered another error, 4 no answer.
    Reload(reload_command::ReloadArgs),
    /// Run the example function: a Runtime-API worker under a process target, else HTTP.
    ExampleFunction {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Copy the events of a damaged queue file that can still be read into a fresh one, and
    /// keep the damaged file beside it. Run it with the broker stopped.
    Salvage {
        /// The configuration file (for `queue.data_dir`).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct DlqTarget {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The function whose destination to read.
    #[arg(long, short)]
    function: String,
    /// Which destination.
    #[arg(long, value_enum, default_value_t = dlq_command::Which::OnFailure)]
    destination: dlq_command::Which,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List the records.
    List {
        #[command(flatten)]
        target: DlqTarget,
    },
    /// Print the records with this event id (or position).
    Show {
        #[command(flatten)]
        target: DlqTarget,
        /// An event id, or a position from `list`.
        id: String,
    },
    /// Queue records' payloads again through the running broker (as `Event` invocations).
    Replay {
        #[command(flatten)]
        target: DlqTarget,
        /// Replay only these ids or positions (repeatable); default: every record.
        #[arg(long = "id")]
        ids: Vec<String>,
        /// Invoke this function instead of the one the records came from.
        #[arg(long)]
        to: Option<String>,
        /// At most this many records per second.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Bearer token for the broker's Invoke API when `[auth]` is configured: a principal
        /// with the `invoker` or `admin` role. Prefer the environment variable: a command line
        /// is visible to every user of the machine.
        #[arg(long, env = "IMPULSE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The broker's URL (e.g. `https://impulse.internal:8080`); default: `server.listen`
        /// of the config, over https when `[server.tls]` is set.
        #[arg(long)]
        broker_url: Option<String>,
        /// PEM CA certificates to trust for an https broker, besides the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            let schema = impulse_config::json_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("error: cannot print the schema: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config: path,
            shutdown_grace,
        } => {
            let config = match impulse_config::load(&path) {
                Ok(config) => config,
                Err(errors) => {
                    print_errors(&errors);
                    return ExitCode::FAILURE;
                }
            };
            block_on(service::run(path, config, shutdown_grace))
        }
        Command::Invoke(args) => invoke_command::run(&args),
        Command::Reload(args) => reload_command::run(&args),
        Command::ExampleFunction { listen } => block_on(example_function::run(listen)),
        Command::Queue {
            action: QueueCommand::Salvage { config },
        } => salvage_queue(&config),
        Command::Dlq { action } => {
            let target = match &action {
                DlqCommand::List { target }
                | DlqCommand::Show { target, .. }
                | DlqCommand::Replay { target, .. } => target,
            };
            let config = match impulse_config::load(&target.config) {
                Ok(config) => config,
                Err(errors) => {
                    print_errors(&errors);
                    return ExitCode::FAILURE;
                }
            };
            block_on(async move {
                match &action {
                    DlqCommand::List { target } => {
                        dlq_command::list(&config, &target.function, target.destination).await
                    }
                    DlqCommand::Show { target, id } => {
                        dlq_command::show(&config, &target.function, target.destination, id).await
                    }
                    DlqCommand::Replay {
                        target,
                        ids,
                        to,
                        rate,
                        token,
                        broker_url,
                        ca_file,
                    } => {
                        let replay = dlq_command::Replay {
                            ids,
                            to: to.as_deref(),
                            rate: *rate,
                            token: token.as_deref(),
                            broker_url: broker_url.as_deref(),
                            ca_file: ca_file.as_deref(),
                        };
                        dlq_command::replay(&config, &target.function, target.destination, &replay)
                            .await
                    }
                }
            })
        }
    }
}

fn salvage_queue(path: &std::path::Path) -> ExitCode {
    let config = match impulse_config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    if config.queue.backend != impulse_config::QueueBackend::Embedded {
        eprintln!("error: queue.backend is not \"embedded\": there is no queue file to salvage");
        return ExitCode::FAILURE;
    }
    match impulse_connectors::embedded::salvage(&config.queue.data_dir) {
        Ok(salvaged) => {
            println!("{salvaged}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match impulse_config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} functions, {} triggers)",
                path.display(),
                config.functions.len(),
                config.triggers.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::FAILURE
        }
    }
}

fn print_errors(errors: &impulse_config::ConfigErrors) {
    for error in &errors.0 {
        eprintln!("error: {error}");
    }
    let n = errors.0.len();
    eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
}

fn block_on(future: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The process's only runtime: its threads may pool deadline timers without checking.
        .on_thread_start(impulse_invoker::dedicate_this_thread_to_the_current_runtime)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "Impulse stopped with an error.");
            ExitCode::FAILURE
        }
    }
}
