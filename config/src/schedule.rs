//! EventBridge schedule expressions: `rate(…)`, `cron(…)` and `at(…)` (SEMANTICS.md §4).
//!
//! Cron expressions are translated to croner syntax and parsed by croner; nothing here parses cron
//! fields by hand. EventBridge's six fields `minutes hours day-of-month month day-of-week year`
//! become croner's seven-field form `0 minutes hours day-of-month month day-of-week year` (seconds
//! fixed at 0, year required), parsed in croner's Quartz weekday mode, where `1`–`7` and
//! `SUN`–`SAT` mean Sunday to Saturday exactly as in EventBridge.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `at()` date-time format: local time in the schedule's time zone, no offset.
const AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// How many croner candidates `next_after` examines before giving up. Each skipped candidate is
/// a tick inside a DST gap or the second pass of a repeated hour, so a handful suffices; the
/// bound only guarantees termination.
const MAX_CRON_CANDIDATES: usize = 1_000;

/// When a schedule trigger fires, written as in EventBridge.
///
/// - `rate(<value> <unit>)`: every `value` minutes, hours or days; `value` is a positive integer
///   and the unit is singular exactly when the value is 1 (`rate(1 hour)`, `rate(5 hours)`).
///   Impulse extension beyond EventBridge (whose shortest rate is one minute): the unit may also
///   be `second(s)`, down to `rate(1 second)`.
///   Ticks are aligned to the Unix epoch in UTC (a tick whenever the seconds since
///   1970-01-01T00:00:00Z are a multiple of the period), so every replica computes the same
///   ticks whatever its start time; `rate(1 day)` fires at 00:00 UTC, 24 h apart across DST.
/// - `cron(<minutes> <hours> <day-of-month> <month> <day-of-week> <year>)`: the six EventBridge
///   fields, evaluated in the trigger's time zone. Exactly one of day-of-month and day-of-week
///   is `?`; day-of-week `1`–`7` is `SUN`–`SAT`; `L`, `W` and `#` as EventBridge. Local times
///   that do not exist (spring forward) are skipped, repeated ones (fall back) fire once.
/// - `at(yyyy-mm-ddThh:mm:ss)`: once, at that local time in the trigger's time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
// The variants are the public shape the broker matches on; there is one value per schedule
// trigger, so boxing the croner pattern would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ScheduleExpression {
    /// `rate(…)`: a fixed period, a whole number of seconds (of minutes in EventBridge).
    Rate(Duration),
    /// `cron(…)`.
    Cron {
        /// The expression as written, e.g. `cron(0 10 * * ? *)`.
        source: String,
        /// The translated croner schedule (seconds field `0`, Quartz weekdays, year field).
        cron: Cron,
    },
    /// `at(…)`: a one-time schedule, a local time in the trigger's time zone.
    At(NaiveDateTime),
}

/// Why a schedule expression is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not of the form `rate(…)`, `cron(…)` or `at(…)`.
    #[error(
        "expected rate(<value> <unit>), cron(<6 fields>) or at(yyyy-mm-ddThh:mm:ss), got \"{0}\""
    )]
    Syntax(String),
    /// A `rate()` expression breaking EventBridge's rules.
    #[error("invalid rate expression: {0}")]
    Rate(Cow<'static, str>),
    /// A `cron()` expression breaking EventBridge's rules or rejected by croner.
    #[error("invalid cron expression: {0}")]
    Cron(String),
    /// An `at()` expression that is not `yyyy-mm-ddThh:mm:ss`.
    #[error("invalid at expression: expected at(yyyy-mm-ddThh:mm:ss): {0}")]
    At(String),
}

// === impl ScheduleExpression ===

impl ScheduleExpression {
    /// The first tick strictly after `after`.
    ///
    /// `after` MUST be expressed in the schedule's time zone ([`crate::ScheduleTriggerConfig::tz`]):
    /// cron fields and `at()` are read as local times in that zone. Returns `None` when no tick
    /// remains: an `at()` time already past (or falling in a DST gap), or a cron expression whose
    /// year field has run out.
    pub fn next_after(&self, after: DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Self::Rate(period) => next_rate_tick(*period, &after),
            Self::Cron { cron, .. } => next_cron_tick(cron, &after),
            Self::At(local) => {
                let at = match after.timezone().from_local_datetime(local) {
                    LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at,
                    LocalResult::None => return None,
                };
                (at > after).then_some(at)
            }
        }
    }

    /// The period of a `rate()` expression.
    pub fn period(&self) -> Option<Duration> {
        match self {
            Self::Rate(period) => Some(*period),
            _ => None,
        }
    }
}

