//! Admission control: reserved and account concurrency, and per-function invocation rates.
//!
//! Lambda's rules (SEMANTICS.md §6):
//!
//! - **Account concurrency** (`limits.account_concurrency`, default 1000) is shared by every
//!   function *without* `reserved_concurrency`: they draw from one unreserved pool of
//!   `account_concurrency − Σ reserved_concurrency` slots.
//! - **Reserved concurrency** `N` carves `N` slots out of the account for one function: they are
//!   guaranteed to it and also cap it. `reserved_concurrency = 0` disables the function.
//!   Validation guarantees `Σ reserved ≤ account`, so the account cap holds by construction.
//! - **Rate**: each function has its own GCRA limit (governor). `rate.per_second` defaults to
//!   10 × the function's concurrency (its reserved concurrency, or the size of the unreserved
//!   pool); `rate.burst` defaults to the rate itself, which is governor's default for
//!   `Quota::per_second` (one second's worth of invocations may arrive at once after an idle
//!   second).
//!
//! Admission takes the concurrency slot first and then a rate cell: a slot costs nothing to give
//! back, a rate cell does. Queue callers (the async dispatcher, schedules, Kafka, Redis) use
//! [`Admission::acquire`], which waits: backpressure, never a drop. Synchronous callers use
//! [`Admission::try_acquire`], which admits or refuses at once with Lambda's throttle reason.
//!
//! The [`Permit`] covers one attempt; each retry is admitted again (STYLE.md example 10).
//! Callers never hold one themselves: `Function::call_now` and `Function::call_when_admitted`
//! (in `functions.rs`) own it for exactly the attempt.
//!
//! **Scope.** With `limits.scope = "process"` (the default) the limits are per process: N broker
//! instances admit up to N × every limit. With `"cluster"` ([`Limiter::connect`]) every
//! admission is decided on the shared Redis instead (`impulse_connectors::redis::RedisLimits`:
//! a concurrency lease and a GCRA cell in one atomic script, RELIABILITY.md §4), so the limits
//! hold across the instances (a busy function reuses its slots and takes rate cells in blocks,
//! without a round-trip per attempt; the connector documents why the limits still hold). There,
//! synchronous callers still get their answer at once (one
//! round-trip), and queue callers poll Redis behind one another: only the head of a function's
//! local queue asks, after each refusal waiting the GCRA's named wait (rate) or a short backoff
//! (concurrency), so waiters stay FIFO within an instance. Across instances there is no order.
//! A refused rate cell holds no slot: the slot is only taken with the cell, in the same script.
//! While Redis cannot be reached, `limits.on_redis_unavailable` decides: `deny` refuses
//! synchronous calls and keeps queue callers waiting; `local` falls back to this process's own
//! limits, as with `scope = "process"`.
//!
//! This module imports nothing from the rest of the crate, so that `benches/limiter.rs` can
//! include it with `#[path]`.

mod clock;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use impulse_config::{Config, LimitsScope, OnRedisUnavailable, RateConfig};
use impulse_connectors::contract::QueueError;
use impulse_connectors::redis::{ClusterTarget, Lease, RedisLimits, Slots, Verdict};
use impulse_connectors::telemetry::{self, ConcurrencyGauge, Limit};
use tokio::sync::{Mutex as AsyncMutex, Notify, Semaphore, SemaphorePermit};

use self::clock::{RateLimitClock, RateLimitInstant};

/// Lambda's default invocation rate: 10 per second for each unit of concurrency.
const RATE_PER_CONCURRENCY: u32 = 10;

/// The first wait of a queue caller polling the cluster for a concurrency slot; it doubles up
/// to [`MAX_SLOT_POLL`]. Short, because a slot freed on another instance wakes nobody here.
const MIN_SLOT_POLL: Duration = Duration::from_millis(2);
/// The longest wait between two polls for a cluster concurrency slot.
const MAX_SLOT_POLL: Duration = Duration::from_millis(50);
/// How often a queue caller asks again while Redis cannot be reached and admission is denied.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(250);

