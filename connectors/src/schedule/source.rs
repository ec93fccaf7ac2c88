//! The schedule source loop: ticks, flexible windows, overlap, catch-up and the state record.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use futures::FutureExt;
use impulse_config::{CatchUp, Overlap, ScheduleExpression, ScheduleTriggerConfig};
use rand::Rng;

use super::clock::{SystemWallClock, WallClock};
use super::event::{encode_scheduled_event, event_id};
use super::handler::{Handled, TickHandler};
use super::state::ScheduleState;
use crate::backoff::STREAM_BACKOFF;
use crate::contract::{Ack, AckStatus, QueuedEvent, SourceError};
use crate::telemetry;

/// The longest single timer sleep. Ticks are wall-clock times, and a monotonic timer drifts
/// from the wall clock (NTP steps, a suspended host), so a long wait is cut into pieces, each
/// re-reading the clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How many missed ticks a catch-up scan walks one by one before it gives up counting exactly
/// (about 70 days of a once-a-minute schedule).
const MAX_SCAN: u64 = 100_000;

/// Past [`MAX_SCAN`], the scan jumps to this long before now: enough for the newest ticks that
/// catch-up fires, at the cost of an undercounted `skipped` metric.
const SCAN_FALLBACK_WINDOW: TimeDelta = TimeDelta::days(7);

// === ScheduleSource ===

/// A schedule trigger: one EventBridge scheduled event per tick of its expression.
///
/// - Ticks are computed in the trigger's time zone and waited for with tokio timers against a
///   [`WallClock`] ([`SystemWallClock`] unless [`ScheduleSource::with_clock`] says otherwise). An
///   event's `time` and `id` are its tick's, whenever it fires, so a repeated fire of one tick
///   is recognisable (SEMANTICS.md §4).
/// - `flexible_window`: each tick fires at a uniformly random delay in `[0, window)` after it.
/// - `overlap = "skip"`: a tick whose turn comes while the previous event's [`Ack`] is still
///   open is skipped and counted; `allow` fires regardless.
/// - Each tick's event goes to the [`TickHandler`], which queues it durably for asynchronous
///   invocation, so the schedule need not wait for the function. Once the handler has resolved,
///   the newest tick handled so far (fired or skipped, with every earlier one handled too) is
///   recorded in the [`ScheduleState`]. A crash between the two fires that tick again after a
///   restart, with the same id: delivery is at least once, and the id is the idempotency key.
///   A tick the handler could not queue is retried with [`STREAM_BACKOFF`] until it is queued
///   (or shutdown comes); it is never recorded before that, and later ticks wait behind it.
/// - On start, ticks missed since the recorded one follow `catch_up`: `none` skips them,
///   `latest` fires the newest, `all` fires the newest `catch_up_limit` in order (counted
///   `caught_up`; the rest `skipped`). Without a record, the first tick is the next one to
///   come, and the start time is recorded so that a crash before it still catches up. Ticks
///   that pass while the loop is held up (backpressure) follow the same policy, except that the
///   newest of them fires as a regular tick. Ticks waiting in a flexible window at shutdown are
///   not recorded: the next start sees them as missed.
/// - Several instances sharing one schedule each run this source over every tick; the handler
///   claims each tick where the instances share their queue, so exactly one of them queues it
///   ([`Handled::ClaimedElsewhere`] for the others, which record it as handled all the same),
///   and the state is shared too, so that catch-up starts from the newest tick any of them
///   recorded.
pub struct ScheduleSource {
    name: String,
    config: ScheduleTriggerConfig,
    state: Arc<dyn ScheduleState>,
    clock: Arc<dyn WallClock>,
}

impl ScheduleSource {
    /// A source for the schedule trigger `name`, remembering its ticks in `state`.
    pub fn new(name: String, config: ScheduleTriggerConfig, state: Arc<dyn ScheduleState>) -> Self {
        Self {
            name,
            config,
            state,
            clock: Arc::new(SystemWallClock),
        }
    }

