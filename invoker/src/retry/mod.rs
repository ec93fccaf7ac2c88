//! The async retry policy: whether and when a failed attempt is tried again (SEMANTICS.md §2).
//!
//! Classification lives in [`InvokeError::class`]; this module only turns a class, the event's
//! counters and its age into a decision:
//!
//! - function errors and timeouts: up to `max_retry_attempts` retries, after
//!   `retry_delay.base × 2^(n-1)` (Lambda: 1 min, then 2 min);
//! - throttles and system errors: retried with backoff from 1 s doubling to 5 min, without a
//!   count, until the event would be older than `max_event_age`;
//! - permanent errors: never retried.
//!
//! No retry is scheduled past the event's age budget: such an event fails with
//! [`FailureCondition::AgeExceeded`] instead of waiting for a retry it could not use.
//!
//! Every source's retries share [`Backoff`] and [`FailureCondition`]; the stream sources
//! (Kafka) keep their own retry loop because their partition waits in place.

use std::time::{Duration, SystemTime};

use impulse_config::FunctionConfig;

use crate::{ErrorClass, InvokeError};
pub use impulse_connectors::backoff::{Backoff, STREAM_BACKOFF, SYSTEM_BACKOFF};

/// Why an event's (or a record's) outcome became a failure, whatever its source. The
/// destination record spells it in the vocabulary of its shape (`RetriesExhausted` /
/// `EventAgeExceeded` for async invocations, `RetryAttemptsExhausted` /
/// `MaximumRecordAgeExceeded` for stream batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCondition {
    /// Retries ran out (or the error can never succeed, or the function can never be admitted).
    RetriesExhausted,
    /// The event or record grew older than its maximum age.
    AgeExceeded,
}

impl FailureCondition {
    /// A stable label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RetriesExhausted => "retries_exhausted",
            Self::AgeExceeded => "age_exceeded",
        }
    }
}

/// Whether an event enqueued at `since` is `max_age` old or older at `now`, and otherwise the
/// age budget it has left. The one age rule of async events and stream records.
pub fn remaining_age(since: SystemTime, max_age: Duration, now: SystemTime) -> Option<Duration> {
    let age = now.duration_since(since).unwrap_or_default();
    max_age.checked_sub(age).filter(|left| !left.is_zero())
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay; `function_retry` says it spends one of the function-error
    /// retries.
    Retry {
        /// How long to wait.
        after: Duration,
        /// True when the retry counts against `max_retry_attempts`.
        function_retry: bool,
    },
    /// Give up: the event goes to its on-failure destination.
    GiveUp(FailureCondition),
}

/// The retry settings of one function.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_retry_attempts: u32,
    /// Between function-error retries (`retry_delay`).
    function_backoff: Backoff,
    jitter: f64,
    max_event_age: Duration,
}

impl RetryPolicy {
    /// The policy `function` configures.
    pub fn new(function: &FunctionConfig) -> Self {
        Self {
            max_retry_attempts: function.max_retry_attempts,
            function_backoff: Backoff::new(function.retry_delay.base, function.retry_delay.max),
            jitter: function.retry_delay.jitter,
            max_event_age: function.max_event_age,
        }
    }

    /// The age after which an event is no longer tried.
    pub fn max_event_age(&self) -> Duration {
        self.max_event_age
    }

    /// Decides after a failed attempt. `function_retries` is the number of function-error
    /// retries already spent, `attempts` the number of attempts made (including this one),
    /// and `enqueued_at` when the event was accepted.
    pub fn decide(
        &self,
        error: &InvokeError,
        function_retries: u32,
        attempts: u32,
        enqueued_at: SystemTime,
        now: SystemTime,
    ) -> Decision {
        let (after, function_retry) = match error.class() {
            ErrorClass::Permanent => return Decision::GiveUp(FailureCondition::RetriesExhausted),
            ErrorClass::Function => {
                if function_retries >= self.max_retry_attempts {
                    return Decision::GiveUp(FailureCondition::RetriesExhausted);
                }
                (self.function_backoff.delay(function_retries), true)
            }
            ErrorClass::Throttle | ErrorClass::System => {
                let step = attempts.saturating_sub(function_retries).saturating_sub(1);
                (SYSTEM_BACKOFF.delay(step), false)
            }
        };
        let after = self.jittered(after);
        let age_at_retry = now.duration_since(enqueued_at).unwrap_or_default() + after;
        if age_at_retry >= self.max_event_age {
            return Decision::GiveUp(FailureCondition::AgeExceeded);
        }
        Decision::Retry {
            after,
            function_retry,
        }
    }

