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
            Matcher::Full(names::REDIS_BATCH_SIZE.to_owned()),
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
