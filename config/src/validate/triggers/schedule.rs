//! Schedule triggers: a known time zone, a local time that exists, the tick windows, and an
//! overlap policy the queue backend can honour.

use std::time::Duration;

use chrono::LocalResult;
use chrono::TimeZone as _;
use chrono_tz::Tz;

use crate::locate::FieldPath;
use crate::model::{Overlap, QueueBackend, ScheduleTriggerConfig};
use crate::schedule::ScheduleExpression;
use crate::validate::Validator;

impl Validator {
    pub(super) fn schedule(
        &mut self,
        path: &FieldPath,
        schedule: &ScheduleTriggerConfig,
        queue: QueueBackend,
    ) {
        match schedule.timezone.parse::<Tz>() {
            Ok(tz) => {
                if let ScheduleExpression::At(local) = &schedule.expression {
                    if matches!(tz.from_local_datetime(local), LocalResult::None) {
                        self.error(
                            path.key("expression"),
                            format!(
                                "{} names a local time that does not exist in {tz} \
                                 (daylight saving gap)",
                                schedule.expression
                            ),
                        );
                    }
                }
            }
            Err(_) => self.error(
                path.key("timezone"),
                format!(
                    "unknown time zone \"{}\"; use an IANA name such as \"Europe/Berlin\"",
                    schedule.timezone
                ),
            ),
        }
        if let Some(window) = schedule.flexible_window {
            self.duration(
                path.key("flexible_window"),
                window,
                Duration::from_secs(60),
                Duration::from_secs(1440 * 60),
            );
        }
        self.positive(path.key("catch_up_limit"), schedule.catch_up_limit);
        // `skip` waits on the previous event's outcome, which only the instance that dispatched
        // it learns; on a queue shared by instances that may be another one, so the instance
        // that fired would wait forever.
        if schedule.overlap == Overlap::Skip && queue == QueueBackend::Redis {
            self.error(
                path.key("overlap"),
                "\"skip\" is not supported with [queue] backend = \"redis\" (the queue is \
                 shared by instances, and only the one that runs an event sees it finish); \
                 use \"allow\"",
            );
        }
    }
}
