//! Cluster-wide admission on Redis: concurrency slots as expiring leases and invocation rates
//! as a GCRA, each admission one atomic Lua script evaluated on Redis's clock (`TIME`).
//!
//! - **Concurrency.** A concurrency domain (a function's reserved concurrency, or the account's
//!   unreserved pool) is a sorted set `<prefix>:reserved:<function>` or `<prefix>:pool`: member
//!   = lease id, score = the lease's expiry in Redis's unix milliseconds. [`ADMIT_LUA`] removes
//!   expired members, counts the rest, and adds the new lease only below the domain's cap.
//!   Validation keeps Σ reserved ≤ account, so capping each domain caps the account too.
//! - **Rate.** Each function's theoretical arrival time (TAT, unix µs) is the string key
//!   `<prefix>:rate:<function>`; in the same script, after the slot check (a refused slot costs
//!   no rate cell), an arrival is allowed when `max(TAT, now) + interval − now ≤ burst ×
//!   interval`, as governor's GCRA does in one process.
//! - **Leases live while held.** A keeper task renews every lease this process holds in one
//!   round-trip every third of the lease time (`ZADD XX`: a lease already reaped is never
//!   brought back, so a renewal cannot push a domain over its cap), and sends releases in
//!   batches. A crashed process's leases expire within the lease time.
//! - **Cancel-safety.** A lease is registered (and its [`Lease`] guard exists) before the
//!   script is sent: if the caller's future is dropped while the reply is in flight, the guard
//!   releases the id, which the script may or may not have added.
//!
//! **Leasing in blocks**, so that a busy function does not pay a round-trip per attempt:
//!
//! - *Slots are kept for reuse.* A lease whose attempt ended is parked in this process (still
//!   live, still renewed) and the next admission of the same function takes it without asking
//!   Redis. The keeper releases a lease parked for longer than [`PARK_IDLE`], and a lease first
//!   taken more than [`REUSE_FOR`] ago is released when its attempt ends rather than parked, so
//!   that every slot goes back to the cluster regularly and other instances get their turn.
//!   *The cap still holds:* a slot in use or parked here is a member of the domain's set the whole
//!   time (renewed, so never reaped while renewals succeed; a parked lease is not reused once the
//!   last successful renewal is two thirds of a lease time old), and the script never lets the
//!   set grow past the cap; so the slots in use across the cluster never exceed it.
//! - *Rate cells come in blocks.* One script call may take up to `k` cells at once (`k` adapts to
//!   the demand: doubled when a block runs out while still valid, halved when most of one
//!   expires unused; at most the cells of [`CELL_WINDOW`] at the configured rate, and at most the
//!   burst). A block is valid for [`CELL_WINDOW`] after the script granted it; what is left then
//!   is dropped. *The rate still holds, within one window:* an attempt admitted at time `t` used a
//!   cell granted in `[t − W, t]`, so the attempts in any interval of length `L` used cells
//!   granted in an interval of length `L + W`, which the GCRA bounds by `burst + rate × (L + W)`.
//!   At low rates (`rate × W < 1`) a block is one cell: admission is exact, per attempt.
//!
//! Lease ids are `<instance>:<n>`, with an instance id unique to this process (its consumer
//! name, process id and start time), so a restarted instance never reuses its predecessor's
//! ids. The keys of one cluster share the prefix `<queue stream>:limits`; under Redis Cluster,
//! give the stream a hash tag (`{async}`) so that one script's keys share a slot.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::redact_url;
use crate::contract::QueueError;

/// How long an admission waits for Redis's reply: a synchronous call waits this long at worst
/// before it is answered without Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Releases sent in one round-trip at most.
const RELEASE_BATCH: usize = 512;
/// How long a block of rate cells stays usable after Redis granted it.
const CELL_WINDOW: Duration = Duration::from_millis(10);
/// How long a parked lease may wait for the next attempt before it goes back to the cluster.
const PARK_IDLE: Duration = Duration::from_millis(20);
/// How long after it was first taken a lease may be parked for reuse: afterwards it goes back
/// to the cluster when its attempt ends.
const REUSE_FOR: Duration = Duration::from_secs(1);