fn next_rate_tick(period: Duration, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    let period = i64::try_from(period.as_secs()).ok().filter(|p| *p > 0)?;
    let now = after.timestamp();
    // `timestamp()` floors, so the next multiple of the period is strictly after `after`.
    let next = now.div_euclid(period).checked_add(1)?.checked_mul(period)?;
    let next = Utc.timestamp_opt(next, 0).single()?;
    Some(next.with_timezone(&after.timezone()))
}

fn next_cron_tick(cron: &Cron, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    let tz = after.timezone();
    let mut cursor = *after;
    for _ in 0..MAX_CRON_CANDIDATES {
        let candidate = cron.find_next_occurrence(&cursor, false).ok()?;
        let keep = match tz.from_local_datetime(&candidate.naive_local()) {
            // croner moves a fixed-time tick that falls in a DST gap to just after the gap;
            // EventBridge skips it. Such a moved tick no longer matches the pattern.
            LocalResult::Single(_) => cron.is_time_matching(&candidate).unwrap_or(false),
            // In a repeated (fall back) hour, fire on the first pass only.
            LocalResult::Ambiguous(first, _) => candidate == first,
            LocalResult::None => false,
        };
        if keep {
            return Some(candidate);
        }
        cursor = candidate;
    }
    None
}

impl FromStr for ScheduleExpression {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(inner) = inner("rate(") {
            parse_rate(inner).map(Self::Rate)
        } else if let Some(inner) = inner("cron(") {
            Ok(Self::Cron {
                source: text.to_owned(),
                cron: parse_cron(inner)?,
            })
        } else if let Some(inner) = inner("at(") {
            NaiveDateTime::parse_from_str(inner, AT_FORMAT)
                .map(Self::At)
                .map_err(|err| ScheduleError::At(err.to_string()))
        } else {
            Err(ScheduleError::Syntax(text.to_owned()))
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, ScheduleError> {
    let err = |msg: &'static str| ScheduleError::Rate(Cow::Borrowed(msg));
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err("expected rate(<value> <unit>), e.g. rate(5 minutes)"));
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the value must be a positive integer"));
    }
    let value: u64 = value
        .parse()
        .map_err(|_| err("the value must be a positive integer"))?;
    if value == 0 {
        return Err(err("the value must be a positive integer"));
    }
    let (seconds, singular) = match unit {
        // Sub-minute rates are an Impulse extension: EventBridge's shortest rate is 1 minute.
        "second" => (1, true),
        "seconds" => (1, false),
        "minute" => (60, true),
        "minutes" => (60, false),
        "hour" => (3_600, true),
        "hours" => (3_600, false),
        "day" => (86_400, true),
        "days" => (86_400, false),
        _ => {
            return Err(err(
                "the unit must be second(s), minute(s), hour(s) or day(s)",
            ))
        }
    };
    if singular != (value == 1) {
        return Err(ScheduleError::Rate(Cow::Owned(if singular {
            format!("use the plural unit for a value of {value}: rate({value} {unit}s)")
        } else {
            let singular = unit.trim_end_matches('s');
            format!("use the singular unit for a value of 1: rate(1 {singular})")
        })));
    }
    value
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| err("the period is too long"))
}

