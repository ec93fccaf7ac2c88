//! `impulse run`: wiring the configuration into listeners, and shutting down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use impulse_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AdminState};
use crate::async_invoke::{open_queue, Completions, Dispatcher};
use crate::auth::Authenticator;
use crate::connections::Limits;
use crate::functions::Functions;
use crate::limiter::Limiter;
use crate::reload::{self, Reloader, Triggers};

/// How often histogram buffers are folded into the exporter's state.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// Leased async events per account-concurrency slot: enough to keep every slot busy while
/// some events wait for a saturated function.
const LEASES_PER_SLOT: usize = 2;

/// Runs until SIGTERM or SIGINT, then stops accepting, lets in-flight invocations finish for
/// up to `grace`, and returns. SIGHUP and `POST /admin/reload` reload `path` ([`reload`]).
pub(crate) async fn run(path: PathBuf, config: Config, grace: Duration) -> anyhow::Result<()> {
    // Listened for at once: SIGHUP's default action ends the process.
    let mut hangup = reload::hangup();
    // The recorder comes first: the limiter registers each function's concurrency gauge.
    let metrics = crate::telemetry::install().context("cannot install the metrics exporter")?;
    let limiter = Limiter::connect(&config, &consumer_name(&config))
        .await
        .context("cannot reach the Redis of limits.scope = \"cluster\"")?;
    let isolation = crate::isolation::start(&config)?;
    let functions = match Functions::build(&config, &limiter, isolation.as_ref()) {
        Ok(functions) => Arc::new(functions),
        Err(mut errors) => {
            // Every problem at once: the HTTP triggers' too.
            errors.extend(
                api::TriggerRoutes::build(&config)
                    .err()
                    .into_iter()
                    .flatten(),
            );
            return Err(cannot_run(&errors));
        }
    };
    let queue = open_queue(
        &config.queue,
        &consumer_name(&config),
        lease_timeout(&config),
    )
    .await?;
    let completions = Arc::new(Completions::default());
    let auth = Arc::new(Authenticator::new(&config));
    let app = reload::app(&reload::Parts {
        config: &config,
        functions: &functions,
        auth: &auth,
        queue: &queue,
    })
    .map_err(|errors| cannot_run(&errors))?;
    let live = reload::Live {
        app: Arc::new(ArcSwap::from_pointee(app)),
        functions: functions.clone().into(),
        auth: Arc::new(ArcSwap::new(auth)),
    };

    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls_listener::acceptor)
        .transpose()?;
    let trigger_listener = bind(config.server.listen, "server.listen").await?;
    let admin_listener = bind(config.server.admin_listen, "server.admin_listen").await?;
    let ready = Arc::new(AtomicBool::new(false));
    let stop_triggers = CancellationToken::new();
    let stop_async = CancellationToken::new();
    let stop_admin = CancellationToken::new();

    warn_if_exposed(&config);
    let trigger_server = tokio::spawn(crate::connections::serve(
        trigger_listener,
        api::live_router(live.app.clone()),
        tls.clone(),
        Limits::new("server", &config.server),
        stop_triggers.clone().cancelled_owned(),
    ));
    let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (reload_requests, mut reloads) = tokio::sync::mpsc::channel(4);
    let admin = api::admin_router(AdminState {
        ready: ready.clone(),
        sources: sources.clone(),
        metrics: metrics.clone(),
        auth: live.auth.clone(),
        reload: reload_requests,
    });
    let admin_server = tokio::spawn(crate::connections::serve(
        admin_listener,
        admin,
        tls,
        Limits::new("admin", &config.server),
        stop_admin.clone().cancelled_owned(),
    ));
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });
    let mut triggers = Triggers::new(
        stop_async.clone(),
        queue.clone(),
        completions.clone(),
        consumer_name(&config),
        sources,
    );
    triggers.start_all(&config, &functions).await?;
    let max_leased = usize::try_from(config.limits.account_concurrency)
        .unwrap_or(usize::MAX)
        .saturating_mul(LEASES_PER_SLOT);
    let dispatcher = Dispatcher::new(
        queue.clone(),
        live.functions.clone(),
        completions,
        max_leased,
    );
    let dispatcher = tokio::spawn(dispatcher.run(stop_async.clone()));

    ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %config.server.listen,
        admin_listen = %config.server.admin_listen,
        tls = config.server.tls.is_some(),
        functions = config.functions.len(),
        triggers = config.triggers.len(),
        "Impulse is ready."
    );

    let mut reloader = Reloader::new(reload::Running {
        path,
        lease_timeout: lease_timeout(&config),
        instance: consumer_name(&config),
        config: Arc::new(config),
        functions,
        limiter,
        isolation,
        queue,
        live,
    });
    // A Kafka source only ends on its own when it cannot go on (its consumer cannot be
    // created, or it lost track of a partition): the process stops, rather than stay up and
    // ready with a trigger that consumes nothing.
    let shutdown = crate::shutdown::signal();
    tokio::pin!(shutdown);
    let failure = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            failure = crate::kafka_trigger::first_failure(&mut triggers.kafka_tasks) => {
                break Some(failure);
            }
            request = reload::next_request(&mut hangup, &mut reloads) => {
                let outcome = reloader.reload(request.force, &mut triggers).await;
                // The caller may have gone: the outcome is logged and counted anyway.
                request.reply.send(outcome).ok();
            }
        }
    };
    drop(reloads);
    if let Some(failure) = &failure {
        tracing::error!(error = %failure, "A Kafka trigger stopped; shutting down.");
    }
    // Readiness goes first, so load balancers stop sending while in-flight work drains.
    ready.store(false, Ordering::Release);
    stop_triggers.cancel();
    stop_async.cancel();
    let drain = async {
        let (triggers_served, dispatcher) = tokio::join!(trigger_server, dispatcher);
        triggers.drain().await;
        (triggers_served, dispatcher)
    };
    match tokio::time::timeout(grace, drain).await {
        Ok((Ok(Ok(())), Ok(()))) => tracing::info!("In-flight work finished."),
        Ok((triggers, dispatcher)) => {
            if let Ok(Err(err)) = &triggers {
                tracing::error!(error = %err, "The trigger listener failed.");
            }
            if triggers.is_err() || dispatcher.is_err() {
                tracing::error!("A listener or the dispatcher panicked.");
            }
        }
        // Unsettled async events stay in the queue and are delivered after a restart.
        Err(_) => tracing::warn!(
            grace = %humantime::format_duration(grace),
            "Grace period over; abandoning work still in flight."
        ),
    }
    reloader.functions().shutdown().await;
    stop_admin.cancel();
    upkeep.abort();
    if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(1), admin_server).await {
        tracing::error!(error = %err, "The admin listener task panicked.");
    }
    tracing::info!("Impulse stopped.");
    match failure {
        Some(failure) => Err(anyhow::anyhow!(failure)),
        None => Ok(()),
    }
}

