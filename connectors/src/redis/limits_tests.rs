//! The admission scripts against the real Redis, each test under a key prefix of its own.

use std::time::Duration;

use futures::FutureExt as _;
use impulse_test_support::services::require_redis;
use impulse_test_support::wait::eventually;

use super::*;

const WAIT: Duration = Duration::from_secs(10);
/// A rate no test reaches.
const AMPLE: u32 = 1_000_000;

async fn limits(lease_time: Duration) -> (Arc<RedisLimits>, String, String) {
    let url = require_redis().await;
    let stream = format!("limits-test-{}", uuid::Uuid::new_v4());
    let limits = RedisLimits::connect(&url, &stream, "test", lease_time)
        .await
        .expect("connects");
    (limits, url, stream)
}

async fn zcard(url: &str, key: &str) -> usize {
    let mut conn = redis::Client::open(url)
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("ZCARD")
}

async fn admitted<'a>(limits: &'a RedisLimits, target: &ClusterTarget) -> Lease<'a> {
    match limits.admit("f", target).await.expect("Redis answers") {
        Verdict::Admitted(lease) => lease,
        other => panic!("expected an admission, got {other:?}"),
    }
}

#[tokio::test]
async fn a_domain_admits_up_to_its_cap_and_again_after_a_release() {
    let (limits, url, stream) = limits(Duration::from_secs(10)).await;
    let target = limits.target("f", Slots::Reserved(3), AMPLE, AMPLE);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(admitted(&limits, &target).await);
    }
    assert!(matches!(
        limits.admit("f", &target).await,
        Ok(Verdict::Concurrency)
    ));
    assert_eq!(zcard(&url, &format!("{stream}:limits:reserved:f")).await, 3);

    drop(held.pop());
    let again = eventually(
        "the released slot to be admitted again",
        WAIT,
        async || match limits.admit("f", &target).await {
            Ok(Verdict::Admitted(lease)) => Ok(lease),
            other => Err(format!("{other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(again);
    drop(held);
    eventually("every lease to be released", WAIT, async || {
        match zcard(&url, &format!("{stream}:limits:reserved:f")).await {
            0 => Ok(()),
            n => Err(format!("{n} leases")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_unreserved_pool_is_shared_by_functions_and_instances() {
    let (a, url, stream) = limits(Duration::from_secs(10)).await;
    // A second instance of the same cluster.
    let b = RedisLimits::connect(&url, &stream, "other", Duration::from_secs(10))
        .await
        .expect("connects");
    let f = a.target("f", Slots::Pool(2), AMPLE, AMPLE);
    let g = b.target("g", Slots::Pool(2), AMPLE, AMPLE);
    let _f = admitted(&a, &f).await;
    let _g = admitted(&b, &g).await;
    assert!(matches!(a.admit("f", &f).await, Ok(Verdict::Concurrency)));
    assert!(matches!(b.admit("g", &g).await, Ok(Verdict::Concurrency)));
    // Another cluster on the same Redis is not affected.
    let (other_cluster, _, _) = limits(Duration::from_secs(10)).await;
    let elsewhere = other_cluster.target("f", Slots::Pool(2), AMPLE, AMPLE);
    let _elsewhere = admitted(&other_cluster, &elsewhere).await;
}

#[tokio::test]
async fn the_rate_admits_a_burst_then_names_the_wait() {
    let (limits, _url, _stream) = limits(Duration::from_secs(10)).await;
    // 10 a second in bursts of 2: after two at once, the next cell is about 100 ms away.
    let target = limits.target("f", Slots::Reserved(100), 10, 2);
    drop(admitted(&limits, &target).await);
    drop(admitted(&limits, &target).await);
    match limits.admit("f", &target).await {
        Ok(Verdict::Rate(wait)) => assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        ),
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    // A refused call takes no cell: after the named wait, exactly one more is admitted.
    let wait = match limits.admit("f", &target).await {
        Ok(Verdict::Rate(wait)) => wait,
        other => panic!("expected a rate refusal, got {other:?}"),
    };
    tokio::time::sleep(wait).await;
    drop(admitted(&limits, &target).await);
    assert!(matches!(
        limits.admit("f", &target).await,
        Ok(Verdict::Rate(_))
    ));
}

#[tokio::test]
async fn a_full_domain_refuses_before_taking_a_rate_cell() {
    let (limits, _url, _stream) = limits(Duration::from_secs(10)).await;
    let target = limits.target("f", Slots::Reserved(1), 1, 1);
    let held = admitted(&limits, &target).await;
    // Full: refused for concurrency, and the rate cell is not spent.
    for _ in 0..3 {
        assert!(matches!(
            limits.admit("f", &target).await,
            Ok(Verdict::Concurrency)
        ));
    }
    drop(held);
    // The one cell a second was spent by the first admission, not by the refusals: the next
    // admission waits for the rate only for the rest of that second.
    let verdict = eventually("the slot back", WAIT, async || {
        match limits.admit("f", &target).await {
            Ok(Verdict::Concurrency) => Err("still full".to_owned()),
            Ok(verdict) => Ok(format!("{verdict:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(verdict.starts_with("Rate"), "{verdict}");
}

#[tokio::test]
async fn a_crashed_instances_leases_expire_and_live_ones_are_renewed() {
    let lease_time = Duration::from_secs(1);
    let (live, url, stream) = limits(lease_time).await;
    let target = live.target("f", Slots::Reserved(2), AMPLE, AMPLE);
    // A crashed instance: its lease is in Redis, and nothing renews it.
    let key = format!("{stream}:limits:reserved:f");
    let mut conn = redis::Client::open(url.as_str())
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let (now, _): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME");
    let _: () = redis::cmd("ZADD")
        .arg(&key)
        .arg(now * 1000 + 1000)
        .arg("crashed:1")
        .query_async(&mut conn)
        .await
        .expect("ZADD");
    let held = admitted(&live, &target).await;
    assert!(matches!(
        live.admit("f", &target).await,
        Ok(Verdict::Concurrency)
    ));

    // Within the lease time (and a margin for the clocks), the crashed lease is gone; the live
    // one, held three lease times, is still there.
    let started = Instant::now();
    let second = eventually(
        "the crashed lease to expire",
        lease_time * 3,
        async || match live.admit("f", &target).await {
            Ok(Verdict::Admitted(lease)) => Ok(lease),
            other => Err(format!("{other:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() <= lease_time + Duration::from_millis(500));
    tokio::time::sleep_until(started + lease_time * 3).await;
    assert!(
        matches!(live.admit("f", &target).await, Ok(Verdict::Concurrency)),
        "both live leases outlived the lease time"
    );
    drop((held, second));
}

#[tokio::test]
async fn a_dropped_admission_releases_what_it_may_have_taken() {
    let (limits, url, stream) = limits(Duration::from_secs(10)).await;
    let target = limits.target("f", Slots::Reserved(1), AMPLE, AMPLE);
    // Polled once (the script is on its way) and dropped.
    assert!(limits.admit("f", &target).now_or_never().is_none());
    let held = eventually("the slot to be free", WAIT, async || {
        match limits.admit("f", &target).await {
            Ok(Verdict::Admitted(lease)) => Ok(lease),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(zcard(&url, &format!("{stream}:limits:reserved:f")).await, 1);
    drop(held);
    eventually("no lease left, parked or live", WAIT, async || {
        let live = lock(&limits.leases).live.len();
        let on_redis = zcard(&url, &format!("{stream}:limits:reserved:f")).await;
        if live == 0 && on_redis == 0 {
            Ok(())
        } else {
            Err(format!("{live} live here, {on_redis} on Redis"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn a_busy_function_reuses_its_slot_and_takes_cells_in_blocks() {
    let (limits, url, stream) = limits(Duration::from_secs(10)).await;
    // 100,000 a second: a block holds up to 1,000 cells (10 ms worth).
    let target = limits.target("f", Slots::Reserved(1), 100_000, 100_000);
    for _ in 0..200 {
        drop(admitted(&limits, &target).await);
    }
    // One slot, parked between attempts: one lease on Redis, never more.
    assert_eq!(zcard(&url, &format!("{stream}:limits:reserved:f")).await, 1);
    assert!(
        lock(&target.cells).block > 1,
        "the block grew with the demand"
    );
    // Another instance of the cluster finds the slot taken until this one parks it for long
    // enough to give it back.
    let other = RedisLimits::connect(&url, &stream, "other", Duration::from_secs(10))
        .await
        .expect("connects");
    let elsewhere = other.target("f", Slots::Reserved(1), 100_000, 100_000);
    let lease = eventually(
        "the idle slot to go back to the cluster",
        WAIT,
        async || match other.admit("f", &elsewhere).await {
            Ok(Verdict::Admitted(lease)) => Ok(lease),
            verdict => Err(format!("{verdict:?}")),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        limits.admit("f", &target).await,
        Ok(Verdict::Concurrency)
    ));
    drop(lease);
}

#[tokio::test]
async fn blocks_of_cells_keep_the_rate_within_one_window() {
    let (limits, _url, _stream) = limits(Duration::from_secs(10)).await;
    // 20,000 a second with a burst of 200: blocks of up to 200 cells; over a run of L, at most
    // burst + rate × (L + the cell window) admissions.
    let target = limits.target("f", Slots::Reserved(10), 20_000, 200);
    let started = Instant::now();
    let mut admitted_count = 0_u32;
    while started.elapsed() < Duration::from_secs(1) {
        match limits.admit("f", &target).await.expect("Redis answers") {
            Verdict::Admitted(lease) => {
                admitted_count += 1;
                drop(lease);
            }
            Verdict::Rate(wait) => tokio::time::sleep(wait.min(Duration::from_millis(1))).await,
            Verdict::Concurrency => panic!("one attempt at a time never fills 10 slots"),
        }
    }
    // The cells used were granted within the run or one window before its end.
    let bound = 200.0 + 20_000.0 * (started.elapsed() + CELL_WINDOW).as_secs_f64();
    assert!(
        f64::from(admitted_count) <= bound + 1.0,
        "{admitted_count} admitted in {:?}; at most {bound}",
        started.elapsed()
    );
    assert!(
        admitted_count > 1_000,
        "blocks made admission cheap: {admitted_count}"
    );
}