/// A direct (un-keyed) GCRA limiter on tokio's clock.
type Gcra = RateLimiter<NotKeyed, InMemoryState, RateLimitClock, NoOpMiddleware<RateLimitInstant>>;

// === Limiter ===

/// Admits invocation attempts under each function's concurrency and rate limits.
///
/// Cheap to clone: clones share all state (unlike tower's per-clone `RateLimit`, STYLE.md
/// example 6). The set of functions is fixed when it is built; a config reload builds a new one.
#[derive(Clone)]
pub(crate) struct Limiter {
    functions: Arc<HashMap<Box<str>, Admission>>,
}

/// Cluster-wide admission of one function (`limits.scope = "cluster"`).
struct ClusterLimits {
    redis: Arc<RedisLimits>,
    target: ClusterTarget,
    on_unavailable: OnRedisUnavailable,
    /// Queue callers waiting for the cluster: only the head polls Redis (tokio's `Mutex` is
    /// fair, so they are admitted in FIFO order).
    queue: AsyncMutex<()>,
    /// Callers in (or entering) `queue`: while it is 0, an admission asks Redis at once.
    waiters: AtomicUsize,
    /// Woken when an attempt of this function ends here: its slot is kept for the next attempt
    /// (the connector parks it), so the head of `queue` asks again at once instead of sleeping
    /// out its backoff while the slot waits, unused, to go back to the cluster.
    ended: Notify,
}

impl Limiter {
    /// Builds the limits of every function in `config`, registering each function's
    /// `impulse_concurrent_executions` gauge and setting its `impulse_concurrency_limit` and
    /// `impulse_max_event_age_seconds`: install the metrics recorder first.
    ///
    /// Expects a validated config. It does not panic on one that is not: a zero `rate` is
    /// treated as 1 per second, and reserved concurrency beyond the account leaves an empty
    /// unreserved pool.
    pub(crate) fn new(config: &Config) -> Self {
        Self::with_cluster(config, None)
    }

    /// The limiter `config` asks for: [`Limiter::new`] with `limits.scope = "process"`, or
    /// admission on the shared Redis of the queue with `"cluster"`. `instance` names this
    /// instance (the queue's consumer name).
    ///
    /// # Errors
    ///
    /// Cluster scope, and Redis cannot be reached (or the config has no Redis queue, which
    /// validation rejects).
    pub(crate) async fn connect(config: &Config, instance: &str) -> Result<Self, QueueError> {
        if config.limits.scope == LimitsScope::Process {
            return Ok(Self::new(config));
        }
        let Some(redis) = &config.queue.redis else {
            return Err(QueueError {
                operation: "connect",
                message: "limits.scope = \"cluster\" needs [queue.redis]".to_owned(),
            });
        };
        let cluster = RedisLimits::connect(
            &redis.url,
            &redis.stream,
            instance,
            config.limits.lease_time,
        )
        .await?;
        Ok(Self::with_cluster(config, Some(&cluster)))
    }

    /// Builds the limits, admitting on `cluster` when given.
    fn with_cluster(config: &Config, cluster: Option<&Arc<RedisLimits>>) -> Self {
        let reserved_total = config
            .functions
            .values()
            .filter_map(|function| function.reserved_concurrency)
            .fold(0_u32, u32::saturating_add);
        let unreserved = config
            .limits
            .account_concurrency
            .saturating_sub(reserved_total);
        let pool = Arc::new(Semaphore::new(permits(unreserved)));

        let functions = config
            .functions
            .iter()
            .map(|(name, function)| {
                let (concurrency, capacity) = match function.reserved_concurrency {
                    Some(0) => (Concurrency::Disabled, 0),
                    Some(reserved) => (
                        Concurrency::Reserved(Semaphore::new(permits(reserved))),
                        reserved,
                    ),
                    None => (
                        Concurrency::Unreserved {
                            pool: Arc::clone(&pool),
                            size: unreserved,
                        },
                        unreserved,
                    ),
                };
                let (per_second, burst) = rate_of(function.rate, capacity);
                let quota = quota(per_second, burst);
                telemetry::function_limits(name, capacity, function.max_event_age);
                let slots = match &concurrency {
                    Concurrency::Reserved(_) => Some(Slots::Reserved(capacity)),
                    Concurrency::Unreserved { size, .. } if *size > 0 => Some(Slots::Pool(*size)),
                    _ => None,
                };
                let cluster = cluster.zip(slots).map(|(redis, slots)| ClusterLimits {
                    target: redis.target(name, slots, per_second, burst),
                    redis: Arc::clone(redis),
                    on_unavailable: config.limits.on_redis_unavailable,
                    queue: AsyncMutex::new(()),
                    waiters: AtomicUsize::new(0),
                    ended: Notify::new(),
                });
                let limits = FunctionLimits {
                    name: name.as_str().into(),
                    concurrency,
                    cluster,
                    quota,
                    rate: RateLimiter::direct_with_clock(quota, RateLimitClock),
                    rate_queue: AsyncMutex::new(()),
                    rate_waiters: AtomicUsize::new(0),
                    executions: ConcurrencyGauge::new(name),
                };
                (name.as_str().into(), Admission(Arc::new(limits)))
            })
            .collect();
        Self {
            functions: Arc::new(functions),
        }
    }