/// `KEYS[1]` concurrency domain (sorted set), `KEYS[2]` the function's TAT; `ARGV[1]` cap,
/// `ARGV[2]` lease id, or `''` when the caller has a slot already, `ARGV[3]` lease time in ms,
/// `ARGV[4]` emission interval in µs, `ARGV[5]` burst, `ARGV[6]` cells wanted (0 when the
/// caller has one already). Returns `{2, 0, cells}` admitted (lease added if asked for, `cells`
/// ≥ 1 of those wanted taken), `{0, 0, 0}` the domain is full, `{1, µs, 0}` the rate is exceeded
/// for that many more microseconds. Nothing is written unless it admits.
const ADMIT_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local lease = ARGV[2]
if lease ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return {0, 0, 0} end
end
local wanted = tonumber(ARGV[6])
local cells = 0
if wanted > 0 then
  local interval = tonumber(ARGV[4])
  local tolerance = interval * tonumber(ARGV[5])
  local tat = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if tat < now_us then tat = now_us end
  cells = math.min(wanted, math.floor((tolerance - (tat - now_us)) / interval))
  if cells < 1 then
    return {1, math.max(1, math.ceil(tat + interval - tolerance - now_us)), 0}
  end
  local next_tat = tat + cells * interval
  redis.call('SET', KEYS[2], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now_us) / 1000) + 1)
end
if lease ~= '' then
  local lease_ms = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], now_ms + lease_ms, lease)
  redis.call('PEXPIRE', KEYS[1], 2 * lease_ms)
end
return {2, 0, cells}
";

/// `KEYS` concurrency domains; `ARGV[1]` lease time in ms, then for each key in order the
/// number of its leases followed by their ids. Moves each existing lease's expiry to now +
/// lease time; leases already reaped stay gone (`XX`).
const RENEW_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local lease_ms = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease_ms
local at = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, n do
    redis.call('ZADD', key, 'XX', expiry, ARGV[at])
    at = at + 1
  end
  redis.call('PEXPIRE', key, 2 * lease_ms)
end
return 1
";

/// Where a function's concurrency slots come from, for [`RedisLimits::target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slots {
    /// Its own reserved concurrency, of this many slots.
    Reserved(u32),
    /// The account's unreserved pool, of this many slots.
    Pool(u32),
}

/// One function's keys and limits on Redis, built once by [`RedisLimits::target`], and its block
/// of rate cells.
#[derive(Debug)]
pub struct ClusterTarget {
    slots_key: Arc<str>,
    cap: u32,
    rate_key: Box<str>,
    /// Seconds between two rate cells, in µs (fractional).
    interval_us: f64,
    burst: u32,
    /// The most cells one block may hold: those of [`CELL_WINDOW`], at most the burst.
    max_block: u32,
    cells: Mutex<Cells>,
}

/// Rate cells granted by Redis and not used yet.
#[derive(Debug)]
struct Cells {
    left: u32,
    /// When the block stops being usable.
    until: Instant,
    /// The size of the next block to ask for.
    block: u32,
}

impl Cells {
    /// Takes a cell of the current block, if it has one.
    fn take(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        if Instant::now() >= self.until {
            // Mostly unused: ask for less next time.
            if self.left > self.block / 2 {
                self.block = (self.block / 2).max(1);
            }
            self.left = 0;
            return false;
        }
        self.left -= 1;
        true
    }

    /// A block of `granted` cells arrived; one of them is used at once.
    fn granted(&mut self, granted: u32, max_block: u32) {
        if self.left == 0 && Instant::now() < self.until {
            // The last block ran out while still valid: ask for more next time.
            self.block = self.block.saturating_mul(2).min(max_block);
        }
        self.left = granted.saturating_sub(1);
        self.until = Instant::now() + CELL_WINDOW;
    }
}

/// This process's leases: live ones (renewed), among them the parked ones (no attempt).
#[derive(Debug)]
struct Leases {
    live: HashMap<u64, LiveLease>,
    /// Parked leases by domain, the most recently parked last.
    parked: HashMap<Arc<str>, Vec<(u64, Instant)>>,
    /// When the last renewal that succeeded was sent: a parked lease is reused only while
    /// renewals keep it on Redis.
    renewed: Instant,
}

#[derive(Debug)]
struct LiveLease {
    key: Arc<str>,
    /// When Redis first granted it; `None` until it has.
    since: Option<Instant>,
}

/// The outcome of [`RedisLimits::admit`].
#[derive(Debug)]
pub enum Verdict<'a> {
    /// Admitted: the lease holds the slot until it drops.
    Admitted(Lease<'a>),
    /// The concurrency domain is full.
    Concurrency,
    /// The rate is exceeded; a cell frees up after this long.
    Rate(Duration),
}

/// The shared admission state of one cluster on Redis, and this process's leases in it.
pub struct RedisLimits {
    manager: ConnectionManager,
    admit_script: Script,
    prefix: String,
    instance: String,
    lease_time: Duration,
    next_id: AtomicU64,
    /// The leases this process holds (renewed by the keeper), by number.
    leases: Mutex<Leases>,
    releases: mpsc::UnboundedSender<(Arc<str>, u64)>,
    /// Whether the last admission reached Redis: outages are logged once, when they start.
    reachable: AtomicBool,
    url: String,
}

