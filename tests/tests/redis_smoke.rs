//! Smoke test of the Redis server that `scripts/services.sh up redis` runs: the stream commands
//! the Redis Streams source relies on (XADD, XGROUP CREATE, XREADGROUP, XACK, XPENDING).

use std::time::Duration;

use anyhow::{Context, Result};
use impulse_tests::services::require_redis;
use redis::streams::{StreamPendingReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig};
use uuid::Uuid;

/// Outer bound on each step.
const STEP: Duration = Duration::from_secs(10);
/// How long XREADGROUP may block server-side.
const BLOCK: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_stream_entry_is_read_by_a_group_and_acknowledged() -> Result<()> {
    let client = redis::Client::open(require_redis().await)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    // redis-rs gives every command a 500 ms response timeout by default, blocking reads
    // included: a blocking XREADGROUP gets its own connection with a longer one.
    let mut reader = client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + STEP)),
        )
        .await?;

    let stream = format!("impulse-smoke-{}", Uuid::new_v4());
    let group = "impulse";
    let id: String = conn
        .xadd(
            &stream,
            "*",
            &[("event", "order.created"), ("body", r#"{"id":42}"#)],
        )
        .await?;
    let () = conn.xgroup_create(&stream, group, "0").await?;

    let options = StreamReadOptions::default()
        .group(group, "worker-1")
        .count(10)
        .block(BLOCK.as_millis().try_into()?);
    let reply: Option<StreamReadReply> =
        tokio::time::timeout(STEP, reader.xread_options(&[&stream], &[">"], &options))
            .await
            .context("XREADGROUP timed out")??;
    let reply = reply.context("XREADGROUP returned nothing")?;
    assert_eq!(reply.keys.len(), 1);
    assert_eq!(reply.keys[0].key, stream);
    let entries = &reply.keys[0].ids;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].map.len(), 2);
    assert_eq!(
        entries[0].get::<String>("event").as_deref(),
        Some("order.created")
    );
    assert_eq!(
        entries[0].get::<String>("body").as_deref(),
        Some(r#"{"id":42}"#)
    );

    let pending: StreamPendingReply = conn.xpending(&stream, group).await?;
    assert_eq!(pending.count(), 1, "read but not yet acknowledged");
    let acked: usize = conn.xack(&stream, group, &[&id]).await?;
    assert_eq!(acked, 1);
    let pending: StreamPendingReply = conn.xpending(&stream, group).await?;
    assert!(
        matches!(pending, StreamPendingReply::Empty),
        "nothing pending after XACK, got {pending:?}"
    );

    let deleted: usize = conn.del(&stream).await?;
    assert_eq!(deleted, 1);
    Ok(())
}