    /// Replaces the wall clock, e.g. with a [`TokioWallClock`](super::TokioWallClock) in tests.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Runs until `shutdown` resolves, handing each tick's event to `handler`. A tick whose
    /// hand-off is cut short by shutdown is not recorded: the next start sees it as missed. An
    /// error means an event could not be encoded.
    pub async fn run(
        self,
        handler: Arc<dyn TickHandler>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SourceError> {
        Driver::new(self, handler).run(Box::pin(shutdown)).await
    }
}

impl fmt::Debug for ScheduleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleSource")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === Driver ===

/// Why the loop stopped early.
enum Stop {
    /// The shutdown signal resolved: a clean stop.
    Shutdown,
    /// An event could not be encoded (it cannot happen with a JSON `detail`).
    Encode(serde_json::Error),
}

/// Whether a tick fires on time or as catch-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The tick's turn came while the source ran.
    Regular,
    /// A tick missed while the source was down or held up.
    CaughtUp,
}

impl Kind {
    fn metric(self) -> &'static str {
        match self {
            Self::Regular => "fired",
            Self::CaughtUp => "caught_up",
        }
    }
}

/// A tick waiting to fire. Ordered by firing time first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    fire_at: DateTime<Utc>,
    tick: DateTime<Utc>,
    kind: Kind,
}

/// The ticks taken from the schedule and not yet recorded, oldest first.
///
/// With a flexible window ticks can fire out of order; the recorded tick MUST have every
/// earlier tick handled, so it is the newest of the handled prefix.
#[derive(Debug, Default)]
struct Ledger {
    ticks: VecDeque<(DateTime<Utc>, bool)>,
}

impl Ledger {
    fn push(&mut self, tick: DateTime<Utc>) {
        self.ticks.push_back((tick, false));
    }

    fn done(&mut self, tick: DateTime<Utc>) {
        if let Some(entry) = self.ticks.iter_mut().find(|(t, _)| *t == tick) {
            entry.1 = true;
        }
    }

    /// Pops the handled prefix and returns its newest tick, if the prefix was not empty.
    fn advance(&mut self) -> Option<DateTime<Utc>> {
        let mut newest = None;
        while let Some(&(tick, true)) = self.ticks.front() {
            newest = Some(tick);
            self.ticks.pop_front();
        }
        newest
    }
}

/// The ticks in a time range: the newest few, and how many there were.
#[derive(Debug)]
struct Scan {
    kept: VecDeque<DateTime<Utc>>,
    total: u64,
}

struct Driver {
    name: String,
    function: String,
    expression: ScheduleExpression,
    tz: Tz,
    window: Option<Duration>,
    catch_up: CatchUp,
    catch_up_limit: usize,
    overlap: Overlap,
    detail: serde_json::Value,
    state: Arc<dyn ScheduleState>,
    clock: Arc<dyn WallClock>,
    handler: Arc<dyn TickHandler>,
    /// The newest tick taken from the schedule (queued to fire, fired or skipped).
    cursor: DateTime<Utc>,
    /// The tick after `cursor`; `None` once the schedule has no more (`at()`, a cron year).
    next_tick: Option<DateTime<Utc>>,
    pending: BinaryHeap<Reverse<Pending>>,
    ledger: Ledger,
    /// The status of the newest fired event while it may still be open (`overlap = "skip"`).
    previous: Option<BoxFuture<'static, AckStatus>>,
}

impl Driver {
    fn new(source: ScheduleSource, handler: Arc<dyn TickHandler>) -> Self {
        let ScheduleSource {
            name,
            config,
            state,
            clock,
        } = source;
        let cursor = clock.now();
        Self {
            tz: config.tz(),
            detail: config.detail(),
            expression: config.expression,
            window: config.flexible_window,
            catch_up: config.catch_up,
            catch_up_limit: usize::try_from(config.catch_up_limit).unwrap_or(usize::MAX),
            overlap: config.overlap,
            function: config.function,
            name,
            state,
            clock,
            handler,
            cursor,
            next_tick: None,
            pending: BinaryHeap::new(),
            ledger: Ledger::default(),
            previous: None,
        }
    }

