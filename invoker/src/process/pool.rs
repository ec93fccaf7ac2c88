//! A function's pool of execution environments: reuse warm ones, start new ones up to the cap,
//! queue callers beyond it, keep `min_warm` started, reap idle ones.
//!
//! Capacity is counted in slots. A slot is taken before a process starts and released by the
//! environment's supervisor only after the process has been reaped, so live processes never
//! exceed `max_environments`, even while one is being killed. Callers beyond the cap wait in a
//! FIFO queue and are handed either a warm environment or a free slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use impulse_connectors::telemetry;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;

use super::environment::{Environment, Launch, Shared, StartError, Stop};

/// The first delay before retrying a failed `min_warm` start; it doubles up to
/// [`MAX_WARM_BACKOFF`].
const WARM_BACKOFF: Duration = Duration::from_secs(1);
const MAX_WARM_BACKOFF: Duration = Duration::from_secs(60);

/// What a waiting caller is handed.
#[derive(Debug)]
pub(super) enum Grant {
    /// A warm environment.
    Env(Environment),
    /// A free slot: start an environment in it.
    Start(Slot),
}

/// What [`Pool::checkout`] found.
#[derive(Debug)]
pub(super) enum Checkout {
    /// A warm environment.
    Warm(Environment),
    /// A slot to start a new environment in.
    Start(Slot),
    /// The pool is at its cap: wait for a grant.
    Wait(GrantReceiver),
    /// The pool is shut down.
    Closed,
}

/// The right to run one environment. Dropping it frees the capacity (handing it to the next
/// waiting caller, if any).
#[derive(Debug)]
pub(super) struct Slot {
    pool: Option<Weak<Pool>>,
    /// Its environment is being reaped (counted in `State::retiring`).
    retiring: bool,
}

impl Slot {
    fn new(pool: &Arc<Pool>) -> Self {
        Self {
            pool: Some(Arc::downgrade(pool)),
            retiring: false,
        }
    }

    /// Marks the slot's environment as reaped by the pool (see [`Stop::Retire`]).
    pub(super) fn retiring(&mut self) {
        self.retiring = true;
    }

    /// Forgets the slot without freeing it: its count has been passed on.
    fn disarm(mut self) {
        self.pool = None;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().and_then(|p| p.upgrade()) {
            pool.slot_freed(self.retiring);
        }
    }
}

/// A waiting caller's end of the queue. Dropping it (the caller timed out or went away) gives a
/// grant that was already on its way back to the pool, so no warm environment is lost.
#[derive(Debug)]
pub(super) struct GrantReceiver {
    rx: oneshot::Receiver<Grant>,
    pool: Arc<Pool>,
}

impl GrantReceiver {
    /// Waits for a grant; `None` if the pool shut down.
    pub(super) async fn recv(&mut self) -> Option<Grant> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for GrantReceiver {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(grant) = self.rx.try_recv() {
            self.pool.reclaim(grant);
        }
    }
}

#[derive(Debug)]
struct Idle {
    env: Environment,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Warm environments, least recently used first; reuse takes the most recent.
    idle: Vec<Idle>,
    /// Slots in use: starting, idle, busy and dying environments.
    slots: usize,
    /// Slots whose environments the pool is reaping (included in `slots`).
    retiring: usize,
    /// Callers waiting for capacity, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant>>,
    closed: bool,
    /// When the maintenance task will wake on its own; `None`: only when notified.
    wake_at: Option<Instant>,
    /// No `min_warm` start before this instant (backoff after failures).
    warm_retry_at: Option<Instant>,
    warm_backoff: Duration,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) launch: Launch,
    pub(super) max: usize,
    pub(super) min_warm: usize,
    pub(super) idle_timeout: Duration,
    /// The init limit, in milliseconds.
    init_timeout_ms: AtomicU64,
    pub(super) shared: Shared,
    state: Mutex<State>,
    /// Wakes the maintenance task.
    maintenance: Arc<Notify>,
    shutdown: watch::Sender<bool>,
}