    /// [`Admission::acquire`] by name, for tests.
    #[cfg(test)]
    pub(crate) async fn acquire(&self, function: &str) -> Result<Permit<'_>, Throttle> {
        self.get(function).acquire().await
    }

    /// [`Admission::try_acquire_local`] by name, for tests.
    #[cfg(test)]
    pub(crate) fn try_acquire(&self, function: &str) -> Result<Permit<'_>, Throttle> {
        self.get(function).try_acquire_local()
    }

    /// The admission of `function`, which callers keep so that admitting an attempt needs no
    /// lookup by name.
    pub(crate) fn admission(&self, function: &str) -> Option<Admission> {
        self.functions.get(function).cloned()
    }

    #[cfg(test)]
    fn get(&self, function: &str) -> &Admission {
        self.functions
            .get(function)
            .expect("tests name configured functions")
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.functions.values()).finish()
    }
}

// === Admission ===

/// One function's limits, as the function's callers hold them. Cheap to clone; clones share
/// the limits.
#[derive(Clone)]
pub(crate) struct Admission(Arc<FunctionLimits>);

impl Admission {
    /// Waits until the function may start an attempt: backpressure for queue callers.
    ///
    /// Takes a concurrency slot first (waiting in FIFO order while the function's reserved
    /// concurrency or the unreserved pool is full), then, holding it, waits for the rate. Each
    /// limit that makes the call wait counts one throttle. Cancel-safe: dropping the future gives
    /// back whatever it holds.
    ///
    /// # Errors
    ///
    /// Only when the function can never be admitted: [`Throttle::Disabled`]
    /// (`reserved_concurrency = 0`), or [`Throttle::AccountConcurrency`] when the function draws
    /// from an unreserved pool of size 0 (reserved concurrency takes the whole account) —
    /// waiting would never end.
    pub(crate) async fn acquire(&self) -> Result<Permit<'_>, Throttle> {
        match &self.0.cluster {
            Some(cluster) => self.acquire_in_cluster(cluster).await,
            None => self.acquire_local().await,
        }
    }

    /// [`Admission::acquire`] under this process's limits only.
    async fn acquire_local(&self) -> Result<Permit<'_>, Throttle> {
        let limits = &*self.0;
        let (semaphore, full) = limits.slots()?;
        let slot = match semaphore.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                telemetry::throttled(&limits.name, Limit::Concurrency);
                // FIFO: tokio's semaphore serves waiters in order, and a `try_acquire` cannot
                // take a released slot from a waiter. It is never closed, so the error arm is
                // unreachable; report the limit rather than panic.
                semaphore.acquire().await.map_err(|_closed| full)?
            }
        };
        limits.wait_for_rate().await;
        Ok(Permit::new(limits, Slot::Local(slot)))
    }

    /// [`Admission::acquire`] on the cluster's Redis.
    async fn acquire_in_cluster<'a>(
        &'a self,
        cluster: &'a ClusterLimits,
    ) -> Result<Permit<'a>, Throttle> {
        let limits = &*self.0;
        // Refuses what can never be admitted (disabled, empty pool) without a round-trip.
        limits.slots()?;
        let mut waited_for_slot = false;
        let mut waited_for_rate = false;
        let mut turn = None;
        let mut waiting = None;
        let mut slot_poll = MIN_SLOT_POLL;
        loop {
            // The fast path (nobody waiting here) asks at once; otherwise join the queue and ask
            // from its head.
            if turn.is_none() && (waiting.is_some() || cluster.waiters.load(Ordering::Acquire) > 0)
            {
                waiting.get_or_insert_with(|| RateWaiter::enter(&cluster.waiters));
                turn = Some(cluster.queue.lock().await);
            }
            let mut wake_on_end = false;
            let wait = match cluster.redis.admit(&limits.name, &cluster.target).await {
                Ok(Verdict::Admitted(lease)) => {
                    return Ok(Permit::new(limits, Slot::Leased(lease)))
                }
                Ok(Verdict::Concurrency) => {
                    if !std::mem::replace(&mut waited_for_slot, true) {
                        telemetry::throttled(&limits.name, Limit::Concurrency);
                    }
                    let wait = slot_poll;
                    slot_poll = (slot_poll * 2).min(MAX_SLOT_POLL);
                    wake_on_end = true;
                    wait
                }
                Ok(Verdict::Rate(wait)) => {
                    if !std::mem::replace(&mut waited_for_rate, true) {
                        telemetry::throttled(&limits.name, Limit::Rate);
                    }
                    slot_poll = MIN_SLOT_POLL;
                    wait
                }
                Err(_unavailable) => match cluster.on_unavailable {
                    OnRedisUnavailable::Local => {
                        drop(turn);
                        return self.acquire_local().await;
                    }
                    OnRedisUnavailable::Deny => {
                        if !std::mem::replace(&mut waited_for_slot, true) {
                            telemetry::throttled(&limits.name, Limit::Concurrency);
                        }
                        UNAVAILABLE_RETRY
                    }
                },
            };
            waiting.get_or_insert_with(|| RateWaiter::enter(&cluster.waiters));
            if wake_on_end {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cluster.ended.notified() => slot_poll = MIN_SLOT_POLL,
                }
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Admits an attempt now, or refuses at once: for synchronous callers, which answer `429`
    /// with [`Throttle::reason`]. With cluster scope this is one Redis round-trip; it never
    /// waits for a limit.
    ///
    /// # Errors
    ///
    /// The limit that refused; every refusal counts one throttle. With cluster scope, Redis
    /// unreachable and `on_redis_unavailable = "deny"`: the concurrency throttle.
    pub(crate) async fn try_acquire(&self) -> Result<Permit<'_>, Throttle> {
        let Some(cluster) = &self.0.cluster else {
            return self.try_acquire_local();
        };
        let limits = &*self.0;
        let (_, full) = limits.slots()?;
        match cluster.redis.admit(&limits.name, &cluster.target).await {
            Ok(Verdict::Admitted(lease)) => Ok(Permit::new(limits, Slot::Leased(lease))),
            Ok(Verdict::Concurrency) => {
                telemetry::throttled(&limits.name, Limit::Concurrency);
                Err(full)
            }
            Ok(Verdict::Rate(_)) => {
                telemetry::throttled(&limits.name, Limit::Rate);
                Err(Throttle::Rate)
            }
            Err(_unavailable) => match cluster.on_unavailable {
                OnRedisUnavailable::Local => self.try_acquire_local(),
                OnRedisUnavailable::Deny => {
                    telemetry::throttled(&limits.name, Limit::Concurrency);
                    Err(full)
                }
            },
        }
    }

    /// [`Admission::try_acquire`] under this process's limits only: the whole admission with
    /// process scope, and the fallback of cluster scope.
    pub(crate) fn try_acquire_local(&self) -> Result<Permit<'_>, Throttle> {
        let limits = &*self.0;
        let (semaphore, full) = limits.slots()?;
        let Ok(slot) = semaphore.try_acquire() else {
            telemetry::throttled(&limits.name, Limit::Concurrency);
            return Err(full);
        };
        if limits.rate.check().is_err() {
            // `slot` drops here: the refused call holds nothing.
            telemetry::throttled(&limits.name, Limit::Rate);
            return Err(Throttle::Rate);
        }
        Ok(Permit::new(limits, Slot::Local(slot)))
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The number of semaphore permits for `n` slots.
fn permits(n: u32) -> usize {
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

/// The rate per second and the burst of a function with `rate` configured and `concurrency`
/// slots, each at least 1.
///
/// Unset `per_second`: 10 × `concurrency` (Lambda's rule). Unset `burst`: the rate per second,
/// governor's default for `Quota::per_second`.
fn rate_of(rate: Option<RateConfig>, concurrency: u32) -> (u32, u32) {
    let per_second = rate.map_or(concurrency.saturating_mul(RATE_PER_CONCURRENCY), |rate| {
        rate.per_second
    });
    // Validation rejects 0; a disabled function (or an empty pool) never reaches the rate.
    let per_second = per_second.max(1);
    let burst = rate
        .and_then(|rate| rate.burst)
        .filter(|burst| *burst > 0)
        .unwrap_or(per_second);
    (per_second, burst)
}

/// The GCRA quota of `per_second` cells a second in bursts of `burst`.
fn quota(per_second: u32, burst: u32) -> Quota {
    let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN));
    quota.allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