    async fn run(mut self, mut shutdown: BoxFuture<'_, ()>) -> Result<(), SourceError> {
        let Some(last) = self.read_state(&mut shutdown).await else {
            return Ok(());
        };
        self.start(last).await;
        match self.drive(&mut shutdown).await {
            Stop::Shutdown => {
                tracing::debug!(trigger = %self.name, "Schedule stopped.");
                Ok(())
            }
            Stop::Encode(err) => Err(self.error(format!("cannot encode an event: {err}"))),
        }
    }

    fn error(&self, message: String) -> SourceError {
        SourceError {
            trigger: self.name.clone(),
            message,
        }
    }

    /// The recorded tick, read again with [`STREAM_BACKOFF`] while the state cannot be read:
    /// planning without it could skip missed ticks or fire recorded ones. `None` on shutdown.
    // `&mut self` rather than `&self` across the awaits: the driver is `Send` but not `Sync`.
    async fn read_state(
        &mut self,
        shutdown: &mut BoxFuture<'_, ()>,
    ) -> Option<Option<DateTime<Utc>>> {
        let mut failures = 0;
        loop {
            let read = tokio::select! {
                biased;
                () = &mut *shutdown => return None,
                read = self.state.last_fired(&self.name) => read,
            };
            let err = match read {
                Ok(last) => return Some(last),
                Err(err) => err,
            };
            let delay = STREAM_BACKOFF.delay(failures);
            failures = failures.saturating_add(1);
            tracing::error!(
                trigger = %self.name,
                error = %err,
                retry_in = ?delay,
                "Cannot read the schedule's last tick; retrying."
            );
            tokio::select! {
                biased;
                () = &mut *shutdown => return None,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Plans the first ticks: catch-up from the recorded tick `last`, or the next tick to come.
    async fn start(&mut self, last: Option<DateTime<Utc>>) {
        let now = self.clock.now();
        match last {
            None => {
                // Recording the start makes ticks missed before the first fire catchable.
                self.cursor = now;
                self.record(now).await;
            }
            // The clock is behind the record: never fire a tick at or before the recorded one.
            Some(last) if last >= now => self.cursor = last,
            Some(last) => {
                let keep = match self.catch_up {
                    CatchUp::None => 0,
                    CatchUp::Latest => 1,
                    CatchUp::All => self.catch_up_limit,
                };
                let scan = self.scan(last, now, keep);
                let kept = scan.kept.len() as u64;
                if scan.total > 0 {
                    tracing::info!(
                        trigger = %self.name,
                        missed = scan.total,
                        catching_up = kept,
                        "Schedule missed ticks while stopped."
                    );
                }
                self.count_skipped(scan.total - kept);
                for tick in scan.kept.iter().copied() {
                    self.plan(tick, tick, Kind::CaughtUp);
                }
                self.cursor = now;
                if kept == 0 && scan.total > 0 {
                    self.record(now).await;
                }
            }
        }
        self.next_tick = self.next_after(self.cursor);
        tracing::info!(
            trigger = %self.name,
            expression = %self.expression,
            timezone = %self.tz,
            next_tick = ?self.next_tick,
            "Schedule started."
        );
    }

    /// The loop. Biased toward shutdown, then due fires, then the timer.
    async fn drive(&mut self, shutdown: &mut BoxFuture<'_, ()>) -> Stop {
        loop {
            let now = self.clock.now();
            if self.next_tick.is_some_and(|tick| tick <= now) {
                self.take_due_ticks(now);
            }
            if let Some(due) = self.pop_due(now) {
                if let Err(stop) = self.fire_or_skip(due, shutdown).await {
                    return stop;
                }
                // Firing may have waited (backpressure, a previous ack): read the clock again.
                continue;
            }
            let wake = match (self.pending.peek(), self.next_tick) {
                (Some(Reverse(pending)), Some(tick)) => pending.fire_at.min(tick),
                (Some(Reverse(pending)), None) => pending.fire_at,
                (None, Some(tick)) => tick,
                (None, None) => {
                    // An `at()` that has fired, or a cron whose years ran out: nothing to do.
                    tracing::info!(trigger = %self.name, "Schedule has no more ticks.");
                    shutdown.await;
                    return Stop::Shutdown;
                }
            };
            let delay = (wake - now).to_std().unwrap_or_default().min(MAX_SLEEP);
            tokio::select! {
                // Shutdown first: a stopping broker must not see one more event.
                biased;
                () = &mut *shutdown => return Stop::Shutdown,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Queues every tick whose time has come. If more than one has (the loop was held up), the
    /// newest fires as a regular tick and the older ones follow `catch_up`.
    fn take_due_ticks(&mut self, now: DateTime<Utc>) {
        let keep = match self.catch_up {
            CatchUp::All => self.catch_up_limit.saturating_add(1),
            CatchUp::None | CatchUp::Latest => 1,
        };
        let mut scan = self.scan(self.cursor, now, keep);
        let Some(current) = scan.kept.pop_back() else {
            return;
        };
        let missed = scan.total - 1;
        if missed > 0 {
            tracing::warn!(
                trigger = %self.name,
                missed,
                catching_up = scan.kept.len(),
                "Schedule fell behind its ticks."
            );
        }
        self.count_skipped(missed - scan.kept.len() as u64);
        for tick in scan.kept.iter().copied() {
            self.plan(tick, tick, Kind::CaughtUp);
        }
        let fire_at = self.fire_time(current);
        self.plan(current, fire_at, Kind::Regular);
        self.cursor = current;
        self.next_tick = self.next_after(current);
    }

    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Pending> {
        match self.pending.peek() {
            Some(Reverse(pending)) if pending.fire_at <= now => {
                self.pending.pop().map(|Reverse(pending)| pending)
            }
            _ => None,
        }
    }

    async fn fire_or_skip(
        &mut self,
        due: Pending,
        shutdown: &mut BoxFuture<'_, ()>,
    ) -> Result<(), Stop> {
        if self.overlap == Overlap::Skip {
            if let Some(mut previous) = self.previous.take() {
                match due.kind {
                    // Polling once is exact: a resolved or dropped ack is seen at once.
                    Kind::Regular => {
                        if previous.as_mut().now_or_never().is_none() {
                            self.previous = Some(previous);
                            self.skip(due.tick).await;
                            return Ok(());
                        }
                    }
                    // Catch-up is a backlog, not an overlap: it runs one tick after the other.
                    Kind::CaughtUp => {
                        tokio::select! {
                            biased;
                            () = &mut *shutdown => return Err(Stop::Shutdown),
                            _status = previous => {}
                        }
                    }
                }
            }
        }
        self.fire(due, shutdown).await
    }

    async fn fire(&mut self, due: Pending, shutdown: &mut BoxFuture<'_, ()>) -> Result<(), Stop> {
        let payload =
            encode_scheduled_event(&self.name, due.tick, &self.detail).map_err(Stop::Encode)?;
        let mut event = QueuedEvent::new(
            event_id(&self.name, due.tick).into(),
            self.function.clone(),
            self.name.clone(),
            payload,
        );
        // The event's age (`max_event_age`) counts from the fire, on the schedule's clock.
        event.enqueued_at = SystemTime::from(self.clock.now());
        let mut failures = 0;
        let (handled, receiver) = loop {
            let (ack, receiver) = Ack::new();
            let queued = tokio::select! {
                // A hand-off stuck on a slow queue, or waiting to be retried, still yields to
                // shutdown. The tick stays unrecorded, so the next start sees it missed (or
                // fires it again, same id).
                biased;
                () = &mut *shutdown => return Err(Stop::Shutdown),
                queued = self.handler.handle(event.clone(), ack) => queued,
            };
            let err = match queued {
                Ok(handled) => break (handled, receiver),
                Err(err) => err,
            };
            let delay = STREAM_BACKOFF.delay(failures);
            failures = failures.saturating_add(1);
            tracing::error!(
                trigger = %self.name,
                tick = %due.tick,
                error = %err,
                retry_in = ?delay,
                "Cannot queue a schedule tick; retrying."
            );
            tokio::select! {
                biased;
                () = &mut *shutdown => return Err(Stop::Shutdown),
                () = tokio::time::sleep(delay) => {}
            }
        };
        match handled {
            Handled::Queued => {
                telemetry::schedule_tick(&self.name, due.kind.metric());
                tracing::debug!(
                    trigger = %self.name,
                    tick = %due.tick,
                    kind = ?due.kind,
                    "Schedule fired."
                );
                if self.overlap == Overlap::Skip {
                    self.previous = Some(Box::pin(receiver.status()));
                }
            }
            Handled::ClaimedElsewhere => {
                telemetry::schedule_tick(&self.name, "claimed_elsewhere");
                tracing::debug!(
                    trigger = %self.name,
                    tick = %due.tick,
                    "Schedule tick was fired by another instance."
                );
            }
        }
        self.ledger.done(due.tick);
        self.record_handled().await;
        Ok(())
    }

    async fn skip(&mut self, tick: DateTime<Utc>) {
        tracing::debug!(
            trigger = %self.name,
            %tick,
            "Schedule skipped a tick: the previous event is still in flight."
        );
        self.count_skipped(1);
        self.ledger.done(tick);
        self.record_handled().await;
    }

    /// Takes `tick` from the schedule, to fire at `fire_at`.
    fn plan(&mut self, tick: DateTime<Utc>, fire_at: DateTime<Utc>, kind: Kind) {
        self.ledger.push(tick);
        self.pending.push(Reverse(Pending {
            fire_at,
            tick,
            kind,
        }));
    }

    async fn record_handled(&mut self) {
        if let Some(tick) = self.ledger.advance() {
            self.record(tick).await;
        }
    }

    async fn record(&mut self, tick: DateTime<Utc>) {
        if let Err(err) = self.state.record_fired(&self.name, tick).await {
            tracing::warn!(
                trigger = %self.name,
                error = %err,
                "Could not record the schedule's last tick; a restart may fire it again."
            );
        }
    }

    fn count_skipped(&self, count: u64) {
        for _ in 0..count {
            telemetry::schedule_tick(&self.name, "skipped");
        }
    }

    /// The tick plus a uniformly random delay in `[0, flexible_window)`, in whole milliseconds
    /// (tokio's timer resolution).
    fn fire_time(&self, tick: DateTime<Utc>) -> DateTime<Utc> {
        let millis = self.window.map_or(0, |window| {
            u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
        });
        if millis == 0 {
            return tick;
        }
        let delay = rand::rng().random_range(0..millis);
        i64::try_from(delay)
            .ok()
            .and_then(TimeDelta::try_milliseconds)
            .and_then(|delay| tick.checked_add_signed(delay))
            .unwrap_or(tick)
    }

    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.expression
            .next_after(after.with_timezone(&self.tz))
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The ticks in `(after, until]`: how many, and the newest `keep` of them, oldest first.
    fn scan(&self, after: DateTime<Utc>, until: DateTime<Utc>, keep: usize) -> Scan {
        let mut cursor = after;
        let mut kept = VecDeque::new();
        let mut total = 0_u64;
        while let Some(tick) = self.next_after(cursor) {
            if tick > until {
                break;
            }
            total += 1;
            kept.push_back(tick);
            if kept.len() > keep {
                kept.pop_front();
            }
            cursor = tick;
            if total == MAX_SCAN {
                if let Some(floor) = until.checked_sub_signed(SCAN_FALLBACK_WINDOW) {
                    if cursor < floor {
                        tracing::warn!(
                            trigger = %self.name,
                            from = %cursor,
                            to = %floor,
                            "Schedule missed too many ticks to count; skipping ahead."
                        );
                        cursor = floor;
                    }
                }
            }
        }
        Scan { kept, total }
    }
}
