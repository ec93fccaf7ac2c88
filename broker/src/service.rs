//! `impulse run`: wiring the configuration into listeners, and shutting down cleanly.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use impulse_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AdminState, AppState, TriggerRoutes};
use crate::functions::Functions;

/// How often histogram buffers are folded into the exporter's state.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Runs until SIGTERM or SIGINT, then stops accepting, lets in-flight invocations finish for
/// up to `grace`, and returns.
pub(crate) async fn run(config: Config, grace: Duration) -> anyhow::Result<()> {
    let (functions, triggers) = build(&config)?;
    let metrics = crate::telemetry::install().context("cannot install the metrics exporter")?;

    let trigger_listener = bind(config.server.listen, "server.listen").await?;
    let admin_listener = bind(config.server.admin_listen, "server.admin_listen").await?;
    let ready = Arc::new(AtomicBool::new(false));
    let stop_triggers = CancellationToken::new();
    let stop_admin = CancellationToken::new();

    let app = api::router(AppState {
        functions: Arc::new(functions),
        triggers: Arc::new(triggers),
    });
    let trigger_server = tokio::spawn(
        axum::serve(
            trigger_listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_triggers.clone().cancelled_owned())
        .into_future(),
    );
    let admin = api::admin_router(AdminState {
        ready: ready.clone(),
        metrics: metrics.clone(),
    });
    let admin_server = tokio::spawn(
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(stop_admin.clone().cancelled_owned())
            .into_future(),
    );
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP);
        loop {
            tick.tick().await;
            metrics.run_upkeep();
        }
    });

    ready.store(true, Ordering::Release);
    tracing::info!(
        listen = %config.server.listen,
        admin_listen = %config.server.admin_listen,
        functions = config.functions.len(),
        triggers = config.triggers.len(),
        "Impulse is ready."
    );

    crate::shutdown::signal().await;
    // Readiness goes first, so load balancers stop sending while in-flight work drains.
    ready.store(false, Ordering::Release);
    stop_triggers.cancel();
    match tokio::time::timeout(grace, trigger_server).await {
        Ok(Ok(Ok(()))) => tracing::info!("In-flight requests finished."),
        Ok(Ok(Err(err))) => tracing::error!(error = %err, "The trigger listener failed."),
        Ok(Err(err)) => tracing::error!(error = %err, "The trigger listener task panicked."),
        Err(_) => tracing::warn!(
            grace = %humantime::format_duration(grace),
            "Grace period over; abandoning requests still in flight."
        ),
    }
    stop_admin.cancel();
    upkeep.abort();
    if let Ok(Err(err)) = tokio::time::timeout(Duration::from_secs(1), admin_server).await {
        tracing::error!(error = %err, "The admin listener task panicked.");
    }
    tracing::info!("Impulse stopped.");
    Ok(())
}

/// Builds everything that can fail from the configuration alone, reporting every problem.
fn build(config: &Config) -> anyhow::Result<(Functions, TriggerRoutes)> {
    let functions = Functions::build(config);
    let triggers = TriggerRoutes::build(config);
    match (functions, triggers) {
        (Ok(functions), Ok(triggers)) => Ok((functions, triggers)),
        (functions, triggers) => {
            let errors: Vec<String> = [functions.err(), triggers.err()]
                .into_iter()
                .flatten()
                .flatten()
                .collect();
            anyhow::bail!("the configuration cannot run:\n  {}", errors.join("\n  "))
        }
    }
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({field})"))
}