fn parse_cron(inner: &str) -> Result<Cron, ScheduleError> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    let [minutes, hours, dom, month, dow, year] = fields[..] else {
        return Err(ScheduleError::Cron(format!(
            "expected 6 fields (minutes hours day-of-month month day-of-week year), got {}",
            fields.len()
        )));
    };
    match (dom == "?", dow == "?") {
        (true, false) | (false, true) => {}
        (true, true) => {
            return Err(ScheduleError::Cron(
                "only one of day-of-month and day-of-week can be `?`".to_owned(),
            ))
        }
        (false, false) if dom == "*" && dow == "*" => {
            return Err(ScheduleError::Cron(
                "`*` cannot be used in both day-of-month and day-of-week; use `?` in one of them"
                    .to_owned(),
            ))
        }
        (false, false) => {
            return Err(ScheduleError::Cron(
                "one of day-of-month and day-of-week must be `?`".to_owned(),
            ))
        }
    }
    // EventBridge's bare `L` in day-of-week is the last day of the week, Saturday (7 in Quartz
    // weekday mode); croner reads a bare `L` there differently.
    let dow = if dow.eq_ignore_ascii_case("L") {
        "7"
    } else {
        dow
    };
    let pattern = format!("0 {minutes} {hours} {dom} {month} {dow} {year}");
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        // EventBridge numbers weekdays 1-7 from Sunday, as Quartz does.
        .alternative_weekdays(true)
        // EventBridge writes steps from a start value, e.g. `0/15`.
        .sloppy_ranges(true)
        .build()
        .parse(&pattern)
        .map_err(|err| ScheduleError::Cron(err.to_string()))
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rate(period) => {
                let secs = period.as_secs();
                let (value, unit) = if secs % 86_400 == 0 {
                    (secs / 86_400, "day")
                } else if secs % 3_600 == 0 {
                    (secs / 3_600, "hour")
                } else if secs % 60 == 0 {
                    (secs / 60, "minute")
                } else {
                    (secs, "second")
                };
                let plural = if value == 1 { "" } else { "s" };
                write!(f, "rate({value} {unit}{plural})")
            }
            Self::Cron { source, .. } => f.write_str(source),
            Self::At(at) => write!(f, "at({})", at.format(AT_FORMAT)),
        }
    }
}

impl Serialize for ScheduleExpression {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScheduleExpression {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ScheduleExpression {
    fn schema_name() -> Cow<'static, str> {
        "ScheduleExpression".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "EventBridge schedule expression: rate(<value> <unit>), \
                cron(<minutes> <hours> <day-of-month> <month> <day-of-week> <year>) or \
                at(yyyy-mm-ddThh:mm:ss). Impulse extension: rate() also takes second(s).",
            "pattern": r"^\s*(rate|cron|at)\(.*\)\s*$",
            "examples": ["rate(5 minutes)", "cron(0 10 * * ? *)", "at(2026-12-01T09:00:00)"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn expr(text: &str) -> ScheduleExpression {
        text.parse()
            .unwrap_or_else(|err| panic!("{text} should parse: {err}"))
    }

    fn utc(text: &str) -> DateTime<Tz> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamp")
            .with_timezone(&Tz::UTC)
    }

    fn next(expression: &ScheduleExpression, after: DateTime<Tz>) -> DateTime<Tz> {
        expression
            .next_after(after)
            .expect("schedule has a next tick")
    }