// === FunctionLimits ===

/// One function's limits and its count of running attempts.
struct FunctionLimits {
    /// The configured name: the `function` label.
    name: Box<str>,
    concurrency: Concurrency,
    /// Admission on the cluster's Redis, with `limits.scope = "cluster"` (then `concurrency`
    /// and `rate` serve only as the fallback of `on_redis_unavailable = "local"`).
    cluster: Option<ClusterLimits>,
    /// Kept for `Debug`; `rate` holds its own copy.
    quota: Quota,
    rate: Gcra,
    /// Queue of [`Limiter::acquire`] callers waiting for the rate. Only the head of the queue
    /// sleeps on the limiter, until the exact instant governor names, so waiters are admitted in
    /// FIFO order and a free cell wakes one task, not all of them. This does the job governor's
    /// `until_ready_with_jitter` does with random delays (avoid a thundering herd), without the
    /// delays, which would cost throughput when the burst is small. (tokio's `Mutex` is fair.)
    rate_queue: AsyncMutex<()>,
    /// Callers in (or entering) `rate_queue`. While it is 0, an admission checks the rate
    /// without taking the queue: releasing a tokio mutex takes a std mutex, which every
    /// admission contended for when all workers admitted at once.
    rate_waiters: AtomicUsize,
    /// Attempts holding a [`Permit`]: the `impulse_concurrent_executions` gauge, registered
    /// once so that an admission updates it with an atomic operation rather than a registry
    /// lookup. The gauge is the count; nothing else reads it.
    executions: ConcurrencyGauge,
}