    /// Shortens `delay` by a random part of at most `jitter` of it.
    fn jittered(&self, delay: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return delay;
        }
        delay.mul_f64(1.0 - self.jitter * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn policy(max_retry_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_retry_attempts,
            function_backoff: Backoff::new(Duration::from_secs(60), Duration::from_secs(300)),
            jitter: 0.0,
            max_event_age: Duration::from_secs(6 * 3600),
        }
    }

    fn function_error() -> InvokeError {
        InvokeError::Function {
            error_type: "Unhandled".into(),
            payload: Bytes::new(),
        }
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn function_errors_follow_lambdas_delays_then_give_up() {
        let p = policy(2);
        assert_eq!(
            p.decide(&function_error(), 0, 1, T0, T0),
            Decision::Retry {
                after: Duration::from_secs(60),
                function_retry: true
            }
        );
        assert_eq!(
            p.decide(&function_error(), 1, 2, T0, T0),
            Decision::Retry {
                after: Duration::from_secs(120),
                function_retry: true
            }
        );
        assert_eq!(
            p.decide(&function_error(), 2, 3, T0, T0),
            Decision::GiveUp(FailureCondition::RetriesExhausted)
        );
        let timeout = InvokeError::Timeout {
            after: Duration::from_secs(3),
        };
        assert_eq!(
            p.decide(&timeout, 2, 3, T0, T0),
            Decision::GiveUp(FailureCondition::RetriesExhausted)
        );
    }

    #[test]
    fn zero_retries_gives_up_at_once() {
        assert_eq!(
            policy(0).decide(&function_error(), 0, 1, T0, T0),
            Decision::GiveUp(FailureCondition::RetriesExhausted)
        );
    }

    #[test]
    fn throttles_back_off_exponentially_without_spending_retries() {
        let p = policy(2);
        let delays: Vec<Duration> = (1..=12)
            .map(
                |attempts| match p.decide(&InvokeError::Throttled, 0, attempts, T0, T0) {
                    Decision::Retry {
                        after,
                        function_retry: false,
                    } => after,
                    other => panic!("unexpected {other:?}"),
                },
            )
            .collect();
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn system_errors_stop_at_the_event_age() {
        let p = policy(2);
        let system = InvokeError::System("reset".into());
        let now = T0 + Duration::from_secs(6 * 3600 - 10);
        assert_eq!(
            p.decide(&system, 0, 20, T0, now),
            Decision::GiveUp(FailureCondition::AgeExceeded)
        );
    }

    #[test]
    fn age_budget() {
        let max = Duration::from_secs(60);
        assert_eq!(remaining_age(T0, max, T0), Some(max));
        let later = T0 + Duration::from_secs(45);
        assert_eq!(remaining_age(T0, max, later), Some(Duration::from_secs(15)));
        assert_eq!(remaining_age(T0, max, T0 + max), None);
        // A clock that went backwards counts as age 0.
        assert_eq!(remaining_age(later, max, T0), Some(max));
    }

    #[test]
    fn permanent_errors_are_never_retried() {
        let err = InvokeError::Permanent {
            status: 400,
            message: String::new(),
        };
        assert_eq!(
            policy(2).decide(&err, 0, 1, T0, T0),
            Decision::GiveUp(FailureCondition::RetriesExhausted)
        );
    }

    #[test]
    fn jitter_only_shortens() {
        let mut p = policy(2);
        p.jitter = 0.5;
        for _ in 0..100 {
            match p.decide(&function_error(), 0, 1, T0, T0) {
                Decision::Retry { after, .. } => {
                    assert!(after <= Duration::from_secs(60) && after >= Duration::from_secs(30));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}