impl RedisLimits {
    /// Connects to Redis at `url` for the cluster sharing the queue stream `stream`, and
    /// starts the keeper task that renews and releases this process's leases (it ends when the
    /// returned value is dropped). `instance` names this instance (the queue's consumer name).
    ///
    /// # Errors
    ///
    /// An invalid URL, or Redis cannot be reached.
    pub async fn connect(
        url: &str,
        stream: &str,
        instance: &str,
        lease_time: Duration,
    ) -> Result<Arc<Self>, QueueError> {
        let shown = redact_url(url);
        let error = |message: String| QueueError {
            operation: "connect",
            message,
        };
        let client = redis::Client::open(url)
            .map_err(|e| error(format!("invalid Redis URL {shown}: {e}")))?;
        let config = super::manager_config().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| error(format!("connecting to {shown}: {e}")))?;
        Ok(Self::start(
            manager,
            &format!("{stream}:limits"),
            instance,
            lease_time,
            shown,
        ))
    }

    fn start(
        manager: ConnectionManager,
        prefix: &str,
        instance: &str,
        lease_time: Duration,
        url: String,
    ) -> Arc<Self> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let (releases, released) = mpsc::unbounded_channel();
        let limits = Arc::new(Self {
            manager,
            admit_script: Script::new(ADMIT_LUA),
            prefix: prefix.to_owned(),
            instance: format!("{instance}:{}:{started:x}", std::process::id()),
            lease_time,
            next_id: AtomicU64::new(0),
            leases: Mutex::new(Leases {
                live: HashMap::new(),
                parked: HashMap::new(),
                renewed: Instant::now(),
            }),
            releases,
            reachable: AtomicBool::new(true),
            url,
        });
        tokio::spawn(keep(Arc::downgrade(&limits), released));
        limits
    }

    /// How long a lease outlives its holder.
    pub fn lease_time(&self) -> Duration {
        self.lease_time
    }

    /// The keys and limits of `function`: its concurrency domain, and a GCRA of `per_second`
    /// cells a second with bursts of `burst` (both at least 1).
    pub fn target(
        &self,
        function: &str,
        slots: Slots,
        per_second: u32,
        burst: u32,
    ) -> ClusterTarget {
        let (slots_key, cap) = match slots {
            Slots::Reserved(cap) => (format!("{}:reserved:{function}", self.prefix), cap),
            Slots::Pool(cap) => (format!("{}:pool", self.prefix), cap),
        };
        let burst = burst.max(1);
        let per_window = u64::from(per_second.max(1))
            * u64::try_from(CELL_WINDOW.as_micros()).unwrap_or(u64::MAX)
            / 1_000_000;
        let max_block = u32::try_from(per_window)
            .unwrap_or(u32::MAX)
            .clamp(1, burst);
        ClusterTarget {
            slots_key: slots_key.into(),
            cap,
            rate_key: format!("{}:rate:{function}", self.prefix).into(),
            interval_us: 1_000_000.0 / f64::from(per_second.max(1)),
            burst,
            max_block,
            cells: Mutex::new(Cells {
                left: 0,
                until: Instant::now(),
                block: 1,
            }),
        }
    }

    /// Takes a slot of `target`'s domain and one of its rate cells in one atomic step, or says
    /// which limit refused: from this process's parked leases and block of cells when it can,
    /// else in one round-trip. It never waits for a limit.
    ///
    /// # Errors
    ///
    /// Redis could not answer (logged once per outage, counted in
    /// `impulse_cluster_limits_unavailable_total`): the admission must be decided without it.
    pub async fn admit(
        &self,
        function: &str,
        target: &ClusterTarget,
    ) -> Result<Verdict<'_>, RedisError> {
        let parked = self.unpark(&target.slots_key);
        let has_cell = lock(&target.cells).take();
        let (lease, confirmed) = match parked {
            Some(id) => (
                Lease {
                    limits: self,
                    key: Arc::clone(&target.slots_key),
                    id,
                    confirmed: true,
                    on_redis: true,
                },
                true,
            ),
            None => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let live = LiveLease {
                    key: Arc::clone(&target.slots_key),
                    since: None,
                };
                lock(&self.leases).live.insert(id, live);
                // From here on, dropping `lease` (this future dropped, or an error) releases
                // the id, which Redis may or may not hold.
                let lease = Lease {
                    limits: self,
                    key: Arc::clone(&target.slots_key),
                    id,
                    confirmed: false,
                    on_redis: true,
                };
                (lease, false)
            }
        };
        if confirmed && has_cell {
            return Ok(Verdict::Admitted(lease));
        }
        let wanted = if has_cell {
            0
        } else {
            lock(&target.cells).block
        };
        let lease_ms = u64::try_from(self.lease_time.as_millis()).unwrap_or(u64::MAX);
        let member = if confirmed {
            String::new()
        } else {
            self.member(lease.id)
        };
        let reply: Result<(i64, i64, i64), RedisError> = self
            .admit_script
            .key(&*target.slots_key)
            .key(&*target.rate_key)
            .arg(target.cap)
            .arg(member)
            .arg(lease_ms)
            .arg(target.interval_us)
            .arg(target.burst)
            .arg(wanted)
            .invoke_async(&mut self.manager.clone())
            .await;
        match reply {
            Ok((2, _, cells)) => {
                self.reached();
                if wanted > 0 {
                    let cells = u32::try_from(cells).unwrap_or(0);
                    lock(&target.cells).granted(cells, target.max_block);
                }
                Ok(Verdict::Admitted(lease.confirmed()))
            }
            Ok((code, wait_us, _)) => {
                self.reached();
                // A parked slot goes back to the park (its drop parks it); a new id was never
                // added. A cell taken from the block is lost: it only ever lowers the rate.
                if !confirmed {
                    lease.refused();
                }
                if code == 1 {
                    let wait_us = u64::try_from(wait_us).unwrap_or(0).max(1);
                    Ok(Verdict::Rate(Duration::from_micros(wait_us)))
                } else {
                    Ok(Verdict::Concurrency)
                }
            }
            Err(e) => {
                self.unreachable(function, &e);
                Err(e)
            }
        }
    }

    /// Counts an admission of `function` decided without Redis; logs the outage when it starts.
    fn unreachable(&self, function: &str, e: &RedisError) {
        crate::telemetry::cluster_limits_unavailable(function);
        if self.reachable.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                url = %self.url,
                error = %e,
                "cluster limits: Redis cannot be reached; admitting as limits.on_redis_unavailable says until it is back"
            );
        }
    }

    fn reached(&self) {
        if !self.reachable.load(Ordering::Acquire) && !self.reachable.swap(true, Ordering::AcqRel) {
            tracing::info!(url = %self.url, "cluster limits: Redis is reachable again");
        }
    }

    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.instance)
    }

    /// A parked lease of the domain `key`, taken out of the park.
    fn unpark(&self, key: &Arc<str>) -> Option<u64> {
        let mut leases = lock(&self.leases);
        // Renewals failing for most of a lease time: Redis may have reaped the parked leases.
        if leases.renewed.elapsed() > self.lease_time * 2 / 3 {
            return None;
        }
        leases.parked.get_mut(key)?.pop().map(|(id, _)| id)
    }

    /// Leases parked for longer than [`PARK_IDLE`], taken out of this process's books: to be
    /// released.
    fn idle_parked(&self) -> Vec<(Arc<str>, u64)> {
        let mut leases = lock(&self.leases);
        let Leases { live, parked, .. } = &mut *leases;
        let mut idle = Vec::new();
        for (key, ids) in parked.iter_mut() {
            // Most recently parked last: the idle ones are a prefix.
            let stale = ids
                .iter()
                .take_while(|(_, at)| at.elapsed() >= PARK_IDLE)
                .count();
            for (id, _) in ids.drain(..stale) {
                live.remove(&id);
                idle.push((Arc::clone(key), id));
            }
        }
        parked.retain(|_, ids| !ids.is_empty());
        idle
    }

    /// Renews every live lease in one round-trip.
    async fn renew(&self) -> Result<(), RedisError> {
        let sent = Instant::now();
        let mut by_key: HashMap<Arc<str>, Vec<u64>> = HashMap::new();
        for (id, lease) in &lock(&self.leases).live {
            by_key.entry(Arc::clone(&lease.key)).or_default().push(*id);
        }
        if by_key.is_empty() {
            lock(&self.leases).renewed = sent;
            return Ok(());
        }
        let script = Script::new(RENEW_LUA);
        let mut invocation = script.prepare_invoke();
        let lease_ms = u64::try_from(self.lease_time.as_millis()).unwrap_or(u64::MAX);
        invocation.arg(lease_ms);
        for (key, ids) in &by_key {
            invocation.key(&**key).arg(ids.len());
            for id in ids {
                invocation.arg(self.member(*id));
            }
        }
        invocation
            .invoke_async::<()>(&mut self.manager.clone())
            .await?;
        lock(&self.leases).renewed = sent;
        Ok(())
    }

    /// Removes released leases in one round-trip.
    async fn release(&self, leases: &[(Arc<str>, u64)]) -> Result<(), RedisError> {
        let mut by_key: HashMap<&str, Vec<String>> = HashMap::new();
        for (key, id) in leases {
            by_key.entry(key).or_default().push(self.member(*id));
        }
        let mut pipe = redis::pipe();
        for (key, members) in by_key {
            pipe.cmd("ZREM").arg(key).arg(members).ignore();
        }
        pipe.query_async(&mut self.manager.clone()).await
    }
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .field("lease_time", &self.lease_time)
            .finish_non_exhaustive()
    }
}