/// Where a function's concurrency slots come from.
#[derive(Debug)]
enum Concurrency {
    /// `reserved_concurrency = 0`: never admitted.
    Disabled,
    /// The function's own `reserved_concurrency` slots.
    Reserved(Semaphore),
    /// The unreserved pool, shared by every function without reserved concurrency.
    Unreserved {
        /// The pool, shared with the other unreserved functions.
        pool: Arc<Semaphore>,
        /// Its size: account concurrency less all reserved concurrency.
        size: u32,
    },
}

impl FunctionLimits {
    /// The semaphore to take a slot from, and the throttle to report when it is full; or the
    /// throttle (counted) when no slot can ever be had.
    fn slots(&self) -> Result<(&Semaphore, Throttle), Throttle> {
        match &self.concurrency {
            Concurrency::Reserved(semaphore) => Ok((semaphore, Throttle::ReservedConcurrency)),
            Concurrency::Unreserved { pool, size } if *size > 0 => {
                Ok((pool, Throttle::AccountConcurrency))
            }
            Concurrency::Unreserved { .. } => {
                telemetry::throttled(&self.name, Limit::Concurrency);
                Err(Throttle::AccountConcurrency)
            }
            Concurrency::Disabled => {
                // Lambda counts invocations of a function with reserved concurrency 0 as
                // throttles.
                telemetry::throttled(&self.name, Limit::Concurrency);
                Err(Throttle::Disabled)
            }
        }
    }

