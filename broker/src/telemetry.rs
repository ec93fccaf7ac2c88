//! The Prometheus exporter behind the admin listener's `/metrics`.

use impulse_connectors::telemetry as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global recorder with explicit histogram buckets (without them the exporter
/// writes summaries, which cannot be aggregated across instances).
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::INVOCATION_DURATION_SECONDS.to_owned()),
            names::DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::ASYNC_EVENT_AGE_SECONDS.to_owned()),
            names::AGE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::KAFKA_BATCH_SIZE.to_owned()),
            names::KAFKA_BATCH_SIZE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::INIT_DURATION_SECONDS.to_owned()),
            names::INIT_DURATION_BUCKETS,
        )?
        .install_recorder()?;
    names::describe();
    names::build_info(env!("CARGO_PKG_VERSION"));
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use impulse_connectors::contract::Name;
    use impulse_connectors::telemetry::{
        flush_all, flush_this_thread, InvocationMetrics, InvocationOutcome,
    };
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Replaying buffered updates reads the exporter's clock, a thread-local. A thread whose
    /// clock was destroyed before its metrics log (as on every busy worker at shutdown) used
    /// to replay the log in its destructor, panic there, and abort the process.
    #[test]
    fn a_thread_exiting_with_buffered_attempts_leaves_them_to_the_next_scrape() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let handles = metrics::with_local_recorder(&recorder, || {
            InvocationMetrics::new("f").trigger(Name::new("t"))
        });
        std::thread::scope(|scope| {
            scope.spawn(|| {
                metrics::with_local_recorder(&recorder, || {
                    // The log's thread-local first, then the clock's (a replay reads it),
                    // then one attempt left in the log: the clock is destroyed first.
                    handles.completed(InvocationOutcome::Success, Duration::from_millis(5));
                    flush_this_thread();
                    handles.completed(InvocationOutcome::Success, Duration::from_millis(5));
                });
            });
        });
        flush_all();
        let text = handle.render();
        assert!(
            text.contains(
                r#"impulse_invocations_total{function="f",trigger="t",outcome="success"} 2"#
            ),
            "both attempts counted:\n{text}"
        );
    }
}