impl Pool {
    pub(super) fn new(
        launch: Launch,
        max: usize,
        min_warm: usize,
        idle_timeout: Duration,
        init_timeout: Duration,
    ) -> Arc<Self> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let pool = Arc::new(Self {
            launch,
            max,
            min_warm: min_warm.min(max),
            idle_timeout,
            init_timeout_ms: AtomicU64::new(millis(init_timeout)),
            shared: Shared {
                live: Arc::new(watch::channel(0).0),
                shutdown: shutdown_rx,
            },
            state: Mutex::new(State::default()),
            maintenance: Arc::new(Notify::new()),
            shutdown,
        });
        tokio::spawn(maintain(
            Arc::downgrade(&pool),
            pool.maintenance.clone(),
            pool.shared.shutdown.clone(),
        ));
        pool
    }

    /// See [`super::ProcessFunction::with_init_timeout`].
    pub(super) fn set_init_timeout(&self, init_timeout: Duration) {
        self.init_timeout_ms
            .store(millis(init_timeout), Ordering::Relaxed);
    }

    fn init_timeout(&self) -> Duration {
        Duration::from_millis(self.init_timeout_ms.load(Ordering::Relaxed))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // State changes are single assignments; a panic elsewhere must not wedge the pool.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Live processes (started, not yet reaped).
    pub(super) fn live(&self) -> usize {
        *self.shared.live.borrow()
    }

    /// A warm environment, a slot to start one in, or a place in the queue.
    pub(super) fn checkout(self: &Arc<Self>) -> Checkout {
        let mut dead = Vec::new();
        let checkout = {
            let mut state = self.state();
            if state.closed {
                return Checkout::Closed;
            }
            loop {
                match state.idle.pop() {
                    Some(idle) if idle.env.is_alive() => break Checkout::Warm(idle.env),
                    Some(idle) => dead.push(idle.env),
                    None if state.slots < self.max => {
                        state.slots += 1;
                        break Checkout::Start(Slot::new(self));
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        state.waiters.push_back(tx);
                        break Checkout::Wait(GrantReceiver {
                            rx,
                            pool: self.clone(),
                        });
                    }
                }
            }
        };
        // Dropped outside the lock; their slots were freed when their processes exited.
        drop(dead);
        checkout
    }

    /// Returns an environment after a finished invocation: to the oldest waiting caller, else
    /// to the idle list.
    pub(super) fn release(&self, env: Environment) {
        if !env.is_alive() {
            return; // its supervisor freed (or is freeing) its slot
        }
        let mut grant = Grant::Env(env);
        let mut state = self.state();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(grant) {
                Ok(()) => return,
                Err(back) => grant = back,
            }
        }
        let Grant::Env(env) = grant else {
            return; // only an environment was ever put in `grant`
        };
        if state.closed {
            drop(state);
            // Already gone is as good as stopped.
            env.stop(Stop::Terminate);
            return;
        }
        state.idle.push(Idle {
            env,
            since: Instant::now(),
        });
        if state.wake_at.is_none() && state.slots > self.min_warm {
            // The maintenance task sleeps with no timer: give it this expiry to wait for.
            // (At or below `min_warm` nothing is reaped, so it need not wake.)
            self.maintenance.notify_one();
        }
    }

    /// Puts back a grant its caller did not take.
    fn reclaim(&self, grant: Grant) {
        match grant {
            Grant::Env(env) => self.release(env),
            Grant::Start(slot) => drop(slot),
        }
    }

    /// A slot's process is gone (or never started): pass the capacity to the oldest waiting
    /// caller, else free it.
    fn slot_freed(self: &Arc<Self>, retiring: bool) {
        let mut state = self.state();
        if retiring {
            state.retiring = state.retiring.saturating_sub(1);
        }
        if !state.closed {
            while let Some(waiter) = state.waiters.pop_front() {
                match waiter.send(Grant::Start(Slot::new(self))) {
                    Ok(()) => return,
                    Err(Grant::Start(slot)) => slot.disarm(),
                    Err(Grant::Env(env)) => drop(env), // not reached: we sent a slot
                }
            }
        }
        state.slots = state.slots.saturating_sub(1);
        if state.slots < self.min_warm && !state.closed {
            self.maintenance.notify_one();
        }
    }

    /// Starts an environment in `slot` on a task of its own, so a caller that gives up (its
    /// deadline passed during init) leaves a healthy environment to the pool.
    pub(super) fn start(self: &Arc<Self>, slot: Slot) -> StartReceiver {
        let (tx, rx) = oneshot::channel();
        let pool = self.clone();
        tokio::spawn(async move {
            if pool.state().closed {
                return; // dropping the slot frees it
            }
            let started =
                Environment::start(&pool.launch, slot, &pool.shared, pool.init_timeout()).await;
            let started = started
                .map(|(env, init)| {
                    telemetry::init_duration(&pool.launch.function, init);
                    env
                })
                .inspect_err(|_| telemetry::init_failed(&pool.launch.function));
            if let Err(Ok(env)) = tx.send(started) {
                pool.release(env);
            }
        });
        StartReceiver {
            rx,
            pool: self.clone(),
        }
    }

    /// Marks the pool closed, fails waiting callers and stops every environment (SIGTERM, then
    /// SIGKILL after 2 s); returns once every process has been reaped (or after a bound).
    pub(super) async fn shutdown(&self) {
        let idle = {
            let mut state = self.state();
            state.closed = true;
            state.waiters.clear(); // their callers see the pool closed
            std::mem::take(&mut state.idle)
        };
        self.shutdown.send_replace(true);
        for idle in idle {
            idle.env.stop(Stop::Terminate);
        }
        let mut live = self.shared.live.subscribe();
        let bound = super::environment::SHUTDOWN_GRACE + Duration::from_secs(3);
        if tokio::time::timeout(bound, live.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                function = %self.launch.function,
                live = self.live(),
                "Execution environments still running after shutdown."
            );
        }
    }

    /// One maintenance pass: drop dead idle environments, reap those idle longer than
    /// `idle_timeout` (keeping `min_warm`), start environments up to `min_warm`. Returns when
    /// the next pass is due, if any timer is pending.
    fn maintain_once(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let mut stopping = Vec::new();
        let mut warm_slots = Vec::new();
        let next = {
            let mut state = self.state();
            if state.closed {
                return None;
            }
            let (alive, dead): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|i| i.env.is_alive());
            state.idle = alive;
            drop(dead);
            // Slots whose environments are not being reaped: what stays live.
            let mut keeping = state.slots.saturating_sub(state.retiring);
            while keeping > self.min_warm
                && state
                    .idle
                    .first()
                    .is_some_and(|i| i.since + self.idle_timeout <= now)
            {
                stopping.push(state.idle.remove(0).env);
                state.retiring += 1;
                keeping -= 1;
            }
            let mut next = state
                .idle
                .first()
                .filter(|_| keeping > self.min_warm)
                .map(|i| i.since + self.idle_timeout);
            if state.slots < self.min_warm {
                match state.warm_retry_at {
                    Some(at) if at > now => next = Some(next.map_or(at, |n| n.min(at))),
                    _ => {
                        while state.slots < self.min_warm {
                            state.slots += 1;
                            warm_slots.push(Slot::new(self));
                        }
                    }
                }
            }
            state.wake_at = next;
            next
        };
        for env in stopping {
            if !env.stop(Stop::Retire) {
                // Reaped already, its slot freed without the retiring mark: undo the count.
                let mut state = self.state();
                state.retiring = state.retiring.saturating_sub(1);
            }
        }
        for slot in warm_slots {
            let pool = self.clone();
            tokio::spawn(async move { pool.start_warm(slot).await });
        }
        next
    }

    /// Starts one `min_warm` environment and parks it idle.
    async fn start_warm(self: Arc<Self>, slot: Slot) {
        match Environment::start(&self.launch, slot, &self.shared, self.init_timeout()).await {
            Ok((env, init)) => {
                telemetry::init_duration(&self.launch.function, init);
                self.state().warm_backoff = Duration::ZERO;
                self.release(env);
            }
            Err(e) => {
                telemetry::init_failed(&self.launch.function);
                let mut state = self.state();
                state.warm_backoff = (state.warm_backoff * 2).clamp(WARM_BACKOFF, MAX_WARM_BACKOFF);
                state.warm_retry_at = Some(Instant::now() + state.warm_backoff);
                drop(state);
                tracing::warn!(
                    function = %self.launch.function,
                    error = ?e,
                    "Starting a warm execution environment failed."
                );
                self.maintenance.notify_one();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Lets the maintenance task see the pool is gone; idle environments die with `state`.
        self.maintenance.notify_one();
    }
}

/// A caller's end of an environment start. Dropping it leaves the environment to the pool.
#[derive(Debug)]
pub(super) struct StartReceiver {
    rx: oneshot::Receiver<Result<Environment, StartError>>,
    pool: Arc<Pool>,
}

impl StartReceiver {
    /// Waits for the environment; `None` if the pool shut down before it started.
    pub(super) async fn recv(&mut self) -> Option<Result<Environment, StartError>> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for StartReceiver {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(Ok(env)) = self.rx.try_recv() {
            self.pool.release(env);
        }
    }
}

/// The pool's timer: wakes for idle expiries, `min_warm` top-ups and retries. It holds only a
/// weak reference, so it ends with the pool.
async fn maintain(pool: Weak<Pool>, notify: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let next = match pool.upgrade() {
            Some(pool) => pool.maintain_once(),
            None => return,
        };
        tokio::select! {
            () = notify.notified() => {}
            () = sleep_until(next) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