/// Renews live leases every third of the lease time and sends releases in batches, until the
/// [`RedisLimits`] is dropped. Releases that fail are tried again at the next renewal, and
/// given up once their lease has expired anyway.
async fn keep(limits: Weak<RedisLimits>, mut released: mpsc::UnboundedReceiver<(Arc<str>, u64)>) {
    let Some(period) = limits.upgrade().map(|l| l.lease_time / 3) else {
        return;
    };
    let mut renewal = tokio::time::interval(period.max(Duration::from_millis(100)));
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut park = tokio::time::interval(PARK_IDLE / 2);
    park.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsent: Vec<(Arc<str>, u64)> = Vec::new();
    let mut unsent_since: Option<Instant> = None;
    loop {
        tokio::select! {
            first = released.recv() => {
                let Some(first) = first else { return };
                let mut batch = vec![first];
                while batch.len() < RELEASE_BATCH {
                    match released.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let Some(limits) = limits.upgrade() else { return };
                if let Err(e) = limits.release(&batch).await {
                    tracing::debug!(error = %e, leases = batch.len(), "cluster limits: releasing leases failed; trying again at the next renewal");
                    unsent.extend(batch);
                    unsent_since.get_or_insert_with(Instant::now);
                }
            }
            _ = park.tick() => {
                let Some(limits) = limits.upgrade() else { return };
                let idle = limits.idle_parked();
                if !idle.is_empty() && limits.release(&idle).await.is_err() {
                    unsent.extend(idle);
                    unsent_since.get_or_insert_with(Instant::now);
                }
            }
            _ = renewal.tick() => {
                let Some(limits) = limits.upgrade() else { return };
                if let Err(e) = limits.renew().await {
                    tracing::debug!(error = %e, "cluster limits: renewing leases failed");
                }
                if !unsent.is_empty() {
                    if unsent_since.is_some_and(|since| since.elapsed() > limits.lease_time) {
                        // Expired on Redis by now: nothing left to remove.
                        unsent.clear();
                        unsent_since = None;
                    } else if limits.release(&unsent).await.is_ok() {
                        unsent.clear();
                        unsent_since = None;
                    }
                }
            }
        }
    }
}

/// A concurrency slot held on Redis; dropping it releases the slot (in the background, within
/// a round-trip) and stops its renewal at once.
#[must_use = "the slot is held only while the lease is"]
pub struct Lease<'a> {
    limits: &'a RedisLimits,
    key: Arc<str>,
    id: u64,
    /// Whether Redis is known to hold the id (it granted it): only then may it be parked.
    confirmed: bool,
    /// Whether Redis may hold the id: false once the script said it did not add it.
    on_redis: bool,
}

impl<'a> Lease<'a> {
    /// Redis granted this lease.
    fn confirmed(mut self) -> Self {
        if !self.confirmed {
            if let Some(live) = lock(&self.limits.leases).live.get_mut(&self.id) {
                live.since = Some(Instant::now());
            }
            self.confirmed = true;
        }
        self
    }

    /// The script did not add this lease: forget it without a round-trip.
    fn refused(mut self) {
        self.on_redis = false;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut leases = lock(&self.limits.leases);
        let reusable = self.confirmed
            && leases
                .live
                .get(&self.id)
                .and_then(|live| live.since)
                .is_some_and(|since| since.elapsed() < REUSE_FOR);
        if reusable {
            leases
                .parked
                .entry(Arc::clone(&self.key))
                .or_default()
                .push((self.id, Instant::now()));
            return;
        }
        leases.live.remove(&self.id);
        drop(leases);
        if !self.on_redis {
            return;
        }
        // The receiver lives as long as the keeper, which lives as long as `limits`; a send can
        // fail only at shutdown, when the lease expires on its own.
        self.limits
            .releases
            .send((Arc::clone(&self.key), self.id))
            .ok();
    }
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

/// Locks `mutex`; a panic while it was held leaves the books usable (each update is whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