    /// Waits for one rate cell, behind earlier waiters.
    async fn wait_for_rate(&self) {
        // Fast path: nobody is waiting and a cell is free.
        if self.rate_waiters.load(Ordering::Acquire) == 0 && self.rate.check().is_ok() {
            return;
        }
        telemetry::throttled(&self.name, Limit::Rate);
        let _waiting = RateWaiter::enter(&self.rate_waiters);
        let turn = self.rate_queue.lock().await;
        // At the head of the queue. `try_acquire` callers may take the cell first; then sleep
        // again until the next one.
        while let Err(not_until) = self.rate.check() {
            tokio::time::sleep_until(not_until.earliest_possible().into_inner()).await;
        }
        drop(turn);
    }
}

/// Counts a caller of [`FunctionLimits::wait_for_rate`] in the queue, until it leaves (also when
/// its future is dropped).
struct RateWaiter<'a>(&'a AtomicUsize);

impl<'a> RateWaiter<'a> {
    fn enter(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::AcqRel);
        Self(waiters)
    }
}

impl Drop for RateWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for FunctionLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionLimits")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("quota", &self.quota)
            .field("cluster", &self.cluster.as_ref().map(|c| &c.target))
            .finish_non_exhaustive()
    }
}

// === Permit ===

/// Admission of one attempt. Dropping it gives the concurrency slot back and updates the
/// `impulse_concurrent_executions` gauge.
///
/// Held for exactly one attempt, by the call that makes the attempt; a retry is admitted again.
/// It borrows the function's limits rather than cloning an `Arc` that every admission of the
/// function would update.
#[must_use = "the attempt is admitted only while the permit is held"]
pub(crate) struct Permit<'l> {
    limits: &'l FunctionLimits,
    /// Released when the permit drops (after `Drop::drop`, so the gauge never counts a slot
    /// that is already free).
    _slot: Slot<'l>,
}

/// The concurrency slot a [`Permit`] holds.
#[derive(Debug)]
enum Slot<'l> {
    /// One of this process's semaphores.
    Local(#[allow(dead_code)] SemaphorePermit<'l>),
    /// A lease on the cluster's Redis.
    Leased(#[allow(dead_code)] Lease<'l>),
}

impl<'l> Permit<'l> {
    fn new(limits: &'l FunctionLimits, slot: Slot<'l>) -> Self {
        limits.executions.started();
        Self {
            limits,
            _slot: slot,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limits.executions.finished();
        if let Some(cluster) = &self.limits.cluster {
            cluster.ended.notify_one();
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("function", &self.limits.name)
            .finish()
    }
}

// === Throttle ===

/// Why an attempt was not admitted: Lambda's `TooManyRequestsException` (HTTP 429) with
/// [`Throttle::reason`] as its `Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// The function's reserved concurrency is in use.
    ReservedConcurrency,
    /// The unreserved pool, shared by functions without reserved concurrency, is in use.
    AccountConcurrency,
    /// The function's invocation rate is exceeded.
    Rate,
    /// `reserved_concurrency = 0`.
    Disabled,
}

impl Throttle {
    /// Lambda's `TooManyRequestsException` `Reason`.
    ///
    /// A disabled function gets `ReservedFunctionConcurrentInvocationLimitExceeded`, as in
    /// Lambda (its reserved concurrency, 0, is exceeded).
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Self::ReservedConcurrency | Self::Disabled => {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            }
            Self::AccountConcurrency => "ConcurrentInvocationLimitExceeded",
            Self::Rate => "CallerRateLimitExceeded",
        }
    }

    /// The error message: Lambda says `Rate Exceeded.` for every throttle.
    pub(crate) const fn message(self) -> &'static str {
        "Rate Exceeded."
    }

    /// Lambda's exception name (`x-amzn-ErrorType`).
    pub(crate) const fn error_type(self) -> &'static str {
        "TooManyRequestsException"
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.reason())
    }
}