/// Every problem that keeps the configuration from running, as one error.
fn cannot_run(errors: &[String]) -> anyhow::Error {
    anyhow::anyhow!("the configuration cannot run:\n  {}", errors.join("\n  "))
}

/// This instance's name in the Redis consumer group: the host name and the trigger port, so
/// that a restarted instance picks up its own pending events at once and two instances on one
/// host never share a name.
fn consumer_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "impulse".to_owned());
    format!("{host}-{}", config.server.listen.port())
}

/// How long an event leased by a dead instance waits before another takes it over: longer
/// than any attempt may run.
fn lease_timeout(config: &Config) -> Duration {
    let longest = config
        .functions
        .values()
        .map(|f| f.timeout)
        .max()
        .unwrap_or_default();
    longest + Duration::from_secs(60)
}

/// Without `[auth]`, anyone who reaches a listener may invoke every function and read the
/// metrics: fine on loopback, dangerous anywhere else, so say it loudly.
fn warn_if_exposed(config: &Config) {
    if config.auth.is_enabled() {
        return;
    }
    for (addr, field) in [
        (config.server.listen, "server.listen"),
        (config.server.admin_listen, "server.admin_listen"),
    ] {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                listen = %addr,
                field,
                "NO AUTHENTICATION: this listener is reachable beyond loopback and [auth] \
                 configures no token or access key, so anyone who reaches it can invoke every \
                 function. Configure [auth.tokens] or [auth.access_keys]."
            );
        }
    }
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({field})"))
}