    #[test]
    fn rate_singular_and_plural() {
        assert_eq!(
            expr("rate(1 minute)").period(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            expr("rate(5 minutes)").period(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            expr("rate(1 hour)").period(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            expr("rate(2 days)").period(),
            Some(Duration::from_secs(172_800))
        );
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(1 hours)",
            "rate(2 day)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(1.5 hours)",
            "rate(5 weeks)",
            "rate(1 seconds)",
            "rate(10 second)",
            "rate(0 seconds)",
            "rate(5)",
            "rate(5 minutes extra)",
        ] {
            assert!(
                matches!(
                    bad.parse::<ScheduleExpression>(),
                    Err(ScheduleError::Rate(_))
                ),
                "{bad} should be rejected"
            );
        }
        let err = "rate(1 hours)".parse::<ScheduleExpression>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid rate expression: use the singular unit for a value of 1: rate(1 hour)"
        );
        assert_eq!(expr("rate(5 minutes)").to_string(), "rate(5 minutes)");
        assert_eq!(expr("rate(1 day)").to_string(), "rate(1 day)");
    }

    #[test]
    fn sub_minute_rates_are_an_impulse_extension() {
        assert_eq!(
            expr("rate(1 second)").period(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            expr("rate(10 seconds)").period(),
            Some(Duration::from_secs(10))
        );
        assert_eq!(expr("rate(10 seconds)").to_string(), "rate(10 seconds)");
        assert_eq!(expr("rate(1 second)").to_string(), "rate(1 second)");
        // A whole number of minutes reads back in minutes, whatever unit it was written in.
        assert_eq!(expr("rate(120 seconds)").to_string(), "rate(2 minutes)");
        let every10 = expr("rate(10 seconds)");
        assert_eq!(
            next(&every10, utc("2026-01-01T09:00:03Z")),
            utc("2026-01-01T09:00:10Z")
        );
        assert_eq!(
            next(&every10, utc("2026-01-01T09:00:10Z")),
            utc("2026-01-01T09:00:20Z")
        );
    }

    #[test]
    fn rate_ticks_align_to_the_epoch() {
        let every5 = expr("rate(5 minutes)");
        assert_eq!(
            next(&every5, utc("2026-01-01T09:02:10Z")),
            utc("2026-01-01T09:05:00Z")
        );
        // Strictly after: a tick is not its own successor.
        assert_eq!(
            next(&every5, utc("2026-01-01T09:05:00Z")),
            utc("2026-01-01T09:10:00Z")
        );
        let daily = expr("rate(1 day)");
        let berlin: Tz = "Europe/Berlin".parse().expect("known zone");
        let after = utc("2026-03-28T12:00:00Z").with_timezone(&berlin);
        let first = next(&daily, after);
        let second = next(&daily, first);
        assert_eq!(first, utc("2026-03-29T00:00:00Z"));
        assert_eq!(second - first, chrono::Duration::hours(24));
    }

    #[test]
    fn cron_daily() {
        let daily = expr("cron(0 10 * * ? *)");
        assert_eq!(
            next(&daily, utc("2026-01-01T09:00:00Z")),
            utc("2026-01-01T10:00:00Z")
        );
        assert_eq!(
            next(&daily, utc("2026-01-01T10:00:00Z")),
            utc("2026-01-02T10:00:00Z")
        );
        let quarter = expr("cron(0/15 * * * ? *)");
        assert_eq!(
            next(&quarter, utc("2026-01-01T09:01:00Z")),
            utc("2026-01-01T09:15:00Z")
        );
    }

    #[test]
    fn cron_weekdays() {
        let weekdays = expr("cron(0 18 ? * MON-FRI *)");
        // 2026-01-02 is a Friday.
        let fri = next(&weekdays, utc("2026-01-02T12:00:00Z"));
        assert_eq!(fri, utc("2026-01-02T18:00:00Z"));
        let mon = next(&weekdays, fri);
        assert_eq!(mon, utc("2026-01-05T18:00:00Z"));
        assert_eq!(mon.weekday(), Weekday::Mon);

        // EventBridge numbers weekdays from 1 = Sunday.
        let sunday = expr("cron(0 12 ? * 1 *)");
        let tick = next(&sunday, utc("2026-01-01T00:00:00Z"));
        assert_eq!(tick, utc("2026-01-04T12:00:00Z"));
        assert_eq!(tick.weekday(), Weekday::Sun);
        let saturday = expr("cron(0 12 ? * 7 *)");
        assert_eq!(
            next(&saturday, utc("2026-01-01T00:00:00Z")).weekday(),
            Weekday::Sat
        );
        let sun_name = expr("cron(0 12 ? * SUN *)");
        assert_eq!(next(&sun_name, utc("2026-01-01T00:00:00Z")), tick);

        // `3#2`: second Tuesday; `5L`: last Thursday.
        let second_tuesday = expr("cron(0 9 ? * 3#2 *)");
        assert_eq!(
            next(&second_tuesday, utc("2026-01-01T00:00:00Z")),
            utc("2026-01-13T09:00:00Z")
        );
        let last_thursday = expr("cron(0 9 ? * 5L *)");
        assert_eq!(
            next(&last_thursday, utc("2026-01-01T00:00:00Z")),
            utc("2026-01-29T09:00:00Z")
        );
        // `L` in day-of-month: last day of the month.
        let last_day = expr("cron(0 9 L * ? *)");
        assert_eq!(
            next(&last_day, utc("2026-02-01T00:00:00Z")),
            utc("2026-02-28T09:00:00Z")
        );
    }

    #[test]
    fn cron_field_rules() {
        for (bad, needle) in [
            ("cron(0 10 * * * *)", "`*` cannot be used in both"),
            ("cron(0 10 ? * ? *)", "only one of"),
            ("cron(0 10 1 * MON *)", "must be `?`"),
            ("cron(0 10 * * ?)", "expected 6 fields"),
            ("cron(0 10 * * ? * *)", "expected 6 fields"),
            ("cron(61 10 * * ? *)", ""),
            ("cron(0 10 * * ? abc)", ""),
        ] {
            match bad.parse::<ScheduleExpression>() {
                Err(ScheduleError::Cron(msg)) => assert!(msg.contains(needle), "{bad}: {msg}"),
                other => panic!("{bad} should be a cron error, got {other:?}"),
            }
        }
        assert!(matches!(
            "every day".parse::<ScheduleExpression>(),
            Err(ScheduleError::Syntax(_))
        ));
        assert_eq!(
            expr(" cron(0 10 * * ? *) ").to_string(),
            "cron(0 10 * * ? *)"
        );
    }

    #[test]
    fn cron_year_field() {
        let only_2027 = expr("cron(0 10 1 1 ? 2027)");
        assert_eq!(
            next(&only_2027, utc("2026-01-01T00:00:00Z")),
            utc("2027-01-01T10:00:00Z")
        );
        assert_eq!(only_2027.next_after(utc("2027-01-01T10:00:00Z")), None);
        let range = expr("cron(0 10 1 1 ? 2028-2029)");
        let first = next(&range, utc("2026-06-01T00:00:00Z"));
        assert_eq!(first.year(), 2028);
        assert_eq!(next(&range, first).year(), 2029);
        assert_eq!(range.next_after(utc("2029-06-01T00:00:00Z")), None);
    }

    #[test]
    fn at_once() {
        let once = expr("at(2026-12-01T09:00:00)");
        assert_eq!(
            next(&once, utc("2026-01-01T00:00:00Z")),
            utc("2026-12-01T09:00:00Z")
        );
        assert_eq!(once.next_after(utc("2026-12-01T09:00:00Z")), None);
        let berlin: Tz = "Europe/Berlin".parse().expect("known zone");
        let after = utc("2026-01-01T00:00:00Z").with_timezone(&berlin);
        // 09:00 in Berlin in December is 08:00 UTC.
        assert_eq!(next(&once, after), utc("2026-12-01T08:00:00Z"));
        assert_eq!(once.to_string(), "at(2026-12-01T09:00:00)");
        assert!(matches!(
            "at(2026-12-01 09:00)".parse::<ScheduleExpression>(),
            Err(ScheduleError::At(_))
        ));
        // A local time inside a DST gap never happens.
        let gap = expr("at(2026-03-29T02:30:00)");
        assert_eq!(gap.next_after(after), None);
    }

    #[test]
    fn cron_in_berlin_across_dst() {
        let berlin: Tz = "Europe/Berlin".parse().expect("known zone");
        let daily = expr("cron(0 10 * * ? *)");
        // Before the spring change 10:00 CET = 09:00 UTC; after it, 10:00 CEST = 08:00 UTC.
        let sat = next(&daily, utc("2026-03-28T00:00:00Z").with_timezone(&berlin));
        assert_eq!(sat, utc("2026-03-28T09:00:00Z"));
        let sun = next(&daily, sat);
        assert_eq!(sun, utc("2026-03-29T08:00:00Z"));
        assert_eq!((sun.hour(), sun.minute()), (10, 0));

        // 02:30 does not exist on 2026-03-29 in Berlin: that day is skipped.
        let gap = expr("cron(30 2 * * ? *)");
        let before = utc("2026-03-28T12:00:00Z").with_timezone(&berlin);
        let tick = next(&gap, before);
        assert_eq!(tick, utc("2026-03-30T00:30:00Z"));

        // 02:30 happens twice on 2026-10-25: it fires once, on the first pass.
        let before = utc("2026-10-24T12:00:00Z").with_timezone(&berlin);
        let first = next(&gap, before);
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        let then = next(&gap, first);
        assert_eq!(then, utc("2026-10-26T01:30:00Z"));

        // An every-15-minutes schedule does not repeat the ticks of the repeated hour.
        let quarter = expr("cron(0/15 * * * ? *)");
        let mut tick = utc("2026-10-24T23:50:00Z").with_timezone(&berlin);
        let mut seen = Vec::new();
        while tick < utc("2026-10-25T02:10:00Z") {
            tick = next(&quarter, tick);
            seen.push(tick.with_timezone(&Utc).format("%H:%M").to_string());
        }
        assert_eq!(
            seen,
            ["00:00", "00:15", "00:30", "00:45", "02:00", "02:15"],
            "the first pass of 02:xx local is 00:xx UTC; its second pass (01:xx UTC) is skipped"
        );
    }
}
